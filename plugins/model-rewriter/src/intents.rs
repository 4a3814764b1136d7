//! Semantic routes: which configured intent a prompt is about. Each intent's examples (and its
//! description) are embedded once per configuration and worker by the root context; a
//! request's last user turn is embedded once (or its embedding reused from the guard or the
//! semantic cache, `sluice_shared::embeddings`), and its intent is the one whose nearest
//! example is closest, when that cosine reaches the intent's threshold.

use sluice_shared::embeddings::Examples;

use crate::config::Intent;

/// A prompt's nearest intent: the index in `intents`, the cosine with its nearest example, and
/// whether that reaches the intent's threshold (only then is it the prompt's intent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nearest {
    pub index: usize,
    pub score: f64,
    pub reached: bool,
}

/// Every intent's texts in one list (for one embedding callout), with their intent's index.
pub fn texts(intents: &[Intent]) -> (Vec<String>, Vec<usize>) {
    intents.iter().enumerate().flat_map(|(i, intent)| intent.texts().into_iter().map(move |t| (t, i))).unzip()
}

/// The prompt's nearest intent; `Err` when the vector does not compare with the examples
/// (another model answered).
pub fn nearest(intents: &[Intent], examples: &Examples, prompt: &[f32]) -> Result<Option<Nearest>, ()> {
    let scores = examples.scores(std::slice::from_ref(&prompt.to_vec())).ok_or(())?;
    let best = scores
        .into_iter()
        .map(|(index, score)| {
            let reached = intents.get(index).is_some_and(|i| score >= i.threshold);
            Nearest { index, score, reached }
        })
        .max_by(|a, b| a.score.partial_cmp(&b.score).unwrap_or(std::cmp::Ordering::Equal));
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(name: &str, examples: &[&str], threshold: f64) -> Intent {
        Intent {
            name: name.into(),
            description: None,
            examples: examples.iter().map(|e| e.to_string()).collect(),
            threshold,
        }
    }

    #[test]
    fn every_text_is_labelled_with_its_intent() {
        let mut code = intent("code", &["write a function", "fix this bug"], 0.5);
        code.description = Some("Programming tasks".into());
        let (texts, labels) = texts(&[intent("chat", &["hi"], 0.5), code]);
        assert_eq!(texts, ["hi", "write a function", "fix this bug", "Programming tasks"]);
        assert_eq!(labels, [0, 1, 1, 1]);
    }

    #[test]
    fn the_nearest_intent_above_its_threshold() {
        let intents = [intent("a", &["x"], 0.5), intent("b", &["y"], 0.9)];
        let examples = Examples::new(&[0, 1], vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        let a = nearest(&intents, &examples, &[0.8, 0.6]).unwrap().unwrap();
        assert!(a.index == 0 && (a.score - 0.8).abs() < 1e-6 && a.reached);
        // Nearest is b, but below b's threshold: no intent (the next rule applies).
        let b = nearest(&intents, &examples, &[0.6, 0.8]).unwrap().unwrap();
        assert!(b.index == 1 && !b.reached);
        assert_eq!(nearest(&intents, &examples, &[1.0, 0.0, 0.0]), Err(()));
    }
}

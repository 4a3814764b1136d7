//! A cheap, tunable guess of how demanding a prompt is (0 = trivial, 1 = hard), for rules that
//! send hard prompts to a stronger model. It looks only at the prompt's shape: code blocks,
//! conversation turns, length and a few keywords (weights in `ComplexityWeights`).

use crate::config::ComplexityWeights;

/// Scores a conversation given as its messages' texts (in order).
pub fn score(weights: &ComplexityWeights, messages: &[&str]) -> f64 {
    let text_len: usize = messages.iter().map(|m| m.chars().count()).sum();
    let code = messages.iter().any(|m| m.contains("```"));
    let turns = u32::try_from(messages.len().saturating_sub(1)).unwrap_or(u32::MAX).min(weights.max_turns);
    let keyword = messages.iter().any(|m| {
        let lower = m.to_lowercase();
        weights.keywords.iter().any(|k| !k.is_empty() && lower.contains(&k.to_lowercase()))
    });
    let total = if code { weights.code_block } else { 0.0 }
        + f64::from(turns) * weights.per_turn
        + (text_len as f64 / 1000.0 * weights.per_thousand_chars).min(weights.max_length)
        + if keyword { weights.keyword } else { 0.0 };
    total.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_questions_score_low_and_hard_ones_high() {
        let w = ComplexityWeights::default();
        assert!(score(&w, &["What is the capital of France?"]) < 0.05);
        let hard = "Refactor this step by step:\n```rust\nfn main() {}\n```";
        assert!(score(&w, &[hard]) >= 0.55, "{}", score(&w, &[hard]));
        let long = "word ".repeat(2_000);
        assert!((score(&w, &[&long]) - 0.3).abs() < 1e-9, "length is capped");
        let turns = vec!["hi"; 20];
        assert!((score(&w, &turns) - 0.3).abs() < 0.01, "turns are capped");
        assert_eq!(score(&w, &[]), 0.0);
        let heavy = ComplexityWeights { code_block: 5.0, ..ComplexityWeights::default() };
        assert_eq!(score(&heavy, &["```x```"]), 1.0);
    }
}

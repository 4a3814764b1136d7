//! The embedding service every module that embeds calls (the semantic cache, the guard's
//! similarity check, the model rewriter's semantic routes): an OpenAI-compatible
//! `POST /v1/embeddings` (`{"data":[{"embedding":[...]}]}`), how its answers are read, and the
//! one embedding a request shares between modules (facts `sluice.embedding.{key,vector}`).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::callout::Callout;
use crate::facts;
use crate::host::Properties;

/// Where the embedding service is and how it is asked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Service {
    /// Envoy cluster of the service.
    pub cluster: String,
    pub authority: String,
    pub path: String,
    /// `model` sent in the request (part of the shared embedding's key).
    pub model: String,
    /// Bearer token for the service, from this environment variable (passed to the VM with
    /// `environment_variables.host_env_keys`).
    pub api_key_env: Option<String>,
    pub timeout_ms: u64,
}

impl Default for Service {
    fn default() -> Self {
        Service {
            cluster: "embedder".to_string(),
            authority: "embedder".to_string(),
            path: "/v1/embeddings".to_string(),
            model: "all-MiniLM-L6-v2".to_string(),
            api_key_env: None,
            timeout_ms: 500,
        }
    }
}

impl Service {
    /// The service's key, when one is configured and set.
    pub fn api_key(&self) -> Option<String> {
        let name = self.api_key_env.as_deref()?;
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    /// The callout embedding `texts`, with this timeout.
    pub fn callout(&self, texts: &[String], timeout: Duration) -> Callout {
        let call = Callout::post(
            &self.cluster,
            &self.authority,
            &self.path,
            "application/json",
            request_body(Some(&self.model), texts),
        )
        .timeout(timeout);
        match self.api_key() {
            Some(key) => call.header("authorization", &format!("Bearer {key}")),
            None => call,
        }
    }

    /// The key naming this service's embedding of `text`.
    pub fn key(&self, text: &str) -> String {
        facts::embedding_key(&self.authority, &self.path, &self.model, text)
    }

    /// The request's shared embedding of `text` by this service, if a module before this one
    /// published it: the answer, as the service gave it.
    pub fn reuse(&self, host: &dyn Properties, text: &str) -> Option<Vec<u8>> {
        let published = facts::read(host, facts::EMBEDDING_KEY)?;
        (published == self.key(text))
            .then(|| facts::read(host, facts::EMBEDDING_VECTOR))
            .flatten()
            .map(String::into_bytes)
    }

    /// Shares this request's embedding of `text` (the service's answer holding its one vector)
    /// with the modules after this one.
    pub fn share(&self, host: &dyn Properties, text: &str, answer: &[u8]) {
        facts::publish(host, facts::EMBEDDING_KEY, &self.key(text));
        facts::publish(host, facts::EMBEDDING_VECTOR, &String::from_utf8_lossy(answer));
    }
}

/// The embedding service's request for `texts`.
pub fn request_body(model: Option<&str>, texts: &[String]) -> Vec<u8> {
    let body = match model {
        Some(model) => json!({ "input": texts, "model": model }),
        None => json!({ "input": texts }),
    };
    body.to_string().into_bytes()
}

/// An embedding answer holding one vector, as every module reads one.
pub fn single_answer(vector: &[f32]) -> String {
    json!({"data": [{"embedding": vector}]}).to_string()
}

#[derive(Deserialize)]
struct Answer {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    embedding: Vec<f64>,
}

/// The vectors of an answer, in input order, as they came; `None` when it is not one.
pub fn vectors(body: &[u8]) -> Option<Vec<Vec<f64>>> {
    let answer: Answer = serde_json::from_slice(body).ok()?;
    Some(answer.data.into_iter().map(|item| item.embedding).collect())
}

/// The unit-length vectors of an answer, in input order; `None` unless it holds `expected`
/// (at least one) vectors of one usable length.
pub fn unit_vectors(body: &[u8], expected: usize) -> Option<Vec<Vec<f32>>> {
    let data = vectors(body)?;
    if data.len() != expected || expected == 0 {
        return None;
    }
    let dimensions = data.first()?.len();
    data.into_iter()
        .map(|v| {
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let usable = v.len() == dimensions && !v.is_empty() && norm > 0.0 && norm.is_finite();
            usable.then(|| v.iter().map(|x| (x / norm) as f32).collect())
        })
        .collect()
}

/// Labelled example vectors (unit length): which label's examples a text is nearest to.
#[derive(Debug, Default, Clone)]
pub struct Examples {
    vectors: Vec<(usize, Vec<f32>)>,
}

impl Examples {
    /// `labels[i]` is the label of `vectors[i]`.
    pub fn new(labels: &[usize], vectors: Vec<Vec<f32>>) -> Examples {
        Examples { vectors: labels.iter().copied().zip(vectors).collect() }
    }

    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// One vector per label: the unit mean of its examples (a label's centroid averages out
    /// what its examples are about and keeps what they share).
    pub fn centroids(&self) -> Examples {
        let mut sums: std::collections::BTreeMap<usize, Vec<f32>> = std::collections::BTreeMap::new();
        for (label, vector) in &self.vectors {
            let sum = sums.entry(*label).or_insert_with(|| vec![0.0; vector.len()]);
            for (s, v) in sum.iter_mut().zip(vector) {
                *s += v;
            }
        }
        let vectors = sums
            .into_iter()
            .filter_map(|(label, sum)| {
                let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
                (norm > 0.0).then(|| (label, sum.iter().map(|x| x / norm).collect()))
            })
            .collect();
        Examples { vectors }
    }

    /// Each label's highest cosine with any of `texts`, by label; `None` when the lengths
    /// differ (another model answered).
    pub fn scores(&self, texts: &[Vec<f32>]) -> Option<std::collections::BTreeMap<usize, f64>> {
        let mut best = std::collections::BTreeMap::new();
        for text in texts {
            for (label, example) in &self.vectors {
                if example.len() != text.len() {
                    return None;
                }
                let cosine = f64::from(example.iter().zip(text).map(|(x, y)| x * y).sum::<f32>());
                let entry = best.entry(*label).or_insert(f64::MIN);
                *entry = cosine.max(*entry);
            }
        }
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn centroids_are_unit_means_per_label() {
        let examples = Examples::new(&[0, 0, 1], vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.0, 1.0]]);
        let centroids = examples.centroids();
        assert_eq!(centroids.len(), 2);
        let scores = centroids.scores(&[vec![1.0, 0.0]]).unwrap();
        assert!((scores[&0] - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6, "{scores:?}");
        assert!(scores[&1].abs() < 1e-6);
        // Examples that cancel out leave no centroid.
        assert!(Examples::new(&[0, 0], vec![vec![1.0], vec![-1.0]]).centroids().is_empty());
    }

    #[test]
    fn reads_every_vector_in_order() {
        assert_eq!(
            vectors(br#"{"data":[{"embedding":[1,2]},{"embedding":[3]}]}"#),
            Some(vec![vec![1.0, 2.0], vec![3.0]])
        );
        assert_eq!(vectors(br#"{"data":[]}"#), Some(vec![]));
        for bad in [&b"{}"[..], b"[]", br#"{"data":[{"embedding":"x"}]}"#] {
            assert_eq!(vectors(bad), None);
        }
    }

    #[test]
    fn unit_vectors_are_checked() {
        let two = unit_vectors(br#"{"data":[{"embedding":[3,4]},{"embedding":[1,0]}]}"#, 2).unwrap();
        assert!((two[0][0] - 0.6).abs() < 1e-6 && (two[1][0] - 1.0).abs() < 1e-6);
        for (bad, n) in [
            (&br#"{"data":[{"embedding":[3,4]}]}"#[..], 2),
            (br#"{"data":[]}"#, 0),
            (br#"{"data":[{"embedding":[0,0]}]}"#, 1),
            (br#"{"data":[{"embedding":[1,0]},{"embedding":[1]}]}"#, 2),
            (br#"{"data":[{"embedding":[]}]}"#, 1),
        ] {
            assert_eq!(unit_vectors(bad, n), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn examples_score_each_label_by_its_nearest_example() {
        let examples = Examples::new(&[0, 0, 1], vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]]);
        let scores = examples.scores(&[vec![1.0, 0.0]]).unwrap();
        assert!((scores[&0] - 1.0).abs() < 1e-6 && (scores[&1] - 0.6).abs() < 1e-6);
        assert_eq!(examples.scores(&[vec![1.0, 0.0, 0.0]]), None);
    }

    #[test]
    fn a_shared_embedding_is_reused_only_for_the_same_text_and_service() {
        let host = crate::host::fake::FakeHost::default();
        let service = Service::default();
        assert_eq!(service.reuse(&host, "hello"), None);
        service.share(&host, "hello", single_answer(&[1.0, 0.0]).as_bytes());
        let answer = service.reuse(&host, "hello").unwrap();
        assert_eq!(unit_vectors(&answer, 1), Some(vec![vec![1.0, 0.0]]));
        assert_eq!(service.reuse(&host, "hello!"), None);
        let other = Service { model: "bge-small".into(), ..Service::default() };
        assert_eq!(other.reuse(&host, "hello"), None);
    }
}

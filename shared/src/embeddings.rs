//! OpenAI-compatible embedding answers (`POST /v1/embeddings`: `{"data":[{"embedding":[...]}]}`),
//! read by the modules that embed (the semantic cache, the guard's similarity check).

use serde::Deserialize;

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

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

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
}

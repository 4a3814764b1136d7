//! The paraphrase guard on the project's labelled pairs (`tests/data/semantic_pairs.json`):
//! it must never let a near miss through, and must keep a share of the paraphrases. The same
//! figures, with embeddings, come from `python -m harness.pair_quality`.

use sluice_semantic_cache::same_question::same_question;

#[test]
fn no_near_miss_passes_and_some_paraphrases_do() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/semantic_pairs.json"))
        .unwrap_or_default();
    let groups: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let (mut kept, mut paraphrases, mut leaked) = (0, 0, Vec::new());
    for group in groups.as_array().into_iter().flatten() {
        let question = group["question"].as_str().unwrap_or_default();
        for p in group["paraphrases"].as_array().into_iter().flatten() {
            paraphrases += 1;
            kept += usize::from(same_question(question, p.as_str().unwrap_or_default()));
        }
        for miss in group["near_misses"].as_array().into_iter().flatten() {
            let text = miss["text"].as_str().unwrap_or_default();
            if same_question(question, text) {
                leaked.push(format!("{question} | {text}"));
            }
        }
    }
    assert_eq!(paraphrases, 200);
    assert_eq!(leaked, Vec::<String>::new());
    assert!(kept * 100 >= paraphrases * 15, "{kept} of {paraphrases} paraphrases kept");
    println!("guard alone: {kept} of {paraphrases} paraphrases kept, 0 near misses");
}

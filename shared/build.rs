//! Writes each encoding's vocabulary in a compact form for the tokenizer (src/tokenizer.rs):
//! every ordinary token's bytes in rank order, each prefixed by its length (one byte). The data
//! comes from tiktoken-rs's copy of OpenAI's published vocabularies; nothing else of that crate
//! is linked into the modules.

use std::collections::HashSet;
use std::error::Error;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    for (name, bpe) in [("cl100k_base", tiktoken_rs::cl100k_base()?), ("o200k_base", tiktoken_rs::o200k_base()?)] {
        let special: HashSet<Vec<u8>> = bpe.special_tokens().iter().map(|s| s.as_bytes().to_vec()).collect();
        let mut table = Vec::new();
        let mut rank = 0;
        // Ordinary ranks are contiguous from 0; the first gap or special token ends them.
        while let Ok(bytes) = bpe.decode_bytes(&[rank]) {
            if special.contains(&bytes) {
                break;
            }
            let length =
                u8::try_from(bytes.len()).map_err(|_| format!("{name}: token {rank} is longer than 255 bytes"))?;
            table.push(length);
            table.extend_from_slice(&bytes);
            rank += 1;
        }
        if rank < 100_000 {
            return Err(format!("{name}: only {rank} ordinary tokens").into());
        }
        std::fs::write(out.join(format!("{name}.bin")), table)?;
    }
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}

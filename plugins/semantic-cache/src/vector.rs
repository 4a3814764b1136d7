//! Embeddings: the request to an OpenAI-compatible embedding service, its answer, and what the
//! Redis side needs of a vector (8-bit components and an LSH bucket).
//!
//! Vectors are L2-normalised and quantised to one byte per component, `round(x * 127)` stored
//! as that plus 128 (1..=255, so Lua needs no sign handling): 384 bytes for all-MiniLM-L6-v2.
//! The cosine computed from bytes differs from the float one by about 0.002, far below the gap
//! between paraphrases and unrelated prompts.
//!
//! Buckets come from random-hyperplane LSH: bit `i` is the sign of the vector's dot product with
//! a fixed pseudo-random ±1 vector, so similar prompts tend to share bits. A lookup reads the
//! prompt's own bucket and the `bits` buckets one bit away; at cosine 0.85 that finds the
//! neighbour about 86% of the time with 4 bits (each bit agrees with probability 1 - θ/π).

use serde::Deserialize;
use serde_json::json;

/// Seed of the hyperplanes. Changing it moves every entry to another bucket, so it is part of
/// the scope (see [`embed_salt`]).
const HYPERPLANE_SEED: u64 = 0x5eed_5a1c_e0c0_ffee;

/// Signature hyperplanes are numbered after the bucket ones, so the two are independent.
const SIGNATURE_PLANES: u32 = 32;

/// Longest vector accepted (Lua unpacks a vector's bytes in one call, which allows ~8000).
const MAX_DIMENSIONS: usize = 4096;

/// The embedding service's request body.
pub fn request_body(model: &str, text: &str) -> Vec<u8> {
    json!({"model": model, "input": text}).to_string().into_bytes()
}

#[derive(Deserialize)]
struct Answer {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    embedding: Vec<f64>,
}

/// A normalised embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding(Vec<f64>);

impl Embedding {
    /// Reads the service's answer (`{"data":[{"embedding":[...]}]}`); `None` when it has no
    /// usable vector (empty, all zeros, not numbers, more than 4096 components).
    pub fn from_answer(body: &[u8]) -> Option<Embedding> {
        let answer: Answer = serde_json::from_slice(body).ok()?;
        let vector = answer.data.into_iter().next()?.embedding;
        Embedding::new(vector)
    }

    pub fn new(vector: Vec<f64>) -> Option<Embedding> {
        if vector.is_empty() || vector.len() > MAX_DIMENSIONS || vector.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return None;
        }
        Some(Embedding(vector.into_iter().map(|x| x / norm).collect()))
    }

    pub fn dimensions(&self) -> usize {
        self.0.len()
    }

    fn levels(&self) -> impl Iterator<Item = i32> + '_ {
        self.0.iter().map(|x| (x * 127.0).round().clamp(-127.0, 127.0) as i32)
    }

    /// One byte per component (the quantised level plus 128), as Redis stores it.
    pub fn quantized(&self) -> Vec<u8> {
        self.levels().map(|level| u8::try_from(level + 128).unwrap_or(128)).collect()
    }

    /// The length of the quantised vector (stored beside it, so a search computes one product
    /// per component).
    pub fn quantized_norm(&self) -> f64 {
        f64::from(self.levels().map(|level| level * level).sum::<i32>()).sqrt()
    }

    /// The LSH bucket (`bits` bits).
    pub fn bucket(&self, bits: u32) -> u32 {
        let mut bucket = 0;
        for plane in 0..bits {
            let dot: f64 = self.0.iter().enumerate().map(|(j, x)| if sign(plane, j) { *x } else { -*x }).sum();
            if dot >= 0.0 {
                bucket |= 1 << plane;
            }
        }
        bucket
    }

    /// A 64-bit sign signature (SimHash): the share of bits two vectors differ in estimates the
    /// angle between them (θ/π), so a search can skip most entries after 8 bytes of work.
    pub fn signature(&self) -> [u8; 8] {
        let mut signature = [0u8; 8];
        for (plane, byte) in (SIGNATURE_PLANES..SIGNATURE_PLANES + 64).zip((0..8).flat_map(|b| [b; 8])) {
            let dot: f64 = self.0.iter().enumerate().map(|(j, x)| if sign(plane, j) { *x } else { -*x }).sum();
            if dot >= 0.0 {
                if let Some(slot) = signature.get_mut(byte) {
                    *slot |= 1 << ((plane - SIGNATURE_PLANES) % 8);
                }
            }
        }
        signature
    }

    pub fn cosine(&self, other: &Embedding) -> f64 {
        self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum()
    }
}

/// Most signature bits two vectors at cosine `threshold` may differ in: the expected count plus
/// four standard deviations, so a true neighbour is skipped about once in 30,000.
pub fn max_differing_bits(threshold: f64) -> u32 {
    let p = threshold.clamp(-1.0, 1.0).acos() / std::f64::consts::PI;
    let bits = 64.0 * p + 4.0 * (64.0 * p * (1.0 - p)).sqrt();
    bits.ceil().clamp(0.0, 64.0) as u32
}

/// The buckets a lookup reads: the prompt's own, then each one bit away.
pub fn probes(bucket: u32, bits: u32) -> Vec<u32> {
    std::iter::once(bucket).chain((0..bits).map(|bit| bucket ^ (1 << bit))).collect()
}

/// Tags the scope with what decides where vectors live (model, bucketing), so that a change of
/// either never compares incompatible vectors.
pub fn embed_salt(model: &str, bits: u32) -> String {
    format!("{model}/lsh{bits}/{HYPERPLANE_SEED:x}")
}

/// Component `j` of hyperplane `plane`: a fixed pseudo-random sign (splitmix64).
fn sign(plane: u32, j: usize) -> bool {
    let mut z = HYPERPLANE_SEED ^ (u64::from(plane) << 32) ^ (j as u64);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_normalises_the_answer() {
        let e =
            Embedding::from_answer(br#"{"object":"list","data":[{"index":0,"embedding":[3,4]}],"model":"m"}"#).unwrap();
        assert_eq!(e, Embedding(vec![0.6, 0.8]));
        assert_eq!(e.quantized(), vec![128 + 76, 128 + 102]);
        assert!((e.quantized_norm() - (76.0f64 * 76.0 + 102.0 * 102.0).sqrt()).abs() < 1e-9);
        let negative = Embedding::new(vec![-1.0, 0.0]).unwrap();
        assert_eq!(negative.quantized(), vec![1, 128]);
        for bad in [
            &b"{}"[..],
            b"{\"data\":[]}",
            b"{\"data\":[{\"embedding\":[0,0]}]}",
            b"{\"data\":[{\"embedding\":[\"a\"]}]}",
            b"oops",
        ] {
            assert_eq!(Embedding::from_answer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn close_vectors_tend_to_share_buckets() {
        // Deterministic pseudo-random unit vectors and small perturbations of them.
        let vector = |seed: usize, noise: f64| {
            let v: Vec<f64> = (0..384)
                .map(|j| ((j * 7919 + seed * 104_729) % 1000) as f64 / 500.0 - 1.0 + noise * (j as f64).sin())
                .collect();
            Embedding::new(v).unwrap()
        };
        let mut shared = 0;
        for seed in 0..50 {
            let (a, b) = (vector(seed, 0.0), vector(seed, 0.1));
            assert!(a.cosine(&b) > 0.9);
            shared += usize::from(probes(a.bucket(4), 4).contains(&b.bucket(4)));
        }
        assert!(shared >= 45, "{shared} of 50 near neighbours probed");
        // Signatures: near neighbours differ in few bits, unrelated vectors in about half.
        let differing = |a: &Embedding, b: &Embedding| {
            a.signature().iter().zip(b.signature()).map(|(x, y)| (x ^ y).count_ones()).sum::<u32>()
        };
        let (a, near, far) = (vector(1, 0.0), vector(1, 0.1), vector(2, 0.0));
        assert!(differing(&a, &near) <= max_differing_bits(a.cosine(&near)));
        assert!(differing(&a, &far) > 16, "{}", differing(&a, &far));
        assert_eq!((max_differing_bits(1.0), max_differing_bits(0.85), max_differing_bits(0.0)), (0, 24, 48));
        assert!((0..16).contains(&vector(3, 0.0).bucket(4)));
        assert_eq!(vector(3, 0.0).bucket(0), 0);
        assert_eq!(probes(5, 3), vec![5, 4, 7, 1]);
    }
}

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

/// Seed of the hyperplanes. Changing it moves every entry to another bucket, so it is part of
/// the scope (see [`embed_salt`]).
const HYPERPLANE_SEED: u64 = 0x5eed_5a1c_e0c0_ffee;

/// Signature hyperplanes are numbered after the bucket ones, so the two are independent.
const SIGNATURE_PLANES: u32 = 32;

/// Longest vector accepted (Lua unpacks a vector's bytes in one call, which allows ~8000).
const MAX_DIMENSIONS: usize = 4096;

/// A normalised embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding(Vec<f64>);

impl Embedding {
    /// Reads the service's answer (`{"data":[{"embedding":[...]}]}`); `None` when it has no
    /// usable vector (empty, all zeros, not numbers, more than 4096 components).
    pub fn from_answer(body: &[u8]) -> Option<Embedding> {
        let vector = sluice_shared::embeddings::vectors(body)?.into_iter().next()?;
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

    #[cfg(test)]
    pub fn cosine(&self, other: &Embedding) -> f64 {
        self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum()
    }
}

/// What Redis needs of an embedding: its bytes and length, its signature and its bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub norm: f64,
    pub signature: [u8; 8],
    pub bucket: u32,
}

/// The hyperplanes for one vector length, as sign rows: built once per VM (they depend only on
/// the seed and the length), not per request.
#[derive(Debug)]
pub struct Planes {
    dimensions: usize,
    /// Planes `0..MAX_LSH_BITS`, for buckets.
    bucket: Vec<Vec<bool>>,
    /// Planes `SIGNATURE_PLANES..SIGNATURE_PLANES + 64`, for signatures.
    signature: Vec<Vec<bool>>,
}

/// Most LSH bits a config may ask for.
const MAX_LSH_BITS: u32 = 8;

impl Planes {
    pub fn new(dimensions: usize) -> Planes {
        let rows = |planes: std::ops::Range<u32>| -> Vec<Vec<bool>> {
            planes.map(|plane| (0..dimensions).map(|j| sign(plane, j)).collect()).collect()
        };
        Planes { dimensions, bucket: rows(0..MAX_LSH_BITS), signature: rows(SIGNATURE_PLANES..SIGNATURE_PLANES + 64) }
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Encodes an embedding of this length, with a bucket of `bits` bits (at most 8).
    pub fn encode(&self, embedding: &Embedding, bits: u32) -> Encoded {
        let above = |row: &Vec<bool>| -> bool {
            embedding.0.iter().zip(row).map(|(x, positive)| if *positive { *x } else { -*x }).sum::<f64>() >= 0.0
        };
        let mut bucket = 0;
        for (bit, row) in self.bucket.iter().take(bits.min(MAX_LSH_BITS) as usize).enumerate() {
            if above(row) {
                bucket |= 1 << bit;
            }
        }
        // Bit p of byte p / 8 is the sign of signature plane p: the layout the Lua search reads.
        let mut signature = [0u8; 8];
        for (p, row) in self.signature.iter().enumerate() {
            if above(row) {
                if let Some(byte) = signature.get_mut(p / 8) {
                    *byte |= 1 << (p % 8);
                }
            }
        }
        Encoded { bytes: embedding.quantized(), norm: embedding.quantized_norm(), signature, bucket }
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
        let planes = Planes::new(384);
        let encode = |e: &Embedding| planes.encode(e, 4);
        let mut shared = 0;
        for seed in 0..50 {
            let (a, b) = (vector(seed, 0.0), vector(seed, 0.1));
            assert!(a.cosine(&b) > 0.9);
            shared += usize::from(probes(encode(&a).bucket, 4).contains(&encode(&b).bucket));
        }
        assert!(shared >= 45, "{shared} of 50 near neighbours probed");
        // Signatures: near neighbours differ in few bits, unrelated vectors in about half.
        let differing = |a: &Embedding, b: &Embedding| {
            encode(a).signature.iter().zip(encode(b).signature).map(|(x, y)| (x ^ y).count_ones()).sum::<u32>()
        };
        let (a, near, far) = (vector(1, 0.0), vector(1, 0.1), vector(2, 0.0));
        assert!(differing(&a, &near) <= max_differing_bits(a.cosine(&near)));
        assert!(differing(&a, &far) > 16, "{}", differing(&a, &far));
        // The bucket keeps only the bits asked for; the rest of the encoding is the vector's.
        assert!(encode(&a).bucket < 16 && planes.encode(&a, 0).bucket == 0);
        assert_eq!((encode(&a).bytes, encode(&a).norm), (a.quantized(), a.quantized_norm()));
        assert_eq!(planes.dimensions(), 384);
        assert_eq!((max_differing_bits(1.0), max_differing_bits(0.85), max_differing_bits(0.0)), (0, 24, 48));
        assert_eq!(probes(5, 3), vec![5, 4, 7, 1]);
    }
}

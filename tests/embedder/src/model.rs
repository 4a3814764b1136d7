//! all-MiniLM-L6-v2 as sentence-transformers runs it: BERT's six layers, mean pooling over the
//! real (unpadded) tokens, then L2 normalisation.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationParams};

/// The model's sequence length in sentence-transformers; longer inputs are truncated.
const MAX_TOKENS: usize = 256;

/// Texts of one forward pass. Sorted by length first, so a batch pads little.
const CHUNK: usize = 32;

pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

/// One text's vector and how many tokens it took (with `[CLS]` and `[SEP]`).
#[derive(Clone)]
pub struct Embedding {
    pub vector: Vec<f32>,
    pub tokens: usize,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

impl MiniLm {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from the model directory.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let device = Device::Cpu;
        let config: Config = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
        let bytes = std::fs::read(dir.join("model.safetensors"))?;
        let mut weights = candle_core::safetensors::load_buffer(&bytes, &device)?;
        for (name, weight) in weights.iter_mut() {
            if is_dense(name) {
                // Same shape, stored transposed: the matrix product then reads each weight matrix
                // in the order it needs, instead of repacking all of it on every call (that
                // repacking was half of a short prompt's time).
                *weight = weight.t()?.contiguous()?.t()?;
            }
        }
        let vb = VarBuilder::from_tensors(weights, DType::F32, &device);
        let model = BertModel::load(vb, &config)?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))?;
        // The shipped tokenizer pads every input to 128 tokens; padding is done here per batch,
        // with a mask, so mean pooling sees only real tokens.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))?;
        Ok(Self { model, tokenizer, device })
    }

    /// One embedding per text, in order.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>, Error> {
        let mut ids = Vec::with_capacity(texts.len());
        for text in texts {
            ids.push(self.tokenizer.encode(text.as_str(), true)?.get_ids().to_vec());
        }
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids.get(i).map_or(0, Vec::len));
        let mut out: Vec<Option<Embedding>> = (0..ids.len()).map(|_| None).collect();
        for chunk in order.chunks(CHUNK) {
            let batch: Vec<&[u32]> = chunk.iter().filter_map(|&i| ids.get(i).map(Vec::as_slice)).collect();
            for (&i, vector) in chunk.iter().zip(self.forward(&batch)?) {
                let tokens = ids.get(i).map_or(0, Vec::len);
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(Embedding { vector, tokens });
                }
            }
        }
        let all: Option<Vec<Embedding>> = out.into_iter().collect();
        all.ok_or_else(|| "a forward pass returned fewer vectors than texts".into())
    }

    /// Pads the batch to its longest text, runs BERT, pools over the mask, normalises.
    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, Error> {
        let width = batch.iter().map(|ids| ids.len()).max().unwrap_or(0).max(1);
        let mut flat_ids = Vec::with_capacity(batch.len() * width);
        let mut flat_mask = Vec::with_capacity(batch.len() * width);
        for ids in batch {
            flat_ids.extend_from_slice(ids);
            flat_ids.extend(std::iter::repeat_n(0u32, width - ids.len()));
            flat_mask.extend(std::iter::repeat_n(1u32, ids.len()));
            flat_mask.extend(std::iter::repeat_n(0u32, width - ids.len()));
        }
        let shape = (batch.len(), width);
        let input = Tensor::from_vec(flat_ids, shape, &self.device)?;
        let mask = Tensor::from_vec(flat_mask, shape, &self.device)?;
        let types = input.zeros_like()?;
        let hidden = self.model.forward(&input, &types, Some(&mask))?;
        let weights = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let pooled = hidden.broadcast_mul(&weights)?.sum(1)?.broadcast_div(&weights.sum(1)?)?;
        let norms = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
        Ok(pooled.broadcast_div(&norms)?.to_vec2::<f32>()?)
    }
}

/// A dense layer's weight matrix (attention projections, intermediate and output layers), as
/// opposed to embedding tables and layer norms.
fn is_dense(name: &str) -> bool {
    name.ends_with(".weight") && name.contains("encoder.layer.") && !name.contains("LayerNorm")
}

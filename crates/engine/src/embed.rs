//! Sentence embeddings with a BERT encoder on candle (CPU), e.g. all-MiniLM-L6-v2.
//!
//! The model directory holds `config.json` (a Hugging Face `BertConfig`), `model.safetensors` and
//! `tokenizer.json`. Output matches sentence-transformers: mean pooling over the attention mask,
//! then L2 normalisation. Inputs longer than the model's maximum sequence length (512 for MiniLM,
//! counting `[CLS]` and `[SEP]`) are rejected with [`EngineError::PromptTooLong`] rather than
//! silently truncated.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::EngineError;

/// One input to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedInput {
    /// Text, tokenized with the model's own tokenizer.
    Text(String),
    /// Token ids of the model's vocabulary, *without* `[CLS]` / `[SEP]` (they are added).
    Tokens(Vec<u32>),
}

impl From<&str> for EmbedInput {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

impl From<String> for EmbedInput {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

/// How many sequences go through the encoder at once (sorted by length, so padding stays small).
const BATCH: usize = 32;

#[derive(Debug, Clone, Deserialize)]
struct BertConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default)]
    pad_token_id: u32,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".to_owned()
}

/// A loaded sentence-embedding model. `Send + Sync`; `embed` is CPU-bound, so call it from a
/// blocking thread (`tokio::task::spawn_blocking`).
pub struct Embedder {
    name: String,
    tokenizer: Tokenizer,
    bert: Bert,
    config: BertConfig,
    cls: u32,
    sep: u32,
    device: Device,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("name", &self.name)
            .field("dimensions", &self.config.hidden_size)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, EngineError> {
        if !dir.exists() {
            return Err(EngineError::ModelNotFound {
                path: dir.to_path_buf(),
            });
        }
        let file = |name: &str| -> Result<PathBuf, EngineError> {
            let p = dir.join(name);
            if p.exists() {
                Ok(p)
            } else {
                Err(EngineError::ModelNotFound { path: p })
            }
        };
        let invalid = |path: &Path, message: String| EngineError::InvalidModel {
            path: path.to_path_buf(),
            message,
        };
        let config_path = file("config.json")?;
        let weights_path = file("model.safetensors")?;
        let tokenizer_path = file("tokenizer.json")?;

        let config_text =
            std::fs::read_to_string(&config_path).map_err(|e| invalid(&config_path, e.to_string()))?;
        let config: BertConfig =
            serde_json::from_str(&config_text).map_err(|e| invalid(&config_path, e.to_string()))?;
        if config.hidden_act != "gelu" && config.hidden_act != "gelu_new" {
            return Err(invalid(
                &config_path,
                format!("unsupported hidden_act `{}`", config.hidden_act),
            ));
        }
        if config.num_attention_heads == 0 || !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            return Err(invalid(&config_path, "bad attention head count".to_owned()));
        }

        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| invalid(&tokenizer_path, e.to_string()))?;
        tokenizer
            .with_truncation(None)
            .map_err(|e| invalid(&tokenizer_path, e.to_string()))?;
        tokenizer.with_padding(None);
        let cls = tokenizer
            .token_to_id("[CLS]")
            .ok_or_else(|| invalid(&tokenizer_path, "no [CLS] token".to_owned()))?;
        let sep = tokenizer
            .token_to_id("[SEP]")
            .ok_or_else(|| invalid(&tokenizer_path, "no [SEP] token".to_owned()))?;

        let device = Device::Cpu;
        let bytes = std::fs::read(&weights_path).map_err(|e| invalid(&weights_path, e.to_string()))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device)
            .map_err(|e| invalid(&weights_path, e.to_string()))?;
        // Checkpoints saved from `BertModel` have no prefix; those from `BertForXxx` use `bert.`.
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else {
            vb.pp("bert")
        };
        let bert = Bert::load(vb, &config).map_err(|e| invalid(&weights_path, e.to_string()))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            name,
            tokenizer,
            bert,
            config,
            cls,
            sep,
            device,
        })
    }

    /// The embedding width (384 for MiniLM-L6).
    pub fn dimensions(&self) -> usize {
        self.config.hidden_size
    }

    /// The maximum sequence length, `[CLS]` and `[SEP]` included (512 for MiniLM).
    pub fn max_tokens(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Tokens `text` takes, `[CLS]` and `[SEP]` included (what usage reports as prompt tokens).
    pub fn count_tokens(&self, text: &str) -> Result<usize, EngineError> {
        Ok(self.token_ids(&EmbedInput::Text(text.to_owned()))?.len())
    }

    fn token_ids(&self, input: &EmbedInput) -> Result<Vec<u32>, EngineError> {
        match input {
            EmbedInput::Text(text) => {
                let enc = self
                    .tokenizer
                    .encode(text.as_str(), true)
                    .map_err(|e| EngineError::internal(format!("tokenizer: {e}")))?;
                Ok(enc.get_ids().to_vec())
            }
            EmbedInput::Tokens(ids) => {
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.config.vocab_size) {
                    return Err(EngineError::invalid_param(
                        "input",
                        format!(
                            "token id {bad} is out of range (vocabulary size {})",
                            self.config.vocab_size
                        ),
                    ));
                }
                let mut out = Vec::with_capacity(ids.len() + 2);
                out.push(self.cls);
                out.extend_from_slice(ids);
                out.push(self.sep);
                Ok(out)
            }
        }
    }

    /// Embeds every input; returns one L2-normalised vector per input, in order.
    pub fn embed(&self, inputs: &[EmbedInput]) -> Result<Vec<Vec<f32>>, EngineError> {
        let limit = self.max_tokens();
        let mut tokenized = Vec::with_capacity(inputs.len());
        for input in inputs {
            let ids = self.token_ids(input)?;
            if ids.len() > limit {
                return Err(EngineError::PromptTooLong {
                    tokens: u32::try_from(ids.len()).unwrap_or(u32::MAX),
                    limit: u32::try_from(limit).unwrap_or(u32::MAX),
                });
            }
            tokenized.push(ids);
        }
        let mut order: Vec<usize> = (0..tokenized.len()).collect();
        order.sort_by_key(|&i| tokenized[i].len());
        let mut out = vec![Vec::new(); tokenized.len()];
        for chunk in order.chunks(BATCH) {
            let seqs: Vec<&[u32]> = chunk.iter().map(|&i| tokenized[i].as_slice()).collect();
            let vectors = self
                .embed_batch(&seqs)
                .map_err(|e| EngineError::internal(format!("embedding: {e}")))?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn embed_batch(&self, seqs: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let batch = seqs.len();
        let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if batch == 0 || len == 0 {
            return Ok(vec![vec![0.0; self.dimensions()]; batch]);
        }
        let mut ids = Vec::with_capacity(batch * len);
        let mut mask = Vec::with_capacity(batch * len);
        for s in seqs {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(self.config.pad_token_id, len - s.len()));
            mask.extend(std::iter::repeat_n(1f32, s.len()));
            mask.extend(std::iter::repeat_n(0f32, len - s.len()));
        }
        let ids = Tensor::from_vec(ids, (batch, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (batch, len), &self.device)?;
        let hidden = self.bert.forward(&ids, &mask)?; // (b, s, h)
        let m = mask.unsqueeze(2)?; // (b, s, 1)
        let summed = hidden.broadcast_mul(&m)?.sum(1)?; // (b, h)
        let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?; // (b, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        let normed = mean.broadcast_div(&norm)?;
        (0..batch).map(|i| normed.i(i)?.to_vec1::<f32>()).collect()
    }
}

struct Bert {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    ln: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_ln: LayerNorm,
    inter: Linear,
    out: Linear,
    out_ln: LayerNorm,
}

fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<LayerNorm> {
    let (w, b) = if vb.contains_tensor("weight") {
        (vb.get(size, "weight")?, vb.get(size, "bias")?)
    } else {
        (vb.get(size, "gamma")?, vb.get(size, "beta")?)
    };
    Ok(LayerNorm::new(w, b, eps))
}

impl Bert {
    fn load(vb: VarBuilder, c: &BertConfig) -> candle_core::Result<Self> {
        let h = c.hidden_size;
        let e = vb.pp("embeddings");
        let word = candle_nn::embedding(c.vocab_size, h, e.pp("word_embeddings"))?;
        let position = candle_nn::embedding(c.max_position_embeddings, h, e.pp("position_embeddings"))?;
        let token_type = candle_nn::embedding(c.type_vocab_size, h, e.pp("token_type_embeddings"))?;
        let ln = layer_norm(h, c.layer_norm_eps, e.pp("LayerNorm"))?;
        let inter_size = {
            let probe = vb.pp("encoder.layer.0.intermediate.dense");
            probe
                .get_unchecked("weight")
                .map(|t| t.dims().first().copied().unwrap_or(4 * h))?
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            layers.push(Layer {
                query: candle_nn::linear(h, h, a.pp("self.query"))?,
                key: candle_nn::linear(h, h, a.pp("self.key"))?,
                value: candle_nn::linear(h, h, a.pp("self.value"))?,
                attn_out: candle_nn::linear(h, h, a.pp("output.dense"))?,
                attn_ln: layer_norm(h, c.layer_norm_eps, a.pp("output.LayerNorm"))?,
                inter: candle_nn::linear(h, inter_size, l.pp("intermediate.dense"))?,
                out: candle_nn::linear(inter_size, h, l.pp("output.dense"))?,
                out_ln: layer_norm(h, c.layer_norm_eps, l.pp("output.LayerNorm"))?,
            });
        }
        Ok(Self {
            word,
            position,
            token_type,
            ln,
            layers,
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
        })
    }

    /// `ids`: (b, s) u32; `mask`: (b, s) f32 of 1/0. Returns the last hidden state (b, s, h).
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let dev = ids.device();
        let positions = Tensor::arange(0u32, s as u32, dev)?.unsqueeze(0)?;
        let types = ids.zeros_like()?;
        let x = self
            .word
            .forward(ids)?
            .broadcast_add(&self.position.forward(&positions)?)?
            .add(&self.token_type.forward(&types)?)?;
        let mut x = self.ln.forward(&x)?;
        // Additive mask: 0 where attended, a large negative value on padding. (b, 1, 1, s)
        let bias = ((mask.ones_like()? - mask)? * -1e4f64)?.reshape((b, 1, 1, s))?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        for layer in &self.layers {
            let split = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((b, s, self.heads, self.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = split(layer.query.forward(&x)?)?;
            let k = split(layer.key.forward(&x)?)?;
            let v = split(layer.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((
                b,
                s,
                self.heads * self.head_dim,
            ))?;
            let attn = layer.attn_ln.forward(&(layer.attn_out.forward(&ctx)? + &x)?)?;
            let inter = layer.inter.forward(&attn)?.gelu_erf()?;
            x = layer.out_ln.forward(&(layer.out.forward(&inter)? + &attn)?)?;
        }
        Ok(x)
    }
}

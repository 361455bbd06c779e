//! Text generation on llama.cpp (`llama-cpp-2`) with continuous batching and a prefix cache.
//!
//! One [`LlmModel`] owns one llama context with `parallel` sequence slots, driven by a dedicated
//! OS thread (the *scheduler*). Every scheduler iteration builds one batch holding one decode token
//! for every generating sequence plus prefill chunks of newly admitted prompts (up to `batch_size`
//! tokens), so a new request starts while others are mid-generation. A bounded queue
//! (`queue_capacity`) sits in front; [`LlmModel::generate`] never blocks and answers
//! [`EngineError::QueueFull`] when it is full.
//!
//! **Prefix cache**: each slot remembers the tokens whose KV it holds (also after its request ends).
//! A new sequence goes to the free slot with the longest common prefix; the slot's KV is cut after
//! that prefix and only the rest of the prompt is evaluated (at least one token always is, so there
//! are logits to sample from). [`GenEvent::Finished::cached_tokens`] and [`LlmModel::stats`] report
//! the reuse.
//!
//! **Events** go back over an unbounded tokio channel: the scheduler must never wait for a slow
//! reader (that would stall every other slot), and what one request can buffer is bounded anyway by
//! `n × max_tokens` small events. Dropping the [`Generation`] closes the channel; the scheduler sees
//! that at its next iteration and frees the slots (KV kept for the prefix cache); a request still
//! in the queue is dropped from it and no longer counts against `queue_capacity`.
//!
//! **KV layout**: one unified KV buffer of `context_length × parallel` cells shared by the slots
//! (llama.cpp's per-slot streams only batch sequences with consecutive ids together), with flash
//! attention (llama.cpp's `auto` enables it on CPU; it skips the other slots' masked cells).
//!
//! **Loading** ([`LlmModel::load`]) reads the weights and builds the context: it blocks for a
//! moment, so call it from `spawn_blocking` at start-up.
//!
//! **Tokenisation** ([`LlmModel::tokenize`], and inside `generate` for text prompts) runs on the
//! caller's thread: it reads only the immutable vocabulary, costs microseconds per kilobyte, and
//! lets `generate` report [`EngineError::PromptTooLong`] synchronously. All decoding runs on the
//! scheduler thread.

mod sampler;
mod scheduler;
mod template;
pub mod text;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use tokio::sync::mpsc::{self, UnboundedReceiver};

use crate::EngineError;
use template::ChatTemplate;

/// How a model is loaded and served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// The name the model is served under (for logs and errors).
    pub name: String,
    /// The GGUF file.
    pub path: PathBuf,
    /// Context window of *one* sequence, in tokens (prompt + completion). 0 = the model's training
    /// context. Clamped to the training context. The KV cache holds `context_length × parallel`.
    pub context_length: u32,
    /// Sequence slots decoded together (llama.cpp `n_seq_max`), 1..=64.
    pub parallel: u32,
    /// CPU threads for llama.cpp (0 = all available cores).
    pub threads: u32,
    /// Requests that may wait for a slot; one more gets [`EngineError::QueueFull`]. At least 1.
    pub queue_capacity: usize,
    /// Most tokens evaluated in one scheduler iteration (llama.cpp `n_batch` = `n_ubatch`).
    pub batch_size: u32,
    /// Use flash attention (llama.cpp's `auto` when `None`).
    pub flash_attention: Option<bool>,
}

impl ModelConfig {
    /// Defaults: 4096-token context, 4 slots, all cores, queue of 64, batch of 512.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            context_length: 4096,
            parallel: 4,
            threads: 0,
            queue_capacity: 64,
            batch_size: 512,
            flash_attention: None,
        }
    }
}

/// What to generate from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Text, tokenized with the model's vocabulary (special tokens such as `<|im_start|>` are parsed).
    Text(String),
    /// Token ids of the model's vocabulary.
    Tokens(Vec<i32>),
}

/// Sampling parameters. `Default` is OpenAI's: temperature 1, top-p 1, no other filter or penalty.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus sampling, in (0, 1]; 1 = off.
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens; 0 = off.
    pub top_k: u32,
    /// Drop tokens less likely than `min_p ×` the most likely one, in [0, 1]; 0 = off.
    pub min_p: f32,
    /// Same seed, same request → same output (per choice: choice `i` derives its own seed).
    pub seed: Option<u64>,
    /// OpenAI presence penalty, in [-2, 2], over the completion so far.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty, in [-2, 2], over the completion so far.
    pub frequency_penalty: f32,
    /// llama.cpp / HF repetition penalty over the last 64 tokens (prompt included); 1 = off.
    pub repetition_penalty: f32,
    /// Added to the logit of each token before sampling (−100 bans, +100 forces).
    pub logit_bias: Vec<(i32, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            logit_bias: Vec::new(),
        }
    }
}

/// A generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Add the model's BOS/EOS tokens when tokenizing a text prompt (false for rendered chat
    /// templates, which carry their own).
    pub add_special: bool,
    /// Sampling parameters.
    pub sampling: SamplingParams,
    /// Completion tokens per choice; `None` = until the context is full.
    pub max_tokens: Option<u32>,
    /// Stop strings: matched across token boundaries, never emitted, end the choice with `Stop`.
    pub stop: Vec<String>,
    /// Choices, 1..=8; each is its own sequence (its own slot).
    pub n: u32,
    /// `Some(k)`: report the chosen token's log-probability and the `k` best alternatives (0..=20).
    pub logprobs: Option<u32>,
    /// Emit the prompt text first (as the first `Text` event of each choice, without logprobs).
    pub echo: bool,
}

impl GenerateRequest {
    /// A request with defaults: one choice, no limits beyond the context, no stop strings.
    pub fn new(prompt: Prompt) -> Self {
        Self {
            prompt,
            add_special: true,
            sampling: SamplingParams::default(),
            max_tokens: None,
            stop: Vec::new(),
            n: 1,
            logprobs: None,
            echo: false,
        }
    }
}

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached, or the context window is full.
    Length,
}

/// One alternative in [`TokenLogprob::top_logprobs`].
#[derive(Debug, Clone, PartialEq)]
pub struct TopLogprob {
    /// Token id.
    pub id: i32,
    /// The token's text (lossy when the token is part of a multi-byte character).
    pub token: String,
    /// The token's raw bytes.
    pub bytes: Vec<u8>,
    /// Natural-log probability (log-softmax over the full vocabulary, at temperature 1, after
    /// penalties and logit bias).
    pub logprob: f32,
}

/// Log-probability of one generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// Token id.
    pub id: i32,
    /// The token's text (lossy when the token is part of a multi-byte character).
    pub token: String,
    /// The token's raw bytes.
    pub bytes: Vec<u8>,
    /// Natural-log probability of this token.
    pub logprob: f32,
    /// The most likely alternatives, best first (`logprobs` of them).
    pub top_logprobs: Vec<TopLogprob>,
}

/// An event of a [`Generation`]. Choices interleave; each ends with exactly one `Finished` (or
/// an `Error`).
#[derive(Debug, Clone)]
pub enum GenEvent {
    /// New text of choice `index`, with the logprobs of the tokens it came from when requested.
    /// Never splits a UTF-8 character, never contains (part of) a stop string.
    Text {
        /// Choice index.
        index: u32,
        /// The text delta.
        text: String,
        /// Logprobs of the tokens behind this delta (empty unless requested).
        logprobs: Vec<TokenLogprob>,
    },
    /// Choice `index` is done.
    Finished {
        /// Choice index.
        index: u32,
        /// Why it ended.
        reason: FinishReason,
        /// Tokens generated for this choice (an end-of-generation token counts).
        completion_tokens: u32,
        /// Prompt tokens whose KV came from the prefix cache instead of being evaluated.
        cached_tokens: u32,
    },
    /// The request failed; no more events follow for it.
    Error(EngineError),
}

/// A running generation: a stream of [`GenEvent`]s ending after every choice finished.
/// Dropping it cancels the request and frees its slots.
#[derive(Debug)]
pub struct Generation {
    /// Tokens in the prompt (per choice).
    pub prompt_tokens: u32,
    rx: UnboundedReceiver<GenEvent>,
}

impl Generation {
    /// The next event; `None` once every choice finished.
    pub async fn next(&mut self) -> Option<GenEvent> {
        self.rx.recv().await
    }

    /// Like [`Generation::next`], for plain threads (panics if called inside an async runtime).
    pub fn blocking_next(&mut self) -> Option<GenEvent> {
        self.rx.blocking_recv()
    }
}

impl futures_core::Stream for Generation {
    type Item = GenEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<GenEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// Counters of one model since it was loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Requests accepted by `generate`.
    pub requests: u64,
    /// Requests refused with `QueueFull`.
    pub rejected: u64,
    /// Prompt tokens evaluated (prefill work actually done).
    pub prefill_tokens: u64,
    /// Prompt tokens served from the prefix cache instead.
    pub cached_tokens: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Requests waiting in the queue now.
    pub queued: u64,
    /// Sequences in slots now.
    pub active: u64,
    /// Batches evaluated (scheduler iterations that ran the model).
    pub batches: u64,
    /// Time spent inside llama.cpp evaluating them, in microseconds.
    pub decode_us: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
    pub prefill_tokens: AtomicU64,
    pub cached_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub queued: AtomicU64,
    pub active: AtomicU64,
    pub batches: AtomicU64,
    pub decode_us: AtomicU64,
}

/// Token id → the bytes it detokenizes to (special tokens render as nothing).
pub(crate) struct Pieces {
    bytes: Vec<u8>,
    offsets: Vec<u32>,
}

impl Pieces {
    pub(crate) fn get(&self, token: i32) -> &[u8] {
        let Ok(i) = usize::try_from(token) else {
            return &[];
        };
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => self.bytes.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// A loaded GGUF model with its scheduler. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct LlmModel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LlmModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmModel")
            .field("name", &self.inner.config.name)
            .field("path", &self.inner.config.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: ModelConfig,
    model: Arc<LlamaModel>,
    template: Option<ChatTemplate>,
    pieces: Arc<Pieces>,
    eog: Arc<Vec<bool>>,
    bos: i32,
    n_vocab: u32,
    context_length: u32,
    queue: Arc<scheduler::Queue>,
    stats: Arc<Stats>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: let the scheduler finish in-flight work and exit.
        self.queue.close();
    }
}

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

pub(crate) fn backend() -> Result<&'static LlamaBackend, EngineError> {
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Internal(format!("llama.cpp backend: {e}")))
}

const MAX_N: u32 = 8;
const MAX_TOP_LOGPROBS: u32 = 20;
const MAX_PARALLEL: u32 = 64;

impl LlmModel {
    /// Loads the GGUF at `cfg.path`, creates its context and starts its scheduler thread.
    pub fn load(cfg: ModelConfig) -> Result<Self, EngineError> {
        if !cfg.path.is_file() {
            return Err(EngineError::ModelNotFound { path: cfg.path });
        }
        if cfg.parallel == 0 || cfg.parallel > MAX_PARALLEL {
            return Err(EngineError::invalid_param(
                "parallel",
                format!("must be 1..={MAX_PARALLEL}"),
            ));
        }
        let backend = backend()?;
        let invalid = |message: String| EngineError::InvalidModel {
            path: cfg.path.clone(),
            message,
        };
        let model = LlamaModel::load_from_file(backend, &cfg.path, &LlamaModelParams::default())
            .map_err(|e| invalid(format!("llama.cpp could not load it as a GGUF model ({e})")))?;
        let model = Arc::new(model);

        let n_vocab =
            u32::try_from(model.n_vocab()).map_err(|_| invalid("negative vocabulary size".to_owned()))?;
        let train = model.n_ctx_train().max(1);
        let context_length = if cfg.context_length == 0 {
            train
        } else {
            cfg.context_length.min(train)
        };
        let threads = if cfg.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
        } else {
            cfg.threads
        };
        let batch_size = cfg.batch_size.max(cfg.parallel).max(32);

        // Detokenization table and end-of-generation set, built once.
        let vocab = model.vocab();
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(n_vocab as usize + 1);
        let mut eog = Vec::with_capacity(n_vocab as usize);
        offsets.push(0u32);
        for token in vocab.tokens() {
            let piece = vocab.token_to_piece(token, false, None);
            bytes.extend_from_slice(&piece);
            offsets.push(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
            eog.push(vocab.is_eog(token));
        }
        let bos = vocab.bos().0;
        let piece_text = |t: i32| -> String {
            if t < 0 || t as u32 >= n_vocab {
                return String::new();
            }
            vocab
                .text(llama_cpp_2::token::LlamaToken(t))
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let template = model
            .meta_val_str("tokenizer.chat_template")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(|src| ChatTemplate::new(src, piece_text(bos), piece_text(vocab.eos().0)));

        let stats = Arc::new(Stats::default());
        let pieces = Arc::new(Pieces { bytes, offsets });
        let eog = Arc::new(eog);
        let queue = Arc::new(scheduler::Queue::new(cfg.queue_capacity));
        scheduler::spawn(
            scheduler::Setup {
                name: cfg.name.clone(),
                model: Arc::clone(&model),
                n_ctx: context_length.saturating_mul(cfg.parallel),
                threads,
                flash_attention: cfg.flash_attention,
                parallel: cfg.parallel,
                batch_size,
                pieces: Arc::clone(&pieces),
                eog: Arc::clone(&eog),
                stats: Arc::clone(&stats),
            },
            Arc::clone(&queue),
        )
        .map_err(|e| invalid(format!("cannot create a context: {e}")))?;

        let config = ModelConfig {
            context_length,
            threads,
            batch_size,
            ..cfg
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                model,
                template,
                pieces,
                eog,
                bos,
                n_vocab,
                context_length,
                queue,
                stats,
            }),
        })
    }

    /// The effective configuration (context length clamped, threads resolved).
    pub fn config(&self) -> &ModelConfig {
        &self.inner.config
    }

    /// The Jinja chat template from the GGUF metadata (`tokenizer.chat_template`), if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.inner.template.as_ref().map(ChatTemplate::source)
    }

    /// Renders OpenAI-shaped `messages` (role, content, tool_calls, tool_call_id, name) and `tools`
    /// with the model's own template. The result already holds the template's special tokens:
    /// generate from it with `add_special: false`.
    pub fn render_chat(
        &self,
        messages: &serde_json::Value,
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        let template = self.inner.template.as_ref().ok_or(EngineError::NoChatTemplate)?;
        template.render(messages, tools, add_generation_prompt)
    }

    /// Tokenizes `text` (special-token text such as `<|im_end|>` is parsed as the special token);
    /// `add_special` adds BOS (and EOS where the model wants it).
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<i32>, EngineError> {
        let vocab = self.inner.model.vocab();
        Ok(vocab
            .tokenize(text.as_bytes(), add_special, true)
            .into_iter()
            .map(|t| t.0)
            .collect())
    }

    /// Text of `tokens` (special tokens render as nothing; invalid UTF-8 becomes U+FFFD).
    pub fn detokenize(&self, tokens: &[i32]) -> String {
        let mut bytes = Vec::new();
        for &t in tokens {
            bytes.extend_from_slice(self.inner.pieces.get(t));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Context window of one sequence (prompt + completion).
    pub fn context_length(&self) -> u32 {
        self.inner.context_length
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> u32 {
        self.inner.n_vocab
    }

    /// Whether `token` ends generation (EOS, EOT, `<|im_end|>`, …).
    pub fn is_eog(&self, token: i32) -> bool {
        usize::try_from(token)
            .ok()
            .and_then(|t| self.inner.eog.get(t).copied())
            .unwrap_or(false)
    }

    /// Token ids that end generation.
    pub fn eog_tokens(&self) -> Vec<i32> {
        (0..self.inner.eog.len())
            .filter(|&t| self.inner.eog[t])
            .map(|t| t as i32)
            .collect()
    }

    /// Counters since load.
    pub fn stats(&self) -> EngineStats {
        let s = &self.inner.stats;
        EngineStats {
            requests: s.requests.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            prefill_tokens: s.prefill_tokens.load(Ordering::Relaxed),
            cached_tokens: s.cached_tokens.load(Ordering::Relaxed),
            generated_tokens: s.generated_tokens.load(Ordering::Relaxed),
            queued: s.queued.load(Ordering::Relaxed),
            active: s.active.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            decode_us: s.decode_us.load(Ordering::Relaxed),
        }
    }

    fn validate(&self, req: &GenerateRequest) -> Result<(), EngineError> {
        let s = &req.sampling;
        if req.n == 0 || req.n > MAX_N {
            return Err(EngineError::invalid_param("n", format!("must be 1..={MAX_N}")));
        }
        if !(s.temperature.is_finite() && s.temperature >= 0.0) {
            return Err(EngineError::invalid_param("temperature", "must be a number >= 0"));
        }
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            return Err(EngineError::invalid_param("top_p", "must be in (0, 1]"));
        }
        if !(0.0..=1.0).contains(&s.min_p) {
            return Err(EngineError::invalid_param("min_p", "must be in [0, 1]"));
        }
        if !(-2.0..=2.0).contains(&s.presence_penalty) {
            return Err(EngineError::invalid_param(
                "presence_penalty",
                "must be in [-2, 2]",
            ));
        }
        if !(-2.0..=2.0).contains(&s.frequency_penalty) {
            return Err(EngineError::invalid_param(
                "frequency_penalty",
                "must be in [-2, 2]",
            ));
        }
        if !(s.repetition_penalty.is_finite() && s.repetition_penalty > 0.0) {
            return Err(EngineError::invalid_param("repetition_penalty", "must be > 0"));
        }
        for &(tok, b) in &s.logit_bias {
            if tok < 0 || tok as u32 >= self.inner.n_vocab {
                return Err(EngineError::invalid_param(
                    "logit_bias",
                    format!(
                        "token {tok} is not in the vocabulary (size {})",
                        self.inner.n_vocab
                    ),
                ));
            }
            if !b.is_finite() {
                return Err(EngineError::invalid_param(
                    "logit_bias",
                    "biases must be finite numbers",
                ));
            }
        }
        if let Some(k) = req.logprobs
            && k > MAX_TOP_LOGPROBS
        {
            return Err(EngineError::invalid_param(
                "top_logprobs",
                format!("must be 0..={MAX_TOP_LOGPROBS}"),
            ));
        }
        if req.stop.len() > 16 {
            return Err(EngineError::invalid_param("stop", "at most 16 stop strings"));
        }
        Ok(())
    }

    /// Enqueues a generation; never blocks. Errors: `QueueFull` when the queue is full,
    /// `PromptTooLong` when prompt + `max_tokens` exceed the context, `InvalidParam`.
    pub fn generate(&self, req: GenerateRequest) -> Result<Generation, EngineError> {
        self.validate(&req)?;
        let mut tokens = match &req.prompt {
            Prompt::Text(text) => self.tokenize(text, req.add_special)?,
            Prompt::Tokens(tokens) => {
                if let Some(&bad) = tokens.iter().find(|&&t| t < 0 || t as u32 >= self.inner.n_vocab) {
                    return Err(EngineError::invalid_param(
                        "prompt",
                        format!(
                            "token {bad} is not in the vocabulary (size {})",
                            self.inner.n_vocab
                        ),
                    ));
                }
                tokens.clone()
            }
        };
        if tokens.is_empty() {
            // An empty prompt: start from BOS so there is something to evaluate.
            tokens.push(self.inner.bos.max(0));
        }
        let limit = self.inner.context_length;
        let prompt_len = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        let needed = prompt_len.saturating_add(req.max_tokens.unwrap_or(1));
        if needed > limit {
            return Err(EngineError::PromptTooLong {
                tokens: needed,
                limit,
            });
        }
        let max_tokens = req
            .max_tokens
            .unwrap_or(limit - prompt_len)
            .min(limit - prompt_len);

        let (tx, rx) = mpsc::unbounded_channel();
        if req.echo {
            let text = match &req.prompt {
                Prompt::Text(text) => text.clone(),
                Prompt::Tokens(t) => self.detokenize(t),
            };
            for index in 0..req.n {
                let _ = tx.send(GenEvent::Text {
                    index,
                    text: text.clone(),
                    logprobs: Vec::new(),
                });
            }
        }
        if max_tokens == 0 {
            // Nothing to generate (e.g. `echo` with `max_tokens: 0` to score a prompt).
            for index in 0..req.n {
                let _ = tx.send(GenEvent::Finished {
                    index,
                    reason: FinishReason::Length,
                    completion_tokens: 0,
                    cached_tokens: 0,
                });
            }
            self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
            return Ok(Generation {
                prompt_tokens: prompt_len,
                rx,
            });
        }
        let job = scheduler::Job {
            prompt: Arc::new(tokens),
            sampling: req.sampling,
            max_tokens,
            stop: req.stop,
            n: req.n,
            logprobs: req.logprobs,
            tx,
        };
        let stats = &self.inner.stats;
        match self.inner.queue.push(job) {
            Ok(queued) => {
                stats.requests.fetch_add(1, Ordering::Relaxed);
                stats.queued.store(queued as u64, Ordering::Relaxed);
                Ok(Generation {
                    prompt_tokens: prompt_len,
                    rx,
                })
            }
            Err(scheduler::PushError::Full) => {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                Err(EngineError::QueueFull)
            }
            Err(scheduler::PushError::Closed) => Err(EngineError::Internal(format!(
                "the scheduler of model `{}` has stopped",
                self.inner.config.name
            ))),
        }
    }
}

//! `switchyard bench`: prefill and decode throughput, batching scale-up and prefix-cache latency of
//! one GGUF model, measured through the same scheduler the gateway uses.
//!
//! - **prefill**: a ~`prefill_tokens` prompt, `max_tokens = 1`; tokens ÷ time to the first token
//!   (median of 3 prompts).
//! - **decode**: one stream of `decode_tokens` (greedy, end-of-generation tokens banned so it runs to
//!   the end); tokens after the first ÷ time between the first and the last (median of 3).
//! - **aggregate decode** with 1, 4, 8 … concurrent streams: tokens that arrive while *all* streams
//!   are decoding ÷ the length of that window (so prefill of the short prompts is not counted).
//! - **prefix cache**: time to first token of a ~`prefix_tokens` prompt cold, then of a prompt with
//!   the same prefix and another ending (served from the prefix cache); median of 3.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::EngineError;
use crate::llm::{GenEvent, GenerateRequest, LlmModel, ModelConfig, Prompt, SamplingParams};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOpts {
    /// GGUF file.
    pub model: PathBuf,
    /// Display name.
    pub name: String,
    /// llama.cpp threads (2 on the reference machine).
    pub threads: u32,
    /// Prompt length for the prefill measurement.
    pub prefill_tokens: usize,
    /// Tokens per stream for the decode measurements.
    pub decode_tokens: u32,
    /// Concurrent stream counts for the aggregate measurement.
    pub streams: Vec<u32>,
    /// Shared-prefix length for the prefix-cache measurement.
    pub prefix_tokens: usize,
    /// Scheduler batch size.
    pub batch_size: u32,
    /// Flash attention (`None` = llama.cpp's auto).
    pub flash_attention: Option<bool>,
}

impl BenchOpts {
    /// Defaults: 2 threads, 512-token prefill, 128 decode tokens, 1/4/8 streams, 1000-token prefix.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        let model = model.into();
        let name = model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            model,
            name,
            threads: 2,
            prefill_tokens: 512,
            decode_tokens: 128,
            streams: vec![1, 4, 8],
            prefix_tokens: 1000,
            batch_size: 512,
            flash_attention: None,
        }
    }
}

/// Measured figures.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Display name.
    pub name: String,
    /// Threads used.
    pub threads: u32,
    /// Prompt tokens of the prefill run.
    pub prefill_tokens: u32,
    /// Prefill throughput, one stream (tokens/s).
    pub prefill_tok_s: f64,
    /// Decode throughput, one stream (tokens/s).
    pub decode_tok_s: f64,
    /// (streams, aggregate decode tokens/s).
    pub aggregate: Vec<(u32, f64)>,
    /// Prompt tokens of the prefix-cache runs.
    pub prefix_tokens: u32,
    /// Time to first token, cold.
    pub ttft_cold: Duration,
    /// Time to first token with the prefix cached (median of 3).
    pub ttft_cached: Duration,
    /// (streams, mean milliseconds inside llama.cpp per scheduler batch) of the aggregate runs.
    pub decode_ms_per_batch: Vec<(u32, f64)>,
}

impl BenchReport {
    /// Aggregate decode with `streams` streams ÷ one stream.
    pub fn scaling(&self, streams: u32) -> Option<f64> {
        let one = self.aggregate.iter().find(|a| a.0 == 1)?.1;
        let n = self.aggregate.iter().find(|a| a.0 == streams)?.1;
        Some(n / one)
    }

    /// Cold ÷ cached time to first token.
    pub fn prefix_speedup(&self) -> f64 {
        self.ttft_cold.as_secs_f64() / self.ttft_cached.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} ({} threads)", self.name, self.threads)?;
        writeln!(
            f,
            "  prefill   {:>8.1} tok/s  ({} tokens, one stream)",
            self.prefill_tok_s, self.prefill_tokens
        )?;
        writeln!(f, "  decode    {:>8.1} tok/s  (one stream)", self.decode_tok_s)?;
        for &(n, tps) in &self.aggregate {
            let scale = self.scaling(n).map_or(String::new(), |s| format!("  {s:.2}x"));
            let ms = self
                .decode_ms_per_batch
                .iter()
                .find(|d| d.0 == n)
                .map_or(String::new(), |d| format!("  ({:.1} ms/step in llama.cpp)", d.1));
            writeln!(f, "  {n:>2} streams {tps:>7.1} tok/s aggregate decode{scale}{ms}")?;
        }
        write!(
            f,
            "  TTFT {}-token prompt: cold {:.0} ms, cached prefix {:.0} ms ({:.1}x faster)",
            self.prefix_tokens,
            self.ttft_cold.as_secs_f64() * 1e3,
            self.ttft_cached.as_secs_f64() * 1e3,
            self.prefix_speedup()
        )
    }
}

/// Loads the model and runs every measurement (takes tens of seconds).
pub fn run(opts: BenchOpts) -> Result<BenchReport, EngineError> {
    let parallel = opts.streams.iter().copied().max().unwrap_or(1).max(1);
    let context = (opts.prefix_tokens.max(opts.prefill_tokens) as u32 + opts.decode_tokens + 64).max(256);
    let mut cfg = ModelConfig::new(opts.name.clone(), opts.model.clone());
    cfg.context_length = context;
    cfg.parallel = parallel;
    cfg.threads = opts.threads;
    cfg.queue_capacity = parallel as usize * 2;
    cfg.batch_size = opts.batch_size;
    cfg.flash_attention = opts.flash_attention;
    let model = LlmModel::load(cfg)?;
    let mut tag = 0u32;
    let mut next_tag = || {
        tag += 1;
        tag
    };

    // Warm-up (page in the weights, build the graphs).
    let warm = prompt_tokens(&model, next_tag(), 32)?;
    run_one(&model, greedy(warm, 4, &[]))?;

    // Prefill (median of 3 distinct prompts).
    let mut n_prefill = 0;
    let mut rates = Vec::new();
    for _ in 0..3 {
        let prompt = prompt_tokens(&model, next_tag(), opts.prefill_tokens)?;
        n_prefill = prompt.len() as u32;
        let t = run_one(&model, greedy(prompt, 1, &[]))?;
        rates.push(f64::from(n_prefill) / t.first.as_secs_f64().max(1e-9));
    }
    let prefill_tok_s = median(&mut rates);

    // Decode, one stream (median of 3).
    let eog = model.eog_tokens();
    let mut rates = Vec::new();
    for _ in 0..3 {
        let prompt = prompt_tokens(&model, next_tag(), 16)?;
        let t = run_one(&model, greedy(prompt, opts.decode_tokens, &eog))?;
        rates.push(f64::from(t.tokens.saturating_sub(1)) / (t.last - t.first).as_secs_f64().max(1e-9));
    }
    let decode_tok_s = median(&mut rates);

    // Aggregate decode.
    let mut aggregate = Vec::new();
    let mut decode_share = Vec::new();
    for &streams in &opts.streams {
        let before = model.stats();
        let mut handles = Vec::new();
        let start = Instant::now();
        for _ in 0..streams {
            let prompt = prompt_tokens(&model, next_tag(), 16)?;
            let generation = model.generate(greedy(prompt, opts.decode_tokens, &eog))?;
            handles.push(std::thread::spawn(move || collect(generation, start)));
        }
        let mut runs = Vec::new();
        for h in handles {
            runs.push(
                h.join()
                    .map_err(|_| EngineError::internal("bench thread panicked"))??,
            );
        }
        let window_start = runs.iter().map(|r| r.first).max().unwrap_or_default();
        let window_end = runs.iter().map(|r| r.last).min().unwrap_or_default();
        let in_window: usize = runs
            .iter()
            .map(|r| {
                r.times
                    .iter()
                    .filter(|&&t| t > window_start && t <= window_end)
                    .count()
            })
            .sum();
        let secs = (window_end.saturating_sub(window_start)).as_secs_f64().max(1e-9);
        aggregate.push((streams, in_window as f64 / secs));
        let after = model.stats();
        let batches = after.batches - before.batches;
        let us = after.decode_us - before.decode_us;
        decode_share.push((streams, us as f64 / 1e3 / batches.max(1) as f64));
    }

    // Prefix cache.
    let prefix = prompt_tokens(&model, next_tag(), opts.prefix_tokens)?;
    let with_suffix = |s: u32| -> Result<Vec<i32>, EngineError> {
        let mut p = prefix.clone();
        p.extend(model.tokenize(&format!(" Question {s}: what comes next?"), false)?);
        Ok(p)
    };
    let cold = run_one(&model, greedy(with_suffix(0)?, 1, &[]))?.first;
    let mut cached = Vec::new();
    for s in 1..=3 {
        cached.push(run_one(&model, greedy(with_suffix(s)?, 1, &[]))?.first);
    }
    cached.sort();
    Ok(BenchReport {
        name: opts.name,
        threads: opts.threads,
        prefill_tokens: n_prefill,
        prefill_tok_s,
        decode_tok_s,
        aggregate,
        prefix_tokens: u32::try_from(prefix.len()).unwrap_or(u32::MAX),
        ttft_cold: cold,
        ttft_cached: cached[1],
        decode_ms_per_batch: decode_share,
    })
}

/// Distinct, natural-looking text of about `n` tokens (BOS first when the model wants one).
fn prompt_tokens(model: &LlmModel, tag: u32, n: usize) -> Result<Vec<i32>, EngineError> {
    const WORDS: &[&str] = &[
        "the", "river", "carried", "old", "boats", "past", "quiet", "towns", "where", "people", "sold",
        "bread", "and", "fish", "while", "children", "watched", "from", "stone", "bridges", "under", "a",
        "grey", "sky", "that", "promised", "rain", "before", "evening",
    ];
    let mut text = format!("Story number {tag}.");
    let mut i = tag as usize;
    let mut tokens = model.tokenize(&text, true)?;
    while tokens.len() < n {
        for _ in 0..64 {
            text.push(' ');
            text.push_str(WORDS[i % WORDS.len()]);
            i = i.wrapping_mul(31).wrapping_add(7);
        }
        text.push('.');
        tokens = model.tokenize(&text, true)?;
    }
    tokens.truncate(n);
    Ok(tokens)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn greedy(prompt: Vec<i32>, max_tokens: u32, banned: &[i32]) -> GenerateRequest {
    let mut req = GenerateRequest::new(Prompt::Tokens(prompt));
    req.sampling = SamplingParams {
        temperature: 0.0,
        logit_bias: banned.iter().map(|&t| (t, -1e9)).collect(),
        ..SamplingParams::default()
    };
    req.max_tokens = Some(max_tokens);
    req
}

struct Timing {
    /// Time to the first event, from the start.
    first: Duration,
    /// Time to the last token.
    last: Duration,
    /// Arrival time of every token-bearing event.
    times: Vec<Duration>,
    tokens: u32,
}

fn run_one(model: &LlmModel, req: GenerateRequest) -> Result<Timing, EngineError> {
    let generation = model.generate(req)?;
    collect(generation, Instant::now())
}

fn collect(mut generation: crate::llm::Generation, start: Instant) -> Result<Timing, EngineError> {
    let mut times = Vec::new();
    let mut tokens = 0;
    let mut first = None;
    while let Some(ev) = generation.blocking_next() {
        let now = start.elapsed();
        first.get_or_insert(now);
        match ev {
            GenEvent::Text { .. } => times.push(now),
            GenEvent::Finished {
                completion_tokens, ..
            } => tokens = completion_tokens,
            GenEvent::Error(e) => return Err(e),
        }
    }
    let last = times.last().copied().unwrap_or_else(|| start.elapsed());
    Ok(Timing {
        first: first.unwrap_or(last),
        last,
        times,
        tokens,
    })
}

//! The scheduler thread: continuous batching over the slots of one llama context.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Condvar, Mutex};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;

use super::sampler::{Sampler, choice_seed};
use super::text::{StopMatcher, StopOutcome, Utf8Decoder};
use super::{FinishReason, GenEvent, Pieces, SamplingParams, Stats, TokenLogprob, TopLogprob, backend};
use crate::EngineError;

/// A request as the scheduler sees it (already tokenized and validated).
pub(crate) struct Job {
    pub prompt: Arc<Vec<i32>>,
    pub sampling: SamplingParams,
    /// Already clamped to the room left in the context.
    pub max_tokens: u32,
    pub stop: Vec<String>,
    pub n: u32,
    pub logprobs: Option<u32>,
    pub tx: UnboundedSender<GenEvent>,
}

pub(crate) struct Setup {
    pub name: String,
    pub model: Arc<LlamaModel>,
    pub n_ctx: u32,
    pub threads: u32,
    pub flash_attention: Option<bool>,
    pub parallel: u32,
    pub batch_size: u32,
    pub pieces: Arc<Pieces>,
    pub eog: Arc<Vec<bool>>,
    pub stats: Arc<Stats>,
}

/// The bounded request queue between `generate` and the scheduler. Unlike a channel it lets both
/// sides drop requests whose client went away, so dead requests never hold queue places.
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    capacity: usize,
}

struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// Why [`Queue::push`] refused a job.
pub(crate) enum PushError {
    Full,
    Closed,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, job: Job) -> Result<usize, PushError> {
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed);
        }
        state.jobs.retain(|j| !j.tx.is_closed());
        if state.jobs.len() >= self.capacity {
            return Err(PushError::Full);
        }
        state.jobs.push_back(job);
        let len = state.jobs.len();
        drop(state);
        self.ready.notify_one();
        Ok(len)
    }

    /// The next live job; when `wait`, blocks until there is one or the queue is closed.
    fn pop(&self, wait: bool) -> Option<Job> {
        let mut state = self.lock();
        loop {
            while let Some(job) = state.jobs.pop_front() {
                if !job.tx.is_closed() {
                    return Some(job);
                }
            }
            if !wait || state.closed {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// No more jobs: the scheduler finishes what it has and exits.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// Starts the scheduler thread; returns once its context exists (or failed to).
pub(crate) fn spawn(setup: Setup, queue: Arc<Queue>) -> Result<(), String> {
    let (ready_tx, ready_rx) = sync_channel::<Result<(), String>>(1);
    std::thread::Builder::new()
        .name(format!("llm-{}", setup.name))
        .spawn(move || run(setup, &queue, ready_tx))
        .map_err(|e| format!("cannot start the scheduler thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the scheduler thread died while starting".to_owned()),
    }
}

fn run(setup: Setup, queue: &Queue, ready: SyncSender<Result<(), String>>) {
    let backend = match backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let mut params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(setup.n_ctx))
        .with_n_batch(setup.batch_size)
        .with_n_ubatch(setup.batch_size)
        .with_n_seq_max(setup.parallel)
        // One KV buffer shared by all slots. With per-slot streams llama.cpp splits a batch into
        // ubatches of *consecutive* sequence ids only, so slots 0, 2, 5 decoding together would
        // run as three separate passes; unified, the whole batch is one pass. Flash attention
        // (llama.cpp's `auto` picks it on CPU) skips the other sequences' masked cells.
        .with_kv_unified(true)
        .with_n_threads(i32::try_from(setup.threads).unwrap_or(1))
        .with_n_threads_batch(i32::try_from(setup.threads).unwrap_or(1));
    if let Some(fa) = setup.flash_attention {
        params = params.with_flash_attention_policy(if fa {
            llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED
        } else {
            llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED
        });
    }
    let model = Arc::clone(&setup.model);
    let mut ctx = match model.new_context(backend, params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    let mut scheduler = Scheduler::new(&setup);
    scheduler.run(&mut ctx, queue);
    tracing::debug!(model = %setup.name, "scheduler stopped");
}

struct Slot {
    /// Tokens whose KV this sequence holds, in order (positions 0..len).
    tokens: Vec<i32>,
    busy: bool,
    last_used: u64,
}

/// One choice of a job waiting for a slot.
struct Pending {
    job: Arc<Job>,
    index: u32,
}

struct Seq {
    slot: usize,
    index: u32,
    job: Arc<Job>,
    /// Prompt tokens in the KV (reused or evaluated).
    prefilled: usize,
    cached: u32,
    /// Sampled, not yet evaluated.
    next: Option<i32>,
    generated: u32,
    sampler: Sampler,
    decoder: Utf8Decoder,
    stop: StopMatcher,
    pending_logprobs: Vec<TokenLogprob>,
    /// Batch index of this sequence's logits in the current iteration.
    out: Option<i32>,
    done: bool,
}

struct Scheduler {
    slots: Vec<Slot>,
    active: Vec<Seq>,
    pending: VecDeque<Pending>,
    batch_size: usize,
    pieces: Arc<Pieces>,
    eog: Arc<Vec<bool>>,
    stats: Arc<Stats>,
    tick: u64,
}

impl Scheduler {
    fn new(setup: &Setup) -> Self {
        Self {
            slots: (0..setup.parallel)
                .map(|_| Slot {
                    tokens: Vec::new(),
                    busy: false,
                    last_used: 0,
                })
                .collect(),
            active: Vec::new(),
            pending: VecDeque::new(),
            batch_size: setup.batch_size as usize,
            pieces: Arc::clone(&setup.pieces),
            eog: Arc::clone(&setup.eog),
            stats: Arc::clone(&setup.stats),
            tick: 0,
        }
    }

    fn run(&mut self, ctx: &mut LlamaContext<'_>, queue: &Queue) {
        let mut batch = LlamaBatch::new(self.batch_size, 1);
        loop {
            self.reap();
            if !self.admit(ctx, queue) {
                return;
            }
            if self.active.is_empty() {
                continue;
            }
            self.step(ctx, &mut batch);
        }
    }

    /// Frees the slots of finished and cancelled sequences.
    fn reap(&mut self) {
        for seq in &mut self.active {
            if seq.job.tx.is_closed() {
                seq.done = true;
            }
        }
        let slots = &mut self.slots;
        let tick = &mut self.tick;
        self.active.retain(|seq| {
            if seq.done {
                *tick += 1;
                slots[seq.slot].busy = false;
                slots[seq.slot].last_used = *tick;
            }
            !seq.done
        });
        self.stats
            .active
            .store(self.active.len() as u64, Ordering::Relaxed);
    }

    /// Fills free slots from the pending choices and the queue. Returns false when the queue is
    /// closed (every `LlmModel` handle dropped) and nothing is left to do.
    fn admit(&mut self, ctx: &mut LlamaContext<'_>, queue: &Queue) -> bool {
        loop {
            if !self.slots.iter().any(|s| !s.busy) {
                self.stats.queued.store(queue.len() as u64, Ordering::Relaxed);
                return true;
            }
            let Some(next) = self.pending.pop_front() else {
                let idle = self.active.is_empty();
                let job = queue.pop(idle);
                self.stats.queued.store(queue.len() as u64, Ordering::Relaxed);
                let Some(job) = job else {
                    return !(idle && queue.is_closed());
                };
                let job = Arc::new(job);
                for index in 0..job.n {
                    self.pending.push_back(Pending {
                        job: Arc::clone(&job),
                        index,
                    });
                }
                continue;
            };
            if next.job.tx.is_closed() {
                continue;
            }
            self.start(ctx, next);
        }
    }

    fn start(&mut self, ctx: &mut LlamaContext<'_>, p: Pending) {
        let prompt = &p.job.prompt;
        // The free slot with the longest common prefix; ties go to the least recently used.
        let mut best: Option<(usize, usize, u64)> = None;
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.busy {
                continue;
            }
            let lcp = slot
                .tokens
                .iter()
                .zip(prompt.iter())
                .take_while(|(a, b)| a == b)
                .count();
            let better = match best {
                None => true,
                Some((_, l, used)) => lcp > l || (lcp == l && slot.last_used < used),
            };
            if better {
                best = Some((i, lcp, slot.last_used));
            }
        }
        let Some((slot_index, lcp, _)) = best else {
            self.pending.push_front(p);
            return;
        };
        // Keep at least one prompt token to evaluate, so there are logits to sample from.
        let mut reuse = lcp.min(prompt.len().saturating_sub(1));
        let slot = &mut self.slots[slot_index];
        if slot.tokens.len() > reuse {
            let seq = u32::try_from(slot_index).unwrap_or(0);
            let cut = u32::try_from(reuse).unwrap_or(0);
            if !matches!(ctx.clear_kv_cache_seq(Some(seq), Some(cut), None), Ok(true)) {
                let _ = ctx.clear_kv_cache_seq(Some(seq), None, None);
                reuse = 0;
            }
            slot.tokens.truncate(reuse);
        }
        slot.busy = true;
        self.stats
            .cached_tokens
            .fetch_add(reuse as u64, Ordering::Relaxed);
        let seed = choice_seed(p.job.sampling.seed, p.index);
        let sampler = Sampler::new(&p.job.sampling, seed, prompt);
        let stop = StopMatcher::new(&p.job.stop);
        self.active.push(Seq {
            slot: slot_index,
            index: p.index,
            prefilled: reuse,
            cached: u32::try_from(reuse).unwrap_or(u32::MAX),
            next: None,
            generated: 0,
            sampler,
            decoder: Utf8Decoder::new(),
            stop,
            pending_logprobs: Vec::new(),
            out: None,
            done: false,
            job: p.job,
        });
        self.stats
            .active
            .store(self.active.len() as u64, Ordering::Relaxed);
    }

    /// One iteration: a decode token for every generating sequence plus prefill chunks.
    fn step(&mut self, ctx: &mut LlamaContext<'_>, batch: &mut LlamaBatch<'_>) {
        batch.clear();
        // (sequence, first prompt index, count) of prefill chunks in this batch.
        let mut chunks: Vec<(usize, usize, usize)> = Vec::new();
        let mut fail: Option<String> = None;
        for seq in &mut self.active {
            seq.out = None;
            if let Some(token) = seq.next {
                let pos = self.slots[seq.slot].tokens.len() as i32;
                if let Err(e) = batch.add(LlamaToken(token), pos, &[seq.slot as i32], true) {
                    fail = Some(e.to_string());
                }
                seq.out = Some(batch.n_tokens() - 1);
            }
        }
        let mut budget = self.batch_size.saturating_sub(batch.n_tokens() as usize);
        for (k, seq) in self.active.iter_mut().enumerate() {
            if budget == 0 {
                break;
            }
            if seq.next.is_some() || seq.prefilled >= seq.job.prompt.len() {
                continue;
            }
            let prompt = &seq.job.prompt;
            let take = budget.min(prompt.len() - seq.prefilled);
            let base = self.slots[seq.slot].tokens.len();
            for j in 0..take {
                let i = seq.prefilled + j;
                let last = i + 1 == prompt.len();
                if let Err(e) = batch.add(LlamaToken(prompt[i]), (base + j) as i32, &[seq.slot as i32], last)
                {
                    fail = Some(e.to_string());
                }
                if last {
                    seq.out = Some(batch.n_tokens() - 1);
                }
            }
            chunks.push((k, seq.prefilled, take));
            budget -= take;
        }
        if fail.is_none() {
            let started = std::time::Instant::now();
            let result = ctx.decode(batch);
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.stats.decode_us.fetch_add(took, Ordering::Relaxed);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = result {
                fail = Some(format!("llama_decode failed: {e}"));
            }
        }
        if let Some(message) = fail {
            tracing::error!(%message, "generation batch failed");
            let in_batch: Vec<bool> = (0..self.active.len())
                .map(|k| self.active[k].out.is_some() || chunks.iter().any(|c| c.0 == k))
                .collect();
            for (seq, hit) in self.active.iter_mut().zip(in_batch) {
                if hit {
                    let _ = seq
                        .job
                        .tx
                        .send(GenEvent::Error(EngineError::Internal(message.clone())));
                    seq.done = true;
                    let _ = ctx.clear_kv_cache_seq(Some(seq.slot as u32), None, None);
                    self.slots[seq.slot].tokens.clear();
                }
            }
            return;
        }

        // The batch is in the KV now.
        let mut prefilled = 0u64;
        for &(k, from, count) in &chunks {
            let seq = &mut self.active[k];
            self.slots[seq.slot]
                .tokens
                .extend_from_slice(&seq.job.prompt[from..from + count]);
            seq.prefilled += count;
            prefilled += count as u64;
        }
        self.stats.prefill_tokens.fetch_add(prefilled, Ordering::Relaxed);
        for seq in &mut self.active {
            if let Some(token) = seq.next.take() {
                self.slots[seq.slot].tokens.push(token);
            }
        }

        let mut generated = 0u64;
        let mut active = std::mem::take(&mut self.active);
        for seq in &mut active {
            let Some(i) = seq.out.take() else { continue };
            let logits = ctx.get_logits_ith(i);
            let sampled = seq.sampler.sample(logits, seq.job.logprobs);
            generated += 1;
            self.accept(seq, sampled.token, sampled.logprobs);
        }
        self.active = active;
        self.stats
            .generated_tokens
            .fetch_add(generated, Ordering::Relaxed);
        self.reap();
    }

    fn piece(&self, token: i32) -> &[u8] {
        self.pieces.get(token)
    }

    fn logprob_entry(&self, token: i32, logprob: f32, top: &[(i32, f32)]) -> TokenLogprob {
        let bytes = self.piece(token).to_vec();
        TokenLogprob {
            id: token,
            token: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
            logprob,
            top_logprobs: top
                .iter()
                .map(|&(id, lp)| {
                    let bytes = self.piece(id).to_vec();
                    TopLogprob {
                        id,
                        token: String::from_utf8_lossy(&bytes).into_owned(),
                        bytes,
                        logprob: lp,
                    }
                })
                .collect(),
        }
    }

    /// Handles one sampled token of `seq`.
    fn accept(&self, seq: &mut Seq, token: i32, logprobs: Option<(f32, Vec<(i32, f32)>)>) {
        seq.generated += 1;
        seq.sampler.accept(token);
        if let Some((lp, top)) = &logprobs {
            let entry = self.logprob_entry(token, *lp, top);
            seq.pending_logprobs.push(entry);
        }
        let is_eog = usize::try_from(token)
            .ok()
            .and_then(|t| self.eog.get(t).copied())
            .unwrap_or(false);
        if is_eog {
            self.finish(seq, FinishReason::Stop, true);
            return;
        }
        let text = seq.decoder.push(self.piece(token));
        match seq.stop.push(&text) {
            StopOutcome::Emit(text) => {
                if !text.is_empty() {
                    let logprobs = std::mem::take(&mut seq.pending_logprobs);
                    if !send(seq, text, logprobs) {
                        return;
                    }
                }
            }
            StopOutcome::Stop(text) => {
                let logprobs = std::mem::take(&mut seq.pending_logprobs);
                if (!text.is_empty() || !logprobs.is_empty()) && !send(seq, text, logprobs) {
                    return;
                }
                self.finish(seq, FinishReason::Stop, false);
                return;
            }
        }
        if seq.generated >= seq.job.max_tokens {
            self.finish(seq, FinishReason::Length, true);
            return;
        }
        seq.next = Some(token);
    }

    fn finish(&self, seq: &mut Seq, reason: FinishReason, flush: bool) {
        if flush {
            let tail = seq.decoder.finish();
            let mut text = match seq.stop.push(&tail) {
                StopOutcome::Emit(t) => t + &seq.stop.finish(),
                StopOutcome::Stop(t) => t,
            };
            if text.is_empty() && seq.pending_logprobs.is_empty() {
                text.clear();
            } else {
                let logprobs = std::mem::take(&mut seq.pending_logprobs);
                if !send(seq, text, logprobs) {
                    return;
                }
            }
        }
        let _ = seq.job.tx.send(GenEvent::Finished {
            index: seq.index,
            reason,
            completion_tokens: seq.generated,
            cached_tokens: seq.cached,
        });
        seq.done = true;
    }
}

/// Sends a text delta; false (and the sequence marked done) when the receiver is gone.
fn send(seq: &mut Seq, text: String, logprobs: Vec<TokenLogprob>) -> bool {
    let ok = seq
        .job
        .tx
        .send(GenEvent::Text {
            index: seq.index,
            text,
            logprobs,
        })
        .is_ok();
    if !ok {
        seq.done = true;
    }
    ok
}

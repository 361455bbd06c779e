//! Token sampling over the raw logits of one sequence.
//!
//! Order: logit bias → repetition penalty (llama.cpp style, over the last [`REPEAT_WINDOW`] tokens
//! of prompt and completion) → presence / frequency penalties (OpenAI style, over the completion) →
//! [log-probabilities are taken here, at temperature 1] → temperature → min-p → top-k → top-p →
//! draw. Temperature 0 is greedy (argmax after penalties and bias).

use std::collections::{HashMap, VecDeque};

use super::SamplingParams;

/// How many recent tokens the repetition penalty looks at (llama.cpp's `penalty_last_n` default).
pub(crate) const REPEAT_WINDOW: usize = 64;

/// Candidates tried first when applying top-p over a large vocabulary before sorting everything.
const TOP_P_PROBE: usize = 1024;

/// A chosen token and, when asked for, its log-probability and the top alternatives.
#[derive(Debug, Clone)]
pub(crate) struct Sampled {
    pub token: i32,
    /// `(logprob of token, [(alternative, logprob)] best first)`.
    pub logprobs: Option<(f32, Vec<(i32, f32)>)>,
}

/// Per-sequence sampler state.
pub(crate) struct Sampler {
    params: SamplingParams,
    rng: Rng,
    counts: HashMap<i32, u32>,
    recent: VecDeque<i32>,
    work: Vec<f32>,
    cand: Vec<(u32, f32)>,
}

impl Sampler {
    pub(crate) fn new(params: &SamplingParams, seed: u64, prompt: &[i32]) -> Self {
        let start = prompt.len().saturating_sub(REPEAT_WINDOW);
        Self {
            params: params.clone(),
            rng: Rng::new(seed),
            counts: HashMap::new(),
            recent: prompt[start..].iter().copied().collect(),
            work: Vec::new(),
            cand: Vec::new(),
        }
    }

    /// Records a generated token (for the penalties).
    pub(crate) fn accept(&mut self, token: i32) {
        *self.counts.entry(token).or_insert(0) += 1;
        if self.recent.len() == REPEAT_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
    }

    fn modifies_logits(&self) -> bool {
        let p = &self.params;
        !p.logit_bias.is_empty()
            || p.presence_penalty != 0.0
            || p.frequency_penalty != 0.0
            || (p.repetition_penalty != 1.0 && p.repetition_penalty > 0.0)
    }

    /// Picks the next token from `logits` (length = vocabulary size).
    pub(crate) fn sample(&mut self, logits: &[f32], top_logprobs: Option<u32>) -> Sampled {
        let mut work = std::mem::take(&mut self.work);
        let l: &[f32] = if self.modifies_logits() {
            work.clear();
            work.extend_from_slice(logits);
            self.apply_penalties(&mut work);
            &work
        } else {
            logits
        };
        let token = if self.params.temperature <= 0.0 || self.params.top_k == 1 {
            argmax(l)
        } else {
            self.draw(l)
        };
        let logprobs = top_logprobs.map(|k| {
            let lse = log_sum_exp(l);
            let chosen = l.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY) - lse;
            let top = top_k_small(l, k as usize)
                .into_iter()
                .map(|(i, v)| (i as i32, v - lse))
                .collect();
            (chosen, top)
        });
        self.work = work;
        Sampled { token, logprobs }
    }

    fn apply_penalties(&self, l: &mut [f32]) {
        let p = &self.params;
        for &(tok, bias) in &p.logit_bias {
            if let Some(v) = usize::try_from(tok).ok().and_then(|t| l.get_mut(t)) {
                *v += bias;
            }
        }
        if p.repetition_penalty != 1.0 && p.repetition_penalty > 0.0 {
            let mut seen: Vec<i32> = self.recent.iter().copied().collect();
            seen.sort_unstable();
            seen.dedup();
            for tok in seen {
                if let Some(v) = usize::try_from(tok).ok().and_then(|t| l.get_mut(t)) {
                    if *v > 0.0 {
                        *v /= p.repetition_penalty;
                    } else {
                        *v *= p.repetition_penalty;
                    }
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&tok, &count) in &self.counts {
                if let Some(v) = usize::try_from(tok).ok().and_then(|t| l.get_mut(t)) {
                    *v -= p.presence_penalty + p.frequency_penalty * count as f32;
                }
            }
        }
    }

    fn draw(&mut self, l: &[f32]) -> i32 {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return argmax(l);
        }
        // min-p: keep p_i >= min_p * p_max  <=>  (l_i - max) / t >= ln(min_p).
        let threshold = if p.min_p > 0.0 {
            max + p.temperature * p.min_p.ln()
        } else {
            f32::NEG_INFINITY
        };
        let cand = &mut self.cand;
        cand.clear();
        for (i, &v) in l.iter().enumerate() {
            if v >= threshold && v > f32::NEG_INFINITY {
                cand.push((i as u32, ((v - max) * inv_t).exp()));
            }
        }
        if p.top_k > 0 && cand.len() > p.top_k as usize {
            let k = p.top_k as usize;
            cand.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            cand.truncate(k);
        }
        if p.top_p < 1.0 && cand.len() > 1 {
            let total: f32 = cand.iter().map(|c| c.1).sum();
            let target = p.top_p * total;
            let mut keep = None;
            if cand.len() > TOP_P_PROBE {
                cand.select_nth_unstable_by(TOP_P_PROBE - 1, |a, b| b.1.total_cmp(&a.1));
                cand[..TOP_P_PROBE].sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
                keep = nucleus(&cand[..TOP_P_PROBE], target);
            }
            if keep.is_none() {
                cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
                keep = nucleus(cand, target);
            }
            cand.truncate(keep.unwrap_or(cand.len()).max(1));
        }
        let total: f64 = cand.iter().map(|c| f64::from(c.1)).sum();
        let mut r = self.rng.next_f64() * total;
        for &(i, w) in cand.iter() {
            r -= f64::from(w);
            if r < 0.0 {
                return i as i32;
            }
        }
        cand.last().map_or_else(|| argmax(l), |c| c.0 as i32)
    }
}

/// Number of leading (sorted, best first) candidates whose cumulative weight reaches `target`.
fn nucleus(sorted: &[(u32, f32)], target: f32) -> Option<usize> {
    let mut cum = 0.0;
    for (n, c) in sorted.iter().enumerate() {
        cum += c.1;
        if cum >= target {
            return Some(n + 1);
        }
    }
    None
}

pub(crate) fn argmax(l: &[f32]) -> i32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in l.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as i32
}

fn log_sum_exp(l: &[f32]) -> f32 {
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f32 = l.iter().map(|&v| (v - max).exp()).sum();
    max + sum.ln()
}

/// The `k` largest values, best first, in one pass (k is small: at most 20).
fn top_k_small(l: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return top;
    }
    for (i, &v) in l.iter().enumerate() {
        if top.len() == k && top.last().is_some_and(|last| v <= last.1) {
            continue;
        }
        let pos = top.partition_point(|e| e.1 >= v);
        top.insert(pos, (i as u32, v));
        top.truncate(k);
    }
    top
}

/// The seed of choice `index` of a request: same request seed → same per-choice seeds; no seed →
/// fresh entropy.
pub(crate) fn choice_seed(seed: Option<u64>, index: u32) -> u64 {
    let base = seed.unwrap_or_else(entropy);
    splitmix64(base ^ splitmix64(u64::from(index).wrapping_add(0x5EED)))
}

fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** seeded by splitmix64.
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            splitmix64(x)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SamplingParams {
        SamplingParams::default()
    }

    #[test]
    fn greedy_and_bias() {
        let logits = [0.0, 3.0, 1.0, 2.9];
        let mut p = params();
        p.temperature = 0.0;
        let mut s = Sampler::new(&p, 1, &[]);
        assert_eq!(s.sample(&logits, None).token, 1);
        p.logit_bias = vec![(1, -100.0)];
        let mut s = Sampler::new(&p, 1, &[]);
        assert_eq!(s.sample(&logits, None).token, 3);
    }

    #[test]
    fn penalties() {
        let logits = [0.0, 3.0, 1.0, 2.9];
        let mut p = params();
        p.temperature = 0.0;
        p.presence_penalty = 0.5;
        let mut s = Sampler::new(&p, 1, &[]);
        s.accept(1);
        assert_eq!(s.sample(&logits, None).token, 3);
        let mut p = params();
        p.temperature = 0.0;
        p.repetition_penalty = 1.1;
        let s2 = Sampler::new(&p, 1, &[1]);
        let mut l = logits.to_vec();
        s2.apply_penalties(&mut l);
        assert!((l[1] - 3.0 / 1.1).abs() < 1e-6);
    }

    #[test]
    fn logprobs_are_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let mut p = params();
        p.temperature = 0.0;
        let mut s = Sampler::new(&p, 1, &[]);
        let out = s.sample(&logits, Some(2));
        let (lp, top) = out.logprobs.unwrap();
        let z: f32 = logits.iter().map(|v| v.exp()).sum();
        assert!((lp - (3f32.exp() / z).ln()).abs() < 1e-5);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].0, 2);
        assert_eq!(top[1].0, 1);
        assert!((top[1].1 - (2f32.exp() / z).ln()).abs() < 1e-5);
    }

    #[test]
    fn seeded_sampling_is_deterministic_and_respects_filters() {
        let logits: Vec<f32> = (0..5000).map(|i| (i as f32 * 0.37).sin() * 8.0).collect();
        let mut p = params();
        p.temperature = 0.8;
        p.top_p = 0.9;
        let run = |seed| {
            let mut s = Sampler::new(&p, seed, &[]);
            (0..50).map(|_| s.sample(&logits, None).token).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        p.top_k = 3;
        let mut s = Sampler::new(&p, 7, &[]);
        let mut top: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        let allowed: Vec<i32> = top[..3].iter().map(|t| t.0 as i32).collect();
        for _ in 0..100 {
            assert!(allowed.contains(&s.sample(&logits, None).token));
        }
        // min_p = 1 keeps only the maximum.
        let mut p = params();
        p.min_p = 1.0;
        let mut s = Sampler::new(&p, 7, &[]);
        let best = argmax(&logits);
        for _ in 0..20 {
            assert_eq!(s.sample(&logits, None).token, best);
        }
    }

    #[test]
    fn top_p_small_nucleus() {
        // One token holds almost all the mass: top_p 0.5 must always pick it.
        let mut logits = vec![0.0f32; 3000];
        logits[17] = 20.0;
        let mut p = params();
        p.top_p = 0.5;
        let mut s = Sampler::new(&p, 3, &[]);
        for _ in 0..20 {
            assert_eq!(s.sample(&logits, None).token, 17);
        }
    }

    #[test]
    fn choice_seeds_differ_per_index() {
        assert_eq!(choice_seed(Some(5), 0), choice_seed(Some(5), 0));
        assert_ne!(choice_seed(Some(5), 0), choice_seed(Some(5), 1));
    }
}

//! Rate limits, concurrency limits and budgets, for the whole gateway (`[limits]`) and per key.
//!
//! - **Requests and tokens per minute** count over a sliding window: the current minute plus the
//!   previous one, weighted by how much of it still overlaps. A request reserves its estimated tokens
//!   up front and settles to its real usage when it ends, so concurrent requests cannot all slip under
//!   a token limit at once.
//! - **`max_parallel`** counts the key's requests in flight.
//! - **Budgets** reserve the request's expected cost (at the dearest deployment it may be served by)
//!   before it runs and settle to the real cost after; a request is admitted only while spend plus
//!   reservations is under the budget, so a budget is overspent by at most one request.
//!
//! Every decision is atomic: under one lock in memory (the default), or one Lua script in Redis
//! (`[state] redis_url`), where all replicas share the counters and so enforce one limit, not N.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;
use serde::Deserialize;

use crate::error::{Error, ErrorKind};
use crate::keys::KeyRecord;
use crate::store::{Store, now_ms};

const WINDOW_MS: i64 = 60_000;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_requests_per_minute: Option<u64>,
    pub max_tokens_per_minute: Option<u64>,
}

/// One limit's standing, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    pub reset: Duration,
}

/// A window to take from: its counter name, its limit, and how much this request takes.
#[derive(Debug, Clone)]
pub(crate) struct Take {
    pub(crate) scope: String,
    pub(crate) limit: u64,
    pub(crate) n: u64,
    /// `requests` or `tokens`.
    kind: &'static str,
    who: &'static str,
}

/// What the request asks of the limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask {
    /// Estimated tokens: prompt plus output allowance.
    pub tokens: u64,
    /// The most the request is expected to cost, in USD.
    pub cost_usd: f64,
}

/// The shared counters: in this process, or in Redis.
enum Counters {
    Memory(Memory),
    Redis(crate::redis_state::RedisState),
}

#[derive(Default)]
struct Memory {
    // foldhash, not SipHash: these are hashed several times a request. foldhash does not claim HashDoS
    // resistance, and needs none here: the scopes are made by the gateway (global, key ids), not sent.
    windows: Mutex<foldhash::HashMap<String, Bucket>>,
    parallel: Mutex<foldhash::HashMap<String, u64>>,
    budgets: Mutex<foldhash::HashMap<String, BudgetState>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    minute: i64,
    current: u64,
    previous: u64,
}

impl Bucket {
    fn roll(&mut self, minute: i64) {
        if minute == self.minute + 1 {
            self.previous = self.current;
            self.current = 0;
        } else if minute != self.minute {
            self.previous = 0;
            self.current = 0;
        }
        self.minute = minute;
    }

    fn used(&self, into_ms: i64) -> u64 {
        self.current + sliding(self.previous, into_ms)
    }
}

/// How much of the previous minute still counts, `into_ms` into the current one.
fn sliding(previous: u64, into_ms: i64) -> u64 {
    let overlap = (WINDOW_MS - into_ms).max(0) as u128;
    ((u128::from(previous) * overlap).div_ceil(WINDOW_MS as u128)) as u64
}

#[derive(Debug, Clone, Copy, Default)]
struct BudgetState {
    period_start: i64,
    spent_nano: i64,
    reserved_nano: i64,
}

/// Rate limits, concurrency and budgets.
pub struct Limits {
    global: LimitsConfig,
    counters: Counters,
    /// Where spend so far is read from when no counter has it yet (after a restart).
    store: Option<Store>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("global", &self.global)
            .finish_non_exhaustive()
    }
}

/// A budget's period: when it started, and its name.
pub fn period_start(period: Option<&str>, now_ms: i64) -> i64 {
    let day = now_ms.div_euclid(86_400_000);
    let start_day = match period {
        Some("daily") => day,
        // 1970-01-01 was a Thursday: Monday is three days earlier in the week's cycle.
        Some("weekly") => day - (day + 3).rem_euclid(7),
        Some("monthly") => {
            let (y, m, _) = civil_from_days(day);
            days_from_civil(y, m, 1)
        }
        _ => return 0,
    };
    start_day * 86_400_000
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD` of a day number.
pub fn civil_date(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

fn to_nano(usd: f64) -> i64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1e9).round().min(i64::MAX as f64) as i64
    } else {
        0
    }
}

/// What a request was granted; settle it with the real usage when the request ends.
pub struct Admission {
    limits: Arc<Limits>,
    /// Token windows to settle: (scope, minute reserved in, tokens reserved).
    token_windows: Vec<(String, i64, u64)>,
    reserved_tokens: u64,
    /// The key whose in-flight count this request holds, and the slot's id.
    parallel: Option<(String, String)>,
    /// The budget reservation: (key id, period start, nano-USD reserved).
    budget: Option<(String, i64, i64)>,
    settled: bool,
    pub requests: Option<Quota>,
    pub tokens: Option<Quota>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("reserved_tokens", &self.reserved_tokens)
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// The tokens reserved at admission.
    pub fn reserved(&self) -> u64 {
        self.reserved_tokens
    }

    /// The reservations become what was really spent.
    pub fn settle(mut self, actual_tokens: u64, actual_cost_usd: f64) {
        self.finish(actual_tokens, to_nano(actual_cost_usd));
    }

    fn finish(&mut self, actual_tokens: u64, actual_nano: i64) {
        if self.settled {
            return;
        }
        self.settled = true;
        let windows = std::mem::take(&mut self.token_windows);
        let parallel = self.parallel.take();
        let budget = self.budget.take();
        match &self.limits.counters {
            Counters::Memory(m) => {
                let minute = now_ms().div_euclid(WINDOW_MS);
                let mut ws = m.windows.lock();
                for (scope, at, reserved) in &windows {
                    if let Some(b) = ws.get_mut(scope) {
                        b.roll(minute);
                        // The reservation sits in the minute it was made in (now current or previous).
                        let slot = if *at == minute {
                            &mut b.current
                        } else if *at == minute - 1 {
                            &mut b.previous
                        } else {
                            continue;
                        };
                        *slot = (*slot + actual_tokens).saturating_sub(*reserved);
                    }
                }
                drop(ws);
                if let Some((key, _)) = &parallel
                    && let Some(n) = m.parallel.lock().get_mut(key)
                {
                    *n = n.saturating_sub(1);
                }
                if let Some((key, start, reserved)) = &budget
                    && let Some(b) = m.budgets.lock().get_mut(key)
                    && b.period_start == *start
                {
                    b.reserved_nano = (b.reserved_nano - reserved).max(0);
                    b.spent_nano += actual_nano;
                }
            }
            Counters::Redis(r) => {
                let r = r.clone();
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                rt.spawn(async move {
                    r.settle(&windows, actual_tokens, parallel, budget, actual_nano)
                        .await;
                });
            }
        }
    }

    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, as OpenAI sends them.
    pub fn apply(&self, h: &mut HeaderMap) {
        self.rate_headers().apply(h);
    }

    /// The standing that the `x-ratelimit-*` headers show, copied out (an answer's headers are made
    /// after the admission has moved into its settlement).
    pub fn rate_headers(&self) -> RateHeaders {
        RateHeaders {
            requests: self.requests,
            tokens: self.tokens,
        }
    }
}

/// The `x-ratelimit-*` headers of one admission.
#[derive(Debug, Clone, Copy)]
pub struct RateHeaders {
    requests: Option<Quota>,
    tokens: Option<Quota>,
}

impl RateHeaders {
    /// Writes the headers: static names, and a value made without an intermediate string.
    pub fn apply(self, h: &mut HeaderMap) {
        const NAMES: [[HeaderName; 3]; 2] = [
            [
                HeaderName::from_static("x-ratelimit-limit-requests"),
                HeaderName::from_static("x-ratelimit-remaining-requests"),
                HeaderName::from_static("x-ratelimit-reset-requests"),
            ],
            [
                HeaderName::from_static("x-ratelimit-limit-tokens"),
                HeaderName::from_static("x-ratelimit-remaining-tokens"),
                HeaderName::from_static("x-ratelimit-reset-tokens"),
            ],
        ];
        for (names, q) in NAMES.into_iter().zip([self.requests, self.tokens]) {
            let Some(q) = q else { continue };
            let [limit, remaining, reset] = names;
            h.insert(limit, HeaderValue::from(q.limit));
            h.insert(remaining, HeaderValue::from(q.remaining));
            // "{secs}s" without the formatting machinery (itoa, then the unit).
            let secs = q.reset.as_secs_f64().ceil() as u64;
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(secs).as_bytes();
            let mut buf = [0u8; 24];
            buf[..digits.len()].copy_from_slice(digits);
            buf[digits.len()] = b's';
            if let Ok(value) = HeaderValue::from_bytes(&buf[..=digits.len()]) {
                h.insert(reset, value);
            }
        }
    }
}

impl Drop for Admission {
    /// A request that ended without an answer (refused upstream, failed) spent nothing.
    fn drop(&mut self) {
        self.finish(0, 0);
    }
}

/// The outcome of one atomic decision over some windows.
pub(crate) enum WindowVerdict {
    /// Every window took its share; the sliding count of each afterwards.
    Taken(Vec<u64>),
    /// Window `i` is full.
    Full(usize),
}

/// The outcome of a budget reservation.
pub(crate) enum BudgetVerdict {
    Reserved,
    Over {
        spent_nano: i64,
    },
    /// The shared counter does not know this period yet: read the spend from the store first.
    Unknown,
}

impl Limits {
    pub fn new(c: &LimitsConfig) -> Arc<Limits> {
        Arc::new(Limits {
            global: c.clone(),
            counters: Counters::Memory(Memory::default()),
            store: None,
        })
    }

    /// Limits whose counters live in Redis (shared by every replica).
    pub fn with_redis(
        c: &LimitsConfig,
        r: crate::redis_state::RedisState,
        store: Option<Store>,
    ) -> Arc<Limits> {
        Arc::new(Limits {
            global: c.clone(),
            counters: Counters::Redis(r),
            store,
        })
    }

    /// In-memory limits that read spend from the store after a restart.
    pub fn with_store(c: &LimitsConfig, store: Store) -> Arc<Limits> {
        Arc::new(Limits {
            global: c.clone(),
            counters: Counters::Memory(Memory::default()),
            store: Some(store),
        })
    }

    /// Whether a request with this key needs a decision at all.
    pub fn applies(&self, key: Option<&KeyRecord>) -> bool {
        self.global.max_requests_per_minute.is_some()
            || self.global.max_tokens_per_minute.is_some()
            || key.is_some_and(|k| {
                k.rpm.is_some() || k.tpm.is_some() || k.max_parallel.is_some() || k.budget_usd.is_some()
            })
    }

    /// Admits one request, or refuses it: 429 with `Retry-After` and a code saying which limit, or
    /// 402 `budget_exceeded` with the budget headers.
    pub async fn admit(self: &Arc<Self>, key: Option<&KeyRecord>, ask: Ask) -> Result<Admission, Error> {
        let now = now_ms();
        let minute = now.div_euclid(WINDOW_MS);
        let into = now.rem_euclid(WINDOW_MS);
        let mut takes = Vec::with_capacity(4);
        if let Some(l) = self.global.max_requests_per_minute {
            takes.push(Take {
                scope: "global:rpm".into(),
                limit: l,
                n: 1,
                kind: "requests",
                who: "",
            });
        }
        if let Some(k) = key {
            if let Some(l) = k.rpm {
                takes.push(Take {
                    scope: format!("key:{}:rpm", k.id),
                    limit: l,
                    n: 1,
                    kind: "requests",
                    who: "key ",
                });
            }
            if let Some(l) = k.tpm {
                takes.push(Take {
                    scope: format!("key:{}:tpm", k.id),
                    limit: l,
                    n: ask.tokens,
                    kind: "tokens",
                    who: "key ",
                });
            }
        }
        if let Some(l) = self.global.max_tokens_per_minute {
            takes.push(Take {
                scope: "global:tpm".into(),
                limit: l,
                n: ask.tokens,
                kind: "tokens",
                who: "",
            });
        }
        let mut adm = Admission {
            limits: self.clone(),
            token_windows: Vec::new(),
            reserved_tokens: ask.tokens,
            parallel: None,
            budget: None,
            settled: false,
            requests: None,
            tokens: None,
        };
        if !takes.is_empty() {
            let verdict = match &self.counters {
                Counters::Memory(m) => m.take(&takes, minute, into),
                Counters::Redis(r) => r.take(&takes, minute, into).await,
            };
            let reset = Duration::from_millis((WINDOW_MS - into) as u64);
            match verdict {
                WindowVerdict::Full(i) => {
                    let t = &takes[i];
                    return Err(refuse(t, reset));
                }
                WindowVerdict::Taken(used) => {
                    for (t, used) in takes.iter().zip(used) {
                        let q = Quota {
                            limit: t.limit,
                            remaining: t.limit.saturating_sub(used),
                            reset,
                        };
                        // The header shows the tightest limit of each kind.
                        let slot = if t.kind == "requests" {
                            &mut adm.requests
                        } else {
                            adm.token_windows.push((t.scope.clone(), minute, t.n));
                            &mut adm.tokens
                        };
                        if slot.is_none_or(|s| q.remaining < s.remaining) {
                            *slot = Some(q);
                        }
                    }
                }
            }
        }
        let Some(k) = key else { return Ok(adm) };
        if let Some(max) = k.max_parallel {
            // In Redis a slot names this request's place among the key's in-flight requests; in
            // memory a count is enough.
            let (ok, slot) = match &self.counters {
                Counters::Memory(m) => {
                    let mut p = m.parallel.lock();
                    let n = p.entry(k.id.clone()).or_default();
                    let ok = *n < max;
                    if ok {
                        *n += 1;
                    }
                    (ok, String::new())
                }
                Counters::Redis(r) => {
                    let slot = format!("{:x}", rand::random::<u64>());
                    (r.acquire(&k.id, max, &slot).await, slot)
                }
            };
            if !ok {
                return Err(Error::new(
                    ErrorKind::RateLimit,
                    format!("This key already has {max} requests in flight (max_parallel)."),
                )
                .with_code("rate_limit_parallel")
                .with_retry_after(Duration::from_secs(1)));
            }
            adm.parallel = Some((k.id.clone(), slot));
        }
        if let Some(budget) = k.budget_usd {
            let start = period_start(k.budget_period.as_deref(), now);
            let budget_nano = to_nano(budget);
            let est = to_nano(ask.cost_usd);
            let mut verdict = self.reserve(k, start, budget_nano, est, None).await;
            if matches!(verdict, BudgetVerdict::Unknown) {
                let spent = self.spent_in_store(k, start).await;
                verdict = self.reserve(k, start, budget_nano, est, Some(spent)).await;
            }
            match verdict {
                BudgetVerdict::Reserved => adm.budget = Some((k.id.clone(), start, est)),
                BudgetVerdict::Over { spent_nano } => {
                    return Err(over_budget(k, budget, spent_nano as f64 / 1e9));
                }
                BudgetVerdict::Unknown => {}
            }
        }
        Ok(adm)
    }

    async fn reserve(
        &self,
        k: &KeyRecord,
        start: i64,
        budget_nano: i64,
        est: i64,
        init: Option<i64>,
    ) -> BudgetVerdict {
        match &self.counters {
            Counters::Memory(m) => {
                let mut b = m.budgets.lock();
                let st = match b.get_mut(&k.id) {
                    Some(st) if st.period_start == start => st,
                    _ => match init {
                        None => return BudgetVerdict::Unknown,
                        Some(spent) => {
                            b.insert(
                                k.id.clone(),
                                BudgetState {
                                    period_start: start,
                                    spent_nano: spent,
                                    reserved_nano: 0,
                                },
                            );
                            let Some(st) = b.get_mut(&k.id) else {
                                return BudgetVerdict::Unknown;
                            };
                            st
                        }
                    },
                };
                if st.spent_nano + st.reserved_nano >= budget_nano {
                    return BudgetVerdict::Over {
                        spent_nano: st.spent_nano,
                    };
                }
                st.reserved_nano += est;
                BudgetVerdict::Reserved
            }
            Counters::Redis(r) => r.reserve(&k.id, start, budget_nano, est, init).await,
        }
    }

    async fn spent_in_store(&self, k: &KeyRecord, start: i64) -> i64 {
        let Some(store) = &self.store else { return 0 };
        match crate::usage::spend_since(store, &k.id, start).await {
            Ok(usd) => to_nano(usd),
            Err(e) => {
                tracing::warn!("cannot read the spend of key {} from the store: {e}", k.id);
                0
            }
        }
    }

    /// What the key has spent in its current budget period (USD).
    pub async fn spend(&self, k: &KeyRecord) -> f64 {
        let start = period_start(k.budget_period.as_deref(), now_ms());
        let known = match &self.counters {
            Counters::Memory(m) => m
                .budgets
                .lock()
                .get(&k.id)
                .filter(|b| b.period_start == start)
                .map(|b| b.spent_nano),
            Counters::Redis(r) => r.spent(&k.id, start).await,
        };
        let nano = match known {
            Some(n) => n,
            None => self.spent_in_store(k, start).await,
        };
        nano as f64 / 1e9
    }
}

impl Memory {
    fn take(&self, takes: &[Take], minute: i64, into: i64) -> WindowVerdict {
        let mut ws = self.windows.lock();
        let mut used = Vec::with_capacity(takes.len());
        for (i, t) in takes.iter().enumerate() {
            // The scope is copied only the first time it is seen.
            let b = match ws.get_mut(&t.scope) {
                Some(b) => b,
                None => ws.entry(t.scope.clone()).or_default(),
            };
            b.roll(minute);
            let u = b.used(into);
            if u + t.n > t.limit && u > 0 {
                return WindowVerdict::Full(i);
            }
            used.push(u + t.n);
        }
        for t in takes {
            if let Some(b) = ws.get_mut(&t.scope) {
                b.current += t.n;
            }
        }
        WindowVerdict::Taken(used)
    }
}

fn refuse(t: &Take, reset: Duration) -> Error {
    let wait = reset.max(Duration::from_secs(1));
    Error::new(
        ErrorKind::RateLimit,
        format!(
            "Rate limit reached: {}{} {} per minute. Retry after {} s.",
            t.who,
            t.limit,
            t.kind,
            wait.as_secs_f64().ceil() as u64
        ),
    )
    .with_code(format!("rate_limit_{}", t.kind))
    .with_retry_after(Duration::from_secs(wait.as_secs_f64().ceil() as u64))
}

fn over_budget(k: &KeyRecord, budget: f64, spent: f64) -> Error {
    let period = k.budget_period.clone().unwrap_or_else(|| "total".into());
    let mut e = Error::new(
        ErrorKind::Budget,
        format!(
            "This key's {period} budget of ${budget:.4} is spent (${spent:.6} so far). It renews at the start of the next period."
        ),
    )
    .with_code("budget_exceeded");
    e.headers = Some(Box::new(vec![
        ("x-budget-limit", format!("{budget}")),
        ("x-budget-spend", format!("{spent:.9}")),
        ("x-budget-period", period),
    ]));
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_headers_show_limit_remaining_and_whole_seconds_to_reset() {
        let q = |limit, remaining, ms| Quota {
            limit,
            remaining,
            reset: Duration::from_millis(ms),
        };
        let mut h = HeaderMap::new();
        RateHeaders {
            requests: Some(q(60, 59, 1_200)),
            tokens: Some(q(u64::MAX, 0, 0)),
        }
        .apply(&mut h);
        assert_eq!(h["x-ratelimit-limit-requests"], "60");
        assert_eq!(h["x-ratelimit-remaining-requests"], "59");
        assert_eq!(h["x-ratelimit-reset-requests"], "2s");
        assert_eq!(h["x-ratelimit-limit-tokens"], u64::MAX.to_string().as_str());
        assert_eq!(h["x-ratelimit-reset-tokens"], "0s");
    }

    fn key() -> KeyRecord {
        KeyRecord {
            id: "k1".into(),
            name: String::new(),
            kind: "user".into(),
            owner: None,
            prefix: String::new(),
            hash: String::new(),
            models: vec![],
            rpm: None,
            tpm: None,
            max_parallel: None,
            budget_usd: None,
            budget_period: None,
            expires_at: None,
            revoked: false,
            created_at: 0,
        }
    }

    #[tokio::test]
    async fn requests_stop_at_the_limit_and_tokens_settle_to_usage() {
        let l = Limits::new(&LimitsConfig {
            max_requests_per_minute: Some(3),
            max_tokens_per_minute: Some(100),
        });
        let ask = |tokens| Ask {
            tokens,
            cost_usd: 0.0,
        };
        let a = l.admit(None, ask(60)).await.unwrap();
        assert_eq!(a.requests.unwrap().remaining, 2);
        assert_eq!(a.tokens.unwrap().remaining, 40);
        // 60 reserved: another 60 does not fit until the first settles to its real 10.
        let e = l.admit(None, ask(60)).await.unwrap_err();
        assert_eq!(e.code.as_deref(), Some("rate_limit_tokens"));
        a.settle(10, 0.0);
        let b = l.admit(None, ask(60)).await.unwrap();
        assert_eq!(b.tokens.unwrap().remaining, 30);
        let _c = l.admit(None, ask(1)).await.unwrap();
        let e = l.admit(None, ask(1)).await.unwrap_err();
        assert_eq!(e.code.as_deref(), Some("rate_limit_requests"));
        assert!(e.retry_after().unwrap() >= Duration::from_secs(1));
    }

    #[test]
    fn the_previous_minute_fades_out() {
        let mut b = Bucket::default();
        b.roll(10);
        b.current = 10;
        assert_eq!(b.used(0), 10);
        // Half a minute into the next window, half of the previous minute still counts.
        b.roll(11);
        assert_eq!(b.used(30_000), 5);
        b.roll(13);
        assert_eq!(b.used(0), 0);
    }

    #[tokio::test]
    async fn key_limits_parallel_and_budget() {
        let l = Limits::new(&LimitsConfig::default());
        let mut k = key();
        k.max_parallel = Some(1);
        let a = l.admit(Some(&k), Ask::default()).await.unwrap();
        let e = l.admit(Some(&k), Ask::default()).await.unwrap_err();
        assert_eq!(e.code.as_deref(), Some("rate_limit_parallel"));
        drop(a);
        let _ = l.admit(Some(&k), Ask::default()).await.unwrap();

        let mut k = key();
        k.id = "k2".into();
        k.budget_usd = Some(0.01);
        let ask = Ask {
            tokens: 1,
            cost_usd: 0.004,
        };
        // Two reservations of 0.004 leave room for a third (0.008 < 0.01), not a fourth.
        let a = l.admit(Some(&k), ask).await.unwrap();
        let b = l.admit(Some(&k), ask).await.unwrap();
        let c = l.admit(Some(&k), ask).await.unwrap();
        let e = l.admit(Some(&k), ask).await.unwrap_err();
        assert_eq!(e.code.as_deref(), Some("budget_exceeded"));
        assert_eq!(e.status().as_u16(), 402);
        a.settle(1, 0.001);
        b.settle(1, 0.001);
        drop(c);
        assert!((l.spend(&k).await - 0.002).abs() < 1e-12);
        let _ = l.admit(Some(&k), ask).await.unwrap();
    }

    #[test]
    fn periods_start_in_utc() {
        // 2026-11-23 (a Monday) 06:00 UTC.
        let now = 1_795_413_600_000;
        let day = 1_795_392_000_000;
        assert_eq!(period_start(Some("daily"), now), day);
        assert_eq!(period_start(Some("weekly"), now), day);
        assert_eq!(period_start(Some("weekly"), now + 86_400_000), day);
        assert_eq!(
            period_start(Some("monthly"), now),
            days_from_civil(2026, 11, 1) * 86_400_000
        );
        assert_eq!(civil_date(days_from_civil(2024, 2, 29)), "2024-02-29");
        assert_eq!(period_start(None, now), 0);
    }
}

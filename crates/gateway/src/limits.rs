//! Rate limits in memory: requests and tokens per minute, over a sliding window (the current minute,
//! plus the previous one weighted by how much of it still overlaps). A request reserves its estimated
//! tokens up front and settles to its real usage when it ends, so concurrent requests cannot all slip
//! under a token limit at once.
//!
//! This is the global `[limits]` table; per-key limits and the Redis-backed counters shared by
//! replicas build on the same window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;
use serde::Deserialize;

use crate::error::{Error, ErrorKind};

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_requests_per_minute: Option<u64>,
    pub max_tokens_per_minute: Option<u64>,
}

#[derive(Debug)]
struct Window {
    limit: u64,
    state: Mutex<WindowState>,
}

#[derive(Debug)]
struct WindowState {
    start: Instant,
    current: u64,
    previous: u64,
}

impl Window {
    fn new(limit: u64) -> Window {
        Window {
            limit,
            state: Mutex::new(WindowState {
                start: Instant::now(),
                current: 0,
                previous: 0,
            }),
        }
    }

    fn roll(st: &mut WindowState, now: Instant) {
        let elapsed = now.saturating_duration_since(st.start);
        if elapsed >= WINDOW * 2 {
            st.previous = 0;
            st.current = 0;
            st.start = now;
        } else if elapsed >= WINDOW {
            st.previous = st.current;
            st.current = 0;
            st.start += WINDOW;
        }
    }

    /// The sliding count now, and when the current window ends.
    fn used(st: &WindowState, now: Instant) -> (u64, Duration) {
        let into = now.saturating_duration_since(st.start);
        let overlap = 1.0 - into.as_secs_f64() / WINDOW.as_secs_f64();
        let used = st.current + (st.previous as f64 * overlap.max(0.0)).ceil() as u64;
        (used, WINDOW.saturating_sub(into))
    }

    /// Takes `n` if it fits; otherwise how long until the window moves on.
    fn take(&self, n: u64, now: Instant) -> Result<Quota, Duration> {
        let mut st = self.state.lock();
        Self::roll(&mut st, now);
        let (used, reset) = Self::used(&st, now);
        if used + n > self.limit && used > 0 {
            return Err(reset.max(Duration::from_secs(1)));
        }
        st.current += n;
        Ok(Quota {
            limit: self.limit,
            remaining: self.limit.saturating_sub(used + n),
            reset,
        })
    }

    fn adjust(&self, reserved: u64, actual: u64) {
        let mut st = self.state.lock();
        Self::roll(&mut st, Instant::now());
        st.current = (st.current + actual).saturating_sub(reserved);
    }
}

/// One limit's standing, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    pub reset: Duration,
}

#[derive(Debug, Default)]
pub struct Limits {
    requests: Option<Window>,
    tokens: Option<Window>,
}

/// What a request was granted; settle it with the real token count when the request ends.
#[derive(Debug)]
pub struct Admission {
    limits: Arc<Limits>,
    reserved: u64,
    settled: bool,
    pub requests: Option<Quota>,
    pub tokens: Option<Quota>,
}

impl Admission {
    /// The tokens reserved at admission.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// The reservation becomes what was really spent.
    pub fn settle(mut self, actual_tokens: u64) {
        self.settled = true;
        if let Some(w) = &self.limits.tokens {
            w.adjust(self.reserved, actual_tokens);
        }
    }

    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, as OpenAI sends them.
    pub fn apply(&self, h: &mut HeaderMap) {
        for (kind, q) in [("requests", self.requests), ("tokens", self.tokens)] {
            let Some(q) = q else { continue };
            for (what, v) in [
                ("limit", q.limit.to_string()),
                ("remaining", q.remaining.to_string()),
                ("reset", format!("{}s", q.reset.as_secs_f64().ceil() as u64)),
            ] {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::try_from(format!("x-ratelimit-{what}-{kind}")),
                    HeaderValue::from_str(&v),
                ) {
                    h.insert(name, value);
                }
            }
        }
    }
}

impl Drop for Admission {
    /// A request that ended without an answer (refused upstream, failed) spent no tokens.
    fn drop(&mut self) {
        if !self.settled
            && let Some(w) = &self.limits.tokens
        {
            w.adjust(self.reserved, 0);
        }
    }
}

impl Limits {
    pub fn new(c: &LimitsConfig) -> Arc<Limits> {
        Arc::new(Limits {
            requests: c.max_requests_per_minute.map(Window::new),
            tokens: c.max_tokens_per_minute.map(Window::new),
        })
    }

    pub fn enabled(&self) -> bool {
        self.requests.is_some() || self.tokens.is_some()
    }

    /// Admits one request that expects to spend `tokens`, or refuses it with 429, `Retry-After` and a
    /// code saying which limit.
    pub fn admit(self: &Arc<Self>, tokens: u64) -> Result<Admission, Error> {
        let now = Instant::now();
        let requests = match &self.requests {
            Some(w) => Some(w.take(1, now).map_err(|wait| refuse("requests", w.limit, wait))?),
            None => None,
        };
        let tokens_q = match &self.tokens {
            Some(w) => match w.take(tokens, now) {
                Ok(q) => Some(q),
                Err(wait) => {
                    // Give the request back: it was not served.
                    if let Some(r) = &self.requests {
                        r.adjust(1, 0);
                    }
                    return Err(refuse("tokens", w.limit, wait));
                }
            },
            None => None,
        };
        Ok(Admission {
            limits: self.clone(),
            reserved: tokens,
            settled: false,
            requests,
            tokens: tokens_q,
        })
    }
}

fn refuse(kind: &str, limit: u64, wait: Duration) -> Error {
    Error::new(
        ErrorKind::RateLimit,
        format!(
            "Rate limit reached: {limit} {kind} per minute. Retry after {} s.",
            wait.as_secs()
        ),
    )
    .with_code(format!("rate_limit_{kind}"))
    .with_retry_after(Duration::from_secs(wait.as_secs_f64().ceil() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_stop_at_the_limit_and_tokens_settle_to_usage() {
        let l = Limits::new(&LimitsConfig {
            max_requests_per_minute: Some(3),
            max_tokens_per_minute: Some(100),
        });
        let a = l.admit(60).unwrap();
        assert_eq!(a.requests.unwrap().remaining, 2);
        assert_eq!(a.tokens.unwrap().remaining, 40);
        // 60 reserved: another 60 does not fit until the first settles to its real 10.
        let e = l.admit(60).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("rate_limit_tokens"));
        a.settle(10);
        let b = l.admit(60).unwrap();
        assert_eq!(b.tokens.unwrap().remaining, 30);
        let _c = l.admit(1).unwrap();
        let e = l.admit(1).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("rate_limit_requests"));
        assert!(e.retry_after.unwrap() >= Duration::from_secs(1));
    }

    #[test]
    fn the_previous_minute_fades_out() {
        let w = Window::new(10);
        let t0 = Instant::now();
        w.take(10, t0).unwrap();
        assert!(w.take(1, t0).is_err());
        // Half a minute into the next window, half of the previous minute still counts.
        let t = t0 + WINDOW + WINDOW / 2;
        let q = w.take(1, t).unwrap();
        assert_eq!(q.remaining, 4);
        assert!(w.take(1, t0 + WINDOW * 3).is_ok());
    }
}

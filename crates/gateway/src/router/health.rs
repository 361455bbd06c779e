//! Live state of one deployment: requests in flight, a circuit breaker, bans by status, and the
//! measurements the strategies read (time to first token, tokens per second).
//!
//! The breaker opens after `failures` consecutive failures, or when at least `min_requests` outcomes in
//! the last `window_ms` failed in a ratio of `error_ratio` or more; it stays open for `cooldown_ms`, then
//! lets one probe through (half-open); the probe's success closes it, its failure opens it again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::config::BreakerConfig;
use crate::error::Error;

/// Samples kept for the windowed percentiles.
const SAMPLES: usize = 128;
/// Weight of a new sample in the moving averages.
const EWMA_ALPHA: f64 = 0.3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Circuit {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe may be in flight; a probe whose request vanished (its client went away mid-attempt)
    /// stops counting after a cooldown, so the circuit never sticks half-open.
    HalfOpen {
        probe_until: Option<Instant>,
    },
}

#[derive(Debug)]
struct State {
    circuit: Circuit,
    consecutive_failures: u32,
    /// (when, ok) of recent outcomes, oldest first.
    window: VecDeque<(Instant, bool)>,
    banned_until: Option<Instant>,
    ban_reason: Option<String>,
    ban_error: Option<Box<Error>>,
    ttft_ewma_ms: Option<f64>,
    tps_ewma: Option<f64>,
    ttft_samples: VecDeque<f64>,
    tps_samples: VecDeque<f64>,
    successes: u64,
    failures: u64,
    last_error: Option<String>,
}

/// Why a deployment is not tried now.
#[derive(Debug, Clone)]
pub enum Unavailable {
    Open {
        until: Instant,
    },
    HalfOpenBusy,
    Banned {
        until: Instant,
        reason: String,
        /// The upstream's answer that caused the ban.
        error: Option<Box<Error>>,
    },
    Down {
        reason: String,
    },
}

impl Unavailable {
    /// When it may be tried again, if that is known.
    pub fn until(&self) -> Option<Instant> {
        match self {
            Unavailable::Open { until } | Unavailable::Banned { until, .. } => Some(*until),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        let now = Instant::now();
        match self {
            Unavailable::Open { until } => format!(
                "circuit open for {} ms more",
                until.saturating_duration_since(now).as_millis()
            ),
            Unavailable::HalfOpenBusy => "circuit half-open, a probe is in flight".into(),
            Unavailable::Banned { until, reason, .. } => format!(
                "banned for {} ms more ({reason})",
                until.saturating_duration_since(now).as_millis()
            ),
            Unavailable::Down { reason } => format!("failing its health check ({reason})"),
        }
    }
}

/// A provider's active health check result, shared by its deployments.
#[derive(Debug, Default)]
pub struct Probe {
    down: Mutex<Option<String>>,
}

impl Probe {
    pub fn set(&self, result: Result<(), String>) {
        *self.down.lock() = result.err();
    }

    pub fn down(&self) -> Option<String> {
        self.down.lock().clone()
    }
}

#[derive(Debug)]
pub struct Health {
    in_flight: AtomicU32,
    state: Mutex<State>,
    cfg: BreakerConfig,
    pub probe: Arc<Probe>,
}

/// Counts a request in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<super::Deployment>);

impl InFlight {
    pub fn new(dep: Arc<super::Deployment>) -> InFlight {
        dep.health.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(dep)
    }

    pub fn deployment(&self) -> &Arc<super::Deployment> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.health.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn push_sample(q: &mut VecDeque<f64>, v: f64) {
    if q.len() >= SAMPLES {
        q.pop_front();
    }
    q.push_back(v);
}

fn percentile(q: &VecDeque<f64>, p: f64) -> Option<f64> {
    if q.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = q.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    let idx = ((v.len() - 1) as f64 * p).round() as usize;
    v.get(idx).copied()
}

fn ewma(old: Option<f64>, sample: f64) -> f64 {
    match old {
        Some(o) => o + EWMA_ALPHA * (sample - o),
        None => sample,
    }
}

impl Health {
    pub fn new(cfg: BreakerConfig, probe: Arc<Probe>) -> Health {
        Health {
            in_flight: AtomicU32::new(0),
            state: Mutex::new(State {
                circuit: Circuit::Closed,
                consecutive_failures: 0,
                window: VecDeque::new(),
                banned_until: None,
                ban_reason: None,
                ban_error: None,
                ttft_ewma_ms: None,
                tps_ewma: None,
                ttft_samples: VecDeque::new(),
                tps_samples: VecDeque::new(),
                successes: 0,
                failures: 0,
                last_error: None,
            }),
            cfg,
            probe,
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether a request may be sent now; a half-open circuit admits one probe at a time, and this call
    /// claims it (`claim = true`) — so call it with `claim` only right before sending.
    pub fn check(&self, now: Instant, claim: bool) -> Result<(), Unavailable> {
        if let Some(reason) = self.probe.down() {
            return Err(Unavailable::Down { reason });
        }
        let mut st = self.state.lock();
        if let Some(until) = st.banned_until {
            if now < until {
                return Err(Unavailable::Banned {
                    until,
                    reason: st.ban_reason.clone().unwrap_or_default(),
                    error: st.ban_error.clone(),
                });
            }
            st.banned_until = None;
            st.ban_reason = None;
            st.ban_error = None;
        }
        let cooldown = Duration::from_millis(self.cfg.cooldown_ms.max(1000));
        match st.circuit {
            Circuit::Closed => Ok(()),
            Circuit::Open { until } if now < until => Err(Unavailable::Open { until }),
            Circuit::HalfOpen { probe_until: Some(t) } if now < t => Err(Unavailable::HalfOpenBusy),
            Circuit::Open { .. } | Circuit::HalfOpen { .. } => {
                st.circuit = Circuit::HalfOpen {
                    probe_until: claim.then(|| now + cooldown),
                };
                Ok(())
            }
        }
    }

    fn trim_window(&self, st: &mut State, now: Instant) {
        let window = Duration::from_millis(self.cfg.window_ms);
        while st
            .window
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > window)
        {
            st.window.pop_front();
        }
        while st.window.len() > 4096 {
            st.window.pop_front();
        }
    }

    /// The upstream answered (its first byte reached us).
    pub fn success(&self, now: Instant) {
        let mut st = self.state.lock();
        st.successes += 1;
        st.consecutive_failures = 0;
        if matches!(st.circuit, Circuit::HalfOpen { .. }) {
            st.circuit = Circuit::Closed;
            st.window.clear();
        }
        st.window.push_back((now, true));
        self.trim_window(&mut st, now);
    }

    /// The upstream failed. `ban` takes the deployment out for that long, whatever the circuit says.
    pub fn failure(&self, now: Instant, error: &Error, ban: Option<(Duration, &str)>) {
        let mut st = self.state.lock();
        st.failures += 1;
        st.consecutive_failures += 1;
        st.last_error = Some(error.message.chars().take(300).collect());
        if let Some((d, reason)) = ban {
            let until = now + d;
            if st.banned_until.is_none_or(|u| u < until) {
                st.banned_until = Some(until);
                st.ban_reason = Some(reason.to_string());
                st.ban_error = Some(Box::new(error.clone()));
            }
        }
        st.window.push_back((now, false));
        self.trim_window(&mut st, now);
        let cooldown = Duration::from_millis(self.cfg.cooldown_ms);
        match st.circuit {
            Circuit::HalfOpen { .. } => {
                st.circuit = Circuit::Open {
                    until: now + cooldown,
                }
            }
            Circuit::Open { .. } => {}
            Circuit::Closed => {
                let total = st.window.len() as u32;
                let failed = st.window.iter().filter(|(_, ok)| !ok).count() as u32;
                let ratio_trips = total >= self.cfg.min_requests.max(1)
                    && f64::from(failed) / f64::from(total) >= self.cfg.error_ratio;
                if st.consecutive_failures >= self.cfg.failures || ratio_trips {
                    st.circuit = Circuit::Open {
                        until: now + cooldown,
                    };
                    st.window.clear();
                    tracing::warn!(error = %error.message, "circuit opened");
                }
            }
        }
    }

    /// Gives a claimed half-open probe back without an outcome (the request ended for a reason that says
    /// nothing about the upstream, such as an invalid request).
    pub fn release_probe(&self) {
        let mut st = self.state.lock();
        if matches!(st.circuit, Circuit::HalfOpen { probe_until: Some(_) }) {
            st.circuit = Circuit::HalfOpen { probe_until: None };
        }
    }

    pub fn record_ttft(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let mut st = self.state.lock();
        st.ttft_ewma_ms = Some(ewma(st.ttft_ewma_ms, ms));
        push_sample(&mut st.ttft_samples, ms);
    }

    pub fn record_tps(&self, tps: f64) {
        if !tps.is_finite() || tps <= 0.0 {
            return;
        }
        let mut st = self.state.lock();
        st.tps_ewma = Some(ewma(st.tps_ewma, tps));
        push_sample(&mut st.tps_samples, tps);
    }

    /// Moving average of time to first token, in ms (None until measured).
    pub fn ttft_ms(&self) -> Option<f64> {
        self.state.lock().ttft_ewma_ms
    }

    /// Moving average of output tokens per second (None until measured).
    pub fn tps(&self) -> Option<f64> {
        self.state.lock().tps_ewma
    }

    /// A JSON snapshot for `/vhealth`.
    pub fn snapshot(&self, now: Instant) -> Value {
        let down = self.probe.down();
        let st = self.state.lock();
        let ms_left = |t: Instant| t.saturating_duration_since(now).as_millis() as u64;
        let (state, open_ms) = match st.circuit {
            _ if down.is_some() => ("down", None),
            Circuit::Closed => ("healthy", None),
            Circuit::Open { until } if now < until => ("open", Some(ms_left(until))),
            Circuit::Open { .. } | Circuit::HalfOpen { .. } => ("half-open", None),
        };
        let banned = st.banned_until.filter(|u| now < *u);
        json!({
            "state": if banned.is_some() { "banned" } else { state },
            "circuit": state,
            "open_for_ms": open_ms,
            "banned_for_ms": banned.map(ms_left),
            "ban_reason": banned.and(st.ban_reason.clone()),
            "health_check": down.map_or_else(|| json!("ok"), |d| json!(d)),
            "in_flight": self.in_flight(),
            "consecutive_failures": st.consecutive_failures,
            "successes": st.successes,
            "failures": st.failures,
            "last_error": st.last_error,
            "ttft_ms": {
                "ewma": st.ttft_ewma_ms.map(round1),
                "p50": percentile(&st.ttft_samples, 0.5).map(round1),
                "p95": percentile(&st.ttft_samples, 0.95).map(round1),
            },
            "tokens_per_second": {
                "ewma": st.tps_ewma.map(round1),
                "p50": percentile(&st.tps_samples, 0.5).map(round1),
                "p95": percentile(&st.tps_samples, 0.95).map(round1),
            },
        })
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(failures: u32, cooldown_ms: u64) -> Health {
        Health::new(
            BreakerConfig {
                failures,
                cooldown_ms,
                ..BreakerConfig::default()
            },
            Arc::default(),
        )
    }

    #[test]
    fn the_breaker_opens_half_opens_and_closes() {
        let h = health(3, 1000);
        let t0 = Instant::now();
        for _ in 0..2 {
            h.failure(t0, &Error::internal("boom"), None);
        }
        assert!(h.check(t0, false).is_ok(), "two failures do not open it");
        h.failure(t0, &Error::internal("boom"), None);
        assert!(matches!(h.check(t0, false), Err(Unavailable::Open { .. })));
        let later = t0 + Duration::from_millis(1001);
        assert!(
            h.check(later, true).is_ok(),
            "the first caller after the cooldown probes"
        );
        assert!(matches!(h.check(later, true), Err(Unavailable::HalfOpenBusy)));
        h.failure(later, &Error::internal("still down"), None);
        assert!(matches!(h.check(later, false), Err(Unavailable::Open { .. })));
        let later2 = later + Duration::from_millis(1001);
        assert!(h.check(later2, true).is_ok());
        h.success(later2);
        assert!(h.check(later2, true).is_ok());
        assert!(h.check(later2, true).is_ok(), "closed again: no probe limit");
    }

    #[test]
    fn the_error_ratio_opens_it_too() {
        let h = Health::new(
            BreakerConfig {
                failures: 100,
                min_requests: 10,
                error_ratio: 0.5,
                ..BreakerConfig::default()
            },
            Arc::default(),
        );
        let t = Instant::now();
        for i in 0..10 {
            if i % 2 == 0 {
                h.success(t);
            } else {
                h.failure(t, &Error::internal("x"), None);
            }
        }
        assert!(matches!(h.check(t, false), Err(Unavailable::Open { .. })));
    }

    #[test]
    fn bans_hold_until_their_time() {
        let h = health(100, 1000);
        let t = Instant::now();
        h.failure(
            t,
            &Error::internal("429"),
            Some((Duration::from_secs(7), "rate limited")),
        );
        assert!(matches!(h.check(t, false), Err(Unavailable::Banned { .. })));
        assert!(h.check(t + Duration::from_secs(8), false).is_ok());
    }

    #[test]
    fn measurements_average_and_rank() {
        let h = health(5, 1000);
        assert_eq!(h.ttft_ms(), None);
        h.record_ttft(Duration::from_millis(100));
        h.record_ttft(Duration::from_millis(200));
        let v = h.ttft_ms().unwrap();
        assert!((v - 130.0).abs() < 1e-6, "{v}");
        let snap = h.snapshot(Instant::now());
        assert_eq!(snap["ttft_ms"]["p95"], json!(200.0));
    }
}

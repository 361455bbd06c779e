//! Walking a plan: one attempt after another within the request's deadline, with backoff between
//! rounds, bans and breaker accounting per deployment, and a record of every attempt for the answer's
//! `routing_metadata`.
//!
//! Which failures move on: connect errors, timeouts, malformed answers, 429, 5xx; 401/403 (bad
//! credentials) and "unknown model" answers ban the deployment for a while and move on too. Which stop
//! at once: the upstream judged the request itself invalid (400/413/422 without an unknown-model marker,
//! or a content-policy refusal) — another deployment would refuse it the same way.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::Deployment;
use super::plan::{Candidate, Plan, unavailable};
use crate::config::RoutingConfig;
use crate::error::{Error, ErrorKind};

/// One attempt, as `routing_metadata.attempts` shows it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub dep: Arc<Deployment>,
    /// The HTTP status the attempt got (the upstream's own; ours for transport failures: 502, 504).
    pub status: u16,
    pub error: Option<String>,
    pub latency_ms: u64,
}

impl serde::Serialize for AttemptRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("deployment", &self.dep.id)?;
        m.serialize_entry("provider", self.dep.provider.name())?;
        m.serialize_entry("model", &self.dep.upstream_model)?;
        m.serialize_entry("status", &self.status)?;
        m.serialize_entry("latency_ms", &self.latency_ms)?;
        if let Some(e) = &self.error {
            m.serialize_entry("error", e)?;
        }
        m.end()
    }
}

/// How a failed attempt is treated.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// The request is at fault: answer the client now.
    Stop,
    /// Try the next deployment (and this one again in a later round, after a backoff).
    Retry,
    /// Try the next deployment; this one is banned for the given time.
    Ban(Duration, &'static str),
    /// Try the next deployment, not this one again: it is busy (its queue is full), which says nothing
    /// about its health — and waiting here for it would defeat the bound on its queue.
    Busy,
}

fn marker(e: &Error, words: &[&str]) -> bool {
    let code = e.code.as_deref().unwrap_or_default();
    let msg = e.message.to_ascii_lowercase();
    words.iter().any(|w| code.contains(w) || msg.contains(w))
}

fn verdict(e: &Error, cfg: &RoutingConfig) -> Verdict {
    let unknown_model = marker(
        e,
        &[
            "model_not_found",
            "does not exist",
            "unknown model",
            "model not found",
            "no such model",
        ],
    );
    let policy = marker(
        e,
        &[
            "content_policy",
            "content_filter",
            "content policy",
            "safety system",
        ],
    );
    match e.kind {
        ErrorKind::Upstream => {
            let status = e.status().as_u16();
            if policy {
                return Verdict::Stop;
            }
            if unknown_model {
                return Verdict::Ban(Duration::from_millis(cfg.breaker.cooldown_ms), "unknown model");
            }
            match status {
                401 | 403 => Verdict::Ban(
                    Duration::from_millis(cfg.breaker.auth_ban_ms),
                    "credentials refused",
                ),
                429 => Verdict::Ban(
                    e.retry_after()
                        .unwrap_or(Duration::from_millis(cfg.breaker.rate_limit_ban_ms)),
                    "rate limited",
                ),
                404 => Verdict::Ban(Duration::from_millis(cfg.breaker.cooldown_ms), "not found"),
                400..=499 => Verdict::Stop,
                _ => Verdict::Retry,
            }
        }
        ErrorKind::Unavailable if e.code.as_deref() == Some("queue_full") => Verdict::Busy,
        ErrorKind::BadGateway | ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::Internal => {
            Verdict::Retry
        }
        _ => Verdict::Stop,
    }
}

/// The attempts of one request.
pub struct Attempts<'a> {
    plan: &'a Plan,
    cfg: &'a RoutingConfig,
    pub deadline: Instant,
    /// Index of the next candidate in this round.
    next: usize,
    round: u32,
    count: u32,
    /// Candidates that failed in a way that allows another round.
    retryable: Vec<bool>,
    current: Option<(usize, std::time::Instant)>,
    pub log: Vec<AttemptRecord>,
    last_error: Option<Error>,
    skipped: Vec<(String, super::Unavailable)>,
}

/// One attempt to make: this deployment, with its first byte due by `first_byte_deadline`.
pub struct Step {
    pub candidate: Candidate,
    pub first_byte_deadline: Instant,
}

impl<'a> Attempts<'a> {
    pub fn new(plan: &'a Plan, cfg: &'a RoutingConfig, deadline: Instant) -> Attempts<'a> {
        Attempts {
            plan,
            cfg,
            deadline,
            next: 0,
            round: 0,
            count: 0,
            retryable: vec![true; plan.candidates.len()],
            current: None,
            log: Vec::new(),
            last_error: None,
            skipped: Vec::new(),
        }
    }

    /// The next attempt, after any backoff; `None` when the plan, the attempts or the deadline are
    /// spent.
    pub async fn next(&mut self) -> Option<Step> {
        let n = self.plan.candidates.len();
        loop {
            if self.count >= self.plan.max_attempts || Instant::now() >= self.deadline {
                return None;
            }
            if self.next >= n {
                // A new round over what may be retried, after a backoff.
                if !self.retryable.iter().any(|r| *r) {
                    return None;
                }
                self.round += 1;
                self.next = 0;
                let base = self.cfg.backoff_ms.saturating_mul(1 << (self.round - 1).min(10));
                let jittered = rand::rng().random_range(base / 2..=base.max(1));
                let mut wait = Duration::from_millis(jittered);
                if let Some(ra) = self.last_error.as_ref().and_then(Error::retry_after) {
                    wait = wait.max(ra);
                }
                if wait > Duration::from_millis(self.cfg.max_backoff_ms)
                    || Instant::now() + wait >= self.deadline
                {
                    return None;
                }
                tokio::time::sleep(wait).await;
                continue;
            }
            let i = self.next;
            self.next += 1;
            if !self.retryable[i] {
                continue;
            }
            let c = &self.plan.candidates[i];
            if let Err(u) = c.dep.health.check(std::time::Instant::now(), true) {
                // Out for now (opened or banned since the plan was made, or a probe is in flight).
                if !self.skipped.iter().any(|(id, _)| *id == c.dep.id) {
                    self.skipped.push((c.dep.id.clone(), u));
                }
                continue;
            }
            self.count += 1;
            self.current = Some((i, std::time::Instant::now()));
            let first_byte_deadline = match self.cfg.first_byte_timeout_ms {
                Some(ms) => self.deadline.min(Instant::now() + Duration::from_millis(ms)),
                None => self.deadline,
            };
            return Some(Step {
                candidate: c.clone(),
                first_byte_deadline,
            });
        }
    }

    fn record(&mut self, status: u16, error: Option<String>) -> Option<Arc<Deployment>> {
        let (i, started) = self.current.take()?;
        let c = &self.plan.candidates[i];
        self.log.push(AttemptRecord {
            dep: c.dep.clone(),
            status,
            error,
            latency_ms: started.elapsed().as_millis() as u64,
        });
        Some(c.dep.clone())
    }

    /// The attempt answered: its first byte is here and the answer is committed to the client.
    pub fn succeeded(&mut self) {
        if let Some(dep) = self.record(200, None) {
            dep.health.success(std::time::Instant::now());
            dep.counters.ok.increment(1);
        }
    }

    /// The attempt failed. `Err` hands back the error to answer the client with now.
    pub fn failed(&mut self, e: Error) -> Result<(), Error> {
        let v = verdict(&e, self.cfg);
        let status = e.upstream_status.unwrap_or_else(|| e.status().as_u16());
        let i = self.current.map(|(i, _)| i);
        let Some(dep) = self.record(status, Some(e.message.clone())) else {
            return Err(e);
        };
        match v {
            Verdict::Stop => dep.counters.rejected.increment(1),
            Verdict::Busy => dep.counters.busy.increment(1),
            _ => dep.counters.failed.increment(1),
        }
        match v {
            Verdict::Stop => {
                dep.health.release_probe();
                Err(e)
            }
            Verdict::Retry => {
                dep.health.failure(std::time::Instant::now(), &e, None);
                self.last_error = Some(e);
                Ok(())
            }
            Verdict::Busy => {
                dep.health.release_probe();
                if let Some(i) = i {
                    self.retryable[i] = false;
                }
                self.last_error = Some(e);
                Ok(())
            }
            Verdict::Ban(d, why) => {
                dep.health.failure(std::time::Instant::now(), &e, Some((d, why)));
                if let Some(i) = i {
                    self.retryable[i] = false;
                }
                self.last_error = Some(e);
                Ok(())
            }
        }
    }

    /// The error to answer when no attempt succeeded.
    pub fn into_error(self) -> Error {
        if let Some(e) = self.last_error {
            return e;
        }
        if self.count == 0 && !self.skipped.is_empty() {
            return unavailable(&self.plan.requested, &self.skipped);
        }
        Error::new(
            ErrorKind::Timeout,
            format!(
                "No deployment of `{}` answered within the request's deadline.",
                self.plan.requested
            ),
        )
    }

    pub fn strategy(&self) -> &'static str {
        self.plan.strategy.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn upstream(status: u16, msg: &str) -> Error {
        let mut e = Error::new(ErrorKind::Upstream, msg);
        e.status = Some(StatusCode::from_u16(status).unwrap());
        e
    }

    #[test]
    fn what_moves_on_and_what_stops() {
        let cfg = RoutingConfig::default();
        assert_eq!(verdict(&upstream(400, "bad"), &cfg), Verdict::Stop);
        assert_eq!(verdict(&upstream(422, "bad"), &cfg), Verdict::Stop);
        assert_eq!(verdict(&upstream(500, "boom"), &cfg), Verdict::Retry);
        assert_eq!(verdict(&upstream(503, "busy"), &cfg), Verdict::Retry);
        assert!(matches!(
            verdict(&upstream(429, "slow down"), &cfg),
            Verdict::Ban(..)
        ));
        assert!(matches!(verdict(&upstream(401, "key"), &cfg), Verdict::Ban(..)));
        assert!(matches!(
            verdict(&upstream(400, "The model `x` does not exist"), &cfg),
            Verdict::Ban(..)
        ));
        assert_eq!(
            verdict(&upstream(500, "rejected by our content_policy"), &cfg),
            Verdict::Stop
        );
        assert_eq!(verdict(&Error::bad_gateway("reset"), &cfg), Verdict::Retry);
        assert_eq!(
            verdict(&Error::new(ErrorKind::Timeout, "slow"), &cfg),
            Verdict::Retry
        );
        assert_eq!(verdict(&Error::invalid("bad"), &cfg), Verdict::Stop);
        let full = Error::new(ErrorKind::Unavailable, "queue full").with_code("queue_full");
        assert_eq!(verdict(&full, &cfg), Verdict::Busy);
    }
}

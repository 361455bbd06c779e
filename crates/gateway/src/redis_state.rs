//! Counters shared by replicas, in Redis: rate windows, in-flight slots and budget spend, each
//! decided by one Lua script (one round trip, atomic); and the channel that tells every replica to
//! reload its key cache when a key changes.
//!
//! Redis that cannot be reached within [`TIMEOUT`] fails open (the request goes on, a warning is
//! logged and counted): an outage of the counters must not become an outage of the gateway.

use std::time::Duration;

use futures::StreamExt;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::limits::{BudgetVerdict, WindowVerdict};

const TIMEOUT: Duration = Duration::from_millis(500);
pub const KEYS_CHANNEL: &str = "switchyard:keys";

/// Takes from every window or from none. KEYS: (current, previous) minute counter per window.
/// ARGV: ms into the minute, then (limit, n) per window. Returns {0, used...} or {i, used}.
const TAKE: &str = r"
local into = tonumber(ARGV[1])
local count = #KEYS / 2
local used = {0}
for i = 1, count do
  local cur = tonumber(redis.call('GET', KEYS[2*i-1]) or '0')
  local prev = tonumber(redis.call('GET', KEYS[2*i]) or '0')
  local u = cur + math.ceil(prev * (60000 - into) / 60000)
  local limit = tonumber(ARGV[2*i])
  local n = tonumber(ARGV[2*i+1])
  if u + n > limit and u > 0 then return {i, u} end
  used[i+1] = u + n
end
for i = 1, count do
  redis.call('INCRBY', KEYS[2*i-1], ARGV[2*i+1])
  redis.call('PEXPIRE', KEYS[2*i-1], 180000)
end
return used
";

/// Adds ARGV[1] (maybe negative) to counter KEYS[1], never below zero.
const ADJUST: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if v < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
return v
";

/// An in-flight slot. KEYS[1]: sorted set of slots by expiry. ARGV: now ms, max, slot id, expiry ms.
const ACQUIRE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('PEXPIRE', KEYS[1], 3600000)
return 1
";

/// A budget reservation. KEYS[1]: hash {spent, reserved} of the key's period (nano-USD).
/// ARGV: budget, estimate, spend to start from (-1: unknown), ttl ms.
/// Returns {1, spent} reserved, {0, spent} over budget, {-1, 0} period unknown.
const RESERVE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  if tonumber(ARGV[3]) < 0 then return {-1, 0} end
  redis.call('HSET', KEYS[1], 'spent', ARGV[3], 'reserved', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local res = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
if spent + res >= tonumber(ARGV[1]) then return {0, spent} end
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[2])
return {1, spent}
";

/// Settles a reservation: KEYS[1] the budget hash; ARGV: reserved, actual.
const SETTLE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local r = redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(ARGV[1]))
if r < 0 then redis.call('HSET', KEYS[1], 'reserved', 0) end
redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
return 1
";

#[derive(Clone)]
pub struct RedisState {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    take: std::sync::Arc<Script>,
    adjust: std::sync::Arc<Script>,
    acquire: std::sync::Arc<Script>,
    reserve: std::sync::Arc<Script>,
    settle: std::sync::Arc<Script>,
}

fn failed_open(what: &str, e: &dyn std::fmt::Display) {
    metrics::counter!(crate::telemetry::REDIS_ERRORS).increment(1);
    tracing::warn!("redis {what} failed ({e}); letting the request through");
}

impl RedisState {
    pub async fn connect(url: &str, prefix: Option<&str>) -> anyhow::Result<RedisState> {
        let client = redis::Client::open(url)?;
        let cfg = ConnectionManagerConfig::new()
            .set_response_timeout(Some(TIMEOUT))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_connection_manager_with_config(cfg),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer from redis within 5 s"))??;
        Ok(RedisState {
            client,
            conn,
            prefix: prefix.unwrap_or("sy:").to_string(),
            take: Script::new(TAKE).into(),
            adjust: Script::new(ADJUST).into(),
            acquire: Script::new(ACQUIRE).into(),
            reserve: Script::new(RESERVE).into(),
            settle: Script::new(SETTLE).into(),
        })
    }

    /// The channel key changes are announced on (one per prefix).
    fn keys_channel(&self) -> String {
        format!("{}{KEYS_CHANNEL}", self.prefix)
    }

    fn window_key(&self, scope: &str, minute: i64) -> String {
        format!("{}rl:{scope}:{minute}", self.prefix)
    }

    fn budget_key(&self, key_id: &str, start: i64) -> String {
        format!("{}budget:{key_id}:{start}", self.prefix)
    }

    pub(crate) async fn take(&self, takes: &[crate::limits::Take], minute: i64, into: i64) -> WindowVerdict {
        let mut inv = self.take.prepare_invoke();
        inv.arg(into);
        for t in takes {
            inv.key(self.window_key(&t.scope, minute));
            inv.key(self.window_key(&t.scope, minute - 1));
            inv.arg(t.limit).arg(t.n);
        }
        let mut conn = self.conn.clone();
        match tokio::time::timeout(TIMEOUT, inv.invoke_async::<Vec<i64>>(&mut conn)).await {
            Ok(Ok(v)) if v.first() == Some(&0) => {
                WindowVerdict::Taken(v[1..].iter().map(|u| (*u).max(0) as u64).collect())
            }
            Ok(Ok(v)) if v.len() == 2 => WindowVerdict::Full((v[0] - 1).max(0) as usize),
            Ok(Ok(v)) => {
                failed_open("rate check", &format!("unexpected answer {v:?}"));
                WindowVerdict::Taken(takes.iter().map(|t| t.n).collect())
            }
            Ok(Err(e)) => {
                failed_open("rate check", &e);
                WindowVerdict::Taken(takes.iter().map(|t| t.n).collect())
            }
            Err(_) => {
                failed_open("rate check", &"timeout");
                WindowVerdict::Taken(takes.iter().map(|t| t.n).collect())
            }
        }
    }

    pub(crate) async fn acquire(&self, key_id: &str, max: u64, slot: &str) -> bool {
        let now = crate::store::now_ms();
        let mut conn = self.conn.clone();
        let mut inv = self.acquire.prepare_invoke();
        inv.key(format!("{}par:{key_id}", self.prefix))
            .arg(now)
            .arg(max)
            .arg(slot)
            // A slot whose replica died lapses after an hour, the longest a request may run.
            .arg(now + 3_600_000);
        let fut = inv.invoke_async::<i64>(&mut conn);
        match tokio::time::timeout(TIMEOUT, fut).await {
            Ok(Ok(v)) => v == 1,
            Ok(Err(e)) => {
                failed_open("in-flight check", &e);
                true
            }
            Err(_) => {
                failed_open("in-flight check", &"timeout");
                true
            }
        }
    }

    pub(crate) async fn reserve(
        &self,
        key_id: &str,
        start: i64,
        budget_nano: i64,
        est: i64,
        init: Option<i64>,
    ) -> BudgetVerdict {
        let mut conn = self.conn.clone();
        let mut inv = self.reserve.prepare_invoke();
        inv.key(self.budget_key(key_id, start))
            .arg(budget_nano)
            .arg(est)
            .arg(init.unwrap_or(-1))
            // Kept a little over the longest period (a month), then gone.
            .arg(32i64 * 86_400_000);
        let fut = inv.invoke_async::<Vec<i64>>(&mut conn);
        match tokio::time::timeout(TIMEOUT, fut).await {
            Ok(Ok(v)) => match v.as_slice() {
                [1, _] => BudgetVerdict::Reserved,
                [0, spent] => BudgetVerdict::Over { spent_nano: *spent },
                [-1, _] if init.is_none() => BudgetVerdict::Unknown,
                other => {
                    failed_open("budget check", &format!("unexpected answer {other:?}"));
                    BudgetVerdict::Reserved
                }
            },
            Ok(Err(e)) => {
                failed_open("budget check", &e);
                BudgetVerdict::Reserved
            }
            Err(_) => {
                failed_open("budget check", &"timeout");
                BudgetVerdict::Reserved
            }
        }
    }

    pub(crate) async fn spent(&self, key_id: &str, start: i64) -> Option<i64> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.budget_key(key_id, start)).arg("spent");
        let fut = cmd.query_async::<Option<i64>>(&mut conn);
        tokio::time::timeout(TIMEOUT, fut).await.ok()?.ok()?
    }

    /// Settles what [`crate::limits::Admission`] reserved.
    pub(crate) async fn settle(
        &self,
        windows: &[(String, i64, u64)],
        actual_tokens: u64,
        parallel: Option<(String, String)>,
        budget: Option<(String, i64, i64)>,
        actual_nano: i64,
    ) {
        let mut conn = self.conn.clone();
        let work = async {
            for (scope, minute, reserved) in windows {
                let delta = actual_tokens as i64 - *reserved as i64;
                if delta != 0 {
                    self.adjust
                        .key(self.window_key(scope, *minute))
                        .arg(delta)
                        .invoke_async::<i64>(&mut conn)
                        .await?;
                }
            }
            if let Some((key, slot)) = &parallel {
                redis::cmd("ZREM")
                    .arg(format!("{}par:{key}", self.prefix))
                    .arg(slot)
                    .query_async::<i64>(&mut conn)
                    .await?;
            }
            if let Some((key, start, reserved)) = &budget {
                self.settle
                    .key(self.budget_key(key, *start))
                    .arg(*reserved)
                    .arg(actual_nano)
                    .invoke_async::<i64>(&mut conn)
                    .await?;
            }
            Ok::<_, redis::RedisError>(())
        };
        match tokio::time::timeout(TIMEOUT * 4, work).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed_open("settlement", &e),
            Err(_) => failed_open("settlement", &"timeout"),
        }
    }

    /// Tells every replica that keys changed.
    pub async fn publish_keys_changed(&self) {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.keys_channel()).arg("changed");
        let fut = cmd.query_async::<i64>(&mut conn);
        match tokio::time::timeout(TIMEOUT, fut).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("could not publish a key change: {e}"),
            Err(_) => tracing::warn!("could not publish a key change: timeout"),
        }
    }

    /// Calls `on_change` whenever any replica changes a key; reconnects when the connection drops.
    pub async fn watch_keys<F, Fut>(&self, on_change: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        loop {
            match self.client.get_async_pubsub().await {
                Ok(mut ps) => {
                    if let Err(e) = ps.subscribe(self.keys_channel()).await {
                        tracing::warn!("cannot subscribe to key changes: {e}");
                    } else {
                        // Changes missed while unsubscribed are caught by this reload.
                        on_change().await;
                        let mut msgs = ps.on_message();
                        while msgs.next().await.is_some() {
                            on_change().await;
                        }
                    }
                }
                Err(e) => tracing::warn!("cannot subscribe to key changes: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

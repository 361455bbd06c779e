//! Shared, cloneable recorder of what the mock saw.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::HeaderMap;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

/// How many requests are kept (oldest are dropped first).
pub const MAX_RECORDED: usize = 1000;

/// One request as received by the mock.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecordedRequest {
    /// Canonical route, e.g. `"POST /v1/chat/completions"` (also when called without the `/v1` prefix).
    pub route: String,
    /// The path actually requested (with query string, if any).
    pub path: String,
    /// Lowercased header name → value (repeated headers joined with `", "`).
    pub headers: BTreeMap<String, String>,
    /// Parsed JSON body; `Value::String(raw)` when the body is not JSON; `Value::Null` when empty.
    pub body: Value,
}

impl RecordedRequest {
    /// A header value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

struct Inner {
    counts: Mutex<BTreeMap<String, u64>>,
    requests: Mutex<VecDeque<RecordedRequest>>,
    seq: AtomicU64,
    require_key: RwLock<Option<String>>,
    aws_credentials: RwLock<Option<(String, String)>>,
    defaults: RwLock<BTreeMap<String, String>>,
    /// The latest request's HTTP version (a static name; `None` before any request).
    last_http_version: Mutex<Option<&'static str>>,
    /// TCP connections accepted.
    connections: AtomicU64,
    closed: watch::Sender<bool>,
}

/// Recorder + configuration shared by all handlers. Cheap to clone.
#[derive(Clone)]
pub struct MockState {
    inner: Arc<Inner>,
}

impl Default for MockState {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MockState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockState")
            .field("counts", &*self.inner.counts.lock())
            .finish_non_exhaustive()
    }
}

impl MockState {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                counts: Mutex::new(BTreeMap::new()),
                requests: Mutex::new(VecDeque::new()),
                seq: AtomicU64::new(0),
                require_key: RwLock::new(None),
                aws_credentials: RwLock::new(None),
                defaults: RwLock::new(BTreeMap::new()),
                last_http_version: Mutex::new(None),
                connections: AtomicU64::new(0),
                closed: watch::Sender::new(false),
            }),
        }
    }

    /// A state whose routes demand this API key (OpenAI: `Authorization: Bearer KEY`;
    /// Anthropic: `x-api-key: KEY` or Bearer; Gemini: `x-goog-api-key: KEY` or `?key=KEY`).
    /// Bedrock routes are governed by [`MockState::with_aws_credentials`] instead.
    pub fn with_require_key(key: impl Into<String>) -> Self {
        let s = Self::new();
        s.set_require_key(Some(key.into()));
        s
    }

    pub fn set_require_key(&self, key: Option<String>) {
        *self.inner.require_key.write() = key;
    }

    pub fn require_key(&self) -> Option<String> {
        self.inner.require_key.read().clone()
    }

    /// A state whose Bedrock routes demand AWS SigV4 signatures made with this access key id and
    /// secret access key (service `bedrock`, any region). See [`MockState::set_aws_credentials`].
    pub fn with_aws_credentials(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        let s = Self::new();
        s.set_aws_credentials(Some((access_key_id.into(), secret_access_key.into())));
        s
    }

    /// `Some((access_key_id, secret_access_key))`: every Bedrock request must carry a valid SigV4
    /// `Authorization` (or `Authorization: Bearer <require_key>`, Bedrock's API keys, when a
    /// require_key is set too). `None` (the default): Bedrock routes accept any credentials.
    pub fn set_aws_credentials(&self, creds: Option<(String, String)>) {
        *self.inner.aws_credentials.write() = creds;
    }

    /// The configured `(access_key_id, secret_access_key)`, if any.
    pub fn aws_credentials(&self) -> Option<(String, String)> {
        self.inner.aws_credentials.read().clone()
    }

    /// Options applied to every request that does not set them itself (e.g. `status=500` to make the
    /// whole server fail until they are cleared with an empty map).
    pub fn set_defaults(&self, defaults: BTreeMap<String, String>) {
        *self.inner.defaults.write() = defaults;
    }

    pub fn defaults(&self) -> BTreeMap<String, String> {
        self.inner.defaults.read().clone()
    }

    /// How many requests hit `route` (e.g. `"POST /v1/chat/completions"`) since start / last reset.
    pub fn count(&self, route: &str) -> u64 {
        self.inner.counts.lock().get(route).copied().unwrap_or(0)
    }

    /// All counts per route.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.inner.counts.lock().clone()
    }

    /// Total number of requests recorded since start / last reset (all routes).
    pub fn total(&self) -> u64 {
        self.inner.counts.lock().values().sum()
    }

    /// The last (up to 1,000) requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests.lock().iter().cloned().collect()
    }

    /// The recorded requests for one route, oldest first.
    pub fn requests_for(&self, route: &str) -> Vec<RecordedRequest> {
        self.inner
            .requests
            .lock()
            .iter()
            .filter(|r| r.route == route)
            .cloned()
            .collect()
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.inner.requests.lock().back().cloned()
    }

    /// Forget counts, recorded requests and the last HTTP version.
    pub fn reset(&self) {
        self.inner.counts.lock().clear();
        self.inner.requests.lock().clear();
        *self.inner.last_http_version.lock() = None;
        self.inner.connections.store(0, Ordering::Relaxed);
    }

    /// TCP connections accepted since start / last reset (an HTTP/2 client multiplexes its requests
    /// over few).
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::Relaxed)
    }

    pub(crate) fn note_connection(&self) {
        self.inner.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// The HTTP version of the latest request (`"HTTP/1.1"`, `"HTTP/2.0"`), any route, since start /
    /// last reset.
    pub fn last_http_version(&self) -> Option<String> {
        self.inner.last_http_version.lock().map(str::to_string)
    }

    pub(crate) fn set_last_http_version(&self, version: &'static str) {
        *self.inner.last_http_version.lock() = Some(version);
    }

    /// JSON snapshot used by `GET /_mock/stats`.
    pub fn stats_json(&self) -> Value {
        serde_json::json!({
            "counts": self.counts(),
            "total": self.total(),
            "requests": self.requests(),
        })
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn record(&self, route: &str, path: &str, headers: &HeaderMap, body: &[u8]) {
        let mut hmap: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in headers {
            let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
            hmap.entry(name.as_str().to_ascii_lowercase())
                .and_modify(|old| {
                    old.push_str(", ");
                    old.push_str(&v);
                })
                .or_insert(v);
        }
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
        };
        let rec = RecordedRequest {
            route: route.to_string(),
            path: path.to_string(),
            headers: hmap,
            body,
        };
        *self.inner.counts.lock().entry(route.to_string()).or_insert(0) += 1;
        let mut reqs = self.inner.requests.lock();
        if reqs.len() >= MAX_RECORDED {
            reqs.pop_front();
        }
        reqs.push_back(rec);
    }

    /// Wake every `hang` / `hang_after` request (they then fail). Called when a [`crate::MockServer`]
    /// shuts down; a closed state never hangs again.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// Resolves once [`MockState::close`] was called.
    pub(crate) async fn closed(&self) {
        let mut rx = self.inner.closed.subscribe();
        if rx.wait_for(|c| *c).await.is_err() {
            // Sender lives as long as `self`; unreachable in practice — pend forever.
            std::future::pending::<()>().await;
        }
    }
}

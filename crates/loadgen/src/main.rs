//! `loadgen`: the load generator of `bench/run.sh`. Every mode prints one JSON object.
//!
//! - `rate`: open loop at a fixed rate; latency counts from when each request was due, so a stalled
//!   server cannot hide its queue (no coordinated omission).
//! - `max`: closed loop, `--conns` requests always in flight, for maximum throughput.
//! - `stream`: streamed requests; time to first chunk and the gaps between chunks.
//! - `hold`: opens `--streams` streams at once and keeps them open, for memory figures.
//! - `proxy`: not a load at all, the floor of the benchmark: a pass-through proxy on the gateway's own
//!   stack (an axum server, a pooled reqwest client) that parses nothing and does nothing else, so the
//!   cost of one HTTP hop on this machine is measured beside the gateway's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Args, Clone)]
struct Target {
    /// The URL to POST to.
    #[arg(long)]
    url: String,
    /// The JSON body.
    #[arg(long)]
    body: String,
    /// A bearer token.
    #[arg(long)]
    key: Option<String>,
    /// Extra headers, `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
}

#[derive(Subcommand)]
enum Mode {
    Rate {
        #[command(flatten)]
        t: Target,
        #[arg(long)]
        rate: u64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Most requests in flight at once.
        #[arg(long, default_value_t = 512)]
        conns: usize,
    },
    Max {
        #[command(flatten)]
        t: Target,
        #[arg(long, default_value_t = 64)]
        conns: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    Stream {
        #[command(flatten)]
        t: Target,
        #[arg(long, default_value_t = 50)]
        requests: usize,
        #[arg(long, default_value_t = 4)]
        conns: usize,
    },
    Hold {
        #[command(flatten)]
        t: Target,
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        /// How long to hold them once all are open.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    Proxy {
        /// Where to listen (`127.0.0.1:0` picks a port; the address is printed).
        #[arg(long)]
        listen: String,
        /// The upstream's base URL; the request's path and query are appended to it.
        #[arg(long)]
        upstream: String,
        /// The upstream client: `hyper` (hyper-util's pooled client, plain HTTP only: what the gateway
        /// uses) or `reqwest` (what it used before the sixth round), to show what reqwest's layers cost.
        #[arg(long, default_value = "hyper")]
        client: String,
    },
}

fn client(conns: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap_or_default()
}

fn request(c: &reqwest::Client, t: &Target) -> reqwest::RequestBuilder {
    let mut r = c
        .post(&t.url)
        .header("content-type", "application/json")
        .body(t.body.clone());
    if let Some(k) = &t.key {
        r = r.bearer_auth(k);
    }
    for h in &t.headers {
        if let Some((name, value)) = h.split_once(':') {
            r = r.header(name.trim(), value.trim());
        }
    }
    r
}

/// p50 / p99 / p99.9 / max of microsecond samples, in milliseconds.
fn percentiles(mut v: Vec<u64>) -> Value {
    if v.is_empty() {
        return json!(null);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1000.0;
    json!({"p50_ms": at(0.50), "p99_ms": at(0.99), "p999_ms": at(0.999), "max_ms": at(1.0), "n": v.len()})
}

async fn one(c: &reqwest::Client, t: &Target) -> bool {
    match request(c, t).send().await {
        Ok(r) => {
            let ok = r.status().is_success();
            ok && r.bytes().await.is_ok()
        }
        Err(_) => false,
    }
}

async fn rate(t: Target, rate: u64, seconds: f64, conns: usize) -> Value {
    let c = client(conns);
    let total = (rate as f64 * seconds) as u64;
    let sem = Arc::new(Semaphore::new(conns));
    let errors = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = sem.clone().try_acquire_owned() else {
            // Everything in flight: the server is behind; this request is counted as dropped.
            dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (c, t, errors) = (c.clone(), t.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let ok = one(&c, &t).await;
            drop(permit);
            if !ok {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            due.elapsed().as_micros() as u64
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(us) = task.await {
            lat.push(us);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    json!({"mode": "rate", "target_rps": rate, "sent": lat.len(), "achieved_rps": lat.len() as f64 / elapsed,
        "errors": errors.load(Ordering::Relaxed), "dropped": dropped.load(Ordering::Relaxed), "latency": percentiles(lat)})
}

async fn max(t: Target, conns: usize, seconds: f64) -> Value {
    let c = client(conns);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (c, t) = (c.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < end {
                let s = Instant::now();
                if !one(&c, &t).await {
                    errors += 1;
                }
                lat.push(s.elapsed().as_micros() as u64);
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((l, e)) = task.await {
            lat.extend(l);
            errors += e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    json!({"mode": "max", "conns": conns, "requests": lat.len(), "rps": lat.len() as f64 / elapsed,
        "errors": errors, "latency": percentiles(lat)})
}

async fn stream(t: Target, requests: usize, conns: usize) -> Value {
    let c = client(conns);
    let sem = Arc::new(Semaphore::new(conns));
    let mut tasks = Vec::new();
    for _ in 0..requests {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let (c, t) = (c.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let s = Instant::now();
            let mut ttft = None;
            let mut gaps = Vec::new();
            let mut chunks = 0u64;
            if let Ok(r) = request(&c, &t).send().await {
                let mut body = r.bytes_stream();
                let mut last = Instant::now();
                while let Some(Ok(_)) = body.next().await {
                    let now = Instant::now();
                    if ttft.is_none() {
                        ttft = Some(now.duration_since(s).as_micros() as u64);
                    } else {
                        gaps.push(now.duration_since(last).as_micros() as u64);
                    }
                    last = now;
                    chunks += 1;
                }
            }
            drop(permit);
            (ttft, gaps, chunks)
        }));
    }
    let (mut ttfts, mut gaps, mut chunks) = (Vec::new(), Vec::new(), 0);
    for task in tasks {
        if let Ok((t, g, n)) = task.await {
            ttfts.extend(t);
            gaps.extend(g);
            chunks += n;
        }
    }
    json!({"mode": "stream", "requests": requests, "reads": chunks, "ttft": percentiles(ttfts), "gap": percentiles(gaps)})
}

async fn hold(t: Target, streams: usize, seconds: f64) -> Value {
    let c = client(streams);
    let opened = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (c, t, opened) = (c.clone(), t.clone(), opened.clone());
        tasks.push(tokio::spawn(async move {
            if let Ok(r) = request(&c, &t).send().await {
                let mut body = r.bytes_stream();
                if let Some(Ok(_)) = body.next().await {
                    opened.fetch_add(1, Ordering::Relaxed);
                }
                // Keep reading (slowly arriving chunks) until told to stop.
                while let Some(Ok(_)) = body.next().await {}
            }
        }));
    }
    let start = Instant::now();
    while opened.load(Ordering::Relaxed) < streams as u64 && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_after = start.elapsed().as_secs_f64();
    // The script reads memory now.
    println!(
        "{}",
        json!({"event": "all_open", "opened": opened.load(Ordering::Relaxed), "seconds": open_after})
    );
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    for task in &tasks {
        task.abort();
    }
    json!({"mode": "hold", "streams": streams, "opened": opened.load(Ordering::Relaxed), "open_seconds": open_after})
}

/// Forwards every request to `upstream` as it came (method, path, body, content type and authorization)
/// and streams the answer back as it arrives.
async fn proxy(listen: String, upstream: String, client: String) -> Value {
    use axum::body::Body;
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .tcp_nodelay(true)
        .build()
        .unwrap_or_default();
    let upstream = Arc::new(upstream.trim_end_matches('/').to_string());
    if client == "hyper" {
        return serve_proxy(listen, hyper_proxy(upstream)).await;
    }
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (c, upstream) = (c.clone(), upstream.clone());
        async move {
            let fwd = match Forward::read(req, &upstream).await {
                Ok(f) => f,
                Err(resp) => return resp,
            };
            let mut r = c.request(fwd.method, fwd.url).body(fwd.body);
            for (name, v) in fwd.headers {
                r = r.header(name, v);
            }
            match r.send().await {
                Ok(resp) => {
                    let (status, headers) = (resp.status(), resp.headers().clone());
                    answer(status, &headers, Body::from_stream(resp.bytes_stream()))
                }
                Err(_) => status_only(502),
            }
        }
    });
    serve_proxy(listen, app).await
}

/// A request as the floor forwards it.
struct Forward {
    method: http::Method,
    url: String,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    body: bytes::Bytes,
}

impl Forward {
    /// The request read whole: its method, the upstream URL with its path and query, the headers that
    /// travel (content type and authorization), its body.
    async fn read(req: axum::extract::Request, upstream: &str) -> Result<Forward, axum::response::Response> {
        let (parts, body) = req.into_parts();
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{upstream}{pq}");
        let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
            return Err(status_only(400));
        };
        let headers = [http::header::CONTENT_TYPE, http::header::AUTHORIZATION]
            .into_iter()
            .filter_map(|name| parts.headers.get(&name).cloned().map(|v| (name, v)))
            .collect();
        Ok(Forward {
            method: parts.method,
            url,
            headers,
            body,
        })
    }
}

fn status_only(status: u16) -> axum::response::Response {
    axum::response::Response::builder()
        .status(status)
        .body(axum::body::Body::empty())
        .unwrap_or_default()
}

/// The upstream's answer as it came: its status, its content type, its body streamed.
fn answer(
    status: http::StatusCode,
    headers: &http::HeaderMap,
    body: axum::body::Body,
) -> axum::response::Response {
    let mut out = axum::response::Response::builder().status(status);
    if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
        out = out.header(http::header::CONTENT_TYPE, ct.clone());
    }
    out.body(body).unwrap_or_default()
}

/// The same proxy on hyper-util's pooled client directly.
fn hyper_proxy(upstream: Arc<String>) -> axum::Router {
    use axum::body::Body;
    use http_body_util::BodyExt as _;
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let c: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(4096)
            .build(connector);
    axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (c, upstream) = (c.clone(), upstream.clone());
        async move {
            let fwd = match Forward::read(req, &upstream).await {
                Ok(f) => f,
                Err(resp) => return resp,
            };
            let mut r = http::Request::builder().method(fwd.method).uri(fwd.url);
            for (name, v) in fwd.headers {
                r = r.header(name, v);
            }
            let Ok(req) = r.body(http_body_util::Full::new(fwd.body)) else {
                return status_only(400);
            };
            match c.request(req).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    answer(
                        parts.status,
                        &parts.headers,
                        Body::new(body.map_err(axum::Error::new)),
                    )
                }
                Err(_) => status_only(502),
            }
        }
    })
}

async fn serve_proxy(listen: String, app: axum::Router) -> Value {
    use axum::serve::ListenerExt as _;
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => return json!({"mode": "proxy", "error": e.to_string()}),
    };
    if let Ok(a) = listener.local_addr() {
        println!("listening on http://{a}");
    }
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    match axum::serve(listener, app).await {
        Ok(()) => json!({"mode": "proxy"}),
        Err(e) => json!({"mode": "proxy", "error": e.to_string()}),
    }
}

#[tokio::main]
async fn main() {
    let out = match Cli::parse().mode {
        Mode::Rate {
            t,
            rate: r,
            seconds,
            conns,
        } => rate(t, r, seconds, conns).await,
        Mode::Max { t, conns, seconds } => max(t, conns, seconds).await,
        Mode::Stream { t, requests, conns } => stream(t, requests, conns).await,
        Mode::Hold { t, streams, seconds } => hold(t, streams, seconds).await,
        Mode::Proxy {
            listen,
            upstream,
            client,
        } => proxy(listen, upstream, client).await,
    };
    println!("{out}");
}

//! Black-box: how the gateway reaches its upstreams. HTTPS against a certificate the system trusts
//! (here a test CA named by `SSL_CERT_FILE`), HTTP/2 when the upstream offers it by ALPN, a refused
//! certificate reported as the upstream's failure, and the proxy variables: CONNECT tunnels for HTTPS
//! (credentials in the CONNECT), absolute-form requests for plain HTTP (credentials in
//! `Proxy-Authorization`), and `NO_PROXY`; HTTP/2 with prior knowledge (`http2_prior_knowledge`), every
//! request multiplexed over one connection; the HTTP/1.1 pool: a connection carries one answer after
//! another, whole or streamed, and one the upstream closed while it sat idle is not used again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Gateway, KEY, TempDir, chat_body, joined_content};
use mock_upstream::proxy::TestProxy;
use mock_upstream::tls::TestCa;
use mock_upstream::{MockServer, MockState};
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn config(upstream: &str) -> String {
    format!(
        r#"[server]
address = "127.0.0.1:0"

[auth]
master_key = "{KEY}"

[routing]
max_attempts = 1
health_check_interval_ms = 0

[providers.up]
kind = "openai"
base_url = "{upstream}/v1"
api_key = "sk-upstream"
connect_timeout_ms = 5000

[models.gpt-mock]
provider = "up"
model = "mock-ok"

[models.gpt-stream]
provider = "up"
model = "mock-ok+tokens=40"
"#
    )
}

async fn tls_mock(ca: &TestCa) -> MockServer {
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
    MockServer::start_tls(MockState::new(), &cert, &key)
        .await
        .unwrap()
}

/// One whole answer and one streamed answer through the gateway, both complete.
async fn chat_twice(gw: &Gateway) {
    let (status, headers, body) = gw.chat(&chat_body("gpt-mock", "hello")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-switchyard-provider"], "up");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{body}"
    );
    let mut req = chat_body("gpt-stream", "hello");
    req["stream"] = Value::Bool(true);
    let (status, _, frames) = gw.chat_stream(&req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    assert!(!joined_content(&frames).is_empty(), "{frames:?}");
}

#[tokio::test]
async fn https_upstream_with_a_trusted_ca_is_reached_over_http2() {
    let ca = TestCa::new();
    let mock = tls_mock(&ca).await;
    let dir = TempDir::new();
    let ca_file = dir.write("ca.pem", &ca.ca_pem);
    let gw = Gateway::start_with_env(
        &config(&mock.base_url()),
        &[("SSL_CERT_FILE", ca_file.to_str().unwrap())],
    )
    .await;
    chat_twice(&gw).await;
    // The upstream offered h2 and http/1.1 by ALPN; the gateway took h2, as reqwest did before.
    assert_eq!(mock.state.last_http_version().as_deref(), Some("HTTP/2.0"));
}

#[tokio::test]
async fn an_untrusted_certificate_is_the_upstreams_failure() {
    let ca = TestCa::new();
    let mock = tls_mock(&ca).await;
    // Another CA is trusted: the mock's certificate is refused.
    let other = TestCa::new();
    let dir = TempDir::new();
    let ca_file = dir.write("other.pem", &other.ca_pem);
    let gw = Gateway::start_with_env(
        &config(&mock.base_url()),
        &[("SSL_CERT_FILE", ca_file.to_str().unwrap())],
    )
    .await;
    let (status, _, body) = gw.chat(&chat_body("gpt-mock", "hello")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("upstream up could not be reached") && message.contains("certificate"),
        "{message}"
    );
    assert_eq!(
        mock.state.last_http_version(),
        None,
        "no request reached the mock"
    );
}

#[tokio::test]
async fn https_through_a_proxy_is_tunnelled_with_its_credentials() {
    let ca = TestCa::new();
    let mock = tls_mock(&ca).await;
    let proxy = TestProxy::start_with_auth("gw", "s3cret").await.unwrap();
    let dir = TempDir::new();
    let ca_file = dir.write("ca.pem", &ca.ca_pem);
    let gw = Gateway::start_with_env(
        &config(&mock.base_url()),
        &[
            ("SSL_CERT_FILE", ca_file.to_str().unwrap()),
            ("HTTPS_PROXY", &proxy.url_with_auth("gw", "s3cret")),
            ("NO_PROXY", ""),
        ],
    )
    .await;
    chat_twice(&gw).await;
    let port = mock.addr.port();
    // One tunnel, kept and reused (HTTP/2 inside it), and nothing sent to the proxy in the clear.
    assert_eq!(proxy.connects(), vec![format!("localhost:{port}")]);
    assert!(proxy.forwarded().is_empty());
    assert_eq!(proxy.rejected(), 0, "the CONNECT carried the credentials");
    assert_eq!(mock.state.last_http_version().as_deref(), Some("HTTP/2.0"));
}

#[tokio::test]
async fn plain_http_through_a_proxy_names_the_whole_url() {
    let mock = MockServer::start().await.unwrap();
    let proxy = TestProxy::start_with_auth("gw", "s3cret").await.unwrap();
    let gw = Gateway::start_with_env(
        &config(&mock.base_url()),
        &[
            ("HTTP_PROXY", &proxy.url_with_auth("gw", "s3cret")),
            ("NO_PROXY", ""),
        ],
    )
    .await;
    chat_twice(&gw).await;
    let target = format!("{}/v1/chat/completions", mock.base_url());
    assert_eq!(proxy.forwarded(), vec![target.clone(), target]);
    assert_eq!(proxy.rejected(), 0, "Proxy-Authorization was sent");
    assert_eq!(proxy.connections(), 1, "one kept-alive connection to the proxy");
    assert!(proxy.connects().is_empty());
}

#[tokio::test]
async fn no_proxy_hosts_are_reached_directly() {
    let mock = MockServer::start().await.unwrap();
    let proxy = TestProxy::start().await.unwrap();
    let gw = Gateway::start_with_env(
        &config(&mock.base_url()),
        &[("HTTP_PROXY", &proxy.url()), ("NO_PROXY", "localhost,127.0.0.1")],
    )
    .await;
    chat_twice(&gw).await;
    assert!(proxy.forwarded().is_empty() && proxy.connects().is_empty());
    assert_eq!(proxy.connections(), 0);
}

/// `config` with HTTP/2 prior knowledge on the provider.
fn h2_config(upstream: &str) -> String {
    config(upstream).replace(
        "connect_timeout_ms = 5000\n",
        "connect_timeout_ms = 5000\nhttp2_prior_knowledge = true\n",
    )
}

/// 16 answers at once, each held 100 ms by the mock so that they overlap.
async fn sixteen_at_once(gw: &Gateway) {
    let body = chat_body("gpt-slow", "hello");
    let answers = futures::future::join_all((0..16).map(|_| gw.chat(&body))).await;
    for (status, _, body) in answers {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

fn with_slow_model(config: String) -> String {
    config + "\n[models.gpt-slow]\nprovider = \"up\"\nmodel = \"mock-ok+delay=100\"\n"
}

#[tokio::test]
async fn plain_http_with_prior_knowledge_is_http2_over_one_connection() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&with_slow_model(h2_config(&mock.base_url()))).await;
    chat_twice(&gw).await;
    assert_eq!(mock.state.last_http_version().as_deref(), Some("HTTP/2.0"));
    sixteen_at_once(&gw).await;
    assert_eq!(
        mock.state.connections(),
        1,
        "every request, the 16 at once too, multiplexed over one connection"
    );
}

#[tokio::test]
async fn plain_http_without_it_is_http1_with_a_pool() {
    // The default, and what makes the test above mean something: HTTP/1.1, a connection per
    // request in flight. (Not always 16: on a busy machine a request may arrive after another has
    // finished and reuse its connection; 15 was seen.)
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&with_slow_model(config(&mock.base_url()))).await;
    sixteen_at_once(&gw).await;
    assert_eq!(mock.state.last_http_version().as_deref(), Some("HTTP/1.1"));
    assert!(mock.state.connections() >= 4, "{}", mock.state.connections());
}

#[tokio::test]
async fn https_with_prior_knowledge_is_http2() {
    let ca = TestCa::new();
    let mock = tls_mock(&ca).await;
    let dir = TempDir::new();
    let ca_file = dir.write("ca.pem", &ca.ca_pem);
    let gw = Gateway::start_with_env(
        &with_slow_model(h2_config(&mock.base_url())),
        &[("SSL_CERT_FILE", ca_file.to_str().unwrap())],
    )
    .await;
    chat_twice(&gw).await;
    sixteen_at_once(&gw).await;
    assert_eq!(mock.state.last_http_version().as_deref(), Some("HTTP/2.0"));
    assert_eq!(mock.state.connections(), 1);
}

#[tokio::test]
async fn prior_knowledge_through_a_forward_proxy_is_refused_at_start() {
    // A forward proxy speaks HTTP/1.1 with absolute-form requests: HTTP/2 cannot go through it, and
    // the gateway says so instead of failing every request.
    let mock = MockServer::start().await.unwrap();
    let proxy = TestProxy::start().await.unwrap();
    let dir = TempDir::new();
    let path = dir.write("h2.toml", &h2_config(&mock.base_url()));
    let run = tokio::process::Command::new(common::bin())
        .args([
            std::ffi::OsStr::new("serve"),
            "--config".as_ref(),
            path.as_os_str(),
        ])
        .env("SWITCHYARD_HOME", &dir.0)
        .env("HTTP_PROXY", proxy.url())
        .env("NO_PROXY", "")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the gateway exits instead of serving")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("http2_prior_knowledge") && stderr.contains("NO_PROXY"),
        "{stderr}"
    );
}

#[tokio::test]
async fn one_http1_connection_carries_answers_one_after_another() {
    // Each answer, whole or streamed, is read to its end, and its connection goes back to the pool
    // for the next one. (A streamed answer's connection goes back once the body's end has followed
    // its `[DONE]`, which may be a moment after the client has its own `[DONE]`: the pause.)
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config(&mock.base_url())).await;
    for _ in 0..3 {
        chat_twice(&gw).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mock.state.last_http_version().as_deref(), Some("HTTP/1.1"));
    assert_eq!(
        mock.state.connections(),
        1,
        "six answers in turn over one connection"
    );
}

/// Reads one HTTP/1.1 request (its head, then as much body as it announces); false at the
/// connection's end.
async fn read_request(tcp: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let (head_end, length) = loop {
        let n = tcp.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..i]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, length);
        }
    };
    while got.len() < head_end + length {
        let n = tcp.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        got.extend_from_slice(&buf[..n]);
    }
    true
}

/// A raw upstream on `127.0.0.1:0` that serves each accepted connection with `serve`; its base URL
/// and the count of connections it accepted.
async fn raw_upstream<F, Fut>(serve: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(tcp));
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
    // One answer per connection, then the upstream closes it without saying so (no
    // `Connection: close`): what a server does to a keep-alive connection once its idle timeout ends.
    let (url, accepted) = raw_upstream(|mut tcp| async move {
        use tokio::io::AsyncWriteExt as _;
        if !read_request(&mut tcp).await {
            return;
        }
        let body = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"raw","choices":[{"index":0,"message":{"role":"assistant","content":"fresh"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = tcp.write_all(answer.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
    let gw = Gateway::start(&config(&url)).await;
    for i in 0..4 {
        let (status, _, body) = gw.chat(&chat_body("gpt-mock", "hello")).await;
        assert_eq!(status, StatusCode::OK, "answer {i}: {body}");
        assert_eq!(body["choices"][0]["message"]["content"], "fresh", "{body}");
        // Time for the gateway to see the upstream's end of the connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
}

/// An upstream whose streamed answers end their body `gap` after `data: [DONE]`, keeping the
/// connection for the next request; `None`: never (the body stays open until the client leaves).
async fn late_end_upstream(gap: Option<Duration>) -> (String, Arc<AtomicUsize>) {
    raw_upstream(move |mut tcp| async move {
        use tokio::io::AsyncWriteExt as _;
        let chunks = [
            r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"raw","choices":[{"index":0,"delta":{"role":"assistant","content":"late"},"finish_reason":null}]}"#,
            r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"raw","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"raw","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
            "data: [DONE]",
        ];
        while read_request(&mut tcp).await {
            let mut answer =
                String::from("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
            for c in chunks {
                let event = format!("{c}\n\n");
                answer += &format!("{:x}\r\n{event}\r\n", event.len());
            }
            if tcp.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            let Some(gap) = gap else {
                // Held open: the gateway gives up on the body's end and closes the connection.
                let mut rest = [0u8; 64];
                let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut rest).await;
                return;
            };
            tokio::time::sleep(gap).await;
            if tcp.write_all(b"0\r\n\r\n").await.is_err() {
                return;
            }
        }
    })
    .await
}

async fn stream_once(gw: &Gateway) {
    let mut req = chat_body("gpt-stream", "hello");
    req["stream"] = Value::Bool(true);
    let (status, _, frames) = gw.chat_stream(&req).await;
    assert_eq!(status, StatusCode::OK, "{frames:?}");
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(joined_content(&frames), "late");
}

#[tokio::test]
async fn a_streamed_answer_whose_body_ends_after_its_done_gives_its_connection_back() {
    // The body's end comes 200 ms after `[DONE]`: the client's stream has ended by then, and the
    // gateway still reads the end, so the connection carries the next answer.
    let (url, accepted) = late_end_upstream(Some(Duration::from_millis(200))).await;
    let gw = Gateway::start(&config(&url)).await;
    for _ in 0..3 {
        stream_once(&gw).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_streamed_answer_whose_body_never_ends_closes_its_connection() {
    // No end after `[DONE]` within the 2 s the gateway waits for it: the connection is closed, not
    // pooled, and the next answer gets a connection of its own; no client waits for it.
    let (url, accepted) = late_end_upstream(None).await;
    let gw = Gateway::start(&config(&url)).await;
    stream_once(&gw).await;
    stream_once(&gw).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn answers_framed_every_way_http1_allows_are_read_and_reused_only_when_they_may_be() {
    // The gateway's own HTTP/1.1 client against the framings an upstream may choose, one after another:
    // an interim 100 then a chunked body (a chunk extension, a trailer), which keeps the connection;
    // `Connection: close`, which ends it; HTTP/1.0 with the body ended by the close; a plain length.
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let (url, accepted) = raw_upstream(move |mut tcp| {
        let served = count.clone();
        async move {
            use tokio::io::AsyncWriteExt as _;
            let body = |text: &str| {
                format!(
                    r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"raw","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}}}"#
                )
            };
            while read_request(&mut tcp).await {
                let i = served.fetch_add(1, Ordering::SeqCst);
                let (answer, then_close) = match i {
                    0 => {
                        let b = body("chunked");
                        let (x, y) = b.split_at(20);
                        (
                            format!(
                                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                 transfer-encoding: chunked\r\n\r\n{:x};ext=1\r\n{x}\r\n{:X}\r\n{y}\r\n0\r\nx-trailer: 1\r\n\r\n",
                                x.len(),
                                y.len()
                            ),
                            false,
                        )
                    }
                    1 => {
                        let b = body("closing");
                        (
                            format!(
                                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
                                b.len()
                            ),
                            true,
                        )
                    }
                    2 => (
                        format!("HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{}", body("to the close")),
                        true,
                    ),
                    _ => {
                        let b = body("plain");
                        (
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
                                b.len()
                            ),
                            false,
                        )
                    }
                };
                if tcp.write_all(answer.as_bytes()).await.is_err() || then_close {
                    let _ = tcp.shutdown().await;
                    return;
                }
            }
        }
    })
    .await;
    let gw = Gateway::start(&config(&url)).await;
    for want in ["chunked", "closing", "to the close", "plain", "plain"] {
        let (status, _, body) = gw.chat(&chat_body("gpt-mock", "hello")).await;
        assert_eq!(status, StatusCode::OK, "{want}: {body}");
        assert_eq!(body["choices"][0]["message"]["content"], want, "{body}");
    }
    // The first connection carried the chunked answer and the closing one; the HTTP/1.0 answer had
    // one of its own; the last two shared a third.
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

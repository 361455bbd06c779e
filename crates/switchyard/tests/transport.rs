//! Black-box: how the gateway reaches its upstreams. HTTPS against a certificate the system trusts
//! (here a test CA named by `SSL_CERT_FILE`), HTTP/2 when the upstream offers it by ALPN, a refused
//! certificate reported as the upstream's failure, and the proxy variables: CONNECT tunnels for HTTPS
//! (credentials in the CONNECT), absolute-form requests for plain HTTP (credentials in
//! `Proxy-Authorization`), and `NO_PROXY`; HTTP/2 with prior knowledge (`http2_prior_knowledge`), every
//! request multiplexed over one connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Gateway, KEY, TempDir, chat_body, joined_content};
use mock_upstream::proxy::TestProxy;
use mock_upstream::tls::TestCa;
use mock_upstream::{MockServer, MockState};
use reqwest::StatusCode;
use serde_json::Value;

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
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), run)
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

//! The HTTPS mock (test CA, ALPN h2/http1.1) and the forward proxy, driven by reqwest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mock_upstream::proxy::TestProxy;
use mock_upstream::tls::TestCa;
use mock_upstream::{HTTP_VERSION_HEADER, MockServer, MockState};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_stream::StreamExt as _;

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
}

/// A client that trusts only `ca` (no system roots, no proxy from the environment).
fn trusting(ca: &TestCa) -> reqwest::ClientBuilder {
    let cert = reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap();
    reqwest::Client::builder().tls_certs_only([cert])
}

async fn tls_mock(ca: &TestCa) -> MockServer {
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
    MockServer::start_tls(MockState::new(), &cert, &key)
        .await
        .unwrap()
}

/// The data payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn tls_mock_speaks_h2_to_a_client_trusting_the_ca() {
    let ca = TestCa::new();
    let mock = tls_mock(&ca).await;
    assert!(mock.base_url().starts_with("https://localhost:"));

    let client = trusting(&ca).no_proxy().build().unwrap();
    let r = client
        .post(mock.url("/v1/chat/completions"))
        .json(&chat("mock-ok", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()[HTTP_VERSION_HEADER], "HTTP/2.0");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(mock.state.count("POST /v1/chat/completions"), 1);
    assert_eq!(mock.state.last_http_version().as_deref(), Some("HTTP/2.0"));

    // HTTP/1.1 when the client offers only that; the IP SAN is valid too.
    let h1 = trusting(&ca).no_proxy().http1_only().build().unwrap();
    let url = format!("https://127.0.0.1:{}/v1/models", mock.addr.port());
    let r = h1.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[HTTP_VERSION_HEADER], "HTTP/1.1");
    assert_eq!(mock.state.last_http_version().as_deref(), Some("HTTP/1.1"));

    // A streamed answer arrives whole over HTTP/2.
    let r = client
        .post(mock.url("/v1/chat/completions"))
        .json(&chat("mock-ok+tokens=50", true))
        .send()
        .await
        .unwrap();
    let events = sse_data(&r.text().await.unwrap());
    assert_eq!(events.len(), 1 + 50 + 1 + 1); // role + tokens + finish + [DONE]
    assert_eq!(events.last().unwrap(), "[DONE]");

    mock.shutdown().await;
}

#[tokio::test]
async fn tls_mock_is_refused_by_a_client_without_the_ca() {
    let ca = TestCa::new();
    let mock = tls_mock(&ca).await;
    // Trusts another CA only.
    let other = TestCa::new();
    let client = trusting(&other).no_proxy().build().unwrap();
    let err = client.get(mock.url("/v1/models")).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // System roots do not include the test CA either.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(client.get(mock.url("/v1/models")).send().await.is_err());
    assert_eq!(mock.state.total(), 0);
}

#[tokio::test]
async fn plain_mock_reports_http1() {
    let mock = MockServer::start().await.unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client.get(mock.url("/v1/models")).send().await.unwrap();
    assert_eq!(mock.base_url(), format!("http://{}", mock.addr));
    assert_eq!(r.headers()[HTTP_VERSION_HEADER], "HTTP/1.1");
    // h2c with prior knowledge also works on the plain server.
    let h2c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2c.get(mock.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()[HTTP_VERSION_HEADER], "HTTP/2.0");
    assert_eq!(mock.state.last_http_version().as_deref(), Some("HTTP/2.0"));
}

#[tokio::test]
async fn http_proxy_forwards_absolute_form_and_streams() {
    let mock = MockServer::start().await.unwrap();
    let proxy = TestProxy::start().await.unwrap();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(proxy.url()).unwrap())
        .build()
        .unwrap();
    let url = mock.url("/v1/chat/completions");

    let r = client
        .post(&url)
        .json(&chat("mock-ok", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");

    // Streamed: 200 token chunks come through whole, on the same (kept-alive) client.
    let r = client
        .post(&url)
        .json(&chat("mock-ok+tokens=200", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = sse_data(&r.text().await.unwrap());
    assert_eq!(events.len(), 1 + 200 + 1 + 1);
    assert_eq!(events.last().unwrap(), "[DONE]");

    assert_eq!(proxy.forwarded(), vec![url.clone(), url.clone()]);
    assert!(proxy.connects().is_empty());
    // Keep-alive: both requests rode one client connection.
    assert_eq!(proxy.connections(), 1);

    // Relayed as it arrives: the mock sends 3 chunks then stalls, and they still get through.
    let r = client
        .post(&url)
        .json(&chat("mock-ok+tokens=10+hang_after=3", true))
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    let mut seen = String::new();
    let got_three = async {
        while seen.matches("data: ").count() < 3 {
            let chunk = stream.next().await.unwrap().unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    // The timeout only bounds a failure (a buffering proxy would never deliver them).
    tokio::time::timeout(Duration::from_secs(10), got_three)
        .await
        .expect("first chunks relayed while the upstream stalls");
    assert_eq!(mock.state.count("POST /v1/chat/completions"), 3);
    assert_eq!(proxy.forwarded().len(), 3);
}

#[tokio::test]
async fn https_proxy_tunnels_with_connect() {
    let ca = TestCa::new();
    let mock = tls_mock(&ca).await;
    let proxy = TestProxy::start().await.unwrap();
    let client = trusting(&ca)
        .proxy(reqwest::Proxy::https(proxy.url()).unwrap())
        .build()
        .unwrap();
    for _ in 0..2 {
        let r = client
            .post(mock.url("/v1/chat/completions"))
            .json(&chat("mock-ok+tokens=20", true))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[HTTP_VERSION_HEADER], "HTTP/2.0");
        let events = sse_data(&r.text().await.unwrap());
        assert_eq!(events.len(), 1 + 20 + 1 + 1);
    }
    // One tunnel, reused by the pooled HTTP/2 connection.
    assert_eq!(proxy.connects(), vec![format!("localhost:{}", mock.addr.port())]);
    assert!(proxy.forwarded().is_empty());
    assert_eq!(mock.state.count("POST /v1/chat/completions"), 2);
}

#[tokio::test]
async fn proxy_auth_is_required_when_configured() {
    let mock = MockServer::start().await.unwrap();
    let proxy = TestProxy::start_with_auth("user", "s3cret").await.unwrap();
    let url = mock.url("/v1/models");

    let anonymous = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(proxy.url()).unwrap())
        .build()
        .unwrap();
    let r = anonymous.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 407);
    assert!(r.headers().contains_key("proxy-authenticate"));

    let wrong = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(proxy.url_with_auth("user", "nope")).unwrap())
        .build()
        .unwrap();
    assert_eq!(wrong.get(&url).send().await.unwrap().status(), 407);
    assert_eq!(proxy.rejected(), 2);
    assert!(proxy.forwarded().is_empty());
    assert_eq!(mock.state.total(), 0);

    let authed = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://user:s3cret@{}", proxy.addr())).unwrap())
        .build()
        .unwrap();
    let r = authed.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(proxy.forwarded(), vec![url]);
    // The credentials are for the proxy only.
    assert_eq!(
        mock.state.last_request().unwrap().header("proxy-authorization"),
        None
    );

    // CONNECT is guarded too: a tunnel without credentials is refused.
    let ca = TestCa::new();
    let tls = tls_mock(&ca).await;
    let anonymous = trusting(&ca)
        .proxy(reqwest::Proxy::https(proxy.url()).unwrap())
        .build()
        .unwrap();
    assert!(anonymous.get(tls.url("/v1/models")).send().await.is_err());
    assert_eq!(proxy.rejected(), 3);
    let authed = trusting(&ca)
        .proxy(reqwest::Proxy::https(proxy.url_with_auth("user", "s3cret")).unwrap())
        .build()
        .unwrap();
    let r = authed.get(tls.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(proxy.connects(), vec![format!("localhost:{}", tls.addr.port())]);
}

#[tokio::test]
async fn binary_serves_https_with_given_certificate() {
    use tokio::io::AsyncBufReadExt as _;

    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&["localhost"]);
    let dir = std::env::temp_dir().join(format!("mock-upstream-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert_file)
        .arg("--tls-key")
        .arg(&key_file)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("mock-upstream listening on ")
        .unwrap()
        .to_string();
    assert!(base.starts_with("https://localhost:"), "{line}");

    let client = trusting(&ca).no_proxy().build().unwrap();
    let r = client.get(format!("{base}/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[HTTP_VERSION_HEADER], "HTTP/2.0");
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

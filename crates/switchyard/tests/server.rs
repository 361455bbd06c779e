//! Black-box: the connection layer. A client that never finishes its request head is disconnected;
//! shutdown lets an answer in flight finish and takes no new connection; a body that arrives slowly is
//! read whole, and the connection kept for the next request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, KEY, standard_config};
use futures::StreamExt;
use mock_upstream::MockServer;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(upstream: &str) -> String {
    standard_config(upstream).replacen(
        "max_body_bytes = 65536\n",
        "max_body_bytes = 65536\nheader_read_timeout_ms = 300\nshutdown_grace_ms = 10000\n",
        1,
    ) + "\n[models.gpt-second]\nprovider = \"mock\"\nmodel = \"mock-ok+delay=50+tokens=20\"\n"
}

fn addr(gw: &Gateway) -> String {
    gw.url.trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config(&mock.base_url())).await;
    let mut tcp = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: appl")
        .await
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    // The server closes the connection (whatever it says first); it must not wait for the client.
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was still open after 10 s");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}, before the timeout"
    );
    assert!(
        buf.is_empty() || buf.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    // A client that sends its heads in time is served, request after request on one connection; once
    // it has been idle for longer than the timeout, its connection is closed too.
    let mut tcp = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let head = read_answer(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let start = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "an idle connection was still open after 10 s");
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "closed after {:?}",
        start.elapsed()
    );
}

/// Reads one HTTP/1.1 answer with a `content-length` off `tcp`; its head.
async fn read_answer(tcp: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "closed mid-head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.unwrap();
    head
}

#[tokio::test]
async fn shutdown_lets_a_stream_finish_and_takes_no_new_connection() {
    let mock = MockServer::start().await.unwrap();
    let mut gw = Gateway::start(&config(&mock.base_url())).await;
    // A stream of 20 chunks, 50 ms apart: about a second.
    let resp = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(
            &json!({"model": "gpt-second", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    let pid = gw.pid();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "could not signal {pid}");
    // The listener closes: a new connection is refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if tokio::net::TcpStream::connect(addr(&gw)).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The stream in flight still ends as it should.
    let mut rest = first.to_vec();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(text.matches("data: ").count() >= 20, "{text}");
    let status = gw.wait(Duration::from_secs(10)).await;
    assert_eq!(status, Some(0), "exit status; stderr: {}", gw.stderr());
}

/// HTTP/2 with prior knowledge (the preface peeked at, not consumed) and HTTP/1.1 on the same port;
/// a client that sends only part of the preface and stops is disconnected like a slow head.
#[tokio::test]
async fn http2_with_prior_knowledge_and_http1_share_the_port() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config(&mock.base_url())).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for stream in [false, true] {
        let resp = h2
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&json!({"model": "gpt-mock", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        if stream {
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        } else {
            assert!(text.contains("\"choices\""), "{text}");
        }
    }
    let (status, _, _) = gw
        .chat(&json!({"model": "gpt-mock", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200);
    let mut tcp = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a half-sent preface held its connection for 10 s");
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "closed after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_request_body_sent_slowly_in_parts_is_answered() {
    // The body arrives in four parts 100 ms apart; the answer comes once it is whole.
    let (_mock, gw) = Gateway::with_mock().await;
    let text = "word ".repeat(11_000); // within the test config's 64 KiB body limit
    let body = json!({"model": "gpt-mock", "messages": [{"role": "user", "content": text}]}).to_string();
    let mut tcp = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        KEY,
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    for part in body.as_bytes().chunks(body.len() / 4 + 1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tcp.write_all(part).await.unwrap();
    }
    let head = tokio::time::timeout(Duration::from_secs(20), read_answer(&mut tcp))
        .await
        .expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The connection is kept alive: a second request on it is answered too.
    let small = json!({"model": "gpt-mock", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let second = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{small}",
        KEY,
        small.len()
    );
    tcp.write_all(second.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(20), read_answer(&mut tcp))
        .await
        .expect("a second answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// Two requests written at once (pipelined): the second waits in the socket while the first is
/// answered. Both are answered, in order, and the connection's hang-up watch, which sees the second
/// request waiting, leaves it to hyper and does not spin on it meanwhile.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order_without_spinning() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(
        &(config(&mock.base_url())
            + "\n[models.gpt-late]\nprovider = \"mock\"\nmodel = \"mock-ok+ttfb=1000\"\n"),
    )
    .await;
    // The second request is larger than hyper's read buffer, so that most of it waits in the
    // socket itself, where the watch sees it.
    let request = |model: &str, words: usize| {
        let text = "word ".repeat(words);
        let body = json!({"model": model, "messages": [{"role": "user", "content": text}]}).to_string();
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut tcp = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", gw.pid())).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        // utime and stime, in clock ticks (fields 14 and 15 of the whole line).
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = cpu();
    tcp.write_all((request("gpt-late", 1) + &request("gpt-mock", 8_000)).as_bytes())
        .await
        .unwrap();
    for model in ["gpt-late", "gpt-mock"] {
        let head = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut tcp))
            .await
            .expect("an answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{model}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("x-switchyard-model: {model}")),
            "answers out of order; expected {model}: {head}"
        );
    }
    // A second's wait for the slow answer: a watch spinning on the waiting request would have used
    // most of it (clock ticks are 10 ms).
    let used = cpu() - before;
    assert!(used < 40, "the gateway used {used} ticks of CPU over a 1 s wait");
}

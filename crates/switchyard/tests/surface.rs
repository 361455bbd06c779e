//! Black-box: path aliases, the models endpoints and `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Gateway, assert_envelope, chat_body, send};
use serde_json::json;

#[tokio::test]
async fn chat_path_aliases_reach_the_same_handler() {
    let (mock, gw) = Gateway::with_mock().await;
    for path in [
        "/v1/chat/completions",
        "/api/openai/chat/completions",
        "/api/openai/v1/chat/completions",
        "/v1/v1/chat/completions",
        "/chat/completions",
        "/v1/chat/completions/",
    ] {
        let (status, headers, body) = send(gw.post(path).json(&chat_body("gpt-mock", path))).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["model"], json!("gpt-mock"), "{path}");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            json!(format!("echo: {path}"))
        );
        assert!(headers.contains_key("x-request-id"), "{path}");
    }
    assert_eq!(mock.state.count("POST /v1/chat/completions"), 6);
    // Aliases are behind auth too.
    let (status, _, body) = send(
        gw.client
            .post(gw.url("/api/openai/v1/chat/completions"))
            .json(&chat_body("gpt-mock", "hi")),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_envelope(&body, "authentication_error", None);
}

#[tokio::test]
async fn models_are_listed_under_every_alias() {
    let (mock, gw) = Gateway::with_mock().await;
    for path in [
        "/v1/models",
        "/api/openai/v1/models",
        "/api/openai/models",
        "/v1/v1/models",
    ] {
        let (status, _, body) = send(gw.get(path)).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["object"], json!("list"), "{path}");
        let ids: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&"gpt-mock"), "{path}: {ids:?}");
        assert!(ids.contains(&"gpt-tools"), "{path}: {ids:?}");
        assert!(
            !ids.iter().any(|id| id.contains('+') || *id == "mock-ok"),
            "only public names are listed: {ids:?}"
        );
        for m in body["data"].as_array().unwrap() {
            assert_eq!(m["object"], json!("model"), "{m}");
            assert!(m["created"].is_u64(), "{m}");
            assert!(m["owned_by"].is_string(), "{m}");
        }
    }
    // The list is the gateway's own, not a relay of the upstream's.
    assert_eq!(mock.state.total(), 0);
}

#[tokio::test]
async fn one_model_by_id_and_404_for_an_unknown_id() {
    let (_mock, gw) = Gateway::with_mock().await;
    for path in ["/v1/models/gpt-mock", "/api/openai/v1/models/gpt-mock"] {
        let (status, headers, body) = send(gw.get(path)).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["id"], json!("gpt-mock"));
        assert_eq!(body["object"], json!("model"));
        assert!(headers.contains_key("x-request-id"));
    }
    let (status, headers, body) = send(gw.get("/v1/models/no-such-model")).await;
    assert_eq!(status, 404, "{body}");
    let err = assert_envelope(&body, "invalid_request_error", Some("model"));
    assert_eq!(err["code"], json!("model_not_found"));
    assert!(headers.contains_key("x-request-id"));
    let (status, _, body) = send(gw.client.get(gw.url("/v1/models/gpt-mock"))).await;
    assert_eq!(status, 401, "{body}");
}

/// The value of the first sample line of `name` whose labels include all of `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (lbls, value) = if let Some(r) = rest.strip_prefix('{') {
            let (l, v) = r.split_once('}')?;
            (l, v)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            return None;
        };
        labels
            .iter()
            .all(|(k, v)| lbls.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[tokio::test]
async fn metrics_expose_requests_latency_and_in_flight() {
    let (_mock, gw) = Gateway::with_mock().await;
    let (mut prompt, mut completion) = (0.0, 0.0);
    for _ in 0..3 {
        let (status, _, body) = gw.chat(&chat_body("gpt-mock", "hi")).await;
        assert_eq!(status, 200);
        prompt += body["usage"]["prompt_tokens"].as_f64().unwrap();
        completion += body["usage"]["completion_tokens"].as_f64().unwrap();
    }
    let (status, _, _) = gw.chat(&chat_body("gpt-429", "hi")).await;
    assert_eq!(status, 429);
    let (status, _, _) = gw.chat(&chat_body("no-such-model", "hi")).await;
    assert_eq!(status, 404);

    // /metrics needs no key and speaks the Prometheus text format.
    let resp = gw.client.get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let m = resp.text().await.unwrap();
    let route = ("route", "/v1/chat/completions");
    assert_eq!(
        sample(
            &m,
            "switchyard_requests_total",
            &[route, ("model", "gpt-mock"), ("status", "200")]
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "switchyard_requests_total",
            &[route, ("model", "gpt-429"), ("status", "429")]
        ),
        Some(1.0),
        "{m}"
    );
    assert!(
        sample(&m, "switchyard_requests_total", &[route, ("status", "404")]).is_some(),
        "{m}"
    );
    assert!(m.contains("# TYPE switchyard_requests_total counter"), "{m}");
    assert!(
        m.contains("# TYPE switchyard_request_duration_seconds histogram"),
        "{m}"
    );
    assert!(
        sample(
            &m,
            "switchyard_request_duration_seconds_bucket",
            &[route, ("model", "gpt-mock"), ("le", "+Inf")]
        )
        .is_some_and(|v| v >= 3.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "switchyard_request_duration_seconds_count",
            &[route, ("model", "gpt-mock")]
        ),
        Some(3.0),
        "{m}"
    );
    assert!(m.contains("# TYPE switchyard_requests_in_flight gauge"), "{m}");
    assert_eq!(
        sample(&m, "switchyard_requests_in_flight", &[route]),
        Some(0.0),
        "{m}"
    );
    // Each answer's tokens and time to first token, under its model and provider.
    let served = [("model", "gpt-mock"), ("provider", "mock")];
    for (direction, want) in [("input", prompt), ("output", completion)] {
        let labels = [served[0], served[1], ("direction", direction)];
        assert_eq!(sample(&m, "switchyard_tokens_total", &labels), Some(want), "{m}");
    }
    assert!(prompt > 0.0 && completion > 0.0);
    assert_eq!(
        sample(
            &m,
            "switchyard_time_to_first_token_seconds_count",
            &[("model", "gpt-mock")]
        ),
        Some(3.0),
        "{m}"
    );
}

#[tokio::test]
async fn in_flight_counts_an_open_stream() {
    let (_mock, gw) = Gateway::with_mock().await;
    let mut body = chat_body("gpt-slow", "hi");
    body["stream"] = json!(true);
    let resp = gw.post("/v1/chat/completions").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let route = ("route", "/v1/chat/completions");
    let m = gw.metrics().await;
    assert_eq!(
        sample(&m, "switchyard_requests_in_flight", &[route]),
        Some(1.0),
        "{m}"
    );
    drop(resp);
    let start = std::time::Instant::now();
    loop {
        let m = gw.metrics().await;
        if sample(&m, "switchyard_requests_in_flight", &[route]) == Some(0.0) {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(3),
            "in-flight never went back to 0: {m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The standard config with CORS granted to one origin, `https://app.example.com`.
fn cors_config(upstream: &str) -> String {
    common::standard_config(upstream).replace(
        "max_body_bytes = 65536",
        "max_body_bytes = 65536\ncors_origins = [\"https://app.example.com\"]",
    )
}

#[tokio::test]
async fn cors_answers_preflights_and_marks_answers_for_listed_origins_only() {
    let mock = mock_upstream::MockServer::start().await.unwrap();
    let gw = Gateway::start(&cors_config(&mock.base_url())).await;
    // A preflight needs no key: browsers send none.
    let r = gw
        .client
        .request(reqwest::Method::OPTIONS, gw.url("/v1/chat/completions"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert_eq!(h["access-control-allow-headers"], "authorization, content-type");
    // Another origin gets no grant.
    let r = gw
        .client
        .request(reqwest::Method::OPTIONS, gw.url("/v1/chat/completions"))
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // The call itself carries the grant and exposes the gateway's headers; errors too.
    let (st, h, _) = send(
        gw.post("/v1/chat/completions")
            .header("origin", "https://app.example.com")
            .json(&common::chat_body("gpt-mock", "hi")),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert!(
        h["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    let (st, h, _) = send(
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .header("origin", "https://app.example.com")
            .json(&common::chat_body("gpt-mock", "hi")),
    )
    .await;
    assert_eq!(st, 401);
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    // Off by default: no CORS headers, and OPTIONS is just a method the route does not take.
    let (_, plain) = Gateway::with_mock().await;
    let r = plain
        .client
        .request(reqwest::Method::OPTIONS, plain.url("/v1/chat/completions"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

/// An answer's header map is made with room for every header the gateway sets (hyper keeps it for the
/// connection's life: one that grows copies its table on every request). The fullest answers: global
/// limits (the rate headers), CORS for a listed origin, whole and streamed.
#[tokio::test]
async fn answers_carry_no_more_headers_than_their_map_is_made_for() {
    let mock = mock_upstream::MockServer::start().await.unwrap();
    let cfg = cors_config(&mock.base_url())
        + "\n[limits]\nmax_requests_per_minute = 1000\nmax_tokens_per_minute = 1000000\n";
    let gw = Gateway::start(&cfg).await;
    // The headers hyper writes itself, outside the map.
    let own = |h: &reqwest::header::HeaderMap| {
        h.keys()
            .filter(|k| {
                !matches!(
                    k.as_str(),
                    "date" | "content-length" | "transfer-encoding" | "connection"
                )
            })
            .count()
    };
    for stream in [false, true] {
        let mut body = chat_body("gpt-mock", "hi");
        body["stream"] = json!(stream);
        let r = gw
            .post("/v1/chat/completions")
            .header("origin", "https://app.example.com")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers().clone();
        let _ = r.bytes().await.unwrap();
        assert_eq!(h["x-ratelimit-limit-requests"], "1000");
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert!(h.contains_key("x-switchyard-provider") && h.contains_key("x-request-id"));
        let n = own(&h);
        assert!(
            n <= gateway::http::response::ANSWER_HEADERS,
            "stream={stream}: {n} headers, more than the map is made for: {h:?}"
        );
    }
}

#[tokio::test]
async fn global_limits_admit_up_to_the_limit_and_say_so_in_headers() {
    let mock = mock_upstream::MockServer::start().await.unwrap();
    let cfg = common::standard_config(&mock.base_url())
        + "\n[limits]\nmax_requests_per_minute = 3\nmax_tokens_per_minute = 400\n";
    let gw = Gateway::start(&cfg).await;
    for left in [2, 1, 0] {
        let (st, h, body) = gw.chat(&chat_body("gpt-mock", "hi")).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(h["x-ratelimit-limit-requests"], "3");
        assert_eq!(h["x-ratelimit-remaining-requests"], left.to_string().as_str());
        assert_eq!(h["x-ratelimit-limit-tokens"], "400");
        assert!(h["x-ratelimit-reset-requests"].to_str().unwrap().ends_with('s'));
    }
    let (st, h, body) = gw.chat(&chat_body("gpt-mock", "hi")).await;
    assert_eq!(st, 429, "{body}");
    assert_envelope(&body, "rate_limit_error", None);
    assert_eq!(body["error"]["code"], json!("rate_limit_requests"));
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    // The upstream never saw the refused request.
    assert_eq!(mock.state.count("POST /v1/chat/completions"), 3);
    // In the Anthropic dialect, the same refusal.
    let (st, _, body) = send(gw.post("/v1/messages").json(&json!({
        "model": "gpt-mock", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]
    })))
    .await;
    assert_eq!(st, 429);
    assert_eq!(body["error"]["type"], json!("rate_limit_error"), "{body}");

    // Tokens: a request that asks for more output than the minute has left is refused up front.
    let gw = Gateway::start(
        &(common::standard_config(&mock.base_url()) + "\n[limits]\nmax_tokens_per_minute = 300\n"),
    )
    .await;
    let mut big = chat_body("gpt-mock", "hi");
    big["max_tokens"] = json!(250);
    let (st, _, body) = gw.chat(&big).await;
    assert_eq!(st, 200, "{body}");
    // Its reservation settled to the real (small) usage, so the next one fits too.
    let (st, _, body) = gw.chat(&big).await;
    assert_eq!(st, 200, "{body}");
    big["max_tokens"] = json!(1000);
    let (st, _, body) = gw.chat(&big).await;
    assert_eq!(st, 429, "{body}");
    assert_eq!(body["error"]["code"], json!("rate_limit_tokens"));
}

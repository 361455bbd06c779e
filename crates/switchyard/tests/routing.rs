//! Routing through the real binary against several `mock-upstream` instances: fallback for every
//! failure mode, the circuit breaker, the strategies, `auto` tiers, the deadline, per-request routing
//! fields, `routing_metadata`, `/vhealth` and `/health`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Gateway, KEY, chat_body, closed_port, send};
use mock_upstream::MockServer;
use serde_json::{Value, json};

const CHAT: &str = "POST /v1/chat/completions";

/// A port that accepts connections and closes them without an answer.
fn resetting_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            drop(s);
        }
    });
    port
}

fn provider(name: &str, base: &str, extra: &str) -> String {
    format!("[providers.{name}]\nkind = \"openai\"\nbase_url = \"{base}/v1\"\n{extra}\n")
}

fn model(name: &str, extra: &str, deployments: &[(&str, &str, &str)]) -> String {
    let mut s = format!("[models.{name}]\n{extra}\n");
    for (p, m, more) in deployments {
        s.push_str(&format!(
            "[[models.{name}.deployments]]\nprovider = \"{p}\"\nmodel = \"{m}\"\n{more}\n"
        ));
    }
    s
}

fn head(routing: &str) -> String {
    format!(
        "[server]\naddress = \"127.0.0.1:0\"\n[auth]\nmaster_key = \"{KEY}\"\n[routing]\nhealth_check_interval_ms = 0\n{routing}\n"
    )
}

fn attempts(body: &Value) -> Vec<(String, u64)> {
    body["routing_metadata"]["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempts in {body}"))
        .iter()
        .map(|a| {
            (
                a["deployment"].as_str().unwrap().to_string(),
                a["status"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The last JSON chunk of a stream (before `[DONE]`).
fn last_chunk(frames: &[String]) -> Value {
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"), "{frames:?}");
    serde_json::from_str(&frames[frames.len() - 2]).unwrap()
}

async fn stream(
    gw: &Gateway,
    body: &Value,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Vec<String>) {
    let mut body = body.clone();
    body["stream"] = json!(true);
    gw.chat_stream(&body).await
}

#[tokio::test]
async fn every_failure_mode_falls_back_before_the_first_byte() {
    let mock = MockServer::start().await.unwrap();
    let base = mock.base_url();
    let reset = format!("http://127.0.0.1:{}", resetting_port());
    let refused = format!("http://127.0.0.1:{}", closed_port());
    let mut cfg = head("first_byte_timeout_ms = 400\ntimeout_ms = 10000\nbackoff_ms = 10");
    cfg += &provider("m", &base, "");
    cfg += &provider("reset", &reset, "");
    cfg += &provider("refused", &refused, "");
    // (model, failing deployment's provider, its upstream model, the status its attempt records)
    let cases: &[(&str, &str, &str, u64)] = &[
        ("fb-500", "m", "mock-ok+status=500", 500),
        ("fb-429", "m", "mock-ok+status=429+retry_after=1", 429),
        ("fb-hang", "m", "mock-ok+hang", 504),
        ("fb-slow", "m", "mock-ok+ttfb=1500", 504),
        ("fb-html", "m", "mock-ok+html", 502),
        ("fb-reset", "reset", "mock-ok", 502),
        ("fb-refused", "refused", "mock-ok", 502),
    ];
    for (name, p, m, _) in cases {
        cfg += &model(name, "", &[(p, m, ""), ("m", "mock-ok+tokens=4", "")]);
    }
    let gw = Gateway::start(&cfg).await;
    for (name, p, m, status) in cases {
        let failing = format!("{p}/{m}");
        // JSON.
        let (st, h, body) = gw.chat(&chat_body(name, "hello there")).await;
        assert_eq!(st, 200, "{name}: {body}");
        assert_eq!(
            attempts(&body),
            vec![(failing.clone(), *status), ("m/mock-ok+tokens=4".into(), 200)],
            "{name}: {body}"
        );
        assert_eq!(h["x-switchyard-attempts"], "2", "{name}");
        assert_eq!(h["x-switchyard-upstream-model"], "mock-ok+tokens=4", "{name}");
        assert_eq!(
            body["routing_metadata"]["provider_model_id"],
            json!("mock-ok+tokens=4")
        );
        assert_eq!(body["model"], json!(name));
        assert!(body["choices"][0]["message"]["content"].is_string(), "{body}");
        // Streaming: the fallback happens before anything reached the client.
        let (st, h, frames) = stream(&gw, &chat_body(name, "hello there")).await;
        assert_eq!(st, 200, "{name}: {frames:?}");
        // A 429 bans its deployment until its Retry-After: the second request does not try it.
        let want: Vec<(String, u64)> = if *status == 429 {
            vec![("m/mock-ok+tokens=4".into(), 200)]
        } else {
            vec![(failing.clone(), *status), ("m/mock-ok+tokens=4".into(), 200)]
        };
        assert_eq!(
            h["x-switchyard-attempts"],
            want.len().to_string().as_str(),
            "{name}"
        );
        assert!(!common::joined_content(&frames).is_empty(), "{name}: {frames:?}");
        let has_error = |f: &String| serde_json::from_str::<Value>(f).is_ok_and(|v| v.get("error").is_some());
        assert!(!frames.iter().any(has_error), "{name}: {frames:?}");
        let last = last_chunk(&frames);
        assert_eq!(attempts(&last), want, "{name}: {last}");
        // It rides on the finish chunk: no extra chunk for a client that did not ask for usage.
        assert_eq!(last["choices"][0]["finish_reason"], json!("stop"), "{last}");
        assert_eq!(
            frames.iter().filter(|f| f.contains("routing_metadata")).count(),
            1
        );
    }
}

#[tokio::test]
async fn invalid_requests_are_not_retried_and_mid_stream_failures_are_not_replayed() {
    let mock = MockServer::start().await.unwrap();
    let mut cfg = head("");
    cfg += &provider("m", &mock.base_url(), "");
    cfg += &model(
        "bad",
        "",
        &[("m", "mock-ok+status=400", ""), ("m", "mock-ok", "")],
    );
    cfg += &model(
        "cut",
        "",
        &[("m", "mock-ok+drop_after=2+tokens=10", ""), ("m", "mock-ok", "")],
    );
    let gw = Gateway::start(&cfg).await;
    let (st, h, body) = gw.chat(&chat_body("bad", "hi")).await;
    assert_eq!(st, 400, "{body}");
    assert!(!h["x-request-id"].is_empty());
    assert_eq!(
        mock.state.count(CHAT),
        1,
        "a 400 is the request's fault: not retried"
    );
    // After the first byte, a failure ends the stream with an error event instead of a second answer.
    mock.state.reset();
    let (st, _, frames) = stream(&gw, &chat_body("cut", "hi")).await;
    assert_eq!(st, 200);
    assert!(
        frames
            .iter()
            .any(|f| serde_json::from_str::<Value>(f).is_ok_and(|v| v.get("error").is_some())),
        "{frames:?}"
    );
    assert_eq!(mock.state.count(CHAT), 1);
}

#[tokio::test]
async fn the_breaker_opens_half_opens_and_closes() {
    let a = MockServer::start().await.unwrap();
    let b = MockServer::start().await.unwrap();
    let mut cfg = head("[routing.breaker]\nfailures = 3\ncooldown_ms = 1500");
    cfg += &provider("a", &a.base_url(), "");
    cfg += &provider("b", &b.base_url(), "");
    cfg += &model("br", "", &[("a", "mock-ok", ""), ("b", "mock-ok", "")]);
    let gw = Gateway::start(&cfg).await;
    a.state
        .set_defaults([("status".to_string(), "500".to_string())].into());
    for i in 0..10 {
        let (st, _, body) = gw.chat(&chat_body("br", "hi")).await;
        assert_eq!(st, 200, "{i}: {body}");
        assert_eq!(body["routing_metadata"]["provider"], json!("b"));
    }
    assert_eq!(
        a.state.count(CHAT),
        3,
        "after 3 failures the open circuit keeps requests away"
    );
    let (_, _, vh) = send(gw.get("/vhealth").header("accept", "application/json")).await;
    let da = vh["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deployment"] == "a/mock-ok")
        .unwrap()
        .clone();
    assert_eq!(da["state"], json!("open"), "{da}");
    // The upstream recovers; after the cooldown one probe goes through and closes the circuit.
    a.state.set_defaults(Default::default());
    tokio::time::sleep(Duration::from_millis(1600)).await;
    for _ in 0..5 {
        let (st, _, body) = gw.chat(&chat_body("br", "hi")).await;
        assert_eq!(st, 200);
        assert_eq!(body["routing_metadata"]["provider"], json!("a"), "{body}");
    }
    assert_eq!(a.state.count(CHAT), 8);
    let (_, _, vh) = send(gw.get("/vhealth").header("accept", "application/json")).await;
    let da = vh["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deployment"] == "a/mock-ok")
        .unwrap()
        .clone();
    assert_eq!(da["state"], json!("healthy"), "{da}");
    // The HTML page shows the same deployments.
    let html = gw.get("/vhealth").send().await.unwrap().text().await.unwrap();
    assert!(
        html.contains("<table") && html.contains("a/mock-ok") && html.contains("b/mock-ok"),
        "{html}"
    );
}

#[tokio::test]
async fn health_is_503_when_nothing_can_serve() {
    let a = MockServer::start().await.unwrap();
    let mut cfg = head("max_attempts = 1\n[routing.breaker]\nfailures = 2\ncooldown_ms = 60000");
    cfg += &provider("a", &a.base_url(), "");
    cfg += &model("only", "", &[("a", "mock-ok+status=503", "")]);
    let gw = Gateway::start(&cfg).await;
    let (st, _, _) = send(gw.client.get(gw.url("/health"))).await;
    assert_eq!(st, 200);
    for _ in 0..2 {
        let (st, _, _) = gw.chat(&chat_body("only", "hi")).await;
        assert_eq!(st, 503);
    }
    // Open now: answered by the gateway itself, with when to come back.
    let (st, h, body) = gw.chat(&chat_body("only", "hi")).await;
    assert_eq!(st, 503, "{body}");
    assert_eq!(body["error"]["code"], json!("no_healthy_deployment"), "{body}");
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 50);
    assert_eq!(a.state.count(CHAT), 2);
    let (st, _, body) = send(gw.client.get(gw.url("/health"))).await;
    assert_eq!(st, 503, "{body}");
}

/// Sends `n` chat requests with at most `par` in flight; returns how many each provider served.
async fn spread(gw: &Gateway, model: &str, n: usize, par: usize) -> HashMap<String, usize> {
    use futures::StreamExt;
    let results: Vec<String> = futures::stream::iter(0..n)
        .map(|_| async {
            let (st, _, body) = gw.chat(&chat_body(model, "hi")).await;
            assert_eq!(st, 200, "{body}");
            body["routing_metadata"]["provider"].as_str().unwrap().to_string()
        })
        .buffer_unordered(par)
        .collect()
        .await;
    let mut counts = HashMap::new();
    for p in results {
        *counts.entry(p).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn strategies_weighted_latency_cost_and_least_busy() {
    let a = MockServer::start().await.unwrap();
    let b = MockServer::start().await.unwrap();
    let mut cfg = head("");
    cfg += &provider("a", &a.base_url(), "");
    cfg += &provider("b", &b.base_url(), "");
    cfg += &model(
        "w",
        "strategy = \"weighted\"",
        &[
            ("a", "mock-ok+tokens=1", "weight = 3"),
            ("b", "mock-ok+tokens=1", "weight = 1"),
        ],
    );
    cfg += &model(
        "lat",
        "strategy = \"latency\"",
        &[("a", "mock-ok+ttfb=120", ""), ("b", "mock-ok+ttfb=5", "")],
    );
    cfg += &model(
        "cheap",
        "strategy = \"cost\"",
        &[
            ("a", "mock-ok", "price = { input = 10.0, output = 30.0 }"),
            ("b", "mock-ok", "price = { input = 1.0, output = 2.0 }"),
        ],
    );
    cfg += &model(
        "lb",
        "strategy = \"least-busy\"",
        &[("a", "mock-ok+ttfb=400", ""), ("b", "mock-ok+ttfb=400", "")],
    );
    let gw = Gateway::start(&cfg).await;

    // Weighted 3:1 within ±5% over 2,000 requests.
    let c = spread(&gw, "w", 2000, 16).await;
    let share = c["a"] as f64 / 2000.0;
    assert!((share - 0.75).abs() <= 0.05 * 0.75, "{c:?}");

    // Latency: after both are measured, the faster one takes (nearly) everything.
    spread(&gw, "lat", 10, 1).await;
    let c = spread(&gw, "lat", 30, 1).await;
    assert!(c.get("b").copied().unwrap_or(0) >= 26, "{c:?}");

    // Cost: the cheaper deployment, and the cost is reported from its price.
    let (_, h, body) = gw.chat(&chat_body("cheap", "one two three four")).await;
    assert_eq!(body["routing_metadata"]["provider"], json!("b"), "{body}");
    assert_eq!(body["routing_metadata"]["routing_strategy"], json!("cost"));
    let u = &body["usage"];
    let expect =
        (u["prompt_tokens"].as_f64().unwrap() * 1.0 + u["completion_tokens"].as_f64().unwrap() * 2.0) / 1e6;
    let usd = body["routing_metadata"]["cost"]["usd"].as_f64().unwrap();
    assert!((usd - expect).abs() < 1e-9 && usd > 0.0, "{usd} vs {expect}");
    assert!(h.contains_key("x-switchyard-cost-usd"));

    // Least-busy: staggered requests that each hold a deployment for 400 ms spread evenly.
    let mut tasks = Vec::new();
    for i in 0..12u64 {
        let client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 30)).await;
            let r = client
                .post(url)
                .bearer_auth(KEY)
                .json(&chat_body("lb", "hi"))
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v["routing_metadata"]["provider"].as_str().unwrap().to_string()
        }));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        *counts.entry(t.await.unwrap()).or_default() += 1;
    }
    assert!(
        counts.get("a").copied().unwrap_or(0).abs_diff(6) <= 1,
        "in-flight balanced: {counts:?}"
    );
}

#[tokio::test]
async fn auto_prefers_the_local_tier_and_falls_back_to_the_cloud() {
    let near = MockServer::start().await.unwrap();
    let far = MockServer::start().await.unwrap();
    let mut cfg = head("backoff_ms = 10");
    cfg += &provider("near", &near.base_url(), "tier = \"local\"");
    cfg += &provider("far", &far.base_url(), "");
    cfg += "[models.small]\nprovider = \"near\"\nmodel = \"mock-ok\"\nsupports = { tools = false }\n";
    cfg += "[models.big]\nprovider = \"far\"\nmodel = \"mock-ok\"\n";
    let gw = Gateway::start(&cfg).await;
    let (st, h, body) = gw.chat(&chat_body("auto", "hi")).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["routing_metadata"]["tier"], json!("local"), "{body}");
    assert_eq!(body["model"], json!("small"));
    assert_eq!(h["x-switchyard-model"], "small");
    // Tools: the local tier cannot serve them, the cloud can.
    let mut tools = chat_body("auto", "weather?");
    tools["tools"] =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let (st, _, body) = gw.chat(&tools).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["routing_metadata"]["tier"], json!("cloud"));
    assert_eq!(body["model"], json!("big"));
    // The local tier down: the cloud answers, and the attempts say what happened.
    near.state
        .set_defaults([("status".to_string(), "500".to_string())].into());
    let (st, _, body) = gw.chat(&chat_body("auto", "hi")).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["routing_metadata"]["tier"], json!("cloud"));
    assert_eq!(attempts(&body)[0], ("near/mock-ok".to_string(), 500));
    // `auto` is listed.
    let (_, _, models) = send(gw.get("/v1/models")).await;
    let auto = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "auto")
        .unwrap()
        .clone();
    assert_eq!(auto["tiers"], json!(["local", "cloud"]));
}

#[tokio::test]
async fn the_deadline_holds_with_every_upstream_hanging() {
    let mock = MockServer::start().await.unwrap();
    let mut cfg = head("first_byte_timeout_ms = 300\nmax_attempts = 10");
    cfg += &provider("m", &mock.base_url(), "");
    cfg += &model(
        "hang",
        "",
        &[
            ("m", "mock-ok+hang", ""),
            ("m", "mock-ok+hang+x=2", ""),
            ("m", "mock-ok+hang+x=3", ""),
        ],
    );
    let gw = Gateway::start(&cfg).await;
    for deadline in [800u64, 250] {
        let t = Instant::now();
        let (st, _, body) = send(
            gw.post("/v1/chat/completions")
                .header("x-switchyard-timeout-ms", deadline.to_string())
                .json(&chat_body("hang", "hi")),
        )
        .await;
        let took = t.elapsed().as_millis() as u64;
        assert_eq!(st, 504, "{body}");
        assert!(
            took >= deadline.saturating_sub(20) && took <= deadline + 100,
            "{took} ms for {deadline}"
        );
    }
}

#[tokio::test]
async fn per_request_routing_fields() {
    let a = MockServer::start().await.unwrap();
    let b = MockServer::start().await.unwrap();
    let mut cfg = head("");
    cfg += &provider("pa", &a.base_url(), "");
    cfg += &provider("pb", &b.base_url(), "");
    cfg += &model(
        "two",
        "",
        &[
            ("pa", "mock-ok", "price = { input = 5.0, output = 15.0 }"),
            ("pb", "mock-ok", "price = { input = 0.5, output = 1.5 }"),
        ],
    );
    cfg += "[models.broken]\nprovider = \"pa\"\nmodel = \"mock-ok+status=500\"\n";
    cfg += "[models.other]\nprovider = \"pb\"\nmodel = \"mock-ok+x=other\"\nprice = { input = 0.1, output = 0.2 }\n";
    let gw = Gateway::start(&cfg).await;
    let served = |body: &Value| {
        body["routing_metadata"]["provider"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    };
    let req = |extra: Value| {
        let mut b = chat_body("two", "hi");
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };

    // `models`: an ordered fallback list (with `model` first, or on its own).
    let mut body = json!({"models": ["broken", "other"], "messages": [{"role": "user", "content": "hi"}]});
    let (st, _, r) = gw.chat(&body).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["model"], json!("other"));
    assert_eq!(r["routing_metadata"]["model_canonical"], json!("other"));
    assert_eq!(attempts(&r).first().map(|a| a.1), Some(500));
    body["model"] = json!("two");
    let (_, _, r) = gw.chat(&body).await;
    assert_eq!(r["model"], json!("two"));
    // The routing fields never reach the upstream.
    let sent = b.state.last_request().or(a.state.last_request()).unwrap();
    assert!(
        sent.body.get("models").is_none() && sent.body.get("provider").is_none(),
        "{:?}",
        sent.body
    );

    // `provider`: order, only, ignore, sort, max_price, allow_fallbacks.
    let (_, _, r) = gw.chat(&req(json!({"provider": {"order": ["pb"]}}))).await;
    assert_eq!(served(&r), "pb");
    let (_, _, r) = gw.chat(&req(json!({"provider": {"only": ["pa"]}}))).await;
    assert_eq!(served(&r), "pa");
    let (_, _, r) = gw.chat(&req(json!({"provider": {"ignore": ["pa"]}}))).await;
    assert_eq!(served(&r), "pb");
    let (_, _, r) = gw.chat(&req(json!({"provider": {"sort": "price"}}))).await;
    assert_eq!(served(&r), "pb");
    let (_, _, r) = gw
        .chat(&req(json!({"provider": {"max_price": {"prompt": 1.0}}})))
        .await;
    assert_eq!(served(&r), "pb");
    let (st, _, r) = gw
        .chat(&req(json!({"provider": {"max_price": {"prompt": 0.01}}})))
        .await;
    assert_eq!(st, 400, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_price.prompt"),
        "{r}"
    );
    let (st, _, r) = gw.chat(&req(json!({"provider": {"sort": "vibes"}}))).await;
    assert_eq!(
        (st.as_u16(), r["error"]["param"].clone()),
        (400, json!("provider.sort"))
    );
    let (st, _, r) = gw
        .chat(
            &json!({"models": ["broken", "other"], "provider": {"allow_fallbacks": false},
                      "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(st, 502, "no fallback allowed: {r}");

    // `gateway`: pool mode with a strategy across models; constraints; `model` with `gateway.models`.
    let g = json!({"gateway": {"models": ["two", "other"], "mode": "pool", "routing": {"strategy": "cost"}},
                   "messages": [{"role": "user", "content": "hi"}]});
    let (st, _, r) = gw.chat(&g).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        r["routing_metadata"]["provider_model_id"],
        json!("mock-ok+x=other"),
        "{r}"
    );
    let g = json!({"gateway": {"models": ["two"], "routing": {"exclude": ["pb"], "allow_fallbacks": false}},
                   "messages": [{"role": "user", "content": "hi"}]});
    let (_, _, r) = gw.chat(&g).await;
    assert_eq!(served(&r), "pa");
    let g = json!({"gateway": {"models": ["two"], "routing": {"max_cost_per_1m": 0.001}},
                   "messages": [{"role": "user", "content": "hi"}]});
    let (st, _, r) = gw.chat(&g).await;
    assert_eq!(st, 400);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_cost_per_1m"),
        "{r}"
    );
    let mut both = g.clone();
    both["model"] = json!("two");
    let (st, _, r) = gw.chat(&both).await;
    assert_eq!(
        (st.as_u16(), r["error"]["param"].clone()),
        (400, json!("gateway.models"))
    );

    // Suffixes: `:cost` picks the cheaper; a name with two colons is a name.
    let (st, _, r) = gw.chat(&chat_body("two:cost", "hi")).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(served(&r), "pb");
    assert_eq!(r["routing_metadata"]["routing_strategy"], json!("cost"));
    let (st, _, r) = gw.chat(&chat_body("two:nitro", "hi")).await;
    assert_eq!(
        (st.as_u16(), r["routing_metadata"]["routing_strategy"].clone()),
        (200, json!("throughput"))
    );
    let (st, _, _) = gw.chat(&chat_body("two:cost:x", "hi")).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn the_anthropic_surface_says_it_in_headers_and_the_body_switch_turns_metadata_off() {
    let mock = MockServer::start().await.unwrap();
    let mut cfg = head("metadata_in_body = false\nbackoff_ms = 10");
    cfg += &provider("m", &mock.base_url(), "");
    cfg += &model("fb", "", &[("m", "mock-ok+status=500", ""), ("m", "mock-ok", "")]);
    let gw = Gateway::start(&cfg).await;
    let (st, h, body) = send(gw.post("/v1/messages").json(&json!({
        "model": "fb", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]
    })))
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["type"], json!("message"));
    assert!(body.get("routing_metadata").is_none());
    assert_eq!(h["x-switchyard-attempts"], "2");
    assert_eq!(h["x-switchyard-provider"], "m");
    assert_eq!(h["x-switchyard-model"], "fb");
    let (_, _, body) = gw.chat(&chat_body("fb", "hi")).await;
    assert!(body.get("routing_metadata").is_none(), "switched off: {body}");
}

#[tokio::test]
async fn active_health_checks_take_a_failing_provider_out_and_back() {
    let a = MockServer::start().await.unwrap();
    let b = MockServer::start().await.unwrap();
    let mut cfg = format!(
        "[server]\naddress = \"127.0.0.1:0\"\n[auth]\nmaster_key = \"{KEY}\"\n[routing]\nhealth_check_interval_ms = 150\n\
         [routing.breaker]\nfailures = 1000000\nmin_requests = 1000000\n"
    );
    cfg += &provider("a", &a.base_url(), "");
    cfg += &provider("b", &b.base_url(), "");
    cfg += &model("hc", "", &[("a", "mock-ok", ""), ("b", "mock-ok", "")]);
    let gw = Gateway::start(&cfg).await;
    let probes = |m: &MockServer| m.state.count("GET /v1/models");
    // The checks run on their own, against the API root's `models`.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(probes(&a) >= 2, "{:?}", a.state.counts());
    // A fails its checks: requests stop going there at all (not even a first attempt).
    a.state
        .set_defaults([("status".to_string(), "500".to_string())].into());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = a.state.count(CHAT);
    for _ in 0..5 {
        let (st, _, body) = gw.chat(&chat_body("hc", "hi")).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(attempts(&body), vec![("b/mock-ok".to_string(), 200)], "{body}");
    }
    assert_eq!(a.state.count(CHAT), before);
    let (_, _, vh) = send(gw.get("/vhealth").header("accept", "application/json")).await;
    let da = vh["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deployment"] == "a/mock-ok")
        .unwrap()
        .clone();
    assert_eq!(da["state"], json!("down"), "{da}");
    // Healthy again: back in the plan.
    a.state.set_defaults(Default::default());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, _, body) = gw.chat(&chat_body("hc", "hi")).await;
    assert_eq!(body["routing_metadata"]["provider"], json!("a"), "{body}");
}

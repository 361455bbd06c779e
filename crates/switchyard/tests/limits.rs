//! Per-key limits, budgets and the usage log through the binary, on the embedded default store
//! (SQLite in the data directory, counters in memory): rpm / tpm / max_parallel with their headers,
//! 402 over budget, one usage row per request (success, error, refusal), `/admin/usage`, the
//! `switchyard keys` CLI, rows kept across `kill -9`, and secrets kept out of the logs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::time::{Duration, Instant};

use common::{Backend, Gateway, KEY, TempDir, chat_body, run_cli, send, standard_config};
use mock_upstream::MockServer;
use serde_json::{Value, json};

/// The standard config plus a priced model (`gpt-priced`: $1000 / $2000 per 1M tokens, so each
/// mock answer costs about a cent).
fn config(upstream: &str, b: &Backend) -> String {
    format!(
        "{}\n[models.gpt-priced]\nprovider = \"mock\"\nmodel = \"mock-ok+tokens=3\"\nprice = {{ input = 100.0, output = 1000.0 }}\n\n[models.gpt-hold]\nprovider = \"mock\"\nmodel = \"mock-ok+ttfb=1500\"\n{}",
        standard_config(upstream),
        b.state
    )
}

/// Each test, on the default store and on Postgres + Redis (which skips, loudly, without them).
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Backend::local()).await;
            }

            #[tokio::test]
            async fn postgres_redis() {
                if let Some(b) = super::Backend::shared(concat!("limits::", stringify!($name))).await {
                    super::$name(b).await;
                }
            }
        }
    )*};
}

on_both!(
    key_rpm_tpm_and_parallel_limits_answer_429_with_headers,
    a_budget_is_spent_by_at_most_one_request_then_402,
    every_request_writes_one_usage_row,
    the_keys_cli_shares_the_store_with_a_running_gateway,
    answered_requests_keep_their_usage_rows_across_kill_9,
    a_nul_in_a_model_name_does_not_stop_the_usage_log,
);

async fn create(gw: &Gateway, body: Value) -> (String, String) {
    let (st, _, v) = send(gw.post("/admin/keys").json(&body)).await;
    assert_eq!(st, 201, "{v}");
    (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    )
}

async fn chat_as(
    gw: &Gateway,
    secret: &str,
    body: &Value,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    send(
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(secret)
            .json(body),
    )
    .await
}

/// Polls `/admin/usage` until `pred` holds for the rows (the writer stores them in the background).
async fn usage_until(gw: &Gateway, query: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (st, _, v) = send(gw.get(&format!("/admin/usage?{query}"))).await;
        assert_eq!(st, 200, "{v}");
        let rows = v["data"].as_array().cloned().unwrap_or_default();
        if pred(&rows) {
            return rows;
        }
        assert!(Instant::now() < deadline, "usage never matched; last: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A request's model name is the client's to choose, NUL included, and its row is logged (404): no
/// database column takes a NUL (Postgres refuses the whole insert), so a row must not carry one, or
/// the rows logged with it and after it would never be stored.
async fn a_nul_in_a_model_name_does_not_stop_the_usage_log(b: Backend) {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config(&mock.base_url(), &b)).await;
    let (st, _, v) = chat_as(&gw, KEY, &chat_body("gpt-\u{0}x", "hi")).await;
    assert_eq!(st, 404, "{v}");
    let (st, h, _) = chat_as(&gw, KEY, &chat_body("gpt-mock", "hi")).await;
    assert_eq!(st, 200);
    let rid = h["x-request-id"].to_str().unwrap().to_string();
    let rows = usage_until(&gw, "limit=100", |r| {
        r.iter().any(|r| r["request_id"] == json!(rid)) && r.len() >= 2
    })
    .await;
    let bad = rows
        .iter()
        .find(|r| r["status"] == json!(404))
        .expect("the 404's row");
    assert_eq!(bad["model"], json!("gpt-\u{fffd}x"));
}

async fn key_rpm_tpm_and_parallel_limits_answer_429_with_headers(b: Backend) {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config(&mock.base_url(), &b)).await;
    let (_, rpm_key) = create(&gw, json!({"name": "rpm", "rpm": 3})).await;
    for i in 0..3 {
        let (st, h, v) = chat_as(&gw, &rpm_key, &chat_body("gpt-mock", "hi")).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(h["x-ratelimit-limit-requests"], "3");
        assert_eq!(
            h["x-ratelimit-remaining-requests"].to_str().unwrap(),
            (2 - i).to_string()
        );
        assert!(h["x-ratelimit-reset-requests"].to_str().unwrap().ends_with('s'));
    }
    let (st, h, v) = chat_as(&gw, &rpm_key, &chat_body("gpt-mock", "hi")).await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["error"]["code"], json!("rate_limit_requests"));
    assert_eq!(v["error"]["type"], json!("rate_limit_error"));
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    // Another key is not affected by this one's limit.
    let (_, other) = create(&gw, json!({"name": "other"})).await;
    let (st, _, _) = chat_as(&gw, &other, &chat_body("gpt-mock", "hi")).await;
    assert_eq!(st, 200);

    // Tokens: the reservation (prompt estimate + max_tokens) must fit.
    let (_, tpm_key) = create(&gw, json!({"name": "tpm", "tpm": 100})).await;
    let mut body = chat_body("gpt-mock", "hi");
    body["max_tokens"] = json!(60);
    let (st, h, v) = chat_as(&gw, &tpm_key, &body).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(h["x-ratelimit-limit-tokens"], "100");
    // The first settled to its real 3 tokens; the reservation of this one does not fit beside them.
    body["max_tokens"] = json!(99);
    let (st, _, v) = chat_as(&gw, &tpm_key, &body).await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["error"]["code"], json!("rate_limit_tokens"));
    // The Anthropic surface refuses in its own envelope.
    let (st, _, v) = send(
        gw.client
            .post(gw.url("/v1/messages"))
            .header("x-api-key", &tpm_key)
            .json(&json!({"model": "gpt-mock", "max_tokens": 99, "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["type"], json!("error"));
    assert_eq!(v["error"]["type"], json!("rate_limit_error"));

    // max_parallel: a second request while one is in flight is refused; after it, admitted.
    let (_, par_key) = create(&gw, json!({"name": "par", "max_parallel": 1})).await;
    let slow = {
        let client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        let key = par_key.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&chat_body("gpt-hold", "hi"))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (st, h, v) = chat_as(&gw, &par_key, &chat_body("gpt-mock", "hi")).await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["error"]["code"], json!("rate_limit_parallel"));
    assert!(h.contains_key("retry-after"));
    assert_eq!(slow.await.unwrap(), 200);
    let (st, _, _) = chat_as(&gw, &par_key, &chat_body("gpt-mock", "hi")).await;
    assert_eq!(st, 200);
}

async fn a_budget_is_spent_by_at_most_one_request_then_402(b: Backend) {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config(&mock.base_url(), &b)).await;
    let budget = 0.01;
    let (id, secret) = create(
        &gw,
        json!({"name": "b", "budget_usd": budget, "budget_period": "daily"}),
    )
    .await;
    // Concurrent requests, more than the budget pays for.
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        let secret = secret.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(secret)
                .json(&json!({"model": "gpt-priced", "max_tokens": 16, "messages": [{"role": "user", "content": "hello there"}]}))
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            let h = r.headers().clone();
            let v: Value = r.json().await.unwrap();
            (st, h, v)
        }));
    }
    let mut spent = 0.0;
    let mut max_one: f64 = 0.0;
    for t in tasks {
        let (st, h, v) = t.await.unwrap();
        match st {
            200 => {
                let c: f64 = h["x-switchyard-cost-usd"].to_str().unwrap().parse().unwrap();
                spent += c;
                max_one = max_one.max(c);
            }
            402 => {
                assert_eq!(v["error"]["code"], json!("budget_exceeded"), "{v}");
                assert!(h.contains_key("x-budget-spend"));
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    // Then one at a time until the budget is gone. With Redis, a request's settlement lands just
    // after its answer (a spawned round trip), so a request right behind another may still find that
    // one's reservation, larger than its cost, and get a 402 early: such a 402 is retried after a
    // pause, and only a 402 with nothing left to settle ends the loop.
    let mut early = 0;
    for _ in 0..30 {
        if spent >= budget {
            break;
        }
        let (st, h, v) = chat_as(&gw, &secret, &json!({"model": "gpt-priced", "max_tokens": 16, "messages": [{"role": "user", "content": "hello there"}]})).await;
        match st.as_u16() {
            200 => {
                let c: f64 = h["x-switchyard-cost-usd"].to_str().unwrap().parse().unwrap();
                spent += c;
                max_one = max_one.max(c);
            }
            402 if early < 5 => {
                early += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            402 => break,
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(max_one > 0.0);
    assert!(spent >= budget, "the budget was never used up: {spent}");
    assert!(
        spent <= budget + max_one + 1e-9,
        "spent {spent} of a {budget} budget (one request costs at most {max_one})"
    );
    let (st, h, v) = chat_as(&gw, &secret, &chat_body("gpt-priced", "more")).await;
    assert_eq!(st, 402, "{v}");
    assert_eq!(v["error"]["code"], json!("budget_exceeded"), "{v}");
    assert_eq!(h["x-budget-limit"], "0.01");
    assert_eq!(h["x-budget-period"], "daily");
    let shown: f64 = h["x-budget-spend"].to_str().unwrap().parse().unwrap();
    assert!(shown >= budget - max_one, "{shown}");
    // Anthropic's envelope: billing_error.
    let (st, _, v) = send(
        gw.client
            .post(gw.url("/v1/messages"))
            .header("x-api-key", &secret)
            .json(&json!({"model": "gpt-priced", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    assert_eq!(st, 402, "{v}");
    assert_eq!(v["error"]["type"], json!("billing_error"));
    // /v1/me shows the spend; the usage log agrees with what the answers said they cost.
    let (_, _, me) = send(gw.client.get(gw.url("/v1/me")).bearer_auth(&secret)).await;
    let me_spend = me["spend_usd"].as_f64().unwrap();
    assert!((me_spend - spent).abs() < 1e-6, "{me} vs {spent}");
    let rows = usage_until(&gw, &format!("key={id}&group_by=key"), |r| {
        r.first()
            .and_then(|g| g["cost_usd"].as_f64())
            .is_some_and(|c| (c - spent).abs() < 1e-6)
    })
    .await;
    assert_eq!(rows[0]["key"], json!(id));
}

async fn every_request_writes_one_usage_row(b: Backend) {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config(&mock.base_url(), &b)).await;
    let (id, secret) = create(&gw, json!({"name": "u", "rpm": 3, "models": ["gpt-*"]})).await;
    // Success (JSON and stream), an upstream error, a bad request (not admitted), a rate refusal.
    let (st, h1, _) = chat_as(&gw, &secret, &chat_body("gpt-priced", "hi")).await;
    assert_eq!(st, 200);
    let resp = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&secret)
        .json(&json!({"model": "gpt-mock", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.text().await.unwrap();
    let (st, _, _) = chat_as(&gw, &secret, &chat_body("gpt-500", "hi")).await;
    assert_eq!(st, 502);
    let (st, _, _) = chat_as(&gw, &secret, &json!({"model": "gpt-mock"})).await;
    assert_eq!(st, 400);
    let (st, _, _) = chat_as(&gw, &secret, &chat_body("gpt-mock", "hi")).await;
    assert_eq!(st, 429, "the fourth admitted request is over rpm = 3");
    // A request with an unknown key is logged too, without a key.
    let (st, h_bad, _) = chat_as(&gw, "user.nope", &chat_body("gpt-mock", "hi")).await;
    assert_eq!(st, 401);

    let rows = usage_until(&gw, &format!("key={id}"), |r| r.len() >= 5).await;
    assert_eq!(rows.len(), 5, "{rows:#?}");
    let by_status: HashMap<u64, Vec<&Value>> = rows.iter().fold(HashMap::new(), |mut m, r| {
        m.entry(r["status"].as_u64().unwrap()).or_default().push(r);
        m
    });
    assert_eq!(by_status[&200].len(), 2);
    let priced = rows
        .iter()
        .find(|r| r["request_id"] == json!(h1["x-request-id"].to_str().unwrap()))
        .expect("the row of the priced request");
    assert_eq!(priced["model"], json!("gpt-priced"));
    assert_eq!(priced["provider"], json!("mock"));
    assert_eq!(priced["upstream_model"], json!("mock-ok+tokens=3"));
    assert_eq!(priced["surface"], json!("chat_completions"));
    assert_eq!(priced["output_tokens"], json!(3));
    assert!(priced["input_tokens"].as_u64().unwrap() > 0);
    assert!(priced["cost_usd"].as_f64().unwrap() > 0.0);
    assert!(priced["ttft_ms"].is_u64());
    let streamed = by_status[&200]
        .iter()
        .find(|r| r["model"] == json!("gpt-mock"))
        .unwrap();
    assert!(streamed["output_tokens"].as_u64().unwrap() > 0, "{streamed}");
    assert!(
        by_status[&502][0]["error_kind"]
            .as_str()
            .is_some_and(|k| !k.is_empty())
    );
    assert_eq!(by_status[&400].len(), 1);
    assert_eq!(by_status[&429][0]["error_kind"], json!("rate_limit_requests"));
    // The unknown key's request has a row with no key.
    let rid_bad = h_bad["x-request-id"].to_str().unwrap().to_string();
    let all = usage_until(&gw, "limit=1000", |r| {
        r.iter().any(|x| x["request_id"] == json!(rid_bad))
    })
    .await;
    let bad = all.iter().find(|x| x["request_id"] == json!(rid_bad)).unwrap();
    assert_eq!(
        (bad["status"].clone(), bad["key_id"].clone()),
        (json!(401), Value::Null)
    );

    // Groups: by model, with counts, tokens and cost.
    let (_, _, g) = send(gw.get(&format!("/admin/usage?key={id}&group_by=model"))).await;
    let groups = g["data"].as_array().unwrap();
    let priced = groups.iter().find(|g| g["model"] == json!("gpt-priced")).unwrap();
    assert_eq!(priced["requests"], json!(1));
    assert!(priced["cost_usd"].as_f64().unwrap() > 0.0);
    let (_, _, d) = send(gw.get(&format!("/admin/usage?key={id}&group_by=day&from=2020-01-01"))).await;
    assert_eq!(d["data"][0]["requests"], json!(5), "{d}");
    assert!(d["data"][0]["day"].as_str().unwrap().starts_with("20"));
    // Bad queries are 400s; a user key may not read usage.
    let (st, _, _) = send(gw.get("/admin/usage?group_by=color")).await;
    assert_eq!(st, 400);
    let (st, _, _) = send(gw.client.get(gw.url("/admin/usage")).bearer_auth(&secret)).await;
    assert_eq!(st, 403);
}

async fn the_keys_cli_shares_the_store_with_a_running_gateway(b: Backend) {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config(&mock.base_url(), &b)).await;
    let home = gw.config_path.parent().unwrap().join("home");
    let env = [("SWITCHYARD_HOME", home.to_str().unwrap())];
    let cfg = gw.config_path.as_os_str();
    let (ok, out, err) = run_cli(
        &[
            OsStr::new("keys"),
            OsStr::new("--config"),
            cfg,
            OsStr::new("create"),
            OsStr::new("--name"),
            OsStr::new("from-cli"),
            OsStr::new("--models"),
            OsStr::new("gpt-mock"),
            OsStr::new("--rpm"),
            OsStr::new("50"),
        ],
        &env,
    );
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let secret = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(secret.starts_with("user."));
    // The gateway picks it up within a second.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (st, _, _) = chat_as(&gw, &secret, &chat_body("gpt-mock", "hi")).await;
        if st == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the CLI's key never worked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out, _) = run_cli(
        &[
            OsStr::new("keys"),
            OsStr::new("--config"),
            cfg,
            OsStr::new("list"),
        ],
        &env,
    );
    assert!(ok);
    assert!(out.contains(&id) && out.contains("from-cli") && !out.contains(&secret[12..]));
    let (ok, _, err) = run_cli(
        &[
            OsStr::new("keys"),
            OsStr::new("--config"),
            cfg,
            OsStr::new("revoke"),
            OsStr::new(&id),
        ],
        &env,
    );
    assert!(ok, "{err}");
    let revoked_at = Instant::now();
    loop {
        let (st, _, v) = chat_as(&gw, &secret, &chat_body("gpt-mock", "hi")).await;
        if st == 401 {
            assert_eq!(v["error"]["code"], json!("revoked_api_key"));
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_millis(1500),
            "revocation took effect after more than a second"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, _, err) = run_cli(
        &[
            OsStr::new("keys"),
            OsStr::new("--config"),
            cfg,
            OsStr::new("revoke"),
            OsStr::new("key_missing"),
        ],
        &env,
    );
    assert!(!ok && err.contains("key_missing"), "{err}");
}

async fn answered_requests_keep_their_usage_rows_across_kill_9(b: Backend) {
    let mock = MockServer::start().await.unwrap();
    let home = TempDir::new();
    let cfg = config(&mock.base_url(), &b);
    let mut gw = Gateway::start_at(&home.0, &cfg, &[]).await;
    // Load from several clients; kill -9 in the middle of it.
    let ok_ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        let ok_ids = ok_ids.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..200 {
                let r = client
                    .post(&url)
                    .bearer_auth(KEY)
                    .json(&chat_body("gpt-mock", "hi"))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
                        // Counted only once the whole answer arrived.
                        if r.bytes().await.is_ok() {
                            ok_ids.lock().unwrap().push(id);
                        }
                    }
                    _ => break,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while ok_ids.lock().unwrap().len() < 150 {
        assert!(Instant::now() < deadline, "the load never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.kill9().await;
    for t in tasks {
        let _ = t.await;
    }
    let ids = ok_ids.lock().unwrap().clone();
    assert!(ids.len() >= 150);
    // A new process on the same data replays what the dead one journaled.
    let gw2 = Gateway::start_at(&home.0, &cfg, &[]).await;
    let rows = usage_until(&gw2, "limit=10000&model=gpt-mock", |r| r.len() >= ids.len()).await;
    let mut seen: HashMap<String, u32> = HashMap::new();
    for r in &rows {
        *seen
            .entry(r["request_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for id in &ids {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "request {id} answered 200 but has {:?} rows",
            seen.get(id)
        );
    }
}

#[tokio::test]
async fn secrets_never_reach_the_logs_even_at_debug() {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start_with_env(
        &config(&mock.base_url(), &Backend::local()),
        &[("SWITCHYARD_LOG", "debug")],
    )
    .await;
    let (id, secret) = create(&gw, json!({"name": "log", "rpm": 1})).await;
    let _ = chat_as(&gw, &secret, &chat_body("gpt-mock", "hi")).await;
    let _ = chat_as(&gw, &secret, &chat_body("gpt-mock", "hi")).await; // 429
    let _ = chat_as(&gw, &secret, &chat_body("gpt-500", "hi")).await;
    let _ = send(
        gw.client
            .delete(gw.url(&format!("/admin/keys/{id}")))
            .bearer_auth(KEY),
    )
    .await;
    let _ = chat_as(&gw, &secret, &chat_body("gpt-mock", "hi")).await; // 401
    let _ = chat_as(&gw, "user.wrong-secret-xyz", &chat_body("gpt-mock", "hi")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = gw.stderr();
    assert!(logs.len() > 100, "debug logging is on: {logs}");
    for s in [
        secret.as_str(),
        &secret[5..],
        KEY,
        "user.wrong-secret-xyz",
        "sk-upstream",
    ] {
        assert!(!logs.contains(s), "`{s}` is in the logs");
    }
}

//! Replicas sharing Postgres and Redis, through the binary: three gateways enforce one rate limit
//! and one budget, a revocation through one is honoured by the others within a second; and with
//! Postgres down, requests go on at the same speed and memory while usage rows wait on disk, then
//! arrive when it is back.
//!
//! Needs `DATABASE_URL` (a Postgres server this test may create databases on) and `REDIS_URL`;
//! `scripts/test.sh` sets both when the servers are there. Without them every test here says loudly
//! that it skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Gateway, KEY, chat_body, env_urls, fresh_database, rand_u64, send, standard_config};
use mock_upstream::MockServer;
use serde_json::{Value, json};

fn config(upstream: &str, db: &str, redis: &str, prefix: &str) -> String {
    format!(
        "{}\n[state]\ndatabase_url = \"{db}\"\nredis_url = \"{redis}\"\nredis_prefix = \"{prefix}\"\n\n\
         [models.gpt-priced]\nprovider = \"mock\"\nmodel = \"mock-ok+tokens=3\"\nprice = {{ input = 100.0, output = 1000.0 }}\n",
        standard_config(upstream)
    )
}

async fn create(gw: &Gateway, body: Value) -> (String, String) {
    let (st, _, v) = send(gw.post("/admin/keys").json(&body)).await;
    assert_eq!(st, 201, "{v}");
    (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    )
}

/// Waits until every gateway accepts this key.
async fn known_everywhere(gws: &[Gateway], secret: &str) {
    for gw in gws {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let (st, _, _) = send(gw.client.get(gw.url("/v1/me")).bearer_auth(secret)).await;
            if st == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "a replica never learned the key");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn three_replicas(mock: &MockServer, db: &str, redis: &str) -> Vec<Gateway> {
    let prefix = format!("sytest{:x}:", rand_u64());
    let cfg = config(&mock.base_url(), db, redis, &prefix);
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(Gateway::start(&cfg).await);
    }
    gws
}

#[tokio::test]
async fn three_replicas_enforce_one_rate_limit_one_budget_and_one_revocation() {
    let Some((admin_db, redis)) = env_urls("three_replicas_…") else {
        return;
    };
    let db = fresh_database(&admin_db).await;
    let mock = MockServer::start().await.unwrap();
    let gws = three_replicas(&mock, &db, &redis).await;

    // rpm = 30: 100 requests spread over the three replicas admit 30 (±1).
    let (_, secret) = create(&gws[0], json!({"name": "rpm", "rpm": 30})).await;
    known_everywhere(&gws, &secret).await;
    // (The probes above count: /v1/me is not a model request, so they do not.)
    let mut tasks = Vec::new();
    for i in 0..100 {
        let gw = &gws[i % 3];
        let req = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&secret)
            .json(&chat_body("gpt-mock", "hi"));
        tasks.push(tokio::spawn(async move {
            req.send().await.unwrap().status().as_u16()
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        (29..=31).contains(&ok),
        "{ok} admitted of 100 with rpm = 30 over 3 replicas"
    );
    assert_eq!(ok + limited, 100);

    // A $0.01 budget, spent from all three at once, is overspent by at most one request.
    let budget = 0.01;
    let (id, secret) = create(&gws[1], json!({"name": "budget", "budget_usd": budget})).await;
    known_everywhere(&gws, &secret).await;
    let mut spent = 0.0;
    let mut max_one: f64 = 0.0;
    let mut refused = 0;
    for round in 0..10 {
        let mut tasks = Vec::new();
        for i in 0..9 {
            let gw = &gws[(i + round) % 3];
            let req = gw
                .client
                .post(gw.url("/v1/chat/completions"))
                .bearer_auth(&secret)
                .json(&json!({"model": "gpt-priced", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}));
            tasks.push(tokio::spawn(async move {
                let r = req.send().await.unwrap();
                let st = r.status().as_u16();
                let cost = r
                    .headers()
                    .get("x-switchyard-cost-usd")
                    .map(|v| v.to_str().unwrap().parse::<f64>().unwrap());
                (st, cost)
            }));
        }
        for t in tasks {
            match t.await.unwrap() {
                (200, Some(c)) => {
                    spent += c;
                    max_one = max_one.max(c);
                }
                (402, _) => refused += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        if spent >= budget && refused > 0 {
            break;
        }
    }
    assert!(spent >= budget, "the budget was never spent: {spent}");
    assert!(refused > 0);
    assert!(
        spent <= budget + max_one + 1e-9,
        "spent {spent} of {budget} (one request costs at most {max_one})"
    );
    // Every replica refuses now, and reports the same spend. A request's spend is settled in Redis
    // just after its answer is sent, so the last answers' spend may take a moment to show.
    for gw in &gws {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (st, h, v) = send(
                gw.client
                    .post(gw.url("/v1/chat/completions"))
                    .bearer_auth(&secret)
                    .json(&chat_body("gpt-priced", "x")),
            )
            .await;
            assert_eq!(st, 402, "{v}");
            let shown: f64 = h["x-budget-spend"].to_str().unwrap().parse().unwrap();
            if (shown - spent).abs() < 1e-6 {
                break;
            }
            assert!(Instant::now() < deadline, "{shown} vs {spent}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The usage log (in Postgres) has every answered request's cost.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, v) = send(gws[2].get(&format!("/admin/usage?key={id}&group_by=key"))).await;
        let c = v["data"][0]["cost_usd"].as_f64().unwrap_or(0.0);
        if (c - spent).abs() < 1e-6 {
            break;
        }
        assert!(Instant::now() < deadline, "usage cost {c} never reached {spent}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Revoked through one replica: refused by the others within one second.
    let (id, secret) = create(&gws[0], json!({"name": "revoke-me"})).await;
    known_everywhere(&gws, &secret).await;
    let (st, _, _) = send(
        gws[1]
            .client
            .delete(gws[1].url(&format!("/admin/keys/{id}")))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(st, 200);
    let revoked_at = Instant::now();
    for gw in [&gws[0], &gws[2]] {
        loop {
            let (st, _, _) = send(
                gw.client
                    .post(gw.url("/v1/chat/completions"))
                    .bearer_auth(&secret)
                    .json(&chat_body("gpt-mock", "hi")),
            )
            .await;
            if st == 401 {
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "a replica still accepted a revoked key after a second"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A TCP proxy in front of Postgres that can be taken down (dropping every connection) and up.
struct Switch {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Switch {
    async fn start(target: String) -> Switch {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(std::sync::Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let (u, c) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                c.lock().unwrap().push(h.abort_handle());
            }
        });
        Switch { port, up, conns }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
async fn with_postgres_down_requests_go_on_and_rows_arrive_when_it_is_back() {
    let Some((admin_db, redis)) = env_urls("with_postgres_down_…") else {
        return;
    };
    let db = fresh_database(&admin_db).await;
    // The gateway reaches this database through the switch.
    let rest = db.split_once("://").unwrap().1;
    let host_end = rest.find('/').unwrap();
    let authority = &rest[..host_end];
    let (cred, hostport) = match authority.rsplit_once('@') {
        Some((c, h)) => (format!("{c}@"), h),
        None => (String::new(), authority),
    };
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5432")
    };
    let switch = Switch::start(hostport).await;
    let via = format!("postgres://{cred}127.0.0.1:{}{}", switch.port, &rest[host_end..]);
    let mock = MockServer::start().await.unwrap();
    let prefix = format!("sytest{:x}:", rand_u64());
    let gw = Gateway::start(&config(&mock.base_url(), &via, &redis, &prefix)).await;
    let (id, secret) = create(&gw, json!({"name": "outage", "rpm": 100000})).await;

    async fn burst(gw: &Gateway, secret: &str, n: usize) -> Vec<Duration> {
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let (st, _, v) = send(
                gw.client
                    .post(gw.url("/v1/chat/completions"))
                    .bearer_auth(secret)
                    .json(&chat_body("gpt-mock", "hi")),
            )
            .await;
            assert_eq!(st, 200, "{v}");
            lat.push(t.elapsed());
        }
        lat
    }
    let before = p50(burst(&gw, &secret, 100).await);
    let rss_before = gw.rss();

    switch.down();
    let during = burst(&gw, &secret, 600).await;
    let during_p50 = p50(during);
    // Not a timing target: a request path that waited on the database would take seconds (the
    // pool's acquire timeout), not milliseconds.
    assert!(
        during_p50 < before * 3 + Duration::from_millis(20),
        "p50 went from {before:?} to {during_p50:?} with Postgres down"
    );
    let rss_during = gw.rss();
    assert!(
        rss_during < rss_before + 40 * 1024 * 1024,
        "memory grew from {rss_before} to {rss_during} bytes while the database was down"
    );
    // The rows wait in the journal, and the metric says how much (once the writer's first attempt
    // against the dead database has given up).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = gw.metrics().await;
        let bytes: f64 = text
            .lines()
            .find(|l| l.starts_with("switchyard_usage_journal_pending_bytes"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if bytes > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no pending usage bytes reported while Postgres is down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Revocation and usage cannot reach the store now, but the cached key still works.
    let (st, _, _) = send(gw.client.get(gw.url("/v1/me")).bearer_auth(&secret)).await;
    assert_eq!(st, 200);

    switch.up();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (st, _, v) = send(gw.get(&format!("/admin/usage?key={id}&group_by=key"))).await;
        if st == 200 && v["data"][0]["requests"] == json!(700) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rows did not all arrive after Postgres came back: {v}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

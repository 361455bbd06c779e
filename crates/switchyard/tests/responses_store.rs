//! Stored responses on each store: the default SQLite and Postgres (which skips, loudly, without
//! `DATABASE_URL` / `REDIS_URL`). Created through one replica, continued and read through another.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Backend, Gateway, KEY, send, standard_config};
use mock_upstream::MockServer;
use serde_json::json;

async fn stored_responses_survive_across_replicas(b: Backend) {
    let mock = MockServer::start().await.unwrap();
    let cfg = format!("{}{}", standard_config(&mock.base_url()), b.state);
    // Two gateways on the same store (SQLite: the same data directory).
    let home = common::TempDir::new();
    let a = Gateway::start_at(&home.0, &cfg, &[]).await;
    let c = Gateway::start_at(&home.0, &cfg, &[]).await;
    let (st, _, r1) = send(
        a.post("/v1/responses")
            .json(&json!({"model": "gpt-mock", "input": "My name is Ada."})),
    )
    .await;
    assert_eq!(st, 200, "{r1}");
    let id = r1["id"].as_str().unwrap();
    let (st, _, r2) = send(
        c.post("/v1/responses")
            .json(&json!({"model": "gpt-mock", "input": "What is my name?", "previous_response_id": id})),
    )
    .await;
    assert_eq!(st, 200, "{r2}");
    let sent = mock.state.last_request().unwrap().body;
    assert_eq!(sent["messages"][0]["content"], "My name is Ada.", "{sent}");
    assert_eq!(sent["messages"].as_array().unwrap().len(), 3);
    let (st, _, got) = send(c.get(&format!("/v1/responses/{id}"))).await;
    assert_eq!(st, 200);
    assert_eq!(got["output_text"], r1["output_text"]);
    let (_, _, items) = send(a.get(&format!(
        "/v1/responses/{}/input_items",
        r2["id"].as_str().unwrap()
    )))
    .await;
    assert_eq!(items["data"][0]["content"][0]["text"], "What is my name?");
    // Another key sees nothing of it.
    let (_, _, k) = send(a.post("/admin/keys").json(&json!({"name": "other"}))).await;
    let other = k["key"].as_str().unwrap();
    // The other replica learns of the new key within a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while send(c.client.get(c.url("/v1/me")).bearer_auth(other)).await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the key never reached the other replica"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (st, _, _) = send(
        c.client
            .get(c.url(&format!("/v1/responses/{id}")))
            .bearer_auth(other),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _, _) = send(
        c.client
            .delete(c.url(&format!("/v1/responses/{id}")))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _, _) = send(a.get(&format!("/v1/responses/{id}"))).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn sqlite() {
    stored_responses_survive_across_replicas(Backend::local()).await;
}

#[tokio::test]
async fn postgres() {
    if let Some(b) = Backend::shared("responses_store::postgres").await {
        stored_responses_survive_across_replicas(b).await;
    }
}

//! Issued keys through the binary: the admin API (master key only), a key's model scope, revocation,
//! expiry, `/v1/me`, and secrets kept out of the logs and the store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Gateway, KEY, chat_body, send};
use serde_json::{Value, json};

async fn create(gw: &Gateway, body: Value) -> Value {
    let (st, _, v) = send(gw.post("/admin/keys").json(&body)).await;
    assert_eq!(st, 201, "{v}");
    v
}

#[tokio::test]
async fn keys_are_issued_scoped_revoked_and_never_shown_twice() {
    let (_mock, gw) = Gateway::with_mock().await;
    let k = create(
        &gw,
        json!({"name": "ci", "kind": "user", "models": ["gpt-m*"], "rpm": 100, "budget_usd": 5.0, "budget_period": "monthly"}),
    )
    .await;
    let secret = k["key"].as_str().unwrap().to_string();
    let id = k["id"].as_str().unwrap().to_string();
    assert!(secret.starts_with("user.") && secret.len() == 5 + 43, "{secret}");
    assert_eq!(k["prefix"], json!(&secret[..12]));
    assert!(k.get("hash").is_none(), "{k}");

    // The key works, within its scope.
    let as_key = |path: &str| gw.client.post(gw.url(path)).bearer_auth(&secret);
    let (st, _, body) = send(as_key("/v1/chat/completions").json(&chat_body("gpt-mock", "hi"))).await;
    assert_eq!(st, 200, "{body}");
    let (st, _, body) = send(as_key("/v1/chat/completions").json(&chat_body("gpt-tools", "hi"))).await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["error"]["code"], json!("model_not_allowed"));
    let (st, _, body) = send(
        as_key("/v1/chat/completions")
            .json(&json!({"model": "gpt-mock", "models": ["gpt-tools"], "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    assert_eq!(st, 403, "a fallback list is in scope too: {body}");
    let (st, _, me) = send(gw.client.get(gw.url("/v1/me")).bearer_auth(&secret)).await;
    assert_eq!(st, 200);
    assert_eq!(
        (me["id"].clone(), me["rpm"].clone(), me["budget_period"].clone()),
        (json!(id), json!(100), json!("monthly"))
    );
    // A user key does not administer.
    let (st, _, body) = send(gw.client.get(gw.url("/admin/keys")).bearer_auth(&secret)).await;
    assert_eq!(st, 403, "{body}");

    // Listing and reading never show the secret.
    let (st, _, list) = send(gw.get("/admin/keys")).await;
    assert_eq!(st, 200);
    assert_eq!(list["object"], json!("list"));
    assert!(!list.to_string().contains(&secret[12..]), "{list}");
    let (_, _, one) = send(gw.get(&format!("/admin/keys/{id}"))).await;
    assert_eq!(one["name"], json!("ci"));
    let (st, _, _) = send(gw.get("/admin/keys/key_nope")).await;
    assert_eq!(st, 404);

    // PATCH widens the scope; DELETE revokes, and the key is refused at once.
    let (st, _, p) = send(
        gw.client
            .patch(gw.url(&format!("/admin/keys/{id}")))
            .bearer_auth(KEY)
            .json(&json!({"models": []})),
    )
    .await;
    assert_eq!(st, 200, "{p}");
    let (st, _, _) = send(as_key("/v1/chat/completions").json(&chat_body("gpt-tools", "hi"))).await;
    assert_eq!(st, 200);
    let (st, _, _) = send(
        gw.client
            .delete(gw.url(&format!("/admin/keys/{id}")))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _, body) = send(as_key("/v1/chat/completions").json(&chat_body("gpt-mock", "hi"))).await;
    assert_eq!(st, 401, "{body}");
    assert_eq!(body["error"]["code"], json!("revoked_api_key"));
    // The Anthropic surface refuses it in its own envelope.
    let (st, _, body) = send(
        gw.client
            .post(gw.url("/v1/messages"))
            .header("x-api-key", &secret)
            .json(&json!({"model": "gpt-mock", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    assert_eq!(st, 401);
    assert_eq!(body["error"]["type"], json!("authentication_error"), "{body}");

    // An expired key is refused too; bad fields are a 400.
    let old = create(&gw, json!({"name": "old", "expires_at": 1})).await;
    let (st, _, body) = send(
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(old["key"].as_str().unwrap())
            .json(&chat_body("gpt-mock", "hi")),
    )
    .await;
    assert_eq!(
        (st.as_u16(), body["error"]["code"].clone()),
        (401, json!("expired_api_key"))
    );
    let (st, _, body) = send(gw.post("/admin/keys").json(&json!({"kind": "robot"}))).await;
    assert_eq!(st, 400, "{body}");

    // Secrets never reach the logs, and the store keeps only their hash.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!gw.stderr().contains(&secret));
    let db = std::fs::read(gw.config_path.parent().unwrap().join("home/switchyard.db")).unwrap_or_default();
    let wal =
        std::fs::read(gw.config_path.parent().unwrap().join("home/switchyard.db-wal")).unwrap_or_default();
    let needle = &secret.as_bytes()[12..];
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the secret is in the store"
        );
    }
}

//! The admin API (master key only): `POST/GET /admin/keys`, `GET/PATCH/DELETE /admin/keys/{id}`,
//! `GET /admin/usage`; and `GET /v1/me` for any caller.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::response::{Dialect, error_response, json_body};
use super::{App, read_body};
use crate::auth::Principal;
use crate::error::{Error, ErrorKind, Result};
use crate::keys::{KeyFields, Keys};
use crate::usage::UsageQuery;

fn answer(result: Result<Response>) -> Response {
    result.unwrap_or_else(|e| error_response(Dialect::OpenAi, &e))
}

fn admin<'a>(app: &'a App, who: &Principal) -> Result<&'a Keys> {
    if !who.is_admin() {
        return Err(Error::new(
            ErrorKind::Permission,
            "Only the master key may use the admin API.",
        )
        .with_code("admin_only"));
    }
    app.auth
        .keys()
        .ok_or_else(|| Error::new(ErrorKind::Unavailable, "The key store is not open."))
}

async fn fields(app: &App, headers: &HeaderMap, body: Body) -> Result<KeyFields> {
    let bytes = read_body(body, headers, app.max_body_bytes).await?;
    serde_json::from_slice(&bytes).map_err(|e| Error::invalid(format!("Invalid key fields: {e}")))
}

pub async fn create(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        async {
            let keys = admin(&app, &who)?;
            let (rec, secret) = keys.create(fields(&app, &headers, body).await?).await?;
            let mut v = serde_json::to_value(&rec).map_err(|e| Error::internal(e.to_string()))?;
            // The only time the secret is shown.
            v["key"] = json!(secret);
            let mut resp = json_body(&v);
            *resp.status_mut() = StatusCode::CREATED;
            Ok(resp)
        }
        .await,
    )
}

pub async fn list(State(app): State<Arc<App>>, Extension(who): Extension<Principal>) -> Response {
    answer(
        async {
            let data = admin(&app, &who)?.list().await?;
            Ok(json_body(&json!({"object": "list", "data": data})))
        }
        .await,
    )
}

pub async fn get(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    answer(async { Ok(json_body(&admin(&app, &who)?.get(&id).await?)) }.await)
}

pub async fn patch(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        async {
            let keys = admin(&app, &who)?;
            let f = fields(&app, &headers, body).await?;
            Ok(json_body(&keys.update(&id, f).await?))
        }
        .await,
    )
}

/// Revokes the key (the record stays, for the usage that refers to it).
pub async fn delete(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    answer(
        async {
            let keys = admin(&app, &who)?;
            let f = KeyFields {
                revoked: Some(true),
                ..KeyFields::default()
            };
            let rec = keys.update(&id, f).await?;
            Ok(json_body(
                &json!({"id": rec.id, "object": "key", "deleted": true, "revoked": true}),
            ))
        }
        .await,
    )
}

/// `GET /admin/usage?key=&model=&from=&to=&group_by=day|model|key|provider`.
pub async fn usage(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Principal>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    answer(
        async {
            admin(&app, &who)?;
            let Query(q) = query.map_err(|e| Error::invalid(format!("Invalid usage query: {e}")))?;
            let log = app
                .usage
                .as_ref()
                .ok_or_else(|| Error::new(ErrorKind::Unavailable, "The usage log is not open."))?;
            let data = crate::usage::query(log.store(), &q).await?;
            Ok(json_body(&json!({"object": "list", "data": data})))
        }
        .await,
    )
}

/// The calling key: its identity, limits and spend in its current budget period.
pub async fn me(State(app): State<Arc<App>>, Extension(who): Extension<Principal>) -> Response {
    let v: Value = match &who {
        Principal::Key(k) => {
            let mut v = serde_json::to_value(k.as_ref()).unwrap_or(Value::Null);
            v["object"] = json!("key");
            v["spend_usd"] = json!(app.limits.spend(k).await);
            v["budget_period_start"] =
                json!(crate::limits::period_start(k.budget_period.as_deref(), crate::store::now_ms()) / 1000);
            v
        }
        Principal::Master => json!({"object": "key", "kind": "master"}),
        Principal::Anonymous => json!({"object": "key", "kind": "anonymous"}),
    };
    json_body(&v)
}

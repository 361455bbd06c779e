//! `/health` (503 when no deployment of any model can serve) and `/vhealth` (every deployment's state,
//! as an HTML page or, with `Accept: application/json`, as JSON).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};

use super::App;
use super::response::json_body;

pub async fn health(State(app): State<Arc<App>>) -> Response {
    let now = Instant::now();
    let deps = app.catalog.deployments();
    let ready = deps.iter().filter(|d| d.health.check(now, false).is_ok()).count();
    let body = json!({
        "status": if ready > 0 || deps.is_empty() { "ok" } else { "unavailable" },
        "deployments": deps.len(),
        "available": ready,
    });
    let mut resp = json_body(&body);
    if ready == 0 && !deps.is_empty() {
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    resp
}

/// Every deployment, with the models that use it.
pub fn snapshot(app: &App) -> Value {
    let now = Instant::now();
    let deployments: Vec<Value> = app
        .catalog
        .deployments()
        .iter()
        .map(|d| {
            let models: Vec<&str> = app
                .catalog
                .iter()
                .filter(|e| e.deployments.iter().any(|x| Arc::ptr_eq(x, d)))
                .map(|e| e.public_name.as_str())
                .collect();
            let mut v = d.health.snapshot(now);
            v["deployment"] = json!(d.id);
            v["provider"] = json!(d.provider.name());
            v["upstream_model"] = json!(d.upstream_model);
            v["tier"] = json!(d.tier.as_str());
            v["models"] = json!(models);
            v
        })
        .collect();
    json!({"object": "list", "data": deployments})
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => esc(s),
        other => esc(&other.to_string()),
    }
}

pub async fn vhealth(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let snap = snapshot(&app);
    let wants_json = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if wants_json {
        return json_body(&snap);
    }
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Switchyard · deployments</title>\
         <meta http-equiv=\"refresh\" content=\"5\"><style>body{font:14px system-ui,sans-serif;margin:2em}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}\
         .healthy{background:#e6f6e6}.open,.banned,.down{background:#fbe3e3}.half-open{background:#fff4d6}\
         </style></head><body><h1>Deployments</h1><table><tr><th>deployment</th><th>models</th><th>tier</th>\
         <th>state</th><th>in flight</th><th>TTFT ms (ewma / p50 / p95)</th><th>tokens/s (ewma)</th>\
         <th>ok</th><th>failed</th><th>last error</th></tr>",
    );
    if let Some(rows) = snap["data"].as_array() {
        for d in rows {
            let state = d["state"].as_str().unwrap_or("unknown");
            let detail = match state {
                "open" => format!(" ({} ms left)", cell(&d["open_for_ms"])),
                "banned" => format!(
                    " ({} ms left: {})",
                    cell(&d["banned_for_ms"]),
                    cell(&d["ban_reason"])
                ),
                "down" => format!(" ({})", cell(&d["health_check"])),
                _ => String::new(),
            };
            let models = d["models"]
                .as_array()
                .map(|m| m.iter().map(cell).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            let _ = write!(
                html,
                "<tr class=\"{state}\"><td>{}</td><td>{models}</td><td>{}</td><td>{state}{detail}</td><td>{}</td>\
                 <td>{} / {} / {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                cell(&d["deployment"]),
                cell(&d["tier"]),
                cell(&d["in_flight"]),
                cell(&d["ttft_ms"]["ewma"]),
                cell(&d["ttft_ms"]["p50"]),
                cell(&d["ttft_ms"]["p95"]),
                cell(&d["tokens_per_second"]["ewma"]),
                cell(&d["successes"]),
                cell(&d["failures"]),
                cell(&d["last_error"]),
            );
        }
    }
    html.push_str("</table><p>JSON: send <code>Accept: application/json</code>.</p></body></html>");
    (
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        html,
    )
        .into_response()
}

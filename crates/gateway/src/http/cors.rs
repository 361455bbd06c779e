//! CORS for browser clients: `[server] cors_origins = [...]` (exact origins, or `"*"`). A preflight is
//! answered before auth (browsers send no credentials on it); every answer to an allowed origin carries
//! `Access-Control-Allow-Origin` and exposes the gateway's own headers. With no origins configured, none
//! of this happens: no CORS headers, and `OPTIONS` is an ordinary unknown method.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

/// Who may call from a browser.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

/// Headers a browser script may read from an answer.
const EXPOSE: &str = "x-request-id, retry-after, x-switchyard-provider, x-switchyard-model, \
x-switchyard-upstream-model, x-switchyard-tier, x-switchyard-attempts, x-switchyard-routing-strategy, \
x-switchyard-cost-usd, x-switchyard-warnings, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, \
x-ratelimit-reset-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens";

impl Cors {
    pub fn new(origins: &[String]) -> Cors {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.any || !self.origins.is_empty()
    }

    /// The `Access-Control-Allow-Origin` for this request's origin, if it is allowed.
    fn allow(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let o = origin.to_str().ok()?.trim_end_matches('/').to_ascii_lowercase();
        self.origins.contains(&o).then(|| origin.clone())
    }
}

pub async fn layer(State(cors): State<Arc<Cors>>, req: Request, next: Next) -> Response {
    if !cors.enabled() {
        return next.run(req).await;
    }
    let allow = cors.allow(req.headers());
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut resp = Response::new(Body::empty());
        let Some(allow) = allow else {
            // Not an allowed origin: no grant (the browser blocks the call).
            *resp.status_mut() = StatusCode::FORBIDDEN;
            return resp;
        };
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE, PATCH, OPTIONS"),
        );
        let asked = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or_else(|| {
                HeaderValue::from_static("authorization, content-type, x-api-key, anthropic-version")
            });
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        return resp;
    }
    let mut resp = next.run(req).await;
    if let Some(allow) = allow {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(o: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        h
    }

    #[test]
    fn only_listed_origins_are_granted() {
        let c = Cors::new(&["https://app.example.com/".into()]);
        assert_eq!(
            c.allow(&origin("https://APP.example.com")).unwrap(),
            "https://APP.example.com"
        );
        assert!(c.allow(&origin("https://evil.example.com")).is_none());
        assert!(c.allow(&HeaderMap::new()).is_none());
        let any = Cors::new(&["*".into()]);
        assert_eq!(any.allow(&origin("https://x.y")).unwrap(), "*");
        assert!(!Cors::new(&[]).enabled());
    }
}

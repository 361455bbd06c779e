//! Per-request behaviour options, from `x-mock-<opt>` headers or `model+opt=val` suffixes.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

/// Parsed options. Keys are lowercased with `-` turned into `_` (so `x-mock-drop-after` works too).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Opts {
    map: BTreeMap<String, String>,
}

fn norm(k: &str) -> String {
    k.trim().to_ascii_lowercase().replace('-', "_")
}

impl Opts {
    /// Model suffix options first, then headers (headers win on conflict).
    pub fn from_request(headers: &HeaderMap, model: Option<&str>) -> Self {
        let mut map = BTreeMap::new();
        if let Some(model) = model {
            for part in model.split('+').skip(1) {
                let (k, v) = part.split_once('=').unwrap_or((part, "true"));
                if !k.trim().is_empty() {
                    map.insert(norm(k), v.trim().to_string());
                }
            }
        }
        for (name, value) in headers {
            if let Some(k) = name.as_str().strip_prefix("x-mock-") {
                let v = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
                map.insert(norm(k), if v.is_empty() { "true".to_string() } else { v });
            }
        }
        Self { map }
    }

    /// Adds options the request did not set itself (the server-wide ones of `POST /_mock/set`).
    pub fn fill(&mut self, defaults: &BTreeMap<String, String>) {
        for (k, v) in defaults {
            self.map.entry(norm(k)).or_insert_with(|| v.clone());
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// Present and not `0`/`false`/`no`/`off`.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "no" | "off"))
    }

    pub fn num(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }
}

/// The base model name without `+opt` suffixes.
pub fn base_model(model: &str) -> &str {
    model.split('+').next().unwrap_or(model)
}

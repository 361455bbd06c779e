//! Who is calling. Keys are kept only as SHA-256 hashes and compared in constant time.

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, ErrorKind};

/// The caller, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No key was needed (auth is off).
    Anonymous,
    Master,
}

#[derive(Clone)]
pub struct Auth {
    master_hash: Option<[u8; 32]>,
    required: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The key a request carries: `Authorization: Bearer <key>` or `x-api-key: <key>`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some(k) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Some(k.trim());
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl Auth {
    pub fn new(master_key: Option<&str>, required: bool) -> Auth {
        Auth {
            master_hash: master_key.map(hash),
            required,
        }
    }

    pub fn required(&self) -> bool {
        self.required
    }

    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Error> {
        let presented = presented_key(headers).filter(|k| !k.is_empty());
        if !self.required {
            return Ok(match (presented, &self.master_hash) {
                (Some(k), Some(h)) if bool::from(hash(k).ct_eq(h)) => Principal::Master,
                _ => Principal::Anonymous,
            });
        }
        let Some(key) = presented else {
            return Err(Error::new(
                ErrorKind::Authentication,
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' or 'x-api-key: YOUR_KEY'.",
            )
            .with_code("missing_api_key"));
        };
        match &self.master_hash {
            Some(h) if bool::from(hash(key).ct_eq(h)) => Ok(Principal::Master),
            _ => Err(
                Error::new(ErrorKind::Authentication, "Incorrect API key provided.")
                    .with_code("invalid_api_key"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_and_x_api_key_both_work() {
        let a = Auth::new(Some("sk-1"), true);
        assert_eq!(
            a.authenticate(&headers(&[("authorization", "Bearer sk-1")]))
                .unwrap(),
            Principal::Master
        );
        assert_eq!(
            a.authenticate(&headers(&[("x-api-key", "sk-1")])).unwrap(),
            Principal::Master
        );
        assert_eq!(
            a.authenticate(&headers(&[("x-api-key", "sk-2")]))
                .unwrap_err()
                .code
                .as_deref(),
            Some("invalid_api_key")
        );
        assert_eq!(
            a.authenticate(&headers(&[])).unwrap_err().code.as_deref(),
            Some("missing_api_key")
        );
    }

    #[test]
    fn open_mode_lets_anyone_in() {
        let a = Auth::new(None, false);
        assert_eq!(a.authenticate(&headers(&[])).unwrap(), Principal::Anonymous);
        assert_eq!(
            a.authenticate(&headers(&[("x-api-key", "whatever")])).unwrap(),
            Principal::Anonymous
        );
    }
}

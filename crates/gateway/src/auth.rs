//! Who is calling. Keys are kept only as SHA-256 hashes and compared in constant time.

use std::sync::Arc;

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::error::{Error, ErrorKind};
use crate::keys::{KeyRecord, Keys, digest as hash};

/// The caller, once authenticated.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// No key was needed (auth is off).
    Anonymous,
    Master,
    /// An issued key.
    Key(Arc<KeyRecord>),
}

impl Principal {
    /// Whether this caller may administer (keys, usage): the master key, or anyone when auth is off.
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Master | Principal::Anonymous)
    }

    /// The issued key's id, if the caller used one.
    pub fn key_id(&self) -> Option<String> {
        match self {
            Principal::Key(k) => Some(k.id.clone()),
            _ => None,
        }
    }

    /// Refuses, with 403, a model this caller's key may not use.
    pub fn check_model(&self, model: &str) -> Result<(), Error> {
        match self {
            Principal::Key(k) if !k.allows(model) => Err(Error::new(
                ErrorKind::Permission,
                format!("This API key may not use the model `{model}`."),
            )
            .with_code("model_not_allowed")),
            _ => Ok(()),
        }
    }
}

#[derive(Clone)]
pub struct Auth {
    master_hash: Option<[u8; 32]>,
    required: bool,
    keys: Option<Keys>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
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
            keys: None,
        }
    }

    /// Also accepts the keys issued in this store.
    pub fn with_keys(mut self, keys: Keys) -> Auth {
        self.keys = Some(keys);
        self
    }

    pub fn keys(&self) -> Option<&Keys> {
        self.keys.as_ref()
    }

    /// An issued key, if the key with this SHA-256 is one: revoked and expired keys are refused.
    fn issued(&self, digest: &[u8; 32]) -> Option<Result<Principal, Error>> {
        let rec = self.keys.as_ref()?.lookup(digest)?;
        let now = crate::store::now_secs() as i64;
        Some(if rec.revoked {
            Err(
                Error::new(ErrorKind::Authentication, "This API key has been revoked.")
                    .with_code("revoked_api_key"),
            )
        } else if rec.expired(now) {
            Err(Error::new(ErrorKind::Authentication, "This API key has expired.")
                .with_code("expired_api_key"))
        } else {
            Ok(Principal::Key(rec))
        })
    }

    pub fn required(&self) -> bool {
        self.required
    }

    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Error> {
        let presented = presented_key(headers).filter(|k| !k.is_empty());
        // Hashed once: compared with the master key's hash, then looked up among the issued keys.
        let digest = presented.map(hash);
        if !self.required {
            return Ok(match (&digest, &self.master_hash) {
                (Some(d), Some(h)) if bool::from(d.ct_eq(h)) => Principal::Master,
                (Some(d), _) => match self.issued(d) {
                    Some(r) => r?,
                    None => Principal::Anonymous,
                },
                _ => Principal::Anonymous,
            });
        }
        let Some(digest) = digest else {
            return Err(Error::new(
                ErrorKind::Authentication,
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' or 'x-api-key: YOUR_KEY'.",
            )
            .with_code("missing_api_key"));
        };
        if let Some(h) = &self.master_hash
            && bool::from(digest.ct_eq(h))
        {
            return Ok(Principal::Master);
        }
        if let Some(r) = self.issued(&digest) {
            return r;
        }
        Err(Error::new(ErrorKind::Authentication, "Incorrect API key provided.").with_code("invalid_api_key"))
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

//! Issued API keys: `user.` or `team.` followed by 32 random bytes in base62. The secret is shown once,
//! at creation; the store keeps its SHA-256 hash and a short display prefix. Keys are read from an
//! in-memory cache that the store refreshes on every change and once a second (so a revocation made by
//! another process sharing the database takes effect within a second).

use std::sync::Arc;

use parking_lot::RwLock;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Error, ErrorKind, Result};
use crate::store::{Store, db_error};

/// One issued key, without its secret.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub kind: String,
    /// The user or team the key belongs to.
    pub owner: Option<String>,
    /// The first characters of the secret, to recognise it by.
    pub prefix: String,
    #[serde(skip)]
    pub hash: String,
    /// Model names or globs (`gpt-*`) the key may use; empty means all.
    pub models: Vec<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_parallel: Option<u64>,
    pub budget_usd: Option<f64>,
    pub budget_period: Option<String>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub created_at: i64,
}

impl KeyRecord {
    /// Whether the key may use this model.
    pub fn allows(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|g| glob(g, model))
    }

    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, s: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == s;
    };
    let Some(mut tail) = s.strip_prefix(head) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('*').collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return tail.ends_with(part);
        }
        match tail.find(part) {
            Some(pos) => tail = &tail[pos + part.len()..],
            None => return false,
        }
    }
    true
}

/// What `POST /admin/keys` takes (and `PATCH` takes any of).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeyFields {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub owner: Option<String>,
    pub models: Option<Vec<String>>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_parallel: Option<u64>,
    pub budget_usd: Option<f64>,
    pub budget_period: Option<String>,
    pub expires_at: Option<i64>,
    pub revoked: Option<bool>,
}

pub fn hash_hex(secret: &str) -> String {
    hex::encode(digest(secret))
}

/// The SHA-256 of a secret: what the key cache is keyed by, and what the master key is compared with.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// 32 random bytes in base62 (43 characters).
fn random_base62() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    // Big-endian base conversion of the 256-bit number.
    let mut digits = Vec::with_capacity(44);
    let mut n = bytes.to_vec();
    while n.iter().any(|b| *b != 0) {
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 62) as u8;
            rem = cur % 62;
        }
        digits.push(BASE62[rem as usize]);
    }
    while digits.len() < 43 {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// The key store and its cache.
#[derive(Debug, Clone)]
pub struct Keys {
    store: Store,
    /// By the SHA-256 of the secret (the stored hash, decoded), so that a lookup hashes the presented
    /// key once and formats nothing.
    cache: Arc<RwLock<foldhash::HashMap<[u8; 32], Arc<KeyRecord>>>>,
    /// Told when a key changes here, so other replicas reload at once (Redis pub/sub).
    notify: Option<tokio::sync::mpsc::UnboundedSender<()>>,
}

impl Keys {
    /// The keys of this store, loaded into the cache.
    pub async fn open(store: Store) -> Result<Keys> {
        let keys = Keys {
            store,
            cache: Arc::default(),
            notify: None,
        };
        keys.reload().await?;
        Ok(keys)
    }

    /// Sends a message on every change (for the replicas' invalidation channel).
    pub fn with_notify(mut self, tx: tokio::sync::mpsc::UnboundedSender<()>) -> Keys {
        self.notify = Some(tx);
        self
    }

    /// Rebuilds the cache from the store.
    pub async fn reload(&self) -> Result<()> {
        let all = self.list().await?;
        let map = all
            .into_iter()
            .filter_map(|k| {
                let mut d = [0u8; 32];
                match hex::decode_to_slice(&k.hash, &mut d) {
                    Ok(()) => Some((d, Arc::new(k))),
                    Err(_) => {
                        tracing::warn!(key = %k.id, "a stored key hash is not 64 hex digits; the key cannot be used");
                        None
                    }
                }
            })
            .collect();
        *self.cache.write() = map;
        Ok(())
    }

    /// Reloads once a second until dropped.
    pub async fn refresh_forever(&self) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            if let Err(e) = self.reload().await {
                tracing::warn!("could not refresh the key cache: {e}");
            }
        }
    }

    /// The key whose secret has this SHA-256 ([`digest`]), from the cache.
    pub fn lookup(&self, digest: &[u8; 32]) -> Option<Arc<KeyRecord>> {
        self.cache.read().get(digest).cloned()
    }

    fn row(r: &AnyRow) -> Result<KeyRecord> {
        let models: String = r.try_get("models").map_err(db_error)?;
        let opt_u = |k: &str| -> Result<Option<u64>> {
            Ok(r.try_get::<Option<i64>, _>(k)
                .map_err(db_error)?
                .and_then(|v| u64::try_from(v).ok()))
        };
        Ok(KeyRecord {
            id: r.try_get("id").map_err(db_error)?,
            name: r.try_get("name").map_err(db_error)?,
            kind: r.try_get("kind").map_err(db_error)?,
            owner: r.try_get("owner").map_err(db_error)?,
            prefix: r.try_get("prefix").map_err(db_error)?,
            hash: r.try_get("hash").map_err(db_error)?,
            models: serde_json::from_str(&models).unwrap_or_default(),
            rpm: opt_u("rpm")?,
            tpm: opt_u("tpm")?,
            max_parallel: opt_u("max_parallel")?,
            budget_usd: r.try_get("budget_usd").map_err(db_error)?,
            budget_period: r.try_get("budget_period").map_err(db_error)?,
            expires_at: r.try_get("expires_at").map_err(db_error)?,
            revoked: r.try_get::<i64, _>("revoked").map_err(db_error)? != 0,
            created_at: r.try_get("created_at").map_err(db_error)?,
        })
    }

    pub async fn list(&self) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.store.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(Self::row).collect()
    }

    pub async fn get(&self, id: &str) -> Result<KeyRecord> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.store.pool)
            .await
            .map_err(db_error)?;
        match row {
            Some(r) => Self::row(&r),
            None => {
                Err(Error::new(ErrorKind::NotFound, format!("No key with id `{id}`."))
                    .with_code("key_not_found"))
            }
        }
    }

    /// Issues a key; returns it and its secret (shown this once).
    pub async fn create(&self, f: KeyFields) -> Result<(KeyRecord, String)> {
        let kind = f.kind.clone().unwrap_or_else(|| "user".into());
        if kind != "user" && kind != "team" {
            return Err(Error::invalid_param("kind", "'kind' must be 'user' or 'team'."));
        }
        validate(&f)?;
        let secret = format!("{kind}.{}", random_base62());
        let id = format!("key_{}", &random_base62()[..16]);
        let rec = KeyRecord {
            id,
            name: f.name.clone().unwrap_or_default(),
            kind,
            owner: f.owner.clone(),
            prefix: secret.chars().take(12).collect(),
            hash: hash_hex(&secret),
            models: f.models.clone().unwrap_or_default(),
            rpm: f.rpm,
            tpm: f.tpm,
            max_parallel: f.max_parallel,
            budget_usd: f.budget_usd,
            budget_period: f.budget_period.clone(),
            expires_at: f.expires_at,
            revoked: false,
            created_at: crate::store::now_secs() as i64,
        };
        self.write(&rec, true).await?;
        self.changed().await?;
        Ok((rec, secret))
    }

    pub async fn update(&self, id: &str, f: KeyFields) -> Result<KeyRecord> {
        if f.kind.is_some() {
            return Err(Error::invalid_param(
                "kind",
                "A key's kind cannot change; issue a new key.",
            ));
        }
        validate(&f)?;
        let mut rec = self.get(id).await?;
        if let Some(v) = f.name {
            rec.name = v;
        }
        if let Some(v) = f.owner {
            rec.owner = Some(v);
        }
        if let Some(v) = f.models {
            rec.models = v;
        }
        rec.rpm = f.rpm.or(rec.rpm);
        rec.tpm = f.tpm.or(rec.tpm);
        rec.max_parallel = f.max_parallel.or(rec.max_parallel);
        rec.budget_usd = f.budget_usd.or(rec.budget_usd);
        rec.budget_period = f.budget_period.or(rec.budget_period);
        rec.expires_at = f.expires_at.or(rec.expires_at);
        if let Some(r) = f.revoked {
            rec.revoked = r;
        }
        self.write(&rec, false).await?;
        self.changed().await?;
        Ok(rec)
    }

    /// Reloads this cache and tells the other replicas to reload theirs.
    async fn changed(&self) -> Result<()> {
        self.reload().await?;
        if let Some(tx) = &self.notify {
            let _ = tx.send(());
        }
        Ok(())
    }

    async fn write(&self, r: &KeyRecord, insert: bool) -> Result<()> {
        let sql = if insert {
            "INSERT INTO api_keys (name, kind, prefix, hash, models, rpm, tpm, max_parallel, budget_usd, \
             budget_period, expires_at, revoked, created_at, owner, id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        } else {
            "UPDATE api_keys SET name = $1, kind = $2, prefix = $3, hash = $4, models = $5, rpm = $6, \
             tpm = $7, max_parallel = $8, budget_usd = $9, budget_period = $10, expires_at = $11, \
             revoked = $12, created_at = $13, owner = $14 WHERE id = $15"
        };
        let to_i = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
        sqlx::query(sql)
            .bind(&r.name)
            .bind(&r.kind)
            .bind(&r.prefix)
            .bind(&r.hash)
            .bind(serde_json::to_string(&r.models).unwrap_or_else(|_| "[]".into()))
            .bind(to_i(r.rpm))
            .bind(to_i(r.tpm))
            .bind(to_i(r.max_parallel))
            .bind(r.budget_usd)
            .bind(&r.budget_period)
            .bind(r.expires_at)
            .bind(i64::from(r.revoked))
            .bind(r.created_at)
            .bind(&r.owner)
            .bind(&r.id)
            .execute(&self.store.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

fn validate(f: &KeyFields) -> Result<()> {
    if let Some(p) = &f.budget_period
        && !matches!(p.as_str(), "daily" | "weekly" | "monthly")
    {
        return Err(Error::invalid_param(
            "budget_period",
            "'budget_period' must be 'daily', 'weekly' or 'monthly'.",
        ));
    }
    if f.budget_usd.is_some_and(|b| !(b.is_finite() && b >= 0.0)) {
        return Err(Error::invalid_param(
            "budget_usd",
            "'budget_usd' must be a number >= 0.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_models() {
        assert!(glob("gpt-*", "gpt-4o"));
        assert!(glob("*", "anything"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("gpt-*", "claude"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn secrets_are_base62_of_32_bytes() {
        let s = random_base62();
        assert_eq!(s.len(), 43);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(s, random_base62());
    }
}

-- Issued API keys. Only a SHA-256 hash of the secret and a short display prefix are kept.
CREATE TABLE IF NOT EXISTS api_keys (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('user', 'team')),
    prefix        TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    models        TEXT NOT NULL DEFAULT '[]',
    rpm           INTEGER,
    tpm           INTEGER,
    max_parallel  INTEGER,
    budget_usd    REAL,
    budget_period TEXT,
    expires_at    INTEGER,
    revoked       INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

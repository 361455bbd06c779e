-- Issued API keys. Only a SHA-256 hash of the secret and a short display prefix are kept.
CREATE TABLE IF NOT EXISTS api_keys (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    owner         TEXT,
    kind          TEXT NOT NULL CHECK (kind IN ('user', 'team')),
    prefix        TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    models        TEXT NOT NULL DEFAULT '[]',
    rpm           BIGINT,
    tpm           BIGINT,
    max_parallel  BIGINT,
    budget_usd    DOUBLE PRECISION,
    budget_period TEXT,
    expires_at    BIGINT,
    revoked       BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL
);

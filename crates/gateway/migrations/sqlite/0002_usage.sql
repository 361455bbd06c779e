-- Who a key belongs to (a user or a team name), for usage grouped by owner.
ALTER TABLE api_keys ADD COLUMN owner TEXT;

-- One row per request (success, error or refusal). `id` is made by the gateway, so a row replayed
-- from the journal after a crash or an outage is written once.
CREATE TABLE IF NOT EXISTS usage_log (
    id             TEXT PRIMARY KEY,
    request_id     TEXT NOT NULL,
    ts             INTEGER NOT NULL,
    key_id         TEXT,
    surface        TEXT NOT NULL,
    model          TEXT NOT NULL,
    provider       TEXT,
    upstream_model TEXT,
    input_tokens   INTEGER NOT NULL DEFAULT 0,
    output_tokens  INTEGER NOT NULL DEFAULT 0,
    cached_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_usd       REAL,
    latency_ms     INTEGER NOT NULL,
    ttft_ms        INTEGER,
    status         INTEGER NOT NULL,
    error_kind     TEXT
);
CREATE INDEX IF NOT EXISTS usage_log_ts ON usage_log (ts);
CREATE INDEX IF NOT EXISTS usage_log_key_ts ON usage_log (key_id, ts);

-- One row per request (success, error or refusal). `id` is made by the gateway, so a row replayed
-- from the journal after a crash or an outage is written once.
CREATE TABLE IF NOT EXISTS usage_log (
    id             TEXT PRIMARY KEY,
    request_id     TEXT NOT NULL,
    ts             BIGINT NOT NULL,
    key_id         TEXT,
    surface        TEXT NOT NULL,
    model          TEXT NOT NULL,
    provider       TEXT,
    upstream_model TEXT,
    input_tokens   BIGINT NOT NULL DEFAULT 0,
    output_tokens  BIGINT NOT NULL DEFAULT 0,
    cached_tokens  BIGINT NOT NULL DEFAULT 0,
    cost_usd       DOUBLE PRECISION,
    latency_ms     BIGINT NOT NULL,
    ttft_ms        BIGINT,
    status         BIGINT NOT NULL,
    error_kind     TEXT
);
CREATE INDEX IF NOT EXISTS usage_log_ts ON usage_log (ts);
CREATE INDEX IF NOT EXISTS usage_log_key_ts ON usage_log (key_id, ts);

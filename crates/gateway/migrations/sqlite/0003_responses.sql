-- Stored Responses API answers: the response object, this request's input items, and the whole
-- conversation up to and including its output (what previous_response_id continues from).
CREATE TABLE IF NOT EXISTS responses (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    response    TEXT NOT NULL,
    input_items TEXT NOT NULL,
    context     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_owner ON responses (owner, created_at);

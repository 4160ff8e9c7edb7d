-- Webhook endpoints and their outbox: events, one delivery per event and endpoint, attempts.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    settings TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    disabled_reason TEXT,
    secret_nonce BYTEA NOT NULL,
    secret_ciphertext BYTEA NOT NULL,
    previous_nonce BYTEA,
    previous_ciphertext BYTEA,
    previous_until_ms BIGINT,
    failing_since_ms BIGINT,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX webhooks_account ON webhooks(account_id, created_at_ms);

CREATE TABLE webhook_events (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    type TEXT NOT NULL,
    dedupe_key TEXT,
    payload TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
-- Once per account and key: a threshold crossing fires once, whoever writes it.
CREATE UNIQUE INDEX webhook_events_dedupe ON webhook_events(account_id, dedupe_key)
    WHERE dedupe_key IS NOT NULL;

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT,
    claimed_until_ms BIGINT NOT NULL DEFAULT 0,
    last_attempt_at_ms BIGINT,
    last_status INTEGER,
    last_latency_ms BIGINT,
    last_error TEXT,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(state, next_attempt_at_ms);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, created_at_ms);

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at_ms BIGINT NOT NULL,
    status INTEGER,
    latency_ms BIGINT NOT NULL,
    error TEXT,
    PRIMARY KEY (delivery_id, attempt)
);

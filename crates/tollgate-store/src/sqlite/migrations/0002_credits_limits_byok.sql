-- 2: credits, per-key limits, bring-your-own-key
ALTER TABLE usage_records ADD COLUMN charged_nanos INTEGER NOT NULL DEFAULT 0;
UPDATE usage_records SET charged_nanos = cost_nanos WHERE source = 'platform';
ALTER TABLE usage_rollup_minute ADD COLUMN charged_nanos INTEGER NOT NULL DEFAULT 0;
UPDATE usage_rollup_minute SET charged_nanos = cost_nanos WHERE source = 'platform';
ALTER TABLE usage_rollup_hour ADD COLUMN charged_nanos INTEGER NOT NULL DEFAULT 0;
UPDATE usage_rollup_hour SET charged_nanos = cost_nanos WHERE source = 'platform';
CREATE TABLE credit_entries (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    kind TEXT NOT NULL CHECK (kind IN ('grant', 'refund')),
    amount_nanos INTEGER NOT NULL CHECK (amount_nanos > 0),
    idempotency_key TEXT,
    note TEXT,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (account_id, idempotency_key)
);
CREATE INDEX credit_entries_account ON credit_entries(account_id, created_at_ms);
ALTER TABLE api_keys ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
CREATE TABLE provider_keys (
    account_id TEXT NOT NULL REFERENCES accounts(id),
    provider TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    last4 TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (account_id, provider)
);

-- 1: the whole schema as of tollgate 0.1 (SQLite's migrations 1-5 in one step), plus what only
-- several replicas need: the credit pool and per-replica leases. Integer columns are BIGINT:
-- PostgreSQL raises an error on overflow instead of changing type, and the CHECKs refuse
-- negative token and money counts, so a bad record is refused, never summed.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    disabled BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    last4 TEXT NOT NULL,
    prefix TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT,
    limits TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX api_keys_account ON api_keys(account_id);

-- Raw records, one partition per UTC month (created on demand by the writer), so retention
-- drops whole partitions. A primary key of a partitioned table must contain the partition key:
-- (request_id, created_at_ms). A record's created_at_ms is fixed when the request starts and
-- travels with it through the journal, so a replayed record always meets its first copy here.
CREATE TABLE usage_records (
    request_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model_requested TEXT NOT NULL,
    model_served TEXT NOT NULL,
    provider TEXT NOT NULL,
    owned_by TEXT NOT NULL,
    source TEXT NOT NULL,
    input_tokens BIGINT NOT NULL CHECK (input_tokens >= 0),
    output_tokens BIGINT NOT NULL CHECK (output_tokens >= 0),
    cached_tokens BIGINT NOT NULL CHECK (cached_tokens >= 0),
    cache_write_tokens BIGINT NOT NULL CHECK (cache_write_tokens >= 0),
    reasoning_tokens BIGINT NOT NULL CHECK (reasoning_tokens >= 0),
    cost_nanos BIGINT NOT NULL CHECK (cost_nanos >= 0),
    price_input BIGINT NOT NULL,
    price_output BIGINT NOT NULL,
    price_cached_input BIGINT NOT NULL,
    price_cache_write BIGINT NOT NULL,
    status TEXT NOT NULL,
    http_status INTEGER NOT NULL,
    error_code TEXT,
    latency_ms BIGINT NOT NULL,
    ttft_ms BIGINT,
    streamed BOOLEAN NOT NULL,
    provenance TEXT NOT NULL,
    charged_nanos BIGINT NOT NULL CHECK (charged_nanos >= 0),
    anomaly TEXT,
    PRIMARY KEY (request_id, created_at_ms)
) PARTITION BY RANGE (created_at_ms);
CREATE INDEX usage_records_account_time ON usage_records(account_id, created_at_ms);
CREATE INDEX usage_records_key_time ON usage_records(key_id, created_at_ms);
CREATE INDEX usage_records_account_model_time ON usage_records(account_id, model_requested, created_at_ms);

CREATE TABLE usage_rollup_minute (
    bucket_ms BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    source TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    requests BIGINT NOT NULL,
    success BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_nanos BIGINT NOT NULL,
    charged_nanos BIGINT NOT NULL,
    PRIMARY KEY (account_id, bucket_ms, key_id, model, provider, source, endpoint)
);
CREATE TABLE usage_rollup_hour (LIKE usage_rollup_minute INCLUDING ALL);
CREATE TABLE usage_rollup_day (LIKE usage_rollup_minute INCLUDING ALL);
CREATE INDEX usage_rollup_hour_key ON usage_rollup_hour(key_id, bucket_ms);

CREATE TABLE credit_entries (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    kind TEXT NOT NULL CHECK (kind IN ('grant', 'refund')),
    amount_nanos BIGINT NOT NULL CHECK (amount_nanos > 0),
    idempotency_key TEXT,
    note TEXT,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (account_id, idempotency_key)
);
CREATE INDEX credit_entries_account ON credit_entries(account_id, created_at_ms);

CREATE TABLE provider_keys (
    account_id TEXT NOT NULL REFERENCES accounts(id),
    provider TEXT NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    last4 TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, provider)
);

-- An account's balance = available + the sum of its leases = grants + refunds - charges.
-- Grants add to available; a replica moves balance from available into its lease with one
-- conditional UPDATE; the records a replica writes take their charges from its lease.
CREATE TABLE credit_pools (
    account_id TEXT PRIMARY KEY REFERENCES accounts(id),
    available_nanos BIGINT NOT NULL
);
CREATE TABLE credit_leases (
    account_id TEXT NOT NULL REFERENCES accounts(id),
    replica_id TEXT NOT NULL,
    amount_nanos BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, replica_id)
);
CREATE INDEX credit_leases_replica ON credit_leases(replica_id);

-- 6: who spent it. Each record keeps its end user and canonical tags ("k=v,k=v"); the
-- attribution rollups keep, per grain, a row per (user or tag, main rollup key), so usage
-- filtered by a user or a tag, or grouped by user, reads rollup rows as any other query does.
ALTER TABLE usage_records ADD COLUMN end_user TEXT;
ALTER TABLE usage_records ADD COLUMN tags TEXT;
-- Which price table priced the record (a content hash of its unit prices), for audits.
ALTER TABLE usage_records ADD COLUMN price_version TEXT;
CREATE INDEX usage_records_account_user_time ON usage_records (account_id, end_user, created_at_ms)
    WHERE end_user IS NOT NULL;

CREATE TABLE usage_attr_minute (
    bucket_ms BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    attr_kind TEXT NOT NULL,
    attr_value TEXT NOT NULL,
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
    PRIMARY KEY (account_id, attr_kind, attr_value, bucket_ms, key_id, model, provider, source, endpoint)
);
CREATE TABLE usage_attr_hour (LIKE usage_attr_minute INCLUDING ALL);
CREATE TABLE usage_attr_day (LIKE usage_attr_minute INCLUDING ALL);
-- Grouping by user reads one range per account and grain rather than every user's history.
CREATE INDEX usage_attr_minute_time ON usage_attr_minute (account_id, attr_kind, bucket_ms);
CREATE INDEX usage_attr_hour_time ON usage_attr_hour (account_id, attr_kind, bucket_ms);
CREATE INDEX usage_attr_day_time ON usage_attr_day (account_id, attr_kind, bucket_ms);

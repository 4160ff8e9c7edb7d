-- 10: who spent it. Each record keeps its end user and canonical tags ("k=v,k=v"); the
-- attribution rollups keep, per grain, a row per (user or tag, main rollup key), so usage
-- filtered by a user or a tag, or grouped by user, reads rollup rows as any other query does.
ALTER TABLE usage_records ADD COLUMN end_user TEXT;
ALTER TABLE usage_records ADD COLUMN tags TEXT;
-- Which price table priced the record (a content hash of its unit prices), for audits.
ALTER TABLE usage_records ADD COLUMN price_version TEXT;
-- Exports and record pages filtered by user walk this instead of the account's every record.
CREATE INDEX usage_records_account_user_time ON usage_records (account_id, end_user, created_at_ms)
    WHERE end_user IS NOT NULL;

CREATE TABLE usage_attr_minute (
    bucket_ms INTEGER NOT NULL,
    account_id TEXT NOT NULL,
    attr_kind TEXT NOT NULL,
    attr_value TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    source TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    requests INTEGER NOT NULL,
    success INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL,
    charged_nanos INTEGER NOT NULL,
    PRIMARY KEY (account_id, attr_kind, attr_value, bucket_ms, key_id, model, provider, source, endpoint)
) WITHOUT ROWID;
CREATE TABLE usage_attr_hour (
    bucket_ms INTEGER NOT NULL,
    account_id TEXT NOT NULL,
    attr_kind TEXT NOT NULL,
    attr_value TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    source TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    requests INTEGER NOT NULL,
    success INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL,
    charged_nanos INTEGER NOT NULL,
    PRIMARY KEY (account_id, attr_kind, attr_value, bucket_ms, key_id, model, provider, source, endpoint)
) WITHOUT ROWID;
CREATE TABLE usage_attr_day (
    bucket_ms INTEGER NOT NULL,
    account_id TEXT NOT NULL,
    attr_kind TEXT NOT NULL,
    attr_value TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    source TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    requests INTEGER NOT NULL,
    success INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL,
    charged_nanos INTEGER NOT NULL,
    PRIMARY KEY (account_id, attr_kind, attr_value, bucket_ms, key_id, model, provider, source, endpoint)
) WITHOUT ROWID;
-- Grouping by user reads one range per account and grain rather than every user's history.
CREATE INDEX usage_attr_minute_time ON usage_attr_minute (account_id, attr_kind, bucket_ms);
CREATE INDEX usage_attr_hour_time ON usage_attr_hour (account_id, attr_kind, bucket_ms);
CREATE INDEX usage_attr_day_time ON usage_attr_day (account_id, attr_kind, bucket_ms);

CREATE TRIGGER usage_attr_minute_guard BEFORE UPDATE ON usage_attr_minute
WHEN typeof(NEW.requests) != 'integer' OR typeof(NEW.success) != 'integer'
  OR typeof(NEW.input_tokens) != 'integer' OR typeof(NEW.output_tokens) != 'integer'
  OR typeof(NEW.cached_tokens) != 'integer' OR typeof(NEW.reasoning_tokens) != 'integer'
  OR typeof(NEW.cost_nanos) != 'integer' OR typeof(NEW.charged_nanos) != 'integer'
BEGIN
  SELECT RAISE(ABORT, 'usage rollup: a sum left the integer range');
END;
CREATE TRIGGER usage_attr_hour_guard BEFORE UPDATE ON usage_attr_hour
WHEN typeof(NEW.requests) != 'integer' OR typeof(NEW.success) != 'integer'
  OR typeof(NEW.input_tokens) != 'integer' OR typeof(NEW.output_tokens) != 'integer'
  OR typeof(NEW.cached_tokens) != 'integer' OR typeof(NEW.reasoning_tokens) != 'integer'
  OR typeof(NEW.cost_nanos) != 'integer' OR typeof(NEW.charged_nanos) != 'integer'
BEGIN
  SELECT RAISE(ABORT, 'usage rollup: a sum left the integer range');
END;
CREATE TRIGGER usage_attr_day_guard BEFORE UPDATE ON usage_attr_day
WHEN typeof(NEW.requests) != 'integer' OR typeof(NEW.success) != 'integer'
  OR typeof(NEW.input_tokens) != 'integer' OR typeof(NEW.output_tokens) != 'integer'
  OR typeof(NEW.cached_tokens) != 'integer' OR typeof(NEW.reasoning_tokens) != 'integer'
  OR typeof(NEW.cost_nanos) != 'integer' OR typeof(NEW.charged_nanos) != 'integer'
BEGIN
  SELECT RAISE(ABORT, 'usage rollup: a sum left the integer range');
END;

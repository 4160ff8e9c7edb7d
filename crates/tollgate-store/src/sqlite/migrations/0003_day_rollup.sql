-- 3: usage APIs: a UTC-day rollup (backfilled from the hour rollup) so day/week/month queries
-- read one row per day and group; an index for a model's recent requests.
CREATE TABLE usage_rollup_day (
    bucket_ms INTEGER NOT NULL,
    account_id TEXT NOT NULL,
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
    charged_nanos INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, bucket_ms, key_id, model, provider, source, endpoint)
) WITHOUT ROWID;
INSERT INTO usage_rollup_day
SELECT (bucket_ms / 86400000) * 86400000, account_id, key_id, model, provider, source, endpoint,
       SUM(requests), SUM(success), SUM(input_tokens), SUM(output_tokens), SUM(cached_tokens),
       SUM(reasoning_tokens), SUM(cost_nanos), SUM(charged_nanos)
FROM usage_rollup_hour
GROUP BY 1, account_id, key_id, model, provider, source, endpoint;
CREATE INDEX usage_records_account_model_time ON usage_records(account_id, model_requested, created_at_ms);

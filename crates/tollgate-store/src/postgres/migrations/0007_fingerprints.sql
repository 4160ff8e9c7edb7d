-- 7: request fingerprints for the insights: keyed hashes (64 bits) of the request's body and
-- of its conversation's opening; the prompt itself is never stored. Old records have none.
ALTER TABLE usage_records ADD COLUMN fingerprint BIGINT;
ALTER TABLE usage_records ADD COLUMN conversation BIGINT;

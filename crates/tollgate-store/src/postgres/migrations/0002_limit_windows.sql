-- Per-key limit windows shared by replicas (rpm, tpm, spend per period): what all replicas
-- together took of each window. A replica takes a slice when its own runs out, never per
-- request; `used` never exceeds `limit` by a take (only by tokens counted after the fact).
CREATE TABLE limit_windows (
    key_id TEXT NOT NULL,
    kind SMALLINT NOT NULL,
    window_start_ms BIGINT NOT NULL,
    window_end_ms BIGINT NOT NULL,
    used BIGINT NOT NULL CHECK (used >= 0),
    PRIMARY KEY (key_id, kind, window_start_ms)
);
CREATE INDEX limit_windows_end ON limit_windows (window_end_ms);

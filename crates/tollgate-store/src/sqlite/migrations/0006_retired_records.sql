-- What retention dropped, per account, so the credit audit still adds up: the charges of the
-- records that are gone (their rollups stay), kept with the records that remain.
CREATE TABLE retired_records (
    account_id TEXT PRIMARY KEY,
    records INTEGER NOT NULL,
    charged_nanos INTEGER NOT NULL
);

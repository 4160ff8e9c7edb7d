//! The embedded store: SQLite in WAL mode, one writer connection and one reader connection,
//! driven from blocking threads so the async runtime never waits on disk.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{
    Account, ApiKeyRecord, CreditEntry, CreditKind, CreditTotals, KeyLimits, RecordQuery, Role,
    Status, Store, StoreError, StoredProviderKey, UsageRecord,
};
use crate::metering::Provenance;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// Versioned schema steps; each runs once, in order.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    last4 TEXT NOT NULL,
    prefix TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX api_keys_account ON api_keys(account_id);
CREATE TABLE usage_records (
    request_id TEXT PRIMARY KEY,
    created_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER NOT NULL,
    account_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model_requested TEXT NOT NULL,
    model_served TEXT NOT NULL,
    provider TEXT NOT NULL,
    owned_by TEXT NOT NULL,
    source TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL,
    price_input INTEGER NOT NULL,
    price_output INTEGER NOT NULL,
    price_cached_input INTEGER NOT NULL,
    price_cache_write INTEGER NOT NULL,
    status TEXT NOT NULL,
    http_status INTEGER NOT NULL,
    error_code TEXT,
    latency_ms INTEGER NOT NULL,
    ttft_ms INTEGER,
    streamed INTEGER NOT NULL,
    provenance TEXT NOT NULL
);
CREATE INDEX usage_records_account_time ON usage_records(account_id, created_at_ms);
CREATE INDEX usage_records_key_time ON usage_records(key_id, created_at_ms);
CREATE TABLE usage_rollup_minute (
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
    PRIMARY KEY (account_id, bucket_ms, key_id, model, provider, source, endpoint)
) WITHOUT ROWID;
CREATE TABLE usage_rollup_hour (
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
    PRIMARY KEY (account_id, bucket_ms, key_id, model, provider, source, endpoint)
) WITHOUT ROWID;
"#,
    r#"
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
"#,
    r#"
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
"#,
];

pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -16384;
         PRAGMA foreign_keys = ON;",
    )?;
    Ok(conn)
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Db(format!("{}: {e}", dir.display())))?;
        }
        let writer = open(path)?;
        migrate(&writer)?;
        let reader = open(path)?;
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    pub(crate) async fn with_writer<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.writer.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock()))
            .await
            .map_err(|e| StoreError::Db(e.to_string()))?
    }

    pub(crate) async fn with_reader<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.reader.clone();
        tokio::task::spawn_blocking(move || f(&conn.lock()))
            .await
            .map_err(|e| StoreError::Db(e.to_string()))?
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    for (i, step) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version > current {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(step)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [version],
            )?;
            tx.commit()?;
        }
    }
    Ok(())
}

pub(crate) const RECORD_COLUMNS: &str =
    "request_id, created_at_ms, finished_at_ms, account_id, key_id, endpoint, \
    model_requested, model_served, provider, owned_by, source, input_tokens, output_tokens, \
    cached_tokens, cache_write_tokens, reasoning_tokens, cost_nanos, price_input, price_output, \
    price_cached_input, price_cache_write, status, http_status, error_code, latency_ms, ttft_ms, \
    streamed, provenance, charged_nanos";

pub(crate) fn record_from_row(r: &Row<'_>) -> rusqlite::Result<UsageRecord> {
    let status: String = r.get(21)?;
    let provenance: String = r.get(27)?;
    Ok(UsageRecord {
        request_id: r.get(0)?,
        created_at_ms: r.get(1)?,
        finished_at_ms: r.get(2)?,
        account_id: r.get(3)?,
        key_id: r.get(4)?,
        endpoint: r.get(5)?,
        model_requested: r.get(6)?,
        model_served: r.get(7)?,
        provider: r.get(8)?,
        owned_by: r.get(9)?,
        source: r.get(10)?,
        input_tokens: r.get(11)?,
        output_tokens: r.get(12)?,
        cached_tokens: r.get(13)?,
        cache_write_tokens: r.get(14)?,
        reasoning_tokens: r.get(15)?,
        cost_nanos: r.get(16)?,
        price_input: r.get(17)?,
        price_output: r.get(18)?,
        price_cached_input: r.get(19)?,
        price_cache_write: r.get(20)?,
        status: Status::parse(&status),
        http_status: r.get(22)?,
        error_code: r.get(23)?,
        latency_ms: r.get(24)?,
        ttft_ms: r.get(25)?,
        streamed: r.get(26)?,
        provenance: if provenance == "estimated" {
            Provenance::Estimated
        } else {
            Provenance::Provider
        },
        charged_nanos: r.get(28)?,
    })
}

fn account_from_row(r: &Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at_ms: r.get(2)?,
        disabled: r.get(3)?,
    })
}

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    let role: String = r.get(6)?;
    Ok(ApiKeyRecord {
        id: r.get(0)?,
        account_id: r.get(1)?,
        name: r.get(2)?,
        key_hash: r.get(3)?,
        last4: r.get(4)?,
        prefix: r.get(5)?,
        role: if role == "admin" {
            Role::Admin
        } else {
            Role::User
        },
        created_at_ms: r.get(7)?,
        revoked_at_ms: r.get(8)?,
        limits: serde_json::from_str(&r.get::<_, String>(9)?).unwrap_or_default(),
    })
}

const KEY_COLUMNS: &str =
    "id, account_id, name, key_hash, last4, prefix, role, created_at_ms, revoked_at_ms, limits";

fn rollup_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} (bucket_ms, account_id, key_id, model, provider, source, endpoint, \
         requests, success, input_tokens, output_tokens, cached_tokens, reasoning_tokens, cost_nanos, \
         charged_nanos) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
         ON CONFLICT (account_id, bucket_ms, key_id, model, provider, source, endpoint) DO UPDATE SET \
         requests = requests + excluded.requests, success = success + excluded.success, \
         input_tokens = input_tokens + excluded.input_tokens, \
         output_tokens = output_tokens + excluded.output_tokens, \
         cached_tokens = cached_tokens + excluded.cached_tokens, \
         reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, \
         cost_nanos = cost_nanos + excluded.cost_nanos, \
         charged_nanos = charged_nanos + excluded.charged_nanos"
    )
}

/// One rollup row's increments.
#[derive(Default)]
struct RollupSums {
    requests: i64,
    success: i64,
    input_tokens: i64,
    output_tokens: i64,
    cached_tokens: i64,
    reasoning_tokens: i64,
    cost_nanos: i64,
    charged_nanos: i64,
}

/// (bucket_ms, account, key, model, provider, source, endpoint)
type RollupKey<'a> = (i64, &'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

const ROLLUPS: [(&str, i64); 3] = [
    ("usage_rollup_minute", MINUTE_MS),
    ("usage_rollup_hour", HOUR_MS),
    ("usage_rollup_day", DAY_MS),
];

fn insert_batch(conn: &mut Connection, batch: &[UsageRecord]) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
    let mut inserted = 0;
    {
        let mut ins = tx.prepare_cached(&format!(
            "INSERT OR IGNORE INTO usage_records ({RECORD_COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
              ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29)"
        ))?;
        // Rollup increments are summed in memory first: a batch of many requests from a few
        // keys and models becomes a few upserts per table rather than three per record.
        let mut sums: [std::collections::HashMap<RollupKey<'_>, RollupSums>; 3] =
            Default::default();
        for r in batch {
            let n = ins.execute(params![
                r.request_id,
                r.created_at_ms,
                r.finished_at_ms,
                r.account_id,
                r.key_id,
                r.endpoint,
                r.model_requested,
                r.model_served,
                r.provider,
                r.owned_by,
                r.source,
                r.input_tokens,
                r.output_tokens,
                r.cached_tokens,
                r.cache_write_tokens,
                r.reasoning_tokens,
                r.cost_nanos,
                r.price_input,
                r.price_output,
                r.price_cached_input,
                r.price_cache_write,
                r.status.as_str(),
                r.http_status,
                r.error_code,
                r.latency_ms,
                r.ttft_ms,
                r.streamed,
                r.provenance.as_str(),
                r.charged_nanos,
            ])?;
            // Rollups grow only with records that are new, so a replayed journal entry is not
            // counted twice.
            if n == 0 {
                continue;
            }
            inserted += 1;
            for (table, (_, width)) in sums.iter_mut().zip(ROLLUPS) {
                let key = (
                    r.created_at_ms.div_euclid(width) * width,
                    r.account_id.as_str(),
                    r.key_id.as_str(),
                    r.model_requested.as_str(),
                    r.provider.as_str(),
                    r.source.as_str(),
                    r.endpoint.as_str(),
                );
                let s = table.entry(key).or_default();
                s.requests += 1;
                s.success += i64::from(r.status == Status::Success);
                s.input_tokens += r.input_tokens;
                s.output_tokens += r.output_tokens;
                s.cached_tokens += r.cached_tokens;
                s.reasoning_tokens += r.reasoning_tokens;
                s.cost_nanos += r.cost_nanos;
                s.charged_nanos += r.charged_nanos;
            }
        }
        for (table, (name, _)) in sums.iter().zip(ROLLUPS) {
            let mut up = tx.prepare_cached(&rollup_sql(name))?;
            for (k, s) in table {
                up.execute(params![
                    k.0,
                    k.1,
                    k.2,
                    k.3,
                    k.4,
                    k.5,
                    k.6,
                    s.requests,
                    s.success,
                    s.input_tokens,
                    s.output_tokens,
                    s.cached_tokens,
                    s.reasoning_tokens,
                    s.cost_nanos,
                    s.charged_nanos,
                ])?;
            }
        }
    }
    tx.commit()?;
    Ok(inserted)
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_usage(&self, batch: Vec<UsageRecord>) -> Result<usize, StoreError> {
        self.with_writer(move |c| insert_batch(c, &batch)).await
    }

    async fn get_usage(&self, request_id: &str) -> Result<Option<UsageRecord>, StoreError> {
        let id = request_id.to_string();
        self.with_reader(move |c| {
            Ok(c.query_row(
                &format!("SELECT {RECORD_COLUMNS} FROM usage_records WHERE request_id = ?1"),
                [id],
                record_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn list_usage(&self, q: RecordQuery) -> Result<Vec<UsageRecord>, StoreError> {
        self.with_reader(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM usage_records \
                 WHERE (?1 IS NULL OR account_id = ?1) AND (?2 IS NULL OR key_id = ?2) \
                 ORDER BY created_at_ms DESC, request_id DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(
                params![q.account_id, q.key_id, q.limit as i64],
                record_from_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn count_usage(&self) -> Result<i64, StoreError> {
        self.with_reader(|c| {
            Ok(c.query_row("SELECT COUNT(*) FROM usage_records", [], |r| r.get(0))?)
        })
        .await
    }

    async fn create_account(&self, a: Account) -> Result<(), StoreError> {
        self.with_writer(move |c| {
            c.execute(
                "INSERT INTO accounts (id, name, created_at_ms, disabled) VALUES (?1, ?2, ?3, ?4)",
                params![a.id, a.name, a.created_at_ms, a.disabled],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let id = id.to_string();
        self.with_reader(move |c| {
            Ok(c.query_row(
                "SELECT id, name, created_at_ms, disabled FROM accounts WHERE id = ?1",
                [id],
                account_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, name, created_at_ms, disabled FROM accounts ORDER BY created_at_ms, id",
            )?;
            let rows = stmt.query_map([], account_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn create_key(&self, k: ApiKeyRecord) -> Result<(), StoreError> {
        self.with_writer(move |c| {
            c.execute(
                &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    k.id,
                    k.account_id,
                    k.name,
                    k.key_hash,
                    k.last4,
                    k.prefix,
                    k.role.as_str(),
                    k.created_at_ms,
                    k.revoked_at_ms,
                    serde_json::to_string(&k.limits).map_err(|e| StoreError::Db(e.to_string()))?
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn find_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let hash = hash.to_string();
        self.with_reader(move |c| {
            Ok(c.query_row(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?1"),
                [hash],
                key_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let id = id.to_string();
        self.with_reader(move |c| {
            Ok(c.query_row(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"),
                [id],
                key_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn list_keys(&self, account_id: Option<String>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.with_reader(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE (?1 IS NULL OR account_id = ?1) \
                 ORDER BY created_at_ms, id"
            ))?;
            let rows = stmt.query_map([account_id], key_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.with_writer(move |c| {
            let n = c.execute(
                "UPDATE api_keys SET revoked_at_ms = COALESCE(revoked_at_ms, ?2) WHERE id = ?1",
                params![id, at_ms],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn count_admin_keys(&self) -> Result<i64, StoreError> {
        self.with_reader(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM api_keys WHERE role = 'admin' AND revoked_at_ms IS NULL",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    async fn update_key_limits(&self, id: &str, limits: KeyLimits) -> Result<bool, StoreError> {
        let id = id.to_string();
        let json = serde_json::to_string(&limits).map_err(|e| StoreError::Db(e.to_string()))?;
        self.with_writer(move |c| {
            Ok(c.execute(
                "UPDATE api_keys SET limits = ?2 WHERE id = ?1",
                params![id, json],
            )? > 0)
        })
        .await
    }

    async fn set_account_disabled(&self, id: &str, disabled: bool) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.with_writer(move |c| {
            Ok(c.execute(
                "UPDATE accounts SET disabled = ?2 WHERE id = ?1",
                params![id, disabled],
            )? > 0)
        })
        .await
    }

    async fn add_credit(&self, e: CreditEntry) -> Result<(CreditEntry, bool), StoreError> {
        self.with_writer(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "INSERT INTO credit_entries (id, account_id, kind, amount_nanos, idempotency_key, note, created_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (account_id, idempotency_key) DO NOTHING",
                params![e.id, e.account_id, e.kind.as_str(), e.amount_nanos, e.idempotency_key, e.note, e.created_at_ms],
            )?;
            if n == 1 {
                tx.commit()?;
                return Ok((e, true));
            }
            let existing = tx.query_row(
                &format!("SELECT {CREDIT_COLUMNS} FROM credit_entries WHERE account_id = ?1 AND idempotency_key = ?2"),
                params![e.account_id, e.idempotency_key],
                credit_from_row,
            )?;
            if existing.kind != e.kind || existing.amount_nanos != e.amount_nanos {
                return Err(StoreError::Conflict(format!(
                    "idempotency key {:?} was already used for a different {} of {} nano-USD",
                    e.idempotency_key.unwrap_or_default(),
                    existing.kind.as_str(),
                    existing.amount_nanos
                )));
            }
            Ok((existing, false))
        })
        .await
    }

    async fn list_credits(
        &self,
        account_id: &str,
        limit: usize,
    ) -> Result<Vec<CreditEntry>, StoreError> {
        let account_id = account_id.to_string();
        self.with_reader(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {CREDIT_COLUMNS} FROM credit_entries WHERE account_id = ?1 ORDER BY created_at_ms DESC, id DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![account_id, limit as i64], credit_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn credit_totals(
        &self,
        account_id: &str,
        audit: bool,
    ) -> Result<CreditTotals, StoreError> {
        let account_id = account_id.to_string();
        self.with_reader(move |c| {
            let (grants, refunds): (i64, i64) = c.query_row(
                "SELECT COALESCE(SUM(CASE WHEN kind = 'grant' THEN amount_nanos END), 0), \
                        COALESCE(SUM(CASE WHEN kind = 'refund' THEN amount_nanos END), 0) \
                 FROM credit_entries WHERE account_id = ?1",
                [&account_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let charges: i64 = c.query_row(
                "SELECT COALESCE(SUM(charged_nanos), 0) FROM usage_rollup_hour WHERE account_id = ?1",
                [&account_id],
                |r| r.get(0),
            )?;
            let records = if audit {
                Some(c.query_row(
                    "SELECT COALESCE(SUM(charged_nanos), 0) FROM usage_records WHERE account_id = ?1",
                    [&account_id],
                    |r| r.get(0),
                )?)
            } else {
                None
            };
            Ok(CreditTotals {
                grants_nanos: grants,
                refunds_nanos: refunds,
                charges_nanos: charges,
                charges_nanos_records: records,
            })
        })
        .await
    }

    async fn key_spend_since(&self, key_id: &str, since_ms: i64) -> Result<i64, StoreError> {
        let key_id = key_id.to_string();
        // The rollup's primary key leads with account_id; this scan is per key, once per key and
        // period per process.
        self.with_reader(move |c| {
            Ok(c.query_row(
                "SELECT COALESCE(SUM(cost_nanos), 0) FROM usage_rollup_hour WHERE key_id = ?1 AND bucket_ms >= ?2",
                params![key_id, since_ms],
                |r| r.get(0),
            )?)
        })
        .await
    }

    async fn put_provider_key(&self, k: StoredProviderKey) -> Result<(), StoreError> {
        self.with_writer(move |c| {
            c.execute(
                "INSERT INTO provider_keys (account_id, provider, nonce, ciphertext, last4, created_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (account_id, provider) DO UPDATE SET \
                 nonce = excluded.nonce, ciphertext = excluded.ciphertext, last4 = excluded.last4, \
                 created_at_ms = excluded.created_at_ms",
                params![k.account_id, k.provider, k.nonce, k.ciphertext, k.last4, k.created_at_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_provider_key(
        &self,
        account_id: &str,
        provider: &str,
    ) -> Result<bool, StoreError> {
        let (a, p) = (account_id.to_string(), provider.to_string());
        self.with_writer(move |c| {
            Ok(c.execute(
                "DELETE FROM provider_keys WHERE account_id = ?1 AND provider = ?2",
                params![a, p],
            )? > 0)
        })
        .await
    }

    async fn list_provider_keys(
        &self,
        account_id: &str,
    ) -> Result<Vec<StoredProviderKey>, StoreError> {
        let a = account_id.to_string();
        self.with_reader(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT account_id, provider, nonce, ciphertext, last4, created_at_ms FROM provider_keys \
                 WHERE account_id = ?1 ORDER BY provider",
            )?;
            let rows = stmt.query_map([a], |r| {
                Ok(StoredProviderKey {
                    account_id: r.get(0)?,
                    provider: r.get(1)?,
                    nonce: r.get(2)?,
                    ciphertext: r.get(3)?,
                    last4: r.get(4)?,
                    created_at_ms: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

const CREDIT_COLUMNS: &str =
    "id, account_id, kind, amount_nanos, idempotency_key, note, created_at_ms";

fn credit_from_row(r: &Row<'_>) -> rusqlite::Result<CreditEntry> {
    let kind: String = r.get(2)?;
    Ok(CreditEntry {
        id: r.get(0)?,
        account_id: r.get(1)?,
        kind: if kind == "refund" {
            CreditKind::Refund
        } else {
            CreditKind::Grant
        },
        amount_nanos: r.get(3)?,
        idempotency_key: r.get(4)?,
        note: r.get(5)?,
        created_at_ms: r.get(6)?,
    })
}

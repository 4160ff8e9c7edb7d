//! The embedded store: SQLite in WAL mode, one writer connection and one reader connection,
//! driven from blocking threads so the async runtime never waits on disk.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{Account, ApiKeyRecord, RecordQuery, Role, Status, Store, StoreError, UsageRecord};
use crate::metering::Provenance;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// Versioned schema steps; each runs once, in order.
const MIGRATIONS: &[&str] = &[r#"
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
"#];

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

const RECORD_COLUMNS: &str =
    "request_id, created_at_ms, finished_at_ms, account_id, key_id, endpoint, \
    model_requested, model_served, provider, owned_by, source, input_tokens, output_tokens, \
    cached_tokens, cache_write_tokens, reasoning_tokens, cost_nanos, price_input, price_output, \
    price_cached_input, price_cache_write, status, http_status, error_code, latency_ms, ttft_ms, \
    streamed, provenance";

fn record_from_row(r: &Row<'_>) -> rusqlite::Result<UsageRecord> {
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
    })
}

const KEY_COLUMNS: &str =
    "id, account_id, name, key_hash, last4, prefix, role, created_at_ms, revoked_at_ms";

fn rollup_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} (bucket_ms, account_id, key_id, model, provider, source, endpoint, \
         requests, success, input_tokens, output_tokens, cached_tokens, reasoning_tokens, cost_nanos) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (account_id, bucket_ms, key_id, model, provider, source, endpoint) DO UPDATE SET \
         requests = requests + 1, success = success + excluded.success, \
         input_tokens = input_tokens + excluded.input_tokens, \
         output_tokens = output_tokens + excluded.output_tokens, \
         cached_tokens = cached_tokens + excluded.cached_tokens, \
         reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, \
         cost_nanos = cost_nanos + excluded.cost_nanos"
    )
}

fn insert_batch(conn: &mut Connection, batch: &[UsageRecord]) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
    let mut inserted = 0;
    {
        let mut ins = tx.prepare_cached(&format!(
            "INSERT OR IGNORE INTO usage_records ({RECORD_COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
              ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)"
        ))?;
        let mut minute = tx.prepare_cached(&rollup_sql("usage_rollup_minute"))?;
        let mut hour = tx.prepare_cached(&rollup_sql("usage_rollup_hour"))?;
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
            ])?;
            // Rollups grow only with records that are new, so a replayed journal entry is not
            // counted twice.
            if n == 0 {
                continue;
            }
            inserted += 1;
            let success = i64::from(r.status == Status::Success);
            for (stmt, width) in [(&mut minute, MINUTE_MS), (&mut hour, HOUR_MS)] {
                stmt.execute(params![
                    r.created_at_ms.div_euclid(width) * width,
                    r.account_id,
                    r.key_id,
                    r.model_requested,
                    r.provider,
                    r.source,
                    r.endpoint,
                    success,
                    r.input_tokens,
                    r.output_tokens,
                    r.cached_tokens,
                    r.reasoning_tokens,
                    r.cost_nanos,
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
                &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    k.id,
                    k.account_id,
                    k.name,
                    k.key_hash,
                    k.last4,
                    k.prefix,
                    k.role.as_str(),
                    k.created_at_ms,
                    k.revoked_at_ms
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
}

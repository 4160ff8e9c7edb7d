//! The embedded store: SQLite in WAL mode, one writer connection and one reader connection,
//! driven from blocking threads so the async runtime never waits on disk. Schema steps are the
//! numbered files in `migrations/`; rollup increments come from `tollgate_core::rollup::deltas`.

mod conn;
mod rows;
mod usage;
mod webhooks;

use std::path::Path;

use async_trait::async_trait;
use std::collections::HashMap;

use rusqlite::{params, params_from_iter, Connection, OptionalExtension, ToSql};
use tollgate_core::account::{Account, ApiKeyRecord, KeyLimits, StoredProviderKey};
use tollgate_core::credit::{CreditEntry, CreditTotals};
use tollgate_core::insights::InsightRows;
use tollgate_core::record::{Anomaly, UsageRecord};
use tollgate_core::rollup::{
    self, Dims, RecordCursor, RecordFilter, RollupFilter, RollupRow, Segment, Sums,
};
use tollgate_core::store::{
    AccountStore, AnomalyCount, CreditStore, KeyStore, ProviderKeyStore, RecordQuery, RecordStore,
};
use tollgate_core::webhook::Event;
use tollgate_core::StoreError;

use self::conn::{bad_value, Db, Fail};
use self::rows::{
    account_from_row, attr_table, credit_from_row, key_from_row, record_from_row, record_values,
    rollup_sql, rollup_table, CREDIT_COLUMNS, KEY_COLUMNS, RECORD_COLUMNS, RECORD_WIDTH,
};
use crate::columns::{insight_row, order_insight_rows, RowKey, INSIGHT_COLUMNS};
use rusqlite::types::Type;

/// The embedded store.
pub struct SqliteStore {
    db: Db,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            db: Db::open(path)?,
        })
    }

    async fn with_writer<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Fail> + Send + 'static,
    {
        self.db.with_writer(f).await
    }

    async fn with_reader<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Fail> + Send + 'static,
    {
        self.db.with_reader(f).await
    }
}

/// A record whose token or money values are negative is refused (its batch with it, as a
/// constraint would), before anything is written. This was a trigger (migration 4); in code it
/// spares SQLite a statement journal per row (migration 9).
fn check_record(r: &UsageRecord) -> Result<(), Fail> {
    let values = [
        r.input_tokens,
        r.output_tokens,
        r.cached_tokens,
        r.cache_write_tokens,
        r.reasoning_tokens,
        r.cost_nanos,
        r.charged_nanos,
    ];
    if values.iter().any(|v| *v < 0) {
        return Err(Fail::Store(StoreError::invalid(format!(
            "usage record {}: token and money columns must be non-negative integers",
            r.request_id
        ))));
    }
    Ok(())
}

/// Rows per multi-row `INSERT` at most. A batch is inserted in chunks of 64, 32, …, 1 rows
/// (its length's binary digits), so at most seven statements are cached, whatever the batch's
/// length; the largest binds 64 × `RECORD_WIDTH` parameters (SQLite allows 32,766).
const INSERT_CHUNK_LOG2: usize = 6;

/// `INSERT OR IGNORE` of `2^i` rows, for `i` in `0..=INSERT_CHUNK_LOG2`.
static INSERT_SQL: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    let row = format!("({})", vec!["?"; RECORD_WIDTH].join(", "));
    (0..=INSERT_CHUNK_LOG2)
        .map(|i| {
            format!(
                "INSERT OR IGNORE INTO usage_records ({RECORD_COLUMNS}) VALUES {}",
                vec![row.as_str(); 1 << i].join(", ")
            )
        })
        .collect()
});

fn insert_batch(conn: &mut Connection, batch: &[UsageRecord]) -> Result<usize, Fail> {
    batch.iter().try_for_each(check_record)?;
    let tx = conn.transaction()?;
    let mut new = Vec::with_capacity(batch.len());
    {
        // Each size's statement is taken from the cache once per batch: going back to the
        // cache clears its bindings, which frees every bound text's copy.
        let mut statements: [Option<rusqlite::CachedStatement<'_>>; INSERT_CHUNK_LOG2 + 1] =
            Default::default();
        let mut rest = batch;
        while !rest.is_empty() {
            let log2 = rest.len().ilog2().min(INSERT_CHUNK_LOG2 as u32) as usize;
            let (chunk, tail) = rest.split_at(1 << log2);
            rest = tail;
            let ins = match &mut statements[log2] {
                Some(s) => s,
                empty => empty.insert(tx.prepare_cached(&INSERT_SQL[log2])?),
            };
            let mut at = 1;
            for r in chunk {
                for v in record_values(r) {
                    ins.raw_bind_parameter(at, v)?;
                    at += 1;
                }
            }
            let n = ins.raw_execute()?;
            // Rollups grow only with records that are new, so a replayed journal entry is not
            // counted twice.
            if n == chunk.len() {
                new.extend(chunk);
            } else if n > 0 {
                new.extend(inserted_of(&tx, chunk, n)?);
            }
        }
        let deltas = rollup::deltas(new.iter().copied());
        for (grain, rows) in deltas.grains() {
            upsert_rollups(&tx, rollup_table(grain), rows)?;
        }
        for (grain, rows) in deltas.attr_grains() {
            upsert_rollups(&tx, attr_table(grain), rows)?;
        }
    }
    let inserted = new.len();
    tx.commit()?;
    Ok(inserted)
}

/// The records of `chunk` that its `INSERT OR IGNORE` just inserted, when it inserted only `n`
/// of them (the others were already in: a journal replay). A new row's rowid is one past the
/// largest in the table, so the statement's rows are the `n` rowids ending at the last one it
/// inserted.
fn inserted_of<'r>(
    tx: &rusqlite::Transaction<'_>,
    chunk: &'r [UsageRecord],
    n: usize,
) -> Result<impl Iterator<Item = &'r UsageRecord>, Fail> {
    let after = tx.last_insert_rowid() - n as i64;
    let mut q = tx.prepare_cached("SELECT request_id FROM usage_records WHERE rowid > ?1")?;
    let mut ids = q
        .query_map([after], |row| row.get::<_, String>(0))?
        .collect::<Result<std::collections::HashSet<String>, _>>()?;
    let found = ids.len();
    // A request id twice in the chunk: the first row is the one inserted.
    let new: Vec<&UsageRecord> = chunk.iter().filter(|r| ids.remove(&r.request_id)).collect();
    if found != n || new.len() != n {
        // Only if rowids were not handed out in order (a table at the largest rowid): the
        // batch is refused and split by the writer until each record is alone.
        return Err(Fail::Store(StoreError::invalid(format!(
            "usage insert: {n} of {} rows new, {found} found by rowid",
            chunk.len(),
        ))));
    }
    Ok(new.into_iter())
}

/// Adds one grain's deltas (main or attribution rows) to its rollup table.
fn upsert_rollups<'a, K: RowKey<'a>>(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    rows: &HashMap<K, Sums>,
) -> Result<(), Fail> {
    let mut up = tx.prepare_cached(&rollup_sql(table, K::ATTR))?;
    for (k, s) in rows {
        let r = k.row();
        let (source, endpoint) = (r.source.as_str(), r.endpoint.as_str());
        let attr = k.attr();
        let mut args: Vec<&dyn ToSql> = vec![&r.bucket_ms, &r.account_id];
        if let Some((kind, value)) = &attr {
            args.extend([kind as &dyn ToSql, value]);
        }
        args.extend([
            &r.key_id as &dyn ToSql,
            &r.model,
            &r.provider,
            &source,
            &endpoint,
            &s.requests,
            &s.success,
            &s.input_tokens,
            &s.output_tokens,
            &s.cached_tokens,
            &s.reasoning_tokens,
            &s.cost_nanos,
            &s.charged_nanos,
        ]);
        up.execute(params_from_iter(args))?;
    }
    Ok(())
}

#[async_trait]
impl RecordStore for SqliteStore {
    // records_page and rollup_rows: usage.rs, next to their SQL.
    async fn insert_usage(&self, batch: Vec<UsageRecord>) -> Result<usize, StoreError> {
        self.with_writer(move |c| insert_batch(c, &batch)).await
    }

    async fn insert_usage_shared(
        &self,
        batch: std::sync::Arc<[UsageRecord]>,
    ) -> Result<usize, StoreError> {
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

    async fn anomalies(
        &self,
        account_id: &str,
        limit: usize,
    ) -> Result<Vec<AnomalyCount>, StoreError> {
        let account_id = account_id.to_string();
        // An admin's audit, not a hot path: a walk of the account's records.
        self.with_reader(move |c| {
            let mut counts: Vec<(Anomaly, i64, i64)> = Vec::new();
            {
                let mut stmt = c.prepare_cached(
                    "SELECT anomaly, COUNT(*), COALESCE(SUM(charged_nanos), 0) FROM usage_records \
                     WHERE account_id = ?1 AND anomaly IS NOT NULL GROUP BY anomaly",
                )?;
                let mut rows = stmt.query([&account_id])?;
                while let Some(r) = rows.next()? {
                    let a: String = r.get(0)?;
                    let kind = Anomaly::parse(&a).ok_or_else(|| bad_value(0, "anomaly", &a))?;
                    counts.push((kind, r.get(1)?, r.get(2)?));
                }
            }
            counts.sort_by_key(|(a, _, _)| a.as_str());
            let mut stmt = c.prepare_cached(
                "SELECT request_id FROM usage_records WHERE account_id = ?1 AND anomaly = ?2 \
                 ORDER BY created_at_ms, request_id LIMIT ?3",
            )?;
            let mut out = Vec::with_capacity(counts.len());
            for (anomaly, count, charged_nanos) in counts {
                let ids = stmt
                    .query_map(params![account_id, anomaly.as_str(), limit as i64], |r| {
                        r.get(0)
                    })?
                    .collect::<Result<Vec<String>, _>>()?;
                out.push(AnomalyCount {
                    anomaly,
                    count,
                    charged_nanos,
                    request_ids: ids,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn drop_records_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        // In batches of their own transactions, so the writer (and every request's record
        // behind it) never waits long; per account, so each batch is a seek of the
        // (account_id, created_at_ms) index rather than a scan.
        const BATCH: i64 = 5_000;
        let accounts: Vec<String> = self
            .with_reader(|c| {
                // Every record belongs to an account (records are written after authentication).
                let mut stmt = c.prepare_cached("SELECT id FROM accounts")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<Result<Vec<String>, _>>()?)
            })
            .await?;
        let mut dropped = 0u64;
        for account in accounts {
            loop {
                let a = account.clone();
                let n = self
                    .with_writer(move |c| {
                        // The batch's charges are retired with it, in one transaction, so the
                        // audit's sum over the records still meets the rollups.
                        let tx = c.transaction()?;
                        tx.execute(
                            "CREATE TEMP TABLE IF NOT EXISTS retiring (id INTEGER PRIMARY KEY)",
                            [],
                        )?;
                        tx.execute("DELETE FROM retiring", [])?;
                        tx.execute(
                            "INSERT INTO retiring SELECT rowid FROM usage_records \
                             WHERE account_id = ?1 AND created_at_ms < ?2 LIMIT ?3",
                            params![a, cutoff_ms, BATCH],
                        )?;
                        tx.execute(
                            "INSERT INTO retired_records (account_id, records, charged_nanos) \
                             SELECT ?1, COUNT(*), COALESCE(SUM(charged_nanos), 0) FROM usage_records \
                             WHERE rowid IN (SELECT id FROM retiring) HAVING COUNT(*) > 0 \
                             ON CONFLICT (account_id) DO UPDATE SET \
                             records = records + excluded.records, \
                             charged_nanos = charged_nanos + excluded.charged_nanos",
                            params![a],
                        )?;
                        let n = tx.execute(
                            "DELETE FROM usage_records WHERE rowid IN (SELECT id FROM retiring)",
                            [],
                        )?;
                        tx.commit()?;
                        Ok(n)
                    })
                    .await?;
                dropped += n as u64;
                if (n as i64) < BATCH {
                    break;
                }
            }
        }
        Ok(dropped)
    }

    async fn records_page(
        &self,
        filter: RecordFilter,
        after: Option<RecordCursor>,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        usage::records_page(&self.db, filter, after, descending, limit).await
    }

    async fn rollup_rows(
        &self,
        filter: RollupFilter,
        dims: Dims,
        segments: Vec<Segment>,
    ) -> Result<Vec<RollupRow>, StoreError> {
        usage::rollup_rows(&self.db, filter, dims, segments).await
    }

    async fn insight_rows(
        &self,
        account_id: &str,
        key_id: Option<&str>,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<InsightRows, StoreError> {
        let (account_id, key_id) = (account_id.to_string(), key_id.map(str::to_string));
        self.with_reader(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {INSIGHT_COLUMNS} FROM usage_records \
                 WHERE account_id = ?1 AND created_at_ms >= ?2 AND created_at_ms < ?3 \
                 AND (?4 IS NULL OR key_id = ?4) ORDER BY created_at_ms"
            ))?;
            let mut q = st.query(params![account_id, start_ms, end_ms, key_id])?;
            let mut out = InsightRows::default();
            while let Some(r) = q.next()? {
                let text = |i: usize| -> rusqlite::Result<&str> {
                    r.get_ref(i)?.as_str().map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e))
                    })
                };
                let mut n = [0i64; 10];
                for (j, v) in n.iter_mut().enumerate() {
                    *v = r.get(5 + j)?;
                }
                insight_row(
                    &mut out,
                    (r.get(0)?, r.get(1)?, text(2)?, text(3)?, text(4)?),
                    n,
                    (r.get(15)?, r.get(16)?),
                )
                .map_err(Fail::Store)?;
            }
            order_insight_rows(&mut out);
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl AccountStore for SqliteStore {
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
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_key(&self, k: ApiKeyRecord, outbox: Vec<Event>) -> Result<(), StoreError> {
        self.with_writer(move |c| {
            let tx = c.transaction()?;
            tx.execute(
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
                    serde_json::to_string(&k.limits).map_err(|e| StoreError::invalid(e.to_string()))?
                ],
            )?;
            webhooks::enqueue_tx(&tx, &outbox)?;
            tx.commit()?;
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

    async fn revoke_key(
        &self,
        id: &str,
        at_ms: i64,
        outbox: Vec<Event>,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.with_writer(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE api_keys SET revoked_at_ms = COALESCE(revoked_at_ms, ?2) WHERE id = ?1",
                params![id, at_ms],
            )?;
            if n > 0 {
                webhooks::enqueue_tx(&tx, &outbox)?;
            }
            tx.commit()?;
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
        let json =
            serde_json::to_string(&limits).map_err(|e| StoreError::invalid(e.to_string()))?;
        self.with_writer(move |c| {
            Ok(c.execute(
                "UPDATE api_keys SET limits = ?2 WHERE id = ?1",
                params![id, json],
            )? > 0)
        })
        .await
    }
}

#[async_trait]
impl CreditStore for SqliteStore {
    async fn add_credit(
        &self,
        e: CreditEntry,
        outbox: Vec<Event>,
    ) -> Result<(CreditEntry, bool), StoreError> {
        self.with_writer(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "INSERT INTO credit_entries (id, account_id, kind, amount_nanos, idempotency_key, note, created_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (account_id, idempotency_key) DO NOTHING",
                params![e.id, e.account_id, e.kind.as_str(), e.amount_nanos, e.idempotency_key, e.note, e.created_at_ms],
            )?;
            if n == 1 {
                webhooks::enqueue_tx(&tx, &outbox)?;
                tx.commit()?;
                return Ok((e, true));
            }
            let existing = tx.query_row(
                &format!("SELECT {CREDIT_COLUMNS} FROM credit_entries WHERE account_id = ?1 AND idempotency_key = ?2"),
                params![e.account_id, e.idempotency_key],
                credit_from_row,
            )?;
            if existing.kind != e.kind || existing.amount_nanos != e.amount_nanos {
                return Err(Fail::Store(StoreError::conflict(format!(
                    "idempotency key {:?} was already used for a different {} of {} nano-USD",
                    e.idempotency_key.unwrap_or_default(),
                    existing.kind.as_str(),
                    existing.amount_nanos
                ))));
            }
            Ok((existing, false))
        })
        .await
    }

    async fn find_credit(
        &self,
        account_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<CreditEntry>, StoreError> {
        let (a, k) = (account_id.to_string(), idempotency_key.to_string());
        self.with_reader(move |c| {
            Ok(c.query_row(
                &format!("SELECT {CREDIT_COLUMNS} FROM credit_entries WHERE account_id = ?1 AND idempotency_key = ?2"),
                params![a, k],
                credit_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn import_credit(&self, e: CreditEntry) -> Result<bool, StoreError> {
        self.with_writer(move |c| {
            // No conflict target: a stored id and a used idempotency key both skip the entry.
            let n = c.execute(
                "INSERT INTO credit_entries (id, account_id, kind, amount_nanos, idempotency_key, note, created_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                params![e.id, e.account_id, e.kind.as_str(), e.amount_nanos, e.idempotency_key, e.note, e.created_at_ms],
            )?;
            Ok(n == 1)
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
                    "SELECT COALESCE(SUM(charged_nanos), 0) + COALESCE((SELECT charged_nanos \
                     FROM retired_records WHERE account_id = ?1), 0) \
                     FROM usage_records WHERE account_id = ?1",
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
}

#[async_trait]
impl ProviderKeyStore for SqliteStore {
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

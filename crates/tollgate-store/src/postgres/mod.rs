//! The PostgreSQL store, for several replicas sharing one database: a deadpool of tokio-postgres
//! connections; records batch-inserted with `UNNEST` and `ON CONFLICT DO NOTHING`, their rollup
//! deltas (`tollgate_core::rollup::deltas`) and their charges in the same transaction; raw
//! records in monthly partitions; balances split into per-replica leases (`LeaseStore`).

mod conn;
mod leases;
mod quotas;
mod records;
mod rows;
mod usage;
mod webhooks;

use std::collections::HashSet;

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool};
use parking_lot::Mutex;
use tollgate_core::account::{Account, ApiKeyRecord, KeyLimits, StoredProviderKey};
use tollgate_core::credit::{CreditEntry, CreditTotals};
use tollgate_core::insights::InsightRows;
use tollgate_core::record::{Anomaly, UsageRecord};
use tollgate_core::rollup::{Dims, RecordCursor, RecordFilter, RollupFilter, RollupRow, Segment};
use tollgate_core::store::{
    AccountStore, AnomalyCount, CreditStore, KeyStore, LeaseStore, ProviderKeyStore, QuotaStore,
    RecordQuery, RecordStore,
};
use tollgate_core::webhook::Event;
use tollgate_core::StoreError;

use crate::columns::{insight_row, order_insight_rows, INSIGHT_COLUMNS};

use self::conn::{classify, pool_error};
use self::rows::{
    account_from_row, credit_from_row, get, key_from_row, provider_key_from_row, record_from_row,
    CREDIT_COLUMNS, KEY_COLUMNS, RECORD_COLUMNS,
};

/// The shared store. `replica_id` names this process's credit leases.
pub struct PgStore {
    pool: Pool,
    replica_id: String,
    /// Months (partition lower bounds) known to have a partition of `usage_records`.
    partitions: Mutex<HashSet<i64>>,
}

impl PgStore {
    /// Connects and brings the schema to this build's version.
    pub async fn connect(
        url: &str,
        pool_size: usize,
        replica_id: &str,
    ) -> Result<Self, StoreError> {
        let store = Self::connect_unmigrated(url, pool_size, replica_id)?;
        let mut c = store.client().await?;
        conn::migrate(&mut c).await?;
        Ok(store)
    }

    /// A pool only: for `tollgate migrate`, which reports what it applied.
    pub fn connect_unmigrated(
        url: &str,
        pool_size: usize,
        replica_id: &str,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            pool: conn::connect(url, pool_size)?,
            replica_id: replica_id.to_string(),
            partitions: Mutex::new(HashSet::new()),
        })
    }

    /// Applies the schema steps not yet applied; returns (steps applied, version now).
    pub async fn migrate(&self) -> Result<(usize, i32), StoreError> {
        let mut c = self.client().await?;
        let applied = conn::migrate(&mut c).await?;
        Ok((applied, conn::schema_version(&c).await?))
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }
}

#[async_trait]
impl RecordStore for PgStore {
    async fn insert_usage(&self, batch: Vec<UsageRecord>) -> Result<usize, StoreError> {
        records::insert_batch(self, &batch).await
    }

    async fn insert_usage_shared(
        &self,
        batch: std::sync::Arc<[UsageRecord]>,
    ) -> Result<usize, StoreError> {
        records::insert_batch(self, &batch).await
    }

    async fn get_usage(&self, request_id: &str) -> Result<Option<UsageRecord>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!("SELECT {RECORD_COLUMNS} FROM usage_records WHERE request_id = $1"),
                &[&request_id],
            )
            .await
            .map_err(classify)?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn list_usage(&self, q: RecordQuery) -> Result<Vec<UsageRecord>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM usage_records \
                     WHERE ($1::text IS NULL OR account_id = $1) AND ($2::text IS NULL OR key_id = $2) \
                     ORDER BY created_at_ms DESC, request_id DESC LIMIT $3"
                ),
                &[&q.account_id, &q.key_id, &(q.limit as i64)],
            )
            .await
            .map_err(classify)?;
        rows.iter().map(record_from_row).collect()
    }

    async fn count_usage(&self) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT COUNT(*) FROM usage_records", &[])
            .await
            .map_err(classify)?;
        get(&row, 0)
    }

    async fn records_page(
        &self,
        filter: RecordFilter,
        after: Option<RecordCursor>,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        let c = self.client().await?;
        usage::records_page(&c, &filter, after.as_ref(), descending, limit).await
    }

    async fn rollup_rows(
        &self,
        filter: RollupFilter,
        dims: Dims,
        segments: Vec<Segment>,
    ) -> Result<Vec<RollupRow>, StoreError> {
        if filter.accounts.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let c = self.client().await?;
        let mut out = Vec::new();
        for seg in segments.into_iter().enumerate() {
            usage::rollup_query(&c, &filter, dims, seg, &mut out).await?;
        }
        Ok(out)
    }

    async fn insight_rows(
        &self,
        account_id: &str,
        key_id: Option<&str>,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<InsightRows, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {INSIGHT_COLUMNS} FROM usage_records \
                     WHERE account_id = $1 AND created_at_ms >= $2 AND created_at_ms < $3 \
                     AND ($4::text IS NULL OR key_id = $4) ORDER BY created_at_ms"
                ),
                &[&account_id, &start_ms, &end_ms, &key_id],
            )
            .await
            .map_err(classify)?;
        let mut out = InsightRows::default();
        for r in &rows {
            let mut n = [0i64; 10];
            for (j, v) in n.iter_mut().enumerate() {
                *v = get(r, 5 + j)?;
            }
            insight_row(
                &mut out,
                (get(r, 0)?, get(r, 1)?, get(r, 2)?, get(r, 3)?, get(r, 4)?),
                n,
                (get(r, 15)?, get(r, 16)?),
            )?;
        }
        order_insight_rows(&mut out);
        Ok(out)
    }

    async fn key_spend_since(&self, key_id: &str, since_ms: i64) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT COALESCE(SUM(cost_nanos), 0)::bigint FROM usage_rollup_hour \
                 WHERE key_id = $1 AND bucket_ms >= $2",
                &[&key_id, &since_ms],
            )
            .await
            .map_err(classify)?;
        get(&row, 0)
    }

    async fn anomalies(
        &self,
        account_id: &str,
        limit: usize,
    ) -> Result<Vec<AnomalyCount>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT anomaly, COUNT(*), COALESCE(SUM(charged_nanos), 0)::bigint FROM usage_records \
                 WHERE account_id = $1 AND anomaly IS NOT NULL GROUP BY anomaly ORDER BY anomaly",
                &[&account_id],
            )
            .await
            .map_err(classify)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let a: &str = get(&r, 0)?;
            let anomaly = Anomaly::parse(a).ok_or_else(|| conn::bad_value("anomaly", a))?;
            let ids = c
                .query(
                    "SELECT request_id FROM usage_records WHERE account_id = $1 AND anomaly = $2 \
                     ORDER BY created_at_ms, request_id LIMIT $3",
                    &[&account_id, &anomaly.as_str(), &(limit as i64)],
                )
                .await
                .map_err(classify)?
                .iter()
                .map(|r| get::<String>(r, 0))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(AnomalyCount {
                anomaly,
                count: get(&r, 1)?,
                charged_nanos: get(&r, 2)?,
                request_ids: ids,
            });
        }
        out.sort_by_key(|a| a.anomaly.as_str());
        Ok(out)
    }

    async fn drop_records_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        records::drop_before(self, cutoff_ms).await
    }
}

#[async_trait]
impl AccountStore for PgStore {
    async fn create_account(&self, a: Account) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        tx.execute(
            "INSERT INTO accounts (id, name, created_at_ms, disabled) VALUES ($1, $2, $3, $4)",
            &[&a.id, &a.name, &a.created_at_ms, &a.disabled],
        )
        .await
        .map_err(classify)?;
        tx.execute(
            "INSERT INTO credit_pools (account_id, available_nanos) VALUES ($1, 0)",
            &[&a.id],
        )
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)
    }

    async fn get_account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT id, name, created_at_ms, disabled FROM accounts WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(classify)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, name, created_at_ms, disabled FROM accounts ORDER BY created_at_ms, id",
                &[],
            )
            .await
            .map_err(classify)?;
        rows.iter().map(account_from_row).collect()
    }

    async fn set_account_disabled(&self, id: &str, disabled: bool) -> Result<bool, StoreError> {
        let c = self.client().await?;
        Ok(c.execute(
            "UPDATE accounts SET disabled = $2 WHERE id = $1",
            &[&id, &disabled],
        )
        .await
        .map_err(classify)?
            > 0)
    }
}

#[async_trait]
impl KeyStore for PgStore {
    async fn create_key(&self, k: ApiKeyRecord, outbox: Vec<Event>) -> Result<(), StoreError> {
        let limits =
            serde_json::to_string(&k.limits).map_err(|e| StoreError::invalid(e.to_string()))?;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        tx.execute(
            &format!(
                "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            &[
                &k.id,
                &k.account_id,
                &k.name,
                &k.key_hash,
                &k.last4,
                &k.prefix,
                &k.role.as_str(),
                &k.created_at_ms,
                &k.revoked_at_ms,
                &limits,
            ],
        )
        .await
        .map_err(classify)?;
        webhooks::enqueue_tx(&tx, &outbox).await?;
        tx.commit().await.map_err(classify)
    }

    async fn find_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"),
                &[&hash],
            )
            .await
            .map_err(classify)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(classify)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self, account_id: Option<String>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE ($1::text IS NULL OR account_id = $1) \
                     ORDER BY created_at_ms, id"
                ),
                &[&account_id],
            )
            .await
            .map_err(classify)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(
        &self,
        id: &str,
        at_ms: i64,
        outbox: Vec<Event>,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        let n = tx
            .execute(
                "UPDATE api_keys SET revoked_at_ms = COALESCE(revoked_at_ms, $2) WHERE id = $1",
                &[&id, &at_ms],
            )
            .await
            .map_err(classify)?;
        if n > 0 {
            webhooks::enqueue_tx(&tx, &outbox).await?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(n > 0)
    }

    async fn count_admin_keys(&self) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT COUNT(*) FROM api_keys WHERE role = 'admin' AND revoked_at_ms IS NULL",
                &[],
            )
            .await
            .map_err(classify)?;
        get(&row, 0)
    }

    async fn update_key_limits(&self, id: &str, limits: KeyLimits) -> Result<bool, StoreError> {
        let json =
            serde_json::to_string(&limits).map_err(|e| StoreError::invalid(e.to_string()))?;
        let c = self.client().await?;
        Ok(c.execute(
            "UPDATE api_keys SET limits = $2 WHERE id = $1",
            &[&id, &json],
        )
        .await
        .map_err(classify)?
            > 0)
    }

    fn quotas(&self) -> Option<&dyn QuotaStore> {
        Some(self)
    }
}

/// Inserts a credit entry unless it conflicts (`ON CONFLICT {target} DO NOTHING`); a new entry
/// joins the account's unleased balance, spendable by every replica. True if it was new.
async fn insert_credit(
    tx: &tokio_postgres::Transaction<'_>,
    e: &CreditEntry,
    conflict_target: &str,
) -> Result<bool, StoreError> {
    let n = tx
        .execute(
            &format!(
                "INSERT INTO credit_entries (id, account_id, kind, amount_nanos, idempotency_key, note, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT {conflict_target} DO NOTHING"
            ),
            &[
                &e.id,
                &e.account_id,
                &e.kind.as_str(),
                &e.amount_nanos,
                &e.idempotency_key,
                &e.note,
                &e.created_at_ms,
            ],
        )
        .await
        .map_err(classify)?;
    if n == 1 {
        tx.execute(
            "INSERT INTO credit_pools (account_id, available_nanos) VALUES ($1, $2) \
             ON CONFLICT (account_id) DO UPDATE SET available_nanos = credit_pools.available_nanos + $2",
            &[&e.account_id, &e.amount_nanos],
        )
        .await
        .map_err(classify)?;
    }
    Ok(n == 1)
}

#[async_trait]
impl CreditStore for PgStore {
    async fn add_credit(
        &self,
        e: CreditEntry,
        outbox: Vec<Event>,
    ) -> Result<(CreditEntry, bool), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        // A used idempotency key skips the entry (and the caller learns which entry holds it).
        let new = insert_credit(&tx, &e, "(account_id, idempotency_key)").await?;
        if new {
            webhooks::enqueue_tx(&tx, &outbox).await?;
            tx.commit().await.map_err(classify)?;
            return Ok((e, true));
        }
        let row = tx
            .query_one(
                &format!(
                    "SELECT {CREDIT_COLUMNS} FROM credit_entries WHERE account_id = $1 AND idempotency_key = $2"
                ),
                &[&e.account_id, &e.idempotency_key],
            )
            .await
            .map_err(classify)?;
        let existing = credit_from_row(&row)?;
        if existing.kind != e.kind || existing.amount_nanos != e.amount_nanos {
            return Err(StoreError::conflict(format!(
                "idempotency key {:?} was already used for a different {} of {} nano-USD",
                e.idempotency_key.unwrap_or_default(),
                existing.kind.as_str(),
                existing.amount_nanos
            )));
        }
        Ok((existing, false))
    }

    async fn find_credit(
        &self,
        account_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<CreditEntry>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!(
                    "SELECT {CREDIT_COLUMNS} FROM credit_entries WHERE account_id = $1 AND idempotency_key = $2"
                ),
                &[&account_id, &idempotency_key],
            )
            .await
            .map_err(classify)?;
        row.as_ref().map(credit_from_row).transpose()
    }

    async fn import_credit(&self, e: CreditEntry) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        // No conflict target: a stored id and a used idempotency key both skip the entry.
        let new = insert_credit(&tx, &e, "").await?;
        tx.commit().await.map_err(classify)?;
        Ok(new)
    }

    async fn list_credits(
        &self,
        account_id: &str,
        limit: usize,
    ) -> Result<Vec<CreditEntry>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {CREDIT_COLUMNS} FROM credit_entries WHERE account_id = $1 \
                     ORDER BY created_at_ms DESC, id DESC LIMIT $2"
                ),
                &[&account_id, &(limit as i64)],
            )
            .await
            .map_err(classify)?;
        rows.iter().map(credit_from_row).collect()
    }

    async fn credit_totals(
        &self,
        account_id: &str,
        audit: bool,
    ) -> Result<CreditTotals, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT COALESCE(SUM(CASE WHEN kind = 'grant' THEN amount_nanos END), 0)::bigint, \
                        COALESCE(SUM(CASE WHEN kind = 'refund' THEN amount_nanos END), 0)::bigint, \
                        (SELECT COALESCE(SUM(charged_nanos), 0)::bigint FROM usage_rollup_hour WHERE account_id = $1) \
                 FROM credit_entries WHERE account_id = $1",
                &[&account_id],
            )
            .await
            .map_err(classify)?;
        let records = if audit {
            let r = c
                .query_one(
                    "SELECT (COALESCE(SUM(charged_nanos), 0) + COALESCE((SELECT charged_nanos \
                     FROM retired_records WHERE account_id = $1), 0))::bigint \
                     FROM usage_records WHERE account_id = $1",
                    &[&account_id],
                )
                .await
                .map_err(classify)?;
            Some(get(&r, 0)?)
        } else {
            None
        };
        Ok(CreditTotals {
            grants_nanos: get(&row, 0)?,
            refunds_nanos: get(&row, 1)?,
            charges_nanos: get(&row, 2)?,
            charges_nanos_records: records,
        })
    }

    fn leases(&self) -> Option<&dyn LeaseStore> {
        Some(self)
    }
}

#[async_trait]
impl ProviderKeyStore for PgStore {
    async fn put_provider_key(&self, k: StoredProviderKey) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO provider_keys (account_id, provider, nonce, ciphertext, last4, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, provider) DO UPDATE SET \
             nonce = excluded.nonce, ciphertext = excluded.ciphertext, last4 = excluded.last4, \
             created_at_ms = excluded.created_at_ms",
            &[&k.account_id, &k.provider, &k.nonce, &k.ciphertext, &k.last4, &k.created_at_ms],
        )
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn delete_provider_key(
        &self,
        account_id: &str,
        provider: &str,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        Ok(c.execute(
            "DELETE FROM provider_keys WHERE account_id = $1 AND provider = $2",
            &[&account_id, &provider],
        )
        .await
        .map_err(classify)?
            > 0)
    }

    async fn list_provider_keys(
        &self,
        account_id: &str,
    ) -> Result<Vec<StoredProviderKey>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT account_id, provider, nonce, ciphertext, last4, created_at_ms FROM provider_keys \
                 WHERE account_id = $1 ORDER BY provider",
                &[&account_id],
            )
            .await
            .map_err(classify)?;
        rows.iter().map(provider_key_from_row).collect()
    }
}

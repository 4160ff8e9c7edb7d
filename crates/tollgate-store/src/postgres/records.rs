//! Writing a batch of records: their monthly partitions first (created once, by whichever
//! replica needs one first), then in one transaction the records (`UNNEST`, `ON CONFLICT DO
//! NOTHING`), the rollup deltas of the ones that were new, and their charges.

use std::collections::{BTreeMap, HashSet};

use chrono::{Datelike, TimeZone, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;
use tollgate_core::record::UsageRecord;
use tollgate_core::rollup::{self, Sums};
use tollgate_core::StoreError;

use super::conn::classify;
use super::rows::{attr_table, rollup_table, RECORD_COLUMNS};
use super::PgStore;
use crate::columns::{rollup_key_columns, rollup_key_width, RowKey, SUMS_UPDATE, SUM_COLUMNS};

/// The UTC month holding `ms`: `[start, end)` in ms, and the partition's name.
pub(crate) fn month_of(ms: i64) -> Result<(i64, i64, String), StoreError> {
    let t = Utc
        .timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::invalid(format!("created_at_ms {ms} is not a time")))?;
    let (y, m) = (t.year(), t.month());
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let at = |y: i32, m: u32| {
        Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
            .single()
            .map(|t| t.timestamp_millis())
            .ok_or_else(|| StoreError::invalid(format!("created_at_ms {ms} is out of range")))
    };
    Ok((
        at(y, m)?,
        at(ny, nm)?,
        format!("usage_records_{y:04}{m:02}"),
    ))
}

/// The month a partition named `usage_records_YYYYMM` holds: `[start, end)` in ms.
fn partition_month(name: &str) -> Option<(i64, i64)> {
    let digits = name.strip_prefix("usage_records_")?;
    if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m) = (digits[..4].parse().ok()?, digits[4..].parse().ok()?);
    let start = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single()?;
    let (lo, hi, canonical) = month_of(start.timestamp_millis()).ok()?;
    (canonical == name).then_some((lo, hi))
}

/// Retention: drops every monthly partition that ends at or before `cutoff_ms` (a month the
/// cutoff falls inside stays whole). Returns how many records they held.
pub(crate) async fn drop_before(store: &PgStore, cutoff_ms: i64) -> Result<u64, StoreError> {
    let names: Vec<String> = {
        let c = store.client().await?;
        c.query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'usage_records'::regclass ORDER BY 1",
            &[],
        )
        .await
        .map_err(classify)?
        .iter()
        .map(|r| super::rows::get(r, 0))
        .collect::<Result<_, _>>()?
    };
    let mut dropped = 0u64;
    for name in names {
        let Some((lo, hi)) = partition_month(&name) else {
            continue;
        };
        if hi > cutoff_ms {
            continue;
        }
        let mut c = store.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        // The lock a writer creating this month's partition takes: never both at once. Another
        // replica's retention may have dropped it meanwhile.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lo])
            .await
            .map_err(classify)?;
        let exists: bool = super::rows::get(
            &tx.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
                .await
                .map_err(classify)?,
            0,
        )?;
        if exists {
            let n: i64 = super::rows::get(
                &tx.query_one(&format!("SELECT COUNT(*) FROM \"{name}\""), &[])
                    .await
                    .map_err(classify)?,
                0,
            )?;
            // The month's charges are retired with it, so the audit still adds up.
            tx.batch_execute(&format!(
                "INSERT INTO retired_records (account_id, records, charged_nanos) \
                 SELECT account_id, COUNT(*), COALESCE(SUM(charged_nanos), 0) FROM \"{name}\" \
                 GROUP BY account_id ON CONFLICT (account_id) DO UPDATE SET \
                 records = retired_records.records + EXCLUDED.records, \
                 charged_nanos = retired_records.charged_nanos + EXCLUDED.charged_nanos"
            ))
            .await
            .map_err(classify)?;
            tx.batch_execute(&format!("DROP TABLE \"{name}\""))
                .await
                .map_err(classify)?;
            dropped += n.max(0) as u64;
        }
        tx.commit().await.map_err(classify)?;
        // A late record of that month recreates the partition rather than finding none.
        store.partitions.lock().remove(&lo);
    }
    Ok(dropped)
}

impl PgStore {
    /// Makes sure every month the batch touches has its partition.
    async fn ensure_partitions(&self, batch: &[UsageRecord]) -> Result<(), StoreError> {
        let mut missing = BTreeMap::new();
        {
            let known = self.partitions.lock();
            for r in batch {
                let (lo, hi, name) = month_of(r.created_at_ms)?;
                if !known.contains(&lo) {
                    missing.insert(lo, (hi, name));
                }
            }
        }
        for (lo, (hi, name)) in missing {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(classify)?;
            // Two replicas creating the same partition would collide in the catalog: one at a
            // time (the lock ends with the transaction).
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lo])
                .await
                .map_err(classify)?;
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS \"{name}\" PARTITION OF usage_records \
                 FOR VALUES FROM ({lo}) TO ({hi})"
            ))
            .await
            .map_err(classify)?;
            tx.commit().await.map_err(classify)?;
            self.partitions.lock().insert(lo);
        }
        Ok(())
    }
}

pub(crate) async fn insert_batch(
    store: &PgStore,
    batch: &[UsageRecord],
) -> Result<usize, StoreError> {
    if batch.is_empty() {
        return Ok(0);
    }
    match insert_once(store, batch).await {
        // Another replica's retention dropped a month this one still knew: learn again.
        Err(e) if e.message.contains("no partition of relation") => {
            store.partitions.lock().clear();
            insert_once(store, batch).await
        }
        r => r,
    }
}

async fn insert_once(store: &PgStore, batch: &[UsageRecord]) -> Result<usize, StoreError> {
    store.ensure_partitions(batch).await?;
    let mut c = store.client().await?;
    let tx = c.transaction().await.map_err(classify)?;
    let inserted = insert_records(&tx, batch).await?;
    // Rollups grow only with records that are new, so a replayed journal entry is not counted
    // twice. A request id twice in one batch counts once.
    let mut fresh: HashSet<String> = inserted.into_iter().collect();
    let new: Vec<&UsageRecord> = batch
        .iter()
        .filter(|r| fresh.remove(&r.request_id))
        .collect();
    let deltas = rollup::deltas(new.iter().copied());
    for (grain, rows) in deltas.grains() {
        upsert_rollups(&tx, rollup_table(grain), rows).await?;
    }
    for (grain, rows) in deltas.attr_grains() {
        upsert_rollups(&tx, attr_table(grain), rows).await?;
    }
    charge(&tx, &store.replica_id, &new).await?;
    tx.commit().await.map_err(classify)?;
    Ok(new.len())
}

/// Inserts the records; returns the request ids that were new.
async fn insert_records(
    tx: &Transaction<'_>,
    batch: &[UsageRecord],
) -> Result<Vec<String>, StoreError> {
    macro_rules! col {
        ($f:expr) => {
            batch.iter().map($f).collect::<Vec<_>>()
        };
    }
    let request_id = col!(|r| r.request_id.as_str());
    let created = col!(|r| r.created_at_ms);
    let finished = col!(|r| r.finished_at_ms);
    let account = col!(|r| r.account_id.as_str());
    let key = col!(|r| r.key_id.as_str());
    let endpoint = col!(|r| r.endpoint.as_str());
    let model_requested = col!(|r| r.model_requested.as_str());
    let model_served = col!(|r| r.model_served.as_str());
    let provider = col!(|r| r.provider.as_str());
    let owned_by = col!(|r| r.owned_by.as_str());
    let source = col!(|r| r.source.as_str());
    let input = col!(|r| r.input_tokens);
    let output = col!(|r| r.output_tokens);
    let cached = col!(|r| r.cached_tokens);
    let cache_write = col!(|r| r.cache_write_tokens);
    let reasoning = col!(|r| r.reasoning_tokens);
    let cost = col!(|r| r.cost_nanos);
    let p_in = col!(|r| r.price_input);
    let p_out = col!(|r| r.price_output);
    let p_cached = col!(|r| r.price_cached_input);
    let p_write = col!(|r| r.price_cache_write);
    let status = col!(|r| r.status.as_str());
    let http_status = col!(|r| i32::from(r.http_status));
    let error_code = col!(|r| r.error_code.as_deref());
    let latency = col!(|r| r.latency_ms);
    let ttft = col!(|r| r.ttft_ms);
    let streamed = col!(|r| r.streamed);
    let provenance = col!(|r| r.provenance.as_str());
    let charged = col!(|r| r.charged_nanos);
    let anomaly = col!(|r| r.anomaly.map(|a| a.as_str()));
    let user = col!(|r| r.user.as_deref());
    let tags = col!(|r| (!r.tags.is_empty()).then(|| r.tags.as_str()));
    let price_version = col!(|r| r.price_version.as_deref());
    let fingerprint = col!(|r| r.fingerprint);
    let conversation = col!(|r| r.conversation);
    let rows = tx
        .query(
            &format!(
                "INSERT INTO usage_records ({RECORD_COLUMNS}) SELECT * FROM UNNEST(\
                 $1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], \
                 $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[], \
                 $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], \
                 $18::bigint[], $19::bigint[], $20::bigint[], $21::bigint[], $22::text[], \
                 $23::int[], $24::text[], $25::bigint[], $26::bigint[], $27::bool[], $28::text[], \
                 $29::bigint[], $30::text[], $31::text[], $32::text[], $33::text[], \
                 $34::bigint[], $35::bigint[]) \
                 ON CONFLICT (request_id, created_at_ms) DO NOTHING RETURNING request_id"
            ),
            &[
                &request_id,
                &created,
                &finished,
                &account,
                &key,
                &endpoint,
                &model_requested,
                &model_served,
                &provider,
                &owned_by,
                &source,
                &input,
                &output,
                &cached,
                &cache_write,
                &reasoning,
                &cost,
                &p_in,
                &p_out,
                &p_cached,
                &p_write,
                &status,
                &http_status,
                &error_code,
                &latency,
                &ttft,
                &streamed,
                &provenance,
                &charged,
                &anomaly,
                &user,
                &tags,
                &price_version,
                &fingerprint,
                &conversation,
            ],
        )
        .await
        .map_err(classify)?;
    rows.iter().map(|r| super::rows::get(r, 0)).collect()
}

/// Adds one grain's deltas (main or attribution rows) to its rollup table, as one `UNNEST`
/// upsert. Rows go in key order, so two replicas updating the same rows lock them in the same
/// order (no deadlock between their transactions).
async fn upsert_rollups<'a, K: RowKey<'a>>(
    tx: &Transaction<'_>,
    table: &str,
    rows: &std::collections::HashMap<K, Sums>,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut sorted: Vec<(&K, &Sums)> = rows.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    macro_rules! col {
        ($f:expr) => {
            sorted.iter().map($f).collect::<Vec<_>>()
        };
    }
    let bucket = col!(|(k, _)| k.row().bucket_ms);
    let account = col!(|(k, _)| k.row().account_id);
    let kind = col!(|(k, _)| k.attr().map_or("", |a| a.0));
    let value = col!(|(k, _)| k.attr().map_or("", |a| a.1));
    let key = col!(|(k, _)| k.row().key_id);
    let model = col!(|(k, _)| k.row().model);
    let provider = col!(|(k, _)| k.row().provider);
    let source = col!(|(k, _)| k.row().source.as_str());
    let endpoint = col!(|(k, _)| k.row().endpoint.as_str());
    let requests = col!(|(_, s)| s.requests);
    let success = col!(|(_, s)| s.success);
    let input = col!(|(_, s)| s.input_tokens);
    let output = col!(|(_, s)| s.output_tokens);
    let cached = col!(|(_, s)| s.cached_tokens);
    let reasoning = col!(|(_, s)| s.reasoning_tokens);
    let cost = col!(|(_, s)| s.cost_nanos);
    let charged = col!(|(_, s)| s.charged_nanos);
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![&bucket, &account];
    if K::ATTR {
        args.extend([&kind as &(dyn ToSql + Sync), &value]);
    }
    args.extend([
        &key as &(dyn ToSql + Sync),
        &model,
        &provider,
        &source,
        &endpoint,
        &requests,
        &success,
        &input,
        &output,
        &cached,
        &reasoning,
        &cost,
        &charged,
    ]);
    // bucket_ms bigint, the other key columns text, the sums bigint.
    let keys = rollup_key_width(K::ATTR);
    let arrays: Vec<String> = (1..=args.len())
        .map(|i| {
            let ty = if i == 1 || i > keys { "bigint" } else { "text" };
            format!("${i}::{ty}[]")
        })
        .collect();
    let (columns, conflict) = rollup_key_columns(K::ATTR);
    tx.execute(
        &format!(
            "INSERT INTO {table} AS t ({columns}, {SUM_COLUMNS}) SELECT * FROM UNNEST({}) \
             ON CONFLICT ({conflict}) DO UPDATE SET {SUMS_UPDATE}",
            arrays.join(", ")
        ),
        &args,
    )
    .await
    .map_err(classify)?;
    Ok(())
}

/// Takes the new records' charges from this replica's leases (they were spent from them), or
/// from the unleased balance of an account this replica holds no lease for (its lease expired
/// and was returned, or the records were written by `journal replay` or `store copy`).
async fn charge(
    tx: &Transaction<'_>,
    replica_id: &str,
    new: &[&UsageRecord],
) -> Result<(), StoreError> {
    let mut per_account: BTreeMap<&str, i64> = BTreeMap::new();
    for r in new {
        if r.charged_nanos > 0 {
            let e = per_account.entry(r.account_id.as_str()).or_insert(0);
            *e = e.saturating_add(r.charged_nanos);
        }
    }
    if per_account.is_empty() {
        return Ok(());
    }
    let accounts: Vec<&str> = per_account.keys().copied().collect();
    let amounts: Vec<i64> = per_account.values().copied().collect();
    tx.execute(
        "WITH c AS (SELECT * FROM UNNEST($1::text[], $2::bigint[]) AS c(account_id, charged)), \
         leased AS ( \
             UPDATE credit_leases l SET amount_nanos = l.amount_nanos - c.charged FROM c \
             WHERE l.account_id = c.account_id AND l.replica_id = $3 RETURNING l.account_id) \
         UPDATE credit_pools p SET available_nanos = p.available_nanos - c.charged FROM c \
         WHERE p.account_id = c.account_id AND c.account_id NOT IN (SELECT account_id FROM leased)",
        &[&accounts, &amounts, &replica_id],
    )
    .await
    .map_err(classify)?;
    Ok(())
}

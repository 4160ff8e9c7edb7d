//! `UsageQueries` for SQLite: reads of the rollup tables (`usage_rollup_minute`, `_hour`, `_day`;
//! primary key `(account_id, bucket_ms, …)`, so every read is a range seek per account), and
//! keyset pages of raw records over the `(account_id, created_at_ms)`, `(key_id, created_at_ms)`
//! and `(account_id, model_requested, created_at_ms)` indexes.

use std::collections::HashMap;
use std::fmt::Write;

use async_trait::async_trait;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{params_from_iter, Connection};

use super::sqlite::SqliteStore;
use super::{StoreError, UsageRecord};
use crate::usage::store::{
    Dims, Grain, GroupKey, RecordCursor, RecordFilter, RollupFilter, RollupRow, Segment, Sums,
    UsageQueries,
};

fn table(g: Grain) -> &'static str {
    match g {
        Grain::Minute => "usage_rollup_minute",
        Grain::Hour => "usage_rollup_hour",
        Grain::Day => "usage_rollup_day",
    }
}

/// `AND col IN (?, ?, …)` for a non-empty list.
fn push_in(sql: &mut String, args: &mut Vec<Value>, col: &str, values: &[String]) {
    if values.is_empty() {
        return;
    }
    sql.push_str(" AND ");
    sql.push_str(col);
    sql.push_str(" IN (");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push('?');
        args.push(Value::Text(v.clone()));
    }
    sql.push(')');
}

const DIM_COLUMNS: [&str; 6] = [
    "account_id",
    "key_id",
    "model",
    "provider",
    "source",
    "endpoint",
];

fn dim_flags(d: Dims) -> [bool; 6] {
    [d.account, d.key, d.model, d.provider, d.source, d.endpoint]
}

/// Reads one segment. Rows are summed here rather than by `GROUP BY`: the rollup's primary key
/// already delivers them in bucket order, and SQLite's sorter for the group was most of the
/// query's time (2 ms of 2.2 for a 30-day, per-model, per-day read).
fn rollup_query(
    c: &Connection,
    filter: &RollupFilter,
    dims: Dims,
    (index, seg): (usize, Segment),
    out: &mut Vec<RollupRow>,
) -> Result<(), StoreError> {
    let flags = dim_flags(dims);
    let grouped = seg.split || flags.iter().any(|&f| f);
    let mut args: Vec<Value> = Vec::new();
    let mut select = String::from("SELECT bucket_ms");
    for (col, on) in DIM_COLUMNS.iter().zip(flags) {
        select.push_str(", ");
        select.push_str(if on { col } else { "NULL" });
    }
    if grouped {
        select.push_str(
            ", requests, success, input_tokens, output_tokens, cached_tokens, reasoning_tokens, \
             cost_nanos, charged_nanos FROM ",
        );
    } else {
        select.push_str(
            ", SUM(requests), SUM(success), SUM(input_tokens), SUM(output_tokens), \
             SUM(cached_tokens), SUM(reasoning_tokens), SUM(cost_nanos), SUM(charged_nanos) FROM ",
        );
    }
    select.push_str(table(seg.grain));
    match &filter.accounts {
        // Every account: one index seek per account rather than a scan of the table.
        None => select.push_str(" WHERE account_id IN (SELECT id FROM accounts)"),
        Some(list) => {
            select.push_str(" WHERE 1");
            push_in(&mut select, &mut args, "account_id", list);
        }
    }
    select.push_str(" AND bucket_ms >= ? AND bucket_ms < ?");
    args.push(Value::Integer(seg.start_ms));
    args.push(Value::Integer(seg.end_ms));
    push_in(&mut select, &mut args, "key_id", &filter.key_ids);
    push_in(&mut select, &mut args, "model", &filter.models);
    push_in(&mut select, &mut args, "provider", &filter.providers);
    let mut stmt = c.prepare_cached(&select)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    // (bucket, dims) -> position in `out`; the key buffer is reused, so a row that joins an
    // existing group allocates nothing.
    let mut groups: HashMap<String, usize> = HashMap::new();
    let mut key = String::new();
    while let Some(r) = rows.next()? {
        // An aggregate without GROUP BY yields one row of NULLs when nothing matched.
        let Some(requests) = r.get::<_, Option<i64>>(7)? else {
            continue;
        };
        let sums = Sums {
            requests,
            success: r.get(8)?,
            input_tokens: r.get(9)?,
            output_tokens: r.get(10)?,
            cached_tokens: r.get(11)?,
            reasoning_tokens: r.get(12)?,
            cost_nanos: r.get(13)?,
            charged_nanos: r.get(14)?,
        };
        let bucket_ms: i64 = if seg.split { r.get(0)? } else { seg.start_ms };
        if !grouped {
            out.push(RollupRow {
                segment: index,
                bucket_ms,
                group: GroupKey::default(),
                sums,
            });
            continue;
        }
        key.clear();
        let _ = write!(key, "{bucket_ms}");
        for i in 1..=6 {
            key.push('\u{1f}');
            if let ValueRef::Text(t) = r.get_ref(i)? {
                key.push_str(&String::from_utf8_lossy(t));
            }
        }
        if let Some(&at) = groups.get(key.as_str()) {
            out[at].sums.add(&sums);
            continue;
        }
        groups.insert(key.clone(), out.len());
        out.push(RollupRow {
            segment: index,
            bucket_ms,
            group: GroupKey {
                account_id: r.get(1)?,
                key_id: r.get(2)?,
                model: r.get(3)?,
                provider: r.get(4)?,
                source: r.get(5)?,
                endpoint: r.get(6)?,
            },
            sums,
        });
    }
    Ok(())
}

fn records_query(
    c: &Connection,
    f: &RecordFilter,
    after: Option<&RecordCursor>,
    descending: bool,
    limit: usize,
) -> Result<Vec<UsageRecord>, StoreError> {
    let mut args: Vec<Value> = vec![Value::Text(f.account_id.clone())];
    let mut sql = format!(
        "SELECT {} FROM usage_records WHERE account_id = ?",
        super::sqlite::RECORD_COLUMNS
    );
    let (mut lo, mut hi) = (f.start_ms, f.end_ms);
    if let Some(c) = after {
        // Narrow the index range to the cursor; ties on the millisecond break on request_id.
        if descending {
            hi = hi.min(c.created_at_ms + 1);
            sql.push_str(" AND (created_at_ms < ? OR request_id < ?)");
        } else {
            lo = lo.max(c.created_at_ms);
            sql.push_str(" AND (created_at_ms > ? OR request_id > ?)");
        }
        args.push(Value::Integer(c.created_at_ms));
        args.push(Value::Text(c.request_id.clone()));
    }
    sql.push_str(" AND created_at_ms >= ? AND created_at_ms < ?");
    args.push(Value::Integer(lo));
    args.push(Value::Integer(hi));
    for (col, v) in [
        ("key_id", &f.key_id),
        ("model_requested", &f.model),
        ("provider", &f.provider),
    ] {
        if let Some(v) = v {
            sql.push_str(&format!(" AND {col} = ?"));
            args.push(Value::Text(v.clone()));
        }
    }
    let dir = if descending { "DESC" } else { "ASC" };
    sql.push_str(&format!(
        " ORDER BY created_at_ms {dir}, request_id {dir} LIMIT ?"
    ));
    args.push(Value::Integer(limit as i64));
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), super::sqlite::record_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[async_trait]
impl UsageQueries for SqliteStore {
    async fn rollup_rows(
        &self,
        filter: RollupFilter,
        dims: Dims,
        segments: Vec<Segment>,
    ) -> Result<Vec<RollupRow>, StoreError> {
        if filter.accounts.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        self.with_reader(move |c| {
            let mut out = Vec::new();
            for seg in segments.into_iter().enumerate() {
                rollup_query(c, &filter, dims, seg, &mut out)?;
            }
            Ok(out)
        })
        .await
    }

    async fn records_page(
        &self,
        filter: RecordFilter,
        after: Option<RecordCursor>,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        self.with_reader(move |c| records_query(c, &filter, after.as_ref(), descending, limit))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::ledger::{Status, Store};
    use crate::metering::Provenance;
    use crate::usage::cover;
    use crate::usage::time::{parse_rfc3339, parse_tz, Grid, Unit};

    fn record(i: usize, t: i64, account: &str, rng: &mut StdRng) -> UsageRecord {
        let model = ["gpt-4o", "claude-x", "m3"][rng.gen_range(0..3)];
        UsageRecord {
            request_id: format!("req_{i:06}"),
            created_at_ms: t,
            finished_at_ms: t + 5,
            account_id: account.into(),
            key_id: format!("key_{}", rng.gen_range(0..3)),
            endpoint: "chat.completions".into(),
            model_requested: model.into(),
            model_served: model.into(),
            provider: "p".into(),
            owned_by: "o".into(),
            source: if rng.gen_bool(0.2) {
                "user"
            } else {
                "platform"
            }
            .into(),
            input_tokens: rng.gen_range(0..1000),
            output_tokens: rng.gen_range(0..1000),
            cached_tokens: rng.gen_range(0..10),
            cache_write_tokens: 0,
            reasoning_tokens: rng.gen_range(0..10),
            cost_nanos: rng.gen_range(0..1_000_000),
            charged_nanos: rng.gen_range(0..1_000_000),
            price_input: 0,
            price_output: 0,
            price_cached_input: 0,
            price_cache_write: 0,
            status: if rng.gen_bool(0.9) {
                Status::Success
            } else {
                Status::Error
            },
            http_status: 200,
            error_code: None,
            latency_ms: 5,
            ttft_ms: None,
            streamed: false,
            provenance: Provenance::Provider,
        }
    }

    fn sums(r: &UsageRecord) -> Sums {
        Sums {
            requests: 1,
            success: i64::from(r.status == Status::Success),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_tokens: r.cached_tokens,
            reasoning_tokens: r.reasoning_tokens,
            cost_nanos: r.cost_nanos,
            charged_nanos: r.charged_nanos,
        }
    }

    /// Random records (some exactly on UTC, :30 and :45 boundaries) in two accounts; every zone
    /// and unit's buckets, read from the rollups, equal sums taken record by record.
    #[tokio::test]
    async fn rollup_buckets_equal_record_sums_in_every_zone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let start = parse_rfc3339("2027-12-20T00:00:00Z").unwrap();
        let end = parse_rfc3339("2028-03-05T00:00:00Z").unwrap();
        let mut recs = Vec::new();
        for i in 0..4000 {
            let t = if i % 10 == 0 {
                // On a boundary, or the last millisecond before one.
                let q = rng.gen_range(0..(end - start) / 900_000) * 900_000 + start;
                q - i64::from(rng.gen_bool(0.5))
            } else {
                rng.gen_range(start..end)
            };
            let account = if i % 7 == 0 { "acct_other" } else { "acct_a" };
            recs.push(record(i, t, account, &mut rng));
        }
        for chunk in recs.chunks(500) {
            store.insert_usage(chunk.to_vec()).await.unwrap();
        }
        let mine: Vec<&UsageRecord> = recs.iter().filter(|r| r.account_id == "acct_a").collect();
        let zones = [
            "UTC",
            "America/New_York",
            "Asia/Kolkata",
            "Asia/Kathmandu",
            "Australia/Lord_Howe",
        ];
        for zone in zones {
            let tz = parse_tz(zone).unwrap();
            for unit in [Unit::Hour, Unit::Day, Unit::Week, Unit::Month] {
                // Minute-aligned, as the usage endpoints make every bound.
                let a = start + rng.gen_range(0..3 * 1440) * 60_000;
                let grid = Grid::new(tz, unit, a, end, 100_000).unwrap();
                let filter = RollupFilter {
                    accounts: Some(vec!["acct_a".into()]),
                    ..RollupFilter::default()
                };
                let dims = Dims {
                    model: true,
                    source: true,
                    ..Dims::default()
                };
                let plan = cover::plan(&cover::align(&grid.bounds));
                let rows = store
                    .rollup_rows(filter, dims, plan.segments.clone())
                    .await
                    .unwrap();
                let got: BTreeMap<(usize, String, String), Sums> =
                    cover::fold(&plan, &grid.bounds, rows)
                        .into_iter()
                        .map(|((i, g), v)| ((i, g.model.unwrap(), g.source.unwrap()), v))
                        .collect();
                let mut want: BTreeMap<(usize, String, String), Sums> = BTreeMap::new();
                for r in &mine {
                    if let Some(i) = cover::bucket_of(&grid.bounds, r.created_at_ms) {
                        let k = (i, r.model_requested.clone(), r.source.clone());
                        want.entry(k).or_default().add(&sums(r));
                    }
                }
                assert_eq!(got.len(), want.len(), "{zone} {unit:?}");
                for (k, v) in &want {
                    assert_eq!(got.get(k), Some(v), "{zone} {unit:?} {k:?}");
                }
            }
        }
        // Every account at once (the organization view) reads the accounts table: none here.
        let all = store
            .rollup_rows(
                RollupFilter::default(),
                Dims::default(),
                vec![Segment {
                    grain: Grain::Day,
                    start_ms: 0,
                    end_ms: crate::usage::time::MAX_MS,
                    split: false,
                }],
            )
            .await
            .unwrap();
        assert!(all.is_empty());
    }

    /// Keyset pages walk every record once, in order, ties on the millisecond included.
    #[tokio::test]
    async fn record_pages_walk_every_record_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let mut rng = StdRng::seed_from_u64(9);
        let recs: Vec<UsageRecord> = (0..300)
            .map(|i| {
                record(
                    (i * 37) % 300,
                    1_000_000 + (i as i64 / 4) * 10,
                    "acct_a",
                    &mut rng,
                )
            })
            .collect();
        store.insert_usage(recs.clone()).await.unwrap();
        let mut want: Vec<(i64, String)> = recs
            .iter()
            .map(|r| (r.created_at_ms, r.request_id.clone()))
            .collect();
        want.sort();
        for descending in [false, true] {
            let filter = RecordFilter {
                account_id: "acct_a".into(),
                start_ms: 0,
                end_ms: i64::MAX,
                ..RecordFilter::default()
            };
            let mut got = Vec::new();
            let mut cursor = None;
            loop {
                let page = store
                    .records_page(filter.clone(), cursor, descending, 7)
                    .await
                    .unwrap();
                got.extend(page.iter().map(|r| (r.created_at_ms, r.request_id.clone())));
                match page.last() {
                    Some(r) if page.len() == 7 => {
                        cursor = Some(RecordCursor {
                            created_at_ms: r.created_at_ms,
                            request_id: r.request_id.clone(),
                        })
                    }
                    _ => break,
                }
            }
            let mut expect = want.clone();
            if descending {
                expect.reverse();
            }
            assert_eq!(got, expect, "descending: {descending}");
        }
        // A model filter walks the (account, model, time) index.
        let filter = RecordFilter {
            account_id: "acct_a".into(),
            model: Some("m3".into()),
            start_ms: 0,
            end_ms: i64::MAX,
            ..RecordFilter::default()
        };
        let page = store.records_page(filter, None, true, 1000).await.unwrap();
        assert_eq!(
            page.len(),
            recs.iter().filter(|r| r.model_requested == "m3").count()
        );
    }
}

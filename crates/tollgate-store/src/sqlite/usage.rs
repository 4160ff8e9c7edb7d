//! Usage reads for SQLite: reads of the rollup tables (`usage_rollup_minute`, `_hour`, `_day`;
//! primary key `(account_id, bucket_ms, …)`, so every read is a range seek per account), and
//! keyset pages of raw records over the `(account_id, created_at_ms)`, `(key_id, created_at_ms)`
//! and `(account_id, model_requested, created_at_ms)` indexes.

use std::collections::HashMap;
use std::fmt::Write;

use rusqlite::types::{Value, ValueRef};
use rusqlite::{params_from_iter, Connection};

use tollgate_core::record::UsageRecord;
use tollgate_core::rollup::{
    AttrFilter, Dims, GroupKey, RecordCursor, RecordFilter, RollupFilter, RollupRow, Segment, Sums,
};
use tollgate_core::StoreError;

use super::conn::{Db, Fail};
use super::rows::{record_from_row, rollup_table as table, RECORD_COLUMNS};
use crate::columns::{attr_rows, attr_table, dim_flags, reads_attr, DIM_COLUMNS};

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

/// Reads one segment. Rows are summed here rather than by `GROUP BY`: the rollup's primary key
/// already delivers them in bucket order, and SQLite's sorter for the group was most of the
/// query's time (2 ms of 2.2 for a 30-day, per-model, per-day read).
fn rollup_query(
    c: &Connection,
    filter: &RollupFilter,
    dims: Dims,
    (index, seg): (usize, Segment),
    out: &mut Vec<RollupRow>,
) -> Result<(), Fail> {
    let flags = dim_flags(dims);
    let grouped = seg.split || dims.user || flags.iter().any(|&f| f);
    let mut args: Vec<Value> = Vec::new();
    let mut select = String::from("SELECT bucket_ms");
    for (col, on) in DIM_COLUMNS.iter().zip(flags) {
        select.push_str(", ");
        select.push_str(if on { col } else { "NULL" });
    }
    select.push_str(if dims.user { ", attr_value" } else { ", NULL" });
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
    let attr = reads_attr(filter, dims);
    if attr {
        select.push_str(attr_table(seg.grain));
        if filter.attribution == AttrFilter::All {
            // Every user's rows in the range, not every user's history.
            select.push_str(" INDEXED BY ");
            select.push_str(attr_table(seg.grain));
            select.push_str("_time");
        }
    } else {
        select.push_str(table(seg.grain));
    }
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
    let endpoints: Vec<String> = filter
        .endpoints
        .iter()
        .map(|e| e.as_str().to_string())
        .collect();
    push_in(&mut select, &mut args, "endpoint", &endpoints);
    if attr {
        let (kind, values) = attr_rows(&filter.attribution);
        select.push_str(" AND attr_kind = ?");
        args.push(Value::Text(kind.as_str().to_string()));
        push_in(&mut select, &mut args, "attr_value", values);
    }
    let mut stmt = c.prepare_cached(&select)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    // (bucket, dims) -> position in `out`; the key buffer is reused, so a row that joins an
    // existing group allocates nothing.
    let mut groups: HashMap<String, usize> = HashMap::new();
    let mut key = String::new();
    while let Some(r) = rows.next()? {
        // An aggregate without GROUP BY yields one row of NULLs when nothing matched.
        let Some(requests) = r.get::<_, Option<i64>>(8)? else {
            continue;
        };
        let sums = Sums {
            requests,
            success: r.get(9)?,
            input_tokens: r.get(10)?,
            output_tokens: r.get(11)?,
            cached_tokens: r.get(12)?,
            reasoning_tokens: r.get(13)?,
            cost_nanos: r.get(14)?,
            charged_nanos: r.get(15)?,
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
        for i in 1..=7 {
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
                user: r.get(7)?,
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
) -> Result<Vec<UsageRecord>, Fail> {
    let mut args: Vec<Value> = vec![Value::Text(f.account_id.clone())];
    let mut sql = format!(
        "SELECT {} FROM usage_records WHERE account_id = ?",
        RECORD_COLUMNS
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
    push_in(&mut sql, &mut args, "end_user", &f.users);
    if let Some(t) = &f.tag {
        // Tags are canonical `k=v,k=v` with no comma inside a pair: a whole-pair match.
        sql.push_str(" AND instr(',' || tags || ',', ?) > 0");
        args.push(Value::Text(format!(",{t},")));
    }
    let dir = if descending { "DESC" } else { "ASC" };
    sql.push_str(&format!(
        " ORDER BY created_at_ms {dir}, request_id {dir} LIMIT ?"
    ));
    args.push(Value::Integer(limit as i64));
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), record_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(super) async fn rollup_rows(
    store: &Db,
    filter: RollupFilter,
    dims: Dims,
    segments: Vec<Segment>,
) -> Result<Vec<RollupRow>, StoreError> {
    if filter.accounts.as_ref().is_some_and(Vec::is_empty) {
        return Ok(Vec::new());
    }
    store
        .with_reader(move |c| {
            let mut out = Vec::new();
            for seg in segments.into_iter().enumerate() {
                rollup_query(c, &filter, dims, seg, &mut out)?;
            }
            Ok(out)
        })
        .await
}

pub(super) async fn records_page(
    store: &Db,
    filter: RecordFilter,
    after: Option<RecordCursor>,
    descending: bool,
    limit: usize,
) -> Result<Vec<UsageRecord>, StoreError> {
    store
        .with_reader(move |c| records_query(c, &filter, after.as_ref(), descending, limit))
        .await
}

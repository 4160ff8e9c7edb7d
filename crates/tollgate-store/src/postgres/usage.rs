//! Usage reads for PostgreSQL: sums of the rollup tables (primary key `(account_id, bucket_ms,
//! …)`, so a read is a range scan per account) grouped in SQL, and keyset pages of raw records
//! over the `(account_id, created_at_ms)` index (partitions outside the range are pruned).

use deadpool_postgres::Object;
use tokio_postgres::types::ToSql;
use tollgate_core::record::UsageRecord;
use tollgate_core::rollup::{
    Dims, GroupKey, RecordCursor, RecordFilter, RollupFilter, RollupRow, Segment, Sums,
};
use tollgate_core::StoreError;

use super::conn::classify;
use super::rows::{attr_table, get, record_from_row, rollup_table, RECORD_COLUMNS};
use crate::columns::{attr_rows, dim_flags, reads_attr, DIM_COLUMNS};

type Arg = Box<dyn ToSql + Sync + Send>;

fn placeholder(args: &mut Vec<Arg>, v: Arg) -> String {
    args.push(v);
    format!("${}", args.len())
}

/// `AND col = ANY($n)` for a non-empty list.
fn push_any(sql: &mut String, args: &mut Vec<Arg>, col: &str, values: &[String]) {
    if values.is_empty() {
        return;
    }
    let p = placeholder(args, Box::new(values.to_vec()));
    sql.push_str(&format!(" AND {col} = ANY({p}::text[])"));
}

fn refs(args: &[Arg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

pub(super) async fn rollup_query(
    c: &Object,
    filter: &RollupFilter,
    dims: Dims,
    (index, seg): (usize, Segment),
    out: &mut Vec<RollupRow>,
) -> Result<(), StoreError> {
    let flags = dim_flags(dims);
    let mut args: Vec<Arg> = Vec::new();
    let mut select = String::from("SELECT ");
    let mut group: Vec<String> = Vec::new();
    select.push_str(if seg.split { "bucket_ms" } else { "0::bigint" });
    if seg.split {
        group.push("1".into());
    }
    let user_col = [("attr_value", dims.user)];
    for (i, (col, on)) in DIM_COLUMNS
        .iter()
        .copied()
        .zip(flags)
        .chain(user_col)
        .enumerate()
    {
        select.push_str(", ");
        if on {
            select.push_str(col);
            group.push((i + 2).to_string());
        } else {
            select.push_str("NULL::text");
        }
    }
    select.push_str(
        ", SUM(requests)::bigint, SUM(success)::bigint, SUM(input_tokens)::bigint, \
         SUM(output_tokens)::bigint, SUM(cached_tokens)::bigint, SUM(reasoning_tokens)::bigint, \
         SUM(cost_nanos)::bigint, SUM(charged_nanos)::bigint FROM ",
    );
    let attr = reads_attr(filter, dims);
    select.push_str(if attr {
        attr_table(seg.grain)
    } else {
        rollup_table(seg.grain)
    });
    match &filter.accounts {
        // Every account that exists (the organization view), as SQLite reads it.
        None => select.push_str(" WHERE account_id IN (SELECT id FROM accounts)"),
        Some(list) => {
            select.push_str(" WHERE TRUE");
            push_any(&mut select, &mut args, "account_id", list);
        }
    }
    let lo = placeholder(&mut args, Box::new(seg.start_ms));
    let hi = placeholder(&mut args, Box::new(seg.end_ms));
    select.push_str(&format!(" AND bucket_ms >= {lo} AND bucket_ms < {hi}"));
    push_any(&mut select, &mut args, "key_id", &filter.key_ids);
    push_any(&mut select, &mut args, "model", &filter.models);
    push_any(&mut select, &mut args, "provider", &filter.providers);
    let endpoints: Vec<String> = filter
        .endpoints
        .iter()
        .map(|e| e.as_str().to_string())
        .collect();
    push_any(&mut select, &mut args, "endpoint", &endpoints);
    if attr {
        let (kind, values) = attr_rows(&filter.attribution);
        let k = placeholder(&mut args, Box::new(kind.as_str()));
        select.push_str(&format!(" AND attr_kind = {k}"));
        push_any(&mut select, &mut args, "attr_value", values);
    }
    if !group.is_empty() {
        let g = group.join(", ");
        select.push_str(&format!(" GROUP BY {g} ORDER BY {g}"));
    }
    let rows = c.query(&select, &refs(&args)).await.map_err(classify)?;
    for r in rows {
        // An aggregate without GROUP BY yields one row of NULLs when nothing matched.
        let Some(requests) = get::<Option<i64>>(&r, 8)? else {
            continue;
        };
        let sums = Sums {
            requests,
            success: get(&r, 9)?,
            input_tokens: get(&r, 10)?,
            output_tokens: get(&r, 11)?,
            cached_tokens: get(&r, 12)?,
            reasoning_tokens: get(&r, 13)?,
            cost_nanos: get(&r, 14)?,
            charged_nanos: get(&r, 15)?,
        };
        out.push(RollupRow {
            segment: index,
            bucket_ms: if seg.split { get(&r, 0)? } else { seg.start_ms },
            group: GroupKey {
                account_id: get(&r, 1)?,
                key_id: get(&r, 2)?,
                model: get(&r, 3)?,
                provider: get(&r, 4)?,
                source: get(&r, 5)?,
                endpoint: get(&r, 6)?,
                user: get(&r, 7)?,
            },
            sums,
        });
    }
    Ok(())
}

pub(super) async fn records_page(
    c: &Object,
    f: &RecordFilter,
    after: Option<&RecordCursor>,
    descending: bool,
    limit: usize,
) -> Result<Vec<UsageRecord>, StoreError> {
    let mut args: Vec<Arg> = Vec::new();
    let acct = placeholder(&mut args, Box::new(f.account_id.clone()));
    let mut sql = format!("SELECT {RECORD_COLUMNS} FROM usage_records WHERE account_id = {acct}");
    let (mut lo, mut hi) = (f.start_ms, f.end_ms);
    if let Some(cur) = after {
        // Narrow the index range to the cursor; ties on the millisecond break on request_id.
        let t = placeholder(&mut args, Box::new(cur.created_at_ms));
        let id = placeholder(&mut args, Box::new(cur.request_id.clone()));
        if descending {
            hi = hi.min(cur.created_at_ms.saturating_add(1));
            sql.push_str(&format!(" AND (created_at_ms, request_id) < ({t}, {id})"));
        } else {
            lo = lo.max(cur.created_at_ms);
            sql.push_str(&format!(" AND (created_at_ms, request_id) > ({t}, {id})"));
        }
    }
    let lo = placeholder(&mut args, Box::new(lo));
    let hi = placeholder(&mut args, Box::new(hi));
    sql.push_str(&format!(
        " AND created_at_ms >= {lo} AND created_at_ms < {hi}"
    ));
    for (col, v) in [
        ("key_id", &f.key_id),
        ("model_requested", &f.model),
        ("provider", &f.provider),
    ] {
        if let Some(v) = v {
            let p = placeholder(&mut args, Box::new(v.clone()));
            sql.push_str(&format!(" AND {col} = {p}"));
        }
    }
    push_any(&mut sql, &mut args, "end_user", &f.users);
    if let Some(t) = &f.tag {
        // Tags are canonical `k=v,k=v` with no comma inside a pair: a whole-pair match.
        let p = placeholder(&mut args, Box::new(format!(",{t},")));
        sql.push_str(&format!(" AND strpos(',' || tags || ',', {p}) > 0"));
    }
    let dir = if descending { "DESC" } else { "ASC" };
    let l = placeholder(&mut args, Box::new(limit as i64));
    sql.push_str(&format!(
        " ORDER BY created_at_ms {dir}, request_id {dir} LIMIT {l}"
    ));
    let rows = c.query(&sql, &refs(&args)).await.map_err(classify)?;
    rows.iter().map(record_from_row).collect()
}

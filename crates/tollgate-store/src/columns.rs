//! What both backends' schemas share: the column lists, in the order the row readers expect,
//! the rollup table of each grain, and the one shape of a rollup upsert (main and attribution
//! rows alike).

use tollgate_core::insights::{InsightRow, InsightRows};
use tollgate_core::pricing::UnitPrices;
use tollgate_core::record::Status;
use tollgate_core::rollup::{AttrFilter, AttrKey, AttrKind, Dims, Grain, RollupFilter, RollupKey};
use tollgate_core::StoreError;

pub(crate) const RECORD_COLUMNS: &str =
    "request_id, created_at_ms, finished_at_ms, account_id, key_id, endpoint, \
    model_requested, model_served, provider, owned_by, source, input_tokens, output_tokens, \
    cached_tokens, cache_write_tokens, reasoning_tokens, cost_nanos, price_input, price_output, \
    price_cached_input, price_cache_write, status, http_status, error_code, latency_ms, ttft_ms, \
    streamed, provenance, charged_nanos, anomaly, end_user, tags, price_version, \
    fingerprint, conversation";

/// What `RecordStore::insight_rows` reads of each record, in `columns::insight_row` order.
pub(crate) const INSIGHT_COLUMNS: &str =
    "request_id, created_at_ms, key_id, model_requested, status, input_tokens, output_tokens, \
    cached_tokens, cache_write_tokens, reasoning_tokens, cost_nanos, price_input, price_output, \
    price_cached_input, price_cache_write, fingerprint, conversation";

/// The numbers of an insight row as read (`INSIGHT_COLUMNS` 5 to 16), the same on both backends.
pub(crate) fn insight_row(
    rows: &mut InsightRows,
    (request_id, created_at_ms, key, model, status): (String, i64, &str, &str, &str),
    n: [i64; 10],
    (fingerprint, conversation): (Option<i64>, Option<i64>),
) -> Result<(), StoreError> {
    let status = Status::parse(status)
        .ok_or_else(|| StoreError::invalid(format!("usage record {request_id}: bad status")))?;
    let key = rows.intern(false, key);
    let model = rows.intern(true, model);
    rows.rows.push(InsightRow {
        request_id,
        created_at_ms,
        key,
        model,
        status,
        input_tokens: n[0],
        output_tokens: n[1],
        cached_tokens: n[2],
        cache_write_tokens: n[3],
        reasoning_tokens: n[4],
        cost_nanos: n[5],
        prices: UnitPrices {
            input: n[6],
            output: n[7],
            cached_input: n[8],
            cache_write: n[9],
        },
        fingerprint,
        conversation,
    });
    Ok(())
}

/// Same-millisecond records in request-id order (the scan orders by time only, so it can walk
/// the `(account_id, created_at_ms)` index without a sort; this pass over nearly sorted rows
/// is linear).
pub(crate) fn order_insight_rows(rows: &mut InsightRows) {
    rows.rows
        .sort_by(|a, b| (a.created_at_ms, &a.request_id).cmp(&(b.created_at_ms, &b.request_id)));
}

/// How many columns `RECORD_COLUMNS` names: the values of one inserted row.
pub(crate) const RECORD_WIDTH: usize = count_columns(RECORD_COLUMNS);

/// Columns in a comma-separated list.
const fn count_columns(list: &str) -> usize {
    let bytes = list.as_bytes();
    let (mut n, mut i) = (1, 0);
    while i < bytes.len() {
        if bytes[i] == b',' {
            n += 1;
        }
        i += 1;
    }
    n
}

pub(crate) const KEY_COLUMNS: &str =
    "id, account_id, name, key_hash, last4, prefix, role, created_at_ms, revoked_at_ms, limits";

pub(crate) const CREDIT_COLUMNS: &str =
    "id, account_id, kind, amount_nanos, idempotency_key, note, created_at_ms";

pub(crate) fn rollup_table(g: Grain) -> &'static str {
    match g {
        Grain::Minute => "usage_rollup_minute",
        Grain::Hour => "usage_rollup_hour",
        Grain::Day => "usage_rollup_day",
    }
}

/// The attribution rollup table of each grain (rows per end user and per tag).
pub(crate) fn attr_table(g: Grain) -> &'static str {
    match g {
        Grain::Minute => "usage_attr_minute",
        Grain::Hour => "usage_attr_hour",
        Grain::Day => "usage_attr_day",
    }
}

/// Whether a query reads the attribution rollups: it filters by users or a tag, or groups by
/// user.
pub(crate) fn reads_attr(filter: &RollupFilter, dims: Dims) -> bool {
    dims.user || filter.attribution != AttrFilter::All
}

/// The attribution rows a query reads: their kind, and the values wanted (empty: every value
/// of that kind, for grouping by user).
pub(crate) fn attr_rows(f: &AttrFilter) -> (AttrKind, &[String]) {
    match f {
        AttrFilter::Tag(t) => (AttrKind::Tag, std::slice::from_ref(t)),
        AttrFilter::Users(u) => (AttrKind::User, u.as_slice()),
        AttrFilter::All => (AttrKind::User, &[]),
    }
}

/// The rollup's dimension columns, in `GroupKey` order.
pub(crate) const DIM_COLUMNS: [&str; 6] = [
    "account_id",
    "key_id",
    "model",
    "provider",
    "source",
    "endpoint",
];

/// Which of `DIM_COLUMNS` a query groups by.
pub(crate) fn dim_flags(d: Dims) -> [bool; 6] {
    [d.account, d.key, d.model, d.provider, d.source, d.endpoint]
}

/// A rollup delta's key: a main rollup key, and for the attribution rollups also the user or
/// tag it counts. Both backends write either kind through one upsert.
pub(crate) trait RowKey<'a>: Ord {
    /// Whether the table keys rows by `(attr_kind, attr_value)` too.
    const ATTR: bool;
    fn row(&self) -> &RollupKey<'a>;
    /// `(attr_kind, attr_value)` for attribution rows.
    fn attr(&self) -> Option<(&'static str, &'a str)>;
}

impl<'a> RowKey<'a> for RollupKey<'a> {
    const ATTR: bool = false;
    fn row(&self) -> &RollupKey<'a> {
        self
    }
    fn attr(&self) -> Option<(&'static str, &'a str)> {
        None
    }
}

impl<'a> RowKey<'a> for AttrKey<'a> {
    const ATTR: bool = true;
    fn row(&self) -> &RollupKey<'a> {
        &self.row
    }
    fn attr(&self) -> Option<(&'static str, &'a str)> {
        Some((self.kind.as_str(), self.value))
    }
}

/// A rollup table's key columns, in insert order, and its conflict target (the primary key).
pub(crate) fn rollup_key_columns(attr: bool) -> (&'static str, &'static str) {
    if attr {
        (
            "bucket_ms, account_id, attr_kind, attr_value, key_id, model, provider, source, endpoint",
            "account_id, attr_kind, attr_value, bucket_ms, key_id, model, provider, source, endpoint",
        )
    } else {
        (
            "bucket_ms, account_id, key_id, model, provider, source, endpoint",
            "account_id, bucket_ms, key_id, model, provider, source, endpoint",
        )
    }
}

/// The summed columns, in insert order (`Sums` field order).
pub(crate) const SUM_COLUMNS: &str = "requests, success, input_tokens, output_tokens, \
     cached_tokens, reasoning_tokens, cost_nanos, charged_nanos";

/// How many key columns a rollup table has (the rest of an upsert's values are the 8 sums).
pub(crate) fn rollup_key_width(attr: bool) -> usize {
    if attr {
        9
    } else {
        7
    }
}

/// Adds an upsert's increments to the row's sums (`t` is the table, `excluded` the new row).
pub(crate) const SUMS_UPDATE: &str = "requests = t.requests + excluded.requests, \
     success = t.success + excluded.success, \
     input_tokens = t.input_tokens + excluded.input_tokens, \
     output_tokens = t.output_tokens + excluded.output_tokens, \
     cached_tokens = t.cached_tokens + excluded.cached_tokens, \
     reasoning_tokens = t.reasoning_tokens + excluded.reasoning_tokens, \
     cost_nanos = t.cost_nanos + excluded.cost_nanos, \
     charged_nanos = t.charged_nanos + excluded.charged_nanos";

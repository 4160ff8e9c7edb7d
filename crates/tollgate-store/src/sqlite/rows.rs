//! Rows to domain values and back: column lists, row readers (a value that is not one of its
//! type's values is an error, never a default), and the rollup upsert.

use rusqlite::types::{ToSqlOutput, Type, ValueRef};
use rusqlite::Row;
use std::fmt::Write as _;
use tollgate_core::account::{Account, ApiKeyRecord, Role};
use tollgate_core::attribution::Tags;
use tollgate_core::credit::{CreditEntry, CreditKind};
use tollgate_core::record::Provenance;
use tollgate_core::record::{Anomaly, Endpoint, Source, Status, UsageRecord};

use super::conn::bad_value;
pub(crate) use crate::columns::{
    attr_table, rollup_table, CREDIT_COLUMNS, KEY_COLUMNS, RECORD_COLUMNS, RECORD_WIDTH,
};
use crate::columns::{rollup_key_columns, rollup_key_width, SUMS_UPDATE, SUM_COLUMNS};

/// A record's values in `RECORD_COLUMNS` order (what `record_from_row` reads back), borrowed
/// for the batch insert to bind.
pub(crate) fn record_values(r: &UsageRecord) -> [ToSqlOutput<'_>; RECORD_WIDTH] {
    fn text(s: &str) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))
    }
    fn opt_text(s: Option<&str>) -> ToSqlOutput<'_> {
        s.map_or(ToSqlOutput::Borrowed(ValueRef::Null), text)
    }
    fn int(v: i64) -> ToSqlOutput<'static> {
        ToSqlOutput::Borrowed(ValueRef::Integer(v))
    }
    fn opt_int(v: Option<i64>) -> ToSqlOutput<'static> {
        v.map_or(ToSqlOutput::Borrowed(ValueRef::Null), int)
    }
    [
        text(&r.request_id),
        int(r.created_at_ms),
        int(r.finished_at_ms),
        text(&r.account_id),
        text(&r.key_id),
        text(r.endpoint.as_str()),
        text(&r.model_requested),
        text(&r.model_served),
        text(&r.provider),
        text(&r.owned_by),
        text(r.source.as_str()),
        int(r.input_tokens),
        int(r.output_tokens),
        int(r.cached_tokens),
        int(r.cache_write_tokens),
        int(r.reasoning_tokens),
        int(r.cost_nanos),
        int(r.price_input),
        int(r.price_output),
        int(r.price_cached_input),
        int(r.price_cache_write),
        text(r.status.as_str()),
        int(i64::from(r.http_status)),
        opt_text(r.error_code.as_deref()),
        int(r.latency_ms),
        opt_int(r.ttft_ms),
        int(i64::from(r.streamed)),
        text(r.provenance.as_str()),
        int(r.charged_nanos),
        opt_text(r.anomaly.map(Anomaly::as_str)),
        opt_text(r.user.as_deref()),
        opt_text((!r.tags.is_empty()).then(|| r.tags.as_str())),
        opt_text(r.price_version.as_deref()),
        opt_int(r.fingerprint),
        opt_int(r.conversation),
    ]
}

pub(crate) fn record_from_row(r: &Row<'_>) -> rusqlite::Result<UsageRecord> {
    let endpoint: String = r.get(5)?;
    let source: String = r.get(10)?;
    let status: String = r.get(21)?;
    let provenance: String = r.get(27)?;
    Ok(UsageRecord {
        request_id: r.get(0)?,
        created_at_ms: r.get(1)?,
        finished_at_ms: r.get(2)?,
        account_id: r.get(3)?,
        key_id: r.get(4)?,
        endpoint: Endpoint::parse(&endpoint).ok_or_else(|| bad_value(5, "endpoint", &endpoint))?,
        model_requested: r.get(6)?,
        model_served: r.get(7)?,
        provider: r.get(8)?,
        owned_by: r.get(9)?,
        source: Source::parse(&source).ok_or_else(|| bad_value(10, "source", &source))?,
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
        status: Status::parse(&status).ok_or_else(|| bad_value(21, "status", &status))?,
        http_status: r.get(22)?,
        error_code: r.get(23)?,
        latency_ms: r.get(24)?,
        ttft_ms: r.get(25)?,
        streamed: r.get(26)?,
        provenance: Provenance::parse(&provenance)
            .ok_or_else(|| bad_value(27, "provenance", &provenance))?,
        charged_nanos: r.get(28)?,
        anomaly: match r.get::<_, Option<String>>(29)? {
            None => None,
            Some(a) => Some(Anomaly::parse(&a).ok_or_else(|| bad_value(29, "anomaly", &a))?),
        },
        user: r.get(30)?,
        tags: match r.get::<_, Option<String>>(31)? {
            None => Tags::default(),
            Some(t) => Tags::from_canonical(&t).ok_or_else(|| bad_value(31, "tags", &t))?,
        },
        price_version: r.get(32)?,
        fingerprint: r.get(33)?,
        conversation: r.get(34)?,
    })
}

pub(crate) fn account_from_row(r: &Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at_ms: r.get(2)?,
        disabled: r.get(3)?,
    })
}

pub(crate) fn key_from_row(r: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    let role: String = r.get(6)?;
    Ok(ApiKeyRecord {
        id: r.get(0)?,
        account_id: r.get(1)?,
        name: r.get(2)?,
        key_hash: r.get(3)?,
        last4: r.get(4)?,
        prefix: r.get(5)?,
        role: match role.as_str() {
            "admin" => Role::Admin,
            "user" => Role::User,
            other => return Err(bad_value(6, "role", other)),
        },
        created_at_ms: r.get(7)?,
        revoked_at_ms: r.get(8)?,
        // Unreadable limits are an error, never "unlimited".
        limits: serde_json::from_str(&r.get::<_, String>(9)?)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(9, Type::Text, Box::new(e)))?,
    })
}

/// The upsert of one rollup row (main or attribution: `attr`), `?1…` in insert order.
pub(crate) fn rollup_sql(table: &str, attr: bool) -> String {
    let (keys, conflict) = rollup_key_columns(attr);
    let n = rollup_key_width(attr) + 8;
    // Built on every batch for the statement cache's lookup: one buffer, not a string per
    // placeholder.
    let mut values = String::with_capacity(n * 5);
    for i in 1..=n {
        if i > 1 {
            values.push_str(", ");
        }
        // Writing to a String cannot fail.
        let _ = write!(values, "?{i}");
    }
    format!(
        "INSERT INTO {table} AS t ({keys}, {SUM_COLUMNS}) VALUES ({values}) \
         ON CONFLICT ({conflict}) DO UPDATE SET {SUMS_UPDATE}"
    )
}

pub(crate) fn credit_from_row(r: &Row<'_>) -> rusqlite::Result<CreditEntry> {
    let kind: String = r.get(2)?;
    Ok(CreditEntry {
        id: r.get(0)?,
        account_id: r.get(1)?,
        kind: match kind.as_str() {
            "grant" => CreditKind::Grant,
            "refund" => CreditKind::Refund,
            other => return Err(bad_value(2, "credit kind", other)),
        },
        amount_nanos: r.get(3)?,
        idempotency_key: r.get(4)?,
        note: r.get(5)?,
        created_at_ms: r.get(6)?,
    })
}

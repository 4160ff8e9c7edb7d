//! Rows to domain values: column lists and row readers. A value that is not one of its type's
//! values is a `Corrupt` error, never a default.

use tokio_postgres::types::FromSql;
use tokio_postgres::Row;
use tollgate_core::account::{Account, ApiKeyRecord, Role, StoredProviderKey};
use tollgate_core::attribution::Tags;
use tollgate_core::credit::{CreditEntry, CreditKind};
use tollgate_core::record::{Anomaly, Endpoint, Provenance, Source, Status, UsageRecord};
use tollgate_core::StoreError;

use super::conn::bad_value;

pub(crate) use crate::columns::{
    attr_table, rollup_table, CREDIT_COLUMNS, KEY_COLUMNS, RECORD_COLUMNS,
};

/// Column `i`, or `Corrupt` when it does not read as `T`.
pub(crate) fn get<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> Result<T, StoreError> {
    r.try_get(i)
        .map_err(|e| StoreError::corrupt(format!("postgres: column {i}: {e}")))
}

fn parsed<T>(r: &Row, i: usize, what: &str, parse: fn(&str) -> Option<T>) -> Result<T, StoreError> {
    let v: &str = get(r, i)?;
    parse(v).ok_or_else(|| bad_value(what, v))
}

pub(crate) fn record_from_row(r: &Row) -> Result<UsageRecord, StoreError> {
    let http_status: i32 = get(r, 22)?;
    Ok(UsageRecord {
        request_id: get(r, 0)?,
        created_at_ms: get(r, 1)?,
        finished_at_ms: get(r, 2)?,
        account_id: get(r, 3)?,
        key_id: get(r, 4)?,
        endpoint: parsed(r, 5, "endpoint", Endpoint::parse)?,
        model_requested: get(r, 6)?,
        model_served: get(r, 7)?,
        provider: get(r, 8)?,
        owned_by: get(r, 9)?,
        source: parsed(r, 10, "source", Source::parse)?,
        input_tokens: get(r, 11)?,
        output_tokens: get(r, 12)?,
        cached_tokens: get(r, 13)?,
        cache_write_tokens: get(r, 14)?,
        reasoning_tokens: get(r, 15)?,
        cost_nanos: get(r, 16)?,
        price_input: get(r, 17)?,
        price_output: get(r, 18)?,
        price_cached_input: get(r, 19)?,
        price_cache_write: get(r, 20)?,
        status: parsed(r, 21, "status", Status::parse)?,
        http_status: u16::try_from(http_status)
            .map_err(|_| bad_value("http_status", &http_status.to_string()))?,
        error_code: get(r, 23)?,
        latency_ms: get(r, 24)?,
        ttft_ms: get(r, 25)?,
        streamed: get(r, 26)?,
        provenance: parsed(r, 27, "provenance", Provenance::parse)?,
        charged_nanos: get(r, 28)?,
        anomaly: match get::<Option<&str>>(r, 29)? {
            None => None,
            Some(a) => Some(Anomaly::parse(a).ok_or_else(|| bad_value("anomaly", a))?),
        },
        user: get(r, 30)?,
        tags: match get::<Option<&str>>(r, 31)? {
            None => Tags::default(),
            Some(t) => Tags::from_canonical(t).ok_or_else(|| bad_value("tags", t))?,
        },
        price_version: get(r, 32)?,
        fingerprint: get(r, 33)?,
        conversation: get(r, 34)?,
    })
}

pub(crate) fn account_from_row(r: &Row) -> Result<Account, StoreError> {
    Ok(Account {
        id: get(r, 0)?,
        name: get(r, 1)?,
        created_at_ms: get(r, 2)?,
        disabled: get(r, 3)?,
    })
}

pub(crate) fn key_from_row(r: &Row) -> Result<ApiKeyRecord, StoreError> {
    let role: &str = get(r, 6)?;
    let limits: &str = get(r, 9)?;
    Ok(ApiKeyRecord {
        id: get(r, 0)?,
        account_id: get(r, 1)?,
        name: get(r, 2)?,
        key_hash: get(r, 3)?,
        last4: get(r, 4)?,
        prefix: get(r, 5)?,
        role: match role {
            "admin" => Role::Admin,
            "user" => Role::User,
            other => return Err(bad_value("role", other)),
        },
        created_at_ms: get(r, 7)?,
        revoked_at_ms: get(r, 8)?,
        // Unreadable limits are an error, never "unlimited".
        limits: serde_json::from_str(limits)
            .map_err(|e| StoreError::corrupt(format!("stored key limits: {e}")))?,
    })
}

pub(crate) fn credit_from_row(r: &Row) -> Result<CreditEntry, StoreError> {
    let kind: &str = get(r, 2)?;
    Ok(CreditEntry {
        id: get(r, 0)?,
        account_id: get(r, 1)?,
        kind: match kind {
            "grant" => CreditKind::Grant,
            "refund" => CreditKind::Refund,
            other => return Err(bad_value("credit kind", other)),
        },
        amount_nanos: get(r, 3)?,
        idempotency_key: get(r, 4)?,
        note: get(r, 5)?,
        created_at_ms: get(r, 6)?,
    })
}

pub(crate) fn provider_key_from_row(r: &Row) -> Result<StoredProviderKey, StoreError> {
    Ok(StoredProviderKey {
        account_id: get(r, 0)?,
        provider: get(r, 1)?,
        nonce: get(r, 2)?,
        ciphertext: get(r, 3)?,
        last4: get(r, 4)?,
        created_at_ms: get(r, 5)?,
    })
}

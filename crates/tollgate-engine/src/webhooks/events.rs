//! The events other services emit, with their payloads (`data`). Amounts are in credits, as
//! everywhere in the LLMHub API, with the exact nano-USD beside them.

use tollgate_core::account::ApiKeyRecord;
use tollgate_core::credit::{CreditEntry, CreditKind};
use tollgate_core::id::new_id;
use tollgate_core::money::nanos_to_credits;
use tollgate_core::store::QuotaKind;
use tollgate_core::webhook::{Event, EventType};

use super::iso;

/// An account's credit position at one instant, as this process sees it.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    pub balance_nanos: i64,
    /// Spent since the current grant epoch began (as seen by this process).
    pub epoch_spent_nanos: i64,
    /// Grants + refunds so far: names the grant epoch.
    pub credited_nanos: i64,
}

fn event(account_id: &str, kind: EventType, data: serde_json::Value, now_ms: i64) -> Event {
    Event::new(new_id("evt", 12), account_id, kind, data, now_ms)
}

pub fn key_created(k: &ApiKeyRecord) -> Event {
    event(
        &k.account_id,
        EventType::ApiKeyCreated,
        serde_json::json!({
            "account_id": k.account_id,
            "key_id": k.id,
            "name": k.name,
            "role": k.role.as_str(),
            "last4": k.last4,
            "created_at": iso(k.created_at_ms),
        }),
        k.created_at_ms,
    )
}

pub fn key_revoked(k: &ApiKeyRecord, now_ms: i64) -> Event {
    let mut e = event(
        &k.account_id,
        EventType::ApiKeyRevoked,
        serde_json::json!({
            "account_id": k.account_id,
            "key_id": k.id,
            "name": k.name,
            "revoked_at": iso(k.revoked_at_ms.unwrap_or(now_ms)),
        }),
        now_ms,
    );
    // A key is revoked once, whoever asks twice.
    e.dedupe_key = Some(format!("api_key.revoked:{}", k.id));
    e
}

/// `credits.granted`, for grants and refunds alike (`kind` says which).
pub fn credits_granted(entry: &CreditEntry, per_usd: i64, balance_nanos: Option<i64>) -> Event {
    let mut e = event(
        &entry.account_id,
        EventType::CreditsGranted,
        serde_json::json!({
            "account_id": entry.account_id,
            "credit_id": entry.id,
            "kind": match entry.kind { CreditKind::Grant => "grant", CreditKind::Refund => "refund" },
            "amount_credits": nanos_to_credits(entry.amount_nanos, per_usd),
            "amount_nanos": entry.amount_nanos,
            "balance_credits": balance_nanos.map(|b| nanos_to_credits(b, per_usd)),
            "note": entry.note,
            "created_at": iso(entry.created_at_ms),
        }),
        entry.created_at_ms,
    );
    e.dedupe_key = Some(format!("credits.granted:{}", entry.id));
    e
}

/// `credits.depleted`: once per grant epoch (`credited_nanos`: grants + refunds so far, which
/// every grant changes).
pub fn credits_depleted(
    account_id: &str,
    credited_nanos: i64,
    available_nanos: i64,
    needed_nanos: i64,
    per_usd: i64,
    now_ms: i64,
) -> Event {
    let mut e = event(
        account_id,
        EventType::CreditsDepleted,
        serde_json::json!({
            "account_id": account_id,
            "reason": "a request was refused for insufficient balance",
            "credits_remaining": nanos_to_credits(available_nanos.max(0), per_usd),
            "credits_needed": nanos_to_credits(needed_nanos, per_usd),
        }),
        now_ms,
    );
    e.dedupe_key = Some(format!("credits.depleted:{credited_nanos}"));
    e
}

/// `usage.threshold` for the credit epoch: `used_bp` hundredths of a percent of the credits
/// since the last grant are used.
pub fn usage_threshold(
    account_id: &str,
    percent: u8,
    used_bp: i64,
    at: Position,
    per_usd: i64,
    now_ms: i64,
) -> Event {
    event(
        account_id,
        EventType::UsageThreshold,
        serde_json::json!({
            "account_id": account_id,
            "threshold_percent": percent,
            // A ratio for people, not money: two decimals.
            "percent_used": used_bp as f64 / 100.0,
            "credits_used": nanos_to_credits(at.epoch_spent_nanos, per_usd),
            "credits_remaining": nanos_to_credits(at.balance_nanos.max(0), per_usd),
            "period": "since_last_grant",
            "period_start": null,
            "period_end": null,
        }),
        now_ms,
    )
}

/// `usage.threshold` for a key's spend limit: `used_bp` hundredths of a percent of the limit
/// are used in the limit's period.
pub fn key_usage_threshold(
    k: &super::KeySpend<'_>,
    percent: u8,
    used_bp: i64,
    per_usd: i64,
    now_ms: i64,
) -> Event {
    event(
        k.account_id,
        EventType::UsageThreshold,
        serde_json::json!({
            "account_id": k.account_id,
            "key_id": k.key_id,
            "threshold_percent": percent,
            "percent_used": used_bp as f64 / 100.0,
            "credits_used": nanos_to_credits(k.used_nanos, per_usd),
            "credits_remaining": nanos_to_credits(k.limit_nanos.saturating_sub(k.used_nanos).max(0), per_usd),
            "spend_limit_credits": nanos_to_credits(k.limit_nanos, per_usd),
            "period": k.period.as_str(),
            "period_start": if k.period == tollgate_core::account::Period::Total { None } else { Some(iso(k.period_start_ms)) },
            "period_end": k.period_end_ms.map(iso),
        }),
        now_ms,
    )
}

/// `credits.low`: the balance fell below the endpoint's `credits_low_threshold`.
pub fn credits_low(
    account_id: &str,
    threshold_nanos: i64,
    at: Position,
    per_usd: i64,
    now_ms: i64,
) -> Event {
    event(
        account_id,
        EventType::CreditsLow,
        serde_json::json!({
            "account_id": account_id,
            "credits_low_threshold": nanos_to_credits(threshold_nanos, per_usd),
            "credits_remaining": nanos_to_credits(at.balance_nanos.max(0), per_usd),
            "balance_nanos": at.balance_nanos,
        }),
        now_ms,
    )
}

/// `rate_limit.exceeded`: a key's limit refused `count` requests in the minute from
/// `window_start_ms`; one per key, limit and minute.
pub fn rate_limit_exceeded(
    account_id: &str,
    key_id: &str,
    kind: QuotaKind,
    limit: i64,
    count: u64,
    window_start_ms: i64,
    now_ms: i64,
) -> Event {
    let name = match kind {
        QuotaKind::Requests => "requests_per_minute",
        QuotaKind::Tokens => "tokens_per_minute",
        QuotaKind::SpendNanos => "spend_nanos",
    };
    let mut e = event(
        account_id,
        EventType::RateLimitExceeded,
        serde_json::json!({
            "account_id": account_id,
            "key_id": key_id,
            "limit": name,
            "limit_value": limit,
            "refused_count": count,
            "window_start": iso(window_start_ms),
            "window_end": iso(window_start_ms + 60_000),
        }),
        now_ms,
    );
    e.dedupe_key = Some(format!(
        "rate_limit.exceeded:{key_id}:{name}:{window_start_ms}"
    ));
    e
}

/// `credits.projected_exhaustion`: at the recent burn rate the balance runs out at
/// `exhausted_at_ms`, within the configured horizon.
pub fn projected_exhaustion(
    account_id: &str,
    burn_nanos_per_hour: i64,
    at: Position,
    exhausted_at_ms: i64,
    (window_hours, horizon_hours): (u64, u64),
    per_usd: i64,
    now_ms: i64,
) -> Event {
    event(
        account_id,
        EventType::CreditsProjectedExhaustion,
        serde_json::json!({
            "account_id": account_id,
            "burn_rate_credits_per_hour": nanos_to_credits(burn_nanos_per_hour, per_usd),
            "burn_rate_nanos_per_hour": burn_nanos_per_hour,
            "credits_remaining": nanos_to_credits(at.balance_nanos.max(0), per_usd),
            "projected_exhaustion_at": iso(exhausted_at_ms),
            "window_hours": window_hours,
            "horizon_hours": horizon_hours,
        }),
        now_ms,
    )
}

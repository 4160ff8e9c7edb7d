//! Webhooks: endpoints an account registers, the events tollgate sends them, and the outbox of
//! deliveries (one per event and endpoint) a dispatcher works through with retries.

use serde::{Deserialize, Serialize};

/// Every event type, as named on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "usage.threshold")]
    UsageThreshold,
    #[serde(rename = "credits.low")]
    CreditsLow,
    #[serde(rename = "credits.depleted")]
    CreditsDepleted,
    #[serde(rename = "credits.granted")]
    CreditsGranted,
    #[serde(rename = "credits.projected_exhaustion")]
    CreditsProjectedExhaustion,
    #[serde(rename = "api_key.created")]
    ApiKeyCreated,
    #[serde(rename = "api_key.revoked")]
    ApiKeyRevoked,
    #[serde(rename = "rate_limit.exceeded")]
    RateLimitExceeded,
    #[serde(rename = "webhook.test")]
    WebhookTest,
}

impl EventType {
    pub const ALL: [EventType; 9] = [
        Self::UsageThreshold,
        Self::CreditsLow,
        Self::CreditsDepleted,
        Self::CreditsGranted,
        Self::CreditsProjectedExhaustion,
        Self::ApiKeyCreated,
        Self::ApiKeyRevoked,
        Self::RateLimitExceeded,
        Self::WebhookTest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UsageThreshold => "usage.threshold",
            Self::CreditsLow => "credits.low",
            Self::CreditsDepleted => "credits.depleted",
            Self::CreditsGranted => "credits.granted",
            Self::CreditsProjectedExhaustion => "credits.projected_exhaustion",
            Self::ApiKeyCreated => "api_key.created",
            Self::ApiKeyRevoked => "api_key.revoked",
            Self::RateLimitExceeded => "rate_limit.exceeded",
            Self::WebhookTest => "webhook.test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// What an endpoint wants beyond its event types (the seed's `settings`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSettings {
    /// Percents of credits (or of a spend limit) used at which `usage.threshold` fires, 1–100.
    #[serde(default)]
    pub usage_threshold_percent: Vec<u8>,
    /// `credits.low` fires when the balance falls below this many credits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits_low_threshold: Option<i64>,
}

/// A secret sealed with the store's encryption key (ChaCha20-Poly1305); never stored plain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A registered endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub account_id: String,
    pub url: String,
    pub events: Vec<EventType>,
    pub settings: WebhookSettings,
    pub active: bool,
    /// Why the gateway disabled it (410, failing too long), if it did.
    pub disabled_reason: Option<String>,
    pub secret: SealedSecret,
    /// The secret before the last rotation, still signing until `previous_until_ms`.
    pub previous_secret: Option<SealedSecret>,
    pub previous_until_ms: Option<i64>,
    /// When the current run of failed deliveries began; None after a success.
    pub failing_since_ms: Option<i64>,
    pub created_at_ms: i64,
}

impl Webhook {
    pub fn wants(&self, kind: EventType) -> bool {
        kind == EventType::WebhookTest || self.events.contains(&kind)
    }
}

/// An event: written to the outbox with one delivery per subscribed active endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `evt_…`: the `webhook-id` of every attempt of every delivery.
    pub id: String,
    pub account_id: String,
    pub kind: EventType,
    /// At most one event per key (per account): a threshold crossing, a coalesced minute.
    pub dedupe_key: Option<String>,
    /// Only this endpoint (a `webhook.test`); None: every subscribed endpoint of the account.
    pub webhook_id: Option<String>,
    /// The body sent: `{"type", "timestamp", "data"}`.
    pub payload: String,
    pub created_at_ms: i64,
}

impl Event {
    /// An event with its wire body: `{"type": …, "timestamp": "…Z", "data": …}`.
    pub fn new(
        id: String,
        account_id: &str,
        kind: EventType,
        data: serde_json::Value,
        now_ms: i64,
    ) -> Self {
        let timestamp = chrono::DateTime::from_timestamp_millis(now_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let payload = serde_json::json!({
            "type": kind.as_str(),
            "timestamp": timestamp,
            "data": data,
        })
        .to_string();
        Self {
            id,
            account_id: account_id.to_string(),
            kind,
            dedupe_key: None,
            webhook_id: None,
            payload,
            created_at_ms: now_ms,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Succeeded,
    /// Out of retries, or its endpoint was disabled.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One event to one endpoint, with the outcome of its last attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: EventType,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at_ms: Option<i64>,
    pub last_attempt_at_ms: Option<i64>,
    pub last_status: Option<u16>,
    pub last_latency_ms: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
}

/// A due delivery, claimed by one dispatcher until `claimed_until`.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub payload: String,
    pub webhook: Webhook,
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub at_ms: i64,
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// The delivery's state after it, and when to try again if pending.
    pub state: DeliveryState,
    pub next_attempt_at_ms: Option<i64>,
    /// Disable the endpoint, for this reason (410 Gone, failing too long).
    pub disable: Option<String>,
}

/// Delays before the 2nd, 3rd, … attempt (Standard Webhooks' suggested schedule).
pub const RETRY_SCHEDULE_SECS: [i64; 7] = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];

/// When to try again after `attempts` failed attempts (None: give up). A `Retry-After` longer
/// than the schedule's delay is honoured.
pub fn next_attempt(now_ms: i64, attempts: u32, retry_after_secs: Option<i64>) -> Option<i64> {
    let idx = usize::try_from(attempts).ok()?.checked_sub(1)?;
    let delay = *RETRY_SCHEDULE_SECS.get(idx)?;
    let delay = retry_after_secs.map_or(delay, |r| delay.max(r.clamp(0, 86_400)));
    Some(now_ms.saturating_add(delay.saturating_mul(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_the_schedule_then_stop() {
        assert_eq!(next_attempt(0, 1, None), Some(5_000));
        assert_eq!(next_attempt(0, 2, None), Some(300_000));
        assert_eq!(next_attempt(0, 2, Some(600)), Some(600_000));
        assert_eq!(next_attempt(0, 1, Some(1)), Some(5_000));
        assert_eq!(next_attempt(0, 7, None), Some(36_000_000));
        assert_eq!(next_attempt(0, 8, None), None);
        assert_eq!(next_attempt(0, 0, None), None);
    }

    #[test]
    fn event_types_round_trip() {
        for e in EventType::ALL {
            assert_eq!(EventType::parse(e.as_str()), Some(e));
        }
        assert_eq!(EventType::parse("usage.nope"), None);
    }
}

//! The insights (`GET /v1/usage/insights`): each request's fingerprints, taken on the hot path
//! (`Engine::fingerprints`), and the analyses over a period's records (`Engine::insights`),
//! which read one narrow scan of the account's records and fold it in `insights::analyze`.

use std::collections::HashMap;

use serde_json::Value;
use tollgate_core::fingerprint::{FingerprintSecret, Fingerprints};
use tollgate_core::insights::{analyze, sibling_of, InsightSettings, Insights, Paging};
use tollgate_core::pricing::UnitPrices;
use tollgate_core::record::Endpoint;
use tollgate_core::DomainError;

use crate::Engine;

/// One insights query: whose records, which period, and the per-query knobs.
#[derive(Debug, Clone)]
pub struct InsightsQuery {
    pub account_id: String,
    /// Only this key's records (checked to be the account's).
    pub key_id: Option<String>,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Overrides `insights.history_cap_tokens`.
    pub history_cap_tokens: Option<u64>,
    pub paging: Paging,
}

impl Engine {
    /// A checked request body's fingerprints, keyed for its account; none when fingerprints
    /// are off (or no secret is configured for replicas).
    pub fn fingerprints(&self, account_id: &str, api: Endpoint, body: &Value) -> Fingerprints {
        match &self.fingerprint_secret {
            Some(secret) => secret.for_account(account_id).fingerprints(api, body),
            None => Fingerprints::default(),
        }
    }

    /// Whether requests are fingerprinted (the insights say so beside their figures).
    pub fn fingerprinting(&self) -> bool {
        self.fingerprint_secret.is_some()
    }

    pub async fn insights(&self, q: InsightsQuery) -> Result<Insights, DomainError> {
        let rows = self
            .store
            .insight_rows(&q.account_id, q.key_id.as_deref(), q.start_ms, q.end_ms)
            .await?;
        let c = &self.config.insights;
        let secs = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let settings = InsightSettings {
            duplicate_window_ms: secs(c.duplicate_window_secs),
            retry_window_ms: secs(c.retry_window_secs),
            retry_min_attempts: c.retry_min_attempts,
            growth_min_turns: c.growth_min_turns,
            history_cap_tokens: i64::try_from(q.history_cap_tokens.unwrap_or(c.history_cap_tokens))
                .unwrap_or(i64::MAX),
            top: 10,
        };
        // The siblings of the models in the period, priced today: the fold itself is pure.
        let siblings: HashMap<String, (String, UnitPrices)> = rows
            .models
            .iter()
            .filter_map(|m| {
                let sib = sibling_of(&c.siblings, m)?;
                let entry = self.prices.get(sib)?;
                Some((m.clone(), (sib.to_string(), entry.prices)))
            })
            .collect();
        // A million records take a few hundred milliseconds to fold: off the async workers.
        tokio::task::spawn_blocking(move || {
            analyze(
                &rows,
                &settings,
                &|m: &str| siblings.get(m).cloned(),
                q.paging,
            )
        })
        .await
        .map_err(DomainError::internal)
    }
}

/// The secret the fingerprints are keyed by: derived from the key that seals webhook secrets,
/// so it needs no key of its own and replicas that share one share the other.
pub(crate) fn secret(enabled: bool, sealing_key: Option<&[u8; 32]>) -> Option<FingerprintSecret> {
    enabled.then_some(())?;
    sealing_key.map(FingerprintSecret::derive)
}

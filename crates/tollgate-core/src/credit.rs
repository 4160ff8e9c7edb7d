//! The credit ledger: grants and refunds (charges are the usage records themselves).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CreditKind {
    Grant,
    Refund,
}

impl CreditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CreditKind::Grant => "grant",
            CreditKind::Refund => "refund",
        }
    }
}

/// An entry of the append-only credit ledger (charges are the usage records themselves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditEntry {
    pub id: String,
    pub account_id: String,
    pub kind: CreditKind,
    pub amount_nanos: i64,
    pub idempotency_key: Option<String>,
    pub note: Option<String>,
    pub created_at_ms: i64,
}

/// Sums behind an account's balance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CreditTotals {
    pub grants_nanos: i64,
    pub refunds_nanos: i64,
    /// Σ charged_nanos from the rollups (what the balance uses).
    pub charges_nanos: i64,
    /// Σ charged_nanos from the raw records (filled only for audits).
    pub charges_nanos_records: Option<i64>,
}

impl CreditTotals {
    /// Saturating: grants are capped (`credits.max_balance_usd`) and charges bounded per
    /// record, so this only matters for a store edited by hand, which must not panic an audit.
    pub fn balance_nanos(&self) -> i64 {
        self.grants_nanos
            .saturating_sub(self.charges_nanos)
            .saturating_add(self.refunds_nanos)
    }
}

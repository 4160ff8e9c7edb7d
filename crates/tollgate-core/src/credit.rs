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
    /// Records whose upstream numbers were flagged (filled only for audits).
    pub flagged: Option<Flagged>,
}

/// An account's records flagged for a second look (`record::Anomaly`): how many, and what they
/// were charged (included in the charges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Flagged {
    /// Reported beyond `metering.max_tokens_per_request`, recorded clamped.
    pub clamped: FlaggedSum,
    /// Reported beyond what the request could produce (its output cap or its credit hold),
    /// recorded as reported.
    pub over_reported: FlaggedSum,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlaggedSum {
    pub records: i64,
    pub charged_nanos: i64,
}

impl CreditTotals {
    pub fn balance_nanos(&self) -> i64 {
        self.grants_nanos - self.charges_nanos + self.refunds_nanos
    }
}

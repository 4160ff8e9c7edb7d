//! Credits and budgets: balances as an append-only ledger of grants, charges (the usage
//! records' costs) and refunds; holds for requests in flight; per-key limits.

/// An account's balance as the usage APIs show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreditView {
    /// Grants − charges + refunds, nano-USD.
    pub balance_nanos: i64,
    /// Held by requests in flight, nano-USD.
    pub held_nanos: i64,
}

//! The store traits: one per aggregate, and `Store`, the supertrait a backend implements in
//! full (SQLite and PostgreSQL in tollgate-store). Signatures are backend-neutral; every
//! backend runs the same conformance suite (crates/tollgate-store/tests/conformance).

use async_trait::async_trait;

use crate::account::{Account, ApiKeyRecord, KeyLimits, StoredProviderKey};
use crate::credit::{CreditEntry, CreditTotals};
use crate::error::StoreError;
use crate::insights::InsightRows;
use crate::record::{Anomaly, UsageRecord};
use crate::rollup::{Dims, RecordCursor, RecordFilter, RollupFilter, RollupRow, Segment};
use crate::webhook::{AttemptOutcome, Claimed, DeliveryState, Event, EventType, Webhook};

/// A filter over raw records, newest first.
#[derive(Debug, Clone, Default)]
pub struct RecordQuery {
    pub account_id: Option<String>,
    pub key_id: Option<String>,
    pub limit: usize,
}

/// An account's records flagged with one anomaly: how many, and the request ids of the first
/// (oldest) of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AnomalyCount {
    pub anomaly: Anomaly,
    pub count: i64,
    /// What those records charged the account, nano-USD.
    pub charged_nanos: i64,
    /// Oldest first (`created_at_ms`, then request id), at most the `limit` asked for.
    pub request_ids: Vec<String>,
}

/// Usage records and the rollups they feed.
#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// Inserts records and adds their rollup deltas (`rollup::deltas` of the records that were
    /// new), in one transaction. Idempotent by `request_id`: a record already stored is skipped
    /// and not counted again. Returns how many were new.
    async fn insert_usage(&self, batch: Vec<UsageRecord>) -> Result<usize, StoreError>;
    /// `insert_usage` of a batch the caller keeps a share of (the batch writer needs the
    /// records again for its sinks, or to split a batch the store refused). A backend that
    /// reads the records in place takes it as it is; the default copies it.
    async fn insert_usage_shared(
        &self,
        batch: std::sync::Arc<[UsageRecord]>,
    ) -> Result<usize, StoreError> {
        self.insert_usage(batch.to_vec()).await
    }
    async fn get_usage(&self, request_id: &str) -> Result<Option<UsageRecord>, StoreError>;
    async fn list_usage(&self, q: RecordQuery) -> Result<Vec<UsageRecord>, StoreError>;
    async fn count_usage(&self) -> Result<i64, StoreError>;
    /// One page of raw records in `(created_at_ms, request_id)` order, ascending or descending,
    /// strictly after `after` in that order.
    async fn records_page(
        &self,
        filter: RecordFilter,
        after: Option<RecordCursor>,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<UsageRecord>, StoreError>;
    /// Sums of rollup rows in the given segments, grouped by `dims` and, for split segments, by
    /// rollup bucket. Rows of different segments are not merged.
    async fn rollup_rows(
        &self,
        filter: RollupFilter,
        dims: Dims,
        segments: Vec<Segment>,
    ) -> Result<Vec<RollupRow>, StoreError>;
    /// What the insights read of an account's records (or one key's, `key_id`) created in
    /// `[start_ms, end_ms)`, in `(created_at_ms, request_id)` order: one narrow scan, no full
    /// records.
    async fn insight_rows(
        &self,
        account_id: &str,
        key_id: Option<&str>,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<InsightRows, StoreError>;
    /// A key's model cost (nano-USD) in records created at or after `since_ms` (hour-aligned).
    async fn key_spend_since(&self, key_id: &str, since_ms: i64) -> Result<i64, StoreError>;
    /// The account's records flagged with an anomaly: one entry per kind that occurs, ordered
    /// by the kind's name, each with up to `limit` request ids. For the credit audit.
    async fn anomalies(
        &self,
        account_id: &str,
        limit: usize,
    ) -> Result<Vec<AnomalyCount>, StoreError>;
    /// Retention: drops raw records created before `cutoff_ms`. Rollups and credit ledgers are
    /// never touched, so usage totals and balances stay as they were. A backend may keep some
    /// older records (PostgreSQL drops whole monthly partitions only: a month is dropped once it
    /// ends at or before the cutoff). Returns how many records were dropped.
    async fn drop_records_before(&self, cutoff_ms: i64) -> Result<u64, StoreError>;
}

#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    async fn create_account(&self, a: Account) -> Result<(), StoreError>;
    async fn get_account(&self, id: &str) -> Result<Option<Account>, StoreError>;
    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError>;
    async fn set_account_disabled(&self, id: &str, disabled: bool) -> Result<bool, StoreError>;
}

#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores a key, and writes `outbox` (its `api_key.created`) in the same transaction.
    async fn create_key(&self, k: ApiKeyRecord, outbox: Vec<Event>) -> Result<(), StoreError>;
    async fn find_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    async fn get_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    async fn list_keys(&self, account_id: Option<String>) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Marks a key revoked; false if it does not exist.
    /// Revokes a key (once: a later call keeps the first time), writing `outbox` in the same
    /// transaction when the key exists.
    async fn revoke_key(
        &self,
        id: &str,
        at_ms: i64,
        outbox: Vec<Event>,
    ) -> Result<bool, StoreError>;
    async fn count_admin_keys(&self) -> Result<i64, StoreError>;
    async fn update_key_limits(&self, id: &str, limits: KeyLimits) -> Result<bool, StoreError>;
    /// Limit windows shared by several replicas (None: one process sees every request of a
    /// key, as with SQLite, and counts them in memory).
    fn quotas(&self) -> Option<&dyn QuotaStore> {
        None
    }
}

#[async_trait]
pub trait CreditStore: Send + Sync + 'static {
    /// Appends a grant or refund. With an idempotency key already used for this account, returns
    /// the stored entry and `false` (nothing added); a reuse with different content is a
    /// `Conflict`.
    /// `outbox` (its `credits.granted`) is written in the same transaction, only when the entry
    /// is new.
    async fn add_credit(
        &self,
        entry: CreditEntry,
        outbox: Vec<Event>,
    ) -> Result<(CreditEntry, bool), StoreError>;
    /// The entry added to this account under `idempotency_key`, if any.
    async fn find_credit(
        &self,
        account_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<CreditEntry>, StoreError>;
    /// Stores an entry as it is, id included (`tollgate store copy`); `false`, adding nothing,
    /// when an entry with this id (or this account's idempotency key) is stored already, so a
    /// copy run twice grants once. A shared backend adds it to the unleased balance.
    async fn import_credit(&self, entry: CreditEntry) -> Result<bool, StoreError>;
    async fn list_credits(
        &self,
        account_id: &str,
        limit: usize,
    ) -> Result<Vec<CreditEntry>, StoreError>;
    /// The sums behind a balance; `audit` also sums the raw records.
    async fn credit_totals(
        &self,
        account_id: &str,
        audit: bool,
    ) -> Result<CreditTotals, StoreError>;
    /// Balance leases, when the backend is shared by several replicas (None: one process owns
    /// every balance, as with SQLite).
    fn leases(&self) -> Option<&dyn LeaseStore> {
        None
    }
}

/// An account's balance split between replicas. The store keeps, per account, the unleased
/// part (`available`) and one lease per replica; balance = available + Σ leases = grants +
/// refunds − charges. A replica spends only from its own lease, in memory, and takes more with
/// one conditional update when it runs low, so no two replicas can spend the same nano-USD.
/// Each charge a replica's records carry is taken from that replica's lease in the same
/// transaction as the records (from `available` when the lease is gone).
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Moves up to `want` nano-USD of the account's unleased balance into this replica's lease
    /// (first returning every lease that expired before `now_ms`), and sets the lease to expire
    /// at `expires_at_ms`. Returns what was moved: `0..=want`.
    async fn take_lease(
        &self,
        account_id: &str,
        want: i64,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<i64, StoreError>;
    /// Gives `amount` of this replica's lease back to the account (at most what the lease
    /// holds).
    async fn return_lease(&self, account_id: &str, amount: i64) -> Result<(), StoreError>;
    /// Extends every lease this replica holds; returns the accounts it still holds one for (a
    /// lease that expired and was returned by another replica is gone).
    async fn renew_leases(&self, expires_at_ms: i64) -> Result<Vec<String>, StoreError>;
    /// The account's unleased balance and the sum of its leases, nano-USD.
    async fn lease_totals(&self, account_id: &str) -> Result<LeaseTotals, StoreError>;
}

/// How an account's balance is split, nano-USD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct LeaseTotals {
    pub available_nanos: i64,
    pub leased_nanos: i64,
    /// Leases held by this replica.
    pub own_nanos: i64,
}

/// Which counter of a key a limit window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    Requests,
    Tokens,
    SpendNanos,
}

impl QuotaKind {
    pub fn code(self) -> i16 {
        match self {
            Self::Requests => 1,
            Self::Tokens => 2,
            Self::SpendNanos => 3,
        }
    }
}

/// One take from a key's limit window: see `QuotaStore::take_quota`.
#[derive(Debug, Clone)]
pub struct QuotaTake<'a> {
    pub key_id: &'a str,
    pub kind: QuotaKind,
    pub window_start_ms: i64,
    /// When the window ends (rows of ended windows are pruned); `i64::MAX` for never.
    pub window_end_ms: i64,
    pub limit: i64,
    /// What the window starts at when this take creates it (spend already in the rollups).
    pub seed: i64,
    /// Used beyond what this replica took (tokens counted after their request): added first.
    pub debt: i64,
    pub want: i64,
}

/// A key's rpm, tpm and spend limits shared by replicas. Each window (key, kind, start) holds
/// what all replicas took of it; a replica takes a slice with one transaction when its own
/// runs out (not per request) and admits from the slice in memory, so the replicas together
/// never take more than the limit.
#[async_trait]
pub trait QuotaStore: Send + Sync {
    /// Adds `debt` to the window's use, then moves up to `want` of what is left under `limit`
    /// to this replica. Returns (granted, the window's use after the take).
    async fn take_quota(&self, take: QuotaTake<'_>) -> Result<(i64, i64), StoreError>;
    /// Gives back `amount` this replica took and did not use.
    async fn return_quota(
        &self,
        key_id: &str,
        kind: QuotaKind,
        window_start_ms: i64,
        amount: i64,
    ) -> Result<(), StoreError>;
    /// Forgets windows that ended before `before_ms`.
    async fn prune_quotas(&self, before_ms: i64) -> Result<u64, StoreError>;
}

#[async_trait]
pub trait ProviderKeyStore: Send + Sync + 'static {
    async fn put_provider_key(&self, key: StoredProviderKey) -> Result<(), StoreError>;
    async fn delete_provider_key(
        &self,
        account_id: &str,
        provider: &str,
    ) -> Result<bool, StoreError>;
    async fn list_provider_keys(
        &self,
        account_id: &str,
    ) -> Result<Vec<StoredProviderKey>, StoreError>;
}

/// One attempt of a delivery, as the deliveries API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub event_id: String,
    pub event_type: EventType,
    pub attempt: u32,
    pub at_ms: i64,
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// The delivery's state now, and its next try if pending.
    pub state: DeliveryState,
    pub next_attempt_at_ms: Option<i64>,
}

/// Webhook endpoints and their outbox: events, one delivery per event and endpoint, and the
/// attempts of each delivery.
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    async fn create_webhook(&self, w: Webhook) -> Result<(), StoreError>;
    async fn get_webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError>;
    /// Oldest first; every account's with `None`.
    async fn list_webhooks(&self, account_id: Option<String>) -> Result<Vec<Webhook>, StoreError>;
    /// Replaces everything but the id, account and creation time. False if it is gone.
    async fn update_webhook(&self, w: Webhook) -> Result<bool, StoreError>;
    /// Deletes the endpoint with its deliveries and their attempts.
    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError>;
    /// Writes the events, each with one delivery (due at its creation) per active endpoint of
    /// its account that wants its type (only `webhook_id`'s, when set), in one transaction. An
    /// event whose `dedupe_key` the account already used is skipped. Returns the events
    /// written.
    async fn enqueue_events(&self, events: Vec<Event>) -> Result<usize, StoreError>;
    /// Claims up to `limit` pending deliveries due at `now_ms` and not claimed by anyone else,
    /// until `claim_until_ms` (two dispatchers never hold one delivery at once).
    async fn claim_deliveries(
        &self,
        now_ms: i64,
        claim_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError>;
    /// Records an attempt and the delivery's new state (and, with `disable`, disables its
    /// endpoint and fails its pending deliveries); sets or clears the endpoint's failing run.
    async fn finish_attempt(
        &self,
        delivery_id: &str,
        outcome: AttemptOutcome,
    ) -> Result<(), StoreError>;
    /// The endpoint's attempts, newest first.
    async fn list_attempts(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<AttemptRow>, StoreError>;
    /// Makes the delivery due now again (whatever its state). False if it is not this
    /// endpoint's.
    async fn retry_delivery(
        &self,
        webhook_id: &str,
        delivery_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Forgets finished history created before `before_ms`: succeeded and failed deliveries
    /// with their attempts, and events left without deliveries. An event with a dedupe key
    /// keeps its row (without its payload), so the crossing it stands for never fires again.
    /// Returns the deliveries removed.
    async fn prune_webhook_history(&self, before_ms: i64) -> Result<u64, StoreError>;
}

/// A complete backend.
pub trait Store:
    RecordStore + AccountStore + KeyStore + CreditStore + ProviderKeyStore + WebhookStore
{
}

impl<T: RecordStore + AccountStore + KeyStore + CreditStore + ProviderKeyStore + WebhookStore> Store
    for T
{
}

//! The ledger: per-request usage records, accounts and keys, behind one `Store` trait so the
//! embedded SQLite store and (later) PostgreSQL are interchangeable. Records reach the store
//! through the journal (`journal`) and the batch writer (`writer`); see ARCHITECTURE.md.

pub mod journal;
pub mod sqlite;
pub mod sqlite_usage;
pub mod writer;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::metering::Provenance;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(String),
    #[error("conflict: {0}")]
    Conflict(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Error,
    /// The client went away before the response completed.
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
            Status::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Self {
        match s {
            "success" => Status::Success,
            "cancelled" => Status::Cancelled,
            _ => Status::Error,
        }
    }
}

/// One request, as metered. Written once, never updated. Unit prices are kept so the cost can be
/// re-derived (and audited) without the price table of the day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub request_id: String,
    /// When the request arrived (ms since the Unix epoch, UTC). Rollups bucket on this.
    pub created_at_ms: i64,
    pub finished_at_ms: i64,
    pub account_id: String,
    pub key_id: String,
    /// `chat.completions`, `embeddings` or `messages`.
    pub endpoint: String,
    pub model_requested: String,
    pub model_served: String,
    /// The configured provider that served it.
    pub provider: String,
    /// Who makes the model (`openai`, `anthropic`, …), from the price table.
    pub owned_by: String,
    /// `platform` (the gateway's provider key) or `user` (the account's own key).
    pub source: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_nanos: i64,
    /// Debited from the account's credits: the cost for `platform` requests, the configured fee
    /// (if any) for `user` (bring-your-own-key) requests.
    #[serde(default)]
    pub charged_nanos: i64,
    /// Unit prices charged, nano-USD per million tokens.
    pub price_input: i64,
    pub price_output: i64,
    pub price_cached_input: i64,
    pub price_cache_write: i64,
    pub status: Status,
    pub http_status: u16,
    pub error_code: Option<String>,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub streamed: bool,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub disabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May call the admin API and read every account.
    Admin,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

/// A stored API key: only its SHA-256 hash and last four characters are kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub account_id: String,
    pub name: String,
    #[serde(skip_serializing)]
    pub key_hash: String,
    pub last4: String,
    pub prefix: String,
    pub role: Role,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    #[serde(default)]
    pub limits: KeyLimits,
}

/// Budget periods, on UTC calendar boundaries (ISO weeks start Monday 00:00 UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
    /// Never resets.
    Total,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Total => "total",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "daily" => Some(Period::Daily),
            "weekly" => Some(Period::Weekly),
            "monthly" => Some(Period::Monthly),
            "total" => Some(Period::Total),
            _ => None,
        }
    }
}

/// Per-key limits; `None` = unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyLimits {
    /// Spend limit in nano-USD per `spend_period` (model cost, whoever pays it).
    pub spend_limit_nanos: Option<i64>,
    pub spend_period: Option<Period>,
    /// Requests per minute (UTC minute windows).
    pub rpm_limit: Option<u64>,
    /// Tokens (input + output) per minute.
    pub tpm_limit: Option<u64>,
    pub expires_at_ms: Option<i64>,
    /// Models this key may use; `None` = all.
    pub allowed_models: Option<Vec<String>>,
}

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
    pub fn balance_nanos(&self) -> i64 {
        self.grants_nanos - self.charges_nanos + self.refunds_nanos
    }
}

/// An account's own provider key, encrypted.
#[derive(Debug, Clone)]
pub struct StoredProviderKey {
    pub account_id: String,
    pub provider: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub last4: String,
    pub created_at_ms: i64,
}

/// A filter over raw records, newest first.
#[derive(Debug, Clone, Default)]
pub struct RecordQuery {
    pub account_id: Option<String>,
    pub key_id: Option<String>,
    pub limit: usize,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts records and folds them into the rollups, in one transaction. Idempotent by
    /// `request_id`: a record already stored is skipped (and not counted again). Returns how
    /// many were new.
    async fn insert_usage(&self, batch: Vec<UsageRecord>) -> Result<usize, StoreError>;
    async fn get_usage(&self, request_id: &str) -> Result<Option<UsageRecord>, StoreError>;
    async fn list_usage(&self, q: RecordQuery) -> Result<Vec<UsageRecord>, StoreError>;
    async fn count_usage(&self) -> Result<i64, StoreError>;

    async fn create_account(&self, a: Account) -> Result<(), StoreError>;
    async fn get_account(&self, id: &str) -> Result<Option<Account>, StoreError>;
    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError>;

    async fn create_key(&self, k: ApiKeyRecord) -> Result<(), StoreError>;
    async fn find_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    async fn get_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    async fn list_keys(&self, account_id: Option<String>) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Marks a key revoked; false if it does not exist.
    async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError>;
    async fn count_admin_keys(&self) -> Result<i64, StoreError>;
    async fn update_key_limits(&self, id: &str, limits: KeyLimits) -> Result<bool, StoreError>;
    async fn set_account_disabled(&self, id: &str, disabled: bool) -> Result<bool, StoreError>;

    /// Appends a grant or refund. With an idempotency key already used for this account, returns
    /// the stored entry and `false` (nothing added); a reuse with different content is a
    /// `Conflict`.
    async fn add_credit(&self, entry: CreditEntry) -> Result<(CreditEntry, bool), StoreError>;
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
    /// A key's model cost (nano-USD) in records created at or after `since_ms` (hour-aligned).
    async fn key_spend_since(&self, key_id: &str, since_ms: i64) -> Result<i64, StoreError>;

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

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A random id with a type prefix, e.g. `req_3f9a…`.
pub fn new_id(prefix: &str, bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    format!("{prefix}_{}", hex::encode(buf))
}

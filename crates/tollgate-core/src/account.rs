//! Accounts, their API keys (stored as hashes) and per-key limits, and accounts' own provider
//! keys (encrypted).

use serde::{Deserialize, Serialize};

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

/// Who is calling, once the key checks out.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account_id: String,
    pub key_id: String,
    pub role: Role,
    pub limits: std::sync::Arc<KeyLimits>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

//! The usage record: one per request, written once, never updated.

use serde::{Deserialize, Serialize};

use crate::attribution::Tags;

/// The bounds every stored number lives within, so that no record, and no sum of records a
/// query can meet, overflows an i64.
pub mod bounds {
    use crate::money::NANOS_PER_USD;

    /// The highest `metering.max_tokens_per_request` a config may set: each token class of a
    /// record is at most this (10x the largest context window offered today).
    pub const MAX_TOKENS_PER_REQUEST: u64 = 100_000_000;

    /// The highest unit price (nano-USD per million tokens) a price entry may have:
    /// USD 10,000 per million tokens (the priciest model today is under USD 1,000).
    pub const MAX_UNIT_PRICE: i64 = 10_000 * NANOS_PER_USD;

    /// The most one record can cost: every input and output token at the highest unit price
    /// (USD 2,000,000). An i64 holds over 4,000 such records; sums saturate beyond.
    pub const MAX_COST_NANOS: i64 =
        (2 * MAX_TOKENS_PER_REQUEST as i64 / 1_000_000) * MAX_UNIT_PRICE;

    // Thousands of worst-case records sum within an i64.
    const _: () = assert!(MAX_COST_NANOS < i64::MAX / 4096);
}

/// The API a request was made to; decides the wire format of its usage. Recorded as the
/// record's `endpoint` (ElectronHub's `endpoints` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Endpoint {
    #[serde(rename = "chat.completions")]
    ChatCompletions,
    #[serde(rename = "embeddings")]
    Embeddings,
    #[serde(rename = "messages")]
    Messages,
    /// OpenAI's Responses API (`/v1/responses`).
    #[serde(rename = "responses")]
    Responses,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::ChatCompletions,
        Endpoint::Embeddings,
        Endpoint::Messages,
        Endpoint::Responses,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
            Endpoint::Responses => "responses",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// Who pays the provider for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The gateway's provider key; the account's credits are charged the cost.
    Platform,
    /// The account's own provider key; credits are charged only the configured fee.
    User,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Platform => "platform",
            Source::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "platform" => Some(Source::Platform),
            "user" => Some(Source::User),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Error,
    /// The client went away before the response completed.
    Cancelled,
    /// The gateway died while the request was at the upstream; recorded at the next start from
    /// the request's journaled start, with estimated tokens.
    Interrupted,
    /// The gateway answered the (authenticated) request itself, without forwarding it: a bad
    /// body, an unknown or forbidden model, no balance, a limit. Zero tokens, zero cost.
    Refused,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Success,
        Status::Error,
        Status::Cancelled,
        Status::Interrupted,
        Status::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
            Status::Cancelled => "cancelled",
            Status::Interrupted => "interrupted",
            Status::Refused => "refused",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Status::Success),
            "error" => Some(Status::Error),
            "cancelled" => Some(Status::Cancelled),
            "interrupted" => Some(Status::Interrupted),
            "refused" => Some(Status::Refused),
            _ => None,
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
    pub endpoint: Endpoint,
    pub model_requested: String,
    pub model_served: String,
    /// The configured provider that served it.
    pub provider: String,
    /// Who makes the model (`openai`, `anthropic`, …), from the price table.
    pub owned_by: String,
    pub source: Source,
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
    /// Set when the upstream's numbers deserve a second look (see `Anomaly`); shown by the
    /// credit audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<Anomaly>,
    /// The end user the request was for (`x-tollgate-user`, OpenAI `user`, Anthropic
    /// `metadata.user_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `x-tollgate-tags`, canonical.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
    /// The version of the price table that priced it (`PriceTable::version`, a content hash);
    /// `None` for records priced at zero without a table (refused) and for records older than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_version: Option<String>,
    /// Keyed hashes of the request's body and of its conversation's opening
    /// (`fingerprint::AccountKey`), for the insights; never the prompt itself.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::fingerprint::hex_opt"
    )]
    pub fingerprint: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::fingerprint::hex_opt"
    )]
    pub conversation: Option<i64>,
}

/// Why a record's numbers deserve a second look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anomaly {
    /// The upstream reported more tokens than any request can use: the counts were clamped to
    /// the per-request ceiling (`metering.max_tokens_per_request`).
    Clamped,
    /// The upstream reported more than this request could have produced (past its output cap or
    /// its credit hold). Recorded as reported: the provider's bill is the truth.
    OverReported,
}

impl Anomaly {
    pub fn as_str(self) -> &'static str {
        match self {
            Anomaly::Clamped => "clamped",
            Anomaly::OverReported => "over_reported",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "clamped" => Some(Anomaly::Clamped),
            "over_reported" => Some(Anomaly::OverReported),
            _ => None,
        }
    }
}

/// Where a record's token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    /// The upstream reported them.
    Provider,
    /// The upstream reported nothing (or was cut off); counted locally with the bundled tokenizer.
    Estimated,
}

impl Provenance {
    pub fn as_str(self) -> &'static str {
        match self {
            Provenance::Provider => "provider",
            Provenance::Estimated => "estimated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "provider" => Some(Provenance::Provider),
            "estimated" => Some(Provenance::Estimated),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_serde_and_parse_agree() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::from(s.as_str())
            );
        }
        assert_eq!(Status::parse("unknown"), None);
    }
}

//! A forwarded request's start, journaled once the request has gone to the upstream.
//! If the process dies before the request's record is written, the next start finds the start
//! with no record after it and records the request as `interrupted` (`settle::interrupted_record`),
//! so a request the upstream served (and will bill) is never without a record.
//!
//! A start keeps its journal segment alive (`journal::StartPin`) until the request's record is
//! in the journal, so a long request's start cannot be dropped with its segment before its end.

use serde::{Deserialize, Serialize};
use tollgate_core::attribution::Tags;
use tollgate_core::pricing::UnitPrices;
use tollgate_core::record::{Endpoint, Source};

/// What an `interrupted` record needs: everything known when the request was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStart {
    pub request_id: String,
    /// When the request arrived (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// When it was journaled as sent.
    pub sent_at_ms: i64,
    pub account_id: String,
    pub key_id: String,
    pub endpoint: Endpoint,
    pub model: String,
    pub provider: String,
    pub owned_by: String,
    pub source: Source,
    pub prices: UnitPrices,
    pub byok_fee_bps: i64,
    pub streamed: bool,
    /// The request's input, counted without the BPE at admission
    /// (`tokenizer::quick_count_request_input`).
    pub input_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
    /// The price table's version (`PriceTable::version`) that priced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_version: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "tollgate_core::fingerprint::hex_opt"
    )]
    pub fingerprint: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "tollgate_core::fingerprint::hex_opt"
    )]
    pub conversation: Option<i64>,
}

//! The read side of the ledger for usage queries: rollup reads, separate from `Store` (the write
//! side) so each backend implements them next to its schema. Signatures are backend-neutral: the
//! SQLite implementation is `ledger/sqlite_usage.rs`; PostgreSQL implements the same trait.

use async_trait::async_trait;
use serde::Serialize;

use crate::ledger::{StoreError, UsageRecord};

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// The rollup tables: sums per UTC minute, hour and day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Grain {
    Minute,
    Hour,
    Day,
}

impl Grain {
    pub fn width_ms(self) -> i64 {
        match self {
            Grain::Minute => MINUTE_MS,
            Grain::Hour => HOUR_MS,
            Grain::Day => DAY_MS,
        }
    }
}

/// A range `[start_ms, end_ms)` of one rollup table; both ends are multiples of the grain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub grain: Grain,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Rows must keep their own bucket (the segment spans several output buckets); otherwise
    /// the whole segment may be summed, and its rows carry `bucket_ms = start_ms`.
    pub split: bool,
}

/// Integer sums over rollup rows. Money in nano-USD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Sums {
    pub requests: i64,
    pub success: i64,
    /// All input, cache reads and writes included.
    pub input_tokens: i64,
    /// All output, reasoning included.
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
    /// The model cost (whoever paid the provider).
    pub cost_nanos: i64,
    /// What the account's credits were debited (the cost for `platform` requests, the fee for
    /// bring-your-own-key ones).
    pub charged_nanos: i64,
}

impl Sums {
    pub fn add(&mut self, o: &Sums) {
        self.requests += o.requests;
        self.success += o.success;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cached_tokens += o.cached_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.cost_nanos += o.cost_nanos;
        self.charged_nanos += o.charged_nanos;
    }

    pub fn total_tokens(&self) -> i64 {
        self.input_tokens + self.output_tokens
    }
}

/// Which rollup rows to read. Empty lists mean "any".
#[derive(Debug, Clone, Default)]
pub struct RollupFilter {
    /// `None`: every account (admin, organization-wide).
    pub accounts: Option<Vec<String>>,
    pub key_ids: Vec<String>,
    /// `model_requested`.
    pub models: Vec<String>,
    pub providers: Vec<String>,
}

/// Dimensions to group by (besides the bucket); a dimension not grouped by comes back `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dims {
    pub account: bool,
    pub key: bool,
    pub model: bool,
    pub provider: bool,
    pub source: bool,
    pub endpoint: bool,
}

/// The grouped dimensions of a row.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub account_id: Option<String>,
    pub key_id: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub source: Option<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    /// Index of the segment (in the request) this row was read from.
    pub segment: usize,
    /// Start of the rollup bucket (or of the segment, when it was not split).
    pub bucket_ms: i64,
    pub group: GroupKey,
    pub sums: Sums,
}

/// Raw records of one account, for exports and recent-usage lists (an index walk).
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    pub account_id: String,
    pub key_id: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    /// `created_at_ms` in `[start_ms, end_ms)`.
    pub start_ms: i64,
    pub end_ms: i64,
}

/// A position in `(created_at_ms, request_id)` order: pages continue strictly after (ascending)
/// or before (descending) it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordCursor {
    pub created_at_ms: i64,
    pub request_id: String,
}

impl RecordCursor {
    /// The opaque `cursor` / `nextCursor` text: `<ms>.<request id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at_ms, self.request_id)
    }

    pub fn decode(v: &str) -> Option<RecordCursor> {
        let (ms, id) = v.split_once('.')?;
        Some(RecordCursor {
            created_at_ms: ms.parse().ok()?,
            request_id: id.to_string(),
        })
        .filter(|c| !c.request_id.is_empty())
    }
}

#[async_trait]
pub trait UsageQueries: Send + Sync + 'static {
    /// Sums of rollup rows in the given segments, grouped by `dims` and, for split segments, by
    /// rollup bucket. Rows of different segments are not merged.
    async fn rollup_rows(
        &self,
        filter: RollupFilter,
        dims: Dims,
        segments: Vec<Segment>,
    ) -> Result<Vec<RollupRow>, StoreError>;

    /// One page of raw records in `(created_at_ms, request_id)` order, ascending or descending,
    /// strictly after `after` in that order.
    async fn records_page(
        &self,
        filter: RecordFilter,
        after: Option<RecordCursor>,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<UsageRecord>, StoreError>;
}

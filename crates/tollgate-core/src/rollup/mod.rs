//! Rollups: integer sums of usage records per UTC minute, hour and day and per
//! (account, key, model, provider, source, endpoint). `deltas` turns records into the
//! increments every backend adds (computed here once, so a backend only writes them); the query
//! types say which rollup rows a usage query reads; `cover` plans and folds them.

pub mod cover;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::calendar::{DAY_MS, HOUR_MS, MINUTE_MS};
use crate::record::{Endpoint, Source, Status, UsageRecord};

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
    // Saturating: every stored value is bounded (see `record::bounds`), so a sum that reaches
    // i64::MAX would take more requests than can exist; saturating keeps a query from panicking.
    pub fn add(&mut self, o: &Sums) {
        self.requests = self.requests.saturating_add(o.requests);
        self.success = self.success.saturating_add(o.success);
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(o.cached_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(o.reasoning_tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(o.cost_nanos);
        self.charged_nanos = self.charged_nanos.saturating_add(o.charged_nanos);
    }

    pub fn sub(&mut self, o: &Sums) {
        self.requests = self.requests.saturating_sub(o.requests);
        self.success = self.success.saturating_sub(o.success);
        self.input_tokens = self.input_tokens.saturating_sub(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_sub(o.output_tokens);
        self.cached_tokens = self.cached_tokens.saturating_sub(o.cached_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_sub(o.reasoning_tokens);
        self.cost_nanos = self.cost_nanos.saturating_sub(o.cost_nanos);
        self.charged_nanos = self.charged_nanos.saturating_sub(o.charged_nanos);
    }

    /// One record's contribution.
    pub fn of(r: &UsageRecord) -> Sums {
        Sums {
            requests: 1,
            success: i64::from(r.status == Status::Success),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_tokens: r.cached_tokens,
            reasoning_tokens: r.reasoning_tokens,
            cost_nanos: r.cost_nanos,
            charged_nanos: r.charged_nanos,
        }
    }

    pub fn total_tokens(&self) -> i64 {
        self.input_tokens.saturating_add(self.output_tokens)
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
    /// The API a request came through (OpenAI's completions usage leaves out embeddings).
    pub endpoints: Vec<Endpoint>,
    /// End users or one tag: read from the attribution rollups instead.
    pub attribution: AttrFilter,
}

/// Which attributed usage a query reads. A record has one end user (or none) and up to ten
/// tags, and the attribution rollups keep one row per (record's) user and per tag: so a query
/// may name several users (each record counted once), or one tag, but not a tag and users
/// together (a record with two of the names would count twice; that needs the records).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AttrFilter {
    /// No attribution filter (the main rollups, unless grouping by user).
    #[default]
    All,
    Users(Vec<String>),
    /// One `key=value`.
    Tag(String),
}

/// The kind of an attribution rollup row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttrKind {
    User,
    Tag,
}

impl AttrKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttrKind::User => "user",
            AttrKind::Tag => "tag",
        }
    }
}

/// The key of one attribution rollup row: a main rollup key, and the user or tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrKey<'a> {
    pub row: RollupKey<'a>,
    pub kind: AttrKind,
    /// The end user, or the tag's `key=value`.
    pub value: &'a str,
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
    /// By end user (read from the attribution rollups; records without one come back as
    /// `user: None`).
    pub user: bool,
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
    pub user: Option<String>,
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
    /// Any of these end users (empty: any).
    pub users: Vec<String>,
    /// Records carrying this `key=value` tag.
    pub tag: Option<String>,
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

/// Folded sums by end user, with the usage of no end user as `user: None`: the main rollups'
/// folded sums (`all`, grouped without user) minus what the users account for (`users`, the
/// attribution rollups' user rows over the same range and filter). Integer subtraction, so
/// the groups still add up to exactly the totals.
pub fn by_user(
    mut all: BTreeMap<(usize, GroupKey), Sums>,
    users: BTreeMap<(usize, GroupKey), Sums>,
) -> BTreeMap<(usize, GroupKey), Sums> {
    for ((i, g), s) in &users {
        let rest = GroupKey {
            user: None,
            ..g.clone()
        };
        all.entry((*i, rest)).or_default().sub(s);
    }
    all.retain(|_, v| v.requests != 0);
    all.extend(users);
    all
}

/// The key of one rollup row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
/// Borrowed from the records: a batch's deltas allocate no strings.
pub struct RollupKey<'a> {
    pub bucket_ms: i64,
    pub account_id: &'a str,
    pub key_id: &'a str,
    pub model: &'a str,
    pub provider: &'a str,
    pub source: Source,
    pub endpoint: Endpoint,
}

/// Increments for each rollup table, keyed by row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deltas<'a> {
    pub minute: HashMap<RollupKey<'a>, Sums>,
    pub hour: HashMap<RollupKey<'a>, Sums>,
    pub day: HashMap<RollupKey<'a>, Sums>,
    /// The attribution rollups: per grain, a row per end user and per tag (records with
    /// neither add nothing here).
    pub attr: [HashMap<AttrKey<'a>, Sums>; 3],
}

impl<'a> Deltas<'a> {
    /// Each grain with its increments.
    pub fn grains(&self) -> [(Grain, &HashMap<RollupKey<'a>, Sums>); 3] {
        [
            (Grain::Minute, &self.minute),
            (Grain::Hour, &self.hour),
            (Grain::Day, &self.day),
        ]
    }

    /// Each grain with its attribution increments.
    pub fn attr_grains(&self) -> [(Grain, &HashMap<AttrKey<'a>, Sums>); 3] {
        [
            (Grain::Minute, &self.attr[0]),
            (Grain::Hour, &self.attr[1]),
            (Grain::Day, &self.attr[2]),
        ]
    }
}

/// The rollup increments of `records` (pass only the records that were newly stored, so a
/// replayed record is not counted twice). A batch of many requests from a few keys and models
/// becomes a few rows per grain rather than one per record.
pub fn deltas<'a>(records: impl IntoIterator<Item = &'a UsageRecord>) -> Deltas<'a> {
    let mut d = Deltas::default();
    // Each record is looked up in the minute rows only; the hour and day rows are summed from
    // the minute rows (a batch has far fewer of those than records). Every hour and day starts
    // on a minute, so a minute row lies in exactly one of each; the sums are of non-negative
    // values, so summing in another order gives the same totals.
    let w = Grain::Minute.width_ms();
    for r in records {
        let sums = Sums::of(r);
        let key = RollupKey {
            bucket_ms: r.created_at_ms.div_euclid(w) * w,
            account_id: &r.account_id,
            key_id: &r.key_id,
            model: &r.model_requested,
            provider: &r.provider,
            source: r.source,
            endpoint: r.endpoint,
        };
        // Records that name neither an end user nor a tag add nothing here.
        let users = r.user.as_deref().map(|u| (AttrKind::User, u));
        let tags = r.tags.pairs().map(|t| (AttrKind::Tag, t));
        for (kind, value) in users.into_iter().chain(tags) {
            let k = AttrKey {
                row: key.clone(),
                kind,
                value,
            };
            d.attr[0].entry(k).or_default().add(&sums);
        }
        d.minute.entry(key).or_default().add(&sums);
    }
    let Deltas {
        minute,
        hour,
        day,
        attr: [attr_minute, attr_hour, attr_day],
    } = &mut d;
    for (grain, table, attr) in [(Grain::Hour, hour, attr_hour), (Grain::Day, day, attr_day)] {
        let w = grain.width_ms();
        let coarser = |k: &RollupKey<'a>| RollupKey {
            bucket_ms: k.bucket_ms.div_euclid(w) * w,
            ..k.clone()
        };
        for (k, sums) in minute.iter() {
            table.entry(coarser(k)).or_default().add(sums);
        }
        for (k, sums) in attr_minute.iter() {
            let key = AttrKey {
                row: coarser(&k.row),
                ..k.clone()
            };
            attr.entry(key).or_default().add(sums);
        }
    }
    d
}

//! Where the money leaks (seed 001's "Optimization Tips"), found in the records of a period:
//! duplicate requests, retry loops, abandoned responses, conversations that resend a growing
//! history, expensive models next to cheaper siblings, and the prompt cache's share. One pass
//! over the records in time order (`analyze`), on the fingerprints and numbers each record
//! keeps; prompts are never stored, so nothing here ever sees one.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};

use serde::Serialize;

use crate::fingerprint::to_hex;
use crate::metering::Usage;
use crate::money::nanos_to_usd_string;
use crate::pricing::{cost_nanos, UnitPrices};
use crate::record::Status;

/// What the insights read of one record: its time, who and what, its numbers and its
/// fingerprints. Key and model are indexes into `InsightRows::keys` / `models`, so a million
/// rows do not hold a million copies of a few strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsightRow {
    pub request_id: String,
    pub created_at_ms: i64,
    pub key: u32,
    pub model: u32,
    pub status: Status,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_nanos: i64,
    pub prices: UnitPrices,
    pub fingerprint: Option<i64>,
    pub conversation: Option<i64>,
}

/// One account's records of a period, in `(created_at_ms, request_id)` order.
#[derive(Debug, Default)]
pub struct InsightRows {
    pub keys: Vec<String>,
    pub models: Vec<String>,
    pub rows: Vec<InsightRow>,
    key_index: FxHashMap<String, u32>,
    model_index: FxHashMap<String, u32>,
}

impl InsightRows {
    /// The index of a key id (`model = false`) or a model name, added on first sight.
    pub fn intern(&mut self, model: bool, name: &str) -> u32 {
        let (list, index) = if model {
            (&mut self.models, &mut self.model_index)
        } else {
            (&mut self.keys, &mut self.key_index)
        };
        // Looked up by the borrowed name first: a row of a known key allocates nothing.
        if let Some(i) = index.get(name) {
            return *i;
        }
        let i = u32::try_from(list.len()).unwrap_or(u32::MAX);
        list.push(name.to_string());
        index.insert(name.to_string(), i);
        i
    }
}

/// The knobs of the analyses (`[insights]` in the config; `history_cap` per query).
#[derive(Debug, Clone)]
pub struct InsightSettings {
    /// Two answered identical requests this close are a duplicate.
    pub duplicate_window_ms: i64,
    /// Attempts of one request this close to the previous one belong to the same retry loop.
    pub retry_window_ms: i64,
    /// The fewest attempts (failed ones, then possibly one that succeeded) that make a loop.
    pub retry_min_attempts: usize,
    /// The fewest answered turns that make a growing conversation.
    pub growth_min_turns: usize,
    /// What capping each turn's input at this many tokens would have saved.
    pub history_cap_tokens: i64,
    /// How many entries each "top" list holds.
    pub top: usize,
}

/// Which request ids each section lists: `limit` of them from `offset`.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub offset: usize,
    pub limit: usize,
}

/// An amount of money, in nano-USD and as a decimal USD string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Money(pub i64);

impl Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Money", 2)?;
        st.serialize_field("nanos", &self.0)?;
        st.serialize_field("usd", &nanos_to_usd_string(self.0))?;
        st.end()
    }
}

impl std::ops::AddAssign<i64> for Money {
    fn add_assign(&mut self, n: i64) {
        self.0 = self.0.saturating_add(n);
    }
}

/// The records behind a section: one page of their request ids, in time order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Records {
    pub total: usize,
    pub request_ids: Vec<String>,
    /// The `offset` of the next page, `None` on the last.
    pub next_offset: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Insights {
    /// Records in the period, and how many of them carry a fingerprint.
    pub records: u64,
    pub fingerprinted: u64,
    pub duplicates: Duplicates,
    pub retry_loops: RetryLoops,
    pub unused_responses: UnusedResponses,
    pub conversation_growth: ConversationGrowth,
    pub model_mix: ModelMix,
    pub cache: Cache,
}

/// Answered requests identical to one answered within the window before them: each one after
/// the first is waste.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Duplicates {
    pub window_secs: i64,
    pub count: u64,
    pub wasted_input_tokens: i64,
    pub wasted_output_tokens: i64,
    pub wasted_cost: Money,
    pub top: Vec<DuplicateGroup>,
    pub records: Records,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DuplicateGroup {
    pub fingerprint: String,
    pub model: String,
    pub key_ids: Vec<String>,
    /// Answered requests with this fingerprint, the first included.
    pub requests: u64,
    pub duplicates: u64,
    pub wasted_cost: Money,
}

/// The same request sent again and again after failing: at least `min_attempts` attempts,
/// each within the window of the one before, every one but the last failed (error, cancelled,
/// interrupted or refused).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetryLoops {
    pub window_secs: i64,
    pub min_attempts: usize,
    pub count: u64,
    pub attempts: u64,
    pub failed_attempts: u64,
    /// Loops whose last attempt succeeded.
    pub resolved: u64,
    pub failed_cost: Money,
    pub by_key: Vec<KeyWaste>,
    pub top: Vec<RetryLoop>,
    /// The failed attempts.
    pub records: Records,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryLoop {
    pub fingerprint: String,
    pub model: String,
    pub key_id: String,
    pub attempts: u64,
    pub failed_attempts: u64,
    pub failed_cost: Money,
    pub resolved: bool,
    pub first_at_ms: i64,
    pub last_at_ms: i64,
}

/// Per key: how many loops or abandoned responses, and what they cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyWaste {
    pub key_id: String,
    pub count: u64,
    pub requests: u64,
    pub cost: Money,
}

/// Responses the client abandoned (status `cancelled`): paid for, never read to the end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnusedResponses {
    pub count: u64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost: Money,
    pub by_key: Vec<KeyWaste>,
    pub records: Records,
}

/// Conversations (answered turns sharing an opening) whose input rose at every turn: the
/// whole history resent each time, never truncated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConversationGrowth {
    pub min_turns: usize,
    pub history_cap_tokens: i64,
    pub count: u64,
    pub turns: u64,
    pub input_tokens: i64,
    pub cost: Money,
    /// What the turns' input beyond `history_cap_tokens` cost, at each turn's input price.
    pub savings_at_cap: Money,
    pub top: Vec<GrowingConversation>,
    /// The turns of the growing conversations.
    pub records: Records,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrowingConversation {
    pub conversation: String,
    pub model: String,
    pub key_id: String,
    pub turns: u64,
    pub first_input_tokens: i64,
    pub last_input_tokens: i64,
    pub cost: Money,
    pub savings_at_cap: Money,
}

/// Spend per model and, where a cheaper sibling is configured, what the same tokens would have
/// cost on it (at today's prices).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelMix {
    pub total_cost: Money,
    pub potential_savings: Money,
    pub models: Vec<ModelSpend>,
    /// The records of models with a cheaper sibling.
    pub records: Records,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpend {
    pub model: String,
    pub requests: u64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cost: Money,
    pub share_of_cost: f64,
    pub sibling: Option<String>,
    pub sibling_cost: Option<Money>,
    pub savings: Option<Money>,
}

/// The prompt cache: what it read and saved, and how often a conversation's opening was sent
/// again without a cache read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cache {
    pub input_tokens: i64,
    pub cached_tokens: i64,
    /// What the cached tokens would have cost at the input price, less what they cost.
    pub saved: Money,
    /// Answered requests whose conversation opening was answered before in the period.
    pub repeated_prefix_requests: u64,
    /// Those of them that read nothing from the cache.
    pub uncached_repeated_prefix_requests: u64,
    /// `uncached_repeated_prefix_requests / repeated_prefix_requests` (0 when none).
    pub uncached_repeated_share: f64,
    /// The uncached repeats.
    pub records: Records,
}

fn failed(s: Status) -> bool {
    !matches!(s, Status::Success)
}

fn usage(r: &InsightRow) -> Usage {
    let u = |n: i64| u64::try_from(n).unwrap_or(0);
    Usage {
        input_tokens: u(r.input_tokens),
        output_tokens: u(r.output_tokens),
        cached_tokens: u(r.cached_tokens),
        cache_write_tokens: u(r.cache_write_tokens),
        reasoning_tokens: u(r.reasoning_tokens),
    }
}

/// A page of row indexes as request ids.
fn page(rows: &[InsightRow], mut idx: Vec<u32>, p: Paging) -> Records {
    idx.sort_unstable();
    let total = idx.len();
    let end = p.offset.saturating_add(p.limit).min(total);
    let request_ids = idx
        .get(p.offset.min(total)..end)
        .unwrap_or_default()
        .iter()
        .map(|i| rows[*i as usize].request_id.clone())
        .collect();
    Records {
        total,
        request_ids,
        next_offset: (end < total).then_some(end),
    }
}

/// Largest first, then by name, so the lists are the same on every run.
fn top_by<T, K: Ord>(mut v: Vec<T>, n: usize, key: impl Fn(&T) -> K) -> Vec<T> {
    v.sort_by_key(|x| std::cmp::Reverse(key(x)));
    v.truncate(n);
    v
}

/// Per fingerprint, in one map so each record costs one lookup: the last answer (duplicates)
/// and the current streak of attempts (retry loops). Allocation-free; the rows of a streak are
/// found again through `prev_same` when it turns out to be a loop.
#[derive(Clone, Copy)]
struct FpState {
    last_answered_ms: i64,
    answered: u64,
    first_model: u32,
    first_key: u32,
    streak_len: u32,
    streak_last: u32,
    streak_last_ms: i64,
    streak_last_failed: bool,
}

/// Only for fingerprints that have a duplicate.
#[derive(Default)]
struct DupGroupState {
    duplicates: u64,
    wasted: i64,
    keys: Vec<u32>,
}

/// Waste per key (loops or abandoned responses: how many, their requests, their cost), listed
/// costliest first.
#[derive(Default)]
struct ByKey(BTreeMap<u32, (u64, u64, i64)>);

impl ByKey {
    fn add(&mut self, key: u32, requests: u64, cost: i64) {
        let e = self.0.entry(key).or_default();
        e.0 += 1;
        e.1 += requests;
        e.2 = e.2.saturating_add(cost);
    }

    fn into_list(self, keys: &[String]) -> Vec<KeyWaste> {
        let list = self
            .0
            .into_iter()
            .map(|(k, (count, requests, cost))| KeyWaste {
                key_id: keys.get(k as usize).cloned().unwrap_or_default(),
                count,
                requests,
                cost: Money(cost),
            })
            .collect();
        top_by(list, usize::MAX, |k| {
            (k.cost.0, k.requests, k.key_id.clone())
        })
    }
}

/// A model's sums in the period, and its tokens' cost on the cheaper sibling.
#[derive(Clone, Copy, Default)]
struct MixSums {
    requests: u64,
    input: i64,
    output: i64,
    cached: i64,
    cost: i64,
    sibling_cost: Option<i64>,
}

struct Turns {
    rows: Vec<u32>,
    rising: bool,
    last_input: i64,
    last_fp: Option<i64>,
}

/// The rows of a streak of `len` attempts ending at row `last`, oldest first.
fn streak_rows(prev_same: &[u32], last: u32, len: u32) -> Vec<u32> {
    let mut rows = Vec::with_capacity(len as usize);
    let mut at = last;
    for _ in 0..len {
        rows.push(at);
        at = prev_same[at as usize];
    }
    rows.reverse();
    rows
}

/// The insights of one account's records (`rows.rows` in time order). `sibling` gives, for a
/// model, its configured cheaper sibling and that sibling's unit prices today.
pub fn analyze(
    rows: &InsightRows,
    s: &InsightSettings,
    sibling: &dyn Fn(&str) -> Option<(String, UnitPrices)>,
    paging: Paging,
) -> Insights {
    let all = &rows.rows;
    let key_name = |i: u32| rows.keys.get(i as usize).cloned().unwrap_or_default();
    let model_name = |i: u32| rows.models.get(i as usize).cloned().unwrap_or_default();
    let mut out = Insights {
        records: all.len() as u64,
        ..Insights::default()
    };
    let min_attempts = s.retry_min_attempts.max(2) as u32;

    // Fingerprints are uniformly random already: Fx hashing is enough, and several times
    // cheaper than SipHash on a million lookups.
    let n = all.len();
    let mut fps: FxHashMap<i64, FpState> =
        FxHashMap::with_capacity_and_hasher(n, Default::default());
    let mut groups: FxHashMap<i64, DupGroupState> = FxHashMap::default();
    // The previous row with the same fingerprint, for each row (u32::MAX: none).
    let mut prev_same: Vec<u32> = vec![u32::MAX; all.len()];
    let mut dup_rows = Vec::new();
    let mut loops: Vec<(i64, Vec<u32>)> = Vec::new();
    let mut convs: FxHashMap<i64, Turns> =
        FxHashMap::with_capacity_and_hasher(n / 4, Default::default());
    let mut seen_openings: FxHashSet<i64> =
        FxHashSet::with_capacity_and_hasher(n / 4, Default::default());
    let mut uncached_rows = Vec::new();
    let mut cancelled_rows = Vec::new();
    let mut mix: Vec<Option<MixSums>> = vec![None; rows.models.len()];
    let mut mix_rows: Vec<u32> = Vec::new();
    let siblings: Vec<Option<(String, UnitPrices)>> =
        rows.models.iter().map(|m| sibling(m)).collect();

    for (i, r) in all.iter().enumerate() {
        let i = i as u32;
        if r.fingerprint.is_some() {
            out.fingerprinted += 1;
        }
        if r.status == Status::Cancelled {
            cancelled_rows.push(i);
        }
        if r.status != Status::Refused {
            let u = usage(r);
            let sib = siblings.get(r.model as usize).and_then(Option::as_ref);
            if let Some(m) = mix.get_mut(r.model as usize) {
                let m = m.get_or_insert_with(MixSums::default);
                m.requests += 1;
                m.input = m.input.saturating_add(r.input_tokens);
                m.output = m.output.saturating_add(r.output_tokens);
                m.cached = m.cached.saturating_add(r.cached_tokens);
                m.cost = m.cost.saturating_add(r.cost_nanos);
                if let Some((_, p)) = sib {
                    let on_sibling = cost_nanos(&u, p);
                    m.sibling_cost = Some(m.sibling_cost.unwrap_or(0).saturating_add(on_sibling));
                    mix_rows.push(i);
                }
            }
            out.cache.input_tokens = out.cache.input_tokens.saturating_add(r.input_tokens);
            out.cache.cached_tokens = out.cache.cached_tokens.saturating_add(r.cached_tokens);
            if r.cached_tokens > 0 {
                let uncached = Usage {
                    cached_tokens: 0,
                    ..u
                };
                out.cache.saved += cost_nanos(&uncached, &r.prices) - cost_nanos(&u, &r.prices);
            }
            // Only answers count: a failed attempt read nothing, cached or not.
            if let (Some(c), Status::Success) = (r.conversation, r.status) {
                if !seen_openings.insert(c) {
                    out.cache.repeated_prefix_requests += 1;
                    if r.cached_tokens == 0 {
                        uncached_rows.push(i);
                    }
                }
            }
        }
        if let Some(fp) = r.fingerprint {
            let st = fps.entry(fp).or_insert(FpState {
                last_answered_ms: i64::MIN,
                answered: 0,
                first_model: r.model,
                first_key: r.key,
                streak_len: 0,
                streak_last: u32::MAX,
                streak_last_ms: 0,
                streak_last_failed: false,
            });
            prev_same[i as usize] = st.streak_last;
            // Duplicates: answered, and an identical request was answered within the window.
            if r.status == Status::Success {
                if st.answered > 0
                    && r.created_at_ms.saturating_sub(st.last_answered_ms) <= s.duplicate_window_ms
                {
                    let g = groups.entry(fp).or_default();
                    if g.keys.is_empty() {
                        g.keys.push(st.first_key);
                    }
                    g.duplicates += 1;
                    g.wasted = g.wasted.saturating_add(r.cost_nanos);
                    if !g.keys.contains(&r.key) {
                        g.keys.push(r.key);
                    }
                    dup_rows.push(i);
                }
                st.answered += 1;
                st.last_answered_ms = r.created_at_ms;
            }
            // Retry loops: a streak continues while the previous attempt failed and this one
            // came within the window; it ends at a success.
            let continues = st.streak_len > 0
                && st.streak_last_failed
                && r.created_at_ms.saturating_sub(st.streak_last_ms) <= s.retry_window_ms;
            if !continues {
                if st.streak_len >= min_attempts {
                    loops.push((fp, streak_rows(&prev_same, st.streak_last, st.streak_len)));
                }
                st.streak_len = 0;
            }
            st.streak_len += 1;
            st.streak_last = i;
            st.streak_last_ms = r.created_at_ms;
            st.streak_last_failed = failed(r.status);
        }
        // Conversation growth: answered turns of one opening, a repeat of the previous turn
        // skipped (it is a duplicate, not a turn).
        if let (Some(c), Status::Success) = (r.conversation, r.status) {
            let t = convs.entry(c).or_insert(Turns {
                rows: Vec::new(),
                rising: true,
                last_input: i64::MIN,
                last_fp: None,
            });
            if t.rising && (t.rows.is_empty() || t.last_fp != r.fingerprint) {
                t.rising &= r.input_tokens > t.last_input;
                t.rows.push(i);
                t.last_input = r.input_tokens;
                t.last_fp = r.fingerprint;
            }
        }
    }
    for (fp, st) in &fps {
        if st.streak_len >= min_attempts {
            loops.push((*fp, streak_rows(&prev_same, st.streak_last, st.streak_len)));
        }
    }
    // Deterministic order whatever the map's.
    loops.sort_unstable_by_key(|(_, rows)| rows[0]);

    // Duplicates.
    let d = &mut out.duplicates;
    d.window_secs = s.duplicate_window_ms / 1000;
    for r in dup_rows.iter().map(|i| &all[*i as usize]) {
        d.count += 1;
        d.wasted_input_tokens = d.wasted_input_tokens.saturating_add(r.input_tokens);
        d.wasted_output_tokens = d.wasted_output_tokens.saturating_add(r.output_tokens);
        d.wasted_cost += r.cost_nanos;
    }
    let groups: Vec<DuplicateGroup> = groups
        .into_iter()
        .map(|(fp, g)| {
            let st = fps.get(&fp);
            DuplicateGroup {
                fingerprint: to_hex(fp),
                model: model_name(st.map_or(0, |s| s.first_model)),
                key_ids: g.keys.iter().map(|k| key_name(*k)).collect(),
                requests: st.map_or(0, |s| s.answered),
                duplicates: g.duplicates,
                wasted_cost: Money(g.wasted),
            }
        })
        .collect();
    d.top = top_by(groups, s.top, |g| {
        (g.wasted_cost.0, g.duplicates, g.fingerprint.clone())
    });
    d.records = page(all, dup_rows, paging);

    // Retry loops: the failed attempts are the waste.
    let rl = &mut out.retry_loops;
    rl.window_secs = s.retry_window_ms / 1000;
    rl.min_attempts = s.retry_min_attempts.max(2);
    let mut failed_rows = Vec::new();
    let mut by_key = ByKey::default();
    let mut list = Vec::new();
    for (fp, streak) in &loops {
        let attempts: Vec<&InsightRow> = streak.iter().map(|i| &all[*i as usize]).collect();
        let fails: Vec<u32> = streak
            .iter()
            .copied()
            .filter(|i| failed(all[*i as usize].status))
            .collect();
        let cost = fails
            .iter()
            .map(|i| all[*i as usize].cost_nanos)
            .fold(0i64, i64::saturating_add);
        let (first, last) = (attempts[0], attempts[attempts.len() - 1]);
        let resolved = last.status == Status::Success;
        rl.count += 1;
        rl.attempts += attempts.len() as u64;
        rl.failed_attempts += fails.len() as u64;
        rl.resolved += u64::from(resolved);
        rl.failed_cost += cost;
        by_key.add(first.key, fails.len() as u64, cost);
        list.push(RetryLoop {
            fingerprint: to_hex(*fp),
            model: model_name(first.model),
            key_id: key_name(first.key),
            attempts: attempts.len() as u64,
            failed_attempts: fails.len() as u64,
            failed_cost: Money(cost),
            resolved,
            first_at_ms: first.created_at_ms,
            last_at_ms: last.created_at_ms,
        });
        failed_rows.extend(fails);
    }
    rl.by_key = by_key.into_list(&rows.keys);
    rl.top = top_by(list, s.top, |l| {
        (l.failed_cost.0, l.failed_attempts, l.first_at_ms)
    });
    rl.records = page(all, failed_rows, paging);

    // Unused responses.
    let un = &mut out.unused_responses;
    let mut by_key = ByKey::default();
    for r in cancelled_rows.iter().map(|i| &all[*i as usize]) {
        un.count += 1;
        un.input_tokens = un.input_tokens.saturating_add(r.input_tokens);
        un.output_tokens = un.output_tokens.saturating_add(r.output_tokens);
        un.cost += r.cost_nanos;
        by_key.add(r.key, 1, r.cost_nanos);
    }
    un.by_key = by_key.into_list(&rows.keys);
    un.records = page(all, cancelled_rows, paging);

    // Conversation growth.
    let g = &mut out.conversation_growth;
    g.min_turns = s.growth_min_turns.max(2);
    g.history_cap_tokens = s.history_cap_tokens;
    let mut growing = Vec::new();
    let mut turn_rows = Vec::new();
    for (c, t) in convs {
        if !t.rising || t.rows.len() < g.min_turns {
            continue;
        }
        let turns: Vec<&InsightRow> = t.rows.iter().map(|i| &all[*i as usize]).collect();
        let mut cost = 0i64;
        let mut saved = 0i64;
        let mut input = 0i64;
        for r in &turns {
            cost = cost.saturating_add(r.cost_nanos);
            input = input.saturating_add(r.input_tokens);
            let excess = u64::try_from(r.input_tokens - s.history_cap_tokens).unwrap_or(0);
            let beyond = Usage {
                input_tokens: excess,
                ..Usage::default()
            };
            saved = saved.saturating_add(cost_nanos(&beyond, &r.prices));
        }
        let (first, last) = (turns[0], turns[turns.len() - 1]);
        g.count += 1;
        g.turns += turns.len() as u64;
        g.input_tokens = g.input_tokens.saturating_add(input);
        g.cost += cost;
        g.savings_at_cap += saved;
        growing.push(GrowingConversation {
            conversation: to_hex(c),
            model: model_name(last.model),
            key_id: key_name(last.key),
            turns: turns.len() as u64,
            first_input_tokens: first.input_tokens,
            last_input_tokens: last.input_tokens,
            cost: Money(cost),
            savings_at_cap: Money(saved),
        });
        turn_rows.extend(t.rows);
    }
    g.top = top_by(growing, s.top, |c| {
        (c.cost.0, c.turns, c.conversation.clone())
    });
    g.records = page(all, turn_rows, paging);

    // Model mix.
    let mm = &mut out.model_mix;
    let total: i64 = mix
        .iter()
        .flatten()
        .map(|m| m.cost)
        .fold(0, i64::saturating_add);
    mm.total_cost = Money(total);
    let mut models = Vec::new();
    let used = mix
        .into_iter()
        .enumerate()
        .filter_map(|(m, v)| Some((m as u32, v?)));
    for (m, sums) in used {
        let MixSums {
            requests,
            input,
            output,
            cached,
            cost,
            sibling_cost: sib_cost,
        } = sums;
        let sib = siblings[m as usize].as_ref().map(|(name, _)| name.clone());
        let savings = sib_cost.map(|c| Money(cost.saturating_sub(c)));
        if let Some(sv) = savings {
            mm.potential_savings += sv.0.max(0);
        }
        models.push(ModelSpend {
            model: model_name(m),
            requests,
            input_tokens: input,
            output_tokens: output,
            cached_tokens: cached,
            cost: Money(cost),
            share_of_cost: if total > 0 {
                (cost as f64 / total as f64 * 10_000.0).round() / 10_000.0
            } else {
                0.0
            },
            sibling: sib,
            sibling_cost: sib_cost.map(Money),
            savings,
        });
    }
    mm.models = top_by(models, usize::MAX, |m| {
        (m.cost.0, m.requests, m.model.clone())
    });
    mm.records = page(all, mix_rows, paging);

    // Cache.
    let ca = &mut out.cache;
    ca.uncached_repeated_prefix_requests = uncached_rows.len() as u64;
    ca.uncached_repeated_share = if ca.repeated_prefix_requests > 0 {
        let share =
            ca.uncached_repeated_prefix_requests as f64 / ca.repeated_prefix_requests as f64;
        (share * 10_000.0).round() / 10_000.0
    } else {
        0.0
    };
    ca.records = page(all, uncached_rows, paging);
    out
}

/// The configured cheaper sibling of a model: the longest configured name that is the model's
/// own or the model's with a dated or numbered suffix (`gpt-4o` for `gpt-4o-2024-08-06`, not
/// for `gpt-4o-mini`).
pub fn sibling_of<'a>(siblings: &'a BTreeMap<String, String>, model: &str) -> Option<&'a str> {
    siblings
        .iter()
        .filter(|(k, _)| {
            model == k.as_str()
                || model.strip_prefix(k.as_str()).is_some_and(|rest| {
                    rest.strip_prefix('-')
                        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
                })
        })
        .max_by_key(|(k, _)| k.len())
        .map(|(_, v)| v.as_str())
        .filter(|v| *v != model)
}

/// The default cheaper siblings: same maker, same generation, a smaller tier.
pub fn default_siblings() -> BTreeMap<String, String> {
    [
        ("gpt-4o", "gpt-4o-mini"),
        ("gpt-4.1", "gpt-4.1-mini"),
        ("gpt-4.1-mini", "gpt-4.1-nano"),
        ("gpt-5", "gpt-5-mini"),
        ("gpt-5-mini", "gpt-5-nano"),
        ("claude-opus-4-5", "claude-sonnet-4-5"),
        ("claude-opus-4-1", "claude-sonnet-4-5"),
        ("claude-opus-4", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5", "claude-haiku-4-5"),
        ("claude-sonnet-4", "claude-haiku-4-5"),
        ("gemini-2.5-pro", "gemini-2.5-flash"),
        ("gemini-2.5-flash", "gemini-2.5-flash-lite"),
        ("mistral-large-latest", "mistral-small-latest"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: UnitPrices = UnitPrices {
        input: 1_000_000_000, // USD 1 per million: 1,000 nanos per token
        output: 2_000_000_000,
        cached_input: 100_000_000,
        cache_write: 0,
    };

    struct B(InsightRows);

    impl B {
        #[allow(clippy::too_many_arguments)]
        fn add(&mut self, t: i64, key: &str, status: Status, input: i64, fp: i64, conv: i64) {
            self.add_cached(t, key, status, input, 0, fp, conv);
        }
        #[allow(clippy::too_many_arguments)]
        fn add_cached(
            &mut self,
            t: i64,
            key: &str,
            status: Status,
            input: i64,
            cached: i64,
            fp: i64,
            conv: i64,
        ) {
            let key = self.0.intern(false, key);
            let model = self.0.intern(true, "gpt-4o");
            let output = if status == Status::Success { 10 } else { 0 };
            let u = Usage {
                input_tokens: input as u64,
                output_tokens: output as u64,
                cached_tokens: cached as u64,
                ..Usage::default()
            };
            let n = self.0.rows.len();
            self.0.rows.push(InsightRow {
                request_id: format!("req_{n:03}"),
                created_at_ms: t * 1000,
                key,
                model,
                status,
                input_tokens: input,
                output_tokens: output,
                cached_tokens: cached,
                cache_write_tokens: 0,
                reasoning_tokens: 0,
                cost_nanos: cost_nanos(&u, &P),
                prices: P,
                fingerprint: Some(fp),
                conversation: Some(conv),
            });
        }
    }

    fn settings() -> InsightSettings {
        InsightSettings {
            duplicate_window_ms: 600_000,
            retry_window_ms: 60_000,
            retry_min_attempts: 3,
            growth_min_turns: 3,
            history_cap_tokens: 100,
            top: 10,
        }
    }

    fn run(b: &B) -> Insights {
        let mini = UnitPrices {
            input: 100_000_000,
            output: 200_000_000,
            cached_input: 10_000_000,
            cache_write: 0,
        };
        analyze(
            &b.0,
            &settings(),
            &|m| (m == "gpt-4o").then(|| ("gpt-4o-mini".to_string(), mini)),
            Paging {
                offset: 0,
                limit: 100,
            },
        )
    }

    use Status::*;

    #[test]
    fn duplicates_are_answered_repeats_within_the_window() {
        let mut b = B(InsightRows::default());
        b.add(0, "k1", Success, 50, 1, 100);
        b.add(60, "k2", Success, 50, 1, 100); // duplicate
        b.add(700, "k1", Success, 50, 1, 100); // 640 s after the last: not
        b.add(710, "k1", Error, 50, 1, 100); // not answered
        b.add(720, "k1", Success, 50, 1, 100); // duplicate of 700
        let i = run(&b);
        assert_eq!(i.duplicates.count, 2);
        assert_eq!(i.duplicates.wasted_input_tokens, 100);
        assert_eq!(i.duplicates.wasted_cost, Money(2 * (50 * 1000 + 10 * 2000)));
        assert_eq!(i.duplicates.records.request_ids, ["req_001", "req_004"]);
        assert_eq!(i.duplicates.top.len(), 1);
        assert_eq!(i.duplicates.top[0].requests, 4);
        assert_eq!(i.duplicates.top[0].key_ids, ["k1", "k2"]);
    }

    #[test]
    fn a_retry_loop_is_failures_in_a_row_within_the_window() {
        let mut b = B(InsightRows::default());
        // A loop: three 429s, then an answer.
        b.add(0, "k1", Error, 40, 7, 1);
        b.add(10, "k1", Error, 40, 7, 1);
        b.add(20, "k1", Refused, 0, 7, 1);
        b.add(30, "k1", Success, 40, 7, 1);
        // Not a loop: the second failure came after the window, so the streaks are 1 and 2.
        b.add(1000, "k2", Cancelled, 40, 8, 2);
        b.add(1100, "k2", Error, 40, 8, 2); // 100 s later: beyond the 60 s window
        b.add(1110, "k2", Success, 40, 8, 2);
        let i = run(&b);
        assert_eq!(i.retry_loops.count, 1);
        assert_eq!(i.retry_loops.attempts, 4);
        assert_eq!(i.retry_loops.failed_attempts, 3);
        assert_eq!(i.retry_loops.resolved, 1);
        assert_eq!(
            i.retry_loops.records.request_ids,
            ["req_000", "req_001", "req_002"]
        );
        assert_eq!(i.retry_loops.by_key[0].key_id, "k1");
        assert_eq!(i.unused_responses.count, 1);
        assert_eq!(i.unused_responses.records.request_ids, ["req_004"]);
    }

    #[test]
    fn a_growing_conversation_and_what_a_cap_saves() {
        let mut b = B(InsightRows::default());
        b.add(0, "k1", Success, 80, 1, 9);
        b.add(10, "k1", Success, 150, 2, 9);
        b.add(11, "k1", Success, 150, 2, 9); // a repeat, not a turn (and a duplicate)
        b.add(20, "k1", Success, 260, 3, 9);
        // Another conversation, shrinking: not growing.
        b.add(0, "k1", Success, 300, 4, 5);
        b.add(5, "k1", Success, 200, 5, 5);
        b.add(9, "k1", Success, 400, 6, 5);
        let i = run(&b);
        let g = &i.conversation_growth;
        assert_eq!((g.count, g.turns, g.input_tokens), (1, 3, 490));
        // Beyond 100 tokens: 0 + 50 + 160, at 1,000 nanos a token.
        assert_eq!(g.savings_at_cap, Money(210_000));
        assert_eq!(g.records.request_ids, ["req_000", "req_001", "req_003"]);
        // Openings seen before: 5 of the 7 (two conversations), none cached.
        assert_eq!(i.cache.repeated_prefix_requests, 5);
        assert_eq!(i.cache.uncached_repeated_share, 1.0);
    }

    #[test]
    fn model_mix_prices_the_same_tokens_on_the_sibling_and_cache_savings_are_exact() {
        let mut b = B(InsightRows::default());
        b.add_cached(0, "k1", Success, 1000, 800, 1, 1);
        b.add_cached(1, "k1", Success, 1000, 0, 2, 1);
        let i = run(&b);
        let m = &i.model_mix.models[0];
        // gpt-4o: 200*1000 + 800*100 + 10*2000 = 300,000; then 1,000,000 + 20,000.
        assert_eq!(m.cost, Money(300_000 + 1_020_000));
        // gpt-4o-mini: 200*100 + 800*10 + 10*200 = 30,000; then 100,000 + 2,000.
        assert_eq!(m.sibling_cost, Some(Money(30_000 + 102_000)));
        assert_eq!(i.model_mix.potential_savings, Money(1_320_000 - 132_000));
        assert_eq!(i.cache.cached_tokens, 800);
        assert_eq!(i.cache.saved, Money(800 * 1000 - 800 * 100));
        assert_eq!(i.cache.repeated_prefix_requests, 1);
        assert_eq!(i.cache.records.request_ids, ["req_001"]);
    }

    #[test]
    fn pages_of_request_ids() {
        let mut b = B(InsightRows::default());
        for t in 0..5 {
            b.add(t, "k1", Cancelled, 1, t, t);
        }
        let i = analyze(
            &b.0,
            &settings(),
            &|_| None,
            Paging {
                offset: 2,
                limit: 2,
            },
        );
        let r = &i.unused_responses.records;
        assert_eq!((r.total, r.next_offset), (5, Some(4)));
        assert_eq!(r.request_ids, ["req_002", "req_003"]);
    }

    #[test]
    fn siblings_match_the_model_and_its_snapshots_only() {
        let s = default_siblings();
        assert_eq!(sibling_of(&s, "gpt-4o"), Some("gpt-4o-mini"));
        assert_eq!(sibling_of(&s, "gpt-4o-2024-08-06"), Some("gpt-4o-mini"));
        assert_eq!(sibling_of(&s, "gpt-4o-mini"), None);
        assert_eq!(
            sibling_of(&s, "claude-sonnet-4-5-20250929"),
            Some("claude-haiku-4-5")
        );
        assert_eq!(
            sibling_of(&s, "claude-opus-4-1-20250805"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(sibling_of(&s, "gemini-2.5-flash-lite"), None);
    }
}

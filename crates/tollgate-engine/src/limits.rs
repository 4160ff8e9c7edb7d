//! Per-key limits (requests and tokens per minute, spend per period, model allow-list) and the
//! brake on repeated authentication failures. (Expiry is part of authentication: `keys.rs`.)
//!
//! One process (SQLite) counts each key in memory. Replicas sharing a store that has
//! `QuotaStore` (PostgreSQL) split each limit window instead: a replica takes a slice of the
//! window (a sixteenth of the limit, or what a request needs) with one transaction when its own
//! slice runs out, admits from it in memory, and gives back what it has not used after two idle
//! seconds. So N replicas never admit more requests or spend than the limit; tokens, known only
//! when a request ends, are charged to the slice afterwards, as on one process. Spend already
//! made in a period is read from the rollups once per key and period.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use parking_lot::Mutex;
use tollgate_core::account::{Caller, KeyLimits, Period};
use tollgate_core::calendar::{period_end, period_start, MINUTE_MS};
use tollgate_core::clock::SharedClock;
use tollgate_core::error::{RateStatus, RateWindow};
use tollgate_core::money::nanos_to_usd_string;
use tollgate_core::store::{QuotaKind, QuotaStore, QuotaTake, Store};
use tollgate_core::{Code, DomainError};

/// A slice is a sixteenth of the limit: at most 16 takes per window and key when busy, and at
/// most N × (limit / 16) left unused in other replicas' slices until they give it back.
const SLICE_DIVISOR: i64 = 16;
/// Unused slices go back to the shared window after this long without a request.
const IDLE_GIVE_BACK_MS: i64 = 2_000;
/// Takes one admission may make before it gives up under contention.
const MAX_ROUNDS: u32 = 8;

/// This replica's part of one shared window.
#[derive(Default, Clone, Copy)]
struct Slice {
    /// Start of the window the slice belongs to.
    window: i64,
    /// Taken and not used yet; negative when tokens counted after their request overran it.
    avail: i64,
    /// The window's use across replicas after this replica's last take.
    seen: i64,
    touched_ms: i64,
}

#[derive(Default)]
struct KeyState {
    minute: i64,
    requests: u64,
    tokens: u64,
    /// Start of the spend period `spent` belongs to; None until loaded.
    period_start: Option<i64>,
    spent: i64,
    held: i64,
    /// Shared mode: slices of the requests, tokens and spend windows.
    slices: [Slice; 3],
}

fn slot(kind: QuotaKind) -> usize {
    match kind {
        QuotaKind::Requests => 0,
        QuotaKind::Tokens => 1,
        QuotaKind::SpendNanos => 2,
    }
}

const KINDS: [QuotaKind; 3] = [
    QuotaKind::Requests,
    QuotaKind::Tokens,
    QuotaKind::SpendNanos,
];

#[derive(Default)]
struct KeyEntry {
    state: Arc<Mutex<KeyState>>,
    /// One take from the shared store at a time per key, so a burst takes one slice, not one
    /// per waiting request.
    refill: Arc<tokio::sync::Mutex<()>>,
}

type Keys = Mutex<HashMap<String, Arc<KeyEntry>>>;
/// Per key and limit: the minute counted, and the refusals in it.
type Refusals = HashMap<(String, QuotaKind), (i64, u64)>;

pub struct Limiter {
    store: Arc<dyn Store>,
    clock: SharedClock,
    keys: Arc<Keys>,
    auth_failures: Mutex<HashMap<IpAddr, (i64, u32)>>,
    auth_failures_per_minute: u32,
    /// Refusals per key and limit in the current minute, for `rate_limit.exceeded`.
    refusals: Arc<Mutex<Refusals>>,
    outbox: std::sync::OnceLock<Arc<crate::webhooks::Webhooks>>,
}

/// A request admitted under its key's limits; settle it with the real tokens and cost.
pub struct Permit {
    state: Option<Arc<Mutex<KeyState>>>,
    spend_hold: i64,
    /// Shared mode: the spend window the hold was taken from.
    spend_window: Option<i64>,
    done: bool,
    /// The key's rate windows, for the response's `x-ratelimit-*` headers.
    pub rate: RateStatus,
    /// Set when the key has a spend limit and webhooks may watch it.
    watch: Option<SpendWatch>,
}

/// What `usage.threshold` by key needs to know of a permit's spend window (the key's ids come
/// with `settle`, so an admission copies no strings for it).
struct SpendWatch {
    outbox: Arc<crate::webhooks::Webhooks>,
    period: Period,
    period_start: i64,
    period_end: Option<i64>,
    limit: i64,
}

impl Permit {
    /// Settles with the real tokens and cost of the request of `key_id` (of `account_id`).
    pub fn settle(
        mut self,
        tokens: u64,
        cost_nanos: i64,
        now_ms: i64,
        (account_id, key_id): (&str, &str),
    ) {
        self.done = true;
        let mut used = None;
        if let Some(state) = &self.state {
            let mut s = state.lock();
            s.held -= self.spend_hold;
            s.spent = s.spent.saturating_add(cost_nanos);
            let minute = now_ms.div_euclid(MINUTE_MS);
            if s.minute == minute {
                s.tokens = s.tokens.saturating_add(tokens);
            }
            let t = &mut s.slices[slot(QuotaKind::Tokens)];
            if t.window == minute * MINUTE_MS {
                t.avail = t
                    .avail
                    .saturating_sub(i64::try_from(tokens).unwrap_or(i64::MAX));
            }
            if let Some(window) = self.spend_window {
                let sp = &mut s.slices[slot(QuotaKind::SpendNanos)];
                if sp.window == window {
                    // Holds cap charges, so this never goes below what was there before.
                    sp.avail = sp
                        .avail
                        .saturating_add(self.spend_hold.saturating_sub(cost_nanos));
                }
            }
            if self.watch.is_some() && cost_nanos > 0 {
                // Shared mode: the window's use across replicas as of this replica's last take
                // (what its slice and holds do not account for); else this process's count.
                let sp = &s.slices[slot(QuotaKind::SpendNanos)];
                let shared = match self.spend_window {
                    Some(window) if sp.window == window => {
                        sp.seen.saturating_sub(sp.avail).saturating_sub(s.held)
                    }
                    _ => 0,
                };
                used = Some(s.spent.max(shared));
            }
        }
        if let (Some(w), Some(used_nanos)) = (&self.watch, used) {
            w.outbox.on_key_spend(crate::webhooks::KeySpend {
                account_id,
                key_id,
                period: w.period,
                period_start_ms: w.period_start,
                period_end_ms: w.period_end,
                limit_nanos: w.limit,
                used_nanos,
            });
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            if let Some(state) = &self.state {
                let mut s = state.lock();
                s.held -= self.spend_hold;
                if let Some(window) = self.spend_window {
                    let sp = &mut s.slices[slot(QuotaKind::SpendNanos)];
                    if sp.window == window {
                        sp.avail = sp.avail.saturating_add(self.spend_hold);
                    }
                }
            }
        }
    }
}

fn limited(what: &str, limit: String, reset_ms: i64, now_ms: i64, rate: RateStatus) -> DomainError {
    let secs = ((reset_ms - now_ms).max(0) + 999) / 1000;
    let at = Utc
        .timestamp_millis_opt(reset_ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let mut err = DomainError::new(
        Code::RateLimited,
        format!("{what} limit of {limit} reached for this key; it resets at {at} (in {secs}s)"),
    );
    err.rate = Some(Box::new(rate));
    err.retry_after_secs = Some(secs);
    err
}

/// The limits that apply to one request, at one instant.
struct Windows {
    now: i64,
    minute_start: i64,
    period: Period,
    period_start: i64,
}

impl Windows {
    fn at(l: &KeyLimits, now: i64) -> Self {
        let period = l.spend_period.unwrap_or(Period::Total);
        Self {
            now,
            minute_start: now.div_euclid(MINUTE_MS) * MINUTE_MS,
            period,
            period_start: period_start(period, now),
        }
    }

    fn start(&self, kind: QuotaKind) -> i64 {
        match kind {
            QuotaKind::SpendNanos => self.period_start,
            _ => self.minute_start,
        }
    }

    fn end(&self, kind: QuotaKind) -> i64 {
        match kind {
            QuotaKind::SpendNanos => period_end(self.period, self.now).unwrap_or(i64::MAX),
            _ => self.minute_start + MINUTE_MS,
        }
    }

    fn headers(&self, l: &KeyLimits, requests_used: u64, tokens_used: u64) -> RateStatus {
        let reset_secs = (self.minute_start + MINUTE_MS - self.now + 999) / 1000;
        RateStatus {
            requests: l.rpm_limit.map(|rpm| RateWindow {
                limit: rpm,
                remaining: rpm.saturating_sub(requests_used + 1),
                reset_secs,
            }),
            tokens: l.tpm_limit.map(|tpm| RateWindow {
                limit: tpm,
                remaining: tpm.saturating_sub(tokens_used),
                reset_secs,
            }),
        }
    }

    /// The refusal for the limit `kind`.
    fn refusal(&self, kind: QuotaKind, l: &KeyLimits, spent: i64, rate: RateStatus) -> DomainError {
        let reset_minute = self.minute_start + MINUTE_MS;
        match kind {
            QuotaKind::Requests => limited(
                "requests-per-minute",
                l.rpm_limit.unwrap_or(0).to_string(),
                reset_minute,
                self.now,
                rate,
            ),
            QuotaKind::Tokens => limited(
                "tokens-per-minute",
                l.tpm_limit.unwrap_or(0).to_string(),
                reset_minute,
                self.now,
                rate,
            ),
            QuotaKind::SpendNanos => {
                let shown = nanos_to_usd_string(l.spend_limit_nanos.unwrap_or(0));
                let reset = self.end(kind);
                if reset == i64::MAX {
                    let mut err = DomainError::new(
                        Code::RateLimited,
                        format!(
                            "total spend limit of {shown} USD reached for this key (used {} USD)",
                            nanos_to_usd_string(spent)
                        ),
                    );
                    err.rate = Some(Box::new(rate));
                    return err;
                }
                let what = format!("{} spend", self.period.as_str());
                limited(&what, format!("{shown} USD"), reset, self.now, rate)
            }
        }
    }
}

fn limit_of(l: &KeyLimits, kind: QuotaKind) -> Option<i64> {
    match kind {
        QuotaKind::Requests => l.rpm_limit.map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
        QuotaKind::Tokens => l.tpm_limit.map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
        QuotaKind::SpendNanos => l.spend_limit_nanos,
    }
}

impl Limiter {
    pub fn new(store: Arc<dyn Store>, clock: SharedClock, auth_failures_per_minute: u32) -> Self {
        Self {
            store,
            clock,
            keys: Arc::new(Mutex::new(HashMap::new())),
            auth_failures: Mutex::new(HashMap::new()),
            auth_failures_per_minute,
            refusals: Arc::new(Mutex::new(HashMap::new())),
            outbox: std::sync::OnceLock::new(),
        }
    }

    /// Shared mode: gives idle slices back every second and forgets ended windows every
    /// minute. Nothing to do with one process.
    pub fn start_quota_keeper(&self) {
        if self.store.quotas().is_none() {
            return;
        }
        let keys: Weak<Keys> = Arc::downgrade(&self.keys);
        let (store, clock) = (self.store.clone(), self.clock.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut ticks: u64 = 0;
            loop {
                tick.tick().await;
                ticks += 1;
                let Some(keys) = keys.upgrade() else { return };
                let Some(quotas) = store.quotas() else { return };
                give_back_idle(quotas, &keys, clock.now_ms()).await;
                if ticks.is_multiple_of(60) {
                    // Best effort: an ended window's row only takes space until the next try.
                    let _ = quotas.prune_quotas(clock.now_ms() - MINUTE_MS).await;
                }
            }
        });
    }

    /// Checks every limit of the caller's key for a request to `model` that may cost up to
    /// `max_cost_nanos`. Nothing is counted when a check fails.
    pub async fn admit(
        &self,
        caller: &Caller,
        model: &str,
        max_cost_nanos: i64,
    ) -> Result<Permit, DomainError> {
        let l: &KeyLimits = &caller.limits;
        if let Some(allowed) = &l.allowed_models {
            if !allowed.iter().any(|m| m == model) {
                return Err(DomainError::new(
                    Code::PermissionDenied,
                    format!(
                        "this API key may not use model {model}; allowed: {}",
                        allowed.join(", ")
                    ),
                )
                .with_param("model"));
            }
        }
        if l.rpm_limit.is_none() && l.tpm_limit.is_none() && l.spend_limit_nanos.is_none() {
            return Ok(Permit {
                state: None,
                spend_hold: 0,
                spend_window: None,
                done: false,
                rate: RateStatus::default(),
                watch: None,
            });
        }
        let entry = self
            .keys
            .lock()
            .entry(caller.key_id.clone())
            .or_default()
            .clone();
        let w = Windows::at(l, self.clock.now_ms());
        if l.spend_limit_nanos.is_some() && entry.state.lock().period_start != Some(w.period_start)
        {
            // Once per key and period: what the key already spent in it (hour-aligned rollups).
            let spent = self
                .store
                .key_spend_since(&caller.key_id, w.period_start)
                .await?;
            let mut s = entry.state.lock();
            if s.period_start != Some(w.period_start) {
                s.period_start = Some(w.period_start);
                s.spent = spent;
            }
        }
        let mut permit = self
            .admit_windows(caller, &entry, &w, max_cost_nanos)
            .await?;
        permit.watch = self.spend_watch(caller, &w);
        Ok(permit)
    }

    async fn admit_windows(
        &self,
        caller: &Caller,
        entry: &KeyEntry,
        w: &Windows,
        max_cost_nanos: i64,
    ) -> Result<Permit, DomainError> {
        if let Some(quotas) = self.store.quotas() {
            match self
                .admit_shared(quotas, caller, entry, w, max_cost_nanos)
                .await
            {
                Err(AdmitError::Refused(e)) => return Err(e),
                Err(AdmitError::Limited(kind, e)) => {
                    self.note_refusal(caller, kind, w);
                    return Err(e);
                }
                Ok(permit) => return Ok(permit),
                // The shared store is away: each replica enforces the limits on its own until
                // it is back (N replicas may then admit up to N× a limit).
                Err(AdmitError::StoreAway) => {}
            }
        }
        self.admit_local(&caller.limits, entry, w, max_cost_nanos)
            .map_err(|(kind, e)| {
                self.note_refusal(caller, kind, w);
                e
            })
    }

    fn spend_watch(&self, caller: &Caller, w: &Windows) -> Option<SpendWatch> {
        let limit = caller.limits.spend_limit_nanos?;
        let outbox = self.outbox.get()?.clone();
        let end = w.end(QuotaKind::SpendNanos);
        Some(SpendWatch {
            outbox,
            period: w.period,
            period_start: w.period_start,
            period_end: (end != i64::MAX).then_some(end),
            limit,
        })
    }

    /// Counts a refusal for `rate_limit.exceeded`: the first in a key's limit and minute
    /// schedules one event for the minute's end, carrying how many were refused in it.
    fn note_refusal(&self, caller: &Caller, kind: QuotaKind, w: &Windows) {
        let Some(outbox) = self.outbox.get() else {
            return;
        };
        let slot = (caller.key_id.clone(), kind);
        let first = {
            let mut map = self.refusals.lock();
            if map.len() > 100_000 {
                map.retain(|_, (m, _)| *m == w.minute_start);
            }
            let e = map.entry(slot.clone()).or_insert((w.minute_start, 0));
            if e.0 != w.minute_start {
                *e = (w.minute_start, 0);
            }
            e.1 += 1;
            e.1 == 1
        };
        if !first {
            return;
        }
        let (outbox, refusals, clock) = (outbox.clone(), self.refusals.clone(), self.clock.clone());
        let (account, limits, minute) = (
            caller.account_id.clone(),
            caller.limits.clone(),
            w.minute_start,
        );
        tokio::spawn(async move {
            let wait = (minute + MINUTE_MS - clock.now_ms()).clamp(0, MINUTE_MS);
            tokio::time::sleep(Duration::from_millis(wait as u64 + 50)).await;
            let count = refusals
                .lock()
                .get(&slot)
                .filter(|(m, _)| *m == minute)
                .map_or(1, |(_, n)| *n);
            let e = crate::webhooks::events::rate_limit_exceeded(
                &account,
                &slot.0,
                kind,
                limit_of(&limits, kind).unwrap_or(0),
                count,
                minute,
                clock.now_ms(),
            );
            outbox.emit_logged(vec![e]).await;
        });
    }

    /// Sends `rate_limit.exceeded` to webhooks from now on.
    pub fn set_outbox(&self, outbox: Arc<crate::webhooks::Webhooks>) {
        let _ = self.outbox.set(outbox);
    }

    fn admit_local(
        &self,
        l: &KeyLimits,
        entry: &KeyEntry,
        w: &Windows,
        max_cost_nanos: i64,
    ) -> Result<Permit, Refusal> {
        let mut s = entry.state.lock();
        roll_minute(&mut s, w);
        let headers = w.headers(l, s.requests, s.tokens);
        if l.rpm_limit.is_some_and(|rpm| s.requests >= rpm) {
            return Err((
                QuotaKind::Requests,
                w.refusal(QuotaKind::Requests, l, s.spent, headers),
            ));
        }
        if l.tpm_limit.is_some_and(|tpm| s.tokens >= tpm) {
            return Err((
                QuotaKind::Tokens,
                w.refusal(QuotaKind::Tokens, l, s.spent, headers),
            ));
        }
        let mut spend_hold = 0;
        if let Some(limit) = l.spend_limit_nanos {
            if s.spent
                .saturating_add(s.held)
                .saturating_add(max_cost_nanos)
                > limit
            {
                return Err((
                    QuotaKind::SpendNanos,
                    w.refusal(QuotaKind::SpendNanos, l, s.spent, headers),
                ));
            }
            spend_hold = max_cost_nanos;
            s.held += spend_hold;
        }
        s.requests += 1;
        drop(s);
        Ok(Permit {
            state: Some(entry.state.clone()),
            spend_hold,
            spend_window: None,
            done: false,
            rate: headers,
            watch: None,
        })
    }

    /// What each limited window needs of this replica's slice for one more request: one
    /// request, a token not yet overrun, the request's largest possible cost.
    fn missing(
        s: &mut KeyState,
        l: &KeyLimits,
        w: &Windows,
        max_cost_nanos: i64,
    ) -> Vec<(QuotaKind, i64)> {
        let mut out = Vec::new();
        for kind in KINDS {
            if limit_of(l, kind).is_none() {
                continue;
            }
            let slice = &mut s.slices[slot(kind)];
            if slice.window != w.start(kind) {
                *slice = Slice {
                    window: w.start(kind),
                    ..Slice::default()
                };
            }
            let need = match kind {
                QuotaKind::SpendNanos => max_cost_nanos.max(1),
                _ => 1,
            };
            if slice.avail < need {
                out.push((kind, need));
            }
        }
        out
    }

    async fn admit_shared(
        &self,
        quotas: &dyn QuotaStore,
        caller: &Caller,
        entry: &KeyEntry,
        w: &Windows,
        max_cost_nanos: i64,
    ) -> Result<Permit, AdmitError> {
        let l = &caller.limits;
        // Set when this request's own take left a window short: the replicas together have
        // used that limit up.
        let mut exhausted: Option<QuotaKind> = None;
        let mut rounds = 0;
        loop {
            let missing = {
                let mut s = entry.state.lock();
                let missing = Self::missing(&mut s, l, w, max_cost_nanos);
                if missing.is_empty() {
                    return Ok(self.consume_shared(&mut s, l, entry, w, max_cost_nanos));
                }
                let short = exhausted.filter(|k| missing.iter().any(|(m, _)| m == k));
                // Rounds are bounded: under a burst, slices taken for this request may be
                // used by others before it gets back to them.
                if short.is_some() || rounds >= MAX_ROUNDS {
                    let kind = short.unwrap_or(missing[0].0);
                    let headers = shared_headers(&s, l, w);
                    return Err(AdmitError::Limited(
                        kind,
                        w.refusal(kind, l, s.spent, headers),
                    ));
                }
                missing
            };
            rounds += 1;
            let _one_take = entry.refill.lock().await;
            for (kind, need) in missing {
                let Some(limit) = limit_of(l, kind) else {
                    continue;
                };
                let (debt, want, seed) = {
                    let mut s = entry.state.lock();
                    let spent = s.spent;
                    let slice = &mut s.slices[slot(kind)];
                    if slice.window != w.start(kind) || slice.avail >= need {
                        // Refilled by the request that held the take before us, or rolled.
                        continue;
                    }
                    let debt = slice.avail.min(0).saturating_neg();
                    let want = (limit / SLICE_DIVISOR)
                        .max(need.saturating_sub(slice.avail.max(0)))
                        .max(1);
                    let seed = if kind == QuotaKind::SpendNanos {
                        spent
                    } else {
                        0
                    };
                    (debt, want, seed)
                };
                let take = QuotaTake {
                    key_id: &caller.key_id,
                    kind,
                    window_start_ms: w.start(kind),
                    window_end_ms: w.end(kind),
                    limit,
                    seed,
                    debt,
                    want,
                };
                let (granted, seen) = match quotas.take_quota(take).await {
                    Ok(r) => r,
                    Err(e) if e.is_transient() => return Err(AdmitError::StoreAway),
                    Err(e) => return Err(AdmitError::Refused(e.into())),
                };
                let mut s = entry.state.lock();
                let slice = &mut s.slices[slot(kind)];
                if slice.window == w.start(kind) {
                    slice.avail = slice.avail.saturating_add(debt).saturating_add(granted);
                    slice.seen = seen;
                    slice.touched_ms = w.now;
                    if slice.avail < need {
                        exhausted = Some(kind);
                    }
                }
            }
        }
    }

    fn consume_shared(
        &self,
        s: &mut KeyState,
        l: &KeyLimits,
        entry: &KeyEntry,
        w: &Windows,
        max_cost_nanos: i64,
    ) -> Permit {
        roll_minute(s, w);
        let headers = shared_headers(s, l, w);
        s.requests += 1;
        let mut spend_hold = 0;
        let mut spend_window = None;
        for kind in KINDS {
            if limit_of(l, kind).is_none() {
                continue;
            }
            let slice = &mut s.slices[slot(kind)];
            slice.touched_ms = w.now;
            match kind {
                QuotaKind::Requests => slice.avail -= 1,
                QuotaKind::Tokens => {}
                QuotaKind::SpendNanos => {
                    slice.avail -= max_cost_nanos;
                    spend_hold = max_cost_nanos;
                    spend_window = Some(slice.window);
                }
            }
        }
        s.held += spend_hold;
        Permit {
            state: Some(entry.state.clone()),
            spend_hold,
            spend_window,
            done: false,
            rate: headers,
            watch: None,
        }
    }

    /// True when `ip` has failed authentication too often this minute.
    pub fn auth_blocked(&self, ip: IpAddr) -> bool {
        let minute = self.clock.now_ms().div_euclid(MINUTE_MS);
        self.auth_failures
            .lock()
            .get(&ip)
            .is_some_and(|(m, n)| *m == minute && *n >= self.auth_failures_per_minute)
    }

    pub fn auth_failed(&self, ip: IpAddr) {
        let minute = self.clock.now_ms().div_euclid(MINUTE_MS);
        let mut map = self.auth_failures.lock();
        if map.len() > 100_000 {
            map.retain(|_, (m, _)| *m == minute);
        }
        let e = map.entry(ip).or_insert((minute, 0));
        if e.0 != minute {
            *e = (minute, 0);
        }
        e.1 += 1;
    }
}

enum AdmitError {
    Refused(DomainError),
    /// A limit refused it.
    Limited(QuotaKind, DomainError),
    StoreAway,
}

/// A local refusal, with the limit that made it.
type Refusal = (QuotaKind, DomainError);

fn roll_minute(s: &mut KeyState, w: &Windows) {
    let minute = w.minute_start.div_euclid(MINUTE_MS);
    if s.minute != minute {
        s.minute = minute;
        s.requests = 0;
        s.tokens = 0;
    }
}

/// Headers from what all replicas used as last seen by this one: the window's use at the last
/// take, less what this replica's slice still holds.
fn shared_headers(s: &KeyState, l: &KeyLimits, w: &Windows) -> RateStatus {
    let used = |kind: QuotaKind| {
        let slice = &s.slices[slot(kind)];
        if slice.window != w.start(kind) {
            return 0;
        }
        u64::try_from(slice.seen.saturating_sub(slice.avail).max(0)).unwrap_or(0)
    };
    w.headers(l, used(QuotaKind::Requests), used(QuotaKind::Tokens))
}

/// Returns the unused part of every slice idle for `IDLE_GIVE_BACK_MS`, so other replicas can
/// take it.
async fn give_back_idle(quotas: &dyn QuotaStore, keys: &Keys, now_ms: i64) {
    let idle: Vec<(String, Arc<KeyEntry>)> = keys
        .lock()
        .iter()
        .map(|(k, e)| (k.clone(), e.clone()))
        .collect();
    for (key_id, entry) in idle {
        for kind in KINDS {
            let back = {
                let mut s = entry.state.lock();
                let held = s.held;
                let slice = &mut s.slices[slot(kind)];
                // A spend slice with holds out stays: the holds settle against it.
                let busy = kind == QuotaKind::SpendNanos && held > 0;
                if slice.avail <= 0 || busy || now_ms - slice.touched_ms < IDLE_GIVE_BACK_MS {
                    continue;
                }
                let back = (slice.window, slice.avail);
                slice.avail = 0;
                back
            };
            let (window, amount) = back;
            if quotas
                .return_quota(&key_id, kind, window, amount)
                .await
                .is_err()
            {
                // Not returned: keep it, to use or return later.
                let mut s = entry.state.lock();
                let slice = &mut s.slices[slot(kind)];
                if slice.window == window {
                    slice.avail = slice.avail.saturating_add(amount);
                }
            }
        }
    }
}

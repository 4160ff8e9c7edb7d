//! Events the balance drives (`credits.low`, `usage.threshold`, `credits.depleted` at zero),
//! evaluated in memory at the end of each request from what the account's endpoints watch
//! for. What they watch is cached per account and re-read in the background (at most every
//! `WATCH_TTL`), so a request never waits on the database for it. Each crossing has a dedupe
//! key (endpoint, grant epoch, threshold), so it fires once whichever replica sees it and
//! however often it is seen.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tollgate_core::webhook::{Event, EventType};

use super::events::{self, Position};
use super::Webhooks;

const WATCH_TTL: Duration = Duration::from_secs(2);

/// One endpoint's thresholds.
#[derive(Debug, Clone)]
pub(crate) struct Watched {
    pub id: String,
    /// Percents for `usage.threshold`, if it wants that event.
    pub usage_percents: Vec<u8>,
    /// nano-USD for `credits.low`, if it wants that event and set one.
    pub low_nanos: Option<i64>,
    pub depleted: bool,
    pub projected: bool,
}

#[derive(Debug)]
pub(crate) struct Watch {
    pub hooks: Vec<Watched>,
    loaded: Instant,
}

/// Percent of the epoch's credits used, in hundredths of a percent.
fn used_bp(p: Position) -> i64 {
    let total = p.epoch_spent_nanos.saturating_add(p.balance_nanos.max(0));
    if total <= 0 {
        return if p.epoch_spent_nanos > 0 { 10_000 } else { 0 };
    }
    // i128: spent × 10 000 may pass i64 for large balances.
    let bp = i128::from(p.epoch_spent_nanos.max(0)) * 10_000 / i128::from(total);
    i64::try_from(bp).unwrap_or(10_000)
}

#[derive(Default)]
pub(crate) struct Watches {
    map: RwLock<HashMap<String, Arc<Watch>>>,
    loading: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// Recent charges per watched account, for `credits.projected_exhaustion`.
    burn: parking_lot::Mutex<HashMap<String, std::collections::VecDeque<(Instant, i64)>>>,
    /// Dedupe keys this process has written (or is writing): a crossing is asked for once.
    fired: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// Per endpoint and epoch: the projected exhaustion time last fired.
    projected: parking_lot::Mutex<HashMap<String, i64>>,
}

/// Memo entries kept at most; past it the memo starts over (the store's dedupe still holds).
const MEMO_MAX: usize = 100_000;

/// A burn rate is not extrapolated from less than this much time (a burst of a few seconds
/// would otherwise project any balance away).
const MIN_BURN_SPAN: Duration = Duration::from_secs(60);

impl Watches {
    /// Adds a charge; returns the burn rate over the window, nano-USD per hour.
    fn burn_per_hour(&self, account_id: &str, charge: i64, window: Duration) -> i64 {
        let now = Instant::now();
        let mut map = self.burn.lock();
        let q = map.entry(account_id.to_string()).or_default();
        q.push_back((now, charge));
        while q
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > window)
            || q.len() > 10_000
        {
            q.pop_front();
        }
        let spent: i64 = q.iter().map(|(_, c)| *c).fold(0, i64::saturating_add);
        let span = q
            .front()
            .map_or(MIN_BURN_SPAN, |(t, _)| now.duration_since(*t))
            .max(MIN_BURN_SPAN);
        let per_hour = i128::from(spent) * 3_600_000 / i128::from(span.as_millis().max(1) as i64);
        i64::try_from(per_hour).unwrap_or(i64::MAX)
    }
}

impl Watches {
    /// True the first time this process sees `key`.
    fn first_time(&self, key: &str) -> bool {
        let mut fired = self.fired.lock();
        if fired.contains(key) {
            return false;
        }
        if fired.len() >= MEMO_MAX {
            fired.clear();
        }
        fired.insert(key.to_string());
        true
    }

    pub fn forget(&self, account_id: &str) {
        self.map.write().remove(account_id);
    }
}

impl Webhooks {
    /// What `account_id`'s endpoints watch for, if known; starts a background load when it is
    /// not (or is stale). Never waits.
    fn watch(self: &Arc<Self>, account_id: &str) -> Option<Arc<Watch>> {
        let found = self.watches.map.read().get(account_id).cloned();
        let stale = found
            .as_ref()
            .is_none_or(|w| w.loaded.elapsed() >= WATCH_TTL);
        if stale && self.watches.loading.lock().insert(account_id.to_string()) {
            let me = self.clone();
            let account = account_id.to_string();
            tokio::spawn(async move {
                match me.store.list_webhooks(Some(account.clone())).await {
                    Ok(hooks) => {
                        let hooks = hooks
                            .into_iter()
                            .filter(|h| h.active)
                            .map(|h| Watched {
                                usage_percents: if h.wants(EventType::UsageThreshold) {
                                    h.settings.usage_threshold_percent.clone()
                                } else {
                                    Vec::new()
                                },
                                low_nanos: h
                                    .settings
                                    .credits_low_threshold
                                    .filter(|_| h.wants(EventType::CreditsLow))
                                    .and_then(|c| me.credits_to_nanos(c)),
                                depleted: h.wants(EventType::CreditsDepleted),
                                projected: h.wants(EventType::CreditsProjectedExhaustion),
                                id: h.id,
                            })
                            .collect();
                        me.watches.map.write().insert(
                            account.clone(),
                            Arc::new(Watch {
                                hooks,
                                loaded: Instant::now(),
                            }),
                        );
                    }
                    Err(e) => tracing::debug!(error = %e, "could not read webhooks to watch"),
                }
                me.watches.loading.lock().remove(&account);
            });
        }
        found
    }

    fn credits_to_nanos(&self, credits: i64) -> Option<i64> {
        credits.checked_mul(tollgate_core::money::NANOS_PER_USD / self.per_usd.max(1))
    }

    /// A request of `account_id` was charged: emits each threshold the account is past now.
    ///
    /// Level-triggered, not edge-triggered: a threshold already passed fires at the next charge
    /// if its event is not yet written (a restart between the charge and the outbox write, an
    /// endpoint created later, a watch list not loaded yet). The dedupe key keeps it to one
    /// event per crossing in the store; `fired` keeps this process from asking twice.
    pub fn on_charge(self: &Arc<Self>, account_id: &str, before: Position, after: Position) {
        let Some(watch) = self.watch(account_id) else {
            return;
        };
        if watch.hooks.is_empty() {
            return;
        }
        let now = self.clock.now_ms();
        let per_usd = self.per_usd;
        let epoch = after.credited_nanos;
        let mut out = Pending::default();
        let is = used_bp(after);
        for h in &watch.hooks {
            for &p in &h.usage_percents {
                if is >= i64::from(p) * 100 {
                    let key = format!("usage.threshold:{}:{epoch}:{p}", h.id);
                    if self.watches.first_time(&key) {
                        let e = events::usage_threshold(account_id, p, is, after, per_usd, now);
                        out.push(e, &h.id, key);
                    }
                }
            }
            if let Some(t) = h.low_nanos {
                if after.balance_nanos < t {
                    let key = format!("credits.low:{}:{epoch}", h.id);
                    if self.watches.first_time(&key) {
                        out.push(
                            events::credits_low(account_id, t, after, per_usd, now),
                            &h.id,
                            key,
                        );
                    }
                }
            }
        }
        if watch.hooks.iter().any(|h| h.depleted) && after.balance_nanos <= 0 {
            let e =
                events::credits_depleted(account_id, epoch, after.balance_nanos, 0, per_usd, now);
            if let Some(key) = e.dedupe_key.clone() {
                if self.watches.first_time(&key) {
                    out.events.push(e);
                    out.keys.push(key);
                }
            }
        }
        if watch.hooks.iter().any(|h| h.projected) && after.balance_nanos > 0 {
            let charge = after
                .epoch_spent_nanos
                .saturating_sub(before.epoch_spent_nanos);
            self.project(account_id, charge, after, &watch, &mut out);
        }
        self.send(out);
    }

    /// `credits.projected_exhaustion`: once per endpoint and grant epoch, and again each time
    /// the projection moves earlier by more than `projection_refire_hours` than the last one
    /// this process saw fire.
    fn project(
        self: &Arc<Self>,
        account_id: &str,
        charge: i64,
        after: Position,
        watch: &Watch,
        out: &mut Pending,
    ) {
        let window = Duration::from_secs(self.cfg.projection_window_hours.saturating_mul(3600));
        let rate = self.watches.burn_per_hour(account_id, charge, window);
        if rate <= 0 {
            return;
        }
        let hours_ms = |h: u64| {
            i64::try_from(h)
                .unwrap_or(i64::MAX / 3_600_000)
                .saturating_mul(3_600_000)
        };
        let left_ms = i128::from(after.balance_nanos) * 3_600_000 / i128::from(rate);
        let left_ms = i64::try_from(left_ms).unwrap_or(i64::MAX);
        if left_ms > hours_ms(self.cfg.projection_horizon_hours) {
            return;
        }
        let now = self.clock.now_ms();
        let at = now.saturating_add(left_ms);
        let margin = hours_ms(self.cfg.projection_refire_hours).max(1);
        let epoch = after.credited_nanos;
        for h in watch.hooks.iter().filter(|h| h.projected) {
            let slot = format!("credits.projected_exhaustion:{}:{epoch}", h.id);
            // The first of an epoch has the plain key (once across replicas and restarts); a
            // re-fire is keyed by the margin-wide bucket it falls in, so replicas that see the
            // same move send it once.
            let key = {
                let mut last = self.watches.projected.lock();
                if last.len() >= MEMO_MAX {
                    last.clear();
                }
                match last.get(&slot).copied() {
                    None => {
                        last.insert(slot.clone(), at);
                        slot.clone()
                    }
                    Some(prev) if at < prev.saturating_sub(margin) => {
                        last.insert(slot.clone(), at);
                        format!("{slot}:{}", at.div_euclid(margin))
                    }
                    Some(_) => continue,
                }
            };
            let e = events::projected_exhaustion(
                account_id,
                rate,
                after,
                at,
                (
                    self.cfg.projection_window_hours,
                    self.cfg.projection_horizon_hours,
                ),
                self.per_usd,
                now,
            );
            out.push(e, &h.id, key);
        }
    }

    /// A key with a spend limit per period was charged: `used_nanos` of `limit_nanos` are used
    /// in the period from `period_start_ms` (as this process sees it). Emits `usage.threshold`
    /// with the key's id for each threshold past, once per endpoint, key, period and threshold.
    pub fn on_key_spend(self: &Arc<Self>, spend: KeySpend<'_>) {
        let Some(watch) = self.watch(spend.account_id) else {
            return;
        };
        if spend.limit_nanos <= 0 {
            return;
        }
        let is = i64::try_from(
            i128::from(spend.used_nanos.max(0)) * 10_000 / i128::from(spend.limit_nanos),
        )
        .unwrap_or(i64::MAX);
        let now = self.clock.now_ms();
        let mut out = Pending::default();
        for h in &watch.hooks {
            for &p in &h.usage_percents {
                if is < i64::from(p) * 100 {
                    continue;
                }
                let key = format!(
                    "usage.threshold:{}:key:{}:{}:{p}",
                    h.id, spend.key_id, spend.period_start_ms
                );
                if self.watches.first_time(&key) {
                    let e = events::key_usage_threshold(&spend, p, is, self.per_usd, now);
                    out.push(e, &h.id, key);
                }
            }
        }
        self.send(out);
    }

    /// Writes pending events in the background; if the write fails, this process forgets it
    /// sent them, so the next charge tries again.
    fn send(self: &Arc<Self>, out: Pending) {
        if out.events.is_empty() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.emit(out.events).await {
                tracing::warn!(error = %e.message, "could not write webhook events; will retry at the next charge");
                let mut fired = me.watches.fired.lock();
                for k in &out.keys {
                    fired.remove(k);
                }
            }
        });
    }
}

/// A key's spend in its limit's period, for `usage.threshold` by key.
#[derive(Debug, Clone, Copy)]
pub struct KeySpend<'a> {
    pub account_id: &'a str,
    pub key_id: &'a str,
    pub period: tollgate_core::account::Period,
    pub period_start_ms: i64,
    /// None for a total (never resetting) limit.
    pub period_end_ms: Option<i64>,
    pub limit_nanos: i64,
    pub used_nanos: i64,
}

/// Events to write, with their dedupe keys.
#[derive(Default)]
struct Pending {
    events: Vec<Event>,
    keys: Vec<String>,
}

impl Pending {
    fn push(&mut self, mut e: Event, webhook_id: &str, key: String) {
        e.webhook_id = Some(webhook_id.to_string());
        e.dedupe_key = Some(key.clone());
        self.events.push(e);
        self.keys.push(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_used() {
        let p = |spent, balance| Position {
            balance_nanos: balance,
            epoch_spent_nanos: spent,
            credited_nanos: 0,
        };
        assert_eq!(used_bp(p(0, 100)), 0);
        assert_eq!(used_bp(p(50, 50)), 5_000);
        assert_eq!(used_bp(p(80, 20)), 8_000);
        assert_eq!(used_bp(p(100, 0)), 10_000);
        assert_eq!(used_bp(p(0, 0)), 0);
        assert_eq!(used_bp(p(i64::MAX / 2, i64::MAX / 2)), 5_000);
    }
}

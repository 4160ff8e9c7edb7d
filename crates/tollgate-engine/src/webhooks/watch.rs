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
}

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

    /// A request of `account_id` was charged: emits each crossing between `before` and `after`.
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
        let mut out: Vec<Event> = Vec::new();
        let (was, is) = (used_bp(before), used_bp(after));
        for h in &watch.hooks {
            for &p in &h.usage_percents {
                let at = i64::from(p) * 100;
                if was < at && is >= at {
                    let mut e = events::usage_threshold(account_id, p, is, after, per_usd, now);
                    e.webhook_id = Some(h.id.clone());
                    e.dedupe_key = Some(format!("usage.threshold:{}:{epoch}:{p}", h.id));
                    out.push(e);
                }
            }
            if let Some(t) = h.low_nanos {
                if before.balance_nanos >= t && after.balance_nanos < t {
                    let mut e = events::credits_low(account_id, t, after, per_usd, now);
                    e.webhook_id = Some(h.id.clone());
                    e.dedupe_key = Some(format!("credits.low:{}:{epoch}", h.id));
                    out.push(e);
                }
            }
        }
        if watch.hooks.iter().any(|h| h.depleted)
            && before.balance_nanos > 0
            && after.balance_nanos <= 0
        {
            out.push(events::credits_depleted(
                account_id,
                epoch,
                after.balance_nanos,
                0,
                per_usd,
                now,
            ));
        }
        if watch.hooks.iter().any(|h| h.projected) && after.balance_nanos > 0 {
            let charge = after
                .epoch_spent_nanos
                .saturating_sub(before.epoch_spent_nanos);
            let window = Duration::from_secs(self.cfg.projection_window_hours.saturating_mul(3600));
            let rate = self.watches.burn_per_hour(account_id, charge, window);
            let horizon_ms = i64::try_from(self.cfg.projection_horizon_hours)
                .unwrap_or(i64::MAX / 3_600_000)
                .saturating_mul(3_600_000);
            if rate > 0 {
                let left_ms = i128::from(after.balance_nanos) * 3_600_000 / i128::from(rate);
                let left_ms = i64::try_from(left_ms).unwrap_or(i64::MAX);
                if left_ms <= horizon_ms {
                    for h in watch.hooks.iter().filter(|h| h.projected) {
                        let mut e = events::projected_exhaustion(
                            account_id,
                            rate,
                            after,
                            now.saturating_add(left_ms),
                            (
                                self.cfg.projection_window_hours,
                                self.cfg.projection_horizon_hours,
                            ),
                            per_usd,
                            now,
                        );
                        e.webhook_id = Some(h.id.clone());
                        e.dedupe_key =
                            Some(format!("credits.projected_exhaustion:{}:{epoch}", h.id));
                        out.push(e);
                    }
                }
            }
        }
        if !out.is_empty() {
            self.emit_later(out);
        }
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

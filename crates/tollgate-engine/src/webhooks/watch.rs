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

//! Per-key limits (requests and tokens per minute, spend per period, model allow-list) and the
//! brake on repeated authentication failures. Counters live in memory, per process; spend in
//! the current period is read from the rollups once per key and period. (Expiry is part of
//! authentication: `keys.rs`.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use parking_lot::Mutex;
use tollgate_core::account::{Caller, KeyLimits, Period};
use tollgate_core::calendar::{period_end, period_start, MINUTE_MS};
use tollgate_core::clock::SharedClock;
use tollgate_core::error::{RateStatus, RateWindow};
use tollgate_core::money::nanos_to_usd_string;
use tollgate_core::store::Store;
use tollgate_core::{Code, DomainError};

#[derive(Default)]
struct KeyState {
    minute: i64,
    requests: u64,
    tokens: u64,
    /// Start of the spend period `spent` belongs to; None until loaded.
    period_start: Option<i64>,
    spent: i64,
    held: i64,
}

pub struct Limiter {
    store: Arc<dyn Store>,
    clock: SharedClock,
    keys: Mutex<HashMap<String, Arc<Mutex<KeyState>>>>,
    auth_failures: Mutex<HashMap<IpAddr, (i64, u32)>>,
    auth_failures_per_minute: u32,
}

/// A request admitted under its key's limits; settle it with the real tokens and cost.
pub struct Permit {
    state: Option<Arc<Mutex<KeyState>>>,
    spend_hold: i64,
    done: bool,
    /// The key's rate windows, for the response's `x-ratelimit-*` headers.
    pub rate: RateStatus,
}

impl Permit {
    pub fn settle(mut self, tokens: u64, cost_nanos: i64, now_ms: i64) {
        self.done = true;
        if let Some(state) = &self.state {
            let mut s = state.lock();
            s.held -= self.spend_hold;
            s.spent = s.spent.saturating_add(cost_nanos);
            if s.minute == now_ms.div_euclid(MINUTE_MS) {
                s.tokens = s.tokens.saturating_add(tokens);
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            if let Some(state) = &self.state {
                state.lock().held -= self.spend_hold;
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

impl Limiter {
    pub fn new(store: Arc<dyn Store>, clock: SharedClock, auth_failures_per_minute: u32) -> Self {
        Self {
            store,
            clock,
            keys: Mutex::new(HashMap::new()),
            auth_failures: Mutex::new(HashMap::new()),
            auth_failures_per_minute,
        }
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
        let now = self.clock.now_ms();
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
                done: false,
                rate: RateStatus::default(),
            });
        }
        let state = self
            .keys
            .lock()
            .entry(caller.key_id.clone())
            .or_default()
            .clone();
        let period = l.spend_period.unwrap_or(Period::Total);
        let pstart = period_start(period, now);
        if l.spend_limit_nanos.is_some() && state.lock().period_start != Some(pstart) {
            // Once per key and period: what the key already spent in it (hour-aligned rollups).
            let spent = self.store.key_spend_since(&caller.key_id, pstart).await?;
            let mut s = state.lock();
            if s.period_start != Some(pstart) {
                s.period_start = Some(pstart);
                s.spent = spent;
            }
        }
        let mut s = state.lock();
        let minute = now.div_euclid(MINUTE_MS);
        if s.minute != minute {
            s.minute = minute;
            s.requests = 0;
            s.tokens = 0;
        }
        let reset_minute = (minute + 1) * MINUTE_MS;
        let reset_secs = (reset_minute - now + 999) / 1000;
        let headers = RateStatus {
            requests: l.rpm_limit.map(|rpm| RateWindow {
                limit: rpm,
                remaining: rpm.saturating_sub(s.requests + 1),
                reset_secs,
            }),
            tokens: l.tpm_limit.map(|tpm| RateWindow {
                limit: tpm,
                remaining: tpm.saturating_sub(s.tokens),
                reset_secs,
            }),
        };
        if let Some(rpm) = l.rpm_limit {
            if s.requests >= rpm {
                return Err(limited(
                    "requests-per-minute",
                    rpm.to_string(),
                    reset_minute,
                    now,
                    headers,
                ));
            }
        }
        if let Some(tpm) = l.tpm_limit {
            if s.tokens >= tpm {
                return Err(limited(
                    "tokens-per-minute",
                    tpm.to_string(),
                    reset_minute,
                    now,
                    headers,
                ));
            }
        }
        let mut spend_hold = 0;
        if let Some(limit) = l.spend_limit_nanos {
            if s.spent
                .saturating_add(s.held)
                .saturating_add(max_cost_nanos)
                > limit
            {
                let reset = period_end(period, now).unwrap_or(i64::MAX);
                let what = format!("{} spend", period.as_str());
                let shown = nanos_to_usd_string(limit);
                if reset == i64::MAX {
                    let mut err = DomainError::new(
                        Code::RateLimited,
                        format!(
                            "total spend limit of {shown} USD reached for this key (used {} USD)",
                            nanos_to_usd_string(s.spent)
                        ),
                    );
                    err.rate = Some(Box::new(headers));
                    return Err(err);
                }
                return Err(limited(&what, format!("{shown} USD"), reset, now, headers));
            }
            spend_hold = max_cost_nanos;
            s.held += spend_hold;
        }
        s.requests += 1;
        drop(s);
        Ok(Permit {
            state: Some(state),
            spend_hold,
            done: false,
            rate: headers,
        })
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

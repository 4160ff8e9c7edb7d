//! Per-key limits (requests and tokens per minute, spend per period, expiry, model allow-list)
//! and the brake on repeated authentication failures. Counters live in memory, per process;
//! spend in the current period is read from the rollups once per key and period.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{Datelike, TimeZone, Utc};
use parking_lot::Mutex;

use crate::auth::Caller;
use crate::clock::SharedClock;
use crate::error::{ApiError, ErrorCode};
use crate::ledger::{KeyLimits, Period, Store};

const MINUTE_MS: i64 = 60_000;

/// Start of the UTC period containing `now_ms`.
pub fn period_start(period: Period, now_ms: i64) -> i64 {
    let Some(now) = Utc.timestamp_millis_opt(now_ms).single() else {
        return now_ms;
    };
    let day = now.date_naive();
    let start = match period {
        Period::Daily => day,
        Period::Weekly => day - chrono::Days::new(u64::from(day.weekday().num_days_from_monday())),
        Period::Monthly => day.with_day(1).unwrap_or(day),
        Period::Total => return 0,
    };
    start
        .and_hms_opt(0, 0, 0)
        .map_or(now_ms, |t| t.and_utc().timestamp_millis())
}

/// Start of the next period (when a spend limit resets).
pub fn period_end(period: Period, now_ms: i64) -> Option<i64> {
    let start = Utc
        .timestamp_millis_opt(period_start(period, now_ms))
        .single()?;
    let next = match period {
        Period::Daily => start + chrono::Duration::days(1),
        Period::Weekly => start + chrono::Duration::days(7),
        Period::Monthly => start.checked_add_months(chrono::Months::new(1))?,
        Period::Total => return None,
    };
    Some(next.timestamp_millis())
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
    /// `x-ratelimit-*` headers to send with the response.
    pub headers: Vec<(&'static str, String)>,
}

impl Permit {
    pub fn settle(mut self, tokens: u64, cost_nanos: i64, now_ms: i64) {
        self.done = true;
        if let Some(state) = &self.state {
            let mut s = state.lock();
            s.held -= self.spend_hold;
            s.spent += cost_nanos;
            if s.minute == now_ms.div_euclid(MINUTE_MS) {
                s.tokens += tokens;
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

fn limited(
    what: &str,
    limit: String,
    reset_ms: i64,
    now_ms: i64,
    headers: Vec<(&'static str, String)>,
) -> ApiError {
    let secs = ((reset_ms - now_ms).max(0) + 999) / 1000;
    let at = Utc
        .timestamp_millis_opt(reset_ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let mut err = ApiError::new(
        ErrorCode::RateLimited,
        format!("{what} limit of {limit} reached for this key; it resets at {at} (in {secs}s)"),
    );
    err.headers = headers;
    err.headers.push(("retry-after", secs.to_string()));
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
    ) -> Result<Permit, ApiError> {
        let l: &KeyLimits = &caller.limits;
        let now = self.clock.now_ms();
        if l.expires_at_ms.is_some_and(|e| e <= now) {
            return Err(ApiError::new(
                ErrorCode::ApiKeyInactive,
                "this API key has expired",
            ));
        }
        if let Some(allowed) = &l.allowed_models {
            if !allowed.iter().any(|m| m == model) {
                return Err(ApiError::new(
                    ErrorCode::PermissionDenied,
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
                headers: Vec::new(),
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
        let mut headers = Vec::new();
        if let Some(rpm) = l.rpm_limit {
            headers.push(("x-ratelimit-limit-requests", rpm.to_string()));
            headers.push((
                "x-ratelimit-remaining-requests",
                rpm.saturating_sub(s.requests + 1).to_string(),
            ));
            headers.push((
                "x-ratelimit-reset-requests",
                format!("{}s", (reset_minute - now + 999) / 1000),
            ));
        }
        if let Some(tpm) = l.tpm_limit {
            headers.push(("x-ratelimit-limit-tokens", tpm.to_string()));
            headers.push((
                "x-ratelimit-remaining-tokens",
                tpm.saturating_sub(s.tokens).to_string(),
            ));
            headers.push((
                "x-ratelimit-reset-tokens",
                format!("{}s", (reset_minute - now + 999) / 1000),
            ));
        }
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
            if s.spent + s.held + max_cost_nanos > limit {
                let reset = period_end(period, now).unwrap_or(i64::MAX);
                let what = format!("{} spend", period.as_str());
                let shown = crate::metering::money::nanos_to_usd_string(limit);
                if reset == i64::MAX {
                    let mut err = ApiError::new(
                        ErrorCode::RateLimited,
                        format!(
                            "total spend limit of {shown} USD reached for this key (used {} USD)",
                            crate::metering::money::nanos_to_usd_string(s.spent)
                        ),
                    );
                    err.headers = headers;
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
            headers,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn periods_follow_utc_calendar_boundaries() {
        // 2026-01-01 is a Thursday; its ISO week began Monday 2025-12-29.
        assert_eq!(
            period_start(Period::Weekly, ms("2026-01-01T12:00:00Z")),
            ms("2025-12-29T00:00:00Z")
        );
        assert_eq!(
            period_start(Period::Weekly, ms("2025-12-29T00:00:00Z")),
            ms("2025-12-29T00:00:00Z")
        );
        assert_eq!(
            period_start(Period::Weekly, ms("2025-12-28T23:59:59.999Z")),
            ms("2025-12-22T00:00:00Z")
        );
        assert_eq!(
            period_start(Period::Daily, ms("2028-02-29T23:59:59.999Z")),
            ms("2028-02-29T00:00:00Z")
        );
        assert_eq!(
            period_end(Period::Daily, ms("2028-02-29T23:59:59.999Z")),
            Some(ms("2028-03-01T00:00:00Z"))
        );
        assert_eq!(
            period_start(Period::Monthly, ms("2028-02-29T10:00:00Z")),
            ms("2028-02-01T00:00:00Z")
        );
        assert_eq!(
            period_end(Period::Monthly, ms("2026-01-31T10:00:00Z")),
            Some(ms("2026-02-01T00:00:00Z"))
        );
        assert_eq!(
            period_end(Period::Monthly, ms("2026-12-31T23:59:59.999Z")),
            Some(ms("2027-01-01T00:00:00Z"))
        );
        assert_eq!(period_end(Period::Total, 5), None);
    }
}

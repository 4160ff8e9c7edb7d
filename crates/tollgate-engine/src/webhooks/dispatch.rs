//! Delivers the outbox: claims due deliveries (so replicas share the work and never send one
//! attempt twice at once), POSTs each signed event, and records how it went, with retries on
//! the schedule in `tollgate_core::webhook`. It runs on its own tasks: a slow or dead receiver
//! never touches the proxy's hot path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tollgate_core::webhook::{next_attempt, AttemptOutcome, Claimed, DeliveryState};

use super::{guard, sign, Webhooks};

/// Claims per round; each runs on its own task, bounded per endpoint.
const CLAIM_BATCH: usize = 32;
/// How much of a receiver's answer is read (the rest is not waited for).
const MAX_RESPONSE_BYTES: usize = 4096;
/// A claim outlives an attempt by far, so only a dead dispatcher's claims are taken over.
const CLAIM_MS: i64 = 5 * 60 * 1000;
/// Claimed deliveries held by this process (in flight or waiting for their endpoint's slot) at
/// most: a dead receiver with a long queue must not make it claim the whole outbox.
const MAX_HELD: usize = 1024;
/// Finished history is pruned this often.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub struct Dispatcher {
    hooks: Arc<Webhooks>,
    client: reqwest::Client,
    in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
    held: Arc<Semaphore>,
}

impl Dispatcher {
    pub(crate) fn start(hooks: Arc<Webhooks>) {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(hooks.cfg.timeout_secs))
            .connect_timeout(Duration::from_secs(hooks.cfg.timeout_secs.min(10)))
            .dns_resolver(guard::resolver(hooks.cfg.allow_private_targets))
            .user_agent("tollgate-webhooks/1")
            .build();
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhook dispatcher not started");
                return;
            }
        };
        let d = Arc::new(Self {
            hooks,
            client,
            in_flight: Mutex::new(HashMap::new()),
            held: Arc::new(Semaphore::new(MAX_HELD)),
        });
        tokio::spawn(async move { d.run().await });
    }

    async fn run(self: Arc<Self>) {
        let wake = self.hooks.wake.clone();
        let mut pruned: Option<Instant> = None;
        loop {
            if pruned.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                pruned = Some(Instant::now());
                self.prune().await;
            }
            let now = self.hooks.clock.now_ms();
            let room = self.held.available_permits().min(CLAIM_BATCH);
            let claimed = if room == 0 {
                Ok(Vec::new())
            } else {
                let until = now.saturating_add(CLAIM_MS);
                self.hooks.store.claim_deliveries(now, until, room).await
            };
            match claimed {
                Ok(claims) => {
                    let full = room > 0 && claims.len() == room;
                    for c in claims {
                        let Ok(permit) = self.held.clone().try_acquire_owned() else {
                            break; // not reached: `room` permits were free; the claim expires
                        };
                        let d = self.clone();
                        let until = now.saturating_add(CLAIM_MS);
                        tokio::spawn(async move {
                            d.deliver(c, until).await;
                            drop(permit);
                        });
                    }
                    if full {
                        continue;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not claim webhook deliveries"),
            }
            // Woken by a new event, or a second later for retries that fell due.
            let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
        }
    }

    fn endpoint_slots(&self, webhook_id: &str) -> Arc<Semaphore> {
        self.in_flight
            .lock()
            .entry(webhook_id.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.hooks.cfg.max_in_flight_per_endpoint)))
            .clone()
    }

    /// Forgets deliveries finished more than `webhooks.history_days` ago.
    async fn prune(&self) {
        let days = i64::from(self.hooks.cfg.history_days);
        let before = self
            .hooks
            .clock
            .now_ms()
            .saturating_sub(days.saturating_mul(86_400_000));
        match self.hooks.store.prune_webhook_history(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "pruned webhook history"),
            Err(e) => tracing::warn!(error = %e, "could not prune webhook history"),
        }
    }

    async fn deliver(&self, c: Claimed, claimed_until_ms: i64) {
        let slots = self.endpoint_slots(&c.webhook.id);
        let Ok(_slot) = slots.acquire_owned().await else {
            return;
        };
        // Waited so long for the endpoint that the claim could run out mid-attempt: another
        // dispatcher may take it over then, so leave it to the claim's expiry (never two
        // attempts of one delivery at once).
        let attempt_ms = i64::try_from(self.hooks.cfg.timeout_secs)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000);
        if self.hooks.clock.now_ms().saturating_add(attempt_ms) >= claimed_until_ms {
            return;
        }
        let outcome = self.attempt(&c).await;
        if let Some(counter) = self.hooks.attempts.get() {
            counter.count(match (outcome.state, outcome.disable.is_some()) {
                (_, true) => "disabled",
                (DeliveryState::Succeeded, _) => "succeeded",
                (DeliveryState::Pending, _) => "retrying",
                (DeliveryState::Failed, _) => "failed",
            });
        }
        if let Err(e) = self
            .hooks
            .store
            .finish_attempt(&c.delivery.id, outcome)
            .await
        {
            // The claim runs out and the delivery is tried again: at least once.
            tracing::warn!(error = %e, delivery = %c.delivery.id, "could not record a webhook attempt");
        }
    }

    async fn attempt(&self, c: &Claimed) -> AttemptOutcome {
        let started = Instant::now();
        let now_ms = self.hooks.clock.now_ms();
        let attempts = c.delivery.attempts.saturating_add(1);
        let result = self.send(c, now_ms).await;
        let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (status, error, retry_after) = match result {
            Ok((status, retry_after)) => (
                Some(status),
                (!(200..300).contains(&status)).then(|| format!("HTTP {status}")),
                retry_after,
            ),
            Err(e) => (None, Some(e), None),
        };
        let mut o = AttemptOutcome {
            at_ms: now_ms,
            status,
            latency_ms,
            error,
            state: DeliveryState::Succeeded,
            next_attempt_at_ms: None,
            disable: None,
        };
        if o.error.is_none() {
            return o;
        }
        if status == Some(410) {
            o.state = DeliveryState::Failed;
            o.disable = Some("the endpoint answered 410 Gone".into());
            return o;
        }
        let failing_ms = now_ms - c.webhook.failing_since_ms.unwrap_or(now_ms);
        let limit_ms = i64::try_from(self.hooks.cfg.disable_after_failing_hours)
            .unwrap_or(i64::MAX / 3_600_000)
            .saturating_mul(3_600_000);
        if failing_ms >= limit_ms {
            o.state = DeliveryState::Failed;
            o.disable = Some(format!(
                "every delivery failed for {} hours (webhooks.disable_after_failing_hours); last: {}",
                self.hooks.cfg.disable_after_failing_hours,
                o.error.as_deref().unwrap_or("")
            ));
            return o;
        }
        match next_attempt(now_ms, attempts, retry_after) {
            Some(next) => {
                o.state = DeliveryState::Pending;
                o.next_attempt_at_ms = Some(next);
            }
            None => o.state = DeliveryState::Failed,
        }
        o
    }

    /// One POST; the status and any `Retry-After` seconds, or why it did not get one.
    async fn send(&self, c: &Claimed, now_ms: i64) -> Result<(u16, Option<i64>), String> {
        let w = &c.webhook;
        let url = url::Url::parse(&w.url).map_err(|e| format!("bad url: {e}"))?;
        // Names are checked by the resolver at connection; an address in the URL here.
        if let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = url.host() {
            guard::check_target(
                url.host_str().unwrap_or_default(),
                self.hooks.cfg.allow_private_targets,
            )
            .await?;
        }
        let key = self.hooks.open(&w.id, &w.secret).ok_or(
            "the endpoint's secret cannot be opened (was security.encryption_key changed?)",
        )?;
        let ts = now_ms.div_euclid(1000);
        let id = &c.delivery.event_id;
        let mut sig = sign::signature(&key, id, ts, &c.payload);
        if let (Some(prev), Some(until)) = (&w.previous_secret, w.previous_until_ms) {
            if now_ms < until {
                if let Some(old) = self.hooks.open(&w.id, prev) {
                    sig.push(' ');
                    sig.push_str(&sign::signature(&old, id, ts, &c.payload));
                }
            }
        }
        let resp = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id.as_str())
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(c.payload.clone())
            .send()
            .await
            .map_err(describe)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok());
        // Read a little of the answer, never all of a hostile one.
        let mut body = resp.bytes_stream();
        let mut read = 0usize;
        while read < MAX_RESPONSE_BYTES {
            match body.next().await {
                Some(Ok(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
        Ok((status, retry_after))
    }
}

fn describe(e: reqwest::Error) -> String {
    use std::error::Error;
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

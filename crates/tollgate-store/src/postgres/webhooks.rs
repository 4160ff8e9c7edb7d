//! Webhook endpoints and their outbox on PostgreSQL. Replicas share the dispatching: a claim
//! takes due deliveries `FOR UPDATE SKIP LOCKED` and marks them claimed, so two replicas never
//! hold one delivery at once.

use async_trait::async_trait;
use tokio_postgres::Row;
use tollgate_core::id::new_id;
use tollgate_core::store::{AttemptRow, WebhookStore};
use tollgate_core::webhook::{
    AttemptOutcome, Claimed, Delivery, DeliveryState, Event, EventType, SealedSecret, Webhook,
};
use tollgate_core::StoreError;

use super::conn::classify;
use super::rows::get;
use super::PgStore;

const HOOK_COLUMNS: &str = "id, account_id, url, events, settings, active, disabled_reason, \
     secret_nonce, secret_ciphertext, previous_nonce, previous_ciphertext, previous_until_ms, \
     failing_since_ms, created_at_ms";

const DELIVERY_COLUMNS: &str = "id, webhook_id, event_id, event_type, state, attempts, \
     next_attempt_at_ms, last_attempt_at_ms, last_status, last_latency_ms, last_error, created_at_ms";

fn json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::corrupt(format!("{what}: {e}")))
}

fn hook_from_row(r: &Row) -> Result<Webhook, StoreError> {
    let events: String = get(r, 3)?;
    let settings: String = get(r, 4)?;
    let previous = match (
        get::<Option<Vec<u8>>>(r, 9)?,
        get::<Option<Vec<u8>>>(r, 10)?,
    ) {
        (Some(nonce), Some(ciphertext)) => Some(SealedSecret { nonce, ciphertext }),
        _ => None,
    };
    Ok(Webhook {
        id: get(r, 0)?,
        account_id: get(r, 1)?,
        url: get(r, 2)?,
        events: json(&events, "webhooks.events")?,
        settings: json(&settings, "webhooks.settings")?,
        active: get(r, 5)?,
        disabled_reason: get(r, 6)?,
        secret: SealedSecret {
            nonce: get(r, 7)?,
            ciphertext: get(r, 8)?,
        },
        previous_secret: previous,
        previous_until_ms: get(r, 11)?,
        failing_since_ms: get(r, 12)?,
        created_at_ms: get(r, 13)?,
    })
}

fn event_type(s: &str) -> Result<EventType, StoreError> {
    EventType::parse(s).ok_or_else(|| StoreError::corrupt(format!("event type {s}")))
}

fn state(s: &str) -> Result<DeliveryState, StoreError> {
    DeliveryState::parse(s).ok_or_else(|| StoreError::corrupt(format!("delivery state {s}")))
}

fn u16_of(v: Option<i32>) -> Option<u16> {
    v.and_then(|s| u16::try_from(s).ok())
}

fn delivery_from_row(r: &Row) -> Result<Delivery, StoreError> {
    let kind: String = get(r, 3)?;
    let st: String = get(r, 4)?;
    let attempts: i32 = get(r, 5)?;
    Ok(Delivery {
        id: get(r, 0)?,
        webhook_id: get(r, 1)?,
        event_id: get(r, 2)?,
        event_type: event_type(&kind)?,
        state: state(&st)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at_ms: get(r, 6)?,
        last_attempt_at_ms: get(r, 7)?,
        last_status: u16_of(get(r, 8)?),
        last_latency_ms: get(r, 9)?,
        last_error: get(r, 10)?,
        created_at_ms: get(r, 11)?,
    })
}

fn encode(w: &Webhook) -> Result<(String, String), StoreError> {
    let events =
        serde_json::to_string(&w.events).map_err(|e| StoreError::invalid(e.to_string()))?;
    let settings =
        serde_json::to_string(&w.settings).map_err(|e| StoreError::invalid(e.to_string()))?;
    Ok((events, settings))
}

/// Writes events and their deliveries inside the caller's transaction (the outbox and the
/// change that caused them commit together).
pub(crate) async fn enqueue_tx(
    tx: &tokio_postgres::Transaction<'_>,
    events: &[Event],
) -> Result<usize, StoreError> {
    let mut written = 0;
    for e in events {
        let n = tx
            .execute(
                "INSERT INTO webhook_events (id, account_id, type, dedupe_key, payload, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[&e.id, &e.account_id, &e.kind.as_str(), &e.dedupe_key, &e.payload, &e.created_at_ms],
            )
            .await
            .map_err(classify)?;
        if n == 0 {
            continue;
        }
        written += 1;
        let rows = tx
            .query(
                &format!(
                    "SELECT {HOOK_COLUMNS} FROM webhooks WHERE account_id = $1 AND active \
                     AND ($2::text IS NULL OR id = $2)"
                ),
                &[&e.account_id, &e.webhook_id],
            )
            .await
            .map_err(classify)?;
        for row in &rows {
            let h = hook_from_row(row)?;
            if !h.wants(e.kind) {
                continue;
            }
            tx.execute(
                "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, state, \
                 next_attempt_at_ms, created_at_ms) VALUES ($1, $2, $3, $4, 'pending', $5, $5)",
                &[
                    &new_id("whd", 10),
                    &h.id,
                    &e.id,
                    &e.kind.as_str(),
                    &e.created_at_ms,
                ],
            )
            .await
            .map_err(classify)?;
        }
    }
    Ok(written)
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn create_webhook(&self, w: Webhook) -> Result<(), StoreError> {
        let (events, settings) = encode(&w)?;
        let prev = w.previous_secret.as_ref();
        let c = self.client().await?;
        c.execute(
            &format!(
                "INSERT INTO webhooks ({HOOK_COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            ),
            &[
                &w.id,
                &w.account_id,
                &w.url,
                &events,
                &settings,
                &w.active,
                &w.disabled_reason,
                &w.secret.nonce,
                &w.secret.ciphertext,
                &prev.map(|p| &p.nonce),
                &prev.map(|p| &p.ciphertext),
                &w.previous_until_ms,
                &w.failing_since_ms,
                &w.created_at_ms,
            ],
        )
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn get_webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!("SELECT {HOOK_COLUMNS} FROM webhooks WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(classify)?;
        row.as_ref().map(hook_from_row).transpose()
    }

    async fn list_webhooks(&self, account_id: Option<String>) -> Result<Vec<Webhook>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {HOOK_COLUMNS} FROM webhooks \
                     WHERE ($1::text IS NULL OR account_id = $1) ORDER BY created_at_ms, id"
                ),
                &[&account_id],
            )
            .await
            .map_err(classify)?;
        rows.iter().map(hook_from_row).collect()
    }

    async fn update_webhook(&self, w: Webhook) -> Result<bool, StoreError> {
        let (events, settings) = encode(&w)?;
        let prev = w.previous_secret.as_ref();
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE webhooks SET url = $2, events = $3, settings = $4, active = $5, \
                 disabled_reason = $6, secret_nonce = $7, secret_ciphertext = $8, \
                 previous_nonce = $9, previous_ciphertext = $10, previous_until_ms = $11, \
                 failing_since_ms = $12 WHERE id = $1",
                &[
                    &w.id,
                    &w.url,
                    &events,
                    &settings,
                    &w.active,
                    &w.disabled_reason,
                    &w.secret.nonce,
                    &w.secret.ciphertext,
                    &prev.map(|p| &p.nonce),
                    &prev.map(|p| &p.ciphertext),
                    &w.previous_until_ms,
                    &w.failing_since_ms,
                ],
            )
            .await
            .map_err(classify)?;
        Ok(n > 0)
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        tx.execute(
            "DELETE FROM webhook_attempts WHERE delivery_id IN \
             (SELECT id FROM webhook_deliveries WHERE webhook_id = $1)",
            &[&id],
        )
        .await
        .map_err(classify)?;
        tx.execute(
            "DELETE FROM webhook_deliveries WHERE webhook_id = $1",
            &[&id],
        )
        .await
        .map_err(classify)?;
        let n = tx
            .execute("DELETE FROM webhooks WHERE id = $1", &[&id])
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(n > 0)
    }

    async fn enqueue_events(&self, events: Vec<Event>) -> Result<usize, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        let written = enqueue_tx(&tx, &events).await?;
        tx.commit().await.map_err(classify)?;
        Ok(written)
    }

    async fn claim_deliveries(
        &self,
        now_ms: i64,
        claim_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        let rows = tx
            .query(
                &format!(
                    "WITH due AS (SELECT id FROM webhook_deliveries WHERE state = 'pending' \
                       AND next_attempt_at_ms <= $1 AND claimed_until_ms <= $1 \
                       ORDER BY next_attempt_at_ms LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     UPDATE webhook_deliveries d SET claimed_until_ms = $2 FROM due \
                     WHERE d.id = due.id RETURNING {}",
                    DELIVERY_COLUMNS
                        .split(", ")
                        .map(|c| format!("d.{c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                &[&now_ms, &claim_until_ms, &limit],
            )
            .await
            .map_err(classify)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let delivery = delivery_from_row(row)?;
            let payload = tx
                .query_opt(
                    "SELECT payload FROM webhook_events WHERE id = $1",
                    &[&delivery.event_id],
                )
                .await
                .map_err(classify)?;
            let hook = tx
                .query_opt(
                    &format!("SELECT {HOOK_COLUMNS} FROM webhooks WHERE id = $1"),
                    &[&delivery.webhook_id],
                )
                .await
                .map_err(classify)?;
            if let (Some(p), Some(h)) = (payload, hook) {
                out.push(Claimed {
                    delivery,
                    payload: get(&p, 0)?,
                    webhook: hook_from_row(&h)?,
                });
            }
        }
        tx.commit().await.map_err(classify)?;
        Ok(out)
    }

    async fn finish_attempt(&self, delivery_id: &str, o: AttemptOutcome) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        let Some(row) = tx
            .query_opt(
                "SELECT webhook_id, attempts FROM webhook_deliveries WHERE id = $1 FOR UPDATE",
                &[&delivery_id],
            )
            .await
            .map_err(classify)?
        else {
            return Ok(());
        };
        let hook: String = get(&row, 0)?;
        let attempts: i32 = get(&row, 1)?;
        let attempt = attempts.saturating_add(1);
        let status = o.status.map(i32::from);
        tx.execute(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at_ms, status, latency_ms, error) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&delivery_id, &attempt, &o.at_ms, &status, &o.latency_ms, &o.error],
        )
        .await
        .map_err(classify)?;
        tx.execute(
            "UPDATE webhook_deliveries SET attempts = $2, state = $3, next_attempt_at_ms = $4, \
             claimed_until_ms = 0, last_attempt_at_ms = $5, last_status = $6, \
             last_latency_ms = $7, last_error = $8 WHERE id = $1",
            &[
                &delivery_id,
                &attempt,
                &o.state.as_str(),
                &o.next_attempt_at_ms,
                &o.at_ms,
                &status,
                &o.latency_ms,
                &o.error,
            ],
        )
        .await
        .map_err(classify)?;
        if o.state == DeliveryState::Succeeded {
            tx.execute(
                "UPDATE webhooks SET failing_since_ms = NULL WHERE id = $1",
                &[&hook],
            )
            .await
            .map_err(classify)?;
        } else {
            tx.execute(
                "UPDATE webhooks SET failing_since_ms = COALESCE(failing_since_ms, $2) WHERE id = $1",
                &[&hook, &o.at_ms],
            )
            .await
            .map_err(classify)?;
        }
        if let Some(reason) = &o.disable {
            tx.execute(
                "UPDATE webhooks SET active = FALSE, disabled_reason = $2 WHERE id = $1",
                &[&hook, reason],
            )
            .await
            .map_err(classify)?;
            tx.execute(
                "UPDATE webhook_deliveries SET state = 'failed', next_attempt_at_ms = NULL \
                 WHERE webhook_id = $1 AND state = 'pending'",
                &[&hook],
            )
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    async fn list_attempts(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT a.delivery_id, d.event_id, d.event_type, a.attempt, a.at_ms, a.status, \
                 a.latency_ms, a.error, d.state, d.next_attempt_at_ms \
                 FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id \
                 WHERE d.webhook_id = $1 ORDER BY a.at_ms DESC, a.attempt DESC LIMIT $2",
                &[&webhook_id, &limit],
            )
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let kind: String = get(r, 2)?;
                let st: String = get(r, 8)?;
                let attempt: i32 = get(r, 3)?;
                Ok(AttemptRow {
                    delivery_id: get(r, 0)?,
                    event_id: get(r, 1)?,
                    event_type: event_type(&kind)?,
                    attempt: u32::try_from(attempt).unwrap_or(0),
                    at_ms: get(r, 4)?,
                    status: u16_of(get(r, 5)?),
                    latency_ms: get(r, 6)?,
                    error: get(r, 7)?,
                    state: state(&st)?,
                    next_attempt_at_ms: get(r, 9)?,
                })
            })
            .collect()
    }

    async fn retry_delivery(
        &self,
        webhook_id: &str,
        delivery_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at_ms = $3, \
                 claimed_until_ms = 0 WHERE id = $2 AND webhook_id = $1",
                &[&webhook_id, &delivery_id, &now_ms],
            )
            .await
            .map_err(classify)?;
        Ok(n > 0)
    }

    async fn prune_webhook_history(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        tx.execute(
            "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries \
                 WHERE state IN ('succeeded', 'failed') AND created_at_ms < $1)",
            &[&before_ms],
        )
        .await
        .map_err(classify)?;
        let n = tx
            .execute(
                "DELETE FROM webhook_deliveries WHERE state IN ('succeeded', 'failed') AND created_at_ms < $1",
                &[&before_ms],
            )
            .await
            .map_err(classify)?;
        tx.execute(
            "DELETE FROM webhook_events WHERE created_at_ms < $1 AND dedupe_key IS NULL AND NOT EXISTS \
                 (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
            &[&before_ms],
        )
        .await
        .map_err(classify)?;
        tx.execute(
            "UPDATE webhook_events SET payload = '' WHERE created_at_ms < $1 AND payload <> '' AND NOT EXISTS \
                 (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
            &[&before_ms],
        )
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(n)
    }
}

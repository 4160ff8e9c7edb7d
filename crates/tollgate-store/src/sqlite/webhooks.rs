//! Webhook endpoints and their outbox on SQLite. One writer connection serializes every claim,
//! so two dispatchers never hold one delivery at once.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Row};
use tollgate_core::id::new_id;
use tollgate_core::store::{AttemptRow, WebhookStore};
use tollgate_core::webhook::{
    AttemptOutcome, Claimed, Delivery, DeliveryState, Event, EventType, SealedSecret, Webhook,
};
use tollgate_core::StoreError;

use super::conn::Fail;
use super::SqliteStore;

const HOOK_COLUMNS: &str = "id, account_id, url, events, settings, active, disabled_reason, \
     secret_nonce, secret_ciphertext, previous_nonce, previous_ciphertext, previous_until_ms, \
     failing_since_ms, created_at_ms";

const DELIVERY_COLUMNS: &str = "id, webhook_id, event_id, event_type, state, attempts, \
     next_attempt_at_ms, last_attempt_at_ms, last_status, last_latency_ms, last_error, created_at_ms";

fn json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T, Fail> {
    serde_json::from_str(s).map_err(|e| Fail::Store(StoreError::corrupt(format!("{what}: {e}"))))
}

fn hook_from_row(r: &Row<'_>) -> Result<Webhook, Fail> {
    let events: String = r.get(3)?;
    let settings: String = r.get(4)?;
    let previous = match (
        r.get::<_, Option<Vec<u8>>>(9)?,
        r.get::<_, Option<Vec<u8>>>(10)?,
    ) {
        (Some(nonce), Some(ciphertext)) => Some(SealedSecret { nonce, ciphertext }),
        _ => None,
    };
    Ok(Webhook {
        id: r.get(0)?,
        account_id: r.get(1)?,
        url: r.get(2)?,
        events: json(&events, "webhooks.events")?,
        settings: json(&settings, "webhooks.settings")?,
        active: r.get(5)?,
        disabled_reason: r.get(6)?,
        secret: SealedSecret {
            nonce: r.get(7)?,
            ciphertext: r.get(8)?,
        },
        previous_secret: previous,
        previous_until_ms: r.get(11)?,
        failing_since_ms: r.get(12)?,
        created_at_ms: r.get(13)?,
    })
}

fn event_type(s: &str) -> Result<EventType, Fail> {
    EventType::parse(s).ok_or_else(|| Fail::Store(StoreError::corrupt(format!("event type {s}"))))
}

fn state(s: &str) -> Result<DeliveryState, Fail> {
    DeliveryState::parse(s)
        .ok_or_else(|| Fail::Store(StoreError::corrupt(format!("delivery state {s}"))))
}

fn delivery_from_row(r: &Row<'_>) -> Result<Delivery, Fail> {
    let kind: String = r.get(3)?;
    let st: String = r.get(4)?;
    Ok(Delivery {
        id: r.get(0)?,
        webhook_id: r.get(1)?,
        event_id: r.get(2)?,
        event_type: event_type(&kind)?,
        state: state(&st)?,
        attempts: r.get(5)?,
        next_attempt_at_ms: r.get(6)?,
        last_attempt_at_ms: r.get(7)?,
        last_status: r.get(8)?,
        last_latency_ms: r.get(9)?,
        last_error: r.get(10)?,
        created_at_ms: r.get(11)?,
    })
}

fn encode(w: &Webhook) -> Result<(String, String), Fail> {
    let events = serde_json::to_string(&w.events)
        .map_err(|e| Fail::Store(StoreError::invalid(e.to_string())))?;
    let settings = serde_json::to_string(&w.settings)
        .map_err(|e| Fail::Store(StoreError::invalid(e.to_string())))?;
    Ok((events, settings))
}

/// Writes events and their deliveries inside the caller's transaction (the outbox and the
/// change that caused them commit together).
pub(crate) fn enqueue_tx(tx: &rusqlite::Transaction<'_>, events: &[Event]) -> Result<usize, Fail> {
    let mut written = 0;
    for e in events {
        let n = tx.execute(
            "INSERT INTO webhook_events (id, account_id, type, dedupe_key, payload, created_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            params![e.id, e.account_id, e.kind.as_str(), e.dedupe_key, e.payload, e.created_at_ms],
        )?;
        if n == 0 {
            continue;
        }
        written += 1;
        let hooks: Vec<Webhook> = {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {HOOK_COLUMNS} FROM webhooks WHERE account_id = ?1 AND active = 1 \
                 AND (?2 IS NULL OR id = ?2)"
            ))?;
            let mut rows = stmt.query(params![e.account_id, e.webhook_id])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(hook_from_row(r)?);
            }
            out
        };
        for h in hooks.iter().filter(|h| h.wants(e.kind)) {
            tx.execute(
                "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, state, \
                 next_attempt_at_ms, created_at_ms) VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5)",
                params![
                    new_id("whd", 10),
                    h.id,
                    e.id,
                    e.kind.as_str(),
                    e.created_at_ms
                ],
            )?;
        }
    }
    Ok(written)
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_webhook(&self, w: Webhook) -> Result<(), StoreError> {
        self.with_writer(move |c| {
            let (events, settings) = encode(&w)?;
            let prev = w.previous_secret.as_ref();
            c.execute(
                &format!("INSERT INTO webhooks ({HOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
                params![
                    w.id,
                    w.account_id,
                    w.url,
                    events,
                    settings,
                    w.active,
                    w.disabled_reason,
                    w.secret.nonce,
                    w.secret.ciphertext,
                    prev.map(|p| &p.nonce),
                    prev.map(|p| &p.ciphertext),
                    w.previous_until_ms,
                    w.failing_since_ms,
                    w.created_at_ms
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError> {
        let id = id.to_string();
        self.with_reader(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {HOOK_COLUMNS} FROM webhooks WHERE id = ?1"
            ))?;
            let mut rows = stmt.query([id])?;
            match rows.next()? {
                Some(r) => Ok(Some(hook_from_row(r)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list_webhooks(&self, account_id: Option<String>) -> Result<Vec<Webhook>, StoreError> {
        self.with_reader(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {HOOK_COLUMNS} FROM webhooks WHERE (?1 IS NULL OR account_id = ?1) \
                 ORDER BY created_at_ms, id"
            ))?;
            let mut rows = stmt.query([account_id])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(hook_from_row(r)?);
            }
            Ok(out)
        })
        .await
    }

    async fn update_webhook(&self, w: Webhook) -> Result<bool, StoreError> {
        self.with_writer(move |c| {
            let (events, settings) = encode(&w)?;
            let prev = w.previous_secret.as_ref();
            Ok(c.execute(
                "UPDATE webhooks SET url = ?2, events = ?3, settings = ?4, active = ?5, \
                 disabled_reason = ?6, secret_nonce = ?7, secret_ciphertext = ?8, \
                 previous_nonce = ?9, previous_ciphertext = ?10, previous_until_ms = ?11, \
                 failing_since_ms = ?12 WHERE id = ?1",
                params![
                    w.id,
                    w.url,
                    events,
                    settings,
                    w.active,
                    w.disabled_reason,
                    w.secret.nonce,
                    w.secret.ciphertext,
                    prev.map(|p| &p.nonce),
                    prev.map(|p| &p.ciphertext),
                    w.previous_until_ms,
                    w.failing_since_ms
                ],
            )? > 0)
        })
        .await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.with_writer(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM webhook_attempts WHERE delivery_id IN \
                 (SELECT id FROM webhook_deliveries WHERE webhook_id = ?1)",
                [&id],
            )?;
            tx.execute(
                "DELETE FROM webhook_deliveries WHERE webhook_id = ?1",
                [&id],
            )?;
            let n = tx.execute("DELETE FROM webhooks WHERE id = ?1", [&id])?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn enqueue_events(&self, events: Vec<Event>) -> Result<usize, StoreError> {
        self.with_writer(move |c| {
            let tx = c.transaction()?;
            let written = enqueue_tx(&tx, &events)?;
            tx.commit()?;
            Ok(written)
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        now_ms: i64,
        claim_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        self.with_writer(move |c| {
            let tx = c.transaction()?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let ids: Vec<String> = {
                let mut stmt = tx.prepare_cached(
                    "UPDATE webhook_deliveries SET claimed_until_ms = ?2 WHERE id IN \
                     (SELECT id FROM webhook_deliveries WHERE state = 'pending' \
                      AND next_attempt_at_ms <= ?1 AND claimed_until_ms <= ?1 \
                      ORDER BY next_attempt_at_ms LIMIT ?3) RETURNING id",
                )?;
                let rows = stmt.query_map(params![now_ms, claim_until_ms, limit], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let delivery = tx
                    .query_row(
                        &format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?1"),
                        [&id],
                        |r| Ok(delivery_from_row(r)),
                    )
                    .map_err(Fail::from)??;
                let payload: Option<String> = tx
                    .query_row(
                        "SELECT payload FROM webhook_events WHERE id = ?1",
                        [&delivery.event_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                let webhook = tx
                    .query_row(
                        &format!("SELECT {HOOK_COLUMNS} FROM webhooks WHERE id = ?1"),
                        [&delivery.webhook_id],
                        |r| Ok(hook_from_row(r)),
                    )
                    .optional()?
                    .transpose()?;
                if let (Some(payload), Some(webhook)) = (payload, webhook) {
                    out.push(Claimed {
                        delivery,
                        payload,
                        webhook,
                    });
                }
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn finish_attempt(&self, delivery_id: &str, o: AttemptOutcome) -> Result<(), StoreError> {
        let id = delivery_id.to_string();
        self.with_writer(move |c| {
            let tx = c.transaction()?;
            let found: Option<(String, u32)> = tx
                .query_row(
                    "SELECT webhook_id, attempts FROM webhook_deliveries WHERE id = ?1",
                    [&id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((hook, attempts)) = found else {
                return Ok(());
            };
            let attempt = attempts + 1;
            tx.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempt, at_ms, status, latency_ms, error) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, attempt, o.at_ms, o.status, o.latency_ms, o.error],
            )?;
            tx.execute(
                "UPDATE webhook_deliveries SET attempts = ?2, state = ?3, next_attempt_at_ms = ?4, \
                 claimed_until_ms = 0, last_attempt_at_ms = ?5, last_status = ?6, \
                 last_latency_ms = ?7, last_error = ?8 WHERE id = ?1",
                params![
                    id,
                    attempt,
                    o.state.as_str(),
                    o.next_attempt_at_ms,
                    o.at_ms,
                    o.status,
                    o.latency_ms,
                    o.error
                ],
            )?;
            if o.state == DeliveryState::Succeeded {
                tx.execute(
                    "UPDATE webhooks SET failing_since_ms = NULL WHERE id = ?1",
                    [&hook],
                )?;
            } else {
                tx.execute(
                    "UPDATE webhooks SET failing_since_ms = COALESCE(failing_since_ms, ?2) WHERE id = ?1",
                    params![hook, o.at_ms],
                )?;
            }
            if let Some(reason) = &o.disable {
                tx.execute(
                    "UPDATE webhooks SET active = 0, disabled_reason = ?2 WHERE id = ?1",
                    params![hook, reason],
                )?;
                tx.execute(
                    "UPDATE webhook_deliveries SET state = 'failed', next_attempt_at_ms = NULL \
                     WHERE webhook_id = ?1 AND state = 'pending'",
                    [&hook],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn list_attempts(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        let id = webhook_id.to_string();
        self.with_reader(move |c| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut stmt = c.prepare_cached(
                "SELECT a.delivery_id, d.event_id, d.event_type, a.attempt, a.at_ms, a.status, \
                 a.latency_ms, a.error, d.state, d.next_attempt_at_ms \
                 FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id \
                 WHERE d.webhook_id = ?1 ORDER BY a.at_ms DESC, a.attempt DESC LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![id, limit])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let kind: String = r.get(2)?;
                let st: String = r.get(8)?;
                out.push(AttemptRow {
                    delivery_id: r.get(0)?,
                    event_id: r.get(1)?,
                    event_type: event_type(&kind)?,
                    attempt: r.get(3)?,
                    at_ms: r.get(4)?,
                    status: r.get(5)?,
                    latency_ms: r.get(6)?,
                    error: r.get(7)?,
                    state: state(&st)?,
                    next_attempt_at_ms: r.get(9)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn retry_delivery(
        &self,
        webhook_id: &str,
        delivery_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let (hook, id) = (webhook_id.to_string(), delivery_id.to_string());
        self.with_writer(move |c| {
            Ok(c.execute(
                "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at_ms = ?3, \
                 claimed_until_ms = 0 WHERE id = ?2 AND webhook_id = ?1",
                params![hook, id, now_ms],
            )? > 0)
        })
        .await
    }

    async fn prune_webhook_history(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.with_writer(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries \
                 WHERE state IN ('succeeded', 'failed') AND created_at_ms < ?1)",
                params![before_ms],
            )?;
            let n = tx.execute(
                "DELETE FROM webhook_deliveries WHERE state IN ('succeeded', 'failed') AND created_at_ms < ?1",
                params![before_ms],
            )?;
            tx.execute(
                "DELETE FROM webhook_events WHERE created_at_ms < ?1 AND dedupe_key IS NULL AND NOT EXISTS \
                 (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
                params![before_ms],
            )?;
            tx.execute(
                "UPDATE webhook_events SET payload = '' WHERE created_at_ms < ?1 AND payload <> '' AND NOT EXISTS \
                 (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
                params![before_ms],
            )?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }
}

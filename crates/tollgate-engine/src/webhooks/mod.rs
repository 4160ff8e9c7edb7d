//! Webhooks: the endpoints an account registers (validated, secrets sealed at rest), the events
//! the rest of the engine emits into the store's outbox, and the dispatcher that delivers them
//! (`dispatch.rs`), signed as Standard Webhooks (`sign.rs`), never to private targets unless
//! allowed (`guard.rs`).

mod dispatch;
pub mod events;
pub mod guard;
pub mod sign;
mod watch;

pub use events::Position;
pub use watch::KeySpend;

use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;
use tollgate_core::clock::SharedClock;
use tollgate_core::config::WebhooksConfig;
use tollgate_core::id::new_id;
use tollgate_core::store::{AttemptRow, Store};
use tollgate_core::webhook::{Event, EventType, SealedSecret, Webhook, WebhookSettings};
use tollgate_core::{Code, DomainError};

pub use dispatch::Dispatcher;

/// An endpoint as the API shows it (the secret only when it is created or rotated).
#[derive(Debug, Serialize)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<&'static str>,
    pub settings: SettingsView,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SettingsView {
    /// A number when one threshold is set (the seed's shape), a list for several.
    pub usage_threshold_percent: Value,
    pub credits_low_threshold: Option<i64>,
}

/// One attempt, as `GET /v1/webhooks/{id}/deliveries` lists it.
#[derive(Debug, Serialize)]
pub struct AttemptView {
    pub delivery_id: String,
    pub event_id: String,
    pub event_type: &'static str,
    pub attempt: u32,
    pub attempted_at: String,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub state: &'static str,
    pub next_retry_at: Option<String>,
}

pub(crate) fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn view(w: &Webhook, secret: Option<String>) -> WebhookView {
    let t = &w.settings.usage_threshold_percent;
    WebhookView {
        id: w.id.clone(),
        url: w.url.clone(),
        events: w.events.iter().map(|e| e.as_str()).collect(),
        settings: SettingsView {
            usage_threshold_percent: match t.as_slice() {
                [] => Value::Null,
                [one] => Value::from(*one),
                many => Value::from(many.to_vec()),
            },
            credits_low_threshold: w.settings.credits_low_threshold,
        },
        active: w.active,
        disabled_reason: w.disabled_reason.clone(),
        failing_since: w.failing_since_ms.map(iso),
        created_at: iso(w.created_at_ms),
        secret,
    }
}

fn invalid(param: &str, msg: impl Into<String>) -> DomainError {
    DomainError::invalid(param, msg)
}

/// Parses and checks a webhook URL: http or https, a host, no credentials.
fn parse_url(v: &Value) -> Result<url::Url, DomainError> {
    let s = v
        .as_str()
        .ok_or_else(|| invalid("url", "url must be a string"))?;
    if s.len() > 2048 {
        return Err(invalid("url", "url is longer than 2048 characters"));
    }
    let u = url::Url::parse(s).map_err(|e| invalid("url", format!("url is not a URL: {e}")))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(invalid("url", "url must be http or https"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url", "url has no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(invalid("url", "url must not carry credentials"));
    }
    Ok(u)
}

fn parse_events(v: &Value) -> Result<Vec<EventType>, DomainError> {
    let list = v
        .as_array()
        .ok_or_else(|| invalid("events", "events must be a list of event types"))?;
    if list.is_empty() {
        return Err(invalid(
            "events",
            "events must name at least one event type",
        ));
    }
    let mut out = Vec::new();
    for e in list {
        let name = e.as_str().unwrap_or_default();
        let kind = EventType::parse(name).ok_or_else(|| {
            invalid(
                "events",
                format!(
                    "unknown event type {e}; known: {}",
                    EventType::ALL.map(EventType::as_str).join(", ")
                ),
            )
        })?;
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    Ok(out)
}

fn parse_settings(v: &Value) -> Result<WebhookSettings, DomainError> {
    let obj = match v {
        Value::Null => return Ok(WebhookSettings::default()),
        Value::Object(o) => o,
        _ => return Err(invalid("settings", "settings must be an object")),
    };
    let mut s = WebhookSettings::default();
    for (k, val) in obj {
        match k.as_str() {
            "usage_threshold_percent" => {
                let items: Vec<&Value> = match val {
                    Value::Null => Vec::new(),
                    Value::Array(a) => a.iter().collect(),
                    one => vec![one],
                };
                for item in items {
                    let p = item
                        .as_u64()
                        .filter(|p| (1..=100).contains(p))
                        .ok_or_else(|| {
                            invalid(
                                "settings.usage_threshold_percent",
                                "usage_threshold_percent must be a whole percent from 1 to 100, or a list of them",
                            )
                        })?;
                    let p = u8::try_from(p).unwrap_or(100);
                    if !s.usage_threshold_percent.contains(&p) {
                        s.usage_threshold_percent.push(p);
                    }
                }
                s.usage_threshold_percent.sort_unstable();
                if s.usage_threshold_percent.len() > 10 {
                    return Err(invalid(
                        "settings.usage_threshold_percent",
                        "at most 10 usage thresholds",
                    ));
                }
            }
            "credits_low_threshold" => {
                s.credits_low_threshold = match val {
                    Value::Null => None,
                    v => Some(v.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
                        invalid(
                            "settings.credits_low_threshold",
                            "credits_low_threshold must be a whole number of credits, 0 or more",
                        )
                    })?),
                };
            }
            other => {
                return Err(invalid(
                    &format!("settings.{other}"),
                    format!(
                        "unknown setting {other}; known: usage_threshold_percent, credits_low_threshold"
                    ),
                ))
            }
        }
    }
    Ok(s)
}

pub struct Webhooks {
    store: Arc<dyn Store>,
    clock: SharedClock,
    cipher: Option<ChaCha20Poly1305>,
    cfg: WebhooksConfig,
    /// Wakes the dispatcher when an event is written.
    wake: Arc<Notify>,
    /// `credits.per_usd`: event amounts are in credits.
    per_usd: i64,
    /// What each account's endpoints watch for (`watch.rs`).
    watches: watch::Watches,
    /// Attempts by result, when metrics are on.
    attempts: std::sync::OnceLock<crate::metrics::AttemptCounter>,
}

impl Webhooks {
    /// `key`: 32 bytes that seal the endpoints' secrets (None: webhooks are off).
    pub fn new(
        store: Arc<dyn Store>,
        clock: SharedClock,
        key: Option<[u8; 32]>,
        cfg: WebhooksConfig,
        per_usd: i64,
    ) -> Self {
        Self {
            store,
            clock,
            cipher: key.map(|k| ChaCha20Poly1305::new(Key::from_slice(&k))),
            cfg,
            wake: Arc::new(Notify::new()),
            per_usd,
            watches: watch::Watches::default(),
            attempts: std::sync::OnceLock::new(),
        }
    }

    /// Counts delivery attempts in `tollgate_webhook_attempts_total` from now on.
    pub fn count_attempts(&self, counter: crate::metrics::AttemptCounter) {
        let _ = self.attempts.set(counter);
    }

    fn cipher(&self) -> Result<&ChaCha20Poly1305, DomainError> {
        self.cipher.as_ref().ok_or_else(|| {
            DomainError::new(
                Code::InvalidRequest,
                "webhooks need security.encryption_key (base64 of 32 bytes) to keep their secrets \
                 sealed; set the same key on every replica",
            )
        })
    }

    fn seal(&self, webhook_id: &str, secret: &str) -> Result<SealedSecret, DomainError> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()?
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: webhook_id.as_bytes(),
                },
            )
            .map_err(|_| DomainError::internal("sealing a webhook secret failed"))?;
        Ok(SealedSecret {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// The secret's key bytes (for signing), or None if it cannot be opened.
    pub(crate) fn open(&self, webhook_id: &str, s: &SealedSecret) -> Option<Vec<u8>> {
        let plain = self
            .cipher
            .as_ref()?
            .decrypt(
                Nonce::from_slice(s.nonce.get(..12)?),
                Payload {
                    msg: &s.ciphertext,
                    aad: webhook_id.as_bytes(),
                },
            )
            .ok()?;
        sign::secret_bytes(std::str::from_utf8(&plain).ok()?)
    }

    /// The endpoint, if it is `account_id`'s (any account's with None: an admin).
    async fn owned(&self, account_id: Option<&str>, id: &str) -> Result<Webhook, DomainError> {
        match self.store.get_webhook(id).await? {
            Some(w) if account_id.is_none_or(|a| a == w.account_id) => Ok(w),
            // Another account's is as absent as one that never was.
            _ => Err(DomainError::not_found(format!("no webhook {id}"))),
        }
    }

    /// `POST /v1/webhooks`: `{url, events, settings?, secret?}`.
    pub async fn create(&self, account_id: &str, body: &Value) -> Result<WebhookView, DomainError> {
        let obj = body.as_object().ok_or_else(|| {
            DomainError::new(Code::InvalidRequest, "the body must be a JSON object")
        })?;
        for k in obj.keys() {
            if !["url", "events", "settings", "secret"].contains(&k.as_str()) {
                return Err(invalid(
                    k,
                    format!("unknown field {k}; known: url, events, settings, secret"),
                ));
            }
        }
        let url = parse_url(obj.get("url").unwrap_or(&Value::Null))?;
        self.check_target(&url).await?;
        let events = parse_events(obj.get("events").unwrap_or(&Value::Null))?;
        let settings = parse_settings(obj.get("settings").unwrap_or(&Value::Null))?;
        let secret = match obj.get("secret") {
            None | Some(Value::Null) => sign::new_secret(),
            Some(Value::String(s)) if sign::secret_bytes(s).is_some() => s.clone(),
            Some(_) => {
                return Err(invalid(
                    "secret",
                    "secret must be whsec_ followed by base64 of 24 to 64 bytes (leave it out to have one generated)",
                ))
            }
        };
        let id = new_id("wh", 8);
        let w = Webhook {
            id: id.clone(),
            account_id: account_id.to_string(),
            url: url.to_string(),
            events,
            settings,
            active: true,
            disabled_reason: None,
            secret: self.seal(&id, &secret)?,
            previous_secret: None,
            previous_until_ms: None,
            failing_since_ms: None,
            created_at_ms: self.clock.now_ms(),
        };
        self.store.create_webhook(w.clone()).await?;
        self.watches.forget(account_id);
        Ok(view(&w, Some(secret)))
    }

    async fn check_target(&self, url: &url::Url) -> Result<(), DomainError> {
        let host = url.host_str().unwrap_or_default();
        guard::check_target(host, self.cfg.allow_private_targets)
            .await
            .map_err(|why| {
                invalid(
                    "url",
                    format!(
                        "{why}: webhooks may not target loopback, private or link-local addresses \
                         (set webhooks.allow_private_targets = true to allow it)"
                    ),
                )
            })
    }

    pub async fn list(&self, account_id: &str) -> Result<Vec<WebhookView>, DomainError> {
        let hooks = self
            .store
            .list_webhooks(Some(account_id.to_string()))
            .await?;
        Ok(hooks.iter().map(|w| view(w, None)).collect())
    }

    pub async fn get(
        &self,
        account_id: Option<&str>,
        id: &str,
    ) -> Result<WebhookView, DomainError> {
        Ok(view(&self.owned(account_id, id).await?, None))
    }

    /// `PATCH /v1/webhooks/{id}`: any of url, events, settings, active. Re-activating clears
    /// why it was disabled.
    pub async fn update(
        &self,
        account_id: Option<&str>,
        id: &str,
        body: &Value,
    ) -> Result<WebhookView, DomainError> {
        let obj = body.as_object().ok_or_else(|| {
            DomainError::new(Code::InvalidRequest, "the body must be a JSON object")
        })?;
        let mut w = self.owned(account_id, id).await?;
        for (k, v) in obj {
            match k.as_str() {
                "url" => {
                    let url = parse_url(v)?;
                    self.check_target(&url).await?;
                    w.url = url.to_string();
                }
                "events" => w.events = parse_events(v)?,
                "settings" => w.settings = parse_settings(v)?,
                "active" => {
                    let active = v
                        .as_bool()
                        .ok_or_else(|| invalid("active", "active must be true or false"))?;
                    if active && !w.active {
                        w.disabled_reason = None;
                        w.failing_since_ms = None;
                    }
                    w.active = active;
                }
                other => {
                    return Err(invalid(
                        other,
                        format!("unknown field {other}; known: url, events, settings, active"),
                    ))
                }
            }
        }
        if !self.store.update_webhook(w.clone()).await? {
            return Err(DomainError::not_found(format!("no webhook {id}")));
        }
        self.watches.forget(&w.account_id);
        Ok(view(&w, None))
    }

    pub async fn delete(&self, account_id: Option<&str>, id: &str) -> Result<(), DomainError> {
        let w = self.owned(account_id, id).await?;
        self.store.delete_webhook(id).await?;
        self.watches.forget(&w.account_id);
        Ok(())
    }

    /// A new secret; the old one also signs for `webhooks.secret_overlap_hours`.
    pub async fn rotate_secret(
        &self,
        account_id: Option<&str>,
        id: &str,
    ) -> Result<WebhookView, DomainError> {
        let mut w = self.owned(account_id, id).await?;
        let secret = sign::new_secret();
        let overlap_ms = i64::try_from(self.cfg.secret_overlap_hours)
            .unwrap_or(i64::MAX / 3_600_000)
            .saturating_mul(3_600_000);
        w.previous_secret = Some(w.secret.clone());
        w.previous_until_ms = Some(self.clock.now_ms().saturating_add(overlap_ms));
        w.secret = self.seal(&w.id, &secret)?;
        self.store.update_webhook(w.clone()).await?;
        Ok(view(&w, Some(secret)))
    }

    /// Sends a `webhook.test` event to this endpoint now.
    pub async fn test(&self, account_id: Option<&str>, id: &str) -> Result<Value, DomainError> {
        let w = self.owned(account_id, id).await?;
        if !w.active {
            return Err(DomainError::new(
                Code::InvalidRequest,
                "this webhook is disabled: activate it first (PATCH {\"active\": true})",
            ));
        }
        let now = self.clock.now_ms();
        let mut e = Event::new(
            new_id("evt", 12),
            &w.account_id,
            EventType::WebhookTest,
            serde_json::json!({
                "account_id": w.account_id,
                "webhook_id": w.id,
                "message": "a test event from tollgate",
            }),
            now,
        );
        e.webhook_id = Some(w.id.clone());
        let event_id = e.id.clone();
        self.emit(vec![e]).await?;
        Ok(serde_json::json!({"event_id": event_id, "type": "webhook.test", "queued": true}))
    }

    pub async fn deliveries(
        &self,
        account_id: Option<&str>,
        id: &str,
        limit: usize,
    ) -> Result<Vec<AttemptView>, DomainError> {
        self.owned(account_id, id).await?;
        let rows = self.store.list_attempts(id, limit).await?;
        Ok(rows.iter().map(attempt_view).collect())
    }

    pub async fn retry(
        &self,
        account_id: Option<&str>,
        id: &str,
        delivery_id: &str,
    ) -> Result<Value, DomainError> {
        self.owned(account_id, id).await?;
        if !self
            .store
            .retry_delivery(id, delivery_id, self.clock.now_ms())
            .await?
        {
            return Err(DomainError::not_found(format!(
                "no delivery {delivery_id} for webhook {id}"
            )));
        }
        self.wake.notify_one();
        Ok(serde_json::json!({"delivery_id": delivery_id, "queued": true}))
    }

    /// Writes events to the outbox and wakes the dispatcher.
    pub async fn emit(&self, events: Vec<Event>) -> Result<usize, DomainError> {
        let n = self.store.enqueue_events(events).await?;
        if n > 0 {
            self.wake.notify_one();
        }
        Ok(n)
    }

    /// An event was written with the change that caused it: deliver it soon.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Writes events a change caused, after that change committed. Logged, never failing the
    /// change (not yet in the change's own transaction: a crash between the two loses them).
    pub async fn emit_logged(&self, events: Vec<Event>) {
        if let Err(e) = self.emit(events).await {
            tracing::warn!(error = %e.message, "could not write webhook events");
        }
    }

    /// As `emit_logged`, without waiting (from a request's path).
    pub fn emit_later(self: &Arc<Self>, events: Vec<Event>) {
        let me = self.clone();
        tokio::spawn(async move { me.emit_logged(events).await });
    }

    /// Starts delivering (one dispatcher per process; replicas share the outbox).
    pub fn start_dispatcher(self: &Arc<Self>) {
        Dispatcher::start(self.clone());
    }
}

fn attempt_view(a: &AttemptRow) -> AttemptView {
    AttemptView {
        delivery_id: a.delivery_id.clone(),
        event_id: a.event_id.clone(),
        event_type: a.event_type.as_str(),
        attempt: a.attempt,
        attempted_at: iso(a.at_ms),
        status_code: a.status,
        latency_ms: a.latency_ms,
        error: a.error.clone(),
        state: a.state.as_str(),
        next_retry_at: a.next_attempt_at_ms.map(iso),
    }
}

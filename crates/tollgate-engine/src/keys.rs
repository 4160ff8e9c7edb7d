//! API keys: issuing (shown once, stored as a SHA-256 hash), and resolving a presented key to
//! its caller. Keys are 256-bit random, so a fast hash is safe and keeps auth in microseconds;
//! validated keys are cached for `server.key_cache_secs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use rand::Rng;
use sha2::{Digest, Sha256};
use tollgate_core::account::{Account, ApiKeyRecord, Caller, KeyLimits, Role};
use tollgate_core::clock::SharedClock;
use tollgate_core::id::new_id;
use tollgate_core::store::Store;
use tollgate_core::{Code, DomainError, StoreError};

#[derive(Clone)]
struct Cached {
    key: ApiKeyRecord,
    limits: Arc<KeyLimits>,
    account_disabled: bool,
    /// When the entry was last re-read, or last tried while the store was away.
    loaded: Instant,
    /// When the store last confirmed it.
    confirmed: Instant,
}

/// How long a cached key is trusted while the store cannot be reached.
const STALE_KEY_MAX: Duration = Duration::from_secs(300);

pub struct KeyService {
    /// Where `api_key.created` / `api_key.revoked` go, once the engine has set it.
    outbox: std::sync::OnceLock<Arc<crate::webhooks::Webhooks>>,
    store: Arc<dyn Store>,
    clock: SharedClock,
    prefix: String,
    ttl: Duration,
    cache: RwLock<HashMap<String, Arc<Cached>>>,
}

/// A newly issued key: the only time the secret exists outside the client.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssuedKey {
    #[serde(flatten)]
    pub record: ApiKeyRecord,
    pub key: String,
}

pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_secret(prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    // 43 base62 characters carry 256 bits.
    let body: String = (0..43)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{body}")
}

impl KeyService {
    pub fn new(store: Arc<dyn Store>, clock: SharedClock, prefix: String, ttl: Duration) -> Self {
        Self {
            outbox: std::sync::OnceLock::new(),
            store,
            clock,
            prefix,
            ttl,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Resolves a presented key (None: the request carried none) to its caller. Every check
    /// that makes a key unusable is here, so every route refuses it alike: unknown, revoked,
    /// expired, or its account disabled.
    /// Reads a key and its account from the store into the cache.
    async fn load(&self, hash: &str) -> Result<Option<Arc<Cached>>, StoreError> {
        let Some(key) = self.store.find_key_by_hash(hash).await? else {
            return Ok(None);
        };
        let account = self.store.get_account(&key.account_id).await?;
        let now = Instant::now();
        let c = Arc::new(Cached {
            account_disabled: account.is_none_or(|a| a.disabled),
            limits: Arc::new(key.limits.clone()),
            key,
            loaded: now,
            confirmed: now,
        });
        self.cache.write().insert(hash.to_string(), c.clone());
        Ok(Some(c))
    }

    pub async fn authenticate(&self, secret: Option<&str>) -> Result<Caller, DomainError> {
        let Some(secret) = secret else {
            return Err(DomainError::new(
                Code::MissingApiKey,
                "no API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
            ));
        };
        self.authenticate_hash(hash_key(secret)).await
    }

    /// `authenticate` for a key known by its SHA-256 hash (a dashboard session keeps only the
    /// hash, not the secret): the same checks, so a session of a key revoked since stops working.
    pub async fn authenticate_hash(&self, hash: String) -> Result<Caller, DomainError> {
        let cached = self.cache.read().get(&hash).cloned();
        let entry = match cached {
            Some(c) if c.loaded.elapsed() < self.ttl => c,
            cached => match self.load(&hash).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    self.cache.write().remove(&hash);
                    return Err(DomainError::new(Code::InvalidApiKey, "invalid API key"));
                }
                // The store is away: a key it confirmed recently stays good (nothing can be
                // revoked while it is away), for at most `STALE_KEY_MAX`, re-tried once a TTL.
                Err(e) if e.is_transient() => match cached {
                    Some(c) if c.confirmed.elapsed() < STALE_KEY_MAX => {
                        let retry_later = Arc::new(Cached {
                            loaded: Instant::now(),
                            ..(*c).clone()
                        });
                        self.cache.write().insert(hash, retry_later.clone());
                        retry_later
                    }
                    _ => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            },
        };
        if entry.key.revoked_at_ms.is_some() {
            return Err(DomainError::new(
                Code::ApiKeyInactive,
                "this API key has been revoked",
            ));
        }
        if entry
            .key
            .limits
            .expires_at_ms
            .is_some_and(|e| e <= self.clock.now_ms())
        {
            return Err(DomainError::new(
                Code::ApiKeyInactive,
                "this API key has expired",
            ));
        }
        if entry.account_disabled {
            return Err(DomainError::new(
                Code::UserInactive,
                "this account is disabled",
            ));
        }
        Ok(Caller {
            account_id: entry.key.account_id.clone(),
            key_id: entry.key.id.clone(),
            role: entry.key.role,
            limits: entry.limits.clone(),
        })
    }

    pub async fn create_account(&self, name: &str) -> Result<Account, DomainError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(DomainError::invalid(
                "name",
                "name must be 1 to 200 characters",
            ));
        }
        let account = Account {
            id: new_id("acct", 8),
            name: name.to_string(),
            created_at_ms: self.clock.now_ms(),
            disabled: false,
        };
        self.store.create_account(account.clone()).await?;
        Ok(account)
    }

    /// Issues a key for an existing account. The secret is returned here and nowhere else.
    pub async fn issue(
        &self,
        account_id: &str,
        name: &str,
        role: Role,
        limits: KeyLimits,
    ) -> Result<IssuedKey, DomainError> {
        validate_limits(&limits)?;
        if self.store.get_account(account_id).await?.is_none() {
            return Err(
                DomainError::new(Code::NotFound, format!("no account {account_id}"))
                    .with_param("account_id"),
            );
        }
        let secret = random_secret(&self.prefix);
        let record = ApiKeyRecord {
            id: new_id("key", 8),
            account_id: account_id.to_string(),
            name: name.to_string(),
            key_hash: hash_key(&secret),
            last4: secret[secret.len() - 4..].to_string(),
            prefix: self.prefix.clone(),
            role,
            created_at_ms: self.clock.now_ms(),
            revoked_at_ms: None,
            limits,
        };
        // The event commits with the key (none when webhooks are not wired, as in the CLI).
        let outbox = match self.outbox.get() {
            Some(_) => vec![crate::webhooks::events::key_created(&record)],
            None => Vec::new(),
        };
        self.store.create_key(record.clone(), outbox).await?;
        if let Some(o) = self.outbox.get() {
            o.wake();
        }
        Ok(IssuedKey {
            record,
            key: secret,
        })
    }

    pub async fn revoke(&self, key_id: &str) -> Result<ApiKeyRecord, DomainError> {
        let now = self.clock.now_ms();
        // The event names the key, so it needs the key first; it commits with the revocation.
        let outbox = match (self.outbox.get(), self.store.get_key(key_id).await?) {
            (Some(_), Some(mut k)) => {
                k.revoked_at_ms = Some(k.revoked_at_ms.unwrap_or(now));
                vec![crate::webhooks::events::key_revoked(&k, now)]
            }
            _ => Vec::new(),
        };
        let found = self.store.revoke_key(key_id, now, outbox).await?;
        let key = self.changed(key_id, found).await?;
        if let Some(o) = self.outbox.get() {
            o.wake();
        }
        Ok(key)
    }

    /// Sends key events to webhooks from now on.
    pub fn set_outbox(&self, outbox: Arc<crate::webhooks::Webhooks>) {
        let _ = self.outbox.set(outbox);
    }

    /// After a key was changed in the store (`found`: it existed): drop it from the cache at
    /// once, so this process applies the change from the next request on, and return it as
    /// stored (404 if there was no such key).
    async fn changed(&self, key_id: &str, found: bool) -> Result<ApiKeyRecord, DomainError> {
        let no_key = || DomainError::new(Code::NotFound, format!("no key {key_id}"));
        if !found {
            return Err(no_key());
        }
        self.cache.write().retain(|_, c| c.key.id != key_id);
        self.store.get_key(key_id).await?.ok_or_else(no_key)
    }

    /// First start: when no admin key exists, create an admin account and key.
    pub async fn bootstrap_admin(&self) -> Result<Option<IssuedKey>, DomainError> {
        if self.store.count_admin_keys().await? > 0 {
            return Ok(None);
        }
        let account = match self
            .store
            .list_accounts()
            .await?
            .into_iter()
            .find(|a| a.name == "admin")
        {
            Some(a) => a,
            None => self.create_account("admin").await?,
        };
        Ok(Some(
            self.issue(
                &account.id,
                "bootstrap admin key",
                Role::Admin,
                KeyLimits::default(),
            )
            .await?,
        ))
    }

    pub async fn set_limits(
        &self,
        key_id: &str,
        limits: KeyLimits,
    ) -> Result<ApiKeyRecord, DomainError> {
        validate_limits(&limits)?;
        let found = self.store.update_key_limits(key_id, limits).await?;
        self.changed(key_id, found).await
    }

    pub async fn set_account_disabled(
        &self,
        account_id: &str,
        disabled: bool,
    ) -> Result<(), DomainError> {
        if !self
            .store
            .set_account_disabled(account_id, disabled)
            .await?
        {
            return Err(DomainError::new(
                Code::NotFound,
                format!("no account {account_id}"),
            ));
        }
        self.cache
            .write()
            .retain(|_, c| c.key.account_id != account_id);
        Ok(())
    }
}

fn validate_limits(l: &KeyLimits) -> Result<(), DomainError> {
    if l.spend_limit_nanos.is_some_and(|v| v < 0) {
        return Err(DomainError::invalid(
            "spend_limit_nanos",
            "must not be negative",
        ));
    }
    if l.spend_period.is_some() && l.spend_limit_nanos.is_none() {
        return Err(DomainError::invalid(
            "spend_period",
            "spend_period needs spend_limit_nanos",
        ));
    }
    if l.allowed_models.as_ref().is_some_and(|m| m.is_empty()) {
        return Err(DomainError::invalid(
            "allowed_models",
            "an empty allow-list would block every model; omit it instead",
        ));
    }
    Ok(())
}

//! Bring your own key: an account's own provider credential, encrypted at rest with
//! ChaCha20-Poly1305 under `security.encryption_key` (the row's account and provider are bound in
//! as associated data). Never returned by any API, never logged; requests that use it are
//! recorded with source `user` and are not charged credits (beyond the configured fee).

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use parking_lot::RwLock;
use rand::RngCore;
use serde::Serialize;

use tollgate_core::account::StoredProviderKey;
use tollgate_core::store::Store;
use tollgate_core::{Code, DomainError};

pub struct ProviderKeys {
    store: Arc<dyn Store>,
    cipher: Option<ChaCha20Poly1305>,
    /// Decrypted keys by account, loaded once per account.
    cache: RwLock<HashMap<String, Arc<HashMap<String, String>>>>,
}

/// What an API may show of a stored key.
#[derive(Debug, Serialize)]
pub struct ProviderKeyInfo {
    pub provider: String,
    pub last4: String,
    pub created_at_ms: i64,
}

fn aad(account_id: &str, provider: &str) -> Vec<u8> {
    format!("{account_id}/{provider}").into_bytes()
}

impl ProviderKeys {
    pub fn new(store: Arc<dyn Store>, encryption_key: Option<&str>) -> Self {
        let cipher = encryption_key
            .and_then(|k| {
                base64::engine::general_purpose::STANDARD
                    .decode(k.trim())
                    .ok()
            })
            .filter(|b| b.len() == 32)
            .map(|b| ChaCha20Poly1305::new(Key::from_slice(&b)));
        Self {
            store,
            cipher,
            cache: RwLock::new(HashMap::new()),
        }
    }

    fn cipher(&self) -> Result<&ChaCha20Poly1305, DomainError> {
        self.cipher.as_ref().ok_or_else(|| {
            DomainError::new(
                Code::InvalidRequest,
                "bring-your-own-key is off: set security.encryption_key (base64 of 32 bytes) in the config",
            )
        })
    }

    /// The account's own key for `provider`, if it stored one.
    pub async fn get(
        &self,
        account_id: &str,
        provider: &str,
    ) -> Result<Option<String>, DomainError> {
        if self.cipher.is_none() {
            return Ok(None);
        }
        if let Some(keys) = self.cache.read().get(account_id) {
            return Ok(keys.get(provider).cloned());
        }
        let keys = Arc::new(self.load(account_id).await?);
        self.cache
            .write()
            .insert(account_id.to_string(), keys.clone());
        Ok(keys.get(provider).cloned())
    }

    async fn load(&self, account_id: &str) -> Result<HashMap<String, String>, DomainError> {
        let cipher = self.cipher()?;
        let mut out = HashMap::new();
        for k in self.store.list_provider_keys(account_id).await? {
            let plain = cipher
                .decrypt(
                    Nonce::from_slice(&k.nonce),
                    Payload {
                        msg: &k.ciphertext,
                        aad: &aad(&k.account_id, &k.provider),
                    },
                )
                .map_err(|_| {
                    DomainError::internal(format!(
                        "cannot decrypt the {} key of {account_id}",
                        k.provider
                    ))
                })?;
            out.insert(
                k.provider,
                String::from_utf8(plain).map_err(DomainError::internal)?,
            );
        }
        Ok(out)
    }

    pub async fn put(
        &self,
        account_id: &str,
        provider: &str,
        api_key: &str,
        now_ms: i64,
    ) -> Result<ProviderKeyInfo, DomainError> {
        let api_key = api_key.trim();
        // The key travels in an HTTP header, which takes visible ASCII only; checked here so a
        // key that could never be sent is refused (and `last4` below slices whole characters).
        if api_key.len() < 8
            || api_key.len() > 4096
            || !api_key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(DomainError::invalid(
                "api_key",
                "api_key must be 8 to 4096 visible ASCII characters (no spaces)",
            ));
        }
        let cipher = self.cipher()?;
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: api_key.as_bytes(),
                    aad: &aad(account_id, provider),
                },
            )
            .map_err(|_| DomainError::internal("encryption failed"))?;
        let last4 = api_key[api_key.len() - 4..].to_string();
        self.store
            .put_provider_key(StoredProviderKey {
                account_id: account_id.to_string(),
                provider: provider.to_string(),
                nonce: nonce.to_vec(),
                ciphertext,
                last4: last4.clone(),
                created_at_ms: now_ms,
            })
            .await?;
        self.cache.write().remove(account_id);
        Ok(ProviderKeyInfo {
            provider: provider.to_string(),
            last4,
            created_at_ms: now_ms,
        })
    }

    pub async fn delete(&self, account_id: &str, provider: &str) -> Result<bool, DomainError> {
        let deleted = self.store.delete_provider_key(account_id, provider).await?;
        self.cache.write().remove(account_id);
        Ok(deleted)
    }

    pub async fn list(&self, account_id: &str) -> Result<Vec<ProviderKeyInfo>, DomainError> {
        Ok(self
            .store
            .list_provider_keys(account_id)
            .await?
            .into_iter()
            .map(|k| ProviderKeyInfo {
                provider: k.provider,
                last4: k.last4,
                created_at_ms: k.created_at_ms,
            })
            .collect())
    }
}

//! Dashboard sessions: an API key exchanged for a cookie (`dashboard::api::sign_in`), accepted by
//! the extractors (`extract::Authed`) in place of a header key.
//!
//! Server-side sessions kept in memory (random id → the key's SHA-256 hash, a CSRF token, an
//! expiry), rather than a stateless signed cookie: signing out ends the session on the server
//! (a copied cookie stops working too), there is no signing secret to configure or rotate, and
//! the key is re-authenticated by its hash on every request, so a key revoked, expired or whose
//! account was disabled loses its sessions at once. The cost: a session lives in one process (a
//! restart signs everyone out; replicas behind a load balancer need sticky sessions).
//!
//! This module knows nothing of the rest of the crate: the extractors and the dashboard use it.

use std::collections::HashMap;

use axum::http::HeaderMap;
use parking_lot::Mutex;
use rand::RngCore;

/// The session cookie's name.
pub const COOKIE: &str = "tg_session";
/// How long a session lasts from sign-in.
pub const TTL_SECS: i64 = 12 * 3600;
/// Sessions kept at most; past it the oldest is dropped (a flood of sign-ins cannot grow memory).
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    /// SHA-256 of the key signed in with (never the key itself).
    pub key_hash: String,
    /// Sent back in `x-csrf-token` by every state-changing request of this session.
    pub csrf: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Sessions {
    /// A new session for the key with this hash.
    pub fn create(&self, key_hash: &str, now_ms: i64) -> Session {
        let session = Session {
            id: random_token(),
            key_hash: key_hash.to_string(),
            csrf: random_token(),
            created_at_ms: now_ms,
            expires_at_ms: now_ms + TTL_SECS * 1000,
        };
        let mut map = self.map.lock();
        map.retain(|_, s| s.expires_at_ms > now_ms);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .values()
                .min_by_key(|s| s.created_at_ms)
                .map(|s| s.id.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(session.id.clone(), session.clone());
        session
    }

    /// The live session with this id (an expired one is dropped).
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        let mut map = self.map.lock();
        match map.get(id) {
            Some(s) if s.expires_at_ms > now_ms => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, id: &str) {
        self.map.lock().remove(id);
    }
}

/// The session id in the request's `Cookie` headers, if any.
pub fn cookie_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

/// Equal tokens, compared in time independent of where they differ.
pub fn tokens_match(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The `Set-Cookie` value of a session: HttpOnly (no script reads it), SameSite=Strict (no
/// other site's page sends it), Max-Age (it ends), `Secure` when the client came over HTTPS.
pub fn set_cookie(session: &Session, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={TTL_SECS}{secure}",
        session.id
    )
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_are_removed() {
        let s = Sessions::default();
        let a = s.create("h", 1_000);
        assert_eq!(a.id.len(), 64);
        assert_ne!(a.id, a.csrf);
        assert!(s.get(&a.id, 1_000 + TTL_SECS * 1000 - 1).is_some());
        assert!(s.get(&a.id, 1_000 + TTL_SECS * 1000).is_none());
        let b = s.create("h", 2_000);
        s.remove(&b.id);
        assert!(s.get(&b.id, 2_001).is_none());
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; tg_session=abc; b=2".parse().unwrap());
        assert_eq!(cookie_id(&h), Some("abc"));
        h.insert("cookie", "tg_session=".parse().unwrap());
        assert_eq!(cookie_id(&h), None);
    }

    #[test]
    fn token_comparison() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("abc", "ab"));
    }
}

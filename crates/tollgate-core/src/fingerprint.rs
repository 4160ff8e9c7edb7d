//! Request fingerprints: keyed hashes of a request's normalised body and of its conversation's
//! opening, so the insights can find duplicates, retry loops and growing conversations without
//! a prompt ever being stored.
//!
//! Each account hashes with a key of its own (`AccountKey`, derived from the server's secret
//! and the account id), so the same body gives unrelated hashes in two accounts and a hash says
//! nothing to whoever lacks the server's secret. The hash is HMAC-SHA256 (the `sha2` crate uses
//! the CPU's SHA extensions where it has them; BLAKE3 measured slower on these kilobyte bodies,
//! whose single chunk its SIMD cannot spread: `fingerprint_bench`).

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::record::Endpoint;

type Hasher = Hmac<Sha256>;

/// The canonical bytes of what is hashed, built first and hashed in one call: a keyed hash fed
/// in many small pieces costs several times one fed the same bytes at once.
type Buf = Vec<u8>;

/// The body fields that say how or for whom a request is delivered, not what it asks: the
/// same question streamed or not, for one end user or another, is the same request.
const DELIVERY_FIELDS: [&str; 4] = ["stream", "stream_options", "user", "metadata"];

/// A request's two fingerprints (the first 64 bits of each keyed hash, as stored).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fingerprints {
    /// The whole request: model, messages (or input), tools, parameters.
    pub request: Option<i64>,
    /// The conversation's opening: the system prompt and the first message; the same in every
    /// turn of one conversation. `None` for requests without messages (embeddings).
    pub conversation: Option<i64>,
}

/// The server's fingerprint secret, from which each account's key is derived.
#[derive(Clone)]
pub struct FingerprintSecret([u8; 32]);

/// One account's fingerprint key, as an HMAC already keyed with it: each hash clones it rather
/// than hashing the key in again.
pub struct AccountKey(Hasher);

impl FingerprintSecret {
    /// Derived from a 32-byte server secret (the one that seals webhook secrets) under a label
    /// of its own, so neither key says anything about the other.
    pub fn derive(server_secret: &[u8; 32]) -> Self {
        Self(mac(server_secret, b"tollgate fingerprint secret v1", &[]))
    }

    pub fn for_account(&self, account_id: &str) -> AccountKey {
        let key = mac(&self.0, b"account\0", account_id.as_bytes());
        AccountKey(keyed(&key))
    }
}

impl AccountKey {
    /// The fingerprints of a checked request body (`ProxyRequest::json`).
    pub fn fingerprints(&self, api: Endpoint, body: &Value) -> Fingerprints {
        let Some(obj) = body.as_object() else {
            return Fingerprints::default();
        };
        let request = {
            let mut h = Buf::with_capacity(256);
            feed_fields(&mut h, obj, &DELIVERY_FIELDS);
            Some(self.hash(b'r', &h))
        };
        Fingerprints {
            request,
            conversation: self.conversation(api, obj),
        }
    }

    fn conversation(&self, api: Endpoint, obj: &serde_json::Map<String, Value>) -> Option<i64> {
        let mut h = Buf::with_capacity(128);
        match api {
            Endpoint::Embeddings => return None,
            Endpoint::ChatCompletions => {
                let msgs = obj.get("messages")?.as_array()?;
                // System (and developer) messages lead; the first other message opens the
                // conversation.
                let is_system = |m: &&Value| {
                    matches!(
                        m.get("role").and_then(Value::as_str),
                        Some("system" | "developer")
                    )
                };
                let system = msgs.iter().take_while(is_system).count();
                let first = msgs.get(system)?;
                feed_items(&mut h, msgs[..system].iter());
                feed(&mut h, first);
            }
            Endpoint::Messages => {
                feed(&mut h, obj.get("system").unwrap_or(&Value::Null));
                feed(&mut h, obj.get("messages")?.as_array()?.first()?);
            }
            Endpoint::Responses => {
                feed(&mut h, obj.get("instructions").unwrap_or(&Value::Null));
                match obj.get("input")? {
                    Value::Array(items) => feed(&mut h, items.first()?),
                    v => feed(&mut h, v),
                }
            }
        }
        Some(self.hash(b'c', &h))
    }

    /// The first 64 bits of the keyed hash of `bytes`, in the domain `domain`.
    fn hash(&self, domain: u8, bytes: &[u8]) -> i64 {
        let mut m = self.0.clone();
        m.update(&[domain]);
        m.update(bytes);
        let out: [u8; 32] = m.finalize().into_bytes().into();
        let mut first = [0u8; 8];
        first.copy_from_slice(&out[..8]);
        i64::from_be_bytes(first)
    }
}

/// An HMAC-SHA256 keyed with `key`.
fn keyed(key: &[u8; 32]) -> Hasher {
    // Infallible: HMAC takes keys of any length (`new_from_slice` only fails for fixed-size
    // MACs); the fallback keeps this free of a panic path.
    Hasher::new_from_slice(key).unwrap_or_else(|_| Hasher::new(&Default::default()))
}

/// HMAC-SHA256 of `prefix` then `bytes` under `key`.
fn mac(key: &[u8; 32], prefix: &[u8], bytes: &[u8]) -> [u8; 32] {
    let mut m = keyed(key);
    m.update(prefix);
    m.update(bytes);
    m.finalize().into_bytes().into()
}

/// A fingerprint as shown: 16 hex digits.
pub fn to_hex(fp: i64) -> String {
    format!("{:016x}", fp as u64)
}

/// A stored fingerprint in JSON (records, journal lines): its 16 hex digits, as the insights
/// show it (a JSON number would lose bits in JavaScript).
pub mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(fp) => s.serialize_str(&super::to_hex(*fp)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(h) => u64::from_str_radix(&h, 16)
                .map(|v| Some(v as i64))
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Writes formatted text straight into the buffer.
struct Feed<'a>(&'a mut Buf);

impl std::fmt::Write for Feed<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn feed_items<'a>(h: &mut Buf, items: impl ExactSizeIterator<Item = &'a Value>) {
    h.extend_from_slice(b"[");
    h.extend_from_slice(&(items.len() as u64).to_le_bytes());
    items.for_each(|i| feed(h, i));
}

fn feed_str(h: &mut Buf, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

/// Feeds a JSON value in a canonical form: each value tagged with its type and length, object
/// keys sorted, so key order and whitespace do not change the hash and no two values share an
/// encoding.
fn feed(h: &mut Buf, v: &Value) {
    match v {
        Value::Null => {
            h.extend_from_slice(b"n");
        }
        Value::Bool(b) => {
            h.extend_from_slice(if *b { b"t" } else { b"f" });
        }
        Value::Number(n) => {
            // The number's text (as serde_json prints it), fed without an allocation; a length
            // cannot be prefixed unseen, so the text is closed by a byte no number contains.
            use std::fmt::Write as _;
            h.extend_from_slice(b"#");
            let _ = write!(Feed(h), "{n}");
            h.extend_from_slice(b";");
        }
        Value::String(s) => {
            h.extend_from_slice(b"s");
            feed_str(h, s);
        }
        Value::Array(items) => feed_items(h, items.iter()),
        Value::Object(o) => {
            h.extend_from_slice(b"{");
            feed_fields(h, o, &[]);
        }
    }
}

/// An object's fields but those in `skip`: their count, then each key and value in key order.
fn feed_fields(h: &mut Buf, o: &serde_json::Map<String, Value>, skip: &[&str]) {
    let kept = |(k, _): &(&String, &Value)| !skip.contains(&k.as_str());
    h.extend_from_slice(&(o.iter().filter(kept).count() as u64).to_le_bytes());
    // serde_json's map iterates in key order unless its `preserve_order` feature is on; sorted
    // here only then, so the usual case allocates nothing.
    if o.keys().zip(o.keys().skip(1)).all(|(a, b)| a <= b) {
        for (k, v) in o.iter().filter(kept) {
            feed_str(h, k);
            feed(h, v);
        }
    } else {
        let mut fields: Vec<(&String, &Value)> = o.iter().filter(kept).collect();
        fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (k, v) in fields {
            feed_str(h, k);
            feed(h, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(account: &str) -> AccountKey {
        FingerprintSecret::derive(&[7; 32]).for_account(account)
    }

    #[test]
    fn the_same_request_in_another_order_or_delivery_has_the_same_fingerprint() {
        let a = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                       "temperature": 0.5});
        let b: Value = serde_json::from_str(
            r#"{"temperature":0.5,"stream":true,"user":"u1",
                "messages":[{"content":"hi","role":"user"}],"model":"m"}"#,
        )
        .unwrap();
        let k = key("acct_a");
        let (fa, fb) = (
            k.fingerprints(Endpoint::ChatCompletions, &a),
            k.fingerprints(Endpoint::ChatCompletions, &b),
        );
        assert_eq!(fa, fb);
        assert!(fa.request.is_some() && fa.conversation.is_some());
        let c = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                       "temperature": 0.6});
        assert_ne!(
            k.fingerprints(Endpoint::ChatCompletions, &c).request,
            fa.request
        );
    }

    #[test]
    fn accounts_hash_the_same_body_apart() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let a = key("acct_a").fingerprints(Endpoint::ChatCompletions, &body);
        let b = key("acct_b").fingerprints(Endpoint::ChatCompletions, &body);
        assert_ne!(a.request, b.request);
        assert_ne!(a.conversation, b.conversation);
        let other_server = FingerprintSecret::derive(&[8; 32]).for_account("acct_a");
        assert_ne!(
            other_server
                .fingerprints(Endpoint::ChatCompletions, &body)
                .request,
            a.request
        );
    }

    #[test]
    fn every_turn_of_a_conversation_shares_its_opening() {
        let k = key("acct_a");
        let sys = json!({"role": "system", "content": "be brief"});
        let u1 = json!({"role": "user", "content": "q1"});
        let turn1 = json!({"model": "m", "messages": [sys, u1]});
        let turn2 = json!({"model": "m", "messages": [sys, u1,
            {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]});
        let f1 = k.fingerprints(Endpoint::ChatCompletions, &turn1);
        let f2 = k.fingerprints(Endpoint::ChatCompletions, &turn2);
        assert_eq!(f1.conversation, f2.conversation);
        assert_ne!(f1.request, f2.request);
        let other =
            json!({"model": "m", "messages": [{"role": "system", "content": "be long"}, u1]});
        assert_ne!(
            k.fingerprints(Endpoint::ChatCompletions, &other)
                .conversation,
            f1.conversation
        );
        // Anthropic and Responses bodies have openings too; embeddings do not.
        let m = json!({"model": "c", "system": "s", "max_tokens": 5, "messages": [u1]});
        assert!(k
            .fingerprints(Endpoint::Messages, &m)
            .conversation
            .is_some());
        let r = json!({"model": "m", "input": "hi"});
        assert!(k
            .fingerprints(Endpoint::Responses, &r)
            .conversation
            .is_some());
        let e = json!({"model": "e", "input": "hi"});
        let fe = k.fingerprints(Endpoint::Embeddings, &e);
        assert!(fe.request.is_some() && fe.conversation.is_none());
    }

    #[test]
    fn values_of_different_types_never_collide() {
        let k = key("a");
        let fp = |v: Value| {
            k.fingerprints(Endpoint::Embeddings, &json!({"input": v}))
                .request
        };
        assert_ne!(fp(json!("1")), fp(json!(1)));
        assert_ne!(fp(json!(["ab"])), fp(json!(["a", "b"])));
        assert_ne!(fp(json!(null)), fp(json!(false)));
        assert_eq!(to_hex(-1), "ffffffffffffffff");
    }
}

//! Who a request was for: the end user and the tags a client names, checked at the edge so
//! that only bounded, well-formed values reach records and rollups.
//!
//! - The end user comes from the `x-tollgate-user` header, else OpenAI's `user` body field,
//!   else Anthropic's `metadata.user_id`.
//! - Tags come from `x-tollgate-tags: feature=search,team=ads`: at most [`MAX_TAGS`] pairs,
//!   keys and values from small charsets (so a tag never needs escaping in CSV, SQL `LIKE` or
//!   a query string), each key once.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DomainError;

pub const USER_HEADER: &str = "x-tollgate-user";
pub const TAGS_HEADER: &str = "x-tollgate-tags";

/// The longest end-user id kept, in characters (OpenAI documents no limit; 256 holds any
/// UUID, email or hashed id, and bounds what a client can make the gateway store).
pub const MAX_USER_CHARS: usize = 256;
pub const MAX_TAGS: usize = 10;
pub const MAX_TAG_KEY: usize = 64;
pub const MAX_TAG_VALUE: usize = 128;

fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/' | '@' | '+')
}

/// Checks an end-user id: 1 to 256 characters, no control characters.
pub fn check_user(user: &str) -> Result<(), String> {
    let n = user.chars().count();
    if n == 0 {
        return Err("must not be empty".into());
    }
    if n > MAX_USER_CHARS {
        return Err(format!("is {n} characters; at most {MAX_USER_CHARS}"));
    }
    if user.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// Checks one `key=value` tag and returns its two halves.
pub fn parse_tag(pair: &str) -> Result<(&str, &str), String> {
    let Some((k, v)) = pair.split_once('=') else {
        return Err(format!("`{pair}` is not key=value"));
    };
    let (k, v) = (k.trim(), v.trim());
    if k.is_empty() || k.len() > MAX_TAG_KEY || !k.chars().all(key_char) {
        return Err(format!(
            "tag key `{k}` must be 1 to {MAX_TAG_KEY} of A-Z a-z 0-9 _ - ."
        ));
    }
    if v.is_empty() || v.len() > MAX_TAG_VALUE || !v.chars().all(value_char) {
        return Err(format!(
            "tag value `{v}` must be 1 to {MAX_TAG_VALUE} of A-Z a-z 0-9 _ - . : / @ +"
        ));
    }
    Ok((k, v))
}

/// A request's tags, kept as canonical text: `key=value` pairs sorted by key, comma-separated
/// (empty: none). One string per record, and rollup rows borrow their pairs from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Tags(String);

impl Tags {
    /// Parses the `x-tollgate-tags` header (empty: no tags).
    pub fn parse(header: &str) -> Result<Tags, String> {
        let mut map = BTreeMap::new();
        for pair in header.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = parse_tag(pair)?;
            if map.insert(k, v).is_some() {
                return Err(format!("tag key `{k}` is given twice"));
            }
            if map.len() > MAX_TAGS {
                return Err(format!("at most {MAX_TAGS} tags"));
            }
        }
        Ok(Self::from_map(&map))
    }

    fn from_map(map: &BTreeMap<&str, &str>) -> Tags {
        let mut s = String::new();
        for (k, v) in map {
            if !s.is_empty() {
                s.push(',');
            }
            s.push_str(k);
            s.push('=');
            s.push_str(v);
        }
        Tags(s)
    }

    /// Tags as stored (canonical text); `None` if the text is not canonical tags.
    pub fn from_canonical(s: &str) -> Option<Tags> {
        let t = Tags::parse(s).ok()?;
        (t.0 == s).then_some(t)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The canonical text (`""` when there are none).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Each `key=value`, in key order.
    pub fn pairs(&self) -> impl Iterator<Item = &str> {
        self.0.split(',').filter(|p| !p.is_empty())
    }

    /// Each (key, value), in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs().filter_map(|p| p.split_once('='))
    }
}

/// A JSON object `{"feature": "search"}`, as the usage APIs show tags.
impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(d)?;
        let pairs = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let text = Tags::from_map(&pairs);
        Tags::from_canonical(text.as_str())
            .ok_or_else(|| serde::de::Error::custom(format!("invalid tags `{}`", text.as_str())))
    }
}

/// The end user and tags of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    pub user: Option<String>,
    pub tags: Tags,
}

impl Attribution {
    /// From the request's headers (`x-tollgate-user`, `x-tollgate-tags`, as text if they were
    /// readable); a bad one is a 400 naming the header.
    pub fn from_headers(
        user: Option<Result<&str, ()>>,
        tags: Option<Result<&str, ()>>,
    ) -> Result<Attribution, DomainError> {
        let bad = |h: &str, why: String| DomainError::invalid(h, format!("header `{h}` {why}"));
        let user = match user {
            None => None,
            Some(Err(())) => {
                return Err(bad(USER_HEADER, "must be visible ASCII text".into()));
            }
            Some(Ok(u)) => {
                let u = u.trim();
                check_user(u).map_err(|e| bad(USER_HEADER, e))?;
                Some(u.to_string())
            }
        };
        let tags = match tags {
            None => Tags::default(),
            Some(Err(())) => {
                return Err(bad(TAGS_HEADER, "must be visible ASCII text".into()));
            }
            Some(Ok(t)) => Tags::parse(t).map_err(|e| bad(TAGS_HEADER, e))?,
        };
        Ok(Attribution { user, tags })
    }

    /// The body's end user (OpenAI `user`, Anthropic `metadata.user_id`) unless a header named
    /// one: the header is set by the platform's own backend, so it wins.
    pub fn or_body_user(&mut self, body_user: Option<String>) {
        if self.user.is_none() {
            self.user = body_user;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_canonical_and_bounded() {
        let t = Tags::parse(" team=ads , feature=search").unwrap();
        assert_eq!(t.as_str(), "feature=search,team=ads");
        assert_eq!(
            t.pairs().collect::<Vec<_>>(),
            ["feature=search", "team=ads"]
        );
        assert_eq!(Tags::parse("").unwrap(), Tags::default());
        assert!(Tags::parse("a=1,a=2").unwrap_err().contains("twice"));
        assert!(Tags::parse("novalue").is_err());
        assert!(Tags::parse("a=").is_err());
        assert!(Tags::parse("a b=1").is_err());
        assert!(Tags::parse("a=1;drop").is_err());
        assert!(Tags::parse(&format!("{}=1", "k".repeat(65))).is_err());
        let eleven: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
        assert!(Tags::parse(&eleven.join(","))
            .unwrap_err()
            .contains("at most"));
        let ten: Vec<String> = (0..10).map(|i| format!("k{i}=v")).collect();
        assert_eq!(Tags::parse(&ten.join(",")).unwrap().pairs().count(), 10);
    }

    #[test]
    fn tags_serialize_as_an_object_and_come_back() {
        let t = Tags::parse("team=ads,feature=search").unwrap();
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v, serde_json::json!({"feature": "search", "team": "ads"}));
        assert_eq!(serde_json::from_value::<Tags>(v).unwrap(), t);
        assert!(serde_json::from_value::<Tags>(serde_json::json!({"a b": "x"})).is_err());
        assert_eq!(Tags::from_canonical("b=1,a=2"), None);
    }

    #[test]
    fn users_are_checked_and_headers_win() {
        assert!(check_user("").is_err());
        assert!(check_user(&"u".repeat(257)).is_err());
        assert!(check_user("a\nb").is_err());
        assert!(check_user("user-42@example.com").is_ok());
        let mut a = Attribution::from_headers(Some(Ok("hdr")), None).unwrap();
        a.or_body_user(Some("body".into()));
        assert_eq!(a.user.as_deref(), Some("hdr"));
        let mut b = Attribution::default();
        b.or_body_user(Some("body".into()));
        assert_eq!(b.user.as_deref(), Some("body"));
        let e = Attribution::from_headers(None, Some(Ok("x"))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some(TAGS_HEADER));
    }
}

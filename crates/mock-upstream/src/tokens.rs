//! Deterministic "tokenizer": one whitespace-separated word is one token.
//!
//! The request bodies are never materialised: the custom deserializers below
//! walk the JSON and only count words, so parsing a request allocates
//! (almost) nothing besides the model name.

use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Words the mock "generates", cycled.
const LOREM: [&str; 19] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
];

/// The `i`-th generated word (0-based).
pub(crate) fn word(i: u64) -> &'static str {
    // The modulo keeps the index in range; `LOREM.len()` is tiny.
    LOREM[(i % LOREM.len() as u64) as usize]
}

/// The `i`-th text delta of a stream of `n` words: `"word "`, except the
/// last one which has no trailing space, so the concatenation of all deltas
/// equals [`generated_text`].
pub(crate) fn push_delta(out: &mut Vec<u8>, i: u64, n: u64) {
    out.extend_from_slice(word(i).as_bytes());
    if i + 1 < n {
        out.push(b' ');
    }
}

/// The full generated text of `n` words, separated by single spaces.
pub(crate) fn generated_text(n: u64) -> String {
    let mut s = String::with_capacity(n as usize * 7);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(word(i));
    }
    s
}

/// Number of whitespace-separated words in a string.
pub(crate) fn count_words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Word count of a message `content` (or Anthropic `system`): a string, an
/// array of parts (`{"type":"text","text":...}`; nested `content` of e.g.
/// `tool_result` blocks is counted too), or null. Other part types (images,
/// tool calls...) count 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Words(pub u64);

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WordsVisitor)
    }
}

struct WordsVisitor;

impl<'de> Visitor<'de> for WordsVisitor {
    type Value = Words;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("text content (string, array of parts, or null)")
    }

    fn visit_str<E>(self, v: &str) -> Result<Words, E> {
        Ok(Words(count_words(v)))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Words, E> {
        Ok(Words(0))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Words, E> {
        Ok(Words(0))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Words, E> {
        Ok(Words(0))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Words, E> {
        Ok(Words(0))
    }
    fn visit_unit<E>(self) -> Result<Words, E> {
        Ok(Words(0))
    }
    fn visit_none<E>(self) -> Result<Words, E> {
        Ok(Words(0))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Words, D::Error> {
        Words::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Words, A::Error> {
        let mut n = 0;
        while let Some(Words(w)) = seq.next_element()? {
            n += w;
        }
        Ok(Words(n))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Words, A::Error> {
        let mut n = 0;
        while let Some(key) = map.next_key::<PartKey>()? {
            match key {
                PartKey::Text => n += map.next_value::<Words>()?.0,
                PartKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Words(n))
    }
}

/// Keys of a content part whose value holds countable text.
enum PartKey {
    Text,
    Other,
}

impl<'de> Deserialize<'de> for PartKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = PartKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, v: &str) -> Result<PartKey, E> {
                Ok(match v {
                    "text" | "content" => PartKey::Text,
                    _ => PartKey::Other,
                })
            }
            fn visit_bytes<E>(self, _: &[u8]) -> Result<PartKey, E> {
                Ok(PartKey::Other)
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// One chat message; only its content matters.
#[derive(serde::Deserialize)]
pub(crate) struct Message {
    #[serde(default)]
    pub content: Words,
}

/// Input tokens of a message list: words of every content, plus 1 per message.
pub(crate) fn messages_tokens(messages: &[Message]) -> u64 {
    messages.iter().map(|m| m.content.0 + 1).sum()
}

/// Input tokens of a Responses `input`: a string is one user message (its words + 1); a list
/// of items counts each item's `content` words + 1, as chat messages do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ResponsesInput(pub u64);

impl<'de> Deserialize<'de> for ResponsesInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct InputVisitor;
        impl<'de> Visitor<'de> for InputVisitor {
            type Value = ResponsesInput;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of input items")
            }
            fn visit_str<E>(self, v: &str) -> Result<ResponsesInput, E> {
                Ok(ResponsesInput(count_words(v) + 1))
            }
            fn visit_unit<E>(self) -> Result<ResponsesInput, E> {
                Ok(ResponsesInput(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ResponsesInput, A::Error> {
                let mut n = 0;
                while let Some(m) = seq.next_element::<Message>()? {
                    n += m.content.0 + 1;
                }
                Ok(ResponsesInput(n))
            }
        }
        d.deserialize_any(InputVisitor)
    }
}

/// The `input` of an embeddings request: a string, an array of strings, an
/// array of token ids, or an array of arrays of token ids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EmbeddingInput {
    /// How many embeddings to return.
    pub inputs: u64,
    /// Words (or token ids) across all inputs.
    pub tokens: u64,
}

impl<'de> Deserialize<'de> for EmbeddingInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EmbeddingInputVisitor)
    }
}

struct EmbeddingInputVisitor;

impl<'de> Visitor<'de> for EmbeddingInputVisitor {
    type Value = EmbeddingInput;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, an array of strings, or token arrays")
    }

    fn visit_str<E>(self, v: &str) -> Result<EmbeddingInput, E> {
        Ok(EmbeddingInput {
            inputs: 1,
            tokens: count_words(v),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EmbeddingInput, A::Error> {
        let mut out = EmbeddingInput::default();
        let mut flat_tokens = false;
        while let Some(item) = seq.next_element::<EmbeddingItem>()? {
            match item {
                EmbeddingItem::Text(w) => {
                    out.inputs += 1;
                    out.tokens += w;
                }
                EmbeddingItem::TokenIds(n) => {
                    out.inputs += 1;
                    out.tokens += n;
                }
                EmbeddingItem::TokenId => {
                    flat_tokens = true;
                    out.tokens += 1;
                }
            }
        }
        if flat_tokens {
            out.inputs += 1;
        }
        Ok(out)
    }
}

enum EmbeddingItem {
    Text(u64),
    TokenId,
    TokenIds(u64),
}

impl<'de> Deserialize<'de> for EmbeddingItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = EmbeddingItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a token id, or an array of token ids")
            }
            fn visit_str<E>(self, v: &str) -> Result<EmbeddingItem, E> {
                Ok(EmbeddingItem::Text(count_words(v)))
            }
            fn visit_u64<E>(self, _: u64) -> Result<EmbeddingItem, E> {
                Ok(EmbeddingItem::TokenId)
            }
            fn visit_i64<E>(self, _: i64) -> Result<EmbeddingItem, E> {
                Ok(EmbeddingItem::TokenId)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EmbeddingItem, A::Error> {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(EmbeddingItem::TokenIds(n))
            }
        }
        d.deserialize_any(ItemVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_of_string_parts_and_null() -> Result<(), serde_json::Error> {
        assert_eq!(
            serde_json::from_str::<Words>(r#""hello  big\nworld""#)?,
            Words(3)
        );
        assert_eq!(serde_json::from_str::<Words>("null")?, Words(0));
        let parts = r#"[{"type":"text","text":"a b"},{"type":"image_url","image_url":{"url":"x y"}},
            {"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"c"}]}]"#;
        assert_eq!(serde_json::from_str::<Words>(parts)?, Words(3));
        Ok(())
    }

    #[test]
    fn messages_add_one_each() -> Result<(), serde_json::Error> {
        let m: Vec<Message> = serde_json::from_str(
            r#"[{"role":"system","content":"be nice"},{"role":"user","content":"hi there you"},
                {"role":"assistant","content":null,"tool_calls":[]}]"#,
        )?;
        assert_eq!(messages_tokens(&m), 2 + 3 + 3);
        Ok(())
    }

    #[test]
    fn responses_inputs() -> Result<(), serde_json::Error> {
        assert_eq!(
            serde_json::from_str::<ResponsesInput>(r#""hi there""#)?.0,
            3
        );
        let items = r#"[{"role":"user","content":"a b"},
            {"role":"user","content":[{"type":"input_text","text":"c d e"}]},
            {"type":"function_call_output","call_id":"x","output":"ignored"}]"#;
        assert_eq!(serde_json::from_str::<ResponsesInput>(items)?.0, 3 + 4 + 1);
        Ok(())
    }

    #[test]
    fn embedding_inputs() -> Result<(), serde_json::Error> {
        let e: EmbeddingInput = serde_json::from_str(r#""one two""#)?;
        assert_eq!(
            e,
            EmbeddingInput {
                inputs: 1,
                tokens: 2
            }
        );
        let e: EmbeddingInput = serde_json::from_str(r#"["one two", "three"]"#)?;
        assert_eq!(
            e,
            EmbeddingInput {
                inputs: 2,
                tokens: 3
            }
        );
        let e: EmbeddingInput = serde_json::from_str("[1, 2, 3]")?;
        assert_eq!(
            e,
            EmbeddingInput {
                inputs: 1,
                tokens: 3
            }
        );
        let e: EmbeddingInput = serde_json::from_str("[[1, 2], [3]]")?;
        assert_eq!(
            e,
            EmbeddingInput {
                inputs: 2,
                tokens: 3
            }
        );
        Ok(())
    }

    #[test]
    fn deltas_concatenate_to_text() {
        let mut buf = Vec::new();
        for i in 0..5 {
            push_delta(&mut buf, i, 5);
        }
        assert_eq!(String::from_utf8_lossy(&buf), generated_text(5));
        assert_eq!(generated_text(3), "lorem ipsum dolor");
    }
}

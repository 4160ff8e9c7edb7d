//! Metering: token counts, as pure code with no I/O. The proxy feeds it what it saw; it answers
//! how many tokens of each class a request used (`usage`), or estimates them (`tokenizer`).

pub mod tokenizer;
pub mod usage;

use serde::{Deserialize, Serialize};

/// Tokens one request used, in one convention for every provider: `input_tokens` is ALL input,
/// including cache reads (`cached_tokens`) and cache writes (`cache_write_tokens`), as OpenAI
/// counts `prompt_tokens`; Anthropic's `input_tokens` excludes both, so its three fields are
/// added. `output_tokens` includes `reasoning_tokens`, as OpenAI's `completion_tokens` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// Where a record's token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    /// The upstream reported them.
    Provider,
    /// The upstream reported nothing (or was cut off); counted locally with the bundled tokenizer.
    Estimated,
}

impl Provenance {
    pub fn as_str(self) -> &'static str {
        match self {
            Provenance::Provider => "provider",
            Provenance::Estimated => "estimated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "provider" => Some(Provenance::Provider),
            "estimated" => Some(Provenance::Estimated),
            _ => None,
        }
    }
}

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

    /// Each token class bounded by `max` (the per-request ceiling), and whether any was over.
    pub fn clamped(self, max: u64) -> (Usage, bool) {
        let c = Usage {
            input_tokens: self.input_tokens.min(max),
            output_tokens: self.output_tokens.min(max),
            cached_tokens: self.cached_tokens.min(max),
            cache_write_tokens: self.cache_write_tokens.min(max),
            reasoning_tokens: self.reasoning_tokens.min(max),
        };
        (c, c != self)
    }
}

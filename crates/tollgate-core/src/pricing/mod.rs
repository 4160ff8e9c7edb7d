//! Pricing, in one place: the model price table (bundled entries, overridden or extended by
//! config and by an imported LiteLLM price file), the cost of one request (rounded once), the
//! most a request can cost (what admission holds), and what the account is charged for it
//! (the cost, or the bring-your-own-key fee).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Code, DomainError};
use crate::metering::Usage;
use crate::money::{div_round_half_up, parse_decimal_scaled, usd_per_mtok_to_nanos, MoneyError};
use crate::record::{bounds, Source};

pub mod reprice;

const BUNDLED: &str = include_str!("prices.json");

/// Unit prices in nano-USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UnitPrices {
    pub input: i64,
    pub output: i64,
    /// Price of input tokens read from the provider's prompt cache.
    pub cached_input: i64,
    /// Price of input tokens written to the provider's prompt cache (Anthropic).
    pub cache_write: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriceEntry {
    pub model: String,
    pub owned_by: String,
    pub display_name: String,
    pub prices: UnitPrices,
    pub max_output_tokens: u64,
}

/// A price entry from config, in USD per million tokens, written as decimal strings (or numbers)
/// so that no binary float is involved.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceOverride {
    pub input: toml::Value,
    pub output: toml::Value,
    #[serde(default)]
    pub cached_input: Option<toml::Value>,
    #[serde(default)]
    pub cache_write: Option<toml::Value>,
    #[serde(default)]
    pub owned_by: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    entries: HashMap<String, PriceEntry>,
    /// `version()`, computed once the table is complete (reset by `insert`).
    version: OnceLock<String>,
}

#[derive(Deserialize)]
struct BundledFile {
    models: Vec<BundledEntry>,
}

#[derive(Deserialize)]
struct BundledEntry {
    model: String,
    owned_by: String,
    display_name: String,
    input: String,
    output: String,
    cached_input: Option<String>,
    cache_write: Option<String>,
    max_output_tokens: u64,
}

impl BundledEntry {
    fn into_entry(self) -> Result<PriceEntry, MoneyError> {
        let price = |s: &str| within_price_bound(usd_per_mtok_to_nanos(s)?, || s.to_string());
        let input = price(&self.input)?;
        Ok(PriceEntry {
            prices: UnitPrices {
                input,
                output: price(&self.output)?,
                cached_input: self
                    .cached_input
                    .as_deref()
                    .map(price)
                    .transpose()?
                    .unwrap_or(input),
                cache_write: self
                    .cache_write
                    .as_deref()
                    .map(price)
                    .transpose()?
                    .unwrap_or(input),
            },
            model: self.model,
            owned_by: self.owned_by,
            display_name: self.display_name,
            max_output_tokens: self.max_output_tokens,
        })
    }
}

fn value_to_nanos(v: &toml::Value) -> Result<i64, MoneyError> {
    let nanos = match v {
        toml::Value::String(s) => usd_per_mtok_to_nanos(s),
        toml::Value::Integer(i) => usd_per_mtok_to_nanos(&i.to_string()),
        // A TOML float is printed in its shortest round-trip form and parsed as decimal text.
        toml::Value::Float(f) => usd_per_mtok_to_nanos(&f.to_string()),
        other => Err(MoneyError::NotANumber(other.to_string())),
    }?;
    within_price_bound(nanos, || v.to_string())
}

/// A unit price above `bounds::MAX_UNIT_PRICE` is refused: with it, the cost of a request at
/// the token ceiling would no longer fit the record's bounds.
fn within_price_bound(nanos: i64, text: impl FnOnce() -> String) -> Result<i64, MoneyError> {
    if nanos > bounds::MAX_UNIT_PRICE {
        return Err(MoneyError::OutOfRange(format!(
            "{} (at most {} USD per million tokens)",
            text(),
            bounds::MAX_UNIT_PRICE / crate::money::NANOS_PER_USD
        )));
    }
    Ok(nanos)
}

impl PriceEntry {
    pub fn from_override(model: &str, p: &PriceOverride) -> Result<Self, MoneyError> {
        let input = value_to_nanos(&p.input)?;
        Ok(Self {
            model: model.to_string(),
            owned_by: p.owned_by.clone().unwrap_or_else(|| "custom".into()),
            display_name: p.display_name.clone().unwrap_or_else(|| model.to_string()),
            prices: UnitPrices {
                input,
                output: value_to_nanos(&p.output)?,
                cached_input: p
                    .cached_input
                    .as_ref()
                    .map(value_to_nanos)
                    .transpose()?
                    .unwrap_or(input),
                cache_write: p
                    .cache_write
                    .as_ref()
                    .map(value_to_nanos)
                    .transpose()?
                    .unwrap_or(input),
            },
            max_output_tokens: p.max_output_tokens.unwrap_or(4096),
        })
    }
}

impl PriceTable {
    /// The table that ships inside the binary.
    pub fn bundled() -> Result<Self, anyhow::Error> {
        let file: BundledFile = serde_json::from_str(BUNDLED)?;
        let mut entries = HashMap::new();
        for e in file.models {
            let entry = e.into_entry()?;
            entries.insert(entry.model.clone(), entry);
        }
        Ok(Self {
            entries,
            version: OnceLock::new(),
        })
    }

    /// A table read from a price file: tollgate's own format (`{"models": [...]}`, as the
    /// bundled `prices.json`) or LiteLLM's `model_prices_and_context_window.json`. Only the file's
    /// entries, nothing bundled: a re-pricing asks what *that* table would have charged.
    pub fn from_file(text: &str) -> Result<Self, anyhow::Error> {
        let v: serde_json::Value = serde_json::from_str(text)?;
        let entries = if v.get("models").is_some_and(serde_json::Value::is_array) {
            let file: BundledFile = serde_json::from_value(v)?;
            file.models
                .into_iter()
                .map(BundledEntry::into_entry)
                .collect::<Result<Vec<_>, _>>()?
        } else {
            import_litellm(text)?
        };
        if entries.is_empty() {
            anyhow::bail!("the price file prices no model");
        }
        let mut t = Self::default();
        for e in entries {
            t.insert(e);
        }
        Ok(t)
    }

    /// The table's version: a content hash of every model's unit prices (`pt_` and 16 hex
    /// digits of SHA-256 over the sorted entries). Records keep the version that priced them,
    /// so an audit can say which table it was; display names and owners do not change it.
    pub fn version(&self) -> &str {
        self.version.get_or_init(|| {
            let mut models: Vec<&PriceEntry> = self.entries.values().collect();
            models.sort_by(|a, b| a.model.cmp(&b.model));
            let mut h = Sha256::new();
            for e in models {
                let p = e.prices;
                h.update(format!(
                    "{}\t{}\t{}\t{}\t{}\n",
                    e.model, p.input, p.output, p.cached_input, p.cache_write
                ));
            }
            format!("pt_{}", &hex::encode(h.finalize())[..16])
        })
    }

    /// Bundled table, then imported entries, then config overrides (last wins).
    pub fn build(
        imported: Vec<PriceEntry>,
        overrides: &std::collections::BTreeMap<String, PriceOverride>,
    ) -> Result<Self, anyhow::Error> {
        let mut table = Self::bundled()?;
        for e in imported {
            table.insert(e);
        }
        for (model, p) in overrides {
            table.insert(PriceEntry::from_override(model, p)?);
        }
        Ok(table)
    }

    pub fn insert(&mut self, e: PriceEntry) {
        self.entries.insert(e.model.clone(), e);
        self.version = OnceLock::new();
    }

    pub fn get(&self, model: &str) -> Option<&PriceEntry> {
        self.entries.get(model)
    }

    /// The price of a routed model, or the 404 that tells the operator how to add one.
    pub fn lookup(&self, model: &str) -> Result<&PriceEntry, DomainError> {
        self.get(model).ok_or_else(|| {
            DomainError::new(
                Code::ModelNotFound,
                format!("model {model} has no price; add [prices.\"{model}\"] to the config"),
            )
            .with_param("model")
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &PriceEntry> {
        self.entries.values()
    }
}

/// The cost of one request in nano-USD: each token class at its own unit price, summed exactly
/// and rounded once. `usage.input_tokens` includes cached reads and cache writes, so those are
/// taken out of the full-price input rather than counted twice.
///
/// Within the record bounds (tokens clamped to the per-request ceiling, prices at most
/// `bounds::MAX_UNIT_PRICE`) the result is at most `bounds::MAX_COST_NANOS`; outside them the
/// i128 arithmetic saturates and the result is held to that ceiling, never wrapped.
pub fn cost_nanos(usage: &Usage, p: &UnitPrices) -> i64 {
    let cached = usage.cached_tokens.min(usage.input_tokens);
    let writes = usage.cache_write_tokens.min(usage.input_tokens - cached);
    let plain = usage.input_tokens - cached - writes;
    // Each product fits i128 (u64 × i64); the sum saturates rather than overflow when both
    // tokens and prices are absurd, and the result is bounded (`bounds::MAX_COST_NANOS`), so a
    // cost is never negative and every sum of costs stays far from i64::MAX.
    let class =
        |tokens: u64, price: i64| i128::from(tokens).saturating_mul(i128::from(price.max(0)));
    let total: i128 = class(plain, p.input)
        .saturating_add(class(cached, p.cached_input))
        .saturating_add(class(writes, p.cache_write))
        .saturating_add(class(usage.output_tokens, p.output));
    let nanos = div_round_half_up(total.max(0), 1_000_000);
    i64::try_from(nanos)
        .unwrap_or(i64::MAX)
        .min(bounds::MAX_COST_NANOS)
}

impl PriceEntry {
    /// The cost of `usage` at this entry's prices.
    pub fn cost(&self, usage: &Usage) -> i64 {
        cost_nanos(usage, &self.prices)
    }

    /// The most a request with `input_tokens` of input and an output cap of `max_output` (the
    /// model's own cap when the client set none) can cost. Every input token is priced at the
    /// dearest input class (a cache write costs more than plain input at Anthropic), so no split
    /// of the input the upstream reports can cost more.
    pub fn max_cost(&self, input_tokens: u64, max_output: Option<u64>) -> i64 {
        let p = &self.prices;
        let dearest = UnitPrices {
            input: p.input.max(p.cached_input).max(p.cache_write),
            ..*p
        };
        cost_nanos(
            &Usage {
                input_tokens,
                output_tokens: max_output.unwrap_or(self.max_output_tokens),
                ..Usage::default()
            },
            &dearest,
        )
    }

    /// The most output tokens (all choices together) a request with `input_tokens` of input can
    /// produce for its account's charge to stay within `budget`: the largest N with
    /// `charge(max_cost(input, N)) <= budget` (`u64::MAX` when output is free to the account,
    /// e.g. bring-your-own-key without a fee). `None` when even the input alone is charged more
    /// than `budget`.
    pub fn max_output_within(
        &self,
        budget: i64,
        input_tokens: u64,
        source: Source,
        byok_fee_bps: i64,
    ) -> Option<u64> {
        let charged = |output: u64| {
            charge(
                source,
                self.max_cost(input_tokens, Some(output)),
                byok_fee_bps,
            )
        };
        if charged(0) > budget {
            return None;
        }
        // The charge only grows with the output: bisect for the last N that fits.
        let (mut lo, mut hi) = (0u64, u64::MAX);
        if charged(hi) <= budget {
            return Some(hi);
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if charged(mid) <= budget {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// What a request that used `usage` costs and what its account is charged.
    pub fn price(&self, usage: &Usage, source: Source, byok_fee_bps: i64) -> Priced {
        price(usage, &self.prices, source, byok_fee_bps)
    }
}

/// A request's cost (what the provider bills, whoever pays it) and charge (what the account's
/// credits are debited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priced {
    pub cost_nanos: i64,
    pub charged_nanos: i64,
}

/// What a request that used `usage` at unit prices `prices` costs, and what its account is
/// charged (for records whose prices were kept without their table entry).
pub fn price(usage: &Usage, prices: &UnitPrices, source: Source, byok_fee_bps: i64) -> Priced {
    let cost_nanos = cost_nanos(usage, prices);
    Priced {
        cost_nanos,
        charged_nanos: charge(source, cost_nanos, byok_fee_bps),
    }
}

/// What the account's credits are charged for a request of this `cost`: all of it when the
/// platform's provider key paid, the configured fee (basis points of the cost) when the
/// account's own key did.
pub fn charge(source: Source, cost: i64, byok_fee_bps: i64) -> i64 {
    match source {
        Source::Platform => cost,
        Source::User => {
            let fee = div_round_half_up(i128::from(cost) * i128::from(byok_fee_bps), 10_000);
            i64::try_from(fee).unwrap_or(i64::MAX)
        }
    }
}

/// Reads LiteLLM's `model_prices_and_context_window.json` (USD per token) into price entries.
/// Entries without both input and output prices, and the `sample_spec` entry, are skipped.
pub fn import_litellm(json: &str) -> Result<Vec<PriceEntry>, anyhow::Error> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)?;
    let mut out = Vec::new();
    for (model, v) in map {
        if model == "sample_spec" {
            continue;
        }
        let per_token = |key: &str| -> Result<Option<i64>, MoneyError> {
            match v.get(key) {
                // serde_json prints the shortest text that reads back as the same f64, which is
                // the text LiteLLM wrote; it is then parsed as decimal, scaled to nano-USD/Mtok.
                Some(serde_json::Value::Number(n)) => {
                    parse_decimal_scaled(&n.to_string(), 15).map(Some)
                }
                Some(serde_json::Value::String(s)) => parse_decimal_scaled(s, 15).map(Some),
                _ => Ok(None),
            }
        };
        let (Some(input), Some(output)) = (
            per_token("input_cost_per_token")?,
            per_token("output_cost_per_token")?,
        ) else {
            continue;
        };
        let cached_input = per_token("cache_read_input_token_cost")?.unwrap_or(input);
        let cache_write = per_token("cache_creation_input_token_cost")?.unwrap_or(input);
        // An entry priced beyond the record bounds is skipped like one without prices.
        if [input, output, cached_input, cache_write]
            .iter()
            .any(|p| *p > bounds::MAX_UNIT_PRICE)
        {
            continue;
        }
        let owned_by = v
            .get("litellm_provider")
            .and_then(|p| p.as_str())
            .unwrap_or("unknown")
            .to_string();
        let max_output_tokens = v
            .get("max_output_tokens")
            .or_else(|| v.get("max_tokens"))
            .and_then(|m| m.as_u64())
            .unwrap_or(4096);
        out.push(PriceEntry {
            display_name: model.clone(),
            model,
            owned_by,
            prices: UnitPrices {
                input,
                output,
                cached_input,
                cache_write,
            },
            max_output_tokens,
        });
    }
    out.sort_by(|a, b| a.model.cmp(&b.model));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, cached: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cached_tokens: cached,
            ..Usage::default()
        }
    }

    #[test]
    fn bundled_table_has_every_provider() {
        let t = PriceTable::bundled().unwrap();
        for owner in ["openai", "anthropic", "google", "deepseek", "mistral"] {
            assert!(t.iter().any(|e| e.owned_by == owner), "{owner}");
        }
        let e = t.get("gpt-4o").unwrap();
        assert_eq!(e.prices.input, 2_500_000_000);
        assert_eq!(e.prices.cached_input, 1_250_000_000);
    }

    #[test]
    fn cost_is_exact_and_rounded_once() {
        let p = PriceTable::bundled()
            .unwrap()
            .get("gpt-4o-mini")
            .unwrap()
            .prices;
        // 8 input at $0.15/M = 1200 nano; 12 output at $0.60/M = 7200 nano.
        assert_eq!(cost_nanos(&usage(8, 12, 0), &p), 8_400);
        // 1 input token of $0.075/M cached = 75 nano exactly.
        assert_eq!(cost_nanos(&usage(1, 0, 1), &p), 75);
        // a third of a nano rounds down, a half rounds up — once, on the total.
        let odd = UnitPrices {
            input: 333,
            output: 500,
            cached_input: 333,
            cache_write: 333,
        };
        assert_eq!(cost_nanos(&usage(1000, 0, 0), &odd), 0);
        assert_eq!(cost_nanos(&usage(1000, 1000, 0), &odd), 1);
        assert_eq!(cost_nanos(&usage(0, 1000, 0), &odd), 1);
    }

    #[test]
    fn cached_tokens_are_not_counted_twice() {
        let p = UnitPrices {
            input: 1_000_000_000,
            output: 0,
            cached_input: 100_000_000,
            cache_write: 1_250_000_000,
        };
        // 1000 input of which 400 cached reads and 100 cache writes.
        let u = Usage {
            input_tokens: 1000,
            cached_tokens: 400,
            cache_write_tokens: 100,
            ..Usage::default()
        };
        assert_eq!(cost_nanos(&u, &p), 500 * 1000 + 400 * 100 + 100 * 1250);
    }

    #[test]
    fn cost_never_wraps_and_stays_within_the_record_bounds() {
        let p = UnitPrices {
            input: i64::MAX,
            output: i64::MAX,
            cached_input: i64::MAX,
            cache_write: i64::MAX,
        };
        let u = Usage {
            input_tokens: u64::MAX,
            output_tokens: u64::MAX,
            cached_tokens: 1,
            cache_write_tokens: 1,
            ..Usage::default()
        };
        assert_eq!(cost_nanos(&u, &p), bounds::MAX_COST_NANOS);
        // At the ceilings the cost is exact and below the bound.
        let top = UnitPrices {
            input: bounds::MAX_UNIT_PRICE,
            output: bounds::MAX_UNIT_PRICE,
            cached_input: bounds::MAX_UNIT_PRICE,
            cache_write: bounds::MAX_UNIT_PRICE,
        };
        let n = bounds::MAX_TOKENS_PER_REQUEST;
        assert_eq!(cost_nanos(&usage(n, n, 0), &top), bounds::MAX_COST_NANOS);
    }

    #[test]
    fn prices_above_the_bound_are_refused() {
        let over = PriceOverride {
            input: toml::Value::String("10000.000000001".into()),
            output: toml::Value::String("1".into()),
            cached_input: None,
            cache_write: None,
            owned_by: None,
            display_name: None,
            max_output_tokens: None,
        };
        assert!(matches!(
            PriceEntry::from_override("m", &over),
            Err(MoneyError::OutOfRange(_))
        ));
        let json = r#"{"absurd": {"input_cost_per_token": 1, "output_cost_per_token": 1}}"#;
        assert!(import_litellm(json).unwrap().is_empty());
    }

    #[test]
    fn max_output_within_a_budget_is_the_last_token_that_fits() {
        let e = PriceTable::bundled()
            .unwrap()
            .get("gpt-4o")
            .unwrap()
            .clone();
        // 24 input at $2.50/M = 60,000; $10/M output = 10,000 a token.
        assert_eq!(
            e.max_output_within(1_000_000, 24, Source::Platform, 0),
            Some(94)
        );
        assert_eq!(e.max_output_within(59_999, 24, Source::Platform, 0), None);
        assert_eq!(
            e.max_output_within(60_000, 24, Source::Platform, 0),
            Some(0)
        );
        for budget in [70_000, 123_456, 9_999_999] {
            let n = e
                .max_output_within(budget, 24, Source::Platform, 0)
                .unwrap();
            assert!(e.max_cost(24, Some(n)) <= budget);
            assert!(e.max_cost(24, Some(n + 1)) > budget);
        }
        // Bring-your-own-key: only the fee counts; without one, output is free to the account.
        assert_eq!(e.max_output_within(0, 24, Source::User, 0), Some(u64::MAX));
        let n = e.max_output_within(1_000, 24, Source::User, 100).unwrap();
        assert!(charge(Source::User, e.max_cost(24, Some(n)), 100) <= 1_000);
        assert!(charge(Source::User, e.max_cost(24, Some(n + 1)), 100) > 1_000);
    }

    #[test]
    fn max_cost_prices_input_at_the_dearest_input_class() {
        let t = PriceTable::bundled().unwrap();
        let e = t.get("claude-sonnet-4-20250514").unwrap();
        // 1000 input at the cache-write price ($3.75/M), no output.
        assert_eq!(e.max_cost(1000, Some(0)), 3_750_000);
        let written = Usage {
            input_tokens: 1000,
            cache_write_tokens: 1000,
            ..Usage::default()
        };
        assert!(e.cost(&written) <= e.max_cost(1000, Some(0)));
    }

    #[test]
    fn imports_litellm_file() {
        let json = r#"{
            "sample_spec": {"input_cost_per_token": 0.0},
            "gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                        "cache_read_input_token_cost": 1.25e-06, "litellm_provider": "openai",
                        "max_output_tokens": 16384, "mode": "chat"},
            "image-model": {"output_cost_per_image": 0.04}
        }"#;
        let e = import_litellm(json).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].prices.input, 2_500_000_000);
        assert_eq!(e[0].prices.output, 10_000_000_000);
        assert_eq!(e[0].prices.cached_input, 1_250_000_000);
        assert_eq!(e[0].owned_by, "openai");
    }
}

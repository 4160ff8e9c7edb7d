//! Re-pricing: what recorded requests would have cost under another price table, per model and
//! in total, beside what they were charged. Pure: it folds records one at a time from the tokens
//! and unit prices each record keeps (the caller pages them out of the store), so it needs no
//! price table of the day and changes nothing.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{cost_nanos, PriceTable};
use crate::metering::Usage;
use crate::record::UsageRecord;

/// One model's requests, as charged and as the other table would have priced them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ModelReprice {
    pub model: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    /// The model cost recorded (whoever paid the provider).
    pub cost_nanos: i64,
    /// What the account's credits were debited (the cost, or the bring-your-own-key fee).
    pub charged_nanos: i64,
    /// The same tokens at the other table's prices; `None` when it has no price for the model.
    pub repriced_cost_nanos: Option<i64>,
    /// `repriced_cost_nanos - cost_nanos`.
    pub difference_nanos: Option<i64>,
    /// The other table's unit prices for the model (nano-USD per million tokens).
    pub repriced_prices: Option<super::UnitPrices>,
    /// Records whose own unit prices do not reproduce their recorded cost (0 unless a record
    /// was altered, or priced by a formula other than this one).
    pub unreproduced: i64,
}

/// Totals over every model. `repriced_cost_nanos` covers the models the other table prices;
/// `unpriced_cost_nanos` is the recorded cost of the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepriceTotals {
    pub requests: i64,
    pub cost_nanos: i64,
    pub charged_nanos: i64,
    pub repriced_cost_nanos: i64,
    pub unpriced_cost_nanos: i64,
    /// What the period would have cost under the other table (unpriced models at their
    /// recorded cost), minus what it cost.
    pub difference_nanos: i64,
    pub unreproduced: i64,
}

/// The fold: add records, then `finish`.
#[derive(Debug, Clone, Default)]
pub struct Repricing {
    models: BTreeMap<String, ModelReprice>,
    /// Records per price-table version that priced them (`"none"`: priced by no table, as refused requests are, or recorded before versions were kept).
    versions: BTreeMap<String, i64>,
}

/// The answer of `GET`/`POST /admin/reprice` and `tollgate prices reprice --json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Repriced {
    pub object: &'static str,
    /// The range re-priced, ms since the epoch (`None`: from the first / to the last record).
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// The version of the table re-priced with.
    pub price_version: String,
    pub totals: RepriceTotals,
    pub models: Vec<ModelReprice>,
    pub records_by_price_version: BTreeMap<String, i64>,
}

fn tokens(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Repricing {
    pub fn add(&mut self, r: &UsageRecord, table: &PriceTable) {
        let usage = Usage {
            input_tokens: tokens(r.input_tokens),
            output_tokens: tokens(r.output_tokens),
            cached_tokens: tokens(r.cached_tokens),
            cache_write_tokens: tokens(r.cache_write_tokens),
            reasoning_tokens: tokens(r.reasoning_tokens),
        };
        let own = super::UnitPrices {
            input: r.price_input,
            output: r.price_output,
            cached_input: r.price_cached_input,
            cache_write: r.price_cache_write,
        };
        let m = self
            .models
            .entry(r.model_requested.clone())
            .or_insert_with(|| {
                let prices = table.get(&r.model_requested).map(|e| e.prices);
                ModelReprice {
                    model: r.model_requested.clone(),
                    repriced_prices: prices,
                    repriced_cost_nanos: prices.map(|_| 0),
                    ..ModelReprice::default()
                }
            });
        m.requests += 1;
        m.input_tokens = m.input_tokens.saturating_add(r.input_tokens);
        m.output_tokens = m.output_tokens.saturating_add(r.output_tokens);
        m.cached_tokens = m.cached_tokens.saturating_add(r.cached_tokens);
        m.cache_write_tokens = m.cache_write_tokens.saturating_add(r.cache_write_tokens);
        m.cost_nanos = m.cost_nanos.saturating_add(r.cost_nanos);
        m.charged_nanos = m.charged_nanos.saturating_add(r.charged_nanos);
        if cost_nanos(&usage, &own) != r.cost_nanos {
            m.unreproduced += 1;
        }
        if let (Some(p), Some(sum)) = (m.repriced_prices, m.repriced_cost_nanos.as_mut()) {
            *sum = sum.saturating_add(cost_nanos(&usage, &p));
        }
        let v = r.price_version.as_deref().unwrap_or("none");
        *self.versions.entry(v.to_string()).or_default() += 1;
    }

    /// The report: re-priced with `table`, over `from..to` (as asked; `None` when open).
    pub fn finish(self, table: &PriceTable, from: Option<i64>, to: Option<i64>) -> Repriced {
        let mut t = RepriceTotals::default();
        let models: Vec<ModelReprice> = self
            .models
            .into_values()
            .map(|mut m| {
                m.difference_nanos = m.repriced_cost_nanos.map(|r| r - m.cost_nanos);
                t.requests += m.requests;
                t.cost_nanos = t.cost_nanos.saturating_add(m.cost_nanos);
                t.charged_nanos = t.charged_nanos.saturating_add(m.charged_nanos);
                t.unreproduced += m.unreproduced;
                match m.repriced_cost_nanos {
                    Some(r) => t.repriced_cost_nanos = t.repriced_cost_nanos.saturating_add(r),
                    None => {
                        t.unpriced_cost_nanos = t.unpriced_cost_nanos.saturating_add(m.cost_nanos)
                    }
                }
                m
            })
            .collect();
        t.difference_nanos = t
            .repriced_cost_nanos
            .saturating_add(t.unpriced_cost_nanos)
            .saturating_sub(t.cost_nanos);
        Repriced {
            object: "reprice",
            from,
            to,
            price_version: table.version().to_string(),
            totals: t,
            models,
            records_by_price_version: self.versions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::{PriceEntry, UnitPrices};

    fn rec(model: &str, input: i64, cached: i64, output: i64, p: UnitPrices) -> UsageRecord {
        let usage = Usage {
            input_tokens: input as u64,
            output_tokens: output as u64,
            cached_tokens: cached as u64,
            ..Usage::default()
        };
        let cost = cost_nanos(&usage, &p);
        serde_json::from_value(serde_json::json!({
            "request_id": "r", "created_at_ms": 0, "finished_at_ms": 0, "account_id": "a",
            "key_id": "k", "endpoint": "chat.completions", "model_requested": model,
            "model_served": model, "provider": "p", "owned_by": "o", "source": "platform",
            "input_tokens": input, "output_tokens": output, "cached_tokens": cached,
            "cache_write_tokens": 0, "reasoning_tokens": 0, "cost_nanos": cost,
            "charged_nanos": cost, "price_input": p.input, "price_output": p.output,
            "price_cached_input": p.cached_input, "price_cache_write": p.cache_write,
            "status": "success", "http_status": 200, "error_code": null, "latency_ms": 1,
            "ttft_ms": null, "streamed": false, "provenance": "provider",
            "price_version": "pt_a"
        }))
        .unwrap()
    }

    #[test]
    fn the_same_table_reproduces_and_another_gives_the_difference() {
        let p = UnitPrices {
            input: 2_500_000_000,
            output: 10_000_000_000,
            cached_input: 1_250_000_000,
            cache_write: 2_500_000_000,
        };
        let mut same = PriceTable::default();
        same.insert(PriceEntry {
            model: "m".into(),
            owned_by: "o".into(),
            display_name: "m".into(),
            prices: p,
            max_output_tokens: 10,
        });
        let records = [
            rec("m", 1000, 400, 50, p),
            rec("m", 7, 0, 3, p),
            rec("x", 5, 0, 5, p),
        ];
        let mut f = Repricing::default();
        records.iter().for_each(|r| f.add(r, &same));
        let out = f.finish(&same, None, None);
        let m = &out.models[0];
        assert_eq!(m.repriced_cost_nanos, Some(m.cost_nanos));
        assert_eq!(out.totals.difference_nanos, 0);
        assert_eq!(out.totals.unpriced_cost_nanos, records[2].cost_nanos);
        assert_eq!(out.models[1].repriced_cost_nanos, None);
        assert_eq!(out.records_by_price_version["pt_a"], 3);

        // Input at twice the price: 600 plain + 7 plain tokens more, at 2,500 nano-USD each.
        let mut dear = same.clone();
        dear.insert(PriceEntry {
            prices: UnitPrices {
                input: 5_000_000_000,
                ..p
            },
            ..same.get("m").unwrap().clone()
        });
        let mut f = Repricing::default();
        records.iter().for_each(|r| f.add(r, &dear));
        let out = f.finish(&dear, None, None);
        assert_eq!(out.models[0].difference_nanos, Some(607 * 2_500));
        assert_eq!(out.totals.difference_nanos, 607 * 2_500);
        assert_eq!(out.totals.unreproduced, 0);
    }
}

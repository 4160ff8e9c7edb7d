//! Property tests of what untrusted input reaches: the usage parsers (upstream JSON and SSE
//! events), and the money arithmetic every charge goes through. Arbitrary input must never
//! panic, and numbers must come out exact (or saturated), never wrapped or negative.
//!
//! 256 cases per property by default so CI stays fast; `PROPTEST_CASES=100000 cargo test -p
//! tollgate-core --test properties` runs a longer search.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tollgate_core::metering::usage::{
    from_anthropic_usage, from_openai_usage, from_response_bytes, StreamMeter,
};
use tollgate_core::metering::Usage;
use tollgate_core::money::{
    div_round_half_up, nanos_to_usd_string, parse_decimal_scaled, usd_per_mtok_to_nanos,
};
use tollgate_core::pricing::{charge, cost_nanos, UnitPrices};
use tollgate_core::record::bounds::{MAX_TOKENS_PER_REQUEST, MAX_UNIT_PRICE};
use tollgate_core::record::{Endpoint, Source};

fn config() -> ProptestConfig {
    // PROPTEST_CASES, when set, still wins (ProptestConfig::default reads it).
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig::with_cases(cases)
}

/// Keys the parsers look for, mixed with noise, so generated objects hit the interesting paths.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("usage".to_string()),
        Just("model".to_string()),
        Just("choices".to_string()),
        Just("message".to_string()),
        Just("error".to_string()),
        Just("prompt_tokens".to_string()),
        Just("completion_tokens".to_string()),
        Just("prompt_tokens_details".to_string()),
        Just("completion_tokens_details".to_string()),
        Just("cached_tokens".to_string()),
        Just("reasoning_tokens".to_string()),
        Just("input_tokens".to_string()),
        Just("output_tokens".to_string()),
        Just("cache_read_input_tokens".to_string()),
        Just("cache_creation_input_tokens".to_string()),
        "[a-z_]{0,8}",
    ]
}

/// Numbers an upstream might send, honest or not.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        (0u64..100_000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        Just(Endpoint::ChatCompletions),
        Just(Endpoint::Embeddings),
        Just(Endpoint::Messages),
    ]
}

fn usage() -> impl Strategy<Value = Usage> {
    let n = prop_oneof![any::<u64>(), 0u64..1_000_000, Just(u64::MAX), Just(0)];
    (n.clone(), n.clone(), n.clone(), n.clone(), n).prop_map(|(i, o, c, w, r)| Usage {
        input_tokens: i,
        output_tokens: o,
        cached_tokens: c,
        cache_write_tokens: w,
        reasoning_tokens: r,
    })
}

fn prices() -> impl Strategy<Value = UnitPrices> {
    let p = prop_oneof![
        0i64..=i64::MAX,
        0i64..1_000_000_000_000,
        Just(i64::MAX),
        Just(0)
    ];
    (p.clone(), p.clone(), p.clone(), p).prop_map(|(input, output, cached_input, cache_write)| {
        UnitPrices {
            input,
            output,
            cached_input,
            cache_write,
        }
    })
}

proptest! {
    #![proptest_config(config())]

    // ---- usage parsers ----

    #[test]
    fn usage_parsers_never_panic_on_any_json(v in json_value()) {
        let _ = from_openai_usage(&v);
        let _ = from_anthropic_usage(&v);
        if let Some(u) = v.get("usage") {
            let _ = from_openai_usage(u);
            let _ = from_anthropic_usage(u);
        }
    }

    #[test]
    fn openai_usage_numbers_are_read_verbatim(p in any::<u64>(), c in any::<u64>(),
                                              cached in any::<u64>(), r in any::<u64>()) {
        let u = from_openai_usage(&json!({
            "prompt_tokens": p, "completion_tokens": c,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": r},
        })).unwrap();
        prop_assert_eq!((u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens),
                        (p, c, cached, r));
    }

    /// Anthropic's three input fields are added; the sum saturates rather than wrapping (or
    /// panicking) when an upstream reports absurd numbers.
    #[test]
    fn anthropic_input_is_the_saturating_sum(i in any::<u64>(), read in any::<u64>(),
                                             write in any::<u64>(), o in any::<u64>()) {
        let u = from_anthropic_usage(&json!({
            "input_tokens": i, "output_tokens": o,
            "cache_read_input_tokens": read, "cache_creation_input_tokens": write,
        })).unwrap();
        prop_assert_eq!(u.input_tokens, i.saturating_add(read).saturating_add(write));
        prop_assert_eq!((u.output_tokens, u.cached_tokens, u.cache_write_tokens), (o, read, write));
        prop_assert!(u.input_tokens >= u.cached_tokens.max(u.cache_write_tokens));
    }

    #[test]
    fn response_bytes_never_panic(api in endpoint(), body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = from_response_bytes(api, &body);
    }

    /// A whole response body yields what its `usage` object yields, and the served model.
    #[test]
    fn response_bytes_agree_with_the_usage_object(api in endpoint(), v in json_value(), model in "[a-z0-9-]{1,12}") {
        let usage = v.get("usage").cloned().unwrap_or(v);
        let body = serde_json::to_vec(&json!({"id": "x", "model": model, "usage": usage})).unwrap();
        let (got, served) = from_response_bytes(api, &body);
        let want = match api {
            Endpoint::Messages => from_anthropic_usage(&usage),
            _ => from_openai_usage(&usage),
        };
        prop_assert_eq!(got, want);
        prop_assert_eq!(served, Some(model));
    }

    #[test]
    fn stream_meter_never_panics_on_any_events(
        api in endpoint(),
        wants in any::<bool>(),
        events in prop::collection::vec((
            prop_oneof![
                Just(String::new()), Just("message_start".to_string()),
                Just("message_delta".to_string()), Just("content_block_delta".to_string()),
                Just("message_stop".to_string()), Just("error".to_string()), ".{0,8}",
            ],
            prop_oneof![
                json_value().prop_map(|v| v.to_string()),
                json_value().prop_map(|v| json!({"message": v}).to_string()),
                Just("[DONE]".to_string()),
                ".{0,40}",
            ],
        ), 0..12),
    ) {
        let mut m = StreamMeter::new(api, wants);
        for (event, data) in &events {
            let _ = m.on_event(event, data);
        }
        let _ = (m.reported(), m.reported_input(), m.model(), m.estimate_output());
    }

    /// An Anthropic stream's usage is message_start's input and message_delta's final output,
    /// whatever the numbers.
    #[test]
    fn anthropic_stream_usage_is_start_input_and_final_delta_output(
        i in any::<u64>(), read in any::<u64>(), o1 in any::<u64>(), o2 in any::<u64>()
    ) {
        let mut m = StreamMeter::new(Endpoint::Messages, false);
        let start = json!({"type": "message_start", "message": {"model": "claude-x",
            "usage": {"input_tokens": i, "cache_read_input_tokens": read, "output_tokens": o1}}});
        m.on_event("message_start", &start.to_string());
        prop_assert!(m.reported().is_none(), "message_start's output count is a placeholder");
        let delta = json!({"type": "message_delta", "usage": {"output_tokens": o2}});
        m.on_event("message_delta", &delta.to_string());
        let u = m.reported().unwrap();
        prop_assert_eq!(u.input_tokens, i.saturating_add(read));
        prop_assert_eq!(u.output_tokens, o2);
        prop_assert_eq!(m.model(), Some("claude-x"));
    }

    /// An OpenAI stream's usage chunk is read whatever the numbers; it is hidden from a client
    /// that did not ask for it and shown to one that did.
    #[test]
    fn openai_stream_usage_chunk(p in any::<u64>(), c in any::<u64>(), wants in any::<bool>()) {
        let mut m = StreamMeter::new(Endpoint::ChatCompletions, wants);
        let content = json!({"model": "gpt-x", "choices": [{"delta": {"content": "hi"}}]});
        m.on_event("", &content.to_string());
        let chunk = json!({"choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c}});
        let action = m.on_event("", &chunk.to_string());
        let u = m.reported().unwrap();
        prop_assert_eq!((u.input_tokens, u.output_tokens), (p, c));
        prop_assert_eq!(
            action,
            if wants { tollgate_core::metering::usage::EventAction::Forward }
            else { tollgate_core::metering::usage::EventAction::Drop }
        );
    }

    // ---- money ----

    #[test]
    fn parse_decimal_never_panics_on_any_text(text in ".{0,40}", scale in -40i32..40) {
        let _ = parse_decimal_scaled(&text, scale);
    }

    /// Number-shaped text, including exponents near i32's limits and very long digit runs.
    #[test]
    fn parse_decimal_never_panics_on_numberish_text(
        text in r"[+-]?[0-9]{0,45}(\.[0-9]{0,45})?([eE][+-]?[0-9]{1,11})?",
        scale in prop_oneof![-40i32..40, Just(i32::MAX), Just(i32::MIN)],
    ) {
        if let Ok(v) = parse_decimal_scaled(&text, scale) {
            prop_assert!(v >= 0, "{} -> {}", text, v);
        }
    }

    #[test]
    fn huge_exponents_are_out_of_range_not_a_panic(exp in prop_oneof![
        Just(i32::MAX), Just(i32::MIN), Just(i32::MAX - 5), Just(i32::MIN + 5), any::<i32>()
    ], scale in -40i32..40) {
        let _ = parse_decimal_scaled(&format!("1e{exp}"), scale);
        let _ = parse_decimal_scaled(&format!("0.5e{exp}"), scale);
        let _ = parse_decimal_scaled(&format!("0e{exp}"), scale);
    }

    /// Decimal text of an exact number of nano-USD parses back to exactly that number.
    #[test]
    fn usd_text_round_trips_exactly(n in 0i64..=i64::MAX) {
        let text = nanos_to_usd_string(n);
        prop_assert_eq!(parse_decimal_scaled(&text, 9), Ok(n));
        // Per-million-token prices use the same scale.
        prop_assert_eq!(usd_per_mtok_to_nanos(&text), Ok(n));
    }

    /// `digits` with a decimal point `k` places from the right, at scale `s` ≥ `k`: the integer
    /// times 10^(s-k), exactly, or out of range; never rounded.
    #[test]
    fn parse_decimal_is_exact(n in any::<u64>(), k in 0usize..12, s in 0i32..20) {
        let digits = n.to_string();
        let text = if k == 0 {
            digits.clone()
        } else if k < digits.len() {
            format!("{}.{}", &digits[..digits.len() - k], &digits[digits.len() - k..])
        } else {
            format!("0.{}{}", "0".repeat(k - digits.len()), digits)
        };
        let got = parse_decimal_scaled(&text, s);
        if s >= k as i32 {
            let want = i128::from(n).checked_mul(10i128.pow((s - k as i32) as u32));
            match want.and_then(|w| i64::try_from(w).ok()) {
                Some(w) => prop_assert_eq!(got, Ok(w), "{}", text),
                None => prop_assert!(got.is_err(), "{} at scale {} -> {:?}", text, s, got),
            }
        } else if n % 10u64.pow(k as u32 - s as u32) != 0 {
            prop_assert!(got.is_err(), "{} at scale {} lost digits: {:?}", text, s, got);
        }
    }

    /// Half up: the quotient, plus one exactly when the remainder is at least half the divisor.
    /// No overflow anywhere in the non-negative range.
    #[test]
    fn div_round_half_up_is_exact(n in 0i128..=i128::MAX, d in prop_oneof![
        1i128..=i128::MAX, 1i128..10_000_000, Just(1_000_000), Just(i128::MAX)
    ]) {
        let got = div_round_half_up(n, d);
        let (q, r) = (n / d, n % d);
        let up = (r as u128) * 2 >= d as u128;
        prop_assert_eq!(got, if up { q + 1 } else { q });
    }

    // ---- pricing ----

    /// Any usage an upstream can report, at any non-negative prices: no panic, never negative,
    /// saturating at i64::MAX rather than wrapping.
    #[test]
    fn cost_never_panics_or_goes_negative(u in usage(), p in prices()) {
        let c = cost_nanos(&u, &p);
        prop_assert!(c >= 0, "{:?} at {:?} -> {}", u, p, c);
    }

    /// More output never costs less.
    #[test]
    fn cost_is_monotone_in_output(u in usage(), p in prices(), extra in any::<u64>()) {
        let more = Usage { output_tokens: u.output_tokens.saturating_add(extra), ..u };
        prop_assert!(cost_nanos(&more, &p) >= cost_nanos(&u, &p));
    }

    /// Within the bounds a record can have (tokens per class at most
    /// `MAX_TOKENS_PER_REQUEST`, unit prices at most `MAX_UNIT_PRICE`) the cost is exact: the sum
    /// of each class at its price, rounded once, half up.
    #[test]
    fn cost_is_exact_at_realistic_magnitudes(
        input in 0u64..=MAX_TOKENS_PER_REQUEST, out in 0u64..=MAX_TOKENS_PER_REQUEST,
        cached in 0u64..=MAX_TOKENS_PER_REQUEST, writes in 0u64..=MAX_TOKENS_PER_REQUEST,
        pi in 0i64..=MAX_UNIT_PRICE, po in 0i64..=MAX_UNIT_PRICE,
        pc in 0i64..=MAX_UNIT_PRICE, pw in 0i64..=MAX_UNIT_PRICE,
    ) {
        let u = Usage { input_tokens: input, output_tokens: out, cached_tokens: cached,
                        cache_write_tokens: writes, reasoning_tokens: 0 };
        let p = UnitPrices { input: pi, output: po, cached_input: pc, cache_write: pw };
        let cached = cached.min(input);
        let writes = writes.min(input - cached);
        let plain = input - cached - writes;
        let total = plain as u128 * pi as u128 + cached as u128 * pc as u128
            + writes as u128 * pw as u128 + out as u128 * po as u128;
        let want = (total + 500_000) / 1_000_000;
        let want = i64::try_from(want).unwrap_or(i64::MAX);
        prop_assert_eq!(cost_nanos(&u, &p), want);
    }

    /// The platform's key: the whole cost. The account's own key: its fee, between zero and
    /// the cost for any fee up to 100%; no fee value panics.
    #[test]
    fn charge_is_bounded_by_the_cost(cost in 0i64..=i64::MAX, bps in 0i64..=10_000, any_bps in any::<i64>()) {
        prop_assert_eq!(charge(Source::Platform, cost, bps), cost);
        let fee = charge(Source::User, cost, bps);
        prop_assert!((0..=cost).contains(&fee), "{} bps of {} -> {}", bps, cost, fee);
        let _ = charge(Source::User, cost, any_bps);
    }
}

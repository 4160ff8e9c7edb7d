//! What a request's fingerprints cost on the hot path: the per-account key derivation and the
//! two keyed hashes `Engine::fingerprints` takes once the body is checked, timed on bodies
//! already parsed (the proxy parses every body anyway), for three sizes of chat request.
//!
//!   cargo run --release -p tollgate --example fingerprint_bench
//!
//! Prints one line per body and a machine-readable `FINGERPRINT` line for bench/run.sh.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use serde_json::{json, Value};
use tollgate_core::fingerprint::FingerprintSecret;
use tollgate_core::record::Endpoint;

/// A conversation of `turns` user/assistant pairs of `words` words each, with a system prompt
/// and (from 10 turns on) a tool definition, as agents send them.
fn conversation(turns: usize, words: usize) -> Value {
    let text = |i: usize| {
        (0..words)
            .map(|w| format!("word{}", (i * 31 + w) % 977))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut messages = vec![json!({"role": "system", "content": "You are a helpful assistant."})];
    for t in 0..turns {
        messages.push(json!({"role": "user", "content": text(2 * t)}));
        if t + 1 < turns {
            messages.push(json!({"role": "assistant", "content": text(2 * t + 1)}));
        }
    }
    let mut body = json!({"model": "gpt-4o-mini", "messages": messages, "temperature": 0.2});
    if turns >= 10 {
        body["tools"] = json!([{"type": "function", "function": {"name": "search",
            "description": "Search the web", "parameters": {"type": "object",
            "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]);
    }
    body
}

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let secret = FingerprintSecret::derive(&[7; 32]);
    let bodies = [
        (
            "bench",
            serde_json::from_str::<Value>(
                r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello world"}]}"#,
            )
            .unwrap(),
        ),
        ("10turns", conversation(10, 15)),
        ("50turns", conversation(50, 40)),
    ];
    let mut line = String::from("FINGERPRINT");
    for (name, body) in &bodies {
        let bytes = serde_json::to_vec(body).unwrap().len();
        let n = if bytes > 10_000 {
            iterations / 20
        } else {
            iterations
        };
        let t = Instant::now();
        for i in 0..n {
            // A key per request, as the proxy derives it: the account id varies.
            let account = if i % 2 == 0 { "acct_a" } else { "acct_b" };
            let key = secret.for_account(black_box(account));
            black_box(key.fingerprints(Endpoint::ChatCompletions, black_box(body)));
        }
        let ns = t.elapsed().as_nanos() as f64 / f64::from(n);
        println!("{name}: {bytes} bytes, {ns:.0} ns per request ({n} requests)");
        line.push_str(&format!(" {name}_bytes={bytes} {name}_ns={ns:.0}"));
    }
    println!("{line}");
}

//! Recording benchmark: drives the ledger alone (journal + batch writer into a fresh SQLite
//! store, rollups included), with no HTTP in front, and prints how many records per second it
//! sustains from the first `record()` until every record is committed.
//!
//!   cargo run --release -p tollgate --example ledger_bench -- --records 300000
//!
//! Options: `--records N` (300,000), `--producers P` (tasks calling `Ledger::record`
//! concurrently, 64), `--dir PATH` (a fresh temp dir), `--fsync-ms MS` (the journal's fsync
//! interval, 1000 as configured by default), `--batch-max N` (records per store transaction at
//! most, `store.batch_max` by default). The records look like a live gateway's: a request
//! id from the gateway's own generator, arrival times advancing with the clock, 20 accounts,
//! 4 keys each, 4 models, a few statuses. The last line is machine-readable:
//! `LEDGER records=N secs=S records_per_sec=R`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_core::record::{Endpoint, Provenance, Source, Status, UsageRecord};
use tollgate_core::store::RecordStore;
use tollgate_engine::ledger::{Ledger, LedgerOptions};
use tollgate_store::SqliteStore;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MODELS: &[(&str, i64, i64)] = &[
    ("gpt-4o-mini", 150_000_000, 600_000_000),
    ("gpt-4o", 2_500_000_000, 10_000_000_000),
    ("gpt-4.1-mini", 400_000_000, 1_600_000_000),
    ("claude-sonnet-4-20250514", 3_000_000_000, 15_000_000_000),
];

fn record(i: u64) -> UsageRecord {
    let now = tollgate_core::id::now_ms();
    let account = i % 20;
    let (model, p_in, p_out) = MODELS[(i % MODELS.len() as u64) as usize];
    let (input, output) = (12 + (i % 50) as i64, 16 + (i % 7) as i64);
    let cost = (input * p_in + output * p_out) / 1_000_000;
    let status = if i % 100 == 99 {
        Status::Cancelled
    } else {
        Status::Success
    };
    UsageRecord {
        request_id: tollgate_core::id::request_id(),
        created_at_ms: now - 3,
        finished_at_ms: now,
        account_id: format!("acct_{account:02}"),
        key_id: format!("key_{account:02}_{}", i % 4),
        endpoint: Endpoint::ChatCompletions,
        model_requested: model.to_string(),
        model_served: model.to_string(),
        provider: "mock".to_string(),
        owned_by: "openai".to_string(),
        source: Source::Platform,
        input_tokens: input,
        output_tokens: output,
        cached_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        cost_nanos: cost,
        charged_nanos: cost,
        price_input: p_in,
        price_output: p_out,
        price_cached_input: 0,
        price_cache_write: 0,
        status,
        http_status: 200,
        error_code: (status == Status::Cancelled).then(|| "client_disconnected".to_string()),
        latency_ms: 3,
        ttft_ms: Some(1),
        streamed: i & 1 == 0,
        provenance: Provenance::Provider,
        anomaly: None,
        user: None,
        tags: Default::default(),
        price_version: Some("pt_ledgerbench000".into()),
        fingerprint: None,
        conversation: None,
    }
}

fn main() {
    let mut records: u64 = 300_000;
    let mut producers: u64 = 64;
    let mut dir: Option<PathBuf> = None;
    let mut fsync_ms: u64 = 1000;
    let mut batch_max: usize = tollgate_core::config::Config::default().store.batch_max;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--records" => records = it.next().unwrap().replace('_', "").parse().unwrap(),
            "--producers" => producers = it.next().unwrap().parse().unwrap(),
            "--dir" => dir = Some(PathBuf::from(it.next().unwrap())),
            "--fsync-ms" => fsync_ms = it.next().unwrap().parse().unwrap(),
            "--batch-max" => batch_max = it.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Arc::new(SqliteStore::open(&dir.join("tollgate.db")).unwrap());
        let opts = LedgerOptions {
            journal_dir: dir.join("journal"),
            segment_bytes: 16 * 1024 * 1024,
            batch_max,
            fsync_interval: Duration::from_millis(fsync_ms),
            dead_letter_path: dir.join("dead-letter.ndjson"),
        };
        let ledger = Ledger::start(
            store.clone(),
            opts,
            Vec::new(),
            tollgate_engine::settle::interrupted_record,
        )
        .await
        .unwrap();
        let started = Instant::now();
        let per = records / producers.max(1);
        let total = per * producers.max(1);
        let mut tasks = Vec::new();
        for p in 0..producers.max(1) {
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                for j in 0..per {
                    ledger.record(record(p * per + j));
                    // A request's task records once and ends: let the others (and the writer)
                    // run between records, as the gateway's tasks do.
                    if j % 8 == 7 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let journaled = started.elapsed();
        // A flush waits at most 3 s; a long backlog takes a few.
        let mut flushed = false;
        for _ in 0..100 {
            if ledger.flush().await {
                flushed = true;
                break;
            }
        }
        assert!(flushed, "the writer did not catch up");
        let secs = started.elapsed().as_secs_f64();
        let rows = store.count_usage().await.unwrap();
        assert_eq!(rows as u64, total, "every record committed exactly once");
        println!(
            "ledger: {total} records from {producers} producers: journaled in {:.3}s, all \
             committed to SQLite in {secs:.3}s",
            journaled.as_secs_f64()
        );
        println!(
            "LEDGER records={total} secs={secs:.3} records_per_sec={:.0}",
            total as f64 / secs
        );
        ledger.close().await;
    });
}

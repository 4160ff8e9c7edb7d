//! Usage-API benchmark: loads N synthetic usage records into a fresh tollgate data dir (straight
//! through `Store::insert_usage`, the batch writer's own path, so records and rollups are written
//! exactly as in production, in big transactions), then times every usage endpoint over HTTP on
//! 127.0.0.1 and the 30-day per-model per-day rollup read on its own.
//!
//!   cargo run --release -p tollgate --example usage_bench -- --records 1000000
//!
//! Options: `--records N` (1,000,000), `--dir PATH` (target/usage-bench/N; reused when it already
//! holds N records), `--iterations K` (200 timed requests per endpoint, after 20 untimed),
//! `--export` (also stream the whole benchmark account as CSV and report rows/s and peak RSS),
//! `--out FILE` (append the Markdown report there), `--postgres URL` (use the PostgreSQL store in
//! that database instead of SQLite; see below), `--no-attribution` (records without end users
//! or tags, to price the attribution rollups).
//!
//! With `--postgres postgres://user@host:port/db` the records go into that database, through the
//! same `insert_usage` (the PostgreSQL store's monthly partitions, rollups and credit debits), the
//! gateway runs on it, and `--dir` (default target/usage-bench/pg-N) holds only its journal. The
//! database is reused when it already holds N records from this benchmark (a `usage_bench_meta`
//! table says so); a database this benchmark loaded with another N is emptied (its `public`
//! schema dropped) and loaded again; any other non-empty database is refused. After loading, the
//! rollup tables are vacuumed (the load's upserts leave them mostly dead tuples, which a live
//! gateway's autovacuum keeps at a fraction) and every table is ANALYZEd.
//!
//! Data: 90 days of requests ending 2026-06-30T12:00Z, 50 accounts; the benchmarked account makes
//! 20% of them (so at 10M records it has ~2M, ~900 per hour) over 4 keys, 10 models, platform
//! and bring-your-own-key sources, 3 endpoints, 3 statuses; half the requests name one of 1,000
//! end users, 80% carry a `feature` tag (of 8) and 30% a `team` tag (of 4).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tollgate::clock::ManualClock;
use tollgate::{Application, Config};
use tollgate_core::account::{KeyLimits, Role};
use tollgate_core::attribution::Tags;
use tollgate_core::calendar::DAY_MS;
use tollgate_core::config::StoreKind;
use tollgate_core::record::Provenance;
use tollgate_core::record::{Endpoint, Source, Status, UsageRecord};
use tollgate_core::rollup::{cover, Dims, RollupFilter};

const NOW_MS: i64 = 1_782_820_800_000; // 2026-06-30T12:00:00Z
const SPAN_DAYS: i64 = 90;
const ACCOUNTS: usize = 50;
const BATCH: usize = 20_000;

/// (model, provider, owned_by, USD nanos per token in, out)
const MODELS: &[(&str, &str, &str, i64, i64)] = &[
    ("gpt-4o", "openai", "openai", 2_500, 10_000),
    ("gpt-4o-mini", "openai", "openai", 150, 600),
    ("gpt-4.1", "openai", "openai", 2_000, 8_000),
    ("gpt-4.1-mini", "openai", "openai", 400, 1_600),
    ("o3-mini", "openai", "openai", 1_100, 4_400),
    ("gpt-5-mini", "openai", "openai", 250, 2_000),
    ("text-embedding-3-small", "openai", "openai", 20, 0),
    (
        "claude-sonnet-4-20250514",
        "anthropic",
        "anthropic",
        3_000,
        15_000,
    ),
    (
        "claude-3-5-haiku-20241022",
        "anthropic",
        "anthropic",
        800,
        4_000,
    ),
    ("claude-opus-4-1", "anthropic", "anthropic", 15_000, 75_000),
];

struct Args {
    records: u64,
    dir: PathBuf,
    iterations: usize,
    export: bool,
    out: Option<PathBuf>,
    postgres: Option<String>,
    /// Records name end users and carry tags (`--no-attribution`: none do).
    attribution: bool,
    /// Every record in the benchmarked account (`--single-account`), so the insights scan all N.
    single: bool,
    /// Only the queries whose name contains this (`--only TEXT`).
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        records: 1_000_000,
        dir: PathBuf::new(),
        iterations: 200,
        export: false,
        out: None,
        postgres: None,
        attribution: true,
        single: false,
        only: None,
    };
    let mut dir = None;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--records" => a.records = it.next().unwrap().replace('_', "").parse().unwrap(),
            "--dir" => dir = Some(PathBuf::from(it.next().unwrap())),
            "--iterations" => a.iterations = it.next().unwrap().parse().unwrap(),
            "--export" => a.export = true,
            "--out" => a.out = Some(PathBuf::from(it.next().unwrap())),
            "--postgres" => a.postgres = Some(it.next().unwrap()),
            "--no-attribution" => a.attribution = false,
            "--single-account" => a.single = true,
            "--only" => a.only = Some(it.next().unwrap()),
            other => panic!("unknown argument {other}"),
        }
    }
    let prefix = if a.postgres.is_some() { "pg-" } else { "" };
    let suffix = if a.single { "-single" } else { "" };
    a.dir = dir.unwrap_or_else(|| {
        PathBuf::from(format!("target/usage-bench/{prefix}{}{suffix}", a.records))
    });
    a
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    records: u64,
    admin_key: String,
    user_key: String,
    account_id: String,
    load_secs: f64,
}

// The generator's knobs, one argument each: a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn record(
    rng: &mut StdRng,
    i: u64,
    n: u64,
    accounts: &[String],
    bench_key: &str,
    attribution: bool,
    single: bool,
    recent: &mut [i64; 64],
) -> UsageRecord {
    let span = SPAN_DAYS * DAY_MS;
    let start = NOW_MS - span;
    // Spread evenly in time (monotonic, as a live gateway writes), with jitter inside a slot.
    let slot = span as f64 / n as f64;
    let t = start + (i as f64 * slot) as i64 + rng.gen_range(0..(slot as i64).max(1));
    let a = if single || rng.gen_bool(0.2) {
        0
    } else {
        rng.gen_range(1..accounts.len())
    };
    let k = rng.gen_range(0..4);
    let key_id = if a == 0 && k == 0 {
        bench_key.to_string()
    } else {
        format!("key_{a:02}_{k}")
    };
    let (model, provider, owned_by, p_in, p_out) = MODELS[rng.gen_range(0..MODELS.len())];
    let endpoint = if model.starts_with("text-embedding") {
        Endpoint::Embeddings
    } else if provider == "anthropic" && rng.gen_bool(0.7) {
        Endpoint::Messages
    } else {
        Endpoint::ChatCompletions
    };
    let status = match rng.gen_range(0..100) {
        0..=96 => Status::Success,
        97..=98 => Status::Error,
        _ => Status::Cancelled,
    };
    let source = if rng.gen_bool(0.1) {
        Source::User
    } else {
        Source::Platform
    };
    let input = rng.gen_range(20..4_000i64);
    let output = if endpoint == Endpoint::Embeddings || status == Status::Error {
        0
    } else {
        rng.gen_range(1..1_500i64)
    };
    let cached = if rng.gen_bool(0.3) { input / 2 } else { 0 };
    let cost = input * p_in + output * p_out;
    // Attribution as a platform serving its customers would send it: half the requests name
    // one of 1,000 end users, and most carry a feature tag (of 8) and some a team tag (of 4).
    let user = rng
        .gen_bool(0.5)
        .then(|| format!("user_{:04}", rng.gen_range(0..1_000)));
    let mut tags = Vec::new();
    if rng.gen_bool(0.8) {
        tags.push(format!("feature=f{}", rng.gen_range(0..8)));
    }
    if rng.gen_bool(0.3) {
        tags.push(format!("team=t{}", rng.gen_range(0..4)));
    }
    let tags = Tags::parse(&tags.join(",")).unwrap_or_default();
    // Fingerprints: 3% of requests repeat one of the last 64 (duplicates and retries); each
    // account's requests open one of 20,000 conversations.
    let fingerprint = if rng.gen_bool(0.03) {
        recent[rng.gen_range(0..recent.len())]
    } else {
        let fp = rng.gen::<i64>();
        recent[(i % 64) as usize] = fp;
        fp
    };
    let conversation =
        (endpoint != Endpoint::Embeddings).then(|| (a as i64) << 32 | rng.gen_range(0..20_000));
    let (user, tags) = if attribution {
        (user, tags)
    } else {
        (None, Tags::default())
    };
    UsageRecord {
        request_id: format!("req_{i:016x}"),
        created_at_ms: t,
        finished_at_ms: t + 900,
        account_id: accounts[a].clone(),
        key_id,
        endpoint,
        model_requested: model.into(),
        model_served: model.into(),
        provider: provider.into(),
        owned_by: owned_by.into(),
        source,
        input_tokens: input,
        output_tokens: output,
        cached_tokens: cached,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        cost_nanos: cost,
        charged_nanos: if source == Source::Platform { cost } else { 0 },
        price_input: p_in * 1_000_000,
        price_output: p_out * 1_000_000,
        price_cached_input: p_in * 1_000_000,
        price_cache_write: p_in * 1_000_000,
        status,
        http_status: if status == Status::Error { 500 } else { 200 },
        error_code: (status == Status::Error).then(|| "upstream_error".into()),
        latency_ms: 900,
        ttft_ms: Some(200),
        streamed: rng.gen_bool(0.5),
        provenance: Provenance::Provider,
        anomaly: None,
        user,
        tags,
        price_version: Some("pt_usagebench0000".into()),
        fingerprint: Some(fingerprint),
        conversation,
    }
}

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// A direct connection to the benchmark's PostgreSQL database (for its own bookkeeping, size
/// and ANALYZE; the gateway uses its store).
async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("--postgres {url}: {e}"));
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("postgres connection: {e}");
        }
    });
    client
}

/// What this benchmark saved in the PostgreSQL database: `Ok(saved)` if it loaded it (None if the
/// load did not finish), `Err(())` for an empty database; a database this benchmark did not load
/// is refused.
async fn pg_saved(pg: &tokio_postgres::Client) -> Result<Option<Saved>, ()> {
    let has_meta = pg
        .query_one(
            "SELECT to_regclass('public.usage_bench_meta') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get::<_, bool>(0);
    if !has_meta {
        let tables: i64 = pg
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            tables == 0,
            "the --postgres database has {tables} tables and no usage_bench_meta: \
             not one this benchmark loaded; give it an empty database"
        );
        return Err(());
    }
    let row = pg
        .query_opt("SELECT saved FROM usage_bench_meta", &[])
        .await
        .unwrap();
    Ok(row.and_then(|r| serde_json::from_str(r.get::<_, &str>(0)).ok()))
}

#[tokio::main]
async fn main() {
    let a = args();
    let saved_path = a.dir.join("bench.json");
    let pg = match &a.postgres {
        Some(url) => Some(pg_connect(url).await),
        None => None,
    };
    let saved: Option<Saved> = match &pg {
        Some(pg) => match pg_saved(pg).await {
            Ok(Some(s)) if s.records == a.records => Some(s),
            Ok(_) => {
                eprintln!("emptying the --postgres database (another record count, or a load that did not finish)");
                pg.batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
                    .await
                    .unwrap();
                None
            }
            Err(()) => None,
        },
        None => std::fs::read_to_string(&saved_path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .filter(|s: &Saved| s.records == a.records),
    };
    // A fresh load starts from a fresh data dir: an old journal must not replay into it.
    if saved.is_none() && a.dir.exists() {
        std::fs::remove_dir_all(&a.dir).unwrap();
    }
    if let (Some(pg), None) = (&pg, &saved) {
        // Marks the database as this benchmark's before tollgate creates its schema (an interrupted load is then
        // emptied and redone, not refused).
        pg.batch_execute("CREATE TABLE usage_bench_meta (saved TEXT NOT NULL)")
            .await
            .unwrap();
    }
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.data_dir = a.dir.clone();
    if let Some(url) = &a.postgres {
        config.store.kind = StoreKind::Postgres;
        config.store.url = Some(url.clone());
        config.store.replica_id = Some("usage-bench".into());
    }
    let clock = ManualClock::new(NOW_MS);
    let app = Application::build_with_clock(config, Arc::new(clock))
        .await
        .unwrap();
    let state = app.state.clone();
    let saved = match saved {
        Some(s) => {
            eprintln!("reusing {} ({} records)", a.dir.display(), s.records);
            s
        }
        None => {
            let admin_key = app.bootstrap_admin_key.clone().unwrap().key;
            let mut accounts = Vec::new();
            for i in 0..ACCOUNTS {
                accounts.push(
                    state
                        .engine
                        .keys
                        .create_account(&format!("bench-{i}"))
                        .await
                        .unwrap()
                        .id,
                );
            }
            let key = state
                .engine
                .keys
                .issue(&accounts[0], "bench", Role::User, KeyLimits::default())
                .await
                .unwrap();
            let mut rng = StdRng::seed_from_u64(42);
            let mut recent = [0i64; 64];
            let started = Instant::now();
            let mut i = 0u64;
            while i < a.records {
                let n = (a.records - i).min(BATCH as u64);
                let batch: Vec<UsageRecord> = (i..i + n)
                    .map(|j| {
                        record(
                            &mut rng,
                            j,
                            a.records,
                            &accounts,
                            &key.record.id,
                            a.attribution,
                            a.single,
                            &mut recent,
                        )
                    })
                    .collect();
                state.engine.store.insert_usage(batch).await.unwrap();
                i += n;
                if i % 1_000_000 < BATCH as u64 || i == a.records {
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!(
                        "loaded {i} records in {secs:.1} s ({:.0}/s)",
                        i as f64 / secs
                    );
                }
            }
            let s = Saved {
                records: a.records,
                admin_key,
                user_key: key.key,
                account_id: accounts[0].clone(),
                load_secs: started.elapsed().as_secs_f64(),
            };
            let json = serde_json::to_string(&s).unwrap();
            match &pg {
                Some(pg) => {
                    // The load's 500 upserts per rollup row leave the rollup tables mostly
                    // dead tuples (3.4 per live day row at 10M) that a live gateway's
                    // autovacuum keeps at a fraction: vacuum them, as autovacuum would have.
                    // The records are insert-only; ANALYZE is enough for them.
                    let t = Instant::now();
                    pg.batch_execute(
                        "VACUUM (ANALYZE) usage_rollup_minute, usage_rollup_hour, usage_rollup_day",
                    )
                    .await
                    .unwrap();
                    pg.batch_execute("ANALYZE").await.unwrap();
                    eprintln!("VACUUM + ANALYZE in {:.1} s", t.elapsed().as_secs_f64());
                    pg.execute("INSERT INTO usage_bench_meta (saved) VALUES ($1)", &[&json])
                        .await
                        .unwrap();
                }
                None => std::fs::write(&saved_path, json).unwrap(),
            }
            s
        }
    };
    let base = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let db_bytes = match &pg {
        Some(pg) => pg
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await
            .unwrap()
            .get::<_, i64>(0) as u64,
        None => std::fs::metadata(a.dir.join("tollgate.db"))
            .map(|m| m.len())
            .unwrap_or(0),
    };

    let cfg = tollgate_http::compat::model_configs::config_id("openai", "gpt-4o");
    let (s30, e30) = ((NOW_MS - 30 * DAY_MS) / 1000, NOW_MS / 1000);
    let acct = &saved.account_id;
    let cases: Vec<(&str, String, bool)> = vec![
        ("LLMHub + CrossModel summary", "/v1/usage".into(), false),
        ("LLMHub per model (month)", "/v1/usage/models".into(), false),
        ("ElectronHub per model (all time)", "/v1/user/models".into(), false),
        ("ElectronHub account (30-day history)", "/v1/user/me".into(), false),
        ("**Runtype 30 days per model per day (UTC)**", "/v1/model-usage?period=last_30_days&granularity=day".into(), false),
        ("Runtype 30 days, America/New_York", "/v1/model-usage?period=last_30_days&timezone=America/New_York".into(), false),
        ("Runtype 30 days, Asia/Kolkata (+05:30)", "/v1/model-usage?period=last_30_days&timezone=Asia/Kolkata".into(), false),
        ("Runtype 90 days per week", "/v1/model-usage?startDate=2026-04-01&endDate=2026-06-30&granularity=week".into(), false),
        ("Runtype 7 days per hour", "/v1/model-usage?period=last_7_days&granularity=hour".into(), false),
        ("Runtype details (recentUsage, 50)", format!("/v1/model-usage/{cfg}?limit=50"), false),
        ("OpenAI completions 30 x 1d by model", format!("/v1/organization/usage/completions?start_time={s30}&end_time={e30}&bucket_width=1d&limit=30&group_by=model&project_ids={acct}"), true),
        ("OpenAI completions 24 x 1h by model+key", format!("/v1/organization/usage/completions?start_time={}&end_time={e30}&bucket_width=1h&group_by=model&group_by=api_key_id&project_ids={acct}", e30 - 86_400), true),
        ("OpenAI costs 30 x 1d by line item", format!("/v1/organization/costs?start_time={s30}&end_time={e30}&limit=30&group_by=line_item&project_ids={acct}"), true),
        ("Export 1 hour (CSV)", "/v1/usage/export?format=csv&start=2026-06-30T11:00:00Z&end=2026-06-30T12:00:00Z".into(), false),
        ("Runtype 30 days per model per day, one end user", "/v1/model-usage?period=last_30_days&granularity=day&user=user_0042".into(), false),
        ("Runtype 30 days per model per day, one tag", "/v1/model-usage?period=last_30_days&granularity=day&tag=feature=f3".into(), false),
        ("Runtype 30 days, one tag, America/New_York", "/v1/model-usage?period=last_30_days&tag=feature=f3&timezone=America/New_York".into(), false),
        ("OpenAI completions 30 x 1d by user (1,000 users)", format!("/v1/organization/usage/completions?start_time={s30}&end_time={e30}&bucket_width=1d&limit=30&group_by=user_id&project_ids={acct}"), true),
        ("OpenAI completions 24 x 1h by user", format!("/v1/organization/usage/completions?start_time={}&end_time={e30}&bucket_width=1h&group_by=user_id&project_ids={acct}", e30 - 86_400), true),
        ("Export 1 hour, one end user (CSV)", "/v1/usage/export?format=csv&start=2026-06-30T11:00:00Z&end=2026-06-30T12:00:00Z&user=user_0042".into(), false),
        ("Dashboard chart 30 days per day by model", "/dashboard/api/series?period=last_30_days&granularity=day&group=model".into(), false),
        ("Dashboard chart 30 days per day by key, America/New_York", "/dashboard/api/series?period=last_30_days&granularity=day&group=key&timezone=America/New_York".into(), false),
        ("Dashboard chart 7 days per hour by provider", "/dashboard/api/series?period=last_7_days&granularity=hour&group=provider".into(), false),
        ("Dashboard keys (month, limits, last used)", "/dashboard/api/keys".into(), false),
        ("Dashboard request log (25)", "/dashboard/api/requests?limit=25".into(), false),
        ("Dashboard request log, status=error (25)", "/dashboard/api/requests?limit=25&status=error".into(), false),
        ("Dashboard credits", "/dashboard/api/credits".into(), false),
        ("Dashboard all accounts (month)", "/dashboard/api/accounts".into(), true),
        ("Insights, 30 days", "/v1/usage/insights?period=last_30_days".into(), false),
        ("Insights, 90 days (every record of the account)", "/v1/usage/insights?start=2026-04-01&end=2026-06-30".into(), false),
    ];
    let mut report = String::new();
    report.push_str(&format!(
        "\n#### {} records ({}, {:.0} MB database{})\n\n| query | p50 ms | p99 ms | max ms | response bytes |\n|---|---:|---:|---:|---:|\n",
        saved.records,
        if pg.is_some() { "PostgreSQL" } else { "SQLite" },
        db_bytes as f64 / 1e6,
        if saved.load_secs > 0.0 {
            format!(", loaded in {:.0} s = {:.0} records/s", saved.load_secs, saved.records as f64 / saved.load_secs)
        } else {
            String::new()
        }
    ));
    // The rollup read behind the headline query, without HTTP or JSON.
    {
        let end = NOW_MS.div_euclid(DAY_MS) * DAY_MS + DAY_MS;
        let bounds: Vec<i64> = (0..=30).map(|d| end - (30 - d) * DAY_MS).collect();
        let filter = RollupFilter {
            accounts: Some(vec![acct.clone()]),
            ..RollupFilter::default()
        };
        let dims = Dims {
            model: true,
            provider: true,
            source: true,
            ..Dims::default()
        };
        let mut times = Vec::new();
        let mut rows = 0;
        for i in 0..(a.iterations + 20) {
            let t = Instant::now();
            let plan = cover::plan(&bounds);
            let r = state
                .engine
                .store
                .rollup_rows(filter.clone(), dims, plan.segments.clone())
                .await
                .unwrap();
            let r = cover::fold(&plan, &bounds, r);
            if i >= 20 {
                times.push(t.elapsed());
            }
            rows = r.len();
        }
        times.sort();
        report.push_str(&format!(
            "| rollup read only: 30 days x model x source ({rows} rows) | {} | {} | {} | |\n",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            ms(*times.last().unwrap())
        ));
    }
    let wanted = |name: &str| a.only.as_deref().is_none_or(|o| name.contains(o));
    for (name, path, admin) in cases.iter().filter(|c| wanted(c.0)) {
        let key = if *admin {
            &saved.admin_key
        } else {
            &saved.user_key
        };
        // The insights scan the period's records: fewer rounds (each is a scan, not a read of
        // rollups).
        let (warm, timed) = if path.contains("/insights") {
            (2, a.iterations.min(20))
        } else {
            (20, a.iterations)
        };
        let mut times = Vec::with_capacity(timed);
        let mut bytes = 0;
        for i in 0..(timed + warm) {
            let t = Instant::now();
            let r = http
                .get(format!("{base}{path}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            let body = r.bytes().await.unwrap();
            if i >= warm {
                times.push(t.elapsed());
            }
            bytes = body.len();
        }
        times.sort();
        report.push_str(&format!(
            "| {name} | {} | {} | {} | {bytes} |\n",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            ms(*times.last().unwrap())
        ));
        eprintln!("{name}: p50 {} ms", ms(percentile(&times, 0.5)));
    }
    if a.export {
        use futures_util::StreamExt;
        let rss_before = rss_kb("VmRSS:");
        let t = Instant::now();
        let r = http
            .get(format!("{base}/v1/usage/export?format=csv"))
            .bearer_auth(&saved.user_key)
            .send()
            .await
            .unwrap();
        let mut stream = r.bytes_stream();
        let (mut bytes, mut lines) = (0usize, 0usize);
        let mut peak = rss_before;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            bytes += chunk.len();
            lines += chunk.iter().filter(|&&b| b == b'\n').count();
            if lines % 50_000 < 100 {
                peak = peak.max(rss_kb("VmRSS:"));
            }
        }
        let secs = t.elapsed().as_secs_f64();
        peak = peak.max(rss_kb("VmRSS:"));
        report.push_str(&format!(
            "\nFull export of the benchmarked account: {} rows, {:.0} MB of CSV in {secs:.1} s ({:.0} rows/s); \
             process RSS {} MB before, at most {} MB during.\n",
            lines - 1,
            bytes as f64 / 1e6,
            (lines - 1) as f64 / secs,
            rss_before / 1024,
            peak / 1024
        ));
    }
    println!("{report}");
    if let Some(out) = a.out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .unwrap();
        f.write_all(report.as_bytes()).unwrap();
    }
}

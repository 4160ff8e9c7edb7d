//! Rollups equal the records behind them; keyset pages walk every record once.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tollgate_core::attribution::Tags;
use tollgate_core::calendar::{parse_rfc3339, parse_tz, Grid, Unit, MAX_MS};
use tollgate_core::record::Provenance;
use tollgate_core::record::{Endpoint, Source, Status, UsageRecord};
use tollgate_core::rollup::{
    self as rollup, cover, AttrFilter, Dims, Grain, RecordCursor, RecordFilter, RollupFilter,
    Segment, Sums,
};
use tollgate_core::store::Store;

pub fn record(i: usize, t: i64, account: &str, rng: &mut StdRng) -> UsageRecord {
    let model = ["gpt-4o", "claude-x", "m3"][rng.gen_range(0..3)];
    UsageRecord {
        request_id: format!("req_{i:06}"),
        created_at_ms: t,
        finished_at_ms: t + 5,
        account_id: account.into(),
        key_id: format!("key_{}", rng.gen_range(0..3)),
        endpoint: Endpoint::ChatCompletions,
        model_requested: model.into(),
        model_served: model.into(),
        provider: "p".into(),
        owned_by: "o".into(),
        source: if rng.gen_bool(0.2) {
            Source::User
        } else {
            Source::Platform
        },
        input_tokens: rng.gen_range(0..1000),
        output_tokens: rng.gen_range(0..1000),
        cached_tokens: rng.gen_range(0..10),
        cache_write_tokens: 0,
        reasoning_tokens: rng.gen_range(0..10),
        cost_nanos: rng.gen_range(0..1_000_000),
        charged_nanos: rng.gen_range(0..1_000_000),
        price_input: 0,
        price_output: 0,
        price_cached_input: 0,
        price_cache_write: 0,
        status: if rng.gen_bool(0.9) {
            Status::Success
        } else {
            Status::Error
        },
        http_status: 200,
        error_code: None,
        latency_ms: 5,
        ttft_ms: None,
        streamed: false,
        provenance: Provenance::Provider,
        anomaly: None,
        user: None,
        tags: Tags::default(),
        price_version: Some("pt_0123456789abcdef".into()),
        fingerprint: None,
        conversation: None,
    }
}

/// Random records (some exactly on UTC, :30 and :45 boundaries) in two accounts; every zone
/// and unit's buckets, read from the rollups, equal sums taken record by record.
pub async fn rollup_buckets_equal_record_sums_in_every_zone(store: Arc<dyn Store>) {
    let mut rng = StdRng::seed_from_u64(7);
    let start = parse_rfc3339("2027-12-20T00:00:00Z").unwrap();
    let end = parse_rfc3339("2028-03-05T00:00:00Z").unwrap();
    let mut recs = Vec::new();
    for i in 0..4000 {
        let t = if i % 10 == 0 {
            // On a boundary, or the last millisecond before one.
            let q = rng.gen_range(0..(end - start) / 900_000) * 900_000 + start;
            q - i64::from(rng.gen_bool(0.5))
        } else {
            rng.gen_range(start..end)
        };
        let account = if i % 7 == 0 { "acct_other" } else { "acct_a" };
        recs.push(record(i, t, account, &mut rng));
    }
    for chunk in recs.chunks(500) {
        store.insert_usage(chunk.to_vec()).await.unwrap();
    }
    let mine: Vec<&UsageRecord> = recs.iter().filter(|r| r.account_id == "acct_a").collect();
    let zones = [
        "UTC",
        "America/New_York",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Australia/Lord_Howe",
    ];
    for zone in zones {
        let tz = parse_tz(zone).unwrap();
        for unit in [Unit::Hour, Unit::Day, Unit::Week, Unit::Month] {
            // Minute-aligned, as the usage endpoints make every bound.
            let a = start + rng.gen_range(0..3 * 1440) * 60_000;
            let grid = Grid::new(tz, unit, a, end, 100_000).unwrap();
            let filter = RollupFilter {
                accounts: Some(vec!["acct_a".into()]),
                ..RollupFilter::default()
            };
            let dims = Dims {
                model: true,
                source: true,
                ..Dims::default()
            };
            let plan = cover::plan(&cover::align(&grid.bounds));
            let rows = store
                .rollup_rows(filter, dims, plan.segments.clone())
                .await
                .unwrap();
            let got: BTreeMap<(usize, String, String), Sums> =
                cover::fold(&plan, &grid.bounds, rows)
                    .into_iter()
                    .map(|((i, g), v)| ((i, g.model.unwrap(), g.source.unwrap()), v))
                    .collect();
            let mut want: BTreeMap<(usize, String, String), Sums> = BTreeMap::new();
            for r in &mine {
                if let Some(i) = cover::bucket_of(&grid.bounds, r.created_at_ms) {
                    let k = (i, r.model_requested.clone(), r.source.as_str().to_string());
                    want.entry(k).or_default().add(&Sums::of(r));
                }
            }
            assert_eq!(got.len(), want.len(), "{zone} {unit:?}");
            for (k, v) in &want {
                assert_eq!(got.get(k), Some(v), "{zone} {unit:?} {k:?}");
            }
        }
    }
    // Every account at once (the organization view) reads the accounts table: none here.
    let all = store
        .rollup_rows(
            RollupFilter::default(),
            Dims::default(),
            vec![Segment {
                grain: Grain::Day,
                start_ms: 0,
                end_ms: MAX_MS,
                split: false,
            }],
        )
        .await
        .unwrap();
    assert!(all.is_empty());
}

/// Keyset pages walk every record once, in order, ties on the millisecond included.
/// The insights' narrow scan: the account's records in the range, in `(created_at_ms,
/// request_id)` order, their numbers and fingerprints as written (negative hashes included).
pub async fn insight_rows_are_the_accounts_records_in_order(store: Arc<dyn Store>) {
    let mut rng = StdRng::seed_from_u64(11);
    let mut recs: Vec<UsageRecord> = (0..200)
        .map(|i| {
            let acct = if i % 5 == 0 { "acct_b" } else { "acct_a" };
            let mut r = record(
                (i * 37) % 200,
                1_000_000 + (i as i64 / 3) * 10,
                acct,
                &mut rng,
            );
            r.fingerprint = Some(rng.gen::<i64>());
            r.conversation = (i % 2 == 0).then(|| -rng.gen_range(1..1000));
            r.price_input = rng.gen_range(0..5_000_000_000);
            r.price_cached_input = 7;
            r
        })
        .collect();
    store.insert_usage(recs.clone()).await.unwrap();
    let (start, end) = (1_000_100, 1_000_500);
    recs.retain(|r| r.account_id == "acct_a" && (start..end).contains(&r.created_at_ms));
    recs.sort_by(|a, b| (a.created_at_ms, &a.request_id).cmp(&(b.created_at_ms, &b.request_id)));
    let got = store
        .insight_rows("acct_a", None, start, end)
        .await
        .unwrap();
    assert_eq!(got.rows.len(), recs.len());
    for (g, r) in got.rows.iter().zip(&recs) {
        assert_eq!(g.request_id, r.request_id);
        assert_eq!(g.created_at_ms, r.created_at_ms);
        assert_eq!(got.keys[g.key as usize], r.key_id);
        assert_eq!(got.models[g.model as usize], r.model_requested);
        assert_eq!(g.status, r.status);
        assert_eq!(
            (
                g.input_tokens,
                g.output_tokens,
                g.cached_tokens,
                g.reasoning_tokens
            ),
            (
                r.input_tokens,
                r.output_tokens,
                r.cached_tokens,
                r.reasoning_tokens
            )
        );
        assert_eq!(g.cost_nanos, r.cost_nanos);
        assert_eq!((g.prices.input, g.prices.cached_input), (r.price_input, 7));
        assert_eq!(
            (g.fingerprint, g.conversation),
            (r.fingerprint, r.conversation)
        );
    }
    // One key's records only, filtered by the store.
    let one = store
        .insight_rows("acct_a", Some("key_1"), start, end)
        .await
        .unwrap();
    let want: Vec<&str> = recs
        .iter()
        .filter(|r| r.key_id == "key_1")
        .map(|r| r.request_id.as_str())
        .collect();
    let got: Vec<&str> = one.rows.iter().map(|r| r.request_id.as_str()).collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    assert!(store
        .insight_rows("acct_none", None, 0, i64::MAX)
        .await
        .unwrap()
        .rows
        .is_empty());
}

pub async fn record_pages_walk_every_record_once(store: Arc<dyn Store>) {
    let mut rng = StdRng::seed_from_u64(9);
    let recs: Vec<UsageRecord> = (0..300)
        .map(|i| {
            record(
                (i * 37) % 300,
                1_000_000 + (i as i64 / 4) * 10,
                "acct_a",
                &mut rng,
            )
        })
        .collect();
    store.insert_usage(recs.clone()).await.unwrap();
    let mut want: Vec<(i64, String)> = recs
        .iter()
        .map(|r| (r.created_at_ms, r.request_id.clone()))
        .collect();
    want.sort();
    for descending in [false, true] {
        let filter = RecordFilter {
            account_id: "acct_a".into(),
            start_ms: 0,
            end_ms: i64::MAX,
            ..RecordFilter::default()
        };
        let mut got = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .records_page(filter.clone(), cursor, descending, 7)
                .await
                .unwrap();
            got.extend(page.iter().map(|r| (r.created_at_ms, r.request_id.clone())));
            match page.last() {
                Some(r) if page.len() == 7 => {
                    cursor = Some(RecordCursor {
                        created_at_ms: r.created_at_ms,
                        request_id: r.request_id.clone(),
                    })
                }
                _ => break,
            }
        }
        let mut expect = want.clone();
        if descending {
            expect.reverse();
        }
        assert_eq!(got, expect, "descending: {descending}");
    }
    // A model filter walks the (account, model, time) index.
    let filter = RecordFilter {
        account_id: "acct_a".into(),
        model: Some("m3".into()),
        start_ms: 0,
        end_ms: i64::MAX,
        ..RecordFilter::default()
    };
    let page = store.records_page(filter, None, true, 1000).await.unwrap();
    assert_eq!(
        page.len(),
        recs.iter().filter(|r| r.model_requested == "m3").count()
    );
}

/// `RollupFilter::endpoints` keeps only rows of those endpoints (OpenAI's completions usage
/// leaves out embeddings), in split and whole segments, with other filters and grouped by
/// endpoint; empty means every endpoint.
pub async fn rollups_filter_by_endpoint(store: Arc<dyn Store>) {
    let mut rng = StdRng::seed_from_u64(11);
    let start = parse_rfc3339("2028-02-28T00:00:00Z").unwrap();
    let recs: Vec<UsageRecord> = (0..600)
        .map(|i| {
            let mut r = record(
                i,
                start + rng.gen_range(0..3 * 86_400_000),
                "acct_a",
                &mut rng,
            );
            r.endpoint = Endpoint::ALL[i % 3];
            r
        })
        .collect();
    store.insert_usage(recs.clone()).await.unwrap();
    let end = start + 3 * 86_400_000;
    // Hours and minutes at the edges, days in the middle, split by bucket.
    let bounds = [start + 90 * 60_000, start + 86_400_000, end - 61 * 60_000];
    let plan = cover::plan(&cover::align(&bounds));
    for endpoints in [
        vec![],
        vec![Endpoint::Embeddings],
        vec![Endpoint::ChatCompletions, Endpoint::Messages],
    ] {
        for model in [None, Some("gpt-4o")] {
            let filter = RollupFilter {
                accounts: Some(vec!["acct_a".into()]),
                models: model.iter().map(|m| m.to_string()).collect(),
                endpoints: endpoints.clone(),
                ..RollupFilter::default()
            };
            let dims = Dims {
                endpoint: true,
                ..Dims::default()
            };
            let rows = store
                .rollup_rows(filter, dims, plan.segments.clone())
                .await
                .unwrap();
            let got: BTreeMap<(usize, String), Sums> = cover::fold(&plan, &bounds, rows)
                .into_iter()
                .map(|((i, g), v)| ((i, g.endpoint.unwrap()), v))
                .collect();
            let mut want: BTreeMap<(usize, String), Sums> = BTreeMap::new();
            for r in &recs {
                if !endpoints.is_empty() && !endpoints.contains(&r.endpoint) {
                    continue;
                }
                if model.is_some_and(|m| r.model_requested != m) {
                    continue;
                }
                if let Some(i) = cover::bucket_of(&bounds, r.created_at_ms) {
                    let k = (i, r.endpoint.as_str().to_string());
                    want.entry(k).or_default().add(&Sums::of(r));
                }
            }
            assert!(!want.is_empty());
            assert_eq!(got, want, "{endpoints:?} {model:?}");
        }
    }
}

/// Records with and without end users and tags: per-user, per-tag and grouped-by-user buckets
/// (in a zone off UTC, so minute and hour rows are read too) equal sums taken record by
/// record, the groups by user add up to the totals, and record pages filter by user and tag.
pub async fn attribution_rollups_equal_record_sums(store: Arc<dyn Store>) {
    let mut rng = StdRng::seed_from_u64(11);
    let start = parse_rfc3339("2028-01-01T00:00:00Z").unwrap();
    let end = parse_rfc3339("2028-01-20T00:00:00Z").unwrap();
    let users = ["alice", "bob", "carol@example.com"];
    let tag_sets = ["", "feature=search", "feature=chat,team=ads", "team=ads"];
    let mut recs = Vec::new();
    for i in 0..3000 {
        let t = rng.gen_range(start..end);
        let account = if i % 9 == 0 { "acct_other" } else { "acct_a" };
        let mut r = record(i, t, account, &mut rng);
        r.user = match rng.gen_range(0..4) {
            3 => None,
            u => Some(users[u].to_string()),
        };
        r.tags = Tags::parse(tag_sets[rng.gen_range(0..tag_sets.len())]).unwrap();
        recs.push(r);
    }
    for chunk in recs.chunks(400) {
        store.insert_usage(chunk.to_vec()).await.unwrap();
    }
    // The same records again change nothing (a replayed journal).
    store.insert_usage(recs[..100].to_vec()).await.unwrap();
    let mine: Vec<&UsageRecord> = recs.iter().filter(|r| r.account_id == "acct_a").collect();
    let tz = parse_tz("Asia/Kolkata").unwrap();
    let grid = Grid::new(tz, Unit::Day, start + 37 * 60_000, end, 100_000).unwrap();
    let plan = cover::plan(&cover::align(&grid.bounds));
    let read = |attribution: AttrFilter, dims: Dims| {
        let store = store.clone();
        let plan = plan.clone();
        let bounds = grid.bounds.clone();
        async move {
            let filter = RollupFilter {
                accounts: Some(vec!["acct_a".into()]),
                attribution,
                ..RollupFilter::default()
            };
            let rows = store
                .rollup_rows(filter, dims, plan.segments.clone())
                .await
                .unwrap();
            cover::fold(&plan, &bounds, rows)
        }
    };
    let by_model = Dims {
        model: true,
        ..Dims::default()
    };
    let want = |keep: &dyn Fn(&UsageRecord) -> bool, by_user: bool| {
        let mut w: BTreeMap<(usize, Option<String>, Option<String>), Sums> = BTreeMap::new();
        for r in mine.iter().filter(|r| keep(r)) {
            if let Some(i) = cover::bucket_of(&grid.bounds, r.created_at_ms) {
                let user = if by_user { r.user.clone() } else { None };
                let k = (i, Some(r.model_requested.clone()), user);
                w.entry(k).or_default().add(&Sums::of(r));
            }
        }
        w
    };
    let flat = |m: BTreeMap<(usize, tollgate_core::rollup::GroupKey), Sums>| {
        m.into_iter()
            .map(|((i, g), v)| ((i, g.model, g.user), v))
            .collect::<BTreeMap<_, _>>()
    };
    // Two users at once: each record counted once.
    let two = AttrFilter::Users(vec!["alice".into(), "carol@example.com".into()]);
    let got = flat(read(two, by_model).await);
    let is_two = |r: &UsageRecord| matches!(r.user.as_deref(), Some("alice" | "carol@example.com"));
    assert_eq!(got, want(&is_two, false));
    // One tag.
    let got = flat(read(AttrFilter::Tag("team=ads".into()), by_model).await);
    let has_ads = |r: &UsageRecord| r.tags.pairs().any(|p| p == "team=ads");
    assert_eq!(got, want(&has_ads, false));
    // Grouped by user: users from the attribution rollups, the rest by difference.
    let dims = Dims {
        user: true,
        ..by_model
    };
    let users_only = read(AttrFilter::All, dims).await;
    let all = read(AttrFilter::All, by_model).await;
    let got = flat(rollup::by_user(all.clone(), users_only));
    assert_eq!(got, want(&|_| true, true));
    let mut total = Sums::default();
    got.values().for_each(|v| total.add(v));
    let mut whole = Sums::default();
    all.values().for_each(|v| whole.add(v));
    assert_eq!(total, whole);
    // By user alone over one bucket (segments summed whole, not split).
    let one = vec![start + 37 * 60_000, end];
    let plan1 = cover::plan(&cover::align(&one));
    let fold1 = |dims: Dims| {
        let store = store.clone();
        let plan1 = plan1.clone();
        let one = one.clone();
        async move {
            let filter = RollupFilter {
                accounts: Some(vec!["acct_a".into()]),
                ..RollupFilter::default()
            };
            let rows = store
                .rollup_rows(filter, dims, plan1.segments.clone())
                .await
                .unwrap();
            cover::fold(&plan1, &one, rows)
        }
    };
    let only_user = Dims {
        user: true,
        ..Dims::default()
    };
    let got: BTreeMap<Option<String>, Sums> =
        rollup::by_user(fold1(Dims::default()).await, fold1(only_user).await)
            .into_iter()
            .map(|((_, g), v)| (g.user, v))
            .collect();
    let mut want1: BTreeMap<Option<String>, Sums> = BTreeMap::new();
    for r in &mine {
        if (one[0]..one[1]).contains(&r.created_at_ms) {
            want1.entry(r.user.clone()).or_default().add(&Sums::of(r));
        }
    }
    assert_eq!(got, want1);
    // Record pages filtered by user and by tag.
    let page = |users: Vec<String>, tag: Option<String>| {
        let store = store.clone();
        async move {
            store
                .records_page(
                    RecordFilter {
                        account_id: "acct_a".into(),
                        users,
                        tag,
                        start_ms: 0,
                        end_ms: MAX_MS,
                        ..RecordFilter::default()
                    },
                    None,
                    false,
                    10_000,
                )
                .await
                .unwrap()
        }
    };
    let got = page(vec!["bob".into()], None).await;
    let bob = mine
        .iter()
        .filter(|r| r.user.as_deref() == Some("bob"))
        .count();
    assert_eq!(got.len(), bob);
    assert!(got.iter().all(|r| r.user.as_deref() == Some("bob")));
    let got = page(vec![], Some("feature=chat".into())).await;
    let chat = mine
        .iter()
        .filter(|r| r.tags.as_str() == "feature=chat,team=ads")
        .count();
    assert_eq!(got.len(), chat);
    assert!(got
        .iter()
        .all(|r| r.tags.iter().any(|t| t == ("feature", "chat"))));
    // A prefix of a tag is not the tag.
    assert!(page(vec![], Some("feature=cha".into())).await.is_empty());
    // The record keeps what was sent.
    let one = store.get_usage(&recs[1].request_id).await.unwrap().unwrap();
    assert_eq!(one, recs[1]);
}

//! The store conformance suite against a real PostgreSQL (127.0.0.1:5432, or
//! `TOLLGATE_TEST_POSTGRES`), each test in a database of its own that is dropped after it, plus
//! what only the shared backend has: balance leases, partitions, the schema-version guard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;

use std::sync::Arc;

use tollgate_core::account::Account;
use tollgate_core::credit::{CreditEntry, CreditKind};
use tollgate_core::store::{AccountStore, CreditStore, LeaseStore, RecordStore, Store};
use tollgate_core::StoreErrorKind;
use tollgate_store::PgStore;

/// A database created for one test and dropped (with its connections) when the test ends.
pub struct TestDb {
    pub url: String,
    name: String,
}

fn server() -> String {
    std::env::var("TOLLGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

async fn admin() -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&format!("{}/postgres", server()), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL at 127.0.0.1:5432 (set TOLLGATE_TEST_POSTGRES to use another)");
    tokio::spawn(conn);
    client
}

impl TestDb {
    pub async fn create() -> Self {
        let name = format!("tg_test_{:016x}", rand::random::<u64>());
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Self {
            url: format!("{}/{name}", server()),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: the cleanup gets a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ = admin()
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

async fn open_as(replica: &str) -> (TestDb, Arc<dyn Store>) {
    let db = TestDb::create().await;
    let store = PgStore::connect(&db.url, 4, replica).await.unwrap();
    (db, Arc::new(store))
}

conformance_suite!(open_as("r1").await);

fn rec(id: &str, account: &str, t: i64) -> tollgate_core::record::UsageRecord {
    use rand::SeedableRng;
    let mut r =
        conformance::rollups::record(0, t, account, &mut rand::rngs::StdRng::seed_from_u64(1));
    r.request_id = id.into();
    r
}

fn account(id: &str) -> Account {
    Account {
        id: id.into(),
        name: id.into(),
        created_at_ms: 1,
        disabled: false,
    }
}

async fn grant(store: &dyn Store, account: &str, id: &str, amount: i64) {
    store
        .add_credit(
            CreditEntry {
                id: id.into(),
                account_id: account.into(),
                kind: CreditKind::Grant,
                amount_nanos: amount,
                idempotency_key: None,
                note: None,
                created_at_ms: 1,
            },
            Vec::new(),
        )
        .await
        .unwrap();
}

/// Two replicas on one database never lease more than the balance; charges come out of the
/// writing replica's lease; balance = available + leases = grants − charges throughout.
#[tokio::test]
async fn leases_never_exceed_the_balance() {
    let db = TestDb::create().await;
    let a = PgStore::connect(&db.url, 4, "a").await.unwrap();
    let b = PgStore::connect(&db.url, 4, "b").await.unwrap();
    a.create_account(account("acct")).await.unwrap();
    grant(&a, "acct", "g1", 1_000).await;
    assert_eq!(a.take_lease("acct", 600, 10, 1_000).await.unwrap(), 600);
    assert_eq!(b.take_lease("acct", 600, 10, 1_000).await.unwrap(), 400);
    assert_eq!(b.take_lease("acct", 1, 10, 1_000).await.unwrap(), 0);
    let t = a.lease_totals("acct").await.unwrap();
    assert_eq!(
        (t.available_nanos, t.leased_nanos, t.own_nanos),
        (0, 1_000, 600)
    );

    // Replica a writes a record that charged 250: its lease shrinks, the pool does not.
    let mut r = rec("req-1", "acct", 5_000);
    r.charged_nanos = 250;
    assert_eq!(a.insert_usage(vec![r.clone()]).await.unwrap(), 1);
    // The same record again changes nothing.
    assert_eq!(a.insert_usage(vec![r]).await.unwrap(), 0);
    let t = a.lease_totals("acct").await.unwrap();
    assert_eq!((t.available_nanos, t.own_nanos), (0, 350));
    let totals = a.credit_totals("acct", true).await.unwrap();
    assert_eq!(totals.balance_nanos(), 750);
    assert_eq!(t.available_nanos + t.leased_nanos, 750);

    // Returning more than the lease holds returns what it holds.
    a.return_lease("acct", 10_000).await.unwrap();
    let t = a.lease_totals("acct").await.unwrap();
    assert_eq!((t.available_nanos, t.own_nanos), (350, 0));

    // b's lease expires at 1_000: a later take returns it to the pool first.
    assert_eq!(
        a.take_lease("acct", 10_000, 2_000, 3_000).await.unwrap(),
        750
    );
    let t = b.lease_totals("acct").await.unwrap();
    assert_eq!(
        (t.available_nanos, t.leased_nanos, t.own_nanos),
        (0, 750, 0)
    );
    // And b learns at renewal that it no longer holds one.
    assert!(b.renew_leases(5_000).await.unwrap().is_empty());
    assert_eq!(
        a.renew_leases(5_000).await.unwrap(),
        vec!["acct".to_string()]
    );

    // A grant joins the pool, for whichever replica asks first.
    grant(&a, "acct", "g2", 100).await;
    assert_eq!(
        b.take_lease("acct", 1_000, 2_000, 3_000).await.unwrap(),
        100
    );
}

/// Concurrent takes from many tasks of several replicas: never more than the balance in all.
#[tokio::test]
async fn concurrent_takes_never_overlease() {
    let db = TestDb::create().await;
    let mut stores: Vec<Arc<PgStore>> = Vec::new();
    for r in ["a", "b", "c"] {
        stores.push(Arc::new(PgStore::connect(&db.url, 8, r).await.unwrap()));
    }
    stores[0].create_account(account("acct")).await.unwrap();
    grant(stores[0].as_ref(), "acct", "g", 5_000).await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let s = stores[i % 3].clone();
        tasks.push(tokio::spawn(async move {
            s.take_lease("acct", 137, 10, 100_000).await.unwrap()
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 5_000);
    let t = stores[0].lease_totals("acct").await.unwrap();
    assert_eq!((t.available_nanos, t.leased_nanos), (0, 5_000));
}

/// Records land in a partition per UTC month; a request id stays unique across replicas.
#[tokio::test]
async fn records_are_partitioned_by_month() {
    let db = TestDb::create().await;
    let a = PgStore::connect(&db.url, 4, "a").await.unwrap();
    let b = PgStore::connect(&db.url, 4, "b").await.unwrap();
    let dec = 1_764_547_200_000; // 2025-12-01T00:00:00Z
    let recs = vec![rec("r1", "acct", dec - 1), rec("r2", "acct", dec)];
    assert_eq!(a.insert_usage(recs.clone()).await.unwrap(), 2);
    assert_eq!(b.insert_usage(recs).await.unwrap(), 0);
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'usage_records' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, vec!["usage_records_202511", "usage_records_202512"]);
}

/// A database migrated by a newer tollgate is refused with a message that says so.
#[tokio::test]
async fn a_newer_schema_is_refused() {
    let db = TestDb::create().await;
    PgStore::connect(&db.url, 2, "a").await.unwrap();
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .execute("INSERT INTO schema_version (version) VALUES (999)", &[])
        .await
        .unwrap();
    let err = PgStore::connect(&db.url, 2, "a").await.err().unwrap();
    assert_eq!(err.kind, StoreErrorKind::Invalid);
    assert!(err.message.contains("version 999"), "{err}");
}

/// Three replicas taking slices of one limit window at once never take more than the limit
/// together; debt (tokens counted after the fact) is added before a take; what is given back
/// can be taken again; ended windows are pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_takes_across_replicas_never_pass_the_limit() {
    use tollgate_core::store::{QuotaKind, QuotaStore, QuotaTake};
    let db = TestDb::create().await;
    let mut stores = Vec::new();
    for r in ["r1", "r2", "r3"] {
        stores.push(Arc::new(PgStore::connect(&db.url, 4, r).await.unwrap()));
    }
    let take = |want: i64, debt: i64| QuotaTake {
        key_id: "key_1",
        kind: QuotaKind::Requests,
        window_start_ms: 60_000,
        window_end_ms: 120_000,
        limit: 100,
        seed: 0,
        debt,
        want,
    };
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = stores[i % 3].clone();
        let t = take(7, 0);
        tasks.push(tokio::spawn(
            async move { store.take_quota(t).await.unwrap().0 },
        ));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 100, "60 takes of 7 on a limit of 100");
    assert_eq!(stores[0].take_quota(take(5, 0)).await.unwrap(), (0, 100));
    stores[1]
        .return_quota("key_1", QuotaKind::Requests, 60_000, 10)
        .await
        .unwrap();
    // 10 given back; a debt of 4 comes off it first.
    assert_eq!(stores[2].take_quota(take(50, 4)).await.unwrap(), (6, 100));
    // Another window of the same key is its own; a spend window starts at its seed.
    let spend = QuotaTake {
        kind: QuotaKind::SpendNanos,
        seed: 90,
        ..take(50, 0)
    };
    assert_eq!(stores[0].take_quota(spend).await.unwrap(), (10, 100));
    assert_eq!(stores[0].prune_quotas(120_001).await.unwrap(), 2);
    assert_eq!(stores[0].take_quota(take(5, 0)).await.unwrap(), (5, 5));
}

/// A month one replica's retention dropped is recreated when another replica, which still
/// knew that month's partition, stores a late record of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_dropped_by_another_replica_is_recreated() {
    let db = TestDb::create().await;
    let a = PgStore::connect(&db.url, 2, "a").await.unwrap();
    let b = PgStore::connect(&db.url, 2, "b").await.unwrap();
    a.create_account(account("acct")).await.unwrap();
    let jan = 1_736_510_400_000; // 2025-01-10T12:00:00Z
    assert_eq!(
        b.insert_usage(vec![rec("r1", "acct", jan)]).await.unwrap(),
        1
    );
    assert_eq!(
        a.drop_records_before(jan + 40 * 86_400_000).await.unwrap(),
        1
    );
    assert_eq!(
        b.insert_usage(vec![rec("r2", "acct", jan)]).await.unwrap(),
        1
    );
    assert!(b.get_usage("r2").await.unwrap().is_some());
    let t = a.credit_totals("acct", true).await.unwrap();
    assert_eq!(t.charges_nanos_records, Some(t.charges_nanos));
}

/// Three replicas claiming one outbox at once never hold one delivery twice, and together
/// claim every due delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_outbox_without_claiming_twice() {
    use tollgate_core::store::WebhookStore;
    use tollgate_core::webhook::{Event, EventType, SealedSecret, Webhook, WebhookSettings};
    let db = TestDb::create().await;
    let mut stores = Vec::new();
    for r in ["r1", "r2", "r3"] {
        stores.push(Arc::new(PgStore::connect(&db.url, 4, r).await.unwrap()));
    }
    stores[0]
        .create_webhook(Webhook {
            id: "wh_1".into(),
            account_id: "acct".into(),
            url: "https://example.com/h".into(),
            events: vec![EventType::CreditsGranted],
            settings: WebhookSettings::default(),
            active: true,
            disabled_reason: None,
            secret: SealedSecret {
                nonce: vec![0; 12],
                ciphertext: vec![0; 48],
            },
            previous_secret: None,
            previous_until_ms: None,
            failing_since_ms: None,
            created_at_ms: 1,
        })
        .await
        .unwrap();
    let events: Vec<Event> = (0..200)
        .map(|i| {
            Event::new(
                format!("evt_{i}"),
                "acct",
                EventType::CreditsGranted,
                serde_json::json!({}),
                10,
            )
        })
        .collect();
    assert_eq!(stores[1].enqueue_events(events).await.unwrap(), 200);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = stores[i % 3].clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.claim_deliveries(100, 100_000, 7).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|c| c.delivery.event_id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(n, 200, "every delivery claimed");
    assert_eq!(all.len(), 200, "none claimed twice");
}

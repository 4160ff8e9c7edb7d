//! Retention (raw records dropped, rollups and ledgers kept) and credit import (`store copy`).

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tollgate_core::account::Account;
use tollgate_core::calendar::{parse_rfc3339, MAX_MS};
use tollgate_core::credit::{CreditEntry, CreditKind};
use tollgate_core::rollup::{Dims, Grain, RollupFilter, Segment, Sums};
use tollgate_core::store::Store;

use super::rollups::record;

fn at(s: &str) -> i64 {
    parse_rfc3339(s).unwrap()
}

async fn account(store: &dyn Store, id: &str) {
    store
        .create_account(Account {
            id: id.into(),
            name: id.into(),
            created_at_ms: 1,
            disabled: false,
        })
        .await
        .unwrap();
}

/// Every grain's all-time sums for the account.
async fn all_time(store: &dyn Store, account: &str) -> Vec<Sums> {
    let mut out = Vec::new();
    for grain in [Grain::Minute, Grain::Hour, Grain::Day] {
        let rows = store
            .rollup_rows(
                RollupFilter {
                    accounts: Some(vec![account.into()]),
                    ..RollupFilter::default()
                },
                Dims::default(),
                vec![Segment {
                    grain,
                    start_ms: 0,
                    end_ms: MAX_MS,
                    split: false,
                }],
            )
            .await
            .unwrap();
        let mut s = Sums::default();
        for r in rows {
            s.add(&r.sums);
        }
        out.push(s);
    }
    out
}

/// Records before the cutoff go (a backend may keep those of the month the cutoff falls in);
/// records at or after it stay; rollups and credit totals do not move; a second pass drops
/// nothing; a late record of a dropped month is stored again.
pub async fn retention_drops_old_records_and_keeps_rollups(store: Arc<dyn Store>) {
    account(store.as_ref(), "acct").await;
    let mut rng = StdRng::seed_from_u64(9);
    let times = [
        ("old_jan", "2025-01-10T12:00:00Z"),
        ("old_feb", "2025-02-28T23:59:59.999Z"),
        ("mar_early", "2025-03-01T01:00:00Z"), // before the cutoff, in its month
        ("at_cutoff", "2025-03-05T00:00:00Z"),
        ("mar_late", "2025-03-20T08:00:00Z"),
        ("apr", "2025-04-02T08:00:00Z"),
    ];
    let recs: Vec<_> = times
        .iter()
        .enumerate()
        .map(|(i, (id, t))| {
            let mut r = record(i, at(t), "acct", &mut rng);
            r.request_id = (*id).into();
            r
        })
        .collect();
    assert_eq!(store.insert_usage(recs.clone()).await.unwrap(), recs.len());
    let sums = all_time(store.as_ref(), "acct").await;
    let totals = store.credit_totals("acct", true).await.unwrap();

    let cutoff = at("2025-03-05T00:00:00Z");
    let dropped = store.drop_records_before(cutoff).await.unwrap();
    for id in ["old_jan", "old_feb"] {
        assert_eq!(store.get_usage(id).await.unwrap(), None, "{id}");
    }
    for id in ["at_cutoff", "mar_late", "apr"] {
        assert!(store.get_usage(id).await.unwrap().is_some(), "{id}");
    }
    let early_kept = store.get_usage("mar_early").await.unwrap().is_some();
    let gone = if early_kept { 2 } else { 3 };
    assert_eq!(dropped, gone, "what was dropped is what is gone");
    assert_eq!(store.count_usage().await.unwrap(), 6 - gone as i64);

    // Every total the usage APIs and balances read is unchanged, and the audit still adds up:
    // the dropped records' charges are retired with them.
    assert_eq!(all_time(store.as_ref(), "acct").await, sums);
    let after = store.credit_totals("acct", true).await.unwrap();
    assert_eq!(after.charges_nanos, totals.charges_nanos);
    assert_eq!(after.balance_nanos(), totals.balance_nanos());
    assert_eq!(after.charges_nanos_records, Some(after.charges_nanos));
    assert!(totals.charges_nanos > 0);

    assert_eq!(store.drop_records_before(cutoff).await.unwrap(), 0);
    // A late record of a month already dropped (a journal replayed months later) is stored.
    let mut late = recs[0].clone();
    late.request_id = "late_jan".into();
    assert_eq!(store.insert_usage(vec![late]).await.unwrap(), 1);
    assert!(store.get_usage("late_jan").await.unwrap().is_some());
}

/// An imported entry keeps its id and counts once however often it is imported; one whose
/// idempotency key this account used already is skipped too.
pub async fn imported_credits_keep_their_id_once(store: Arc<dyn Store>) {
    account(store.as_ref(), "acct").await;
    let entry = |id: &str, idem: Option<&str>, amount: i64| CreditEntry {
        id: id.into(),
        account_id: "acct".into(),
        kind: CreditKind::Grant,
        amount_nanos: amount,
        idempotency_key: idem.map(str::to_string),
        note: Some("copied".into()),
        created_at_ms: 42,
    };
    assert!(store
        .import_credit(entry("cr_1", Some("k1"), 700))
        .await
        .unwrap());
    assert!(!store
        .import_credit(entry("cr_1", Some("k1"), 700))
        .await
        .unwrap());
    assert!(!store
        .import_credit(entry("cr_2", Some("k1"), 700))
        .await
        .unwrap());
    let mut refund = entry("cr_3", None, 50);
    refund.kind = CreditKind::Refund;
    assert!(store.import_credit(refund.clone()).await.unwrap());
    assert!(!store.import_credit(refund.clone()).await.unwrap());

    let listed = store.list_credits("acct", 10).await.unwrap();
    let mut ids: Vec<&str> = listed.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["cr_1", "cr_3"]);
    assert_eq!(
        listed.iter().find(|e| e.id == "cr_1").unwrap(),
        &entry("cr_1", Some("k1"), 700)
    );
    let t = store.credit_totals("acct", true).await.unwrap();
    assert_eq!((t.grants_nanos, t.refunds_nanos), (700, 50));
    assert_eq!(t.balance_nanos(), 750);
    if let Some(leases) = store.leases() {
        // A shared backend's unleased pool holds exactly the imported balance.
        let l = leases.lease_totals("acct").await.unwrap();
        assert_eq!(l.available_nanos + l.leased_nanos, 750);
    }
}

//! Accounts, keys, credits, records and provider keys: each aggregate's round trip and rules.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tollgate_core::account::{Account, ApiKeyRecord, KeyLimits, Period, Role, StoredProviderKey};
use tollgate_core::credit::{CreditEntry, CreditKind};
use tollgate_core::store::{AnomalyCount, RecordQuery, Store};
use tollgate_core::StoreErrorKind;

use super::rollups::record;

fn account(id: &str) -> Account {
    Account {
        id: id.into(),
        name: format!("name of {id}"),
        created_at_ms: 1_000,
        disabled: false,
    }
}

fn key(id: &str, account_id: &str, role: Role) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.into(),
        account_id: account_id.into(),
        name: "k".into(),
        key_hash: format!("hash-of-{id}"),
        last4: "abcd".into(),
        prefix: "tg-".into(),
        role,
        created_at_ms: 2_000,
        revoked_at_ms: None,
        limits: KeyLimits::default(),
    }
}

fn credit(id: &str, account_id: &str, amount: i64, idem: Option<&str>) -> CreditEntry {
    CreditEntry {
        id: id.into(),
        account_id: account_id.into(),
        kind: CreditKind::Grant,
        amount_nanos: amount,
        idempotency_key: idem.map(str::to_string),
        note: None,
        created_at_ms: 3_000,
    }
}

pub async fn accounts_round_trip(store: Arc<dyn Store>) {
    store.create_account(account("acct_b")).await.unwrap();
    store.create_account(account("acct_a")).await.unwrap();
    assert_eq!(
        store.get_account("acct_a").await.unwrap(),
        Some(account("acct_a"))
    );
    assert_eq!(store.get_account("acct_x").await.unwrap(), None);
    assert_eq!(store.list_accounts().await.unwrap().len(), 2);
    assert!(store.set_account_disabled("acct_a", true).await.unwrap());
    assert!(!store.set_account_disabled("acct_x", true).await.unwrap());
    assert!(store.get_account("acct_a").await.unwrap().unwrap().disabled);
    // Ids are unique.
    assert!(store.create_account(account("acct_a")).await.is_err());
}

pub async fn keys_round_trip(store: Arc<dyn Store>) {
    store.create_account(account("acct_a")).await.unwrap();
    store
        .create_key(key("key_1", "acct_a", Role::Admin), Vec::new())
        .await
        .unwrap();
    store
        .create_key(key("key_2", "acct_a", Role::User), Vec::new())
        .await
        .unwrap();
    let found = store.find_key_by_hash("hash-of-key_2").await.unwrap();
    assert_eq!(found, Some(key("key_2", "acct_a", Role::User)));
    assert_eq!(store.find_key_by_hash("nope").await.unwrap(), None);
    assert_eq!(store.count_admin_keys().await.unwrap(), 1);
    assert_eq!(
        store.list_keys(Some("acct_a".into())).await.unwrap().len(),
        2
    );
    let limits = KeyLimits {
        spend_limit_nanos: Some(5),
        spend_period: Some(Period::Monthly),
        rpm_limit: Some(7),
        tpm_limit: None,
        expires_at_ms: Some(99),
        allowed_models: Some(vec!["m".into()]),
    };
    assert!(store
        .update_key_limits("key_2", limits.clone())
        .await
        .unwrap());
    assert_eq!(
        store.get_key("key_2").await.unwrap().unwrap().limits,
        limits
    );
    assert!(store.revoke_key("key_1", 50, Vec::new()).await.unwrap());
    // A second revoke keeps the first time.
    assert!(store.revoke_key("key_1", 60, Vec::new()).await.unwrap());
    assert_eq!(
        store.get_key("key_1").await.unwrap().unwrap().revoked_at_ms,
        Some(50)
    );
    assert_eq!(store.count_admin_keys().await.unwrap(), 0);
    assert!(!store.revoke_key("key_x", 1, Vec::new()).await.unwrap());
    // Key hashes are unique.
    let mut dup = key("key_3", "acct_a", Role::User);
    dup.key_hash = "hash-of-key_2".into();
    assert!(store.create_key(dup, Vec::new()).await.is_err());
}

pub async fn credits_are_idempotent_and_conflicts_are_refused(store: Arc<dyn Store>) {
    store.create_account(account("acct_a")).await.unwrap();
    let (_, new) = store
        .add_credit(credit("c1", "acct_a", 100, Some("idem")), Vec::new())
        .await
        .unwrap();
    assert!(new);
    let (e, new) = store
        .add_credit(credit("c2", "acct_a", 100, Some("idem")), Vec::new())
        .await
        .unwrap();
    assert!(!new);
    assert_eq!(e.id, "c1");
    let err = store
        .add_credit(credit("c3", "acct_a", 200, Some("idem")), Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Conflict);
    store
        .add_credit(credit("c4", "acct_a", 50, None), Vec::new())
        .await
        .unwrap();
    let t = store.credit_totals("acct_a", true).await.unwrap();
    assert_eq!(t.grants_nanos, 150);
    assert_eq!(t.charges_nanos, 0);
    assert_eq!(t.charges_nanos_records, Some(0));
    assert_eq!(store.list_credits("acct_a", 10).await.unwrap().len(), 2);
}

/// A batch that is partly a replay (records already in, interleaved with new ones and a
/// duplicate within the batch, across several multi-row statements) inserts and counts in its
/// rollups only the new records.
pub async fn partly_replayed_batches_add_only_new_records(store: Arc<dyn Store>) {
    let mut rng = StdRng::seed_from_u64(7);
    let recs: Vec<_> = (0..300)
        .map(|i| record(i, 1_700_000_000_000 + i as i64 * 997, "acct_a", &mut rng))
        .collect();
    let first: Vec<_> = recs.iter().step_by(3).cloned().collect();
    assert_eq!(store.insert_usage(first.clone()).await.unwrap(), 100);
    let mut replay = recs.clone();
    replay.insert(150, recs[149].clone());
    assert_eq!(store.insert_usage(replay).await.unwrap(), 200);
    assert_eq!(store.insert_usage(recs.clone()).await.unwrap(), 0);
    assert_eq!(store.count_usage().await.unwrap(), 300);
    let t = store.credit_totals("acct_a", true).await.unwrap();
    let charged: i64 = recs.iter().map(|r| r.charged_nanos).sum();
    assert_eq!(t.charges_nanos, charged);
    assert_eq!(t.charges_nanos_records, Some(charged));
    for r in [&recs[0], &recs[1], &recs[149], &recs[299]] {
        assert_eq!(
            store.get_usage(&r.request_id).await.unwrap().as_ref(),
            Some(r)
        );
    }
}

pub async fn records_are_idempotent_by_request_id(store: Arc<dyn Store>) {
    let mut rng = StdRng::seed_from_u64(1);
    let recs: Vec<_> = (0..50)
        .map(|i| record(i, 1_700_000_000_000 + i as i64 * 1000, "acct_a", &mut rng))
        .collect();
    assert_eq!(store.insert_usage(recs.clone()).await.unwrap(), 50);
    // A replay (the journal after a crash) adds nothing, records or rollups.
    assert_eq!(store.insert_usage(recs.clone()).await.unwrap(), 0);
    assert_eq!(store.insert_usage(recs[..10].to_vec()).await.unwrap(), 0);
    assert_eq!(store.count_usage().await.unwrap(), 50);
    assert_eq!(
        store.get_usage(&recs[3].request_id).await.unwrap(),
        Some(recs[3].clone())
    );
    // Every field reads back as written, the anomaly flag included.
    let mut flagged = record(900, 1_700_000_000_000, "acct_a", &mut rng);
    flagged.anomaly = Some(tollgate_core::record::Anomaly::OverReported);
    flagged.provenance = tollgate_core::record::Provenance::Estimated;
    let flagged_charge = flagged.charged_nanos;
    store.insert_usage(vec![flagged.clone()]).await.unwrap();
    assert_eq!(
        store.get_usage(&flagged.request_id).await.unwrap(),
        Some(flagged)
    );
    let t = store.credit_totals("acct_a", true).await.unwrap();
    let charged: i64 = recs.iter().map(|r| r.charged_nanos).sum::<i64>() + flagged_charge;
    assert_eq!(t.charges_nanos, charged);
    assert_eq!(t.charges_nanos_records, Some(charged));
    // The audit counts flagged records and their charges.
    let flagged = store.anomalies("acct_a", 10).await.unwrap();
    assert_eq!(flagged.len(), 1);
    assert_eq!(
        (
            flagged[0].anomaly,
            flagged[0].count,
            flagged[0].charged_nanos
        ),
        (
            tollgate_core::record::Anomaly::OverReported,
            1,
            flagged_charge
        )
    );
    let newest = store
        .list_usage(RecordQuery {
            account_id: Some("acct_a".into()),
            key_id: None,
            limit: 5,
        })
        .await
        .unwrap();
    assert_eq!(newest.len(), 5);
    assert_eq!(newest[0].request_id, recs[49].request_id);
    assert_eq!(store.count_usage().await.unwrap(), 51);
}

pub async fn provider_keys_round_trip(store: Arc<dyn Store>) {
    store.create_account(account("acct_a")).await.unwrap();
    let k = |p: &str, last4: &str| StoredProviderKey {
        account_id: "acct_a".into(),
        provider: p.into(),
        nonce: vec![1, 2, 3],
        ciphertext: vec![4, 5, 6],
        last4: last4.into(),
        created_at_ms: 7,
    };
    store.put_provider_key(k("openai", "1111")).await.unwrap();
    store.put_provider_key(k("openai", "2222")).await.unwrap();
    store
        .put_provider_key(k("anthropic", "3333"))
        .await
        .unwrap();
    let keys = store.list_provider_keys("acct_a").await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1].last4, "2222");
    assert!(store.delete_provider_key("acct_a", "openai").await.unwrap());
    assert!(!store.delete_provider_key("acct_a", "openai").await.unwrap());
}

pub async fn key_spend_reads_the_rollups(store: Arc<dyn Store>) {
    let mut rng = StdRng::seed_from_u64(2);
    let hour = 3_600_000;
    let recs: Vec<_> = (0..40)
        .map(|i| {
            record(
                i,
                1_700_000_000_000 / hour * hour + i as i64 * 600_000,
                "acct_a",
                &mut rng,
            )
        })
        .collect();
    store.insert_usage(recs.clone()).await.unwrap();
    let since = recs[12].created_at_ms / hour * hour;
    let want: i64 = recs
        .iter()
        .filter(|r| r.key_id == "key_1" && r.created_at_ms >= since)
        .map(|r| r.cost_nanos)
        .sum();
    assert_eq!(store.key_spend_since("key_1", since).await.unwrap(), want);
}

/// A record the store cannot keep is refused as `Invalid` (never retried forever) and takes
/// nothing of its batch with it.
pub async fn refused_records_are_invalid_not_transient(store: Arc<dyn Store>) {
    let mut rng = StdRng::seed_from_u64(3);
    let mut bad = record(1, 1_700_000_000_000, "acct_a", &mut rng);
    bad.input_tokens = -5;
    let good = record(2, 1_700_000_000_000, "acct_a", &mut rng);
    let err = store
        .insert_usage(vec![good.clone(), bad])
        .await
        .unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Invalid, "{err}");
    assert!(!err.is_transient());
    assert_eq!(store.count_usage().await.unwrap(), 0);
    assert_eq!(store.insert_usage(vec![good]).await.unwrap(), 1);
}

pub async fn credits_are_found_by_idempotency_key(store: Arc<dyn Store>) {
    store.create_account(account("acct_a")).await.unwrap();
    store.create_account(account("acct_b")).await.unwrap();
    store
        .add_credit(credit("c1", "acct_a", 100, Some("idem")), Vec::new())
        .await
        .unwrap();
    store
        .add_credit(credit("c2", "acct_a", 7, None), Vec::new())
        .await
        .unwrap();
    assert_eq!(
        store.find_credit("acct_a", "idem").await.unwrap(),
        Some(credit("c1", "acct_a", 100, Some("idem")))
    );
    assert_eq!(store.find_credit("acct_a", "other").await.unwrap(), None);
    // Keys are per account.
    assert_eq!(store.find_credit("acct_b", "idem").await.unwrap(), None);
}

/// Flagged records are counted per kind (ordered by name), with the ids of the oldest first,
/// per account.
pub async fn anomalies_are_counted_per_kind_oldest_first(store: Arc<dyn Store>) {
    use tollgate_core::record::Anomaly;
    let mut rng = StdRng::seed_from_u64(4);
    assert_eq!(store.anomalies("acct_a", 10).await.unwrap(), vec![]);
    let mut recs = Vec::new();
    for i in 0..30 {
        // Newest ids first in time, so order by time is not order by id.
        let mut r = record(i, 1_700_000_000_000 - i as i64 * 1000, "acct_a", &mut rng);
        r.anomaly = match i % 3 {
            0 => Some(Anomaly::OverReported),
            1 => Some(Anomaly::Clamped),
            _ => None,
        };
        recs.push(r);
    }
    let mut other = record(99, 1_600_000_000_000, "acct_b", &mut rng);
    other.anomaly = Some(Anomaly::Clamped);
    recs.push(other);
    store.insert_usage(recs.clone()).await.unwrap();
    let got = store.anomalies("acct_a", 4).await.unwrap();
    let oldest = |kind: Anomaly| -> Vec<String> {
        let mut of: Vec<&tollgate_core::record::UsageRecord> = recs
            .iter()
            .filter(|r| r.account_id == "acct_a" && r.anomaly == Some(kind))
            .collect();
        of.sort_by_key(|r| (r.created_at_ms, r.request_id.clone()));
        of.iter().take(4).map(|r| r.request_id.clone()).collect()
    };
    let charged = |kind: Anomaly| -> i64 {
        recs.iter()
            .filter(|r| r.account_id == "acct_a" && r.anomaly == Some(kind))
            .map(|r| r.charged_nanos)
            .sum()
    };
    assert_eq!(
        got,
        vec![
            AnomalyCount {
                anomaly: Anomaly::Clamped,
                count: 10,
                charged_nanos: charged(Anomaly::Clamped),
                request_ids: oldest(Anomaly::Clamped),
            },
            AnomalyCount {
                anomaly: Anomaly::OverReported,
                count: 10,
                charged_nanos: charged(Anomaly::OverReported),
                request_ids: oldest(Anomaly::OverReported),
            },
        ]
    );
    assert_eq!(got[0].request_ids[0], "req_000028");
    let b = store.anomalies("acct_b", 100).await.unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].request_ids, ["req_000099"]);
}

//! Webhook endpoints and their outbox.

use std::sync::Arc;

use tollgate_core::store::Store;
use tollgate_core::webhook::{
    AttemptOutcome, DeliveryState, Event, EventType, SealedSecret, Webhook, WebhookSettings,
};

fn hook(id: &str, account: &str, events: Vec<EventType>, at: i64) -> Webhook {
    Webhook {
        id: id.into(),
        account_id: account.into(),
        url: format!("https://example.com/{id}"),
        events,
        settings: WebhookSettings {
            usage_threshold_percent: vec![50, 80],
            credits_low_threshold: Some(1_000),
        },
        active: true,
        disabled_reason: None,
        secret: SealedSecret {
            nonce: vec![1; 12],
            ciphertext: vec![2; 48],
        },
        previous_secret: None,
        previous_until_ms: None,
        failing_since_ms: None,
        created_at_ms: at,
    }
}

fn event(id: &str, account: &str, kind: EventType, dedupe: Option<&str>, at: i64) -> Event {
    let mut e = Event::new(id.into(), account, kind, serde_json::json!({"n": 1}), at);
    e.dedupe_key = dedupe.map(str::to_string);
    e
}

fn outcome(state: DeliveryState, at: i64, next: Option<i64>) -> AttemptOutcome {
    AttemptOutcome {
        at_ms: at,
        status: Some(if state == DeliveryState::Succeeded {
            200
        } else {
            500
        }),
        latency_ms: 12,
        error: (state != DeliveryState::Succeeded).then(|| "HTTP 500".to_string()),
        state,
        next_attempt_at_ms: next,
        disable: None,
    }
}

/// Endpoints round-trip, are listed per account oldest first, updated whole, deleted.
pub async fn webhooks_round_trip(store: Arc<dyn Store>) {
    let a = hook("wh_a", "acct_1", vec![EventType::CreditsLow], 10);
    let mut b = hook("wh_b", "acct_1", vec![EventType::UsageThreshold], 20);
    b.previous_secret = Some(SealedSecret {
        nonce: vec![3; 12],
        ciphertext: vec![4; 48],
    });
    b.previous_until_ms = Some(99);
    store.create_webhook(b.clone()).await.unwrap();
    store.create_webhook(a.clone()).await.unwrap();
    store
        .create_webhook(hook("wh_c", "acct_2", vec![], 5))
        .await
        .unwrap();
    assert_eq!(store.get_webhook("wh_b").await.unwrap(), Some(b.clone()));
    let mine = store.list_webhooks(Some("acct_1".into())).await.unwrap();
    assert_eq!(mine, vec![a.clone(), b.clone()]);
    assert_eq!(store.list_webhooks(None).await.unwrap().len(), 3);
    let mut a2 = a.clone();
    a2.url = "https://example.org/x".into();
    a2.active = false;
    a2.disabled_reason = Some("410 Gone".into());
    a2.settings.usage_threshold_percent = vec![95];
    assert!(store.update_webhook(a2.clone()).await.unwrap());
    assert_eq!(store.get_webhook("wh_a").await.unwrap(), Some(a2));
    assert!(store.delete_webhook("wh_a").await.unwrap());
    assert!(!store.delete_webhook("wh_a").await.unwrap());
    assert_eq!(store.get_webhook("wh_a").await.unwrap(), None);
    assert!(!store.update_webhook(a).await.unwrap());
}

/// An event gets one delivery per active endpoint of its account that wants it; a dedupe key
/// is used once per account; a test event goes to its one endpoint.
pub async fn events_fan_out_once(store: Arc<dyn Store>) {
    store
        .create_webhook(hook("wh_low", "acct_1", vec![EventType::CreditsLow], 1))
        .await
        .unwrap();
    store
        .create_webhook(hook("wh_all", "acct_1", EventType::ALL.to_vec(), 2))
        .await
        .unwrap();
    let mut off = hook("wh_off", "acct_1", EventType::ALL.to_vec(), 3);
    off.active = false;
    store.create_webhook(off).await.unwrap();
    store
        .create_webhook(hook("wh_other", "acct_2", EventType::ALL.to_vec(), 4))
        .await
        .unwrap();

    let low = event("evt_1", "acct_1", EventType::CreditsLow, Some("low:1"), 100);
    let again = event("evt_2", "acct_1", EventType::CreditsLow, Some("low:1"), 101);
    let granted = event("evt_3", "acct_1", EventType::CreditsGranted, None, 102);
    let other = event("evt_4", "acct_2", EventType::CreditsLow, Some("low:1"), 103);
    let mut test = event("evt_5", "acct_1", EventType::WebhookTest, None, 104);
    test.webhook_id = Some("wh_low".into());
    assert_eq!(
        store
            .enqueue_events(vec![low, again, granted, other, test])
            .await
            .unwrap(),
        4,
        "the second use of a dedupe key is skipped; another account's is its own"
    );
    let claimed = store.claim_deliveries(200, 10_000, 100).await.unwrap();
    let mut got: Vec<(String, String)> = claimed
        .iter()
        .map(|c| (c.webhook.id.clone(), c.delivery.event_id.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("wh_all".into(), "evt_1".into()),
            ("wh_all".into(), "evt_3".into()),
            ("wh_low".into(), "evt_1".into()),
            ("wh_low".into(), "evt_5".into()),
            ("wh_other".into(), "evt_4".into()),
        ]
    );
    let c = claimed
        .iter()
        .find(|c| c.delivery.event_id == "evt_3")
        .unwrap();
    assert!(
        c.payload.contains("\"type\":\"credits.granted\""),
        "{}",
        c.payload
    );
    assert_eq!(c.delivery.state, DeliveryState::Pending);
    assert_eq!(c.delivery.attempts, 0);
}

/// A claimed delivery is not claimed again until its claim ends or it is finished; attempts
/// are kept; a failure schedules the next try; disabling fails what is pending; a retry makes
/// a delivery due again; deleting an endpoint deletes its deliveries.
pub async fn deliveries_are_claimed_once_and_retried(store: Arc<dyn Store>) {
    store
        .create_webhook(hook("wh_1", "acct_1", vec![EventType::CreditsGranted], 1))
        .await
        .unwrap();
    let events = (0..3)
        .map(|i| {
            event(
                &format!("evt_{i}"),
                "acct_1",
                EventType::CreditsGranted,
                None,
                100 + i,
            )
        })
        .collect();
    store.enqueue_events(events).await.unwrap();
    assert!(
        store
            .claim_deliveries(99, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let first = store.claim_deliveries(200, 1_000, 2).await.unwrap();
    assert_eq!(first.len(), 2, "the limit holds");
    let second = store.claim_deliveries(200, 1_000, 10).await.unwrap();
    assert_eq!(second.len(), 1, "claimed ones are not claimed twice");
    assert!(store
        .claim_deliveries(300, 1_000, 10)
        .await
        .unwrap()
        .is_empty());

    for ok in [&first[0].delivery, &second[0].delivery] {
        store
            .finish_attempt(&ok.id, outcome(DeliveryState::Succeeded, 250, None))
            .await
            .unwrap();
    }
    let failed = &first[1].delivery;
    store
        .finish_attempt(
            &failed.id,
            outcome(DeliveryState::Pending, 260, Some(5_260)),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .get_webhook("wh_1")
            .await
            .unwrap()
            .unwrap()
            .failing_since_ms,
        Some(260)
    );
    assert!(store
        .claim_deliveries(5_000, 9_000, 10)
        .await
        .unwrap()
        .is_empty());
    let due = store.claim_deliveries(5_260, 9_000, 10).await.unwrap();
    assert_eq!(
        due.len(),
        1,
        "the failed one is due at its next try (and its claim ended)"
    );
    assert_eq!(due[0].delivery.id, failed.id);
    assert_eq!(due[0].delivery.attempts, 1);
    assert_eq!(due[0].delivery.last_status, Some(500));

    let attempts = store.list_attempts("wh_1", 10).await.unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0].at_ms, 260, "newest first");
    assert_eq!(attempts[0].next_attempt_at_ms, Some(5_260));
    assert_eq!(attempts[1].state, DeliveryState::Succeeded);
    assert_eq!(attempts[1].event_type, EventType::CreditsGranted);

    // 410: the endpoint is disabled and what is pending fails.
    let mut gone = outcome(DeliveryState::Failed, 5_300, None);
    gone.status = Some(410);
    gone.disable = Some("the endpoint answered 410 Gone".into());
    store.finish_attempt(&failed.id, gone).await.unwrap();
    let h = store.get_webhook("wh_1").await.unwrap().unwrap();
    assert!(!h.active);
    assert_eq!(
        h.disabled_reason.as_deref(),
        Some("the endpoint answered 410 Gone")
    );
    assert!(store
        .claim_deliveries(2_000_000, 2_100_000, 10)
        .await
        .unwrap()
        .is_empty());

    assert!(store
        .retry_delivery("wh_1", &failed.id, 6_000)
        .await
        .unwrap());
    assert!(!store
        .retry_delivery("wh_other", &failed.id, 6_000)
        .await
        .unwrap());
    let again = store.claim_deliveries(6_000, 7_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.attempts, 2);

    assert!(store.delete_webhook("wh_1").await.unwrap());
    assert!(store.list_attempts("wh_1", 10).await.unwrap().is_empty());
    assert!(store
        .claim_deliveries(9_000_000, 9_100_000, 10)
        .await
        .unwrap()
        .is_empty());
}

/// Events written with the change that caused them: a new credit entry writes its event, a
/// replay of it (same idempotency key) writes nothing; a key and its revocation likewise.
pub async fn the_outbox_commits_with_its_change(store: Arc<dyn Store>) {
    use tollgate_core::credit::{CreditEntry, CreditKind};
    store
        .create_account(tollgate_core::account::Account {
            id: "acct_1".into(),
            name: "a".into(),
            created_at_ms: 1,
            disabled: false,
        })
        .await
        .unwrap();
    store
        .create_webhook(hook("wh_1", "acct_1", EventType::ALL.to_vec(), 1))
        .await
        .unwrap();
    let entry = |id: &str| CreditEntry {
        id: id.into(),
        account_id: "acct_1".into(),
        kind: CreditKind::Grant,
        amount_nanos: 500,
        idempotency_key: Some("once".into()),
        note: None,
        created_at_ms: 10,
    };
    let granted = event("evt_g1", "acct_1", EventType::CreditsGranted, None, 10);
    let (_, new) = store.add_credit(entry("c1"), vec![granted]).await.unwrap();
    assert!(new);
    let replayed = event("evt_g2", "acct_1", EventType::CreditsGranted, None, 11);
    let (_, new) = store.add_credit(entry("c2"), vec![replayed]).await.unwrap();
    assert!(!new, "the same idempotency key");
    let claimed = store.claim_deliveries(100, 1_000, 10).await.unwrap();
    let ids: Vec<&str> = claimed
        .iter()
        .map(|c| c.delivery.event_id.as_str())
        .collect();
    assert_eq!(ids, ["evt_g1"], "a replayed grant writes no event");
}

/// Pruning forgets finished deliveries (and their attempts) older than the cutoff, keeps
/// pending ones and newer ones, and keeps each dedupe key used, so a crossing never fires again.
pub async fn finished_history_is_pruned_and_dedupe_keys_stay(store: Arc<dyn Store>) {
    store
        .create_webhook(hook("wh_p", "acct_1", EventType::ALL.to_vec(), 1))
        .await
        .unwrap();
    let old_ok = event(
        "evt_old_ok",
        "acct_1",
        EventType::CreditsLow,
        Some("low:p"),
        100,
    );
    let old_failing = event(
        "evt_old_pending",
        "acct_1",
        EventType::CreditsGranted,
        None,
        110,
    );
    let old_plain = event(
        "evt_old_plain",
        "acct_1",
        EventType::CreditsGranted,
        None,
        120,
    );
    let new_ok = event(
        "evt_new_ok",
        "acct_1",
        EventType::CreditsGranted,
        None,
        5_000,
    );
    store
        .enqueue_events(vec![old_ok, old_failing, old_plain, new_ok])
        .await
        .unwrap();
    let claimed = store.claim_deliveries(6_000, 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 4);
    for c in &claimed {
        let o = if c.delivery.event_id == "evt_old_pending" {
            outcome(DeliveryState::Pending, 6_000, Some(100_000))
        } else {
            outcome(DeliveryState::Succeeded, 6_000, None)
        };
        store.finish_attempt(&c.delivery.id, o).await.unwrap();
    }
    assert_eq!(store.list_attempts("wh_p", 10).await.unwrap().len(), 4);

    assert_eq!(store.prune_webhook_history(1_000).await.unwrap(), 2);
    let mut left: Vec<String> = store
        .list_attempts("wh_p", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.event_id)
        .collect();
    left.sort();
    assert_eq!(left, vec!["evt_new_ok", "evt_old_pending"]);
    assert_eq!(store.prune_webhook_history(1_000).await.unwrap(), 0);
    // The pruned crossing's key is still used.
    let again = event(
        "evt_again",
        "acct_1",
        EventType::CreditsLow,
        Some("low:p"),
        7_000,
    );
    assert_eq!(store.enqueue_events(vec![again]).await.unwrap(), 0);
    // The pending delivery is still delivered when due.
    let due = store.claim_deliveries(100_000, 200_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].delivery.event_id, "evt_old_pending");
}

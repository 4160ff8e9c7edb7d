//! The store conformance suite: what every backend must do, through the `Store` traits only.
//! Each backend's test file (sqlite.rs; postgres.rs later) runs every function here against a
//! fresh, empty store, via `conformance_suite!`.

pub mod aggregates;
pub mod retention;
pub mod rollups;
pub mod webhooks;

/// One `#[tokio::test]` per suite function, each on a fresh store from `$open` (an expression
/// returning `(guard, Arc<dyn Store>)`; the guard keeps the store's resources alive).
#[macro_export]
macro_rules! conformance_suite {
    ($open:expr) => {
        $crate::conformance_suite!(@tests $open;
            accounts_round_trip,
            keys_round_trip,
            credits_are_idempotent_and_conflicts_are_refused,
            records_are_idempotent_by_request_id,
            partly_replayed_batches_add_only_new_records,
            provider_keys_round_trip,
            key_spend_reads_the_rollups,
            refused_records_are_invalid_not_transient,
            credits_are_found_by_idempotency_key,
            anomalies_are_counted_per_kind_oldest_first
        );
        $crate::conformance_suite!(@rollups $open;
            rollup_buckets_equal_record_sums_in_every_zone,
            record_pages_walk_every_record_once,
            insight_rows_are_the_accounts_records_in_order,
            rollups_filter_by_endpoint,
            attribution_rollups_equal_record_sums
        );
        $crate::conformance_suite!(@retention $open;
            retention_drops_old_records_and_keeps_rollups,
            imported_credits_keep_their_id_once
        );
        $crate::conformance_suite!(@webhooks $open;
            webhooks_round_trip,
            events_fan_out_once,
            deliveries_are_claimed_once_and_retried,
            the_outbox_commits_with_its_change,
            finished_history_is_pruned_and_dedupe_keys_stay
        );
    };
    (@webhooks $open:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, store) = $open;
                conformance::webhooks::$name(store).await;
            }
        )*
    };
    (@tests $open:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, store) = $open;
                conformance::aggregates::$name(store).await;
            }
        )*
    };
    (@retention $open:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, store) = $open;
                conformance::retention::$name(store).await;
            }
        )*
    };
    (@rollups $open:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, store) = $open;
                conformance::rollups::$name(store).await;
            }
        )*
    };
}

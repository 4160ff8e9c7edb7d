//! The store conformance suite against the embedded SQLite store, plus what only SQLite has.

#![allow(clippy::unwrap_used)]

mod conformance;

use std::sync::Arc;

use tollgate_core::store::{AccountStore, KeyStore, Store};
use tollgate_core::StoreErrorKind;
use tollgate_store::SqliteStore;

fn open() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    (dir, Arc::new(store))
}

conformance_suite!(open());

/// Limits that do not parse are an error when the key is read, never "unlimited".
#[tokio::test]
async fn corrupt_stored_limits_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = SqliteStore::open(&path).unwrap();
    store
        .create_account(tollgate_core::account::Account {
            id: "acct_a".into(),
            name: "a".into(),
            created_at_ms: 1,
            disabled: false,
        })
        .await
        .unwrap();
    store
        .create_key(
            tollgate_core::account::ApiKeyRecord {
                id: "key_1".into(),
                account_id: "acct_a".into(),
                name: "k".into(),
                key_hash: "h".into(),
                last4: "abcd".into(),
                prefix: "tg-".into(),
                role: tollgate_core::account::Role::User,
                created_at_ms: 1,
                revoked_at_ms: None,
                limits: Default::default(),
            },
            Vec::new(),
        )
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE api_keys SET limits = '{\"rpm_limit\": \"lots\"}' WHERE id = 'key_1'",
        [],
    )
    .unwrap();
    let err = store.find_key_by_hash("h").await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Corrupt, "{err}");
}

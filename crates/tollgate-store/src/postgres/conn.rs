//! The connection pool (deadpool-postgres over tokio-postgres), the numbered schema steps, and
//! how a driver error becomes a `StoreError` kind.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;
use tollgate_core::StoreError;

/// Versioned schema steps; each runs once, in order, under an advisory lock so replicas starting
/// together do not race.
pub const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_limit_windows.sql"),
    include_str!("migrations/0003_retired_records.sql"),
    include_str!("migrations/0004_webhooks.sql"),
    include_str!("migrations/0005_webhook_history.sql"),
    include_str!("migrations/0006_attribution.sql"),
    include_str!("migrations/0007_fingerprints.sql"),
];

/// Any key will do as long as it is tollgate's own: `pg_advisory_lock` keys are database-wide.
const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465; // "tollgate"

/// What kind of failure a driver error is. Broken constraints and values out of range will
/// never pass (invalid); serialization failures, deadlocks and lost connections may (the
/// writer retries them); a value that does not read back as its type is corrupt.
pub(crate) fn classify(e: tokio_postgres::Error) -> StoreError {
    let msg = match e.as_db_error() {
        Some(db) => format!("postgres: {}", db.message()),
        None => format!("postgres: {e}"),
    };
    match e.code() {
        Some(code) => {
            let class = &code.code()[..2];
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
            {
                StoreError::unavailable(msg)
            } else if class == "23" || class == "22" || class == "42" {
                StoreError::invalid(msg)
            } else if class == "XX" {
                StoreError::corrupt(msg)
            } else {
                StoreError::unavailable(msg)
            }
        }
        None if e.to_string().contains("error deserializing column") => StoreError::corrupt(msg),
        None => StoreError::unavailable(msg),
    }
}

pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => classify(e),
        other => StoreError::unavailable(format!("postgres pool: {other}")),
    }
}

/// A value stored that is not one of its type's values.
pub(crate) fn bad_value(what: &str, v: &str) -> StoreError {
    StoreError::corrupt(format!("{what} {v:?} is not a known value"))
}

pub(crate) fn connect(url: &str, size: usize) -> Result<Pool, StoreError> {
    let pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::invalid(format!("store.url: {e}")))?;
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    // A connection that cannot be had in 5 s is an outage: the caller gets `unavailable`
    // (the ledger keeps the records in its journal and retries), not a hang.
    Pool::builder(mgr)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| StoreError::invalid(format!("postgres pool: {e}")))
}

/// Brings the schema to the newest version this build knows. A database whose schema is newer
/// (written by a newer tollgate) is refused: this build would misread it.
pub(crate) async fn migrate(client: &mut Object) -> Result<usize, StoreError> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .await
        .map_err(classify)?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(classify)?;
    let result = migrate_locked(client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(classify);
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn migrate_locked(client: &mut Object) -> Result<usize, StoreError> {
    let current: i32 = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await
        .map_err(classify)?
        .get(0);
    let known = MIGRATIONS.len() as i32;
    if current > known {
        return Err(StoreError::invalid(format!(
            "the database schema is at version {current}, newer than the {known} this tollgate \
             knows: run the newer tollgate (or upgrade this one) against this database"
        )));
    }
    let mut applied = 0;
    for (i, step) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        if version > current {
            let tx = client.transaction().await.map_err(classify)?;
            tx.batch_execute(step).await.map_err(classify)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(classify)?;
            tx.commit().await.map_err(classify)?;
            applied += 1;
        }
    }
    Ok(applied)
}

/// The schema version the database is at.
pub(crate) async fn schema_version(client: &Object) -> Result<i32, StoreError> {
    Ok(client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await
        .map_err(classify)?
        .get(0))
}

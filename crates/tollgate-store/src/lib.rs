//! Store backends behind `tollgate_core::store::Store`: the embedded SQLite store (the default;
//! nothing to set up) and PostgreSQL (several replicas). Every backend passes the conformance
//! suite in `tests/conformance`.

mod columns;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use tollgate_core::config::{Config, StoreKind};
use tollgate_core::store::Store;
use tollgate_core::StoreError;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Opens (creating or migrating) the configured backend. `replica_id` names this process's
/// credit leases on a shared backend.
pub async fn open(config: &Config, replica_id: &str) -> Result<Arc<dyn Store>, StoreError> {
    match config.store.kind {
        StoreKind::Sqlite => Ok(Arc::new(SqliteStore::open(&config.sqlite_path())?)),
        StoreKind::Postgres => {
            let url =
                config.store.url.as_deref().ok_or_else(|| {
                    StoreError::invalid("store.kind = \"postgres\" needs store.url")
                })?;
            Ok(Arc::new(
                PgStore::connect(url, config.store.pool_size, replica_id).await?,
            ))
        }
    }
}

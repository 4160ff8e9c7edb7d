//! Store backends behind `tollgate_core::store::Store`: the embedded SQLite store (the default;
//! nothing to set up). Every backend passes the conformance suite in `tests/conformance`.

pub mod sqlite;

use std::sync::Arc;

use tollgate_core::config::{Config, StoreKind};
use tollgate_core::store::Store;
use tollgate_core::StoreError;

pub use sqlite::SqliteStore;

/// Opens (creating or migrating) the configured backend.
pub fn open(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    match config.store.kind {
        StoreKind::Sqlite => Ok(Arc::new(SqliteStore::open(&config.sqlite_path())?)),
    }
}

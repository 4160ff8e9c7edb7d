//! Connections: one writer and one reader in WAL mode, used from blocking threads; the
//! numbered schema steps; and how a driver error becomes a `StoreError` kind.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::types::Type;
use rusqlite::{Connection, ErrorCode};
use tollgate_core::StoreError;

/// A failure inside a blocking SQLite call: a driver error (classified into a `StoreError` kind
/// at the boundary) or one the code raised itself.
pub(crate) enum Fail {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl From<Fail> for StoreError {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Store(e) => e,
            Fail::Sql(e) => classify(e),
        }
    }
}

/// What kind of failure a driver error is: busy/locked/I/O pass (retry), a broken constraint
/// never will, and values that do not read back as their type mean the file is corrupt.
fn classify(e: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    let msg = e.to_string();
    match &e {
        E::SqliteFailure(f, _) => match f.code {
            ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch => {
                StoreError::invalid(msg)
            }
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreError::corrupt(msg),
            _ => StoreError::unavailable(msg),
        },
        E::FromSqlConversionFailure(..)
        | E::InvalidColumnType(..)
        | E::IntegralValueOutOfRange(..) => StoreError::corrupt(msg),
        E::ToSqlConversionFailure(_) => StoreError::invalid(msg),
        _ => StoreError::unavailable(msg),
    }
}

/// A stored value that is not one of its type's values.
pub(crate) fn bad_value(col: usize, what: &str, v: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        col,
        Type::Text,
        format!("{what} {v:?} is not a known value").into(),
    )
}

/// Versioned schema steps; each runs once, in order.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_credits_limits_byok.sql"),
    include_str!("migrations/0003_day_rollup.sql"),
    include_str!("migrations/0004_integer_guards.sql"),
    include_str!("migrations/0005_record_anomaly.sql"),
    include_str!("migrations/0006_retired_records.sql"),
    include_str!("migrations/0007_webhooks.sql"),
    include_str!("migrations/0008_webhook_history.sql"),
    include_str!("migrations/0009_record_guard_in_code.sql"),
    include_str!("migrations/0010_attribution.sql"),
    include_str!("migrations/0011_fingerprints.sql"),
];

pub(crate) struct Db {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

fn open(path: &Path) -> Result<Connection, Fail> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -16384;
         PRAGMA foreign_keys = ON;",
    )?;
    // The writer alone caches the record inserts of seven chunk sizes and six rollup upserts
    // besides the statements of accounts, keys, credits and webhooks.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl Db {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::unavailable(format!("{}: {e}", dir.display())))?;
        }
        make_private(path)
            .map_err(|e| StoreError::unavailable(format!("{}: {e}", path.display())))?;
        let writer = open(path)?;
        migrate(&writer)?;
        let reader = open(path)?;
        // Reads (usage pages, exports, the insights' scans) map the file rather than copy each
        // page into the connection's cache; writes keep the copying path.
        reader
            .execute_batch("PRAGMA mmap_size = 1073741824;")
            .map_err(|e| StoreError::from(Fail::from(e)))?;
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    pub(crate) async fn with_writer<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Fail> + Send + 'static,
    {
        let conn = self.writer.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock()).map_err(StoreError::from))
            .await
            .map_err(|e| StoreError::unavailable(e.to_string()))?
    }

    pub(crate) async fn with_reader<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Fail> + Send + 'static,
    {
        let conn = self.reader.clone();
        tokio::task::spawn_blocking(move || f(&conn.lock()).map_err(StoreError::from))
            .await
            .map_err(|e| StoreError::unavailable(e.to_string()))?
    }
}

/// The database holds key hashes and provider-key ciphertext: owner-only (0600). SQLite creates
/// its `-wal` and `-shm` files with the database file's mode, so the file is created 0600 before
/// SQLite opens it (an empty file is an empty database); files an older version left readable
/// are made owner-only.
fn make_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let p = std::path::PathBuf::from(name);
            match std::fs::metadata(&p) {
                Ok(m) if m.permissions().mode() & 0o777 != 0o600 => {
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn migrate(conn: &Connection) -> Result<(), Fail> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    for (i, step) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version > current {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(step)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [version],
            )?;
            tx.commit()?;
        }
    }
    Ok(())
}

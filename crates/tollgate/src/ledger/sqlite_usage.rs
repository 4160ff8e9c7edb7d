//! `UsageQueries` for SQLite: reads of the rollup tables.

use async_trait::async_trait;

use super::sqlite::SqliteStore;
use crate::usage::store::UsageQueries;

#[async_trait]
impl UsageQueries for SqliteStore {}

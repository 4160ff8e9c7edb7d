//! The read side of the ledger for usage queries: rollup reads, separate from `Store` (the write
//! side) so each backend implements them next to its schema.

use async_trait::async_trait;

#[async_trait]
pub trait UsageQueries: Send + Sync + 'static {}

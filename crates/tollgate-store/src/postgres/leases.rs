//! Balance leases (`LeaseStore`): how replicas share an account's balance. Every change is one
//! transaction that locks the account's `credit_pools` row first, so two replicas' lease moves
//! on one account are serialized and `available` never goes below zero by a lease.

use async_trait::async_trait;
use tollgate_core::store::{LeaseStore, LeaseTotals};
use tollgate_core::StoreError;

use super::conn::classify;
use super::rows::get;
use super::PgStore;

#[async_trait]
impl LeaseStore for PgStore {
    async fn take_lease(
        &self,
        account_id: &str,
        want: i64,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<i64, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        // Leases that expired go back to the pool first: a replica that died strands its
        // lease only until then. (balance = available + Σ leases holds either way: a lease
        // overdrawn by records its replica wrote late returns a negative amount.)
        if tx
            .query_opt(
                "SELECT 1 FROM credit_pools WHERE account_id = $1 FOR UPDATE",
                &[&account_id],
            )
            .await
            .map_err(classify)?
            .is_none()
        {
            return Ok(0);
        }
        tx.execute(
            "WITH gone AS (DELETE FROM credit_leases WHERE account_id = $1 AND expires_at_ms < $2 \
             RETURNING amount_nanos) \
             UPDATE credit_pools SET available_nanos = available_nanos + \
             (SELECT COALESCE(SUM(amount_nanos), 0) FROM gone) WHERE account_id = $1",
            &[&account_id, &now_ms],
        )
        .await
        .map_err(classify)?;
        let row = tx
            .query_one(
                "SELECT available_nanos FROM credit_pools WHERE account_id = $1",
                &[&account_id],
            )
            .await
            .map_err(classify)?;
        let available: i64 = get(&row, 0)?;
        let granted = want.min(available).max(0);
        tx.execute(
            "UPDATE credit_pools SET available_nanos = available_nanos - $2 WHERE account_id = $1",
            &[&account_id, &granted],
        )
        .await
        .map_err(classify)?;
        tx.execute(
            "INSERT INTO credit_leases (account_id, replica_id, amount_nanos, expires_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, replica_id) DO UPDATE SET \
             amount_nanos = credit_leases.amount_nanos + $3, expires_at_ms = $4",
            &[&account_id, &self.replica_id, &granted, &expires_at_ms],
        )
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(granted)
    }

    async fn return_lease(&self, account_id: &str, amount: i64) -> Result<(), StoreError> {
        if amount <= 0 {
            return Ok(());
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        tx.execute(
            "SELECT 1 FROM credit_pools WHERE account_id = $1 FOR UPDATE",
            &[&account_id],
        )
        .await
        .map_err(classify)?;
        let row = tx
            .query_opt(
                "SELECT amount_nanos FROM credit_leases WHERE account_id = $1 AND replica_id = $2 FOR UPDATE",
                &[&account_id, &self.replica_id],
            )
            .await
            .map_err(classify)?;
        let Some(row) = row else {
            return Ok(());
        };
        let held: i64 = get(&row, 0)?;
        let back = amount.min(held.max(0));
        tx.execute(
            "UPDATE credit_leases SET amount_nanos = amount_nanos - $3 WHERE account_id = $1 AND replica_id = $2",
            &[&account_id, &self.replica_id, &back],
        )
        .await
        .map_err(classify)?;
        tx.execute(
            "UPDATE credit_pools SET available_nanos = available_nanos + $2 WHERE account_id = $1",
            &[&account_id, &back],
        )
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)
    }

    async fn renew_leases(&self, expires_at_ms: i64) -> Result<Vec<String>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "UPDATE credit_leases SET expires_at_ms = $2 WHERE replica_id = $1 RETURNING account_id",
                &[&self.replica_id, &expires_at_ms],
            )
            .await
            .map_err(classify)?;
        rows.iter().map(|r| get(r, 0)).collect()
    }

    async fn lease_totals(&self, account_id: &str) -> Result<LeaseTotals, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT COALESCE((SELECT available_nanos FROM credit_pools WHERE account_id = $1), 0), \
                 (SELECT COALESCE(SUM(amount_nanos), 0)::bigint FROM credit_leases WHERE account_id = $1), \
                 (SELECT COALESCE(SUM(amount_nanos), 0)::bigint FROM credit_leases WHERE account_id = $1 AND replica_id = $2)",
                &[&account_id, &self.replica_id],
            )
            .await
            .map_err(classify)?;
        Ok(LeaseTotals {
            available_nanos: get(&row, 0)?,
            leased_nanos: get(&row, 1)?,
            own_nanos: get(&row, 2)?,
        })
    }
}

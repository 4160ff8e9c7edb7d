//! Shared limit windows (`QuotaStore`): how replicas split a key's rpm, tpm and spend limits.
//! A take locks the window's row, so two replicas' takes on one window are serialized and
//! their grants together never pass the limit.

use async_trait::async_trait;
use tollgate_core::store::{QuotaKind, QuotaStore, QuotaTake};
use tollgate_core::StoreError;

use super::conn::classify;
use super::rows::get;
use super::PgStore;

#[async_trait]
impl QuotaStore for PgStore {
    async fn take_quota(&self, t: QuotaTake<'_>) -> Result<(i64, i64), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(classify)?;
        let kind = t.kind.code();
        tx.execute(
            "INSERT INTO limit_windows (key_id, kind, window_start_ms, window_end_ms, used) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[
                &t.key_id,
                &kind,
                &t.window_start_ms,
                &t.window_end_ms,
                &t.seed.max(0),
            ],
        )
        .await
        .map_err(classify)?;
        let row = tx
            .query_one(
                "SELECT used FROM limit_windows \
                 WHERE key_id = $1 AND kind = $2 AND window_start_ms = $3 FOR UPDATE",
                &[&t.key_id, &kind, &t.window_start_ms],
            )
            .await
            .map_err(classify)?;
        let used: i64 = get(&row, 0)?;
        let used = used.saturating_add(t.debt.max(0));
        let granted = t.want.min(t.limit.saturating_sub(used)).max(0);
        let after = used.saturating_add(granted);
        tx.execute(
            "UPDATE limit_windows SET used = $4 \
             WHERE key_id = $1 AND kind = $2 AND window_start_ms = $3",
            &[&t.key_id, &kind, &t.window_start_ms, &after],
        )
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok((granted, after))
    }

    async fn return_quota(
        &self,
        key_id: &str,
        kind: QuotaKind,
        window_start_ms: i64,
        amount: i64,
    ) -> Result<(), StoreError> {
        if amount <= 0 {
            return Ok(());
        }
        let c = self.client().await?;
        c.execute(
            "UPDATE limit_windows SET used = GREATEST(used - $4, 0) \
             WHERE key_id = $1 AND kind = $2 AND window_start_ms = $3",
            &[&key_id, &kind.code(), &window_start_ms, &amount],
        )
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn prune_quotas(&self, before_ms: i64) -> Result<u64, StoreError> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM limit_windows WHERE window_end_ms < $1",
            &[&before_ms],
        )
        .await
        .map_err(classify)
    }
}

//! Reports: the reads behind every usage API. Whose usage a request may read (`scope`), sums
//! per bucket from the rollups (`bucketed`, `totals`: the cover plan picks which rollup rows
//! answer), and newest-first pages of raw records. The HTTP layer shapes them per platform.

use std::collections::BTreeMap;

use tollgate_core::account::{Caller, Role};
use tollgate_core::calendar::{MAX_MS, MINUTE_MS, MIN_MS};
use tollgate_core::pricing::reprice::{Repriced, Repricing};
use tollgate_core::pricing::PriceTable;
use tollgate_core::record::UsageRecord;
use tollgate_core::rollup::{
    self, cover, AttrFilter, Dims, GroupKey, RecordCursor, RecordFilter, RollupFilter, Sums,
};
use tollgate_core::store::Store;
use tollgate_core::{Code, DomainError};

use crate::Engine;

/// Whose usage a request reads: the caller's account unless an admin names another, one of
/// its keys, and the end users or the tag the request asked for.
#[derive(Debug, Clone)]
pub struct Scope {
    pub account_id: String,
    pub key_id: Option<String>,
    /// Any of these end users (empty: any).
    pub users: Vec<String>,
    /// One `key=value` tag.
    pub tag: Option<String>,
}

impl Scope {
    pub fn filter(&self) -> RollupFilter {
        let attribution = match (&self.tag, self.users.is_empty()) {
            (Some(t), _) => AttrFilter::Tag(t.clone()),
            (None, false) => AttrFilter::Users(self.users.clone()),
            (None, true) => AttrFilter::All,
        };
        RollupFilter {
            accounts: Some(vec![self.account_id.clone()]),
            key_ids: self.key_id.iter().cloned().collect(),
            attribution,
            ..RollupFilter::default()
        }
    }

    /// The scope's raw records created in `[start_ms, end_ms)`.
    pub fn records(&self, start_ms: i64, end_ms: i64) -> RecordFilter {
        RecordFilter {
            account_id: self.account_id.clone(),
            key_id: self.key_id.clone(),
            users: self.users.clone(),
            tag: self.tag.clone(),
            start_ms,
            end_ms,
            ..RecordFilter::default()
        }
    }

    /// Narrows the scope to end users and a tag (checked by the caller). A tag with users
    /// would need the records, not the rollups (see `AttrFilter`): refused, naming `tag`.
    pub fn attributed(
        mut self,
        users: Vec<String>,
        tag: Option<String>,
    ) -> Result<Self, DomainError> {
        if tag.is_some() && !users.is_empty() {
            return Err(DomainError::invalid(
                "tag",
                "filter by `user` or by `tag`, not both",
            ));
        }
        self.users = users;
        self.tag = tag;
        Ok(self)
    }
}

fn not_found(param: &str, what: &str, id: &str) -> DomainError {
    DomainError::new(Code::NotFound, format!("no {what} `{id}`")).with_param(param)
}

impl Engine {
    /// Resolves `account_id` / `key_id`: a user key may only name its own account and its keys
    /// (anything else is 404, as if it did not exist); an admin key may name any.
    pub async fn scope(
        &self,
        caller: &Caller,
        account_id: Option<&str>,
        key_id: Option<&str>,
    ) -> Result<Scope, DomainError> {
        let mut account = caller.account_id.clone();
        if let Some(id) = account_id {
            if caller.role != Role::Admin && id != caller.account_id {
                return Err(not_found("account_id", "account", id));
            }
            if self.store.get_account(id).await?.is_none() {
                return Err(not_found("account_id", "account", id));
            }
            account = id.to_string();
        }
        let mut key = None;
        if let Some(id) = key_id {
            let Some(found) = self.store.get_key(id).await? else {
                return Err(not_found("key_id", "API key", id));
            };
            if caller.role == Role::Admin && account_id.is_none() {
                account = found.account_id.clone();
            } else if found.account_id != account {
                return Err(not_found("key_id", "API key", id));
            }
            key = Some(found.id);
        }
        Ok(Scope {
            account_id: account,
            key_id: key,
            users: Vec::new(),
            tag: None,
        })
    }

    /// Sums per (bucket, group) for the buckets `bounds[i]..bounds[i+1]`. Bounds are floored to
    /// the minute, the rollups' finest grain. Always sums integers; callers convert once per
    /// displayed number.
    pub async fn bucketed(
        &self,
        filter: RollupFilter,
        dims: Dims,
        bounds: &[i64],
    ) -> Result<BTreeMap<(usize, GroupKey), Sums>, DomainError> {
        let floored: Vec<i64> = bounds
            .iter()
            .map(|&b| b.div_euclid(MINUTE_MS) * MINUTE_MS)
            .collect();
        let aligned = cover::align(&floored);
        let plan = cover::plan(&aligned);
        if plan.segments.is_empty() {
            return Ok(BTreeMap::new());
        }
        let folded = if dims.user && filter.attribution == AttrFilter::All {
            // Users from the attribution rollups; the rest (no end user) is the main rollups'
            // total minus theirs.
            let all = Dims {
                user: false,
                ..dims
            };
            let (users, all) = tokio::try_join!(
                self.store
                    .rollup_rows(filter.clone(), dims, plan.segments.clone()),
                self.store.rollup_rows(filter, all, plan.segments.clone()),
            )?;
            rollup::by_user(
                cover::fold(&plan, &aligned, all),
                cover::fold(&plan, &aligned, users),
            )
        } else {
            if dims.user && matches!(filter.attribution, AttrFilter::Tag(_)) {
                return Err(DomainError::invalid(
                    "tag",
                    "a `tag` filter cannot be grouped by user",
                ));
            }
            let rows = self
                .store
                .rollup_rows(filter, dims, plan.segments.clone())
                .await?;
            cover::fold(&plan, &aligned, rows)
        };
        // Buckets of the aligned bounds back to the caller's (a bucket shorter than a minute is
        // empty and was dropped by `align`).
        let index: Vec<usize> = aligned
            .iter()
            .map(|a| floored.partition_point(|f| f <= a).saturating_sub(1))
            .collect();
        Ok(folded
            .into_iter()
            .map(|((i, g), v)| ((index[i], g), v))
            .collect())
    }

    /// Sums per group over one range.
    pub async fn totals(
        &self,
        filter: RollupFilter,
        dims: Dims,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<BTreeMap<GroupKey, Sums>, DomainError> {
        if end_ms <= start_ms {
            return Ok(BTreeMap::new());
        }
        let rows = self.bucketed(filter, dims, &[start_ms, end_ms]).await?;
        Ok(rows.into_iter().map(|((_, g), v)| (g, v)).collect())
    }

    /// One newest-first page of raw records, and the cursor of the next page if there is one.
    pub async fn newest_page(
        &self,
        filter: RecordFilter,
        cursor: Option<RecordCursor>,
        limit: usize,
    ) -> Result<(Vec<UsageRecord>, Option<String>), DomainError> {
        let mut records = self
            .store
            .records_page(filter, cursor, true, limit + 1)
            .await?;
        let next = if records.len() > limit {
            records.truncate(limit);
            records.last().map(|r| {
                RecordCursor {
                    created_at_ms: r.created_at_ms,
                    request_id: r.request_id.clone(),
                }
                .encode()
            })
        } else {
            None
        };
        Ok((records, next))
    }

    /// The caller's own requests are visible once their responses completed: wait for the batch
    /// writer. False when the store is behind and the answer may miss recent requests.
    pub async fn read_your_writes(&self) -> bool {
        self.ledger.flush().await
    }

    /// What the account can still spend: balance minus what requests in flight hold, nano-USD.
    pub async fn spendable_nanos(&self, account_id: &str) -> Result<i64, DomainError> {
        let v = self.credits.view(account_id).await?;
        Ok(v.balance_nanos.saturating_sub(v.held_nanos))
    }
}

/// What the records created in `[start_ms, end_ms)` (of one account, or every account)
/// would have cost under `table`, beside what they cost and were charged (see
/// `pricing::reprice`). Walks the raw records in keyset pages; changes nothing. Records
/// dropped by retention are not there to re-price.
pub async fn reprice(
    store: &dyn Store,
    table: &PriceTable,
    account_id: Option<&str>,
    start_ms: i64,
    end_ms: i64,
) -> Result<Repriced, DomainError> {
    const PAGE: usize = 2000;
    let accounts = match account_id {
        Some(id) => {
            if store.get_account(id).await?.is_none() {
                return Err(not_found("account_id", "account", id));
            }
            vec![id.to_string()]
        }
        None => store
            .list_accounts()
            .await?
            .into_iter()
            .map(|a| a.id)
            .collect(),
    };
    let mut fold = Repricing::default();
    for account_id in accounts {
        let filter = RecordFilter {
            account_id,
            start_ms,
            end_ms,
            ..RecordFilter::default()
        };
        let mut after = None;
        loop {
            let page = store
                .records_page(filter.clone(), after, false, PAGE)
                .await?;
            page.iter().for_each(|r| fold.add(r, table));
            after = match page.last() {
                Some(r) if page.len() == PAGE => Some(RecordCursor {
                    created_at_ms: r.created_at_ms,
                    request_id: r.request_id.clone(),
                }),
                _ => break,
            };
        }
    }
    let from = (start_ms != MIN_MS).then_some(start_ms);
    let to = (end_ms != MAX_MS).then_some(end_ms);
    Ok(fold.finish(table, from, to))
}

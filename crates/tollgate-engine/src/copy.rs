//! `tollgate store copy`: everything one store holds, written into another (an embedded SQLite
//! install moving to PostgreSQL), then checked. Every step is idempotent, so a copy that stopped
//! half way, or one run twice, leaves each thing once: accounts and keys by id (their state
//! brought up to the source's), credit entries by id (`import_credit`), provider keys by
//! (account, provider), records by request id (`insert_usage`, which adds rollup deltas and
//! charges for new records only). Rollups are not copied: the target rebuilds them from the
//! records, and `verify` checks they came out the same.

use std::collections::BTreeMap;

use tollgate_core::calendar::MAX_MS;
use tollgate_core::credit::CreditTotals;
use tollgate_core::rollup::{Dims, Grain, GroupKey, RecordCursor, RecordFilter, RollupFilter};
use tollgate_core::rollup::{Segment, Sums};
use tollgate_core::store::Store;
use tollgate_core::StoreError;

/// Records read and written per batch.
pub const PAGE: usize = 1_000;

/// More credit entries than any account has: `list_credits` reads them all.
const ALL_ENTRIES: usize = 1 << 40;

/// What one copy run wrote: new rows, and rows brought up to the source's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    pub accounts: usize,
    pub accounts_updated: usize,
    pub keys: usize,
    pub keys_updated: usize,
    pub credits: usize,
    pub provider_keys: usize,
    /// Records read from the source, and how many of them the target did not have.
    pub records_read: u64,
    pub records: u64,
}

/// Copies `from` into `to`. `progress` is told how many records each batch read.
pub async fn copy(
    from: &dyn Store,
    to: &dyn Store,
    mut progress: impl FnMut(u64),
) -> Result<Copied, StoreError> {
    let mut n = Copied::default();
    let accounts = from.list_accounts().await?;
    for a in &accounts {
        match to.get_account(&a.id).await? {
            None => {
                to.create_account(a.clone()).await?;
                n.accounts += 1;
            }
            Some(t) if t.disabled != a.disabled => {
                to.set_account_disabled(&a.id, a.disabled).await?;
                n.accounts_updated += 1;
            }
            Some(_) => {}
        }
    }
    for k in from.list_keys(None).await? {
        match to.get_key(&k.id).await? {
            None => {
                to.create_key(k, Vec::new()).await?;
                n.keys += 1;
            }
            Some(t) => {
                let mut updated = false;
                if let (Some(at), None) = (k.revoked_at_ms, t.revoked_at_ms) {
                    to.revoke_key(&k.id, at, Vec::new()).await?;
                    updated = true;
                }
                if t.limits != k.limits {
                    to.update_key_limits(&k.id, k.limits).await?;
                    updated = true;
                }
                n.keys_updated += usize::from(updated);
            }
        }
    }
    // Credits before records: on a shared backend each record's charge is taken from the
    // account's pool, which must already hold the grants it was spent from.
    for a in &accounts {
        for e in from.list_credits(&a.id, ALL_ENTRIES).await? {
            n.credits += usize::from(to.import_credit(e).await?);
        }
        for k in from.list_provider_keys(&a.id).await? {
            to.put_provider_key(k).await?;
            n.provider_keys += 1;
        }
    }
    for a in &accounts {
        let filter = RecordFilter {
            account_id: a.id.clone(),
            start_ms: i64::MIN,
            end_ms: i64::MAX,
            ..RecordFilter::default()
        };
        let mut after: Option<RecordCursor> = None;
        loop {
            let page = from
                .records_page(filter.clone(), after.clone(), false, PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(RecordCursor {
                created_at_ms: last.created_at_ms,
                request_id: last.request_id.clone(),
            });
            let read = page.len() as u64;
            n.records_read += read;
            n.records += to.insert_usage(page).await? as u64;
            progress(read);
            if (read as usize) < PAGE {
                break;
            }
        }
    }
    Ok(n)
}

/// One account's numbers on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountCheck {
    pub account_id: String,
    pub name: String,
    pub from: CreditTotals,
    pub to: CreditTotals,
}

/// What `verify` compared; `mismatches` is empty when the copy is faithful.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    pub records_from: i64,
    pub records_to: i64,
    pub accounts: Vec<AccountCheck>,
    pub mismatches: Vec<String>,
}

/// All-time rollup sums of one account at one grain, by key, model, provider, source and
/// endpoint, and with `by_user` the attribution rollups' by end user too.
async fn rollup_sums(
    store: &dyn Store,
    account_id: &str,
    grain: Grain,
    by_user: bool,
) -> Result<BTreeMap<GroupKey, Sums>, StoreError> {
    let dims = Dims {
        account: false,
        key: true,
        model: true,
        provider: true,
        source: true,
        endpoint: true,
        user: by_user,
    };
    let rows = store
        .rollup_rows(
            RollupFilter {
                accounts: Some(vec![account_id.to_string()]),
                ..RollupFilter::default()
            },
            dims,
            vec![Segment {
                grain,
                start_ms: 0,
                end_ms: MAX_MS,
                split: false,
            }],
        )
        .await?;
    let mut out: BTreeMap<GroupKey, Sums> = BTreeMap::new();
    for r in rows {
        out.entry(r.group).or_default().add(&r.sums);
    }
    Ok(out)
}

/// Checks that `to` holds what `from` does: the record count, each account's credit audit
/// (grants, refunds, charges from the rollups and from the records) and all-time rollups at
/// every grain, and, on a shared backend, that the account's pool and leases add up to its
/// balance.
pub async fn verify(from: &dyn Store, to: &dyn Store) -> Result<Verification, StoreError> {
    let mut v = Verification {
        records_from: from.count_usage().await?,
        records_to: to.count_usage().await?,
        ..Verification::default()
    };
    if v.records_from != v.records_to {
        v.mismatches.push(format!(
            "records: {} in the source, {} in the target",
            v.records_from, v.records_to
        ));
    }
    for a in from.list_accounts().await? {
        let check = AccountCheck {
            from: from.credit_totals(&a.id, true).await?,
            to: to.credit_totals(&a.id, true).await?,
            account_id: a.id,
            name: a.name,
        };
        let id = &check.account_id;
        if check.from != check.to {
            v.mismatches.push(format!(
                "account {id}: credit audit differs: source {:?}, target {:?}",
                check.from, check.to
            ));
        }
        if check.from.charges_nanos_records != Some(check.from.charges_nanos) {
            v.mismatches.push(format!(
                "account {id}: the source's rollups charge {} nano-USD but its records {:?} \
                 (records dropped by retention cannot be copied)",
                check.from.charges_nanos, check.from.charges_nanos_records
            ));
        }
        for grain in [Grain::Minute, Grain::Hour, Grain::Day] {
            for by_user in [false, true] {
                let (a, b) = (
                    rollup_sums(from, id, grain, by_user).await?,
                    rollup_sums(to, id, grain, by_user).await?,
                );
                if a != b {
                    let what = if by_user { "per-user " } else { "" };
                    v.mismatches
                        .push(format!("account {id}: {grain:?} {what}rollups differ"));
                }
            }
        }
        if let Some(leases) = to.leases() {
            let l = leases.lease_totals(id).await?;
            let split = l.available_nanos.saturating_add(l.leased_nanos);
            if split != check.to.balance_nanos() {
                v.mismatches.push(format!(
                    "account {id}: target pool and leases hold {split} nano-USD, its balance is {}",
                    check.to.balance_nanos()
                ));
            }
        }
        v.accounts.push(check);
    }
    Ok(v)
}

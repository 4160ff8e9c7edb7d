//! Credits and budgets. A balance is an append-only ledger: grants and refunds
//! (`credit_entries`) and charges (each usage record's `charged_nanos`), so at every moment
//! balance = grants − charges + refunds, auditable from the records.
//!
//! The hot path never waits for the database: each account's balance lives in memory (read from
//! the store once per process), and a request holds its maximum cost there before it is
//! forwarded, settling to the real cost at the end. See ARCHITECTURE.md for how this extends to
//! several replicas sharing PostgreSQL (per-replica leases of balance).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use tollgate_core::config::CreditsConfig;
use tollgate_core::credit::{CreditEntry, CreditKind, CreditTotals};
use tollgate_core::id::new_id;
use tollgate_core::money::NANOS_PER_USD;
use tollgate_core::store::{AnomalyCount, Store};
use tollgate_core::{Code, DomainError, StoreError, StoreErrorKind};

/// An account's balance as the usage APIs show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreditView {
    /// Grants − charges + refunds, nano-USD.
    pub balance_nanos: i64,
    /// Held by requests in flight, nano-USD.
    pub held_nanos: i64,
}

#[derive(Debug)]
struct Book {
    balance: i64,
    held: i64,
    /// Grants + refunds this book knows of; a refresh adds those made elsewhere (the CLI,
    /// another replica).
    credited: i64,
    synced: std::time::Instant,
    refreshing: bool,
}

/// The most an account may ever be credited in total (grants + refunds), nano-USD: a quarter of
/// `i64::MAX`, so the store's sums stay integers with room to spare.
const LIFETIME_CREDIT_CEILING: i64 = i64::MAX / 4;

impl Book {
    /// Balance minus holds.
    fn available(&self) -> i64 {
        self.balance.saturating_sub(self.held)
    }
}

/// How often a book re-reads grants and refunds made outside this process.
const REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Credits {
    store: Arc<dyn Store>,
    cfg: CreditsConfig,
    books: RwLock<HashMap<String, Arc<Mutex<Book>>>>,
    /// Serializes loading books and applying grants, so a grant is never both read from the
    /// store by a load and added in memory.
    load_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Money held for one request in flight. Dropped without `settle` (the request failed before
/// metering, or its task died), it is released in full.
pub struct Hold {
    book: Arc<Mutex<Book>>,
    amount: i64,
    done: bool,
}

impl Hold {
    /// nano-USD held.
    pub fn amount(&self) -> i64 {
        self.amount
    }

    /// Releases the hold and debits `charge`. Returns what the account has available after.
    pub fn settle(mut self, charge: i64) -> i64 {
        self.done = true;
        let mut b = self.book.lock();
        b.held = b.held.saturating_sub(self.amount);
        b.balance = b.balance.saturating_sub(charge);
        b.available()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.done {
            let mut b = self.book.lock();
            b.held = b.held.saturating_sub(self.amount);
        }
    }
}

/// The audit of one account's credits.
#[derive(Debug, Serialize)]
pub struct Audit {
    pub account_id: String,
    pub currency: String,
    pub grants_nanos: i64,
    pub refunds_nanos: i64,
    /// From the rollups, which the balance uses.
    pub charges_nanos: i64,
    /// From the raw usage records.
    pub charges_nanos_records: i64,
    /// grants − charges + refunds, from the store.
    pub balance_nanos: i64,
    /// The balance this process holds in memory (includes charges still on their way to the store).
    pub live_balance_nanos: Option<i64>,
    pub held_nanos: i64,
    /// Records and rollups agree, and the stored balance is grants − charges + refunds.
    pub consistent: bool,
    /// Records whose upstream numbers deserve a second look (clamped, over-reported), per
    /// kind, with the request ids of the first `AUDIT_ANOMALY_IDS`.
    pub anomalies: Vec<AnomalyCount>,
    pub entries: Vec<CreditEntry>,
}

/// How many request ids the audit lists per anomaly kind.
pub const AUDIT_ANOMALY_IDS: usize = 100;

impl Credits {
    pub fn new(store: Arc<dyn Store>, cfg: CreditsConfig) -> Self {
        Self {
            store,
            cfg,
            books: RwLock::new(HashMap::new()),
            load_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn config(&self) -> &CreditsConfig {
        &self.cfg
    }

    /// nano-USD in credits (rounded down).
    pub fn nanos_to_credits(&self, nanos: i64) -> i64 {
        tollgate_core::money::nanos_to_credits(nanos, self.cfg.per_usd)
    }

    /// Credits in nano-USD (exact: `per_usd` divides 10^9).
    pub fn credits_to_nanos(&self, credits: i64) -> Option<i64> {
        credits.checked_mul(NANOS_PER_USD / self.cfg.per_usd)
    }

    async fn book(&self, account_id: &str) -> Result<Arc<Mutex<Book>>, StoreError> {
        let found = self.books.read().get(account_id).cloned();
        if let Some(b) = found {
            self.maybe_refresh(account_id, &b);
            return Ok(b);
        }
        let _guard = self.load_lock.lock().await;
        if let Some(b) = self.books.read().get(account_id) {
            return Ok(b.clone());
        }
        let totals = self.store.credit_totals(account_id, false).await?;
        let book = Arc::new(Mutex::new(Book {
            balance: totals.balance_nanos(),
            held: 0,
            credited: totals.grants_nanos.saturating_add(totals.refunds_nanos),
            synced: std::time::Instant::now(),
            refreshing: false,
        }));
        self.books
            .write()
            .insert(account_id.to_string(), book.clone());
        Ok(book)
    }

    /// Holds up to `bound` for a request. `refine` gives a tighter bound (local token count)
    /// and the least the request can be held at (with its output capped), computed only when
    /// the cheap bound does not fit. When credits are enforced and the tighter bound does not
    /// fit either, what is available is held if it is at least that least (the caller caps the
    /// request to it: `Hold::amount`); below that the request is refused. Returns the hold and
    /// what is available after it.
    pub async fn hold(
        &self,
        account_id: &str,
        bound: i64,
        refine: impl FnOnce() -> (i64, i64),
    ) -> Result<(Hold, i64), DomainError> {
        let book = self.book(account_id).await?;
        let fits = |b: &Book, amount: i64| !self.cfg.enforce || b.available() >= amount;
        let (mut amount, mut least) = (bound, bound);
        if !fits(&book.lock(), bound) {
            // Count tokens (microseconds to milliseconds) without holding the account's lock.
            let (refined, at_least) = refine();
            amount = refined.min(bound);
            least = at_least.min(amount);
        }
        let mut b = book.lock();
        if !fits(&b, amount) {
            let available = b.available().max(0);
            if available < least {
                return Err(DomainError::new(
                    Code::InsufficientBalance,
                    format!(
                        "insufficient balance: this request may cost up to {} credits ({} with its \
                         output capped to what the balance covers) and {} are available (a credit \
                         is 1/{} {}); shorten the input or add credits",
                        self.nanos_to_credits(amount),
                        self.nanos_to_credits(least),
                        self.nanos_to_credits(available),
                        self.cfg.per_usd,
                        self.cfg.currency,
                    ),
                ));
            }
            amount = available;
        }
        b.held = b.held.saturating_add(amount);
        let after = b.available();
        drop(b);
        Ok((
            Hold {
                book: book.clone(),
                amount,
                done: false,
            },
            after,
        ))
    }

    /// Appends a grant or refund; idempotent by `idempotency_key`. Returns the entry and whether
    /// it was new. The one place credits are added (admin API and CLI): an amount above
    /// `credits.max_grant_usd`, or one that would take the balance past
    /// `credits.max_balance_usd`, is refused (param `amount`) and nothing is written. A replay of
    /// an earlier grant (same idempotency key and amount) returns it whatever the balance is now.
    pub async fn add(
        &self,
        account_id: &str,
        kind: CreditKind,
        amount_nanos: i64,
        idempotency_key: Option<String>,
        note: Option<String>,
        now_ms: i64,
    ) -> Result<(CreditEntry, bool), DomainError> {
        if amount_nanos <= 0 {
            return Err(DomainError::invalid(
                "amount",
                "the amount must be positive",
            ));
        }
        let entry = CreditEntry {
            id: new_id("cred", 8),
            account_id: account_id.to_string(),
            kind,
            amount_nanos,
            idempotency_key,
            note,
            created_at_ms: now_ms,
        };
        let conflict = |e: StoreError| match e.kind {
            StoreErrorKind::Conflict => {
                DomainError::new(Code::InvalidRequest, e.message).with_param("idempotency_key")
            }
            _ => DomainError::from(e),
        };
        // Loaded before taking `load_lock` (loading takes it too).
        let book = self.book(account_id).await?;
        let _guard = self.load_lock.lock().await;
        if let Some(key) = &entry.idempotency_key {
            if let Some(existing) = self.store.find_credit(account_id, key).await? {
                if existing.kind != entry.kind || existing.amount_nanos != entry.amount_nanos {
                    return Err(conflict(StoreError::conflict(format!(
                        "idempotency key {key:?} was already used for a different {} of {} nano-USD",
                        existing.kind.as_str(),
                        existing.amount_nanos
                    ))));
                }
                return Ok((existing, false));
            }
        }
        let max_grant = self.cfg.max_grant_nanos();
        if amount_nanos > max_grant {
            return Err(DomainError::invalid(
                "amount",
                format!(
                    "one {} may add at most {} {} (credits.max_grant_usd)",
                    entry.kind.as_str(),
                    self.cfg.max_grant_usd,
                    self.cfg.currency
                ),
            ));
        }
        let (balance, credited) = {
            let b = book.lock();
            (b.balance, b.credited)
        };
        let max_balance = self.cfg.max_balance_nanos();
        // `credited` (every grant and refund ever) is what the store sums: keep it in range too.
        let fits = balance
            .checked_add(amount_nanos)
            .is_some_and(|after| after <= max_balance)
            && credited
                .checked_add(amount_nanos)
                .is_some_and(|after| after <= LIFETIME_CREDIT_CEILING);
        if !fits {
            return Err(DomainError::invalid(
                "amount",
                format!(
                    "this {} would take the balance past {} {} (credits.max_balance_usd); \
                     the balance is {} nano-USD",
                    entry.kind.as_str(),
                    self.cfg.max_balance_usd,
                    self.cfg.currency,
                    balance
                ),
            ));
        }
        let (entry, created) = self.store.add_credit(entry).await.map_err(conflict)?;
        if created {
            let mut b = book.lock();
            b.balance = b.balance.saturating_add(amount_nanos);
            b.credited = b.credited.saturating_add(amount_nanos);
        }
        Ok((entry, created))
    }

    /// In the background (never on the request's path), picks up grants and refunds written by
    /// another process since the book was last synced.
    fn maybe_refresh(&self, account_id: &str, book: &Arc<Mutex<Book>>) {
        {
            let mut b = book.lock();
            if b.refreshing || b.synced.elapsed() < REFRESH {
                return;
            }
            b.refreshing = true;
        }
        let (store, lock, book, account) = (
            self.store.clone(),
            self.load_lock.clone(),
            book.clone(),
            account_id.to_string(),
        );
        tokio::spawn(async move {
            let _guard = lock.lock().await;
            let totals = store.credit_totals(&account, false).await;
            let mut b = book.lock();
            b.refreshing = false;
            b.synced = std::time::Instant::now();
            if let Ok(t) = totals {
                let delta = t
                    .grants_nanos
                    .saturating_add(t.refunds_nanos)
                    .saturating_sub(b.credited);
                b.balance = b.balance.saturating_add(delta);
                b.credited = b.credited.saturating_add(delta);
            }
        });
    }

    pub async fn view(&self, account_id: &str) -> Result<CreditView, DomainError> {
        let book = self.book(account_id).await?;
        let b = book.lock();
        Ok(CreditView {
            balance_nanos: b.balance,
            held_nanos: b.held,
        })
    }

    /// Call after `Ledger::flush`, so every charge is in the store.
    pub async fn audit(&self, account_id: &str) -> Result<Audit, DomainError> {
        let totals: CreditTotals = self.store.credit_totals(account_id, true).await?;
        let live = self.books.read().get(account_id).map(|b| {
            let b = b.lock();
            (b.balance, b.held)
        });
        let records = totals.charges_nanos_records.unwrap_or(0);
        Ok(Audit {
            account_id: account_id.to_string(),
            currency: self.cfg.currency.clone(),
            grants_nanos: totals.grants_nanos,
            refunds_nanos: totals.refunds_nanos,
            charges_nanos: totals.charges_nanos,
            charges_nanos_records: records,
            balance_nanos: totals.balance_nanos(),
            live_balance_nanos: live.map(|l| l.0),
            held_nanos: live.map_or(0, |l| l.1),
            consistent: records == totals.charges_nanos
                && live.is_none_or(|l| l.0 == totals.balance_nanos()),
            anomalies: self.store.anomalies(account_id, AUDIT_ANOMALY_IDS).await?,
            entries: self.store.list_credits(account_id, 1000).await?,
        })
    }
}

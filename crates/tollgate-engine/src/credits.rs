//! Credits and budgets. A balance is an append-only ledger: grants and refunds
//! (`credit_entries`) and charges (each usage record's `charged_nanos`), so at every moment
//! balance = grants − charges + refunds, auditable from the records.
//!
//! The hot path never waits for the database: a request holds its maximum cost in memory before
//! it is forwarded, settling to the real cost at the end. What a process may spend depends on
//! the store:
//!
//! - **Whole** (SQLite, one process): the book holds the account's whole balance, read from the
//!   store once per process.
//! - **Leased** (PostgreSQL, several replicas): the book holds this replica's *lease* of the
//!   balance (`LeaseStore`). When a hold does not fit, the replica takes more with one
//!   conditional update (one database round trip per top-up, not per request); an idle lease
//!   goes back to the pool after `LEASE_IDLE`; leases are renewed every `lease_secs / 4` and
//!   not spent past `lease_secs * 3/4` without a renewal, so a replica cut off from the
//!   database stops spending before another replica can take its lease back.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tollgate_core::clock::SharedClock;
use tollgate_core::store::LeaseTotals;

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
    /// Requests in flight on this process (each holds credit from admission to settlement).
    pub in_flight: u64,
}

#[derive(Debug)]
struct Book {
    /// What this process may spend: the balance (whole), or what is left of its lease (leased).
    balance: i64,
    held: i64,
    /// Holds outstanding: the account's requests in flight here.
    holds: u64,
    lease: Option<LeaseState>,
    /// Grants + refunds this book knows of; a refresh adds those made elsewhere (the CLI,
    /// another replica).
    credited: i64,
    synced: std::time::Instant,
    refreshing: bool,
    /// The grant epoch (`credited`) a `credits.depleted` was sent for.
    depleted_for: Option<i64>,
    /// Charged by this process since the last grant or refund it saw.
    epoch_spent: i64,
    account_id: Arc<str>,
}

/// The most an account may ever be credited in total (grants + refunds), nano-USD: a quarter of
/// `i64::MAX`, so the store's sums stay integers with room to spare.
const LIFETIME_CREDIT_CEILING: i64 = i64::MAX / 4;

/// A replica's lease of one account's balance.
#[derive(Debug)]
struct LeaseState {
    /// The account's balance as last read from the store, less this process's charges since
    /// (what `view` and `x-credits-remaining` show; whole mode shows `balance`).
    shown: i64,
    /// Spend the lease only until then (the store lets it expire a quarter of the lease later).
    valid_until: Instant,
    /// A top-up that found nothing left: do not ask the store again before this.
    dry_until: Option<Instant>,
    last_hold: Instant,
    /// Held since `meter_since`, and the hold rate it gave over the last second or more
    /// (nano-USD per second): a top-up asks for `LEASE_COVER` of it.
    metered: i64,
    meter_since: Instant,
    rate_per_sec: i64,
}

impl LeaseState {
    fn meter(&mut self, amount: i64, now: Instant) {
        self.metered = self.metered.saturating_add(amount);
        let elapsed = now.duration_since(self.meter_since).as_millis() as i64;
        if elapsed >= 1000 {
            self.rate_per_sec = self.metered.saturating_mul(1000) / elapsed;
            self.metered = 0;
            self.meter_since = now;
        }
    }

    /// What a top-up asks for beyond what is missing, so that the lease lasts a while.
    fn cover(&self) -> i64 {
        self.rate_per_sec
            .saturating_mul(LEASE_COVER.as_secs() as i64)
    }
}

impl Book {
    /// The balance as shown, with the grant epoch, for balance-driven webhook events.
    fn position(&self) -> crate::webhooks::Position {
        crate::webhooks::Position {
            balance_nanos: self.lease.as_ref().map_or(self.balance, |l| l.shown),
            epoch_spent_nanos: self.epoch_spent,
            credited_nanos: self.credited,
        }
    }

    /// What may still be held: balance (or lease) minus holds. A lease past its validity holds
    /// nothing more until a renewal confirms it.
    fn available(&self) -> i64 {
        let balance = match &self.lease {
            Some(l) if Instant::now() >= l.valid_until => self.balance.min(0),
            _ => self.balance,
        };
        balance.saturating_sub(self.held)
    }

    /// What the account has available, as shown to its users.
    fn shown_available(&self) -> i64 {
        match self.lease {
            None => self.available(),
            Some(_) => self.shown_balance().saturating_sub(self.held),
        }
    }

    /// The account's balance as shown to its users.
    fn shown_balance(&self) -> i64 {
        self.lease.as_ref().map_or(self.balance, |l| l.shown)
    }

    fn lease_valid(&self, now: Instant) -> bool {
        self.lease.as_ref().is_some_and(|l| now < l.valid_until)
    }
}

/// A lease not used for this long goes back to the account's pool, for the other replicas.
const LEASE_IDLE: Duration = Duration::from_secs(2);
/// After a top-up found the pool empty, how long refusals are answered from memory (a grant
/// made on another replica is spendable here after at most this).
const DRY_RETRY: Duration = Duration::from_millis(200);
/// A top-up asks for this many times what the request needs, so a busy replica asks rarely.
const TOP_UP_FACTOR: i64 = 4;
/// A top-up asks for this long of the replica's recent spend on the account.
const LEASE_COVER: Duration = Duration::from_secs(10);
/// Top-ups one hold may ask for before it is refused.
const TOP_UP_ROUNDS: u32 = 4;

/// How often a book re-reads grants and refunds made outside this process (whole mode), or the
/// account's balance (leased mode, where other replicas charge it too).
const REFRESH: Duration = Duration::from_secs(5);
const REFRESH_LEASED: Duration = Duration::from_secs(1);

pub struct Credits {
    store: Arc<dyn Store>,
    cfg: CreditsConfig,
    clock: SharedClock,
    lease_secs: u64,
    books: Arc<RwLock<HashMap<String, Arc<Mutex<Book>>>>>,
    /// Leased mode: one top-up at a time per account.
    topups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serializes loading books and applying grants, so a grant is never both read from the
    /// store by a load and added in memory.
    load_lock: Arc<tokio::sync::Mutex<()>>,
    /// Where `credits.granted` / `credits.depleted` go, once the engine has set it.
    outbox: std::sync::OnceLock<Arc<crate::webhooks::Webhooks>>,
}

/// Money held for one request in flight. Dropped without `settle` (the request failed before
/// metering, or its task died), it is released in full.
pub struct Hold {
    book: Arc<Mutex<Book>>,
    amount: i64,
    done: bool,
    /// Where the charge's balance crossings go (`credits.low`, `usage.threshold`).
    watch: Option<(Arc<crate::webhooks::Webhooks>, Arc<str>)>,
}

impl Hold {
    /// nano-USD held.
    pub fn amount(&self) -> i64 {
        self.amount
    }

    /// Releases the hold and debits `charge`. Returns what the account has available after.
    pub fn settle(mut self, charge: i64) -> i64 {
        self.done = true;
        let (available, before, after) = {
            let mut b = self.book.lock();
            let before = b.position();
            b.held = b.held.saturating_sub(self.amount);
            b.holds = b.holds.saturating_sub(1);
            b.balance = b.balance.saturating_sub(charge);
            if let Some(l) = &mut b.lease {
                l.shown = l.shown.saturating_sub(charge);
            }
            b.epoch_spent = b.epoch_spent.saturating_add(charge);
            (b.shown_available(), before, b.position())
        };
        if let (Some((hooks, account)), true) = (&self.watch, charge > 0) {
            hooks.on_charge(account, before, after);
        }
        available
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.done {
            let mut b = self.book.lock();
            b.held = b.held.saturating_sub(self.amount);
            b.holds = b.holds.saturating_sub(1);
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
    /// Records and rollups agree, and the stored balance is grants − charges + refunds (and,
    /// on a shared store, the unleased balance plus every replica's lease).
    pub consistent: bool,
    /// On a shared store: how the balance is split between the pool and replicas' leases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leases: Option<LeaseTotals>,
    /// Records whose upstream numbers deserve a second look (clamped, over-reported), per
    /// kind, with the request ids of the first `AUDIT_ANOMALY_IDS`.
    pub anomalies: Vec<AnomalyCount>,
    pub entries: Vec<CreditEntry>,
}

/// How many request ids the audit lists per anomaly kind.
pub const AUDIT_ANOMALY_IDS: usize = 100;

impl Credits {
    /// `lease_secs`: how long a lease lasts without renewal (leased mode only).
    pub fn new(
        store: Arc<dyn Store>,
        cfg: CreditsConfig,
        clock: SharedClock,
        lease_secs: u64,
    ) -> Self {
        Self {
            outbox: std::sync::OnceLock::new(),
            store,
            cfg,
            clock,
            lease_secs,
            books: Arc::new(RwLock::new(HashMap::new())),
            topups: Mutex::new(HashMap::new()),
            load_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Leased mode: renews this replica's leases every `lease_secs / 4` and gives idle ones
    /// back, until the `Credits` is dropped. Call once, from inside the runtime.
    pub fn start_lease_keeper(&self) {
        if self.store.leases().is_none() {
            return;
        }
        let books = Arc::downgrade(&self.books);
        let (store, clock, lease_secs) = (self.store.clone(), self.clock.clone(), self.lease_secs);
        tokio::spawn(async move {
            let renew_every = Duration::from_millis(lease_secs * 250);
            let mut last_renew = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(books) = books.upgrade() else { return };
                let Some(leases) = store.leases() else { return };
                if last_renew.elapsed() >= renew_every
                    && renew(leases, &books, &clock, lease_secs).await.is_ok()
                {
                    last_renew = Instant::now();
                }
                give_back_idle(leases, &books).await;
            }
        });
    }

    /// Leased mode: makes the lease cover `amount` if the pool allows (asking for
    /// `TOP_UP_FACTOR` times what is missing). Refused requests do not reach the store more
    /// than once per `DRY_RETRY`.
    async fn top_up(
        &self,
        book: &Arc<Mutex<Book>>,
        account_id: &str,
        amount: i64,
    ) -> Result<(), DomainError> {
        let Some(leases) = self.store.leases() else {
            return Ok(());
        };
        let gate = self
            .topups
            .lock()
            .entry(account_id.to_string())
            .or_default()
            .clone();
        let _gate = gate.lock().await;
        let started = Instant::now();
        let stale = {
            let b = book.lock();
            !b.lease_valid(started) && b.balance > 0
        };
        if stale {
            // Unrenewed past its validity: learn whether the store still holds it first.
            renew(leases, &self.books, &self.clock, self.lease_secs).await?;
        }
        let (need, cover) = {
            let b = book.lock();
            let need = amount.saturating_sub(b.available());
            let dry = b
                .lease
                .as_ref()
                .and_then(|l| l.dry_until)
                .is_some_and(|t| started < t);
            if need <= 0 || dry {
                return Ok(());
            }
            let cover = b.lease.as_ref().map_or(0, LeaseState::cover);
            (need, cover)
        };
        let now_ms = self.clock.now_ms();
        let lease_ms = (self.lease_secs as i64).saturating_mul(1000);
        let granted = leases
            .take_lease(
                account_id,
                // Under steady load the lease grows to `LEASE_COVER` of the recent spend, so
                // top-ups stay rare and the lease outlasts a short database outage. Not with
                // what is in flight: in a burst the first replica would take the whole balance
                // and the others would refuse while it sat in that lease.
                need.saturating_mul(TOP_UP_FACTOR).max(cover),
                now_ms,
                now_ms.saturating_add(lease_ms),
            )
            .await?;
        let mut b = book.lock();
        b.balance = b.balance.saturating_add(granted);
        if let Some(l) = &mut b.lease {
            l.valid_until = started + Duration::from_millis(self.lease_secs * 750);
            l.dry_until = (granted < need).then(|| started + DRY_RETRY);
        }
        Ok(())
    }

    /// Sends credit events to webhooks from now on.
    pub fn set_outbox(&self, outbox: Arc<crate::webhooks::Webhooks>) {
        let _ = self.outbox.set(outbox);
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
        let leased = self.store.leases().is_some();
        // Leased: what this replica's lease still holds in the store (a restart under the same
        // replica id takes its lease back, confirmed by a renewal before it is spent), else
        // nothing until a lease is taken.
        let own = match self.store.leases() {
            Some(l) => l.lease_totals(account_id).await?.own_nanos.max(0),
            None => 0,
        };
        let book = Arc::new(Mutex::new(Book {
            balance: if leased { own } else { totals.balance_nanos() },
            held: 0,
            holds: 0,
            lease: leased.then(|| LeaseState {
                shown: totals.balance_nanos(),
                valid_until: Instant::now(),
                dry_until: None,
                last_hold: Instant::now(),
                metered: 0,
                meter_since: Instant::now(),
                rate_per_sec: 0,
            }),
            credited: totals.grants_nanos.saturating_add(totals.refunds_nanos),
            synced: std::time::Instant::now(),
            refreshing: false,
            depleted_for: None,
            epoch_spent: 0,
            account_id: Arc::from(account_id),
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
        // Requests waiting on one top-up may spend it before the one that asked for it gets
        // back: it asks again, a bounded number of times, unless the pool ran dry.
        let mut rounds = 0;
        let mut store_away = None;
        while self.store.leases().is_some() && !fits(&book.lock(), amount) && rounds < TOP_UP_ROUNDS
        {
            rounds += 1;
            if let Err(e) = self.top_up(&book, account_id, amount).await {
                // The database is away: a lease still valid serves what it covers (capped
                // below); one past its validity serves nothing (503 until the database is back).
                if !book.lock().lease_valid(Instant::now()) {
                    return Err(e);
                }
                tracing::warn!(error = %e.message, "could not top up a credit lease");
                store_away = Some(e);
                break;
            }
            let now = Instant::now();
            let dry = book
                .lock()
                .lease
                .as_ref()
                .and_then(|l| l.dry_until)
                .is_some_and(|t| now < t);
            if dry {
                break;
            }
        }
        let mut b = book.lock();
        let now = Instant::now();
        if let Some(l) = &mut b.lease {
            l.last_hold = now;
            l.meter(amount, now);
        }
        if !fits(&b, amount) {
            let available = b.available().max(0);
            if available < least {
                // The lease ran out while the database is away: that, not the balance, is why.
                if let Some(e) = store_away {
                    return Err(e);
                }
                if b.depleted_for != Some(b.credited) {
                    b.depleted_for = Some(b.credited);
                    if let Some(o) = self.outbox.get() {
                        o.emit_later(vec![crate::webhooks::events::credits_depleted(
                            account_id,
                            b.credited,
                            available,
                            least,
                            self.cfg.per_usd,
                            self.clock.now_ms(),
                        )]);
                    }
                }
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
        b.holds = b.holds.saturating_add(1);
        let after = b.shown_available();
        let account = b.account_id.clone();
        drop(b);
        Ok((
            Hold {
                book: book.clone(),
                amount,
                done: false,
                watch: self.outbox.get().map(|o| (o.clone(), account.clone())),
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
            (b.shown_balance(), b.credited)
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
        // `credits.granted` commits with the entry (written only if the entry is new).
        let outbox = match self.outbox.get() {
            Some(_) => {
                let after = book
                    .lock()
                    .position()
                    .balance_nanos
                    .saturating_add(amount_nanos);
                vec![crate::webhooks::events::credits_granted(
                    &entry,
                    self.cfg.per_usd,
                    Some(after),
                )]
            }
            None => Vec::new(),
        };
        let (entry, created) = self
            .store
            .add_credit(entry, outbox)
            .await
            .map_err(conflict)?;
        if created {
            // Leased: the grant went to the account's pool in the store, for any replica.
            {
                let mut b = book.lock();
                match &mut b.lease {
                    None => b.balance = b.balance.saturating_add(amount_nanos),
                    Some(l) => l.shown = l.shown.saturating_add(amount_nanos),
                }
                b.credited = b.credited.saturating_add(amount_nanos);
                b.epoch_spent = 0;
            }
            if let Some(o) = self.outbox.get() {
                o.wake();
            }
        }
        Ok((entry, created))
    }

    /// In the background (never on the request's path), picks up grants and refunds written by
    /// another process since the book was last synced.
    fn maybe_refresh(&self, account_id: &str, book: &Arc<Mutex<Book>>) {
        {
            let mut b = book.lock();
            let every = if b.lease.is_some() {
                REFRESH_LEASED
            } else {
                REFRESH
            };
            if b.refreshing || b.synced.elapsed() < every {
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
                match &mut b.lease {
                    None => b.balance = b.balance.saturating_add(delta),
                    // Every replica's charges, as far as they are stored.
                    Some(l) => l.shown = t.balance_nanos(),
                }
                b.credited = b.credited.saturating_add(delta);
                if delta != 0 {
                    b.epoch_spent = 0;
                }
            }
        });
    }

    pub async fn view(&self, account_id: &str) -> Result<CreditView, DomainError> {
        let book = self.book(account_id).await?;
        let b = book.lock();
        Ok(CreditView {
            balance_nanos: b.shown_balance(),
            held_nanos: b.held,
            in_flight: b.holds,
        })
    }

    /// Call after `Ledger::flush`, so every charge is in the store.
    pub async fn audit(&self, account_id: &str) -> Result<Audit, DomainError> {
        let totals: CreditTotals = self.store.credit_totals(account_id, true).await?;
        let leases = match self.store.leases() {
            Some(l) => Some(l.lease_totals(account_id).await?),
            None => None,
        };
        // Leased: this replica's book holds its lease, not the balance; the split is checked
        // instead (pool + leases = balance, exactly, whatever is still on its way).
        let live = match leases {
            Some(_) => None,
            None => self.books.read().get(account_id).map(|b| {
                let b = b.lock();
                (b.balance, b.held)
            }),
        };
        let held = self
            .books
            .read()
            .get(account_id)
            .map_or(0, |b| b.lock().held);
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
            held_nanos: held,
            consistent: records == totals.charges_nanos
                && live.is_none_or(|l| l.0 == totals.balance_nanos())
                && leases.is_none_or(|l| {
                    l.available_nanos.saturating_add(l.leased_nanos) == totals.balance_nanos()
                }),
            leases,
            anomalies: self.store.anomalies(account_id, AUDIT_ANOMALY_IDS).await?,
            entries: self.store.list_credits(account_id, 1000).await?,
        })
    }
}

/// Extends this replica's leases; a book whose lease the store no longer holds (it expired and
/// another replica returned it to the pool) stops spending it.
async fn renew(
    leases: &dyn tollgate_core::store::LeaseStore,
    books: &RwLock<HashMap<String, Arc<Mutex<Book>>>>,
    clock: &SharedClock,
    lease_secs: u64,
) -> Result<(), StoreError> {
    let started = Instant::now();
    let now_ms = clock.now_ms();
    let held = leases
        .renew_leases(now_ms.saturating_add((lease_secs as i64).saturating_mul(1000)))
        .await?;
    let held: std::collections::HashSet<String> = held.into_iter().collect();
    let valid_until = started + Duration::from_millis(lease_secs * 750);
    for (account, book) in books.read().iter() {
        let mut b = book.lock();
        let Some(l) = &mut b.lease else { continue };
        if held.contains(account) {
            l.valid_until = l.valid_until.max(valid_until);
        } else if l.valid_until <= started {
            // Gone from the store, and not re-taken since this renewal began.
            b.balance = b.balance.min(0);
        }
    }
    Ok(())
}

/// Gives back the unspent lease of every account with nothing held and no hold for
/// `LEASE_IDLE`, so the other replicas can spend it.
async fn give_back_idle(
    leases: &dyn tollgate_core::store::LeaseStore,
    books: &RwLock<HashMap<String, Arc<Mutex<Book>>>>,
) {
    let idle: Vec<(String, Arc<Mutex<Book>>, i64)> = books
        .read()
        .iter()
        .filter_map(|(account, book)| {
            let mut b = book.lock();
            let quiet = b
                .lease
                .as_ref()
                .is_some_and(|l| l.last_hold.elapsed() >= LEASE_IDLE);
            if !quiet || b.held != 0 || b.balance <= 0 {
                return None;
            }
            // Taken out of the book first, so nothing spends what is being returned.
            let amount = b.balance;
            b.balance = 0;
            Some((account.clone(), book.clone(), amount))
        })
        .collect();
    for (account, book, amount) in idle {
        if let Err(e) = leases.return_lease(&account, amount).await {
            tracing::warn!(account = %account, error = %e, "could not return an idle lease; kept");
            let mut b = book.lock();
            b.balance = b.balance.saturating_add(amount);
        }
    }
}

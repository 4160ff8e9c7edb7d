//! The batch writer: one task that moves journaled records into the store, many per
//! transaction, so the hot path never waits for a database commit. If the store is down it
//! retries with backoff; records wait in memory and, durably, in the journal.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

use super::journal::{self, Journal};
use super::{Store, UsageRecord};

// Records are nearly every message; boxing them would add an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum WriterMsg {
    Record(u64, UsageRecord),
    /// Answered once every record sent before it is committed.
    Flush(oneshot::Sender<()>),
}

/// The write side of the ledger: the journal and the batch writer behind it.
#[derive(Clone)]
pub struct Ledger {
    journal: Arc<Journal>,
    tx: UnboundedSender<WriterMsg>,
    pub store: Arc<dyn Store>,
}

impl Ledger {
    /// Replays what a previous process left in the journal, then starts the writer.
    pub async fn start(
        store: Arc<dyn Store>,
        dir: &Path,
        segment_bytes: u64,
        batch_max: usize,
        fsync_interval: Duration,
    ) -> anyhow::Result<Self> {
        let leftover = journal::segments(dir)?;
        let mut next_no = 1;
        for (no, path) in &leftover {
            let records = journal::read_segment(path)?;
            let count = records.len();
            let mut inserted = 0;
            for chunk in records.chunks(batch_max.max(1)) {
                inserted += store.insert_usage(chunk.to_vec()).await?;
            }
            tracing::info!(
                segment = no,
                records = count,
                new = inserted,
                "replayed journal segment"
            );
            std::fs::remove_file(path)?;
            next_no = no + 1;
        }
        let (tx, rx) = unbounded_channel();
        let journal = Arc::new(Journal::create(dir, next_no, segment_bytes, tx.clone())?);
        tokio::spawn(run(rx, store.clone(), journal.clone(), batch_max));
        if !fsync_interval.is_zero() {
            let j = journal.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(fsync_interval);
                loop {
                    tick.tick().await;
                    let j = j.clone();
                    let _ = tokio::task::spawn_blocking(move || j.sync()).await;
                }
            });
        }
        Ok(Self { journal, tx, store })
    }

    /// The hot-path call: durable (against a process kill) when it returns.
    pub fn record(&self, record: UsageRecord) {
        if let Err(e) = self.journal.append(record) {
            tracing::error!(error = %e, "journal write failed; the record is only in memory");
        }
    }

    /// At shutdown: commit everything, then leave no journal to replay.
    pub async fn close(&self) {
        self.flush().await;
        if let Err(e) = self.journal.truncate_if_committed() {
            tracing::warn!(error = %e, "could not empty the journal at shutdown");
        }
    }

    /// Waits until everything recorded so far is in the store (read-your-writes for usage
    /// queries and tests).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Flush(tx)).is_ok() {
            // Bounded: with the store down, a reader gets what is committed rather than hanging
            // (the records are safe in the journal and the writer keeps retrying).
            if tokio::time::timeout(FLUSH_WAIT, rx).await.is_err() {
                tracing::warn!(
                    "flush timed out: the store is behind; answering from what is committed"
                );
            }
        }
    }
}

/// Longest a reader waits for the writer to catch up.
const FLUSH_WAIT: Duration = Duration::from_secs(3);

/// Longest a record waits for company before its batch is written.
const LINGER: Duration = Duration::from_millis(5);

async fn run(
    mut rx: UnboundedReceiver<WriterMsg>,
    store: Arc<dyn Store>,
    journal: Arc<Journal>,
    batch_max: usize,
) {
    let mut batch: Vec<UsageRecord> = Vec::with_capacity(batch_max);
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut last_seq = 0;
    while let Some(first) = rx.recv().await {
        // Gather for at most LINGER after the first record, so that light traffic makes one
        // transaction per few milliseconds rather than one per request. A flush (a usage query
        // wanting read-your-writes) or a full batch cuts the wait short.
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut msg = Some(first);
        loop {
            match msg.take() {
                Some(WriterMsg::Record(seq, r)) => {
                    last_seq = seq;
                    batch.push(r);
                }
                Some(WriterMsg::Flush(w)) => waiters.push(w),
                None => {}
            }
            if batch.len() >= batch_max {
                break;
            }
            if let Ok(m) = rx.try_recv() {
                msg = Some(m);
                continue;
            }
            if !waiters.is_empty() {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => msg = Some(m),
                Ok(None) | Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let mut backoff = Duration::from_millis(50);
            loop {
                match store.insert_usage(batch.clone()).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::error!(error = %e, records = batch.len(), "store write failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            batch.clear();
            journal.committed(last_seq);
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

//! The batch writer: one task that moves journaled records into the store. A transient store
//! failure (busy, down) is retried with backoff while records wait in memory and, durably, in
//! the journal. A record the store refuses for good is split off, kept in the dead-letter file
//! with its full content, counted and logged, and recording goes on for everyone else.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tollgate_core::record::UsageRecord;
use tollgate_core::store::Store;
use tollgate_core::StoreError;

use super::journal::Journal;
use super::{LedgerStats, RecordSink};

// Records are nearly every message; boxing them would add an allocation per request.
#[allow(clippy::large_enum_variant)]
pub(super) enum WriterMsg {
    Record(u64, UsageRecord),
    /// Answered once every record sent before it is committed.
    Flush(oneshot::Sender<()>),
}

pub(super) struct Writer {
    store: Arc<dyn Store>,
    dead_letter: PathBuf,
    sinks: Vec<Arc<dyn RecordSink>>,
    stats: Arc<LedgerStats>,
}

/// Longest a record waits for company before its batch is written.
const LINGER: Duration = Duration::from_millis(5);

impl Writer {
    pub(super) fn new(
        store: Arc<dyn Store>,
        dead_letter: PathBuf,
        sinks: Vec<Arc<dyn RecordSink>>,
        stats: Arc<LedgerStats>,
    ) -> Self {
        Self {
            store,
            dead_letter,
            sinks,
            stats,
        }
    }

    /// Writes one batch: retries while the store is unavailable; a batch the store refuses is
    /// halved until the refused records are alone, and those go to the dead-letter file.
    /// Returns how many records were new. Fails only if a dead letter cannot be written (then
    /// the journal still holds the record).
    /// The batch is shared with the store rather than copied for it (a deep copy of every
    /// record's strings, on the one thread that bounds recording throughput).
    pub(super) async fn write(&mut self, batch: Arc<[UsageRecord]>) -> std::io::Result<usize> {
        let mut pending: Vec<Arc<[UsageRecord]>> = vec![batch];
        let mut inserted = 0;
        while let Some(part) = pending.pop() {
            let started = std::time::Instant::now();
            match self.insert_retrying(&part).await {
                Ok(n) => {
                    self.stats
                        .commits
                        .seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.stats.commits.batch_records.observe(part.len() as f64);
                    inserted += n;
                    self.stats
                        .committed
                        .fetch_add(part.len() as u64, Ordering::Relaxed);
                    for s in &self.sinks {
                        s.committed(&part);
                    }
                }
                Err(e) if part.len() == 1 => self.dead_letter(&part[0], &e)?,
                Err(_) => {
                    let (left, right) = part.split_at(part.len() / 2);
                    pending.push(right.into());
                    pending.push(left.into());
                }
            }
        }
        Ok(inserted)
    }

    async fn insert_retrying(&self, batch: &Arc<[UsageRecord]>) -> Result<usize, StoreError> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.store.insert_usage_shared(batch.clone()).await {
                Ok(n) => return Ok(n),
                Err(e) if e.is_transient() => {
                    tracing::error!(error = %e, records = batch.len(), "store write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn dead_letter(&self, record: &UsageRecord, e: &StoreError) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = crate::fs::open_private_append(&self.dead_letter)?;
        f.write_all(&line)?;
        f.sync_data()?;
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            request_id = %record.request_id,
            error = %e,
            file = %self.dead_letter.display(),
            "the store refused a record for good; kept in the dead-letter file"
        );
        Ok(())
    }

    pub(super) async fn run(
        mut self,
        mut rx: UnboundedReceiver<WriterMsg>,
        journal: Arc<Journal>,
        batch_max: usize,
    ) {
        let mut batch: Vec<UsageRecord> = Vec::with_capacity(batch_max);
        let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
        let mut last_seq = 0;
        while let Some(first) = rx.recv().await {
            // Gather for at most LINGER after the first record, so that light traffic makes one
            // transaction per few milliseconds rather than one per request. A flush (a usage
            // query wanting read-your-writes) or a full batch cuts the wait short.
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
                // Moved into an exact-size shared slice; the gathering buffer keeps its
                // capacity (a fresh `batch_max` buffer per batch was page faults each time).
                let records: Arc<[UsageRecord]> = batch.drain(..).collect();
                let n = records.len() as i64;
                let written = self.write(records).await;
                self.stats.queued.fetch_sub(n, Ordering::Relaxed);
                match written {
                    Ok(_) => journal.committed(last_seq),
                    // The journal keeps these records; the next start replays them.
                    Err(e) => tracing::error!(error = %e, "could not write the dead-letter file"),
                }
            }
            for w in waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }
}

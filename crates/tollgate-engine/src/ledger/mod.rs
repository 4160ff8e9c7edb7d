//! The ledger's write side: every usage record goes to the journal (durable against a killed
//! process before the client sees the end of its response), then the batch writer moves it into
//! the store, many per transaction, so the hot path never waits for a database commit.
//!
//! ```text
//! settle ──record()──▶ journal (append, fsync every fsync_interval)
//!                         │ queue, in sequence order
//!                         ▼
//!                     writer ──insert_usage(batch)──▶ Store (records + rollup deltas)
//!                         │ committed(seq) → journal drops covered segments
//!                         └─▶ RecordSink(s): what else wants each committed record
//! ```

mod journal;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::oneshot;
use tollgate_core::record::UsageRecord;
use tollgate_core::store::Store;

use self::journal::Journal;
use self::writer::{Writer, WriterMsg};

/// Something that wants every record once it is committed to the store (metrics, the webhook
/// outbox). Called from the writer task: keep it cheap and non-blocking.
pub trait RecordSink: Send + Sync + 'static {
    fn committed(&self, records: &[UsageRecord]);
}

/// Where and how the ledger keeps its journal.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    pub journal_dir: PathBuf,
    pub segment_bytes: u64,
    pub batch_max: usize,
    pub fsync_interval: Duration,
    /// Records the store refuses for good are kept here, one JSON line each.
    pub dead_letter_path: PathBuf,
}

/// The write side of the ledger: the journal and the batch writer behind it.
#[derive(Clone)]
pub struct Ledger {
    journal: Arc<Journal>,
    tx: UnboundedSender<WriterMsg>,
    stats: Arc<LedgerStats>,
}

/// Counters a health or metrics endpoint can read.
#[derive(Debug, Default)]
pub struct LedgerStats {
    /// Records the store refused permanently (kept in the dead-letter file).
    pub dead_lettered: AtomicU64,
    /// Records committed to the store by this process.
    pub committed: AtomicU64,
}

impl Ledger {
    /// Replays what a previous process left in the journal, then starts the writer.
    pub async fn start(
        store: Arc<dyn Store>,
        opts: LedgerOptions,
        sinks: Vec<Arc<dyn RecordSink>>,
    ) -> anyhow::Result<Self> {
        let stats = Arc::new(LedgerStats::default());
        let mut writer = Writer::new(store, opts.dead_letter_path.clone(), sinks, stats.clone());
        let leftover = journal::segments(&opts.journal_dir)?;
        let mut next_no = 1;
        for (no, path) in &leftover {
            let records = journal::read_segment(path)?;
            let count = records.len();
            let mut inserted = 0;
            for chunk in records.chunks(opts.batch_max.max(1)) {
                inserted += writer.write(chunk.to_vec()).await?;
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
        let journal = Arc::new(Journal::create(
            &opts.journal_dir,
            next_no,
            opts.segment_bytes,
        )?);
        tokio::spawn(writer.run(rx, journal.clone(), opts.batch_max));
        if !opts.fsync_interval.is_zero() {
            let j = journal.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(opts.fsync_interval);
                loop {
                    tick.tick().await;
                    let j = j.clone();
                    let _ = tokio::task::spawn_blocking(move || j.sync()).await;
                }
            });
        }
        Ok(Self { journal, tx, stats })
    }

    /// The hot-path call: durable (against a process kill) when it returns.
    pub fn record(&self, record: UsageRecord) {
        let tx = &self.tx;
        let appended = self.journal.append(record, |seq, r| {
            // The writer outlives every request; if it is gone the process is shutting down and
            // the journal replay on the next start covers the record.
            let _ = tx.send(WriterMsg::Record(seq, r));
        });
        if let Err(e) = appended {
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
    /// queries and tests). Returns false if the store is behind and the wait timed out: the
    /// caller then answers from what is committed and should say so.
    pub async fn flush(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Flush(tx)).is_err() {
            return false;
        }
        // Bounded: with the store down, a reader gets what is committed rather than hanging
        // (the records are safe in the journal and the writer keeps retrying).
        match tokio::time::timeout(FLUSH_WAIT, rx).await {
            Ok(Ok(())) => true,
            _ => {
                tracing::warn!(
                    "flush timed out: the store is behind; answering from what is committed"
                );
                false
            }
        }
    }

    pub fn stats(&self) -> &LedgerStats {
        &self.stats
    }

    pub fn dead_lettered(&self) -> u64 {
        self.stats.dead_lettered.load(Ordering::Relaxed)
    }
}

/// Longest a reader waits for the writer to catch up.
const FLUSH_WAIT: Duration = Duration::from_secs(3);

/// Journal segments left in `dir` (for tools that replay a dead replica's journal).
pub fn journal_segments(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(journal::segments(dir)?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

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
//!
//! A forwarded request also journals its start (`begin`) once it has gone upstream; a start
//! with no record after it when the process died becomes an `interrupted` record at the next
//! start (see `start.rs`).

mod journal;
mod line;
mod start;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::oneshot;
use tollgate_core::record::UsageRecord;
use tollgate_core::store::Store;

use self::journal::{Entry, Journal};
use self::writer::{Writer, WriterMsg};

pub use self::journal::StartPin;
pub use self::start::RequestStart;

/// Builds the record of a request whose start was journaled but whose record never was (the
/// process died first), given the last moment the journal shows the process alive.
pub type InterruptedRecord = fn(&RequestStart, i64) -> UsageRecord;

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

impl LedgerOptions {
    /// The configured options for the journal in `journal_dir` (a replica's own, or one being
    /// replayed), with records the store refuses for good kept at `dead_letter_path`.
    pub fn from_config(
        config: &tollgate_core::config::Config,
        journal_dir: PathBuf,
        dead_letter_path: PathBuf,
    ) -> Self {
        Self {
            journal_dir,
            segment_bytes: config.journal.segment_bytes,
            batch_max: config.store.batch_max,
            fsync_interval: Duration::from_millis(config.journal.fsync_interval_ms),
            dead_letter_path,
        }
    }
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
    /// Records journaled by `record` and not yet written by the writer.
    pub(crate) queued: std::sync::atomic::AtomicI64,
    pub commits: CommitStats,
}

/// Counters the batch writer updates as it commits.
#[derive(Debug)]
pub struct CommitStats {
    pub seconds: Histogram,
    pub batch_records: Histogram,
}

impl Default for CommitStats {
    fn default() -> Self {
        Self {
            seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
        }
    }
}

impl LedgerStats {
    /// Records journaled and not yet committed to the store.
    pub fn backlog(&self) -> i64 {
        self.queued.load(Ordering::Relaxed).max(0)
    }
}

impl Ledger {
    /// Replays what a previous process left in the journal, then starts the writer. Starts with
    /// no record after them become records (`interrupted`), written after every journaled
    /// record, so that a request's real record, in the journal or already in the store, wins
    /// (records are insert-once by request id).
    pub async fn start(
        store: Arc<dyn Store>,
        opts: LedgerOptions,
        sinks: Vec<Arc<dyn RecordSink>>,
        interrupted: InterruptedRecord,
    ) -> anyhow::Result<Self> {
        let stats = Arc::new(LedgerStats::default());
        let mut writer = Writer::new(store, opts.dead_letter_path.clone(), sinks, stats.clone());
        let batch_max = opts.batch_max.max(1);
        let leftover = journal::segments(&opts.journal_dir)?;
        let mut next_no = 1;
        // Starts not (yet) followed by their record; a start is always journaled before it.
        let mut open: HashMap<String, RequestStart> = HashMap::new();
        let mut last_alive_ms = i64::MIN;
        for (no, path) in &leftover {
            let mut records = Vec::new();
            for entry in journal::read_segment(path)? {
                match entry {
                    Entry::Record(r) => {
                        open.remove(&r.request_id);
                        last_alive_ms = last_alive_ms.max(r.finished_at_ms);
                        records.push(r);
                    }
                    Entry::Start(s) => {
                        last_alive_ms = last_alive_ms.max(s.sent_at_ms);
                        open.insert(s.request_id.clone(), s);
                    }
                }
            }
            let count = records.len();
            let mut inserted = 0;
            for chunk in records.chunks(batch_max) {
                inserted += writer.write(Arc::from(chunk)).await?;
            }
            tracing::info!(
                segment = no,
                records = count,
                new = inserted,
                "replayed journal segment"
            );
            next_no = no + 1;
        }
        if !open.is_empty() {
            let mut starts: Vec<RequestStart> = open.into_values().collect();
            starts.sort_by(|a, b| {
                (a.created_at_ms, &a.request_id).cmp(&(b.created_at_ms, &b.request_id))
            });
            let records: Vec<UsageRecord> = starts
                .iter()
                .map(|s| interrupted(s, last_alive_ms.max(s.sent_at_ms)))
                .collect();
            let mut inserted = 0;
            for chunk in records.chunks(batch_max) {
                inserted += writer.write(Arc::from(chunk)).await?;
            }
            tracing::warn!(
                requests = records.len(),
                new = inserted,
                "recorded requests the previous process died serving as interrupted"
            );
        }
        // Only now: a crash during the replay replays it again, harmlessly.
        for (_, path) in &leftover {
            std::fs::remove_file(path)?;
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

    pub fn stats_handle(&self) -> Arc<LedgerStats> {
        self.stats.clone()
    }

    /// The hot-path call: durable (against a process kill) when it returns.
    pub fn record(&self, record: UsageRecord) {
        let (tx, stats) = (&self.tx, &self.stats);
        let appended = self.journal.append(record, |seq, r| {
            stats.queued.fetch_add(1, Ordering::Relaxed);
            // The writer outlives every request; if it is gone the process is shutting down and
            // the journal replay on the next start covers the record.
            let _ = tx.send(WriterMsg::Record(seq, r));
        });
        if let Err(e) = appended {
            tracing::error!(error = %e, "journal write failed; the record is only in memory");
        }
    }

    /// Journals the start of a request that has gone to its upstream. The returned
    /// pin keeps the start's segment until dropped: drop it once the request's record has been
    /// journaled. `None` if the journal could not be written (logged).
    pub fn begin(&self, start: &RequestStart) -> Option<StartPin> {
        match self.journal.append_start(start) {
            Ok(segment) => Some(StartPin {
                journal: self.journal.clone(),
                segment,
            }),
            Err(e) => {
                tracing::error!(request_id = %start.request_id, error = %e, "journal write failed; the request's start is not journaled");
                None
            }
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

#[cfg(test)]
mod tests {
    use tollgate_core::record::{Provenance, Status};
    use tollgate_core::store::RecordStore;
    use tollgate_store::SqliteStore;

    use super::journal::tests::{record, start};
    use super::*;

    #[tokio::test]
    async fn replay_records_unfinished_starts_as_interrupted_and_real_records_win() {
        let dir = tempfile::tempdir().unwrap();
        let journal_dir = dir.path().join("journal");
        let store = Arc::new(SqliteStore::open(&dir.path().join("db.sqlite")).unwrap());
        // Finished, committed, and its record's segment gone: only its start is left.
        store
            .insert_usage(vec![record("req_stored")])
            .await
            .unwrap();
        {
            let j = Journal::create(&journal_dir, 1, 1 << 20).unwrap();
            j.append_start(&start("req_cut")).unwrap();
            j.append_start(&start("req_done")).unwrap();
            j.append_start(&start("req_stored")).unwrap();
            j.append(record("req_done"), |_, _| {}).unwrap();
            // The process dies here.
        }
        let opts = LedgerOptions {
            journal_dir: journal_dir.clone(),
            segment_bytes: 1 << 20,
            batch_max: 100,
            fsync_interval: Duration::ZERO,
            dead_letter_path: dir.path().join("dead.ndjson"),
        };
        let ledger = Ledger::start(
            store.clone(),
            opts.clone(),
            Vec::new(),
            crate::settle::interrupted_record,
        )
        .await
        .unwrap();
        assert_eq!(store.count_usage().await.unwrap(), 3);
        for id in ["req_done", "req_stored"] {
            let r = store.get_usage(id).await.unwrap().unwrap();
            assert_eq!(r, record(id), "the finished record wins");
        }
        let cut = store.get_usage("req_cut").await.unwrap().unwrap();
        assert_eq!(cut.status, Status::Interrupted);
        assert_eq!(cut.provenance, Provenance::Estimated);
        assert_eq!((cut.input_tokens, cut.output_tokens), (7, 0));
        // 7 input tokens at $2.50 per million.
        assert_eq!((cut.cost_nanos, cut.charged_nanos), (17_500, 17_500));
        // Alive at least until its last journaled line (the record finished at 1,500 ms).
        assert_eq!((cut.finished_at_ms, cut.latency_ms), (1_500, 500));
        ledger.close().await;
        drop(ledger);

        // Replayed once: a second start finds nothing to add.
        let _again = Ledger::start(store.clone(), opts, Vec::new(), |_, _| {
            panic!("nothing is left to interrupt")
        })
        .await
        .unwrap();
        assert_eq!(store.count_usage().await.unwrap(), 3);
    }
}

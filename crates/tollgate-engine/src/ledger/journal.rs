//! The append-only journal. A usage record is written here (one JSON line, with a `write(2)`
//! into the OS page cache) before the client receives the end of its response, so a killed
//! process loses nothing it answered; the batch writer moves records into the store and the
//! journal drops segments once everything in them is committed. On start, whatever segments
//! remain are replayed into the store, whose unique request ids make a replay harmless.
//!
//! Besides records, a segment holds the starts of forwarded requests (`{"start": {...}}`
//! lines, see `start.rs`). A segment with a start whose request has no record yet is kept even
//! when all its records are committed.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tollgate_core::record::UsageRecord;

use super::start::RequestStart;

pub struct Journal {
    dir: PathBuf,
    segment_bytes: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The current segment, opened `O_APPEND`: shared, so writes and fsync run without the
    /// lock.
    file: Arc<File>,
    segment_no: u64,
    bytes: u64,
    seq: u64,
    /// Finished segments and the last sequence number in each.
    sealed: VecDeque<(u64, u64)>,
    /// Highest sequence number known to be in the store.
    committed: u64,
    /// Segments holding starts of requests still in flight, and how many each holds.
    open_starts: HashMap<u64, u32>,
}

/// One journal line.
#[derive(Debug)]
pub enum Entry {
    Record(UsageRecord),
    Start(RequestStart),
}

/// How a start is written: a one-key object, so it cannot be taken for a record.
#[derive(Serialize)]
struct StartLine<'a> {
    start: &'a RequestStart,
}

#[derive(Deserialize)]
struct ReadStartLine {
    start: RequestStart,
}

const START_PREFIX: &[u8] = b"{\"start\":";

fn segment_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:012}.log"))
}

/// Segments left in `dir`, oldest first.
pub fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let no = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(no) = no {
            out.push((no, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every entry in a segment. A torn last line (the process died inside `write`) is
/// skipped: its response had not been sent (or, for a start, its body had not).
pub fn read_segment(path: &Path) -> std::io::Result<Vec<Entry>> {
    let reader = BufReader::new(File::open(path)?);
    let mut out = Vec::new();
    for line in reader.split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let entry = if line.starts_with(START_PREFIX) {
            serde_json::from_slice::<ReadStartLine>(&line).map(|l| Entry::Start(l.start))
        } else {
            serde_json::from_slice::<UsageRecord>(&line).map(Entry::Record)
        };
        match entry {
            Ok(e) => out.push(e),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping torn journal line")
            }
        }
    }
    Ok(out)
}

impl Journal {
    /// Opens a fresh segment numbered after `first_segment_no`'s predecessors.
    pub fn create(dir: &Path, first_segment_no: u64, segment_bytes: u64) -> std::io::Result<Self> {
        crate::fs::create_private_dir(dir)?;
        let file = Arc::new(open_segment(dir, first_segment_no)?);
        Ok(Self {
            dir: dir.to_path_buf(),
            segment_bytes,
            inner: Mutex::new(Inner {
                file,
                segment_no: first_segment_no,
                bytes: 0,
                seq: 0,
                sealed: VecDeque::new(),
                committed: 0,
                open_starts: HashMap::new(),
            }),
        })
    }

    /// Makes `record` durable against a process kill, then hands it with its sequence number to
    /// `then` (the batch writer's queue). `then` runs under the lock that numbers the record,
    /// so the writer sees records in sequence order and "committed up to N" is meaningful.
    ///
    /// The `write(2)` itself runs outside the lock, into the segment the record was counted in:
    /// `O_APPEND` makes each line's write land whole at the end, so concurrent appends do not
    /// interleave, and the lock is held for a few counters instead of a syscall (held across
    /// the write, the other worker spun and yielded on it). The record may reach the writer
    /// before its line is written: harmless, the store is durable too, and the client is
    /// answered only after this returns.
    pub fn append(
        &self,
        record: UsageRecord,
        then: impl FnOnce(u64, UsageRecord),
    ) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(1024);
        super::line::record_line(&record, &mut line)?;
        line.push(b'\n');
        let file = {
            let mut inner = self.inner.lock();
            inner.bytes += line.len() as u64;
            inner.seq += 1;
            let seq = inner.seq;
            then(seq, record);
            let file = inner.file.clone();
            self.rotate_if_full(&mut inner);
            file
        };
        append_line(&file, &line)
    }

    fn rotate_if_full(&self, inner: &mut Inner) {
        if inner.bytes >= self.segment_bytes {
            if let Err(e) = self.rotate(inner) {
                tracing::error!(error = %e, "journal rotation failed; continuing in the old segment");
            }
        }
    }

    fn rotate(&self, inner: &mut Inner) -> std::io::Result<()> {
        let next = inner.segment_no + 1;
        inner.file = Arc::new(open_segment(&self.dir, next)?);
        let sealed = (inner.segment_no, inner.seq);
        inner.sealed.push_back(sealed);
        inner.segment_no = next;
        inner.bytes = 0;
        Ok(())
    }

    /// Everything up to `seq` is in the store: drop the sealed segments it covers.
    pub fn committed(&self, seq: u64) {
        let mut inner = self.inner.lock();
        inner.committed = inner.committed.max(seq);
        self.drop_covered(&mut inner);
    }

    /// Appends a forwarded request's start. Returns the segment it is in, which is kept until
    /// `release_start` is called with it.
    pub fn append_start(&self, start: &RequestStart) -> std::io::Result<u64> {
        let mut line = serde_json::to_vec(&StartLine { start }).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // As in `append`: counted under the lock, written after it, into the same segment.
        let (file, segment) = {
            let mut inner = self.inner.lock();
            inner.bytes += line.len() as u64;
            let segment = inner.segment_no;
            *inner.open_starts.entry(segment).or_default() += 1;
            let file = inner.file.clone();
            self.rotate_if_full(&mut inner);
            (file, segment)
        };
        if let Err(e) = append_line(&file, &line) {
            self.release_start(segment);
            return Err(e);
        }
        Ok(segment)
    }

    /// The request started in `segment` has its record in the journal (or ended without one).
    pub fn release_start(&self, segment: u64) {
        let mut inner = self.inner.lock();
        if let Some(n) = inner.open_starts.get_mut(&segment) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.open_starts.remove(&segment);
            }
        }
        self.drop_covered(&mut inner);
    }

    /// Deletes every sealed segment whose records are all committed and whose starts all ended.
    /// (Not only from the front: one long request must not keep every later segment on disk.
    /// A start's record is never in a segment deleted before the start's own, since its segment
    /// stays until the record is journaled, and a deleted record is in the store.)
    fn drop_covered(&self, inner: &mut Inner) {
        let Inner {
            sealed,
            committed,
            open_starts,
            ..
        } = inner;
        sealed.retain(|&(no, last)| {
            if last > *committed || open_starts.contains_key(&no) {
                return true;
            }
            if let Err(e) = std::fs::remove_file(segment_path(&self.dir, no)) {
                tracing::warn!(segment = no, error = %e, "could not remove journal segment");
            }
            false
        });
    }

    /// At a clean shutdown: if every record is in the store and no request is still in flight,
    /// empty the current segment so the next start has nothing to replay. (A request still at
    /// the upstream keeps its start, to be recorded as interrupted at the next start.)
    pub fn truncate_if_committed(&self) -> std::io::Result<bool> {
        let inner = self.inner.lock();
        if inner.committed < inner.seq || !inner.open_starts.is_empty() {
            return Ok(false);
        }
        inner.file.set_len(0)?;
        Ok(true)
    }

    /// Flushes the current segment to stable storage (power-loss safety).
    pub fn sync(&self) -> std::io::Result<()> {
        let handle = self.inner.lock().file.clone();
        handle.sync_data()
    }
}

/// One `write(2)` of a whole line to a segment opened `O_APPEND`. A short write (a full disk)
/// is ended with a newline, so the torn line cannot run into the next writer's line and take
/// it down with it at replay (a torn line is skipped).
fn append_line(file: &File, line: &[u8]) -> std::io::Result<()> {
    let mut f = file;
    let n = f.write(line)?;
    if n < line.len() {
        let _ = f.write(b"\n");
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!(
                "journal line cut short: {n} of {} bytes written",
                line.len()
            ),
        ));
    }
    Ok(())
}

fn open_segment(dir: &Path, no: u64) -> std::io::Result<File> {
    crate::fs::open_private_append(&segment_path(dir, no))
}

/// Keeps the segment holding a request's start from being deleted; dropped once the request's
/// record is journaled (or the request ends without one).
pub struct StartPin {
    pub(super) journal: Arc<Journal>,
    pub(super) segment: u64,
}

impl Drop for StartPin {
    fn drop(&mut self) {
        self.journal.release_start(self.segment);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use tollgate_core::pricing::UnitPrices;
    use tollgate_core::record::{Endpoint, Source};

    use super::*;

    pub(crate) fn start(id: &str) -> RequestStart {
        RequestStart {
            request_id: id.to_string(),
            created_at_ms: 1_000,
            sent_at_ms: 1_010,
            account_id: "acct_1".into(),
            key_id: "key_1".into(),
            endpoint: Endpoint::ChatCompletions,
            model: "gpt-4o".into(),
            provider: "openai".into(),
            owned_by: "openai".into(),
            source: Source::Platform,
            prices: UnitPrices {
                input: 2_500_000_000,
                output: 10_000_000_000,
                ..UnitPrices::default()
            },
            byok_fee_bps: 0,
            streamed: false,
            input_tokens: 7,
            user: Some("end-user-1".into()),
            tags: tollgate_core::attribution::Tags::parse("team=ads").unwrap(),
            price_version: Some("pt_0123456789abcdef".into()),
            fingerprint: Some(-5),
            conversation: Some(i64::MAX),
        }
    }

    fn present(dir: &Path) -> Vec<u64> {
        segments(dir).unwrap().into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn a_start_keeps_its_segment_until_released_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        // One byte per segment: every line ends its segment.
        let j = Journal::create(dir.path(), 1, 1).unwrap();
        let seg = j.append_start(&start("req_a")).unwrap();
        assert_eq!(seg, 1);
        let entries = read_segment(&segment_path(dir.path(), 1)).unwrap();
        assert!(matches!(&entries[..], [Entry::Start(s)] if *s == start("req_a")));

        let rec = record("req_b");
        let mut seq = 0;
        j.append(rec, |s, _| seq = s).unwrap();
        assert_eq!(present(dir.path()), vec![1, 2, 3]);
        // Everything committed: the record's segment goes, the open start's stays (out of order).
        j.committed(seq);
        assert_eq!(present(dir.path()), vec![1, 3]);
        assert!(
            !j.truncate_if_committed().unwrap(),
            "a request is in flight"
        );
        j.release_start(seg);
        assert_eq!(present(dir.path()), vec![3]);
        assert!(j.truncate_if_committed().unwrap());
    }

    /// A finished record of request `id`.
    pub(crate) fn record(id: &str) -> UsageRecord {
        serde_json::from_value(serde_json::json!({
            "request_id": id, "created_at_ms": 1_000, "finished_at_ms": 1_500, "account_id": "acct_1",
            "key_id": "key_1", "endpoint": "chat.completions", "model_requested": "m",
            "model_served": "m", "provider": "p", "owned_by": "o", "source": "platform",
            "input_tokens": 1, "output_tokens": 1, "cached_tokens": 0, "cache_write_tokens": 0,
            "reasoning_tokens": 0, "cost_nanos": 0, "price_input": 0, "price_output": 0,
            "price_cached_input": 0, "price_cache_write": 0, "status": "success",
            "http_status": 200, "error_code": null, "latency_ms": 1, "ttft_ms": null,
            "streamed": false, "provenance": "provider"
        }))
        .unwrap()
    }
}

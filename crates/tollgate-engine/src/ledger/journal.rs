//! The append-only journal. A usage record is written here (one JSON line, with a `write(2)`
//! into the OS page cache) before the client receives the end of its response, so a killed
//! process loses nothing it answered; the batch writer moves records into the store and the
//! journal drops segments once everything in them is committed. On start, whatever segments
//! remain are replayed into the store, whose unique request ids make a replay harmless.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tollgate_core::record::UsageRecord;

pub struct Journal {
    dir: PathBuf,
    segment_bytes: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    /// A second handle on the current segment, so fsync runs without holding the lock.
    sync_handle: Arc<File>,
    segment_no: u64,
    bytes: u64,
    seq: u64,
    /// Finished segments and the last sequence number in each.
    sealed: VecDeque<(u64, u64)>,
    /// Highest sequence number known to be in the store.
    committed: u64,
}

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

/// Reads every record in a segment. A torn last line (the process died inside `write`) is
/// skipped: its response had not been sent.
pub fn read_segment(path: &Path) -> std::io::Result<Vec<UsageRecord>> {
    let reader = BufReader::new(File::open(path)?);
    let mut out = Vec::new();
    for line in reader.split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<UsageRecord>(&line) {
            Ok(r) => out.push(r),
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
        let file = open_segment(dir, first_segment_no)?;
        let sync_handle = Arc::new(file.try_clone()?);
        Ok(Self {
            dir: dir.to_path_buf(),
            segment_bytes,
            inner: Mutex::new(Inner {
                file,
                sync_handle,
                segment_no: first_segment_no,
                bytes: 0,
                seq: 0,
                sealed: VecDeque::new(),
                committed: 0,
            }),
        })
    }

    /// Makes `record` durable against a process kill, then hands it with its sequence number to
    /// `then` (the batch writer's queue). `then` runs under the same lock as the write, so the
    /// writer sees records in sequence order and "committed up to N" is meaningful.
    pub fn append(
        &self,
        record: UsageRecord,
        then: impl FnOnce(u64, UsageRecord),
    ) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut inner = self.inner.lock();
        let written = inner.file.write_all(&line);
        inner.bytes += line.len() as u64;
        inner.seq += 1;
        let seq = inner.seq;
        then(seq, record);
        if inner.bytes >= self.segment_bytes {
            if let Err(e) = self.rotate(&mut inner) {
                tracing::error!(error = %e, "journal rotation failed; continuing in the old segment");
            }
        }
        written
    }

    fn rotate(&self, inner: &mut Inner) -> std::io::Result<()> {
        let next = inner.segment_no + 1;
        let file = open_segment(&self.dir, next)?;
        inner.sync_handle = Arc::new(file.try_clone()?);
        inner.file = file;
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
        while let Some(&(no, last)) = inner.sealed.front() {
            if last > seq {
                break;
            }
            inner.sealed.pop_front();
            if let Err(e) = std::fs::remove_file(segment_path(&self.dir, no)) {
                tracing::warn!(segment = no, error = %e, "could not remove journal segment");
            }
        }
    }

    /// At a clean shutdown: if every record is in the store, empty the current segment so the
    /// next start has nothing to replay.
    pub fn truncate_if_committed(&self) -> std::io::Result<bool> {
        let inner = self.inner.lock();
        if inner.committed < inner.seq {
            return Ok(false);
        }
        inner.file.set_len(0)?;
        Ok(true)
    }

    /// Flushes the current segment to stable storage (power-loss safety).
    pub fn sync(&self) -> std::io::Result<()> {
        let handle = self.inner.lock().sync_handle.clone();
        handle.sync_data()
    }
}

fn open_segment(dir: &Path, no: u64) -> std::io::Result<File> {
    crate::fs::open_private_append(&segment_path(dir, no))
}

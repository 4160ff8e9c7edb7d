//! SSE bodies: all events of a response are rendered up front into one
//! buffer, then streamed out as slices of it (one allocation per response),
//! event by event or, under `trickle_ms`, byte by byte (also used for
//! trickled JSON bodies). [`JunkStream`] is the `sse_no_boundary_bytes`
//! body, which allocates nothing per chunk.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::Sleep;

use crate::{LedgerSlot, MockState};

/// How long to wait between the last event before a `cut_at_chunk` and the
/// abort, so hyper flushes the events already produced (it discards its
/// write buffer when the body errors).
const CUT_FLUSH_PAUSE: Duration = Duration::from_millis(10);

/// Collects the events of one SSE response.
pub(crate) struct SseBuilder {
    pub buf: Vec<u8>,
    ends: Vec<usize>,
    usage_event: Option<usize>,
}

impl SseBuilder {
    pub fn with_capacity(bytes: usize, events: usize) -> Self {
        SseBuilder {
            buf: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(events),
            usage_event: None,
        }
    }

    /// A builder whose `buf` already holds `buf` (no event ended yet).
    pub fn from_buf(buf: Vec<u8>) -> Self {
        SseBuilder {
            buf,
            ends: Vec::with_capacity(1),
            usage_event: None,
        }
    }

    /// Marks the end of the event just written into `buf`.
    pub fn end_event(&mut self) {
        self.ends.push(self.buf.len());
    }

    /// Declares that the next event carries the final usage.
    pub fn next_is_usage(&mut self) {
        self.usage_event = Some(self.ends.len());
    }

    /// Turns the events into a body stream, paced by `pacing`; `ledger` is
    /// the entry to update (`usage_reported`, `completed`) as the usage
    /// event and the final event are produced.
    pub fn into_stream(
        self,
        pacing: Pacing,
        ledger: Option<(Arc<MockState>, LedgerSlot)>,
    ) -> SseStream {
        let total = self.ends.len();
        let (limit, cut) = match pacing.cut_at {
            Some(n) if (n as usize) < total => (n as usize, true),
            _ => (total, false),
        };
        SseStream {
            buf: Bytes::from(self.buf),
            ends: self.ends,
            usage_event: self.usage_event,
            next: 0,
            pos: 0,
            limit,
            cut,
            delay: pacing.delay,
            trickle: pacing.trickle,
            sleep: Sleeper::default(),
            ledger,
            state: StreamState::Sending,
        }
    }
}

/// How an event body is sent out.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pacing {
    /// Pause between events (when zero, every event up to the cut point is
    /// sent in a single frame). Ignored when `trickle` is set.
    pub delay: Duration,
    /// After this many events, abort the body with an error.
    pub cut_at: Option<u64>,
    /// When non-zero, send one byte per frame with this pause between
    /// bytes.
    pub trickle: Duration,
}

enum StreamState {
    Sending,
    PausingBeforeCut,
    Done,
}

/// A lazily created, reusable sleep.
#[derive(Default)]
struct Sleeper(Option<Pin<Box<Sleep>>>);

impl Sleeper {
    /// Polls the pending sleep (creating it if needed).
    fn poll(&mut self, cx: &mut Context<'_>, dur: Duration) -> Poll<()> {
        let sleep = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(dur)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.0 = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "mock-upstream: cut_at_chunk",
    )
}

/// The body stream of an SSE response (or of a trickled JSON one).
pub(crate) struct SseStream {
    buf: Bytes,
    ends: Vec<usize>,
    usage_event: Option<usize>,
    /// Index of the next event to send (not yet fully sent).
    next: usize,
    /// Bytes sent so far.
    pos: usize,
    /// Number of events to send.
    limit: usize,
    /// Whether to abort after `limit` events.
    cut: bool,
    delay: Duration,
    trickle: Duration,
    sleep: Sleeper,
    ledger: Option<(Arc<MockState>, LedgerSlot)>,
    state: StreamState,
}

impl Stream for SseStream {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.state {
            StreamState::Done => return Poll::Ready(None),
            StreamState::PausingBeforeCut => {
                if this.sleep.poll(cx, CUT_FLUSH_PAUSE).is_pending() {
                    return Poll::Pending;
                }
                this.state = StreamState::Done;
                return Poll::Ready(Some(Err(cut_error())));
            }
            StreamState::Sending => {}
        }

        if this.next >= this.limit {
            if this.cut {
                this.state = StreamState::PausingBeforeCut;
                // Return Pending once so hyper flushes what it has buffered.
                if this.sleep.poll(cx, CUT_FLUSH_PAUSE).is_pending() {
                    return Poll::Pending;
                }
                this.state = StreamState::Done;
                return Poll::Ready(Some(Err(cut_error())));
            }
            this.state = StreamState::Done;
            return Poll::Ready(None);
        }

        // The frame is `buf[pos..end_byte]`; it completes the events before
        // `end` (none, when trickling through the middle of an event).
        let (end, end_byte) = if !this.trickle.is_zero() {
            if this.pos > 0 && this.sleep.poll(cx, this.trickle).is_pending() {
                return Poll::Pending;
            }
            let end_byte = this.pos + 1;
            if end_byte >= this.ends[this.next] {
                (this.next + 1, this.ends[this.next])
            } else {
                (this.next, end_byte)
            }
        } else if this.delay.is_zero() {
            (this.limit, this.ends[this.limit - 1])
        } else {
            if this.next > 0 && this.sleep.poll(cx, this.delay).is_pending() {
                return Poll::Pending;
            }
            (this.next + 1, this.ends[this.next])
        };
        let frame = this.buf.slice(this.pos..end_byte);

        // Update the ledger before the frame leaves, so a client that has
        // seen the final event always finds a completed entry.
        let usage_sent = this.usage_event.is_some_and(|u| u >= this.next && u < end);
        let completed = end == this.ends.len();
        if usage_sent || completed {
            if let Some((state, slot)) = &this.ledger {
                state.update_entry(*slot, |e| {
                    e.usage_reported |= usage_sent;
                    e.completed |= completed;
                });
            }
        }
        this.next = end;
        this.pos = end_byte;
        if completed {
            this.state = StreamState::Done;
        }
        Poll::Ready(Some(Ok(frame)))
    }
}

/// Size of the chunks of a [`JunkStream`].
const JUNK_CHUNK: usize = 64 << 10;

/// 64 KiB of `x`, shared by every junk chunk (no per-chunk allocation).
static JUNK: [u8; JUNK_CHUNK] = [b'x'; JUNK_CHUNK];

/// The `sse_no_boundary_bytes` body: `data: ` then `x` bytes in 64 KiB
/// chunks, with no event boundary ever; the entry is marked `completed`
/// when the last chunk is produced.
pub(crate) struct JunkStream {
    /// `x` bytes still to send.
    remaining: u64,
    prefix_sent: bool,
    delay: Duration,
    sleep: Sleeper,
    ledger: Option<(Arc<MockState>, LedgerSlot)>,
}

impl JunkStream {
    pub fn new(bytes: u64, delay: Duration, ledger: Option<(Arc<MockState>, LedgerSlot)>) -> Self {
        JunkStream {
            remaining: bytes,
            prefix_sent: false,
            delay,
            sleep: Sleeper::default(),
            ledger,
        }
    }
}

impl Stream for JunkStream {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.prefix_sent {
            this.prefix_sent = true;
            return Poll::Ready(Some(Ok(Bytes::from_static(b"data: "))));
        }
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        if !this.delay.is_zero() && this.sleep.poll(cx, this.delay).is_pending() {
            return Poll::Pending;
        }
        let n = usize::try_from(this.remaining).map_or(JUNK_CHUNK, |r| r.min(JUNK_CHUNK));
        this.remaining -= n as u64;
        if this.remaining == 0 {
            if let Some((state, slot)) = &this.ledger {
                state.update_entry(*slot, |e| e.completed = true);
            }
        }
        Poll::Ready(Some(Ok(Bytes::from_static(&JUNK[..n]))))
    }
}

//! SSE bodies: all events of a response are rendered up front into one
//! buffer, then streamed out as slices of it (one allocation per response).

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

    /// Marks the end of the event just written into `buf`.
    pub fn end_event(&mut self) {
        self.ends.push(self.buf.len());
    }

    /// Declares that the next event carries the final usage.
    pub fn next_is_usage(&mut self) {
        self.usage_event = Some(self.ends.len());
    }

    /// Turns the events into a body stream.
    ///
    /// * `delay`: pause between events (when zero, every event up to the
    ///   cut point is sent in a single frame).
    /// * `cut_at`: after this many events, abort the body with an error.
    /// * `ledger`: entry to update (`usage_reported`, `completed`) as the
    ///   usage event and the final event are produced.
    pub fn into_stream(
        self,
        delay: Duration,
        cut_at: Option<u64>,
        ledger: Option<(Arc<MockState>, LedgerSlot)>,
    ) -> SseStream {
        let total = self.ends.len();
        let (limit, cut) = match cut_at {
            Some(n) if (n as usize) < total => (n as usize, true),
            _ => (total, false),
        };
        SseStream {
            buf: Bytes::from(self.buf),
            ends: self.ends,
            usage_event: self.usage_event,
            next: 0,
            limit,
            cut,
            delay,
            sleep: None,
            ledger,
            state: StreamState::Sending,
        }
    }
}

enum StreamState {
    Sending,
    PausingBeforeCut,
    Done,
}

/// The body stream of an SSE response.
pub(crate) struct SseStream {
    buf: Bytes,
    ends: Vec<usize>,
    usage_event: Option<usize>,
    /// Index of the next event to send.
    next: usize,
    /// Number of events to send.
    limit: usize,
    /// Whether to abort after `limit` events.
    cut: bool,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    ledger: Option<(Arc<MockState>, LedgerSlot)>,
    state: StreamState,
}

impl SseStream {
    /// Polls the pending sleep (creating it if needed).
    fn poll_sleep(&mut self, cx: &mut Context<'_>, dur: Duration) -> Poll<()> {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(dur)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.sleep = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Stream for SseStream {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.state {
            StreamState::Done => return Poll::Ready(None),
            StreamState::PausingBeforeCut => {
                if this.poll_sleep(cx, CUT_FLUSH_PAUSE).is_pending() {
                    return Poll::Pending;
                }
                this.state = StreamState::Done;
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "mock-upstream: cut_at_chunk",
                ))));
            }
            StreamState::Sending => {}
        }

        if this.next >= this.limit {
            if this.cut {
                this.state = StreamState::PausingBeforeCut;
                // Return Pending once so hyper flushes what it has buffered.
                if this.poll_sleep(cx, CUT_FLUSH_PAUSE).is_pending() {
                    return Poll::Pending;
                }
                this.state = StreamState::Done;
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "mock-upstream: cut_at_chunk",
                ))));
            }
            this.state = StreamState::Done;
            return Poll::Ready(None);
        }

        let end = if this.delay.is_zero() {
            this.limit
        } else {
            if this.next > 0 && this.poll_sleep(cx, this.delay).is_pending() {
                return Poll::Pending;
            }
            this.next + 1
        };

        let start_byte = if this.next == 0 {
            0
        } else {
            this.ends[this.next - 1]
        };
        let end_byte = this.ends[end - 1];
        let frame = this.buf.slice(start_byte..end_byte);

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
        if completed {
            this.state = StreamState::Done;
        }
        Poll::Ready(Some(Ok(frame)))
    }
}

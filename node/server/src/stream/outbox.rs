//! The write side of one connection, shared by the hub and the connection's task.
//!
//! A live, caught-up connection gets each new delta written by the fan-out
//! itself, straight into its socket (one non-blocking write of the shared
//! frame): no task wake-up, no copy, no queue per subscriber and commit. Only
//! what the fan-out cannot finish goes to the connection's task: the rest of a
//! frame the socket did not take at once (flushed when writable, at most
//! `limit` frames, else `too_slow`), and pushes that need history or a key
//! lookup (its inbox: gaps, resyncs, rechecks, everything before the initial
//! sync is done).
//!
//! Order is kept by one rule: the hub writes a delta itself only while the
//! task is idle (`live`), its inbox is empty and the delta starts at the
//! version the client will hold. Everything else waits in order in the inbox.

use super::hub::{CloseSlot, EncodedDelta, Push};
use axum::body::Bytes;
use flagraft_client::protocol::CloseCode;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::io::AsyncWrite;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The socket's write half.
pub(crate) type Sink = Pin<Box<dyn AsyncWrite + Send>>;

pub(crate) struct Outbox {
    state: Mutex<OutState>,
    /// Wakes the connection's task: inbox, frames to flush, or closed.
    pub wake: Notify,
    pub close: CloseSlot,
    /// Frames (or pushes) that may wait before the connection is too slow.
    limit: usize,
}

struct OutState {
    sink: Sink,
    /// Frames accepted but not yet in the socket, in order (the first may be a
    /// frame's unwritten tail).
    unsent: VecDeque<Bytes>,
    /// Since when `unsent` has not been empty.
    stalled_since: Option<Instant>,
    /// The socket failed: the connection is gone.
    failed: bool,
    /// Pushes for the connection's task, in order.
    inbox: VecDeque<Push>,
    /// The task is idle and caught up: the hub may write deltas itself.
    live: bool,
    /// The version the client holds once everything accepted is written.
    version: u64,
}

/// What [`Outbox::offer_delta`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Written (or left for the task): keep the subscriber.
    Kept,
    /// Cut off (too slow) or gone: drop the subscriber.
    Dropped,
}

impl Outbox {
    pub fn new(sink: Sink, limit: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::new(OutState {
                sink,
                unsent: VecDeque::new(),
                stalled_since: None,
                failed: false,
                inbox: VecDeque::new(),
                live: false,
                version: 0,
            }),
            wake: Notify::new(),
            close: CloseSlot::default(),
            limit: limit.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, OutState> {
        // Critical sections leave the state consistent; a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cut the connection off with `code`; its task says goodbye.
    pub fn close_with(&self, code: CloseCode) {
        self.close.set(code);
        self.wake.notify_one();
    }

    /// The hub's path for a new version's delta. Never waits.
    pub fn offer_delta(&self, d: &Arc<EncodedDelta>) -> Offer {
        if self.close.get().is_some() {
            return Offer::Dropped;
        }
        let mut st = self.lock();
        if st.live && st.inbox.is_empty() && !st.failed {
            if d.to_version <= st.version {
                return Offer::Kept; // covered by the initial sync or a catch-up
            }
            if d.from_version == st.version {
                st.version = d.to_version;
                let was_empty = st.unsent.is_empty();
                let fits = st.push_frame(d.frame.clone(), self.limit);
                drop(st);
                return self.after_push(fits, was_empty);
            }
        }
        // A gap or a busy task: the task handles it, in order.
        self.to_inbox(st, Push::Delta(Arc::clone(d)))
    }

    /// A push only the connection's task can handle.
    pub fn offer(&self, push: Push) -> Offer {
        if self.close.get().is_some() {
            return Offer::Dropped;
        }
        let st = self.lock();
        self.to_inbox(st, push)
    }

    fn to_inbox(&self, mut st: MutexGuard<'_, OutState>, push: Push) -> Offer {
        if st.failed {
            return Offer::Dropped;
        }
        if st.inbox.len() >= self.limit {
            drop(st);
            self.close_with(CloseCode::TooSlow);
            return Offer::Dropped;
        }
        st.live = false;
        st.inbox.push_back(push);
        drop(st);
        self.wake.notify_one();
        Offer::Kept
    }

    fn after_push(&self, fits: Result<bool, ()>, was_empty: bool) -> Offer {
        match fits {
            Ok(true) => Offer::Kept,
            // Part of it waits for the socket: the task flushes it.
            Ok(false) => {
                if was_empty {
                    self.wake.notify_one();
                }
                Offer::Kept
            }
            Err(()) => {
                self.close_with(CloseCode::TooSlow);
                Offer::Dropped
            }
        }
    }

    /// The task's next push; the hub stops writing deltas itself until [`Outbox::go_live`].
    pub fn next_push(&self) -> Option<Push> {
        let mut st = self.lock();
        let p = st.inbox.pop_front();
        if p.is_some() {
            st.live = false;
        }
        p
    }

    /// The task is caught up and idle: let the hub write deltas itself. False
    /// (and nothing changes) when pushes arrived meanwhile.
    pub fn go_live(&self) -> bool {
        let mut st = self.lock();
        if st.inbox.is_empty() {
            st.live = true;
        }
        st.live
    }

    pub fn version(&self) -> u64 {
        self.lock().version
    }

    pub fn set_version(&self, v: u64) {
        self.lock().version = v;
    }

    pub fn has_unsent(&self) -> bool {
        !self.lock().unsent.is_empty()
    }

    /// Since when frames have been waiting for the socket.
    pub fn stalled_since(&self) -> Option<Instant> {
        self.lock().stalled_since
    }

    pub fn failed(&self) -> bool {
        self.lock().failed
    }

    /// Accept a frame from the task without waiting; Err when the connection is
    /// too slow or gone.
    pub fn push(&self, frame: Bytes) -> Result<(), ()> {
        let mut st = self.lock();
        if st.failed {
            return Err(());
        }
        st.push_frame(frame, self.limit).map(|_| ())
    }

    /// Accept a frame from the task, first waiting (at most until `deadline`)
    /// for room when `limit` frames already wait.
    pub async fn send(&self, frame: Bytes, deadline: Instant) -> Result<(), ()> {
        // Each round writes some of the backlog or ends.
        for _ in 0..=self.limit {
            {
                let mut st = self.lock();
                if st.failed {
                    return Err(());
                }
                if st.unsent.len() < self.limit {
                    return st.push_frame(frame, self.limit).map(|_| ());
                }
            }
            self.flush_until(deadline).await?;
        }
        Err(())
    }

    /// Write what waits, at most until `deadline`.
    pub async fn flush_until(&self, deadline: Instant) -> Result<(), ()> {
        match tokio::time::timeout_at(deadline, poll_fn(|cx| self.poll_flush(cx))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(()),
        }
    }

    /// Write what waits; Ready once nothing does.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.lock();
        match st.write_unsent(cx) {
            Poll::Ready(Err(e)) => {
                st.failed = true;
                Poll::Ready(Err(e))
            }
            Poll::Ready(Ok(())) => match st.sink.as_mut().poll_flush(cx) {
                Poll::Ready(Err(e)) => {
                    st.failed = true;
                    Poll::Ready(Err(e))
                }
                other => other,
            },
            Poll::Pending => Poll::Pending,
        }
    }
}

impl OutState {
    /// Append a frame, writing at once what the socket takes without waiting.
    /// Ok(true): all written; Ok(false): some waits; Err: too many frames wait
    /// or the socket failed.
    fn push_frame(&mut self, frame: Bytes, limit: usize) -> Result<bool, ()> {
        if self.unsent.len() >= limit {
            return Err(());
        }
        let was_empty = self.unsent.is_empty();
        self.unsent.push_back(frame);
        if !was_empty {
            return Ok(false); // behind earlier frames; the task flushes in order
        }
        // Nobody waits on writability while nothing is unsent, so a no-op waker
        // takes nothing from the task (which polls with its own when it flushes).
        let mut cx = Context::from_waker(Waker::noop());
        match self.write_unsent(&mut cx) {
            Poll::Ready(Ok(())) => Ok(true),
            Poll::Pending => {
                self.stalled_since = Some(Instant::now());
                Ok(false)
            }
            Poll::Ready(Err(_)) => {
                self.failed = true;
                Err(())
            }
        }
    }

    /// Write the unsent frames in order until done or the socket would block.
    fn write_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Each round writes at least one byte or ends.
        while let Some(front) = self.unsent.front_mut() {
            if front.is_empty() {
                self.unsent.pop_front();
                continue;
            }
            match self.sink.as_mut().poll_write(cx, front) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    let _ = front.split_to(n.min(front.len()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.stalled_since = None;
        if self.unsent.capacity() > 16 {
            self.unsent.shrink_to(4); // a burst's queue is not kept while idle
        }
        Poll::Ready(Ok(()))
    }
}

/// The socket's write side as tungstenite sees it (for its own control
/// frames: pong, close reply): each write is queued whole in the outbox.
pub(crate) struct OutboxWriter(pub Arc<Outbox>);

impl AsyncWrite for OutboxWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.push(Bytes::copy_from_slice(buf)) {
            Ok(()) => {
                self.0.wake.notify_one();
                Poll::Ready(Ok(buf.len()))
            }
            Err(()) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task flushes the outbox.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, DuplexStream};

    fn delta(from: u64, to: u64) -> Arc<EncodedDelta> {
        Arc::new(EncodedDelta {
            from_version: from,
            to_version: to,
            frame: super::super::frame::text(&format!("{from}->{to}")),
        })
    }

    /// An outbox over an in-memory socket taking at most `capacity` bytes unread.
    fn outbox(capacity: usize, limit: usize) -> (Arc<Outbox>, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(capacity);
        (Outbox::new(Box::pin(ours), limit), theirs)
    }

    async fn read_exactly(peer: &mut DuplexStream, frames: &[Arc<EncodedDelta>]) {
        let want: Vec<u8> = frames.iter().flat_map(|d| d.frame.to_vec()).collect();
        let mut got = vec![0; want.len()];
        tokio::time::timeout(std::time::Duration::from_secs(5), peer.read_exact(&mut got))
            .await
            .expect("frames arrive")
            .expect("read");
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn the_hub_writes_only_to_an_idle_caught_up_connection_in_order() {
        let (out, mut peer) = outbox(1 << 16, 8);
        // Before the initial sync: everything waits for the task, in order.
        assert_eq!(out.offer_delta(&delta(0, 1)), Offer::Kept);
        assert!(matches!(out.next_push(), Some(Push::Delta(d)) if d.to_version == 1));
        out.set_version(1);
        assert!(out.go_live());
        // Caught up: written at once by the hub, the version follows.
        let (d2, d3) = (delta(1, 2), delta(2, 3));
        assert_eq!(out.offer_delta(&d2), Offer::Kept);
        assert_eq!(out.offer_delta(&d3), Offer::Kept);
        assert_eq!(out.version(), 3);
        assert!(!out.has_unsent());
        read_exactly(&mut peer, &[d2, d3]).await;
        // Already covered: nothing.
        assert_eq!(out.offer_delta(&delta(1, 2)), Offer::Kept);
        assert!(out.next_push().is_none());
        // A gap goes to the task, and so does everything after it.
        assert_eq!(out.offer_delta(&delta(4, 5)), Offer::Kept);
        assert_eq!(out.offer_delta(&delta(5, 6)), Offer::Kept);
        assert_eq!(out.version(), 3, "the hub wrote nothing past the gap");
        assert!(matches!(out.next_push(), Some(Push::Delta(d)) if d.from_version == 4));
        assert!(!out.go_live(), "one more push waits");
        assert!(matches!(out.next_push(), Some(Push::Delta(d)) if d.from_version == 5));
        assert!(out.go_live());
    }

    #[tokio::test]
    async fn a_connection_that_does_not_read_is_cut_off_as_too_slow_without_waiting() {
        let (out, mut peer) = outbox(64, 3);
        out.set_version(0);
        assert!(out.go_live());
        let big: Vec<Arc<EncodedDelta>> = (0..8)
            .map(|v| {
                Arc::new(EncodedDelta {
                    from_version: v,
                    to_version: v + 1,
                    frame: super::super::frame::text(&"x".repeat(100)),
                })
            })
            .collect();
        let offers: Vec<Offer> = big.iter().map(|d| out.offer_delta(d)).collect();
        assert_eq!(offers[..3], [Offer::Kept, Offer::Kept, Offer::Kept]);
        assert_eq!(
            offers[3],
            Offer::Dropped,
            "a 4th waiting frame is one too many"
        );
        assert_eq!(out.close.get(), Some(CloseCode::TooSlow));
        // What was accepted still arrives whole and in order once the peer reads.
        let reader = tokio::spawn(async move {
            read_exactly(&mut peer, &big[..3]).await;
        });
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        assert!(out.flush_until(deadline).await.is_ok());
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn a_full_inbox_is_too_slow_too() {
        let (out, _peer) = outbox(1 << 16, 2);
        assert_eq!(out.offer(Push::Resync), Offer::Kept);
        assert_eq!(out.offer(Push::Recheck), Offer::Kept);
        assert_eq!(out.offer(Push::Resync), Offer::Dropped);
        assert_eq!(out.close.get(), Some(CloseCode::TooSlow));
        assert_eq!(out.offer_delta(&delta(0, 1)), Offer::Dropped);
    }
}

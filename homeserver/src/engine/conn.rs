//! One socket's sending side, as the engine sees it: a bounded queue of ready-made text frames
//! that the socket's writer drains in bursts, and a way to ask for the socket to be closed.
//!
//! A producer that queues frames for many sockets at once (a room's fan-out, which also answers
//! the chat it commits) queues them with [`ConnHandle::push`] and wakes the writers only when it
//! is done ([`Wakes`]): each socket's frames of that fan-out are then all waiting when its writer
//! runs, and leave in one write. Waking per frame lets a writer on another thread start on the
//! first frame, so the others follow in writes of their own.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::protocol::Frame;
use tokio::sync::Notify;

/// Close code for a client that stopped reading.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// A queue that grew past this many frames is given back once drained: an idle socket keeps no
/// memory from its busiest moment.
const KEEP_CAPACITY: usize = 16;

/// The sending side of one socket; cheap to clone.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    /// Unique per process.
    pub id: u64,
    shared: Arc<Shared>,
}

/// What a socket's producers and its writer share.
#[derive(Debug)]
struct Shared {
    queue: Mutex<VecDeque<Frame>>,
    /// Most frames waiting at once.
    bound: usize,
    /// Frames were queued (a permit is kept when the writer is not waiting).
    ready: Notify,
    /// The writer took frames out: room for a producer that waits.
    space: Notify,
    control: Arc<ConnControl>,
}

/// Lets anyone holding a handle close the socket with a reason.
#[derive(Debug, Default)]
pub struct ConnControl {
    close: Mutex<Option<(u16, String)>>,
    notify: Notify,
    closed: AtomicBool,
}

/// Why a frame was not queued; a full queue gives the frame back.
enum Refused {
    Closed,
    Full(Frame),
}

impl ConnHandle {
    /// A handle and the end its writer drains. The queue's memory grows with what is queued,
    /// not with its bound.
    pub fn new(id: u64, bound: usize) -> (Self, Outbox, Arc<ConnControl>) {
        let control = Arc::new(ConnControl::default());
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            bound: bound.max(1),
            ready: Notify::new(),
            space: Notify::new(),
            control: control.clone(),
        });
        (
            Self {
                id,
                shared: shared.clone(),
            },
            Outbox { shared },
            control,
        )
    }

    /// Queues a frame and wakes the writer. A full queue means the client stopped reading: it
    /// is disconnected as a slow consumer rather than slowing down the room (it can resume).
    /// Nothing is queued once a close was asked for: what a client receives is then always
    /// everything up to some point, so resuming after the last event it got misses nothing
    /// (a frame refused for a full queue followed by a later one accepted would be a gap).
    pub fn send(&self, frame: Frame) -> bool {
        let mut wakes = Wakes::default();
        self.push(frame, &mut wakes)
    }

    /// [`Self::send`], with the writer woken when `wakes` is dropped rather than now.
    pub fn push(&self, frame: Frame, wakes: &mut Wakes) -> bool {
        match self.shared.try_push(frame) {
            Ok(true) => {
                wakes.0.push(self.shared.clone());
                true
            }
            Ok(false) => true,
            Err(Refused::Full(_)) => {
                self.close(
                    CLOSE_SLOW_CONSUMER,
                    "slow consumer: the client did not read its messages",
                );
                false
            }
            Err(Refused::Closed) => false,
        }
    }

    /// Queues a frame, waiting for room in the queue, but no longer than a close: used only for
    /// a socket's own backlog, whose reader must still notice a client that stopped reading.
    pub async fn send_wait(&self, frame: Frame) -> bool {
        let mut frame = frame;
        loop {
            // Enabled before looking, so that room made after the look is not missed.
            let mut space = pin!(self.shared.space.notified());
            space.as_mut().enable();
            match self.shared.try_push(frame) {
                Ok(woke) => {
                    if woke {
                        self.shared.ready.notify_one();
                    }
                    return true;
                }
                Err(Refused::Closed) => return false,
                Err(Refused::Full(back)) => frame = back,
            }
            tokio::select! {
                () = space => {}
                _ = self.shared.control.closed() => return false,
            }
        }
    }

    /// Asks the socket's writer to close it with `code` and `reason`.
    pub fn close(&self, code: u16, reason: &str) {
        self.shared.control.close(code, reason);
    }

    /// Whether a close was asked for.
    pub fn is_closed(&self) -> bool {
        self.shared.control.closed.load(Ordering::Acquire)
    }
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Frame>> {
        // Frames are whole values: a panic elsewhere cannot leave the queue half-written.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `frame`; `Ok(true)` when the writer must be woken (the queue was empty).
    fn try_push(&self, frame: Frame) -> Result<bool, Refused> {
        if self.control.closed.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        let mut queue = self.queue();
        if queue.len() >= self.bound {
            return Err(Refused::Full(frame));
        }
        queue.push_back(frame);
        Ok(queue.len() == 1)
    }
}

/// The socket writer's end of the queue.
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
}

impl Outbox {
    /// Waits for frames, then moves every one waiting to the end of `into`, in order.
    pub async fn take(&mut self, into: &mut VecDeque<Frame>) {
        loop {
            if self.try_take(into) {
                return;
            }
            self.shared.ready.notified().await;
        }
    }

    /// Moves every frame waiting to the end of `into`; false when there was none.
    pub fn try_take(&mut self, into: &mut VecDeque<Frame>) -> bool {
        let mut queue = self.shared.queue();
        if queue.is_empty() {
            return false;
        }
        if into.is_empty() {
            // The empty one goes back, keeping its memory for the next burst.
            std::mem::swap(into, &mut *queue);
        } else {
            into.extend(queue.drain(..));
        }
        if queue.capacity() > KEEP_CAPACITY {
            *queue = VecDeque::new();
        }
        drop(queue);
        self.shared.space.notify_waiters();
        true
    }

    /// The next frame waiting, if any (for tests, which read frames one at a time).
    pub fn try_next(&mut self) -> Option<Frame> {
        let frame = self.shared.queue().pop_front();
        self.shared.space.notify_waiters();
        frame
    }

    /// Gives back the memory of a burst that was larger than usual, once written.
    pub fn shrink(burst: &mut VecDeque<Frame>) {
        if burst.is_empty() && burst.capacity() > KEEP_CAPACITY {
            *burst = VecDeque::new();
        }
    }
}

/// Writers to wake, woken when this is dropped: a producer queues everything it has for many
/// sockets first (see the module docs).
#[derive(Default)]
pub struct Wakes(Vec<Arc<Shared>>);

impl std::fmt::Debug for Wakes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wakes({})", self.0.len())
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        for shared in self.0.drain(..) {
            shared.ready.notify_one();
        }
    }
}

impl ConnControl {
    fn close(&self, code: u16, reason: &str) {
        if let Ok(mut slot) = self.close.lock()
            && slot.is_none()
        {
            *slot = Some((code, reason.to_owned()));
        }
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Resolves once someone asked for the socket to be closed; returns the code and reason.
    /// Both the socket's reader and its writer wait on it.
    pub async fn closed(&self) -> (u16, String) {
        loop {
            let notified = self.notify.notified();
            if self.closed.load(Ordering::Acquire) {
                let reason = self.close.lock().ok().and_then(|s| s.clone());
                return reason.unwrap_or((1000, String::new()));
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn frame(n: usize) -> Frame {
        Frame::from(n.to_string())
    }

    #[tokio::test]
    async fn a_deferred_wake_lets_the_writer_take_the_whole_burst() {
        let (conn, mut outbox, _) = ConnHandle::new(1, 64);
        let mut burst = VecDeque::new();
        let mut take = Box::pin(outbox.take(&mut burst));
        assert!((&mut take).now_or_never().is_none(), "nothing queued yet");
        let mut wakes = Wakes::default();
        for n in 0..3 {
            assert!(conn.push(frame(n), &mut wakes));
        }
        assert!(
            (&mut take).now_or_never().is_none(),
            "the writer is not woken before the producer is done"
        );
        drop(wakes);
        assert!((&mut take).now_or_never().is_some());
        drop(take);
        let got: Vec<&str> = burst.iter().map(|f| f.as_str()).collect();
        assert_eq!(got, ["0", "1", "2"]);
    }

    #[tokio::test]
    async fn send_wakes_at_once() {
        let (conn, mut outbox, _) = ConnHandle::new(1, 64);
        let mut burst = VecDeque::new();
        let mut take = Box::pin(outbox.take(&mut burst));
        assert!((&mut take).now_or_never().is_none());
        assert!(conn.send(frame(7)));
        assert!((&mut take).now_or_never().is_some());
    }

    #[tokio::test]
    async fn a_full_queue_closes_as_a_slow_consumer_and_keeps_what_came_before() {
        let (conn, mut outbox, control) = ConnHandle::new(1, 2);
        assert!(conn.send(frame(0)));
        assert!(conn.send(frame(1)));
        assert!(!conn.send(frame(2)), "over the bound");
        assert!(conn.is_closed());
        assert_eq!(control.closed().await.0, CLOSE_SLOW_CONSUMER);
        assert!(!conn.send(frame(3)), "nothing is queued after a close");
        let mut burst = VecDeque::new();
        assert!(outbox.try_take(&mut burst));
        let got: Vec<&str> = burst.iter().map(|f| f.as_str()).collect();
        assert_eq!(got, ["0", "1"], "an unbroken run up to the close");
    }

    #[tokio::test]
    async fn send_wait_waits_for_room_and_gives_up_on_a_close() {
        let (conn, mut outbox, _) = ConnHandle::new(1, 1);
        assert!(conn.send(frame(0)));
        let mut waiting = Box::pin(conn.send_wait(frame(1)));
        assert!((&mut waiting).now_or_never().is_none(), "the queue is full");
        let mut burst = VecDeque::new();
        assert!(outbox.try_take(&mut burst));
        assert_eq!((&mut waiting).now_or_never(), Some(true), "room was made");
        assert_eq!(outbox.try_next().as_deref(), Some("1"));

        assert!(conn.send(frame(2)));
        let mut waiting = Box::pin(conn.send_wait(frame(3)));
        assert!((&mut waiting).now_or_never().is_none());
        conn.close(1000, "");
        assert_eq!((&mut waiting).now_or_never(), Some(false));
    }

    #[test]
    fn a_queue_gives_back_the_memory_of_a_large_burst() {
        let (conn, mut outbox, _) = ConnHandle::new(1, 1024);
        for n in 0..200 {
            conn.send(frame(n));
        }
        let mut burst = VecDeque::new();
        assert!(outbox.try_take(&mut burst));
        assert_eq!(burst.len(), 200);
        burst.clear();
        Outbox::shrink(&mut burst);
        assert_eq!(burst.capacity(), 0);
        assert!(conn.shared.queue().capacity() <= KEEP_CAPACITY);
    }
}

//! One socket's sending side, as the engine sees it: a bounded queue of ready-made text frames
//! that the socket's writer drains in batches, and a way to ask for the socket to be closed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::protocol::Frame;
use tokio::sync::{Notify, mpsc};

/// Close code for a client that stopped reading.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// The sending side of one socket; cheap to clone.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    /// Unique per process.
    pub id: u64,
    tx: mpsc::Sender<Frame>,
    control: Arc<ConnControl>,
}

/// Lets anyone holding a handle close the socket with a reason.
#[derive(Debug, Default)]
pub struct ConnControl {
    close: Mutex<Option<(u16, String)>>,
    notify: Notify,
    closed: AtomicBool,
}

impl ConnHandle {
    /// A handle and the receiving end its writer drains. The queue's memory grows with what is
    /// queued, not with its bound (tokio's bounded channel allocates in blocks as it fills).
    pub fn new(id: u64, queue: usize) -> (Self, mpsc::Receiver<Frame>, Arc<ConnControl>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let control = Arc::new(ConnControl::default());
        (
            Self {
                id,
                tx,
                control: control.clone(),
            },
            rx,
            control,
        )
    }

    /// Queues a frame without waiting. A full queue means the client stopped reading: it is
    /// disconnected as a slow consumer rather than slowing down the room (it can resume).
    /// Nothing is queued once a close was asked for: what a client receives is then always
    /// everything up to some point, so resuming after the last event it got misses nothing
    /// (a frame refused for a full queue followed by a later one accepted would be a gap).
    pub fn send(&self, frame: Frame) -> bool {
        if self.control.closed.load(Ordering::Acquire) {
            return false;
        }
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(
                    CLOSE_SLOW_CONSUMER,
                    "slow consumer: the client did not read its messages",
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a frame, waiting for room in the queue, but no longer than a close: used only for
    /// a socket's own backlog, whose reader must still notice a client that stopped reading.
    pub async fn send_wait(&self, frame: Frame) -> bool {
        if self.control.closed.load(Ordering::Acquire) {
            return false;
        }
        tokio::select! {
            sent = self.tx.send(frame) => sent.is_ok(),
            _ = self.control.closed() => false,
        }
    }

    /// Asks the socket's writer to close it with `code` and `reason`.
    pub fn close(&self, code: u16, reason: &str) {
        if let Ok(mut slot) = self.control.close.lock()
            && slot.is_none()
        {
            *slot = Some((code, reason.to_owned()));
        }
        self.control.closed.store(true, Ordering::Release);
        self.control.notify.notify_waiters();
    }

    /// Whether a close was asked for.
    pub fn is_closed(&self) -> bool {
        self.control.closed.load(Ordering::Acquire)
    }
}

impl ConnControl {
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

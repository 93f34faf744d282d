//! Which HTTP worker thread serves a socket. The HTTP server hands connections to its worker
//! threads in turn, so the sockets of one room would sit on different threads, and every signal
//! between them would wake the other thread (a system call and a context switch each; README,
//! Performance). A client that names its room in the WebSocket URL (`?room=`) is served instead
//! on the thread of the room's other sockets; a room's first socket goes to the thread serving
//! the fewest. It is a hint for speed only: a socket may subscribe to any room, wherever it is
//! served, and a socket without one stays where it was accepted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;

use prometheus::{IntGauge, IntGaugeVec};
use tokio::sync::mpsc;

/// Work handed to a worker thread, run there (it spawns the socket's tasks on that thread).
pub type Job = Box<dyn FnOnce() + Send>;

/// The worker threads and the rooms placed on them; one per server.
pub struct Placement {
    inner: Mutex<Inner>,
    /// Each worker's sockets, exported by its index.
    gauge: IntGaugeVec,
}

#[derive(Default)]
struct Inner {
    workers: Vec<Worker>,
    /// Rooms with a placed socket, and where.
    rooms: HashMap<Box<str>, Seat>,
}

struct Worker {
    thread: ThreadId,
    jobs: mpsc::UnboundedSender<Job>,
    /// Sockets placed here and still open.
    sockets: usize,
    gauge: IntGauge,
}

struct Seat {
    worker: usize,
    sockets: usize,
}

/// Another worker thread's queue of jobs.
pub struct Elsewhere(mpsc::UnboundedSender<Job>);

impl Elsewhere {
    /// Runs `job` on that thread; gives it back when the worker has stopped.
    pub fn run(&self, job: Job) -> Result<(), Job> {
        self.0.send(job).map_err(|refused| refused.0)
    }
}

/// Where one socket is served, held for the socket's life: dropping it gives its place back.
pub struct Placed {
    placement: Arc<Placement>,
    worker: usize,
    room: Option<Box<str>>,
    /// The worker's queue of jobs, when it is not the thread that accepted the socket.
    elsewhere: Option<mpsc::UnboundedSender<Job>>,
}

impl Placement {
    pub fn new(gauge: IntGaugeVec) -> Self {
        Self {
            inner: Mutex::default(),
            gauge,
        }
    }

    /// Records the calling thread as a worker that serves sockets; called on each worker thread
    /// as it builds its services (again, harmlessly, when one is rebuilt). The thread runs the
    /// jobs sent to it from then on, until its runtime stops.
    pub fn register_current_worker(&self) {
        let thread = std::thread::current().id();
        if self.lock().workers.iter().any(|w| w.thread == thread) {
            return;
        }
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        // A worker's runtime runs its tasks on its own thread only.
        tokio::task::spawn_local(async move {
            while let Some(job) = queue.recv().await {
                job();
            }
        });
        self.register(thread, jobs);
    }

    fn register(&self, thread: ThreadId, jobs: mpsc::UnboundedSender<Job>) {
        let mut inner = self.lock();
        if !inner.workers.iter().any(|w| w.thread == thread) {
            let gauge = self
                .gauge
                .with_label_values(&[inner.workers.len().to_string().as_str()]);
            inner.workers.push(Worker {
                thread,
                jobs,
                sockets: 0,
                gauge,
            });
        }
    }

    /// Places a socket accepted on the calling thread; `None` when that thread is not a
    /// registered worker (then it stays where it is, counted nowhere).
    pub fn place(self: &Arc<Self>, room: Option<&str>) -> Option<Placed> {
        self.place_from(std::thread::current().id(), room)
    }

    fn place_from(self: &Arc<Self>, accepted_on: ThreadId, room: Option<&str>) -> Option<Placed> {
        let mut inner = self.lock();
        let here = inner.workers.iter().position(|w| w.thread == accepted_on)?;
        let worker = match room {
            None => here,
            Some(room) => match inner.rooms.get_mut(room) {
                Some(seat) => {
                    seat.sockets += 1;
                    seat.worker
                }
                None => {
                    // The least loaded; the accepting thread when it is among them, which
                    // spares the move.
                    let fewest = inner.workers.iter().map(|w| w.sockets).min().unwrap_or(0);
                    let worker = if inner.workers[here].sockets == fewest {
                        here
                    } else {
                        inner.workers.iter().position(|w| w.sockets == fewest)?
                    };
                    inner.rooms.insert(room.into(), Seat { worker, sockets: 1 });
                    worker
                }
            },
        };
        inner.workers[worker].sockets += 1;
        inner.workers[worker].gauge.inc();
        let elsewhere = (worker != here).then(|| inner.workers[worker].jobs.clone());
        Some(Placed {
            placement: self.clone(),
            worker,
            room: room.map(Into::into),
            elsewhere,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change is whole before the guard drops: a panic cannot leave counts half-done.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Placed {
    /// The worker thread chosen, when it is not the one that accepted the socket.
    pub fn elsewhere(&self) -> Option<Elsewhere> {
        self.elsewhere.clone().map(Elsewhere)
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        let mut inner = self.placement.lock();
        if let Some(worker) = inner.workers.get_mut(self.worker) {
            worker.sockets = worker.sockets.saturating_sub(1);
            worker.gauge.dec();
        }
        if let Some(room) = &self.room
            && let Some(seat) = inner.rooms.get_mut(room)
        {
            seat.sockets = seat.sockets.saturating_sub(1);
            if seat.sockets == 0 {
                inner.rooms.remove(room);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// Two workers, each a thread id with a job queue, as the HTTP server's would be.
    struct Workers {
        placement: Arc<Placement>,
        threads: [ThreadId; 2],
        queues: Vec<mpsc::UnboundedReceiver<Job>>,
    }

    fn workers() -> Workers {
        let gauge = IntGaugeVec::new(prometheus::Opts::new("sockets", "sockets"), &["worker"])
            .expect("a valid metric");
        let placement = Arc::new(Placement::new(gauge));
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..2 {
            let (jobs, queue) = mpsc::unbounded_channel();
            let thread = std::thread::spawn(|| std::thread::current().id())
                .join()
                .expect("thread");
            placement.register(thread, jobs);
            queues.push(queue);
            threads.push(thread);
        }
        Workers {
            placement,
            threads: [threads[0], threads[1]],
            queues,
        }
    }

    fn place(w: &Workers, accepted_on: usize, room: Option<&str>) -> Placed {
        w.placement
            .place_from(w.threads[accepted_on], room)
            .expect("a registered worker")
    }

    #[test]
    fn a_rooms_sockets_share_the_thread_of_its_first() {
        let mut w = workers();
        let first = place(&w, 0, Some("!a:x"));
        assert_eq!(first.worker, 0);
        assert!(first.elsewhere().is_none(), "no move when already there");
        let second = place(&w, 1, Some("!a:x"));
        assert_eq!(second.worker, 0);
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let elsewhere = second.elsewhere().expect("moved to the room's thread");
        assert!(
            elsewhere
                .run(Box::new(move || flag.store(true, Ordering::SeqCst)))
                .is_ok()
        );
        let job = w.queues[0].try_recv().expect("sent to the room's worker");
        job();
        assert!(ran.load(Ordering::SeqCst));
        assert!(w.queues[1].try_recv().is_err());
    }

    #[test]
    fn a_job_for_a_stopped_worker_comes_back() {
        let mut w = workers();
        let _first = place(&w, 0, Some("!a:x"));
        w.queues.remove(0);
        let second = place(&w, 1, Some("!a:x"));
        let elsewhere = second.elsewhere().expect("placed on worker 0");
        assert!(elsewhere.run(Box::new(|| ())).is_err());
    }

    #[test]
    fn a_new_room_goes_to_the_least_loaded_worker() {
        let w = workers();
        let _a: Vec<Placed> = (0..3).map(|_| place(&w, 0, Some("!a:x"))).collect();
        let b = place(&w, 0, Some("!b:x"));
        assert_eq!(b.worker, 1, "worker 0 serves three sockets, worker 1 none");
        let _b2 = place(&w, 0, Some("!b:x"));
        let _b3 = place(&w, 0, Some("!b:x"));
        let c = place(&w, 1, Some("!c:x"));
        assert_eq!(
            c.worker, 1,
            "three each: a tie goes to the accepting worker"
        );
        let d = place(&w, 1, Some("!d:x"));
        assert_eq!(d.worker, 0, "now worker 0 serves the fewest");
    }

    #[test]
    fn a_socket_without_a_room_stays_where_it_was_accepted() {
        let w = workers();
        let _a: Vec<Placed> = (0..3).map(|_| place(&w, 0, Some("!a:x"))).collect();
        let plain = place(&w, 0, None);
        assert_eq!(plain.worker, 0);
        assert!(plain.elsewhere().is_none());
    }

    #[test]
    fn a_room_is_forgotten_with_its_last_socket() {
        let w = workers();
        let a = place(&w, 0, Some("!a:x"));
        let b = place(&w, 0, Some("!b:x"));
        assert_eq!(b.worker, 1);
        drop(b);
        assert!(!w.placement.lock().rooms.contains_key("!b:x"));
        assert_eq!(w.placement.lock().workers[1].sockets, 0);
        // Worker 1 is empty again, so room b, back, is placed afresh there.
        let b = place(&w, 0, Some("!b:x"));
        assert_eq!(b.worker, 1);
        drop(a);
        assert_eq!(w.placement.lock().workers[0].sockets, 0);
    }

    #[test]
    fn an_unregistered_thread_places_nothing_and_registering_twice_counts_once() {
        let w = workers();
        assert!(
            w.placement
                .place_from(std::thread::current().id(), Some("!a:x"))
                .is_none()
        );
        let (jobs, _queue) = mpsc::unbounded_channel();
        w.placement.register(w.threads[0], jobs);
        assert_eq!(w.placement.lock().workers.len(), 2);
    }
}

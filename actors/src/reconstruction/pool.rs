//! [`ReconstructionPool`]: the CPU arbiters the node's [`super::Reconstruction`] actors run
//! on, away from the I/O runtime and the capture sessions' arbiters. One arbiter per core
//! (or as configured), each thread at the live-fusion priority (`fusion_nice`) and named
//! `fusion-{i}`; a new scan's actor goes to the arbiter with the fewest actors. The pool
//! also counts the scans fusing live, for the node's cap.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use tokio::sync::Semaphore;

use super::{lower_priority_to, DEFAULT_WORKER_NICE};

/// One arbiter and the number of actors living on it.
#[derive(Clone)]
pub(crate) struct Slot {
    pub(crate) arbiter: ArbiterHandle,
    pub(crate) load: Arc<AtomicUsize>,
}

struct Inner {
    threads: usize,
    nice: AtomicI32,
    slots: Mutex<Vec<Slot>>,
    /// Scans fusing live now.
    live: Arc<AtomicUsize>,
    /// One permit per core: the finish steps and re-measurements running at once.
    cpu: Arc<Semaphore>,
}

/// The node's reconstruction arbiters. Cheap to clone (shared).
#[derive(Clone)]
pub struct ReconstructionPool(Arc<Inner>);

impl std::fmt::Debug for ReconstructionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconstructionPool").field("threads", &self.0.threads).finish()
    }
}

impl Default for ReconstructionPool {
    fn default() -> Self {
        Self::new(0, DEFAULT_WORKER_NICE)
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl ReconstructionPool {
    /// A pool of `threads` arbiters (0: one per core) at niceness `nice` (0–19). The
    /// arbiters start with the first scan, inside the actor system.
    pub fn new(threads: usize, nice: i32) -> Self {
        let threads = if threads == 0 { cores() } else { threads };
        Self(Arc::new(Inner {
            threads,
            nice: AtomicI32::new(nice.clamp(0, 19)),
            slots: Mutex::new(Vec::new()),
            live: Arc::new(AtomicUsize::new(0)),
            cpu: Arc::new(Semaphore::new(cores())),
        }))
    }

    /// The niceness the arbiters' threads run at.
    pub fn nice(&self) -> i32 {
        self.0.nice.load(Ordering::Relaxed)
    }

    /// Scans fusing live now.
    pub fn live_scans(&self) -> usize {
        self.0.live.load(Ordering::Acquire)
    }

    pub(crate) fn live_counter(&self) -> &Arc<AtomicUsize> {
        &self.0.live
    }

    pub(crate) fn cpu(&self) -> &Arc<Semaphore> {
        &self.0.cpu
    }

    /// The least loaded arbiter, starting them on first use; `None` outside an actor system.
    pub(crate) fn slot(&self) -> Option<Slot> {
        let mut slots = self.0.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if slots.is_empty() {
            System::try_current()?;
            let nice = self.nice();
            for i in 0..self.0.threads {
                let arbiter = Arbiter::new();
                let spawned = arbiter.spawn_fn(move || {
                    name_thread(&format!("fusion-{i}"));
                    lower_priority_to(nice);
                });
                if !spawned {
                    tracing::error!("a reconstruction arbiter stopped at start");
                    continue;
                }
                slots.push(Slot { arbiter: arbiter.handle(), load: Arc::new(AtomicUsize::new(0)) });
            }
        }
        slots.iter().min_by_key(|s| s.load.load(Ordering::Relaxed)).cloned()
    }
}

/// Names the calling thread (Linux `comm`, at most 15 bytes), so per-thread CPU figures
/// (`/proc/self/task/*/comm`) can tell the fusion threads apart.
fn name_thread(name: &str) {
    #[cfg(target_os = "linux")]
    {
        let mut buf = [0u8; 16];
        for (b, c) in buf.iter_mut().zip(name.bytes().take(15)) {
            *b = c;
        }
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from the
        // pointer; `buf` is 16 bytes and its last byte is always 0.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

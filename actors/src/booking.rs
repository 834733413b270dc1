//! `BookingLock`: one actor per clinician calendar on this node. It runs booking attempts for
//! its clinician one at a time (each attempt is a future: the database transaction), so a hot
//! calendar does not pile concurrent transactions onto the same exclusion-constraint range on
//! this node. It is an optimisation and a fairness queue, not the guard: across nodes the
//! Postgres exclusion constraint alone decides, and an attempt that loses answers 409.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use actix::prelude::*;
use uuid::Uuid;

/// A unit of work run under the lock.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Runs a job; the actor takes the next message only when it finishes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Run(pub Job);

/// Serialises one clinician's booking attempts on this node.
pub struct BookingLock {
    pub clinician_id: Uuid,
}

impl Actor for BookingLock {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<Run> for BookingLock {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Run, _: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(Box::pin(msg.0.into_actor(self)))
    }
}

/// Why a job did not run.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the booking lock stopped")]
    Stopped,
}

/// This node's booking locks, one per clinician seen, started on first use.
#[derive(Default)]
pub struct BookingLocks {
    locks: Mutex<HashMap<Uuid, Addr<BookingLock>>>,
}

impl BookingLocks {
    /// The lock for `clinician_id` (restarted if a previous one stopped).
    pub fn lock(&self, clinician_id: Uuid) -> Addr<BookingLock> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = map.get(&clinician_id) {
            if a.connected() {
                return a.clone();
            }
        }
        let addr = BookingLock { clinician_id }.start();
        map.insert(clinician_id, addr.clone());
        addr
    }

    /// Runs `work` under the clinician's lock and returns its output.
    pub async fn run<F, T>(&self, clinician_id: Uuid, work: F) -> Result<T, LockError>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::pin(async move {
            let _ = tx.send(work.await);
        });
        self.lock(clinician_id).send(Run(job)).await.map_err(|_| LockError::Stopped)?;
        rx.await.map_err(|_| LockError::Stopped)
    }

    /// How many clinicians have a lock on this node.
    pub fn len(&self) -> usize {
        self.locks.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[actix_rt::test]
    async fn jobs_for_one_clinician_never_overlap() {
        let locks = Arc::new(BookingLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let id = Uuid::new_v4();
        let mut handles = Vec::new();
        for _ in 0..20 {
            let (locks, inside, max) = (locks.clone(), inside.clone(), max.clone());
            handles.push(actix_rt::spawn(async move {
                locks
                    .run(id, async move {
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(n, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                    .map_err(|e| e.to_string())
            }));
        }
        for h in handles {
            assert!(matches!(h.await, Ok(Ok(()))));
        }
        assert_eq!(max.load(Ordering::SeqCst), 1);
        assert_eq!(locks.len(), 1);
    }
}

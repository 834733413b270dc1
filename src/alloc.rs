//! The per-request allocation budget: what bounds a request's memory, and how it is watched.
//!
//! Enforcement is by construction. Every input that sizes an allocation or a loop is bounded
//! where it is parsed (polygon points and extent, schedule windows and exceptions, slot query
//! windows, page sizes: `docs/security.md`, "Bounded work"), and where a size can only be
//! known from stored data (a re-measurement reads a whole scan) it is computed first and
//! passed to [`check`] against [`REQUEST_ALLOC_BUDGET_BYTES`] before anything is allocated.
//!
//! Measurement is [`CountingAlloc`], the global allocator of the server binary and of the
//! test binary: while a request's future is polled (the `metrics::record` middleware wraps
//! it in [`track`]) a thread-local pointer names the request's [`Account`], and every
//! allocation and free on that thread is counted against it. Work a request waits on in a
//! thread of its own carries the account there ([`current`] + [`enter`]). The middleware
//! records each request's peak into `coherency_request_alloc_peak_bytes` and warns when it
//! exceeds the budget. Outside a request (socket pumps, actors, the scan ingest path) the
//! allocator costs one thread-local read per call.
//!
//! The allocator never panics, never allocates and never unwinds: it only touches atomics
//! and a `const` thread-local with no destructor, read with `try_with` so thread teardown
//! finds it absent rather than failing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Most bytes one request may have allocated at once (its peak of live allocations made
/// while it runs). Inputs are bounded so that ordinary requests stay in kilobytes; the
/// largest is a re-measurement, which holds a whole scan's decoded frames (about 1,500
/// frames of 256×192 fit) and is refused with 413 beforehand when they would not fit. A
/// request that exceeds it anyway is logged (`request exceeded the allocation budget`).
pub const REQUEST_ALLOC_BUDGET_BYTES: usize = 512 << 20;

/// A request's allocations: bytes live now (signed: the request may free what it did not
/// allocate), the peak, and how many allocations it made.
#[derive(Debug, Default)]
pub struct Account {
    live: AtomicIsize,
    peak: AtomicUsize,
    allocations: AtomicU64,
}

impl Account {
    /// A fresh account, shared by the request's future and the threads it waits on.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Most bytes live at once while the account was current.
    pub fn peak_bytes(&self) -> usize {
        self.peak.load(Relaxed)
    }

    /// Allocations made while the account was current (0: the counting allocator is not
    /// installed in this process).
    pub fn allocations(&self) -> u64 {
        self.allocations.load(Relaxed)
    }

    fn add(&self, bytes: usize) {
        let delta = isize::try_from(bytes).unwrap_or(isize::MAX);
        let now = self.live.fetch_add(delta, Relaxed).saturating_add(delta);
        if let Ok(now) = usize::try_from(now) {
            self.peak.fetch_max(now, Relaxed);
        }
        self.allocations.fetch_add(1, Relaxed);
    }

    fn sub(&self, bytes: usize) {
        self.live.fetch_sub(isize::try_from(bytes).unwrap_or(isize::MAX), Relaxed);
    }
}

thread_local! {
    /// The account of the request this thread is working for (null: none). `const` and
    /// without a destructor, so reading it never allocates or registers anything.
    static CURRENT: Cell<*const Account> = const { Cell::new(std::ptr::null()) };
}

fn current_ptr() -> *const Account {
    CURRENT.try_with(Cell::get).unwrap_or(std::ptr::null())
}

fn with_current(f: impl FnOnce(&Account)) {
    let p = current_ptr();
    if !p.is_null() {
        // SAFETY: a non-null pointer is only installed by `Guard`, which holds an `Arc` to
        // the account for as long as the pointer stays installed.
        f(unsafe { &*p });
    }
}

/// The global allocator: the system allocator, counting against the current request's
/// [`Account`] when there is one.
pub struct CountingAlloc;

// SAFETY: every call is forwarded to `System` unchanged; the accounting only touches
// atomics and a thread-local cell, never allocates, and cannot panic.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            with_current(|a| a.add(layout.size()));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            with_current(|a| a.add(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        with_current(|a| a.sub(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            with_current(|a| {
                a.sub(layout.size());
                a.add(new_size);
            });
        }
        p
    }
}

/// Makes `account` current on this thread until the guard drops (then the previous one is
/// current again).
pub fn enter(account: &Arc<Account>) -> Guard {
    let previous = current_ptr();
    let _ = CURRENT.try_with(|c| c.set(Arc::as_ptr(account)));
    Guard { _account: account.clone(), previous }
}

/// Keeps an account current; see [`enter`].
pub struct Guard {
    _account: Arc<Account>,
    previous: *const Account,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|c| c.set(self.previous));
    }
}

/// The account current on this thread, to carry into a thread the request waits on.
pub fn current() -> Option<Arc<Account>> {
    let p = current_ptr();
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` came from `Arc::as_ptr` of an account a live `Guard` holds, so the
    // allocation is alive; taking one more strong count for the new `Arc` keeps it so.
    unsafe {
        Arc::increment_strong_count(p);
        Some(Arc::from_raw(p))
    }
}

/// Polls `fut` with `account` current: what it (and code it calls synchronously) allocates
/// counts against the account.
pub fn track<F: Future>(account: Arc<Account>, fut: F) -> Tracked<F> {
    Tracked { account, fut: Box::pin(fut) }
}

/// See [`track`].
pub struct Tracked<F> {
    account: Arc<Account>,
    fut: Pin<Box<F>>,
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _guard = enter(&self.account);
        self.fut.as_mut().poll(cx)
    }
}

/// A size computed from request input (or from data a request reads) that would take the
/// request past [`REQUEST_ALLOC_BUDGET_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} would need about {bytes} bytes, more than the {REQUEST_ALLOC_BUDGET_BYTES}-byte budget of one request")]
pub struct OverBudget {
    /// What was being sized (no PHI: a constant name).
    pub what: &'static str,
    /// The bytes it would have needed.
    pub bytes: usize,
}

/// Refuses a size over the per-request budget before it is allocated.
pub fn check(what: &'static str, bytes: usize) -> Result<(), OverBudget> {
    if bytes > REQUEST_ALLOC_BUDGET_BYTES {
        return Err(OverBudget { what, bytes });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_over_the_budget_are_refused() {
        assert!(check("x", REQUEST_ALLOC_BUDGET_BYTES).is_ok());
        let e = check("frames", REQUEST_ALLOC_BUDGET_BYTES + 1).unwrap_err();
        assert_eq!(e.what, "frames");
    }

    #[test]
    fn an_account_keeps_its_peak_and_may_go_below_zero() {
        let a = Account::new();
        a.add(100);
        a.add(50);
        a.sub(120);
        a.sub(100);
        a.add(10);
        assert_eq!(a.peak_bytes(), 150);
        assert_eq!(a.allocations(), 3);
    }

    #[test]
    fn a_guard_restores_the_previous_account() {
        let (outer, inner) = (Account::new(), Account::new());
        let g = enter(&outer);
        {
            let _g = enter(&inner);
            assert!(current().is_some_and(|c| Arc::ptr_eq(&c, &inner)));
        }
        assert!(current().is_some_and(|c| Arc::ptr_eq(&c, &outer)));
        drop(g);
        assert!(current().is_none());
    }
}

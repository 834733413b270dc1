//! Scan ingest per-frame allocations under the server's counting allocator (`src/alloc.rs`,
//! the same source file): outside any request, as the socket pumps run, and inside a
//! request's account; and single allocation calls, system vs counting, in one run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

mod common;

#[allow(dead_code, unused_imports, clippy::unwrap_used)] // the bench uses the allocator and accounts only; its tests are not built here
#[path = "../../src/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOC: alloc::CountingAlloc = alloc::CountingAlloc;

fn alloc_free(a: &dyn GlobalAlloc, layout: Layout) {
    // SAFETY: a non-zero layout, freed with the allocator and layout it came from.
    unsafe {
        let p = a.alloc(layout);
        if !p.is_null() {
            black_box(p);
            a.dealloc(p, layout);
        }
    }
}

/// Median nanoseconds per alloc/free pair of `layout` for each allocator, timed in
/// interleaved rounds so a noisy machine loads every variant alike.
fn interleaved(layout: Layout, account: &std::sync::Arc<alloc::Account>) -> [f64; 3] {
    const ROUNDS: usize = 101;
    const PAIRS: u32 = 20_000;
    let mut times: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (v, t) in times.iter_mut().enumerate() {
            let _g = (v == 2).then(|| alloc::enter(account));
            let a: &dyn GlobalAlloc = if v == 0 { &System } else { &alloc::CountingAlloc };
            let start = std::time::Instant::now();
            for _ in 0..PAIRS {
                alloc_free(a, layout);
            }
            t.push(start.elapsed().as_secs_f64() * 1e9 / f64::from(PAIRS));
        }
    }
    times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    })
}

fn main() {
    let mut c = criterion::Criterion::default().configure_from_args();
    {
        let (bytes, one) = (common::phone_frame(), alloc::Account::new());
        let _g = alloc::enter(&one);
        common::ingest(&bytes);
        println!("one frame's ingest: {} allocations, peak {} bytes", one.allocations(), one.peak_bytes());
    }
    common::bench_ingest(&mut c, "counting, no request", |f| f());
    let account = alloc::Account::new();
    for size in [64usize, 4096, 256 << 10] {
        let Ok(layout) = Layout::from_size_align(size, 8) else { continue };
        let [system, counting, in_request] = interleaved(layout, &account);
        println!(
            "alloc+free {size} B, median of 101 interleaved rounds: system {system:.1} ns, \
             counting (no request) {counting:.1} ns, counting (in a request) {in_request:.1} ns"
        );
    }
    common::bench_ingest(&mut c, "counting, in a request", |f| {
        let _g = alloc::enter(&account);
        f()
    });
    for size in [64usize, 256 << 10] {
        let Ok(layout) = Layout::from_size_align(size, 8) else { continue };
        c.bench_function(&format!("alloc_free_{size}/system"), |b| b.iter(|| alloc_free(&System, layout)));
        c.bench_function(&format!("alloc_free_{size}/counting, no request"), |b| {
            b.iter(|| alloc_free(&alloc::CountingAlloc, layout))
        });
        c.bench_function(&format!("alloc_free_{size}/counting, in a request"), |b| {
            let _g = alloc::enter(&account);
            b.iter(|| alloc_free(&alloc::CountingAlloc, layout))
        });
    }
    c.final_summary();
}

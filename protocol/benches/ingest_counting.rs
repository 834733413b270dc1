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

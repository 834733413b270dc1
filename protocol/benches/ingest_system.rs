//! Scan ingest per-frame allocations under the system allocator (the "before" of
//! `ingest_counting`). Run both: `cargo bench -p coherency-protocol --bench ingest_system
//! --bench ingest_counting`; figures in `docs/performance.md` (Allocation accounting).

mod common;

fn main() {
    let mut c = criterion::Criterion::default().configure_from_args();
    common::bench_ingest(&mut c, "system", |f| f());
    c.final_summary();
}

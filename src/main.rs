//! The `coherency` binary: parses the command line and hands over to the library.

/// Counts each request's allocations against the per-request budget (`coherency::alloc`).
#[global_allocator]
static ALLOC: coherency::alloc::CountingAlloc = coherency::alloc::CountingAlloc;

fn main() -> std::process::ExitCode {
    coherency::cli::main()
}

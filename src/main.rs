//! `relais`: see `relais --help`.

/// mimalloc instead of glibc's allocator: replays and ingest allocate and free many small
/// buffers across threads, where glibc spent about a fifth of the gateway's CPU (ADR-10 in
/// docs/ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    relais::cli::main()
}

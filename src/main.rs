//! `relais`: see `relais --help`.

fn main() -> std::process::ExitCode {
    relais::cli::main()
}

//! `sweep`: trains a grid of temperatures x MERA depths from a TOML settings file.
//! The command lives in `neuralrg::cli::sweep`, compiled once in the library for every backend.

fn main() -> std::process::ExitCode {
    neuralrg::cli::sweep::main()
}

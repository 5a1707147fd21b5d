//! `sample`: configurations from a trained run with a chosen sampler, and measurements.
//! The command lives in `neuralrg::cli::sample`, compiled once in the library for every backend.

fn main() -> std::process::ExitCode {
    neuralrg::cli::sample::main()
}

//! `analyze`: receptive fields and mutual information of a trained run (the paper's figure).
//! The command lives in `neuralrg::cli::analyze`, compiled once in the library for every backend.

fn main() -> std::process::ExitCode {
    neuralrg::cli::analyze::main()
}

//! `train`: trains NeuralRG on the Ising relaxation and writes a run folder.
//! The command lives in `neuralrg::cli::train`, compiled once in the library for every backend.

fn main() -> std::process::ExitCode {
    neuralrg::cli::train::main()
}

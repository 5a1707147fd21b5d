//! `plot`: the training monitor of a run folder, once or refreshed every `--per` seconds.
//! The command lives in `neuralrg::cli::plot`, compiled once in the library for every backend.

fn main() -> std::process::ExitCode {
    neuralrg::cli::plot::main()
}

//! `bench`: seconds per epoch, samples per second, memory and start-up per device, or `--check`.
//! The command lives in `neuralrg::cli::bench`, compiled once in the library for every backend.

fn main() {
    neuralrg::cli::bench::main()
}

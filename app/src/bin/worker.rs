//! The Web Worker the model trains in (the page starts it; see `app::worker`).

fn main() {
    app::worker::start();
}

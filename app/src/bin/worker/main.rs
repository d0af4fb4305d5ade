//! The worker: owns the model and the index. Downloads and verifies the model (sha256 of every
//! shard, shapes of every tensor) with byte-level progress, keeps its files in the Cache API so
//! the next visit loads offline, then decodes, preprocesses, embeds and indexes images and
//! answers searches. Image bytes arrive as `File`s from the page and never leave this worker:
//! the only requests it makes are for the model's files, on the app's own origin.

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the worker runs in the browser: build it with trunk (see the README)");
}

#[cfg(all(target_arch = "wasm32", not(feature = "threads")))]
fn main() {
    console_error_panic_hook::set_once();
    dispatch::start();
}

/// The threaded build: its loader (`app/threads-loader.js`) starts the rayon pool first
/// (`initThreadPool`), then calls [`start`]. `main` runs on the worker's first thread only.
#[cfg(all(target_arch = "wasm32", feature = "threads"))]
fn main() {
    console_error_panic_hook::set_once();
}

#[cfg(all(target_arch = "wasm32", feature = "threads"))]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn start() {
    dispatch::start();
}

// Links the pool's exports (`initThreadPool`, and the entry its web workers call) into this bin.
#[cfg(all(target_arch = "wasm32", feature = "threads"))]
pub use wasm_bindgen_rayon::init_thread_pool;

#[cfg(target_arch = "wasm32")]
mod add;
#[cfg(target_arch = "wasm32")]
mod dispatch;
#[cfg(target_arch = "wasm32")]
mod lab;
#[cfg(target_arch = "wasm32")]
mod model;
#[cfg(target_arch = "wasm32")]
mod models_local;
#[cfg(target_arch = "wasm32")]
mod query;
#[cfg(target_arch = "wasm32")]
mod state;
#[cfg(target_arch = "wasm32")]
mod store;

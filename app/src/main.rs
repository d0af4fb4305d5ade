//! The UI (main thread). Everything heavy happens in the worker (`src/bin/worker/`); this side
//! renders, collects files from drops and pickers, and turns worker events into signals. One
//! module per view under `src/ui/`.

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the app runs in the browser: `bash scripts/run.sh` builds and serves it");
}

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(ui::App);
}

#[cfg(target_arch = "wasm32")]
mod ui;

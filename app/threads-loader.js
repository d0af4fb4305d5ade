// The threaded CPU worker's entry (a module worker; scripts/threads.sh copies it to the app's root
// as worker-threads.js, beside the wasm-bindgen output in worker-threads/). It instantiates the worker on a shared memory,
// starts the rayon pool (wasm-bindgen-rayon: one web worker a thread, all on that memory), then
// starts the worker's message loop, which greets the page. `?threads=N` sets the pool's size
// (the page passes it through); by default, one thread per logical core the browser reports.
import init, { initThreadPool, start } from "./worker-threads/worker.js";
import "./inflate.js";

const asked = Number(new URL(import.meta.url).searchParams.get("threads"));
const threads = Number.isInteger(asked) && asked > 0 ? asked : Math.max(1, navigator.hardwareConcurrency || 1);
await init({ module_or_path: self.obscuraWasm("./worker-threads/worker_bg.wasm.gz") });
await initThreadPool(threads);
start();

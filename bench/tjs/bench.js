// Main thread: reads the parameters from the query string, runs worker.js (a module worker) with
// them, and writes its JSON result into <pre id=result> (data-done="1" when finished, ok or not)
// and document.title ("done" / "error").
const q = new URLSearchParams(location.search);
const params = {
  device: q.get("device") ?? "wasm", // wasm | webgpu
  dtype: q.get("dtype") ?? "fp32", // fp32 | q8
  threads: Number(q.get("threads") ?? 1),
  batch: Number(q.get("batch") ?? 8),
  iters: Number(q.get("iters") ?? 3),
  model: q.get("model") ?? "clip-vit-b32-random",
};
const log = document.getElementById("log");
const out = document.getElementById("result");
const finish = (result) => {
  out.textContent = JSON.stringify(result);
  out.dataset.done = "1";
  document.title = result.error ? "error" : "done";
};
const worker = new Worker(new URL("worker.js", import.meta.url), { type: "module" });
worker.onmessage = ({ data }) => {
  if (data.type === "log") log.textContent += data.text + "\n";
  else finish({ ...params, crossOriginIsolated, ...(data.type === "result" ? data.result : { error: data.error }) });
};
worker.onerror = (e) => finish({ ...params, crossOriginIsolated, error: `worker error: ${e.message ?? e}` });
worker.postMessage(params);

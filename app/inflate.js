// Loads a worker build's wasm from its gzip copy (scripts/compress.sh writes NAME.wasm.gz beside
// NAME.wasm): fetched compressed, inflated as it streams in (DecompressionStream) and handed to
// wasm-bindgen as a Response, so the browser compiles it while it arrives. A host that sends
// files as they are (no Content-Encoding) then sends the WebGPU worker in 4 MB, not 14.
// Both workers load it: the WebGPU/one-thread worker's classic loader with importScripts, the
// threaded worker's module loader with import (it defines one global either way).
self.obscuraWasm = async (url) => {
  url = new URL(url, self.location.href);
  // Browsers without DecompressionStream (Safari before 16.4) take the uncompressed file.
  if (typeof DecompressionStream !== "function") return fetch(new URL(url.href.replace(/\.gz$/, "")));
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url.pathname}: HTTP ${r.status}`);
  // The bytes say what arrived, not the headers: gzip (1f 8b) as stored, or wasm already
  // inflated by the browser where the host labelled the file Content-Encoding: gzip (a host that
  // compresses .gz files again on the fly sends the same header over gzip bytes).
  const reader = r.body.getReader();
  const first = await reader.read();
  const head = first.value ?? new Uint8Array(0);
  const body = new ReadableStream({
    start: (c) => (first.done ? c.close() : c.enqueue(head)),
    pull: async (c) => {
      const { done, value } = await reader.read();
      done ? c.close() : c.enqueue(value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
  const gzip = head[0] === 0x1f && head[1] === 0x8b;
  return new Response(gzip ? body.pipeThrough(new DecompressionStream("gzip")) : body, { headers: { "Content-Type": "application/wasm" } });
};

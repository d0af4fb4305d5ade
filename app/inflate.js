// Loads a worker build's wasm from its gzip copy (scripts/compress.sh writes NAME.wasm.gz beside
// NAME.wasm): fetched compressed, inflated as it streams in (DecompressionStream) and handed to
// wasm-bindgen as a Response, so the browser compiles it while it arrives. A host that sends
// files as they are (no Content-Encoding) then sends the WebGPU worker in 4 MB, not 14.
// Both workers load it: the WebGPU/one-thread worker's classic loader with importScripts, the
// threaded worker's module loader with import (it defines one global either way).
self.obscuraWasm = async (url) => {
  url = new URL(url, self.location.href);
  const raw = new URL(url.href.replace(/\.gz$/, ""));
  // Browsers without DecompressionStream (Safari before 16.4) take the uncompressed file.
  if (typeof DecompressionStream !== "function") return fetch(raw);
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url.pathname}: HTTP ${r.status}`);
  // A server that labels .gz files Content-Encoding: gzip has the browser inflate them already.
  const inflated = /gzip/i.test(r.headers.get("Content-Encoding") ?? "");
  const body = inflated ? r.body : r.body.pipeThrough(new DecompressionStream("gzip"));
  return new Response(body, { headers: { "Content-Type": "application/wasm" } });
};

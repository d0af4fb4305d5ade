// The benchmark proper, in a dedicated module worker: transformers.js (the npm package's browser
// bundle, which includes onnxruntime-web's JS) served from this origin by run.mjs under
// /transformers/, onnxruntime-web's wasm files under /ort/, the models (export.py) under /models/.
import { env, AutoProcessor, CLIPVisionModelWithProjection, RawImage } from "/transformers/transformers.js";

const say = (text) => postMessage({ type: "log", text });
const now = () => performance.now();

self.onmessage = async ({ data: p }) => {
  try {
    postMessage({ type: "result", result: await run(p) });
  } catch (e) {
    postMessage({ type: "error", error: String(e?.stack ?? e) });
  }
};

async function run({ device, dtype, threads, batch, iters, model }) {
  // Local files only; no Cache Storage copies (each run is a fresh profile anyway).
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = "/models/";
  env.useBrowserCache = false;
  env.useWasmCache = false;
  // transformers.js' default is the asyncify build (fetched from a CDN); same files, served here.
  // More than 1 thread needs crossOriginIsolated (COOP/COEP, which run.mjs' server sends).
  const ort = env.backends.onnx.wasm;
  ort.wasmPaths = { mjs: "/ort/ort-wasm-simd-threaded.asyncify.mjs", wasm: "/ort/ort-wasm-simd-threaded.asyncify.wasm" };
  ort.numThreads = threads;
  let adapter = null;
  if (device === "webgpu") {
    const a = await navigator.gpu?.requestAdapter();
    if (!a) throw new Error("no WebGPU adapter");
    adapter = a.info ? `${a.info.vendor} ${a.info.architecture} ${a.info.description}`.trim() : "?";
  }

  let t = now();
  const processor = await AutoProcessor.from_pretrained(model);
  const vision = await CLIPVisionModelWithProjection.from_pretrained(model, { device, dtype });
  const load_ms = now() - t;
  say(`loaded ${model} (${device}, ${dtype}, ${threads} thread(s)) in ${load_ms.toFixed(0)} ms`);

  // `batch` random 224x224 RGB images (the model's input size: resize and crop are no-ops).
  const images = Array.from({ length: batch }, () => {
    const px = new Uint8ClampedArray(224 * 224 * 3);
    for (let i = 0; i < px.length; i++) px[i] = Math.random() * 256;
    return new RawImage(px, 224, 224, 3);
  });
  // End to end, as an app would call it: preprocessing + model, embeddings back on the CPU.
  const encode = async () => {
    const inputs = await processor(images);
    const { image_embeds } = await vision(inputs);
    if (image_embeds.dims.join() !== `${batch},512`) throw new Error(`image_embeds dims ${image_embeds.dims}`);
    return image_embeds;
  };

  t = now();
  await encode(); // warm-up (WebGPU: shader compilation)
  const warmup_ms = now() - t;
  say(`warm-up batch: ${warmup_ms.toFixed(0)} ms`);
  const batch_ms = [];
  for (let i = 0; i < iters; i++) {
    t = now();
    await encode();
    batch_ms.push(now() - t);
    say(`batch ${i + 1}/${iters}: ${batch_ms[i].toFixed(0)} ms`);
  }
  const total = batch_ms.reduce((a, b) => a + b, 0);
  return {
    images_per_s: (iters * batch * 1000) / total,
    ms_per_image: total / (iters * batch),
    batch_ms: batch_ms.map(Math.round),
    load_ms: Math.round(load_ms),
    warmup_ms: Math.round(warmup_ms),
    worker_isolated: self.crossOriginIsolated,
    hardware_concurrency: navigator.hardwareConcurrency,
    adapter,
    transformers: env.version,
    onnxruntime_web: env.backends.onnx.versions?.web,
  };
}

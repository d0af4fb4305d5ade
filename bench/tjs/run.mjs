// transformers.js CLIP image-encode benchmark: serves this folder, the npm package's browser
// files and the exported models (export.py) on 127.0.0.1 with COOP/COEP headers (cross-origin
// isolated: onnxruntime-web may use >1 thread), runs index.html in headless Chromium once per
// configuration (a fresh browser each time) and prints one Markdown table.
//
//   node bench/tjs/run.mjs [--configs wasm-fp32-1,wasm-q8-2,webgpu-q8] [--iters 3] [--batch 8]
//                          [--timeout-min 60] [--models DIR]
//
// A configuration is DEVICE-DTYPE[-THREADS]: wasm|webgpu, fp32|q8, onnxruntime-web's wasm threads
// (default 1; on WebGPU they only run the ops that fall back to the CPU). WebGPU is SwiftShader's
// (Vulkan on the CPU), as in tests/browser. Progress goes to stderr, the table to stdout.
import { createServer } from "node:http";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { dirname, extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "../..");
const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const CONFIGS = (args.configs ?? "wasm-fp32-1,wasm-fp32-2,wasm-q8-1,wasm-q8-2,webgpu-fp32,webgpu-q8").split(",");
const ITERS = Number(args.iters ?? 3);
const BATCH = Number(args.batch ?? 8);
const TIMEOUT_MS = Number(args["timeout-min"] ?? 60) * 60_000; // per configuration
const MODELS = resolve(args.models ?? join(ROOT, "target/tjs/tjs"));

// URL prefix -> folder.
const ROUTES = [
  ["/transformers/", join(HERE, "node_modules/@huggingface/transformers/dist")],
  ["/ort/", join(HERE, "node_modules/onnxruntime-web/dist")],
  ["/models/", MODELS],
  ["/", HERE],
];
const MIME = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json" };
const HEADERS = {
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "require-corp",
  "cross-origin-resource-policy": "same-origin",
  "cache-control": "no-store",
};

const server = createServer(async (req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
  const [prefix, dir] = ROUTES.find(([p]) => path.startsWith(p));
  const file = join(dir, path.slice(prefix.length) || "index.html");
  try {
    if (!file.startsWith(dir)) throw new Error("outside");
    const info = await stat(file);
    if (!info.isFile()) throw new Error("not a file");
    res.writeHead(200, { ...HEADERS, "content-type": MIME[extname(file)] ?? "application/octet-stream", "content-length": info.size });
    if (req.method === "HEAD") return res.end();
    createReadStream(file).pipe(res);
  } catch {
    console.error(`  [server] 404 ${req.method} ${req.url}`); // transformers.js probes optional files
    res.writeHead(404, HEADERS).end();
  }
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const origin = `http://127.0.0.1:${server.address().port}`;

const FLAGS = ["--no-sandbox", "--disable-gpu-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const WEBGPU = ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader", "--use-webgpu-adapter=swiftshader", "--enable-unsafe-swiftshader"];

async function runOne(spec) {
  const [device, dtype, threads = "1"] = spec.split("-");
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: device === "webgpu" ? [...FLAGS, ...WEBGPU] : FLAGS,
  });
  try {
    const page = await browser.newPage();
    const show = (where) => (m) => ["error", "warning"].includes(m.type()) && console.error(`  [${where}] ${m.text()}`);
    page.on("console", show("page"));
    page.on("worker", (w) => w.on("console", show("worker")));
    page.on("pageerror", (e) => console.error(`  [page error] ${e.message}`));
    page.on("crash", () => console.error("  [page crashed]"));
    const query = new URLSearchParams({ device, dtype, threads, batch: BATCH, iters: ITERS });
    await page.goto(`${origin}/index.html?${query}`);
    // Progress lines from the worker, as they come.
    let shown = 0;
    const poll = setInterval(async () => {
      const lines = (await page.textContent("#log").catch(() => "")) ?? "";
      const all = lines.split("\n").filter(Boolean);
      for (const l of all.slice(shown)) console.error(`  ${spec}: ${l}`);
      shown = all.length;
    }, 2000);
    try {
      await page.waitForSelector("#result[data-done]", { state: "attached", timeout: TIMEOUT_MS });
    } finally {
      clearInterval(poll);
    }
    return JSON.parse(await page.textContent("#result"));
  } catch (e) {
    return { device, dtype, threads: Number(threads), error: String(e.message ?? e).split("\n")[0] };
  } finally {
    await browser.close();
  }
}

const rows = [];
for (const spec of CONFIGS) {
  console.error(`== ${spec} (batch ${BATCH}, ${ITERS} timed batch(es))`);
  const r = await runOne(spec);
  console.error(`  ${spec}: ${JSON.stringify(r)}`);
  rows.push([spec, r]);
}
server.close();

const versions = rows.map(([, r]) => r).find((r) => r.transformers);
const isolated = rows.map(([, r]) => r).find((r) => r.crossOriginIsolated !== undefined);
console.log(
  `transformers.js ${versions?.transformers ?? "?"}, onnxruntime-web ${versions?.onnxruntime_web ?? "?"}, ` +
    `Chromium headless, batch ${BATCH}, ${ITERS} timed batch(es) after 1 warm-up, ` +
    `crossOriginIsolated ${isolated?.crossOriginIsolated}, full-size random CLIP ViT-B/32 image tower (+ projection), ` +
    `end to end (preprocessing + model)\n`,
);
console.log("| backend | dtype | threads | images/s | ms/image | batch times (ms) | load (s) | warm-up (s) |");
console.log("| --- | --- | --- | ---: | ---: | --- | ---: | ---: |");
for (const [, r] of rows) {
  const backend = r.device === "webgpu" ? "WebGPU (SwiftShader)" : "wasm";
  if (r.error) {
    console.log(`| ${backend} | ${r.dtype} | ${r.threads} | failed: ${r.error.split("\n")[0].replace(/\|/g, "/")} | | | | |`);
    continue;
  }
  console.log(
    `| ${backend} | ${r.dtype} | ${r.threads} | ${r.images_per_s.toFixed(2)} | ${r.ms_per_image.toFixed(0)} | ` +
      `${r.batch_ms.join(", ")} | ${(r.load_ms / 1000).toFixed(1)} | ${(r.warmup_ms / 1000).toFixed(1)} |`,
  );
}
process.exit(rows.some(([, r]) => r.error) ? 1 : 0);

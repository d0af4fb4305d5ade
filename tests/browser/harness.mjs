// What the browser tests share: command-line arguments, a plain static server of dist/ that
// records every request it answers, and headless Chromium (WebGPU on SwiftShader, or without
// WebGPU so the app runs on its CPU backend) with a recorder of every request the page makes.

import { createServer } from "node:http";
import { readFile, stat } from "node:fs/promises";
import { join, extname, normalize } from "node:path";
import { chromium } from "playwright-core";

export function parseArgs(argv = process.argv.slice(2)) {
  return Object.fromEntries(argv.reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));
}

/// `check(ok, what)` prints and counts; `failures()` says how many failed.
export function checker() {
  let failed = 0;
  const check = (ok, what) => {
    console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
    if (!ok) failed++;
    return ok;
  };
  return { check, failures: () => failed };
}

const MIME = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".css": "text/css", ".json": "application/json", ".jpg": "image/jpeg", ".png": "image/png", ".svg": "image/svg+xml" };

/// COOP/COEP: what a host sends to make the page cross-origin isolated (run.sh's trunk serve, a
/// Hugging Face Space's `custom_headers`).
export const ISOLATION = { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" };

/// Serves `dist` like a typical static host (an ETag on every file, revalidated on each use),
/// with COOP/COEP headers when `isolated`. `served` lists every request answered, `bytes` the
/// bytes of the bodies sent.
export async function serve(dist, { isolated = true } = {}) {
  const served = [];
  const state = { served, bytes: 0 };
  const server = createServer(async (req, res) => {
    const entry = { method: req.method, url: req.url, bytes: 0 };
    served.push(entry);
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^\/+/, "");
    const file = join(dist, path === "" ? "index.html" : path);
    if (!file.startsWith(dist)) return res.writeHead(403).end();
    try {
      const info = await stat(file);
      const etag = `"${info.size}-${info.mtimeMs}"`;
      const headers = { "content-type": MIME[extname(file)] ?? "application/octet-stream", etag, "cache-control": "no-cache", ...(isolated ? ISOLATION : {}) };
      if (req.headers["if-none-match"] === etag) return res.writeHead(304, headers).end();
      const body = await readFile(file);
      state.bytes += body.length;
      entry.bytes = body.length;
      res.writeHead(200, headers).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  state.origin = `http://127.0.0.1:${server.address().port}`;
  state.close = () => server.close();
  state.bytesBy = (pred) => served.filter((r) => pred(r.url)).reduce((a, r) => a + r.bytes, 0);
  return state;
}

const FLAGS = ["--no-sandbox", "--disable-gpu-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const WEBGPU = ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader", "--use-webgpu-adapter=swiftshader", "--enable-unsafe-swiftshader"];

/// Chromium with one page; `requests` fills with every request the page (and its workers) make.
/// `serviceWorkers: "block"` keeps the app's service worker out (a page that stays not isolated);
/// `profile`, a directory, makes a persistent profile (disk cache, storage) that a later launch
/// with the same directory finds again.
export async function launch(backend, { serviceWorkers = "allow", profile } = {}) {
  const options = {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: backend === "webgpu" ? [...FLAGS, ...WEBGPU] : [...FLAGS, "--disable-features=WebGPU"],
  };
  const contextOptions = { acceptDownloads: true, serviceWorkers };
  const context = profile ? await chromium.launchPersistentContext(profile, { ...options, ...contextOptions }) : await (await chromium.launch(options)).newContext(contextOptions);
  const browser = profile ? context : context.browser();
  const requests = [];
  context.on("request", (r) => requests.push({ url: r.url(), method: r.method(), body: r.postDataBuffer()?.length ?? 0, request: r }));
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => m.type() === "error" && console.log(`  [page] ${m.text()}`));
  page.on("pageerror", (e) => console.log(`  [page error] ${e.message}`));
  page.on("crash", () => console.log("  [page crashed]"));
  page.on("worker", (w) => w.on("console", (m) => m.type() === "error" && console.log(`  [worker] ${m.text()}`)));
  return { browser, context, page, requests };
}

/// Closes the browser and the server, then exits: 1 if any check failed.
export async function finish({ browser, server, failures }) {
  await browser.close();
  server.close();
  if (failures()) {
    console.log(`${failures()} check(s) failed`);
    process.exit(1);
  }
  console.log("all checks passed");
}

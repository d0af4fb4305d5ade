// Time and peak memory of "Add a model from this computer" on a full-size checkpoint in headless
// Chromium (CPU backend, as on a machine without WebGPU): one fresh browser per run, so each
// renderer's peak resident size (VmHWM, read from /proc) is that run's alone. The worker's wasm
// memory (it only grows) is what the app reports when the import ends.
//
//   node bench/model_import.mjs --dist dist --checkpoint DIR [--dtypes q8,f32] [--formats safetensors,bin]
//
// DIR: a Hugging Face checkpoint with both model.safetensors and pytorch_model.bin
// (cargo run --release -p weights-tool --example random_clip -- DIR vit-b32 both).

import { createServer } from "node:http";
import { readFile, readdir, stat, mkdir, symlink, rm } from "node:fs/promises";
import { join, extname, resolve, normalize } from "node:path";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";

const require = createRequire(new URL("../tests/browser/package.json", import.meta.url));
const { chromium } = require("playwright-core");
const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));
const dist = resolve(args.dist ?? "dist");
const ckpt = resolve(args.checkpoint);
const dtypes = (args.dtypes ?? "q8,f32").split(",");
const formats = (args.formats ?? "safetensors,bin").split(",");

const MIME = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".css": "text/css", ".json": "application/json" };
const server = createServer(async (req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^\/+/, "");
  const file = join(dist, path === "" ? "index.html" : path);
  try {
    await stat(file);
    res.writeHead(200, { "content-type": MIME[extname(file)] ?? "application/octet-stream" }).end(await readFile(file));
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const origin = `http://127.0.0.1:${server.address().port}`;

async function rendererPeaks() {
  const out = [];
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const cmd = await readFile(`/proc/${pid}/cmdline`, "utf8");
      if (!cmd.includes("--type=renderer")) continue;
      const status = await readFile(`/proc/${pid}/status`, "utf8");
      out.push(Number(/VmHWM:\s+(\d+)/.exec(status)[1]) * 1024);
    } catch {}
  }
  return out;
}

const mb = (b) => (b / 1e6).toFixed(0);
console.log("| weights file | size | dtype | import (s) | worker wasm memory | renderer peak RSS | peak / file |");
console.log("|---|---|---|---|---|---|---|");
for (const format of formats) {
  const weights = format === "bin" ? "pytorch_model.bin" : "model.safetensors";
  const size = (await stat(join(ckpt, weights))).size;
  // The folder the user picks: only this format's weights.
  const dir = join(tmpdir(), `obscura-bench-${format}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir);
  for (const f of ["config.json", "tokenizer.json", weights]) await symlink(join(ckpt, f), join(dir, f));
  for (const dtype of dtypes) {
    const browser = await chromium.launch({
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox", "--disable-gpu-sandbox", "--no-first-run", "--disable-features=WebGPU"],
    });
    const page = await browser.newPage();
    await page.goto(origin + "/");
    await page.waitForFunction(() => /^ready/.test(document.querySelector('[data-testid="model-status"]')?.textContent ?? ""), null, { timeout: 300_000 });
    const before = Math.max(...(await rendererPeaks()));
    await page.locator(".add-model summary").click();
    await page.getByTestId("model-dtype").selectOption(dtype);
    const t0 = Date.now();
    await page.getByTestId("model-import").setInputFiles(["config.json", "tokenizer.json", weights].map((f) => join(dir, f)));
    await page.waitForFunction(() => document.querySelector('[data-testid="model-import-note"]') || document.querySelector('[data-testid="model-import-error"]') || document.querySelector('[data-testid="model-keep"]'), null, { timeout: 1_800_000 });
    const wall = (Date.now() - t0) / 1000;
    const err = await page.getByTestId("model-import-error").textContent().catch(() => null);
    const note = page.getByTestId("model-import-note");
    const fidelity = await page.getByTestId("model-fidelity").textContent().catch(() => "");
    const peak = Math.max(...(await rendererPeaks()));
    if (err) {
      console.log(`| ${weights} | ${mb(size)} MB | ${dtype} | failed: ${err} |`);
    } else {
      const seconds = Number(await note.getAttribute("data-seconds").catch(() => wall));
      const wasm = Number(await note.getAttribute("data-wasm-memory").catch(() => 0));
      console.log(`| ${weights} | ${mb(size)} MB | ${dtype} | ${seconds.toFixed(1)} | ${mb(wasm)} MB | ${mb(peak)} MB (${mb(before)} MB before) | ${(peak / size).toFixed(2)}x |`);
      console.error(`  ${fidelity.trim()}`);
    }
    await browser.close();
  }
}
server.close();

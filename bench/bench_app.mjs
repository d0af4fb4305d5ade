// The app measured in headless Chromium, as a user meets it on a fresh profile: page load →
// model ready, indexing N images (images/s), the first text query, and so the time to the first
// result; on the threaded CPU worker at 1 and 2 threads (isolated page), the one-thread worker
// (page not isolated), and WebGPU (SwiftShader). Run by bench/bench_app.sh, which builds the
// release app and the full-size model; not part of CI.
//
//   node bench/bench_app.mjs --dist DIST --images DIR --n 200 --label "demo (q8, 96 px)" [--configs t1,t2,single,webgpu]

import { readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { launch, parseArgs, serve } from "../tests/browser/harness.mjs";

const args = parseArgs();
const dist = resolve(args.dist);
const n = Number(args.n ?? 200);
const dir = resolve(args.images);
const images = (await readdir(dir)).filter((f) => /\.(jpe?g|png)$/i.test(f)).sort().slice(0, n).map((f) => join(dir, f));
const configs = (args.configs ?? "t1,t2,single,webgpu").split(",");
const CONFIG = {
  t1: { what: "CPU, threaded build, 1 thread", backend: "cpu", isolated: true, query: "?threads=1" },
  t2: { what: "CPU, threaded build, 2 threads", backend: "cpu", isolated: true, query: "?threads=2" },
  t3: { what: "CPU, threaded build, 3 threads", backend: "cpu", isolated: true, query: "?threads=3" },
  auto: { what: "CPU, threaded build, default (one per logical core)", backend: "cpu", isolated: true, query: "" },
  single: { what: "CPU, one-thread build (page not isolated)", backend: "cpu", isolated: false, query: "" },
  webgpu: { what: "WebGPU (SwiftShader)", backend: "webgpu", isolated: true, query: "" },
};

const rows = [];
for (const key of configs) {
  const c = CONFIG[key];
  const server = await serve(dist, { isolated: c.isolated });
  const { browser, page } = await launch(c.backend, { serviceWorkers: "block" });
  // The worker's account of an add (app/src/bin/worker/add.rs `Stages`): ms per stage, and each
  // encoder call's ms.
  let stages = null;
  page.on("worker", (w) => w.on("console", (m) => {
    const t = m.text();
    if (!t.startsWith("obscura: indexed")) return;
    const num = (re) => Number(t.match(re)?.[1]);
    const batches = (t.match(/batches of \d+: ([\d ]+)\)/)?.[1] ?? "").trim().split(/\s+/).map(Number);
    stages = { read: num(/read (\d+)/), decode: num(/thumbnail (\d+)/), encode: num(/encode (\d+)/), store: num(/store (\d+)/), batches };
  }));
  try {
    const t0 = Date.now();
    await page.goto(server.origin + "/" + c.query);
    await page.waitForFunction(() => /ready/i.test(document.querySelector('[data-testid="status"]')?.textContent ?? "") && /webgpu|cpu/.test(document.querySelector('[data-testid="backend"]')?.textContent ?? ""), null, { timeout: 600_000 });
    const ready = (Date.now() - t0) / 1000;
    const badge = await page.getByTestId("backend").textContent();
    const t1 = Date.now();
    await page.getByTestId("file-input").setInputFiles(images);
    await page.waitForFunction((k) => document.querySelector('[data-testid="image-count"]')?.textContent === String(k) && !document.querySelector("progress"), images.length, { timeout: 3_600_000 });
    const index = (Date.now() - t1) / 1000;
    const t2 = Date.now();
    await page.getByTestId("search-input").fill("lymphocytes");
    await page.getByTestId("search-input").press("Enter");
    // The results' heading (a random model may score every image under the similarity threshold).
    await page.waitForFunction(() => /lymphocytes/.test(document.querySelector(".results h2")?.textContent ?? ""), null, { timeout: 600_000 });
    const query = (Date.now() - t2) / 1000;
    const row = { config: c.what, badge, ready, index, perSecond: images.length / index, query, first: (Date.now() - t0) / 1000, stages };
    // The encoder alone at batch 8, as bench/tjs times transformers.js: the calls after the first
    // (warm-up), full batches only.
    const timed = (stages?.batches ?? []).slice(1, Math.floor(images.length / 8));
    if (timed.length) row.encodePerSecond = (timed.length * 8 * 1000) / timed.reduce((a, b) => a + b, 0);
    console.error(JSON.stringify(row));
    rows.push(row);
  } catch (e) {
    console.error(`${key}: ${e.message}`);
    rows.push({ config: c.what, badge: `failed: ${e.message.split("\n")[0]}` });
  } finally {
    await browser.close();
    server.close();
  }
}
console.log(`\n${args.label ?? ""}: ${images.length} images\n`);
console.log("| configuration | badge | page load → model ready | indexing | images/s | encoder alone, batch 8, images/s | read / decode+preprocess+thumbnail / encode / index+store, ms | first query | time to first result |");
console.log("|---|---|---|---|---|---|---|---|---|");
for (const r of rows) {
  const f = (x, d = 1) => (x === undefined ? "—" : x.toFixed(d));
  const st = r.stages ? `${r.stages.read} / ${r.stages.decode} / ${r.stages.encode} / ${r.stages.store}` : "—";
  console.log(`| ${r.config} | \`${r.badge}\` | ${f(r.ready)} s | ${f(r.index)} s | **${f(r.perSecond, 2)}** | ${f(r.encodePerSecond, 2)} | ${st} | ${f(r.query, 2)} s | ${f(r.first)} s |`);
}

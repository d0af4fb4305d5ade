// The app in headless Chromium, driven as a user would: load the demo model, add the demo
// collection (plus broken files) through the file input, search each class, click a result for
// similar images, classify zero-shot and export the CSV, filter by label, remove an image, reload
// (the collection must come back from the browser's storage), export, clear, import (same
// results), refuse a damaged import, and reload in the middle of indexing (only the images in
// flight may be lost). Checked against the truth in public/samples/manifest.json and against the
// scores `weights-tool embed` computes natively for the same model (|Δ| ≤ 1e-4).
//
// A network recorder fails the run if any request leaves the app's origin, is not a GET, or
// carries a body (image bytes, thumbnails or embeddings would have to).
//
//   node tests/browser/app.test.mjs --dist dist --native native.json --backend webgpu|cpu [--isolation headers|none]
//
// `--backend webgpu` starts Chromium with WebGPU on SwiftShader; `cpu` starts it without WebGPU,
// so the app must fall back to its CPU backend and say so. `--isolation headers` (the default)
// serves COOP/COEP headers, so on the CPU the page runs the threaded worker (one thread per core);
// `none` sends none and keeps the service worker out, so the page stays not cross-origin isolated
// and runs the one-thread worker, and its badge says why.

import { readFile, mkdtemp, writeFile, readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { tmpdir } from "node:os";
import { checker, finish, launch, parseArgs, serve } from "./harness.mjs";
import { checkPrivacy } from "./privacy.mjs";

const args = parseArgs();
const root = resolve(new URL("../..", import.meta.url).pathname);
const dist = resolve(args.dist ?? join(root, "dist"));
const backend = args.backend ?? "webgpu";
const isolated = (args.isolation ?? "headers") === "headers";
const native = JSON.parse(await readFile(args.native, "utf8"));
const samples = join(root, "public", "samples");
const manifest = JSON.parse(await readFile(join(samples, "manifest.json"), "utf8"));
const truth = Object.fromEntries(manifest.map((m) => [m.file, m.class]));
const CLASSES = [...new Set(manifest.map((m) => m.class))];

const { check, failures } = checker();
// Like a typical static host: an ETag on every file, revalidated on each use (304 when unchanged).
const server = await serve(dist, { isolated });
const { served, origin } = server;
const { browser, context, page, requests } = await launch(backend, { serviceWorkers: isolated ? "allow" : "block" });
page.on("worker", (w) => w.on("close", () => console.log("  [worker closed]")));

const started = Date.now();
try {
  await page.goto(origin + "/");
  const badge = page.getByTestId("backend");
  await page.waitForFunction(() => /webgpu|cpu/.test(document.querySelector('[data-testid="backend"]')?.textContent ?? ""), null, { timeout: 600_000 });
  const badgeText = await badge.textContent();
  check(badgeText.startsWith(backend), `backend badge says ${backend}: "${badgeText}"`);
  if (backend === "cpu") {
    const cores = await page.evaluate(() => navigator.hardwareConcurrency);
    const pageIsolated = await page.evaluate(() => self.crossOriginIsolated);
    check(pageIsolated === isolated, `the page is ${isolated ? "" : "not "}cross-origin isolated`);
    const want = isolated ? `cpu · ${cores} thread${cores === 1 ? "" : "s"}` : "cpu · 1 thread · page not cross-origin isolated";
    check(badgeText === want, `the badge gives the CPU path's threads: "${badgeText}" (want "${want}")`);
  }
  if (backend === "webgpu") {
    const detail = (await badge.getAttribute("title")) ?? "";
    check(/\b(f16|f32) compute$/.test(detail), `the badge's title says which float type WebGPU computes in: "${detail}"`);
  }
  const firstModel = (Date.now() - started) / 1000;
  const firstVisitBytes = server.bytes;

  // The demo collection plus files that must be skipped and listed, not abort the batch.
  const junk = await mkdtemp(join(tmpdir(), "obscura-junk-"));
  const firstJpeg = await readFile(join(samples, manifest[0].file));
  await writeFile(join(junk, "truncated.jpg"), firstJpeg.subarray(0, 600));
  await writeFile(join(junk, "notes.txt"), "not an image\n");
  await writeFile(join(junk, "empty.png"), "");
  await writeFile(join(junk, "copy-of-first.jpg"), firstJpeg);
  const files = (await readdir(samples)).filter((f) => f.endsWith(".jpg")).sort().map((f) => join(samples, f));
  const t0 = Date.now();
  await page.getByTestId("file-input").setInputFiles([...files, ...["truncated.jpg", "notes.txt", "empty.png", "copy-of-first.jpg"].map((f) => join(junk, f))]);
  const ticker = setInterval(async () => {
    const p = await page.locator(".drop .progress").textContent().catch(() => null);
    if (p) console.log(`  … ${p.trim()}`);
  }, 20_000);
  await page
    .waitForFunction((n) => document.querySelector('[data-testid="image-count"]')?.textContent === String(n) && !document.querySelector("progress"), files.length, { timeout: 900_000 })
    .finally(() => clearInterval(ticker));
  const indexSeconds = (Date.now() - t0) / 1000;
  check(true, `indexed ${files.length} images in ${indexSeconds.toFixed(1)} s (${(files.length / indexSeconds).toFixed(1)} images/s)`);
  const skipped = await page.$$eval('[data-testid="skipped"]', (els) => els.map((e) => e.getAttribute("data-file") + ": " + e.textContent));
  for (const name of ["truncated.jpg", "notes.txt", "empty.png", "copy-of-first.jpg"]) {
    check(skipped.some((s) => s.startsWith(name + ":")), `${name} is listed as skipped: ${skipped.find((s) => s.startsWith(name)) ?? "missing"}`);
  }

  // Text search, one query per class: mostly that class on top, scores equal to native.
  const nativeScore = (file, text) => {
    const img = native.images.find((i) => i.path.endsWith("/" + file));
    const txt = native.texts.find((t) => t.text === text);
    return img.embedding.reduce((s, x, k) => s + x * txt.embedding[k], 0);
  };
  let worstDelta = 0;
  const searchMillis = [];
  for (const cls of CLASSES) {
    const text = `an H&E image of ${cls}.`;
    await page.getByTestId("search-input").fill(cls);
    const q0 = Date.now();
    await page.getByTestId("search-input").press("Enter");
    await page.waitForFunction((t) => document.querySelector(".results h2")?.textContent === `“${t}”`, text);
    searchMillis.push(Date.now() - q0);
    const top = await page.$$eval('[data-testid="result"]', (els) => els.slice(0, 10).map((e) => [e.dataset.file, Number(e.dataset.score)]));
    const hits = top.filter(([f]) => truth[f] === cls).length;
    check(top.length === 10 && hits >= 8, `"${cls}": ${hits}/10 of the top results are ${cls}`);
    for (const [f, s] of top) worstDelta = Math.max(worstDelta, Math.abs(s - nativeScore(f, text)));
  }
  check(worstDelta <= 1e-4, `scores equal weights-tool embed's (max |Δ| ${worstDelta.toExponential(2)})`);
  console.log(`  text search, Enter to results: first ${searchMillis[0]} ms, median ${searchMillis.sort((a, b) => a - b)[4]} ms`);

  // Click a result: its most similar images, itself excluded, mostly of its class.
  const [clicked] = await page.$$eval('[data-testid="result"]', (els) => els.slice(0, 1).map((e) => e.dataset.file));
  await page.locator(`[data-testid="result"][data-file="${clicked}"] button`).click();
  await page.waitForFunction((f) => document.querySelector(".results h2")?.textContent === `Similar to ${f}`, clicked);
  const similar = await page.$$eval('[data-testid="result"]', (els) => els.slice(0, 10).map((e) => e.dataset.file));
  check(!similar.includes(clicked), "the clicked image is not its own neighbour");
  const same = similar.filter((f) => truth[f] === truth[clicked]).length;
  check(same >= 8, `similar to ${clicked} (${truth[clicked]}): ${same}/10 of the same class`);

  // ---------------------------------------------------------------- zero-shot classification
  await page.getByTestId("classify-labels").fill(CLASSES.join("\n"));
  check((await page.getByTestId("classify-template").inputValue()) === "an H&E image of {}.", "the template defaults to the model's");
  await page.getByTestId("classify-run").click();
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="label-bar"]').length === n, CLASSES.length);
  const counts = await page.$$eval('[data-testid="label-bar"]', (els) => els.map((e) => Number(e.dataset.count)));
  check(counts.reduce((a, b) => a + b, 0) === files.length, `every image has a label (${counts.join(", ")})`);
  const [csvDownload] = await Promise.all([page.waitForEvent("download"), page.getByTestId("export-csv").click()]);
  const csv = (await readFile(await csvDownload.path(), "utf8")).trim().split("\n").map((l) => l.split(","));
  check(csv[0].join(",") === ["file", "label", "confidence", ...CLASSES.map((c) => `p(${c})`)].join(","), `CSV header: ${csv[0].join(",")}`);
  const rows = csv.slice(1);
  const correct = rows.filter((r) => truth[r[0]] === r[1]).length;
  check(rows.length === files.length && correct / rows.length >= 0.9, `CSV: ${rows.length} rows, ${correct} labelled with their true class`);
  // Probabilities equal the softmax of the native logits (same prompts, same order).
  let worstP = 0;
  for (const r of rows) {
    const i = native.images.findIndex((x) => x.path.endsWith("/" + r[0]));
    const logits = CLASSES.map((c) => native.logits_per_image[i][native.texts.findIndex((t) => t.text === `an H&E image of ${c}.`)]);
    const m = Math.max(...logits);
    const e = logits.map((l) => Math.exp(l - m));
    const sum = e.reduce((a, b) => a + b, 0);
    e.forEach((x, k) => (worstP = Math.max(worstP, Math.abs(x / sum - Number(r[3 + k])))));
  }
  check(worstP <= 1e-4, `CSV probabilities equal the native softmax (max |Δ| ${worstP.toExponential(2)})`);
  const label = rows[0][1];
  await page.locator(`[data-testid="label-bar"][data-label="${label}"]`).click();
  await page.waitForFunction((l) => document.querySelector(".collection h2")?.textContent.includes(`showing ${l}`), label);
  const shownFiles = await page.$$eval('[data-testid="item"]', (els) => els.map((e) => e.dataset.file));
  const labelled = new Set(rows.filter((r) => r[1] === label).map((r) => r[0]));
  check(shownFiles.length > 0 && shownFiles.every((f) => labelled.has(f)), `filtering by "${label}" shows only those images (${shownFiles.length})`);
  await page.locator(`[data-testid="label-bar"][data-label="${label}"]`).click();

  // ---------------------------------------------------------------- a virtualised gallery
  const rendered = await page.$$eval('[data-testid="item"]', (els) => els.length);
  check(rendered > 0 && rendered < files.length, `the gallery renders only the rows in view (${rendered} of ${files.length})`);
  await page.locator(".gallery").evaluate((g) => g.scrollTo(0, g.scrollHeight));
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="item"]')].some((e) => e.dataset.file === "tile-199.jpg"));
  check(true, "scrolling the gallery to the end shows its last image");

  // ---------------------------------------------------------------- remove, reload, export, clear, import
  const removed = "tile-199.jpg";
  await page.locator(`[data-testid="item"][data-file="${removed}"] button`).click();
  await page.getByTestId("remove").click();
  const n = files.length - 1;
  await page.waitForFunction((n) => document.querySelector('[data-testid="image-count"]')?.textContent === String(n), n);
  const query = async (text) => {
    await page.getByTestId("search-input").fill(text);
    await page.getByTestId("search-input").press("Enter");
    await page.waitForFunction((t) => document.querySelector(".results h2")?.textContent === `“an H&E image of ${t}.”` && document.querySelectorAll('[data-testid="result"]').length > 0, text);
    return page.$$eval('[data-testid="result"]', (els) => els.map((e) => `${e.dataset.file}=${e.dataset.score}`).join(" "));
  };
  // Same images in the same order, scores equal to 1e-6 (a rebuilt graph may sum in another order).
  const sameResults = (a, b) => {
    const pa = a.split(" ").map((x) => x.split("=")), pb = b.split(" ").map((x) => x.split("="));
    const bad = pa.length !== pb.length ? "different lengths" : pa.findIndex(([f, s], i) => f !== pb[i][0] || Math.abs(Number(s) - Number(pb[i][1])) > 1e-6);
    if (bad !== -1) console.log(`  before: ${a}\n  after:  ${b}`);
    return bad === -1;
  };
  const before = await query("tumour epithelium");
  check(!before.includes(removed + "="), "a removed image is no longer found");

  const bytesBefore = server.bytes;
  const r0 = Date.now();
  await page.reload();
  await page.waitForFunction((n) => document.querySelector('[data-testid="image-count"]')?.textContent === String(n), n, { timeout: 120_000 });
  console.log(`  bytes served: first visit ${firstVisitBytes}, second visit ${server.bytes - bytesBefore} (model from the Cache API, app revalidated); reload to ${n} images restored: ${((Date.now() - r0) / 1000).toFixed(1)} s`);
  check(true, `after a reload the collection is back from the browser's storage (${n} images)`);
  check(sameResults(before, await query("tumour epithelium")), "and searches give the same results and scores");

  const [exported] = await Promise.all([page.waitForEvent("download"), page.getByTestId("export").click()]);
  const exportPath = join(junk, exported.suggestedFilename());
  await exported.saveAs(exportPath);
  check(exported.suggestedFilename().endsWith(".obscura"), `exported ${exported.suggestedFilename()}`);
  page.once("dialog", (d) => d.accept());
  await page.getByTestId("clear-all").click();
  await page.waitForFunction(() => document.querySelector('[data-testid="image-count"]')?.textContent === "0");
  const exportedBytes = await readFile(exportPath);
  await writeFile(join(junk, "damaged.obscura"), exportedBytes.subarray(0, exportedBytes.length - 100));
  await page.getByTestId("import-input").setInputFiles(join(junk, "damaged.obscura"));
  await page.waitForFunction(() => document.querySelector('[role="alert"]')?.textContent.includes("damaged"));
  check((await page.getByTestId("image-count").textContent()) === "0", `a damaged export is refused whole: ${(await page.locator('[role="alert"]').textContent()).replace("dismiss", "").trim()}`);
  await page.getByTestId("import-input").setInputFiles(exportPath);
  await page.waitForFunction((n) => document.querySelector('[data-testid="image-count"]')?.textContent === String(n), n);
  check(sameResults(before, await query("tumour epithelium")), `after clear and import: ${n} images, same results and scores`);

  // ---------------------------------------------------------------- a whole-slide image
  // tumour.svs (tests/slides/generate.py): dropped with an NDPI, which is refused by name. Its
  // patches must be those `weights-tool embed --slide` cuts natively, and searching for the
  // tumour class must find patches inside the painted tumour, with the native scores.
  {
    const slideDir = join(root, "tests", "slides", "data");
    const slideTruth = JSON.parse(await readFile(join(slideDir, "truth.json"), "utf8"))["tumour.svs"];
    const nativeSlide = native.slides[0];
    const count = Number(await page.getByTestId("image-count").textContent());
    const s0 = Date.now();
    await page.getByTestId("file-input").setInputFiles([join(slideDir, "tumour.svs"), join(slideDir, "refused", "slide.ndpi")]);
    await page.waitForFunction((n) => document.querySelector('[data-testid="image-count"]')?.textContent === String(n) && !document.querySelector("progress"), count + nativeSlide.patches.length, { timeout: 600_000 });
    const secs = (Date.now() - s0) / 1000;
    check(true, `a dropped slide is tiled and embedded in the tab: ${nativeSlide.patches.length} patches, as natively, in ${secs.toFixed(1)} s (${(nativeSlide.patches.length / secs).toFixed(1)} patches/s)`);
    const refused = (await page.locator('[data-testid="skipped"][data-file="slide.ndpi"]').textContent().catch(() => "")) ?? "";
    check(refused.includes("Hamamatsu NDPI"), `a refused slide is skipped by name: ${refused}`);
    const cls = "colorectal adenocarcinoma epithelium";
    const text = `an H&E image of ${cls}.`;
    await page.getByTestId("search-input").fill(cls);
    await page.getByTestId("search-input").press("Enter");
    await page.waitForFunction((t) => document.querySelector(".results h2")?.textContent === `“${t}”` && document.querySelectorAll('[data-testid="result"]').length > 0, text);
    const hits = await page.$$eval('[data-testid="result"]', (els) => els.map((e) => ({ slide: e.dataset.slide, x: Number(e.dataset.x), y: Number(e.dataset.y), size: Number(e.dataset.size), score: Number(e.dataset.score) })));
    const patches = hits.filter((h) => h.slide === "tumour.svs");
    const inside = patches.filter((h) => slideTruth.tumour[Math.floor((h.y + h.size / 2) / slideTruth.cell)][Math.floor((h.x + h.size / 2) / slideTruth.cell)] === 1);
    check(patches.length >= 5 && inside.length >= 0.8 * patches.length, `"${cls}": ${inside.length} of the ${patches.length} slide patches among the first ${hits.length} results lie in the tumour`);
    const t = native.texts.find((x) => x.text === text).embedding;
    const worst = Math.max(...patches.map((h) => {
      const p = nativeSlide.patches.find((p) => p.x === h.x && p.y === h.y);
      return p ? Math.abs(p.embedding.reduce((a, v, i) => a + v * t[i], 0) - h.score) : Infinity;
    }));
    check(worst <= 1e-4, `slide patch scores equal the native ones (worst |Δ| ${worst.toExponential(1)})`);
    // Back to the demo collection alone for what follows.
    page.once("dialog", (d) => d.accept());
    await page.getByTestId("clear-all").click();
    await page.waitForFunction(() => document.querySelector('[data-testid="image-count"]')?.textContent === "0");
    await page.getByTestId("import-input").setInputFiles(exportPath);
    await page.waitForFunction((n) => document.querySelector('[data-testid="image-count"]')?.textContent === String(n), n);
  }

  // ---------------------------------------------------------------- a lost GPU
  if (backend === "webgpu") {
    // Destroy the worker's device at its next command: the app must move to the CPU backend and
    // keep the collection.
    const worker = page.workers().at(-1);
    await worker.evaluate(() => {
      const encoder = GPUDevice.prototype.createCommandEncoder;
      GPUDevice.prototype.createCommandEncoder = function (...a) {
        this.destroy();
        return encoder.apply(this, a);
      };
    });
    await page.getByTestId("search-input").fill("debris");
    await page.getByTestId("search-input").press("Enter");
    await page.waitForFunction(() => document.querySelector('[data-testid="backend"]')?.textContent.startsWith("cpu"), null, { timeout: 120_000 });
    await page.waitForFunction((n) => document.querySelector('[data-testid="image-count"]')?.textContent === String(n), n, { timeout: 120_000 });
    const badgeNow = await page.getByTestId("backend").textContent();
    const after = await query("tumour epithelium");
    const close = after.split(" ").every((x, i) => {
      const [f, sc] = x.split("="), [g, sb] = before.split(" ")[i].split("=");
      return f === g && Math.abs(Number(sc) - Number(sb)) <= 1e-4;
    });
    check(close, `after the GPU was lost: "${badgeNow}", ${n} images kept, same results (scores to 1e-4)`);
  }

  // ---------------------------------------------------------------- a reload in the middle of indexing
  page.once("dialog", (d) => d.accept());
  await page.getByTestId("clear-all").click();
  await page.waitForFunction(() => document.querySelector('[data-testid="image-count"]')?.textContent === "0");
  await page.getByTestId("file-input").setInputFiles(files);
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="image-count"]')?.textContent) >= 24, null, { timeout: 300_000 });
  const shown = Number(await page.getByTestId("image-count").textContent());
  await page.reload();
  await page.waitForFunction(() => /restored|Model ready/.test(document.querySelector('[data-testid="status"]')?.textContent ?? "") && Number(document.querySelector('[data-testid="image-count"]')?.textContent) > 0, null, { timeout: 120_000 });
  await page.waitForTimeout(500);
  const kept = Number(await page.getByTestId("image-count").textContent());
  check(kept >= shown && kept <= files.length, `reloaded while indexing: ${kept} images kept (${shown} were shown before the reload)`);

  // ---------------------------------------------------------------- a second tab
  // The first tab's worker holds the collection file: the second works, for itself only, and says so.
  if (backend === "cpu") {
    const second = await context.newPage();
    await second.goto(origin + "/");
    await second.waitForFunction(() => document.querySelector('[role="alert"]')?.textContent.includes("kept only until the tab closes"), null, { timeout: 120_000 });
    await second.getByTestId("file-input").setInputFiles(files.slice(0, 3));
    await second.waitForFunction(() => document.querySelector('[data-testid="image-count"]')?.textContent === "3", null, { timeout: 120_000 });
    check(true, "a second tab without the storage still indexes, and says its images will not be kept");
    await second.close();
  }

  console.log(`time to a usable model ${firstModel.toFixed(1)} s; total ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (e) {
  check(false, `the run finished: ${e.message}`);
  await page.screenshot({ path: join(tmpdir(), `obscura-${backend}-${isolated ? "isolated" : "not-isolated"}.png`) }).catch(() => {});
} finally {
  // ---------------------------------------------------------------- privacy
  checkPrivacy({ requests, served, origin, check, private: /\.(jpg|png|svs|ndpi)$/, what: "the images and slides" });
  const bytes = served.length;
  console.log(`${bytes} requests served`);
}
await finish({ browser, server, failures });

// The teaching lab in headless Chromium, on the demo collection arranged as a teacher has it:
// class folders picked as one folder, then the same images with a file,label CSV. Every 20th
// label is wrong on purpose (the next class's), so the metrics are not all 1.0. The numbers the
// page shows (accuracy, balanced accuracy, macro and weighted F1, Recall@k, the confusion matrix
// cell by cell, the probe) must equal `weights-tool eval` on the same folder. Then: a confusion
// cell opens its images, labels survive a reload and an export/import, the map (PCA, UMAP) has a
// point per image with hover and a lasso that filters the gallery, the exports (CSV, HTML report)
// hold the numbers, and every request stays a same-origin GET without a body.
//
//   node tests/browser/lab.test.mjs --prepare DIR      writes DIR/folders/<class>/… and DIR/flat/ + labels.csv
//   node tests/browser/lab.test.mjs --dist dist --set DIR --native folders.json --native-flat flat.json [--backend cpu|webgpu]
//
// folders.json, flat.json: `weights-tool eval --model public/models/demo --labelled DIR/folders
// (or DIR/flat) --probe`. The zero-shot numbers of the two are the same; the probe's seeded split
// follows the images' order (by path), so each browser run is checked against its own layout.

import { readFile, writeFile, mkdir, copyFile, readdir, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { checker, finish, launch, parseArgs, serve } from "./harness.mjs";
import { checkPrivacy } from "./privacy.mjs";

const args = parseArgs();
const root = resolve(new URL("../..", import.meta.url).pathname);
const samples = join(root, "public", "samples");
const manifest = JSON.parse(await readFile(join(samples, "manifest.json"), "utf8"));

/// The labels as given: the manifest's, except every 20th image gets the next class's name
/// (the same rule as weights-tool/tests/eval.rs).
function givenLabels() {
  const classes = [...new Set(manifest.map((m) => m.class))].sort();
  return manifest.map((m, i) => (i % 20 === 7 ? classes[(classes.indexOf(m.class) + 1) % classes.length] : m.class));
}

if (args.prepare) {
  const dir = resolve(args.prepare);
  await rm(dir, { recursive: true, force: true });
  const labels = givenLabels();
  await mkdir(join(dir, "flat"), { recursive: true });
  let csv = "file,label\n";
  for (const [i, m] of manifest.entries()) {
    await mkdir(join(dir, "folders", labels[i]), { recursive: true });
    await copyFile(join(samples, m.file), join(dir, "folders", labels[i], m.file));
    await copyFile(join(samples, m.file), join(dir, "flat", m.file));
    csv += `${m.file},"${labels[i]}"\n`;
  }
  await writeFile(join(dir, "flat", "labels.csv"), csv);
  console.log(`wrote ${manifest.length} images as class folders and as a flat folder with labels.csv under ${dir}`);
  process.exit(0);
}

const dist = resolve(args.dist ?? join(root, "dist"));
const set = resolve(args.set);
const native = JSON.parse(await readFile(args.native, "utf8"));
const nativeFlat = JSON.parse(await readFile(args["native-flat"], "utf8"));
const backend = args.backend ?? "cpu";
const { check, failures } = checker();
const server = await serve(dist);
const { browser, page, requests } = await launch(backend);
page.on("dialog", (d) => d.accept());

const count = () => page.getByTestId("image-count").textContent();
const waitCount = (n, timeout = 600_000) =>
  page.waitForFunction((n) => document.querySelector('[data-testid="image-count"]')?.textContent === String(n) && !document.querySelector(".drop progress"), n, { timeout });
const waitLabelled = (n) => page.waitForFunction((n) => document.querySelector('[data-testid="labelled-count"]')?.textContent.includes(`${n} labelled`), n, { timeout: 120_000 });

/// Clicks Evaluate and waits for the new results (those shown before are marked).
async function runEvaluate() {
  await page.evaluate(() => document.querySelectorAll('[data-testid="lab-model"]').forEach((e) => e.setAttribute("data-old", "1")));
  await page.getByTestId("lab-evaluate").click();
  await page.waitForFunction(() => document.querySelector('[data-testid="lab-model"]:not([data-old])') && !document.querySelector('[data-testid="lab-progress"]'), null, { timeout: 300_000 });
}

/// Runs Evaluate and checks what the page shows against `native`.
async function evaluate(what, native) {
  await runEvaluate();
  const metrics = Object.fromEntries(await page.$$eval('[data-testid="metric"]', (els) => els.map((e) => [e.dataset.key, Number(e.dataset.value)])));
  const cells = await page.$$eval('[data-testid="confusion-cell"]', (els) => els.map((e) => [Number(e.dataset.row), Number(e.dataset.col), Number(e.dataset.count)]));
  const probe = await page.$eval('[data-testid="probe"]', (e) => ({ accuracy: Number(e.dataset.accuracy), c: Number(e.dataset.c) })).catch(() => null);
  const k = native.classes.length;
  const confusion = Array.from({ length: k }, () => Array(k).fill(0));
  for (const [r, c, n] of cells) confusion[r][c] = n;
  // Against the native numbers: counts exactly, ratios of counts to 1e-9.
  const same = (a, b) => Math.abs(a - b) <= 1e-9;
  for (const key of ["accuracy", "balanced_accuracy", "macro_f1", "weighted_f1"]) {
    check(same(metrics[key], native[key]), `${what}: ${key} ${metrics[key]} = native ${native[key]}`);
  }
  native.retrieval.ks.forEach((kk, i) => {
    check(same(metrics[`text_to_image_r${kk}`], native.retrieval.text_to_image[i]) && same(metrics[`image_to_text_r${kk}`], native.retrieval.image_to_text[i]),
      `${what}: Recall@${kk} text→image ${metrics[`text_to_image_r${kk}`]}, image→text ${metrics[`image_to_text_r${kk}`]} = native`);
  });
  check(cells.length === k * k && JSON.stringify(confusion) === JSON.stringify(native.confusion), `${what}: the confusion matrix equals native's, cell by cell (${k}×${k})`);
  // The same seeded split of the same images (sorted by path on both sides): the same probe.
  check(probe && Math.abs(probe.accuracy - native.probe.metrics.accuracy) <= 1 / native.probe.test_size + 1e-9 && probe.c === native.probe.c,
    `${what}: linear probe test accuracy ${probe?.accuracy} (C = ${probe?.c}) vs native ${native.probe.metrics.accuracy} (C = ${native.probe.c})`);
  return { metrics, confusion };
}

const started = Date.now();
try {
  await page.goto(server.origin + "/");
  await page.waitForFunction(() => /webgpu|cpu/.test(document.querySelector('[data-testid="backend"]')?.textContent ?? ""), null, { timeout: 600_000 });

  // ---------------------------------------------------------------- class folders, picked as a folder
  await page.getByTestId("folder-input").setInputFiles(join(set, "folders"));
  await waitCount(manifest.length);
  await waitLabelled(manifest.length);
  const shownSet = await page.getByTestId("lab-labelled").textContent();
  check(shownSet === `${manifest.length} labelled images in ${native.classes.length} classes.`, `the lab sees the labelled set: "${shownSet}"`);
  const t0 = Date.now();
  await evaluate("class folders", native);
  console.log(`  evaluation with the probe (cross-validated C, few-shot curve) in the tab: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  check(native.accuracy < 1 && native.accuracy > 0.85, `the wrong labels show: accuracy ${native.accuracy}`);

  // A confusion cell off the diagonal opens exactly its images.
  const off = native.confusion.flatMap((row, r) => row.map((n, c) => [r, c, n])).find(([r, c, n]) => r !== c && n > 0);
  await page.locator(`[data-testid="confusion-cell"][data-row="${off[0]}"][data-col="${off[1]}"]`).click();
  await page.waitForFunction(() => document.querySelector('[data-testid="gallery-filter"]'));
  const shown = await page.$$eval('[data-testid="item"]', (els) => els.map((e) => e.dataset.file.split("/").pop()));
  const expected = native.images.filter((im) => im.label === native.classes[off[0]] && im.predicted === native.classes[off[1]]).map((im) => im.path.split("/").pop());
  check(shown.length === off[2] && shown.every((f) => expected.includes(f)), `the cell ${native.classes[off[0]]} → ${native.classes[off[1]]} shows its ${off[2]} image(s): ${shown.join(", ")}`);
  await page.getByTestId("clear-filter").click();

  // ---------------------------------------------------------------- exports
  const [csvDownload] = await Promise.all([page.waitForEvent("download"), page.getByTestId("lab-export-csv").click()]);
  const csv = (await readFile(await csvDownload.path(), "utf8")).split("\n");
  check(csv[0].startsWith("metric,") && csv[1] === `accuracy,${native.accuracy.toFixed(6)}`, `the metrics CSV: "${csv[0]}" / "${csv[1]}"`);
  const [htmlDownload] = await Promise.all([page.waitForEvent("download"), page.getByTestId("lab-export-html").click()]);
  const html = await readFile(await htmlDownload.path(), "utf8");
  check(html.includes("Obscura lab report") && html.includes(native.accuracy.toFixed(3)) && (html.match(/<svg/g) ?? []).length >= 3 && !/<script|src=|href=/.test(html),
    `the HTML report holds the numbers and its figures inline, nothing to fetch (${html.length} bytes, ${(html.match(/<svg/g) ?? []).length} figures)`);

  // ---------------------------------------------------------------- the map
  await page.getByTestId("map-pca").click();
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="map"] > div > svg circle[fill-opacity]').length === n, manifest.length, { timeout: 120_000 });
  check(true, `the PCA map has a point per image (${manifest.length})`);
  await page.getByTestId("map").scrollIntoViewIfNeeded();
  const dot = await page.locator('[data-testid="map"] > div > svg circle[fill-opacity]').nth(17).boundingBox();
  await page.mouse.move(dot.x + dot.width / 2, dot.y + dot.height / 2);
  await page.waitForFunction(() => document.querySelector('[data-testid="map-tip"] img'), null, { timeout: 10_000 });
  check(true, `hovering a point shows its thumbnail: "${await page.getByTestId("map-tip").textContent()}"`);
  // A lasso around the whole plot selects every image.
  const box = await page.getByTestId("map").boundingBox();
  const corners = [[2, 28], [478, 28], [478, 504], [2, 504], [2, 30]];
  await page.mouse.move(box.x + corners[0][0], box.y + corners[0][1]);
  await page.mouse.down();
  for (const [x, y] of corners.slice(1)) await page.mouse.move(box.x + x, box.y + y, { steps: 8 });
  await page.mouse.up();
  await page.waitForFunction(() => document.querySelector('[data-testid="gallery-filter"]')?.textContent.includes("lasso"));
  const lassoTitle = await page.getByTestId("gallery-filter").textContent();
  check(lassoTitle.includes(`(${manifest.length})`), `a lasso around the map selects every image: "${lassoTitle}"`);
  await page.getByTestId("clear-filter").click();
  const u0 = Date.now();
  await page.getByTestId("map-umap").click();
  await page.waitForFunction(() => document.querySelector(".lab-map p")?.textContent.startsWith("UMAP"), null, { timeout: 300_000 });
  const umapLine = await page.locator(".lab-map p").first().textContent();
  const trust = Number(/trustworthiness \(k = 10\) ([0-9.]+)/.exec(umapLine)?.[1]);
  check(trust >= 0.9, `UMAP of ${manifest.length} images in ${((Date.now() - u0) / 1000).toFixed(1)} s, trustworthiness ${trust}`);

  // ---------------------------------------------------------------- labels are kept
  await page.reload();
  await waitCount(manifest.length, 120_000);
  await waitLabelled(manifest.length);
  check(true, `after a reload the ${manifest.length} labels are back from the browser's storage`);
  const [exported] = await Promise.all([page.waitForEvent("download"), page.getByTestId("export").click()]);
  const exportPath = join(set, "lab.obscura");
  await exported.saveAs(exportPath);
  await page.getByTestId("clear-all").click();
  await waitCount(0);
  await page.getByTestId("import-input").setInputFiles(exportPath);
  await waitCount(manifest.length);
  await waitLabelled(manifest.length);
  await evaluate("after export, clear and import", native);

  // ---------------------------------------------------------------- images with a CSV
  await page.getByTestId("clear-all").click();
  await waitCount(0);
  const flat = (await readdir(join(set, "flat"))).sort().map((f) => join(set, "flat", f));
  await page.getByTestId("file-input").setInputFiles(flat);
  await waitCount(manifest.length);
  await waitLabelled(manifest.length);
  await evaluate("images with a file,label CSV", nativeFlat);

  // A CSV dropped on its own later relabels the images already there: with the true labels, the
  // ten wrong ones are fixed, and the demo model, right on every tile, scores 1.
  let fixed = "file,label\n";
  for (const m of manifest) fixed += `${m.file},"${m.class}"\n`;
  await writeFile(join(set, "fixed.csv"), fixed);
  await page.getByTestId("file-input").setInputFiles([join(set, "fixed.csv")]);
  await page.waitForFunction(() => document.querySelector('[data-testid="status"]')?.textContent.startsWith("Indexed 0 images"), null, { timeout: 60_000 });
  await runEvaluate();
  const relabelled = await page.$eval('[data-testid="metric"][data-key="accuracy"]', (e) => Number(e.dataset.value));
  check(relabelled === 1, `a CSV dropped later relabels the collection: accuracy ${nativeFlat.accuracy} → ${relabelled}`);

  // Images added unlabelled, then the class folders dropped: every file is a duplicate, and its
  // folder labels the image already there.
  await page.getByTestId("clear-all").click();
  await waitCount(0);
  await page.getByTestId("file-input").setInputFiles(flat.filter((f) => f.endsWith(".jpg")));
  await waitCount(manifest.length);
  await page.getByTestId("folder-input").setInputFiles(join(set, "folders"));
  await waitLabelled(manifest.length);
  check((await count()) === String(manifest.length), `class folders dropped on the same images label them, adding none (${await count()} images)`);
  await evaluate("unlabelled images, then their class folders", nativeFlat);

  // ---------------------------------------------------------------- a second model, side by side
  // A tiny random OpenCLIP checkpoint, added from disk: its collection is its own, so the set is
  // added again; the demo's evaluation stays beside it.
  const options = () => page.$$eval('[data-testid="model-picker"] option', (os) => os.length);
  const modelsBefore = await options();
  await page.locator(".add-model summary").click();
  await page.getByTestId("model-dtype").selectOption("f32");
  const tiny = join(root, "tests", "golden", "models", "tiny-openclip");
  await page.getByTestId("model-import").setInputFiles(["open_clip_config.json", "open_clip_pytorch_model.bin"].map((f) => join(tiny, f)));
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="model-picker"] option').length > n || document.querySelector('[data-testid="model-keep"]'), modelsBefore, { timeout: 300_000 });
  if (await page.getByTestId("model-keep").count()) await page.getByTestId("model-keep").click();
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="model-picker"] option').length > n, modelsBefore, { timeout: 300_000 });
  await page.waitForFunction(() => /^ready/.test(document.querySelector('[data-testid="model-status"]')?.textContent ?? ""), null, { timeout: 300_000 });
  await waitCount(0);
  await page.getByTestId("folder-input").setInputFiles(join(set, "folders"));
  await waitCount(manifest.length);
  await waitLabelled(manifest.length);
  await runEvaluate();
  const columns = await page.$$eval('[data-testid="lab-summary"] thead th', (els) => els.map((e) => e.textContent));
  const blocks = await page.$$eval('[data-testid="lab-model"]', (els) =>
    els.map((e) => ({ model: e.dataset.model, open: [...e.querySelectorAll('[data-testid="confusion-cell"]')].filter((b) => !b.disabled).length })));
  check(columns.length === 3 && blocks.length === 2 && blocks[0].model !== blocks[1].model,
    `two models side by side: ${columns.slice(1).join(" | ")}`);
  check(blocks[0].open > 0 && blocks[1].open === 0, `the loaded model's cells open images (${blocks[0].open}), the other's wait for its collection (${blocks[1].open})`);
  const accuracies = await page.$$eval('[data-testid="metric"][data-key="accuracy"]', (els) => els.map((e) => Number(e.dataset.value)));
  check(accuracies.length === 2 && accuracies.every((a) => a >= 0 && a <= 1), `both accuracies in the table: ${accuracies.join(", ")}`);
  console.log(`  total ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (e) {
  check(false, `the run finished: ${e.message}`);
  await page.screenshot({ path: join(set, `lab-${backend}.png`) }).catch(() => {});
} finally {
  checkPrivacy({ requests, served: server.served, origin: server.origin, check, private: /\.(jpg|csv|obscura)$/, what: "the images and labels" });
}
await finish({ browser, server, failures });

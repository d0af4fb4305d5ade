// The app on a plain static host (no COOP/COEP headers), as a returning user sees it, in one
// Chromium profile kept on disk (its HTTP cache, service worker and storage survive a restart),
// without WebGPU:
//  1. first visit: the service worker installs, the page reloads once and is then cross-origin
//     isolated through the service worker's headers, so the CPU encoder runs threaded; eight
//     images are indexed and searched, their scores equal to weights-tool's (|Δ| ≤ 1e-4);
//  2. second visit (the browser restarted): the app loads from the service worker's cache and the
//     model from the worker's; the bytes the server sends are counted (aim ≤ 100 KB);
//  3. offline (the browser's network cut): a reload shows the app, the model and the collection,
//     and a search works, while the server sees no request and every request the page makes is
//     answered by the service worker;
//  4. a new deploy (the server's files change): the page offers "new version: reload", and the
//     reload runs the new version;
//  5. a first visit with WebGPU, in a fresh profile, on a host that sends COOP/COEP.
// It prints the first visits' bytes before the model (app shell) and of the model; on a release
// build (not OBSCURA_DEV_BUILD=1) it checks the app's bytes against the aim (≤ 12 MB).
//
//   node tests/browser/offline.test.mjs --dist dist --native native.json

import { cp, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { execFileSync } from "node:child_process";
import { join, resolve } from "node:path";
import { tmpdir } from "node:os";
import { checker, finish, launch, parseArgs, serve } from "./harness.mjs";
import { checkPrivacy } from "./privacy.mjs";

const args = parseArgs();
const root = resolve(new URL("../..", import.meta.url).pathname);
const native = JSON.parse(await readFile(args.native, "utf8"));
const samples = join(root, "public", "samples");
const manifest = JSON.parse(await readFile(join(samples, "manifest.json"), "utf8"));
const files = manifest.slice(0, 8).map((m) => join(samples, m.file));
const query = "an H&E image of lymphocytes.";

// A copy of dist/, so that step 4 can deploy a new version over it.
const dist = await mkdtemp(join(tmpdir(), "obscura-dist-"));
await cp(resolve(args.dist ?? join(root, "dist")), dist, { recursive: true });
const profile = await mkdtemp(join(tmpdir(), "obscura-profile-"));

const { check, failures } = checker();
const server = await serve(dist, { isolated: false });
const { served, origin } = server;
const allRequests = [];
// Step 5's host and requests (another origin: its own privacy check).
let gpuServer = null;
const gpuRequests = [];
let session = await launch("cpu", { profile });
session.context.on("request", (r) => allRequests.push({ url: r.url(), method: r.method(), body: r.postDataBuffer()?.length ?? 0 }));

const ready = (page) =>
  page.waitForFunction(() => /^cpu/.test(document.querySelector('[data-testid="backend"]')?.textContent ?? "") && /ready|restored/i.test(document.querySelector('[data-testid="status"]')?.textContent ?? ""), null, { timeout: 600_000 });
const modelBytes = () => served.filter((r) => r.url.includes("/models/") && !r.url.endsWith("catalog.json")).length;

async function search(page) {
  // The model's template makes the query "an H&E image of lymphocytes.".
  await page.getByTestId("search-input").fill("lymphocytes");
  await page.getByTestId("search-input").press("Enter");
  await page.waitForFunction((t) => document.querySelector(".results h2")?.textContent === `“${t}”`, query, { timeout: 120_000 });
  return page.$$eval('[data-testid="result"]', (els) => els.map((e) => [e.dataset.file, Number(e.dataset.score)]));
}
try {
  // ---------------------------------------------------------------- 1. first visit
  let page = session.page;
  const t0 = Date.now();
  await page.goto(origin + "/");
  await page.waitForFunction(() => self.crossOriginIsolated && navigator.serviceWorker.controller, null, { timeout: 120_000 });
  await ready(page);
  const firstSeconds = (Date.now() - t0) / 1000;
  const badge = await page.getByTestId("backend").textContent();
  const cores = await page.evaluate(() => navigator.hardwareConcurrency);
  check(badge === `cpu · ${cores} thread${cores === 1 ? "" : "s"}`, `without COOP/COEP from the host, the service worker isolates the page after one reload: "${badge}"`);
  const shellBytes = server.bytesBy((url) => !url.includes("/models/") || url.endsWith("catalog.json"));
  const weightBytes = server.bytesBy((url) => url.includes("/models/") && !url.endsWith("catalog.json"));
  console.log(`  first visit: ${(shellBytes / 1e6).toFixed(2)} MB of app (shell), ${(weightBytes / 1e6).toFixed(2)} MB of model; model ready after ${firstSeconds.toFixed(1)} s`);
  // The aim is for the release build (wasm-opt); the test suite's dev build only reports it.
  if (process.env.OBSCURA_DEV_BUILD === "1") console.log(`  (dev build: the ≤ 12 MB aim is checked on the release build)`);
  else check(shellBytes <= 12e6, `first visit: ${(shellBytes / 1e6).toFixed(2)} MB of app before the model (aim ≤ 12 MB)`);
  await page.getByTestId("file-input").setInputFiles(files);
  await page.waitForFunction((n) => document.querySelector('[data-testid="image-count"]')?.textContent === String(n) && !document.querySelector("progress"), files.length, { timeout: 300_000 });
  const hits = await search(page);
  check(hits.length > 0, `a search over the ${files.length} images answers (${hits.length} above the threshold)`);
  // The app's scores are cosine similarities; native.json has the same texts and images.
  const nativeScore = (f) => {
    const img = native.images.find((i) => i.path.endsWith("/" + f)).embedding;
    const txt = native.texts.find((x) => x.text === query).embedding;
    return img.reduce((a, v, i) => a + v * txt[i], 0);
  };
  const delta = Math.max(...hits.map(([f, s]) => Math.abs(s - nativeScore(f))));
  check(delta <= 1e-4, `threaded scores equal weights-tool embed's (max |Δ| ${delta.toExponential(2)})`);
  // The service worker has the whole shell before the second visit.
  await page.evaluate(() => navigator.serviceWorker.ready);
  await session.context.close();

  // ---------------------------------------------------------------- 2. second visit
  const before = server.bytes;
  const servedBefore = served.length;
  session = await launch("cpu", { profile });
  session.context.on("request", (r) => allRequests.push({ url: r.url(), method: r.method(), body: r.postDataBuffer()?.length ?? 0 }));
  page = session.page;
  const t1 = Date.now();
  await page.goto(origin + "/");
  await ready(page);
  await page.waitForFunction((n) => document.querySelector('[data-testid="image-count"]')?.textContent === String(n), files.length, { timeout: 120_000 });
  const secondBytes = server.bytes - before;
  console.log(`  second visit: ${secondBytes} bytes in ${served.length - servedBefore} requests (${served.slice(servedBefore).map((r) => r.url).join(" ")}); model ready after ${((Date.now() - t1) / 1000).toFixed(1)} s`);
  check(secondBytes <= 100_000, `second visit: ${(secondBytes / 1e3).toFixed(1)} KB from the server (aim ≤ 100 KB)`);

  // ---------------------------------------------------------------- 3. offline
  await session.context.setOffline(true);
  const servedOffline = served.length;
  const offlineRequests = [];
  const onRequest = (r) => offlineRequests.push(r);
  session.context.on("request", onRequest);
  const failed = [];
  session.context.on("requestfailed", (r) => failed.push(r.url()));
  await page.reload();
  await ready(page);
  await page.waitForFunction((n) => document.querySelector('[data-testid="image-count"]')?.textContent === String(n), files.length, { timeout: 120_000 });
  const offlineHits = await search(page);
  check(offlineHits.length === hits.length, `offline: the app, the model and the ${files.length} images are back, and search answers as before (${offlineHits.length} results)`);
  await page.waitForTimeout(500);
  session.context.off("request", onRequest);
  const fromNetwork = [];
  for (const r of offlineRequests) {
    // blob: URLs are the page's own objects (thumbnails, the thread pool's worker scripts).
    if (r.url().startsWith("blob:") || r.url().startsWith("data:")) continue;
    const response = await r.response().catch(() => null);
    if (!response?.fromServiceWorker()) fromNetwork.push(r.url());
  }
  check(served.length === servedOffline, `offline: the server saw no request (${served.length - servedOffline})`);
  check(fromNetwork.length === 0 && failed.length === 0, `offline: all ${offlineRequests.length} requests of the page were answered by the service worker, none went to the network (blob: URLs aside)${fromNetwork.length ? ": " + fromNetwork.join(", ") : ""}${failed.length ? "; failed: " + failed.join(", ") : ""}`);
  await session.context.setOffline(false);

  // ---------------------------------------------------------------- 4. a new deploy
  const html = join(dist, "index.html");
  await writeFile(html, (await readFile(html, "utf8")).replace("</head>", "<!-- deploy 2 -->\n</head>"));
  execFileSync("bash", [join(root, "scripts/shell.sh")], { env: { ...process.env, TRUNK_STAGING_DIR: dist }, stdio: "inherit" });
  await page.reload();
  await page.getByTestId("update").waitFor({ timeout: 60_000 });
  check(true, `a new deploy is offered: "${(await page.getByTestId("update").textContent()).trim()}"`);
  await Promise.all([page.waitForEvent("load"), page.getByTestId("update").getByRole("button").click()]);
  await ready(page);
  const live = await page.evaluate(() => fetch("./index.html").then((r) => r.text()));
  check(live.includes("<!-- deploy 2 -->"), "after Reload the page runs the new deploy");

  // ---------------------------------------------------------------- 5. first visit on WebGPU
  // Another profile, on a host that sends COOP/COEP, with WebGPU: the page runs the WebGPU
  // worker, whose wasm is the largest file of the app.
  await session.context.close();
  gpuServer = await serve(dist, { isolated: true });
  const gpuProfile = await mkdtemp(join(tmpdir(), "obscura-profile-gpu-"));
  session = await launch("webgpu", { profile: gpuProfile });
  session.context.on("request", (r) => gpuRequests.push({ url: r.url(), method: r.method(), body: r.postDataBuffer()?.length ?? 0 }));
  await session.page.goto(gpuServer.origin + "/");
  await session.page.waitForFunction(() => /^webgpu/.test(document.querySelector('[data-testid="backend"]')?.textContent ?? "") && /ready/i.test(document.querySelector('[data-testid="status"]')?.textContent ?? ""), null, { timeout: 600_000 });
  await session.page.evaluate(() => navigator.serviceWorker.ready);
  const gpuShell = gpuServer.bytesBy((url) => !url.includes("/models/") || url.endsWith("catalog.json"));
  console.log(`  first visit on WebGPU: ${(gpuShell / 1e6).toFixed(2)} MB of app before the model`);
  if (process.env.OBSCURA_DEV_BUILD !== "1") check(gpuShell <= 12e6, `first visit on WebGPU: ${(gpuShell / 1e6).toFixed(2)} MB of app before the model (aim ≤ 12 MB)`);
} catch (e) {
  check(false, `the run finished: ${e.stack ?? e.message}`);
  await session.page.screenshot({ path: join(tmpdir(), "obscura-offline.png") }).catch(() => {});
} finally {
  checkPrivacy({ requests: allRequests, served, origin, check, private: /\.(jpg|png)$/, what: "the images" });
  if (gpuServer) {
    checkPrivacy({ requests: gpuRequests, served: gpuServer.served, origin: gpuServer.origin, check, private: /\.(jpg|png)$/, what: "the images" });
    gpuServer.close();
  }
}
await finish({ browser: session.browser, server, failures });

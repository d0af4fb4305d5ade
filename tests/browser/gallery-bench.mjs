// Benchmark (not a test): the app with a 10,000-image collection. Adds the 200 demo tiles, exports
// them, writes a 10,000-record collection file from that export (the tiles' thumbnails again,
// their embeddings with a little noise, new ids, names and hashes), imports it, then measures:
// import time, frame times while the gallery scrolls from top to bottom, how many gallery items
// are in the DOM at most, text-search latency, and the restore time after a reload.
//
//   node tests/browser/gallery-bench.mjs --dist dist [--n 10000] [--out BENCH.json]

import { createServer } from "node:http";
import { readFile, mkdtemp, writeFile, readdir } from "node:fs/promises";
import { createHash } from "node:crypto";
import { crc32 } from "node:zlib";
import { join, extname, resolve, normalize } from "node:path";
import { tmpdir } from "node:os";
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const root = resolve(new URL("../..", import.meta.url).pathname);
const dist = resolve(args.dist ?? join(root, "dist"));
const N = Number(args.n ?? 10000);
const STEP = Number(args.step ?? 120); // pixels scrolled per frame (a brisk wheel is ~100-200)
const samples = join(root, "public", "samples");

const MIME = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".css": "text/css", ".json": "application/json", ".svg": "image/svg+xml" };
const server = createServer(async (req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^\/+/, "");
  const file = join(dist, path === "" ? "index.html" : path);
  if (!file.startsWith(dist)) return res.writeHead(403).end();
  try {
    res.writeHead(200, { "content-type": MIME[extname(file)] ?? "application/octet-stream" }).end(await readFile(file));
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const origin = `http://127.0.0.1:${server.address().port}`;

// ---------------------------------------------------------------- the collection file (app/src/collection.rs)
function parse(buf) {
  let at = 8;
  const hlen = buf.readUInt32LE(at);
  at += 4;
  const header = buf.subarray(at, at + hlen);
  at += hlen + 4;
  const records = [];
  while (at < buf.length) {
    const kind = buf[at];
    const len = buf.readUInt32LE(at + 1);
    const body = buf.subarray(at + 5, at + 5 + len);
    at += 5 + len + 4;
    if (kind !== 1) throw new Error("the export has a record other than an image");
    const nameLen = body.readUInt16LE(40);
    const thumbLen = body.readUInt32LE(42 + nameLen);
    const thumb = body.subarray(46 + nameLen, 46 + nameLen + thumbLen);
    const emb = new Float32Array(body.buffer.slice(body.byteOffset + 46 + nameLen + thumbLen, body.byteOffset + body.length));
    records.push({ thumb, emb });
  }
  return { header, records };
}

function record(id, name, thumb, emb) {
  const nameBytes = Buffer.from(name);
  const body = Buffer.alloc(8 + 32 + 2 + nameBytes.length + 4 + thumb.length + 4 * emb.length);
  let at = 0;
  body.writeBigUInt64LE(BigInt(id), at);
  at += 8;
  createHash("sha256").update(name).digest().copy(body, at);
  at += 32;
  body.writeUInt16LE(nameBytes.length, at);
  at += 2;
  nameBytes.copy(body, at);
  at += nameBytes.length;
  body.writeUInt32LE(thumb.length, at);
  at += 4;
  thumb.copy(body, at);
  at += thumb.length;
  for (const x of emb) at = body.writeFloatLE(x, at);
  const head = Buffer.from([1, 0, 0, 0, 0]);
  head.writeUInt32LE(body.length, 1);
  const crc = Buffer.alloc(4);
  crc.writeUInt32LE(crc32(body, crc32(Buffer.from([1]))));
  return Buffer.concat([head, body, crc]);
}

let seed = 1;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;

// ---------------------------------------------------------------- the run
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu-sandbox", "--no-first-run", "--disable-features=WebGPU"],
});
const page = await (await browser.newContext({ viewport: { width: 1600, height: 1000 } })).newPage();
page.on("pageerror", (e) => console.log(`  [page error] ${e.message}`));
const count = () => page.getByTestId("image-count").textContent().then(Number);
const waitCount = (n, timeout = 600_000) =>
  page.waitForFunction((n) => document.querySelector('[data-testid="image-count"]')?.textContent === String(n), n, { timeout });
const results = {};
try {
  await page.goto(origin + "/");
  await page.waitForFunction(() => /cpu/.test(document.querySelector('[data-testid="backend"]')?.textContent ?? ""), null, { timeout: 600_000 });
  const tiles = (await readdir(samples)).filter((f) => f.endsWith(".jpg")).sort().map((f) => join(samples, f));
  await page.getByTestId("file-input").setInputFiles(tiles);
  await waitCount(tiles.length);
  const [dl] = await Promise.all([page.waitForEvent("download"), page.getByTestId("export").click()]);
  const { header, records } = parse(await readFile(await dl.path()));

  const parts = [Buffer.from("OBSCOLL1"), Buffer.alloc(4), header, Buffer.alloc(4)];
  parts[1].writeUInt32LE(header.length);
  parts[3].writeUInt32LE(crc32(header));
  for (let i = 0; i < N; i++) {
    const src = records[i % records.length];
    const emb = src.emb.map((x) => x + 0.05 * rand());
    const norm = Math.hypot(...emb);
    parts.push(record(i, `synthetic-${String(i).padStart(5, "0")}.jpg`, src.thumb, emb.map((x) => x / norm)));
  }
  const dir = await mkdtemp(join(tmpdir(), "obscura-bench-"));
  const file = join(dir, `synthetic-${N}.obscura`);
  await writeFile(file, Buffer.concat(parts));

  page.once("dialog", (d) => d.accept());
  await page.getByTestId("clear-all").click();
  await waitCount(0);
  let t0 = Date.now();
  await page.getByTestId("import-input").setInputFiles(file);
  await waitCount(N);
  results.import_seconds = (Date.now() - t0) / 1000;

  // Idle frames first (what this headless browser gives with nothing to do), then the gallery
  // scrolled from top to bottom, STEP px a frame, timing every frame.
  results.idle_frame_ms = await page.evaluate(
    () =>
      new Promise((done) => {
        const t = [];
        let last = performance.now();
        const f = (now) => {
          t.push(now - last);
          last = now;
          if (t.length < 60) requestAnimationFrame(f);
          else done(t.sort((a, b) => a - b)[30]);
        };
        requestAnimationFrame(f);
      }),
  );
  const scroll = await page.evaluate(
    (STEP) =>
      new Promise((done) => {
        const g = document.querySelector(".gallery");
        const frames = [];
        let maxItems = 0;
        let last = performance.now();
        const step = (now) => {
          frames.push(now - last);
          last = now;
          maxItems = Math.max(maxItems, document.querySelectorAll('[data-testid="item"]').length);
          if (g.scrollTop + g.clientHeight >= g.scrollHeight - 1) {
            frames.sort((a, b) => a - b);
            const q = (p) => frames[Math.min(frames.length - 1, Math.floor(p * frames.length))];
            return done({ frames: frames.length, p50_ms: q(0.5), p95_ms: q(0.95), max_ms: frames[frames.length - 1], max_items_in_dom: maxItems });
          }
          g.scrollTop += STEP;
          requestAnimationFrame(step);
        };
        requestAnimationFrame(step);
      }),
    STEP,
  );
  scroll.px_per_frame = STEP;
  results.scroll = scroll;

  const searches = [];
  for (const text of ["lymphocytes", "mucus", "adipose tissue", "debris", "smooth muscle"]) {
    await page.getByTestId("search-input").fill(text);
    t0 = Date.now();
    await page.getByTestId("search-input").press("Enter");
    await page.waitForFunction((t) => document.querySelector(".results h2")?.textContent === `“an H&E image of ${t}.”`, text);
    searches.push(Date.now() - t0);
  }
  results.search_ms = searches;

  t0 = Date.now();
  await page.reload();
  await waitCount(N, 300_000);
  results.reload_restore_seconds = (Date.now() - t0) / 1000;
  results.images = await count();
  results.file_mb = Number((Buffer.concat(parts).length / 1e6).toFixed(1));
} finally {
  console.log(JSON.stringify(results, null, 1));
  if (args.out) await writeFile(args.out, JSON.stringify(results, null, 1));
  await browser.close();
  server.close();
}

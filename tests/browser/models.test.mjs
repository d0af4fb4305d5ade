// "Add a model from this computer", driven in headless Chromium (CPU backend: no WebGPU, so the
// numbers are the CPU backend's on every machine): checkpoints of each layout are dropped on the
// model input, converted in the tab and stored; their embeddings of golden images (read back
// from an exported collection) are compared with `weights-tool embed` on the same checkpoint.
// Then: the same model twice is recognised, a reload keeps the models, images added while a model
// loads are kept, every bad input gets its message and leaves nothing behind (a full storage
// quota included), Remove deletes a model and its storage, and every request is a same-origin
// GET without a body.
//
//   node tests/browser/models.test.mjs --dist dist --native DIR
//
// DIR holds `<case>.json`, the output of `weights-tool embed --backend cpu` for each case below,
// and `w256/`, a random 256-wide checkpoint (weights-tool's example random_clip, both formats).

import { readFile, mkdtemp, writeFile, mkdir, copyFile } from "node:fs/promises";
import { join, resolve, basename } from "node:path";
import { tmpdir } from "node:os";
import { checker, finish, launch, parseArgs, serve } from "./harness.mjs";
import { checkPrivacy } from "./privacy.mjs";

const args = parseArgs();
const root = resolve(new URL("../..", import.meta.url).pathname);
const dist = resolve(args.dist ?? join(root, "dist"));
const golden = join(root, "tests", "golden");
const IMAGES = ["photo-120x90.jpg", "rgba-64x48.png", "odd-37x23.png", "grey-50x70.png"].map((f) => join(golden, "images", f));
// case → checkpoint files, dtype, least cosine to the native embeddings.
const w256 = join(resolve(args.native), "w256");
const CASES = [
  { id: "hf-safetensors", dir: w256, files: ["config.json", "model.safetensors", "tokenizer.json"], dtype: "f32", min: 0.99999 },
  { id: "hf-bin", dir: w256, files: ["config.json", "pytorch_model.bin", "tokenizer.json"], dtype: "q8", min: 0.995 },
  { id: "openclip", dir: join(golden, "models/tiny-openclip"), files: ["open_clip_config.json", "open_clip_pytorch_model.bin"], dtype: "f32", min: 0.99999 },
];

const { check, failures } = checker();
const server = await serve(dist);
const { served, origin } = server;
const { browser, context, page, requests } = await launch("cpu");
page.on("dialog", (d) => d.accept());

const scratch = await mkdtemp(join(tmpdir(), "obscura-models-"));
const text = (id) => page.getByTestId(id).textContent().catch(() => "");
const waitText = (id, re, timeout = 300_000) =>
  page.waitForFunction(([id, src]) => new RegExp(src).test(document.querySelector(`[data-testid="${id}"]`)?.textContent ?? ""), [id, re.source], { timeout });
const ready = () => waitText("model-status", /^ready/);
const pickerOptions = () => page.$$eval('[data-testid="model-picker"] option', (os) => os.map((o) => ({ value: o.value, text: o.textContent, selected: o.selected })));
const storedModels = () =>
  page.evaluate(async () => {
    const root = await navigator.storage.getDirectory();
    let dir;
    try {
      dir = await root.getDirectoryHandle("obscura-models");
    } catch {
      return [];
    }
    const out = [];
    for await (const k of dir.keys()) out.push(k);
    return out;
  });

/// Parses an exported collection (app/src/collection.rs): name → embedding.
function parseCollection(buf) {
  let at = 8;
  const u32 = () => { const v = buf.readUInt32LE(at); at += 4; return v; };
  const hlen = u32();
  const header = JSON.parse(buf.subarray(at, at + hlen).toString());
  at += hlen + 4;
  const out = {};
  while (at < buf.length) {
    const kind = buf[at]; at += 1;
    const len = u32();
    const body = buf.subarray(at, at + len); at += len + 4;
    if (kind !== 1) continue;
    let p = 8 + 32;
    const nlen = body.readUInt16LE(p); p += 2;
    const name = body.subarray(p, p + nlen).toString(); p += nlen;
    const tlen = body.readUInt32LE(p); p += 4 + tlen;
    const emb = [];
    for (let k = 0; k < header.dim; k++) emb.push(body.readFloatLE(p + 4 * k));
    out[name] = emb;
  }
  return out;
}
const cosine = (a, b) => a.reduce((s, x, k) => s + x * b[k], 0) / Math.sqrt(a.reduce((s, x) => s + x * x, 0) * b.reduce((s, x) => s + x * x, 0));

/// Copies a case's files into a folder of their own (the input sees plain files).
async function caseFiles(c, extra = {}) {
  const dir = join(scratch, c.id);
  await mkdir(dir, { recursive: true });
  const out = [];
  for (const f of c.files) {
    await copyFile(join(c.dir, f), join(dir, f));
    out.push(join(dir, f));
  }
  for (const [f, bytes] of Object.entries(extra)) {
    await writeFile(join(dir, f), bytes);
    out.push(join(dir, f));
  }
  return out;
}

async function importModel(files, dtype, input = "model-import") {
  await page.getByTestId("model-dtype").selectOption(dtype);
  const before = (await pickerOptions()).length;
  await page.getByTestId(input).setInputFiles(files);
  // Done (a new option, or a note that it is already there), refused, or below the bound.
  await page.waitForFunction(
    (n) => document.querySelectorAll('[data-testid="model-picker"] option').length > n || document.querySelector('[data-testid="model-import-note"]') || document.querySelector('[data-testid="model-import-error"]') || document.querySelector('[data-testid="model-keep"]'),
    before,
    { timeout: 600_000 },
  );
  if (await page.getByTestId("model-keep").count()) {
    console.log(`  below the fidelity bound: ${await text("model-fidelity")}; keeping it anyway`);
    await page.getByTestId("model-keep").click();
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid="model-picker"] option').length > n, before, { timeout: 600_000 });
  }
}

const started = Date.now();
try {
  await page.goto(origin + "/");
  await ready();
  check(true, `the default model is ready: "${await text("model-status")}"`);
  await page.locator(".add-model summary").click();

  // ---------------------------------------------------------------- each layout, converted in the tab
  for (const c of CASES) {
    const native = JSON.parse(await readFile(join(args.native, `${c.id}.json`), "utf8"));
    const t0 = Date.now();
    await importModel(await caseFiles(c), c.dtype);
    await ready();
    const seconds = (Date.now() - t0) / 1000;
    const fidelity = await text("model-fidelity");
    check(/min cosine images/.test(fidelity), `${c.id} → ${c.dtype} in ${seconds.toFixed(1)} s; ${fidelity.trim()}`);
    const selected = (await pickerOptions()).find((o) => o.selected);
    check(selected?.value.startsWith("local/") && selected.text.includes("on this device"), `the picker lists and selects it: "${selected?.text}"`);
    await page.getByTestId("file-input").setInputFiles(IMAGES);
    await page.waitForFunction((n) => document.querySelector('[data-testid="image-count"]')?.textContent === String(n) && !document.querySelector(".drop progress"), IMAGES.length, { timeout: 300_000 });
    const [download] = await Promise.all([page.waitForEvent("download"), page.getByTestId("export").click()]);
    const path = join(scratch, `${c.id}.obscura`);
    await download.saveAs(path);
    const got = parseCollection(await readFile(path));
    let worst = 1;
    for (const img of native.images) {
      const e = got[basename(img.path)];
      worst = Math.min(worst, e ? cosine(e, img.embedding) : -1);
    }
    check(worst >= c.min, `${c.id} (${c.dtype}): embeddings of ${native.images.length} golden images against weights-tool embed, min cosine ${worst.toFixed(7)} ≥ ${c.min}`);
  }

  // ---------------------------------------------------------------- the same model twice
  const stored = await storedModels();
  // Through the folder input this time, from a folder of another name.
  const again = await caseFiles({ ...CASES[0], id: "same-model-another-folder" });
  await importModel(join(again[0], ".."), CASES[0].dtype, "model-import-folder");
  check(/already on this device/.test(await text("model-import-note")) && (await storedModels()).length === stored.length, `the same checkpoint again is recognised and not stored twice: "${await text("model-import-note")}"`);

  // ---------------------------------------------------------------- a reload keeps them; images dropped while loading are kept
  const localBefore = (await pickerOptions()).filter((o) => o.value.startsWith("local/")).length;
  await page.reload();
  await page.getByTestId("file-input").setInputFiles(IMAGES.slice(0, 2), { timeout: 60_000 });
  await page.locator(".add-model summary").click();
  const early = await text("model-status");
  await ready();
  const localAfter = (await pickerOptions()).filter((o) => o.value.startsWith("local/")).length;
  check(localAfter === localBefore && localAfter === CASES.length, `after a reload the ${localAfter} stored models are listed and the last one loads from this browser`);
  await page.waitForFunction(() => !document.querySelector(".drop progress") && /Indexed|skipped/.test(document.querySelector('[data-testid="status"]')?.textContent ?? ""), null, { timeout: 120_000 }).catch(() => {});
  const skipped = await page.$$eval('[data-testid="skipped"]', (els) => els.map((e) => e.textContent));
  // The model (77 MB from OPFS) takes seconds to load, so the images arrive before it is ready.
  check(!/^ready/.test(early) && skipped.length === 2 && skipped.every((s) => s.includes("duplicate")), `2 images dropped while the model loaded ("${early}") were kept and handled once it was ready (${skipped.length} reported as duplicates of the stored collection)`);

  // Templates are the user's to edit; search uses them.
  await page.getByTestId("model-templates").fill("an H&E image of {}.\na photo of {}.");
  await page.getByRole("button", { name: "Save templates" }).click();
  await page.waitForFunction(() => document.querySelector(".search label")?.textContent.includes("an H&E image of {}."), null, { timeout: 30_000 });
  check(true, "edited prompt templates are saved and the search uses the first");

  // ---------------------------------------------------------------- bad input: a named error, nothing kept
  const hf = CASES[0];
  const hfDir = hf.dir;
  const config = JSON.parse(await readFile(join(hfDir, "config.json"), "utf8"));
  const weights = await readFile(join(hfDir, "model.safetensors"));
  const tokenizer = await readFile(join(hfDir, "tokenizer.json"));
  const bad = [
    ["weights alone", { "model.safetensors": weights }, /config\.json is missing/],
    ["no tokenizer", { "config.json": JSON.stringify(config), "model.safetensors": weights }, /tokenizer\.json is missing/],
    ["no weights", { "config.json": JSON.stringify(config), "tokenizer.json": tokenizer }, /model\.safetensors or pytorch_model\.bin is missing/],
    ["SigLIP", { "config.json": JSON.stringify({ model_type: "siglip", architectures: ["SiglipModel"] }), "model.safetensors": weights, "tokenizer.json": tokenizer }, /siglip/],
    ["BiomedCLIP", { "open_clip_config.json": JSON.stringify({ model_cfg: { embed_dim: 512, vision_cfg: { timm_model_name: "vit_base_patch16_224" }, text_cfg: { hf_model_name: "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract", hf_tokenizer_name: "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract" } } }), "open_clip_pytorch_model.bin": weights }, /BERT text tower/],
    ["Swin", { "open_clip_config.json": JSON.stringify({ model_cfg: { embed_dim: 512, vision_cfg: { timm_model_name: "swin_base_patch4_window7_224" }, text_cfg: {} } }), "open_clip_pytorch_model.bin": weights }, /Swin/],
    ["truncated weights", { "config.json": JSON.stringify(config), "model.safetensors": weights.subarray(0, weights.length - 1000), "tokenizer.json": tokenizer }, /truncated/],
    ["corrupt .bin", { "config.json": JSON.stringify(config), "pytorch_model.bin": Buffer.concat([Buffer.from("PK\x03\x04"), Buffer.alloc(5000, 7)]), "tokenizer.json": tokenizer }, /zip|truncated|corrupt/],
    ["mismatched config", { "config.json": JSON.stringify({ ...config, text_config: { ...config.text_config, hidden_size: 32, num_attention_heads: 4 } }), "model.safetensors": weights, "tokenizer.json": tokenizer }, /shape/],
  ];
  for (const [what, files, want] of bad) {
    const dir = join(scratch, `bad-${what.replace(/\W+/g, "-")}`);
    await mkdir(dir, { recursive: true });
    const paths = [];
    for (const [f, bytes] of Object.entries(files)) {
      await writeFile(join(dir, f), bytes);
      paths.push(join(dir, f));
    }
    await page.getByTestId("model-import").setInputFiles(paths);
    await page.waitForFunction(() => document.querySelector('[data-testid="model-import-error"]'), null, { timeout: 300_000 });
    const message = (await text("model-import-error")).replace(/dismiss$/, "").trim();
    check(want.test(message) && (await storedModels()).length === CASES.length, `${what}: "${message}"`);
    await page.locator('[data-testid="model-import-error"] button').click();
  }

  // A full storage quota: the import fails by name and leaves nothing half-written.
  const cdp = await context.newCDPSession(page);
  await cdp.send("Storage.overrideQuotaForOrigin", { origin, quotaSize: 1 });
  await page.getByTestId("model-dtype").selectOption("f16");
  await page.getByTestId("model-import").setInputFiles(await caseFiles({ ...CASES[0], id: "quota" }));
  await page.waitForFunction(() => document.querySelector('[data-testid="model-import-error"]'), null, { timeout: 300_000 });
  const quota = (await text("model-import-error")).replace(/dismiss$/, "").trim();
  check(/storage is full/.test(quota) && (await storedModels()).length === CASES.length, `storage quota exceeded: "${quota}"`);
  await cdp.send("Storage.overrideQuotaForOrigin", { origin });
  await page.locator('[data-testid="model-import-error"] button').click();

  // ---------------------------------------------------------------- Remove
  const victim = (await pickerOptions()).find((o) => o.selected && o.value.startsWith("local/"));
  await page.getByTestId("model-remove").click();
  await page.waitForFunction((v) => ![...document.querySelectorAll('[data-testid="model-picker"] option')].some((o) => o.value === v), victim.value);
  const left = await storedModels();
  check(left.length === CASES.length - 1 && !left.includes(victim.value.slice(6)), `Remove deletes the model and its files (${left.length} stored models left)`);
  await ready();
  check(!(await pickerOptions()).find((o) => o.selected).value.startsWith("local/"), "and the app goes back to its default model");
  console.log(`total ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (e) {
  check(false, `the run finished: ${e.message}`);
  await page.screenshot({ path: join(tmpdir(), "obscura-models.png") }).catch(() => {});
} finally {
  checkPrivacy({ requests, served, origin, check, private: /\.(safetensors|bin|jpg|png)$/, what: "the checkpoints or images" });
}
await finish({ browser, server, failures });

import { launch, serve } from "/work/main/tests/browser/harness.mjs";
const server = await serve("/work/main/dist", { isolated: true });
const { browser, page, context } = await launch("webgpu", { serviceWorkers: process.env.SW ?? "allow" });
context.on("requestfailed", r => console.log("  FAILED", r.url(), r.failure()?.errorText));
page.on("worker", (w) => { console.log("  worker started", w.url()); w.on("console", (m) => console.log(`  [worker ${m.type()}] ${m.text()}`)); w.on("close", () => console.log("  worker closed", w.url())); });
page.on("crash", () => console.log("CRASH"));
page.on("close", () => console.log("PAGE CLOSE"));
page.on("framenavigated", (f) => console.log("  navigated", f.url()));
page.on("pageerror", (e) => console.log("  pageerror", e.message));
browser.on?.("disconnected", () => console.log("DISCONNECTED"));
context.on("serviceworker", (w) => console.log("  SW", w.url()));
context.on("requestfailed", r => console.log("  FAILED", r.url(), r.failure()?.errorText)); context.on("request", r => console.log("  req", r.url()));
await page.goto(server.origin + "/");
for (let i = 0; i < 25; i++) {
  await page.waitForTimeout(1000);
  const s = await page.evaluate(() => [document.querySelector('[data-testid="status"]')?.textContent, document.querySelector('[data-testid="backend"]')?.textContent, document.querySelector('[role="alert"]')?.textContent, !!navigator.serviceWorker.controller]).catch(e => e.message);
  console.log(i, JSON.stringify(s));
}
await browser.close(); server.close();

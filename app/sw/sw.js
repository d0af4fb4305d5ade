// Obscura's service worker. Built per deploy by scripts/shell.sh, which fills in VERSION (a hash
// of the app shell's files) and SHELL (their paths, relative to this file). It
//  - keeps the app shell (HTML, JS, wasm, CSS, the model catalog) in the Cache API, so the
//    second visit loads with no download and works with the network off. The shell has two
//    builds of the model worker (WebGPU, threaded CPU) and a browser runs one: a build's files
//    are cached when the page says it runs that build (or fetches them), and a new deploy
//    precaches the builds the old one had, so nobody downloads a build their browser never runs;
//  - serves the pages and scripts it answers with COOP/COEP headers, so the page is
//    cross-origin isolated (shared memory: the threaded CPU encoder) on hosts that cannot set
//    headers;
//  - waits, when a new deploy is found, until the page asks for it ("new version: reload").
// Model shards are not its business: the worker keeps them in its own cache, checked by sha256.
// Everything it fetches is this origin's; it never sends anything else.
const VERSION = "__VERSION__";
const SHELL = __SHELL__;
const CACHE = `obscura-shell-${VERSION}`;
const scope = new URL(self.registration.scope);
const shell = new Set(SHELL);

/// Which worker build a shell file belongs to ("threads", "gpu"), or null for the rest.
function build(path) {
  if (path.startsWith("worker-threads")) return "threads";
  return path.startsWith("worker") ? "gpu" : null;
}

/// Caches these shell files (`no-cache`: revalidated against the server, so a copy in the HTTP
/// cache costs a 304, and an older copy is never taken).
async function keep(cache, paths) {
  const missing = [];
  for (const path of paths) if (!(await cache.match(path))) missing.push(path);
  await cache.addAll(missing.map((path) => new Request(path, { cache: "no-cache" })));
}

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      // The builds this browser ran under the deploy before, if any.
      const used = new Set();
      for (const key of await caches.keys()) {
        if (!key.startsWith("obscura-shell-") || key === CACHE) continue;
        for (const request of await (await caches.open(key)).keys()) used.add(build(new URL(request.url).pathname.slice(scope.pathname.length)));
      }
      await keep(await caches.open(CACHE), SHELL.filter((path) => build(path) === null || used.has(build(path))));
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const key of await caches.keys()) {
        if (key.startsWith("obscura-shell-") && key !== CACHE) await caches.delete(key);
      }
      await self.clients.claim();
    })(),
  );
});

self.addEventListener("message", (event) => {
  if (event.data === "skip-waiting") self.skipWaiting();
  // The page runs this worker build: keep it for the next visit (and offline).
  if (event.data?.keep === "threads" || event.data?.keep === "gpu") {
    event.waitUntil(caches.open(CACHE).then((cache) => keep(cache, SHELL.filter((path) => build(path) === event.data.keep))));
  }
});

/// The shell path a request names, or null: the page itself for the scope's root (any query).
function shellPath(request) {
  const url = new URL(request.url);
  if (url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return null;
  const path = url.pathname.slice(scope.pathname.length);
  if (request.mode === "navigate" && (path === "" || path === "index.html")) return "index.html";
  return shell.has(path) ? path : null;
}

function isolated(response) {
  const headers = new Headers(response.headers);
  headers.set("Cross-Origin-Opener-Policy", "same-origin");
  headers.set("Cross-Origin-Embedder-Policy", "require-corp");
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

self.addEventListener("fetch", (event) => {
  if (event.request.method !== "GET") return;
  const path = shellPath(event.request);
  // Not the shell (models, samples): the browser fetches it as if there were no service worker.
  if (path === null) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      const hit = await cache.match(path);
      if (hit) return isolated(hit);
      // Not cached (storage cleared while this worker ran): the network, kept for next time.
      const response = await fetch(event.request);
      if (response.ok) await cache.put(path, response.clone());
      return isolated(response);
    })(),
  );
});

// Registers the service worker (app/sw/sw.js) before the app starts, from boot.js. On a host that
// sends no COOP/COEP headers the first visit is not cross-origin isolated: once the service
// worker is active, the page reloads once, and the service worker's headers isolate it (the
// threaded CPU encoder needs that). A new deploy is offered, not forced: "new version: reload".
const TRIED = "obscura-isolation-reload";

function offer(worker) {
  if (document.querySelector('[data-testid="update"]')) return;
  const bar = document.createElement("div");
  bar.className = "update";
  bar.setAttribute("role", "status");
  bar.dataset.testid = "update";
  bar.append("A new version of Obscura is ready. ");
  const button = document.createElement("button");
  button.textContent = "Reload";
  button.addEventListener("click", () => {
    navigator.serviceWorker.addEventListener("controllerchange", () => location.reload());
    worker.postMessage("skip-waiting");
  });
  bar.append(button);
  document.body.append(bar);
}

function watch(registration) {
  const waiting = () => registration.waiting && navigator.serviceWorker.controller && offer(registration.waiting);
  const follow = (next) => next?.addEventListener("statechange", () => next.state === "installed" && waiting());
  waiting();
  // The navigation may have found the deploy before this ran: it is installing already.
  follow(registration.installing);
  registration.addEventListener("updatefound", () => follow(registration.installing));
  // A tab left open finds a deploy made since (the browser also checks on every navigation).
  setInterval(() => registration.update().catch(() => {}), 30 * 60 * 1000);
}

async function active(registration) {
  const worker = registration.installing ?? registration.waiting ?? registration.active;
  if (!worker || worker.state === "activated") return;
  await new Promise((resolve) => worker.addEventListener("statechange", () => worker.state === "activated" && resolve()));
}

async function register() {
  try {
    const registration = await navigator.serviceWorker.register("./sw.js");
    if (!registration) return null; // registration blocked (an automated browser may do that)
    watch(registration);
    return registration;
  } catch (e) {
    console.warn(`no service worker (the app still works, online only): ${e}`);
    return null;
  }
}

export const ready = (async () => {
  if (!("serviceWorker" in navigator)) return;
  if (self.crossOriginIsolated || navigator.serviceWorker.controller || sessionStorage.getItem(TRIED)) {
    // Nothing to wait for: register once the page has loaded, so that the service worker's first
    // downloads find the files the page fetched in the HTTP cache (a 304 each).
    if (document.readyState === "complete") register();
    else addEventListener("load", register, { once: true });
    return;
  }
  const registration = await register();
  if (!registration) return;
  await active(registration);
  sessionStorage.setItem(TRIED, "1");
  location.reload();
  await new Promise(() => {});
})();

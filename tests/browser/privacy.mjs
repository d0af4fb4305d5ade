// The privacy checks every browser test ends with: `requests` as the browser recorded them,
// `served` as the test's server saw them. Fails (through `check`) on a request to another origin,
// any request that is not a GET or carries a body, and any fetch of a file the user gave the
// page (`private`: a pattern of their extensions) outside the app's own `models/`.
export function checkPrivacy({ requests, served, origin, check, private: pattern, what }) {
  const foreign = requests.filter((r) => !(r.url.startsWith(origin + "/") || r.url.startsWith("blob:" + origin) || r.url.startsWith("data:")));
  check(foreign.length === 0, `every request stays on ${origin}${foreign.length ? ": " + foreign.map((r) => r.url).join(", ") : ""}`);
  const carrying = requests.filter((r) => r.method !== "GET" || r.body > 0);
  check(carrying.length === 0, `no request sends data (${requests.length} requests, all GET without a body)`);
  const leaked = served.filter((r) => r.method !== "GET" || (pattern.test(r.url) && !r.url.includes("/models/")));
  check(leaked.length === 0, `the server saw no uploads or fetches of ${what}: ${leaked.map((r) => r.url).join(", ")}`);
}

// Netlify build plugin: the deploy context's API must answer GET /readyz with 200 before Netlify
// builds (and then publishes) the front end that calls it. Runs in Netlify's build and in
// `netlify build` (also --offline). Node 18+: fetch and AbortSignal.timeout are built in.
//
// BACKEND_URL is the one the build writes into public/_redirects (netlify.toml's
// [build.environment], or a [context.<name>.environment] for previews and branches).
// SKIP_BACKEND_CHECK=true skips the check, for planned maintenance: say so in the deploy log.

const TRUE = new Set(["1", "true", "yes", "on"]);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One line of printable text: what a server or an environment variable holds is not trusted.
const printable = (value) => String(value).replace(/[^\x20-\x7e]/g, "?").slice(0, 200);
// A URL's user and password never reach the log.
const shown = (value) => printable(String(value).replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, "$1***@"));

// Documentation names (RFC 2606, 6761): netlify.toml's placeholder, never a real API.
const RESERVED_TLDS = new Set(["test", "invalid", "example"]);
const RESERVED_DOMAINS = ["example.com", "example.org", "example.net"];
const reserved = (host) => {
  const name = host.toLowerCase().replace(/\.$/, "");
  return RESERVED_TLDS.has(name.split(".").pop()) || RESERVED_DOMAINS.some((d) => name === d || name.endsWith(`.${d}`));
};
const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]"]);

// The build step's own rule (cnd_toolkit/netlify/redirects.py): an https origin, no path, query, fragment
// or credentials. Plain http only to a loopback address (a test backend on the build machine).
// Anything but printable ASCII is refused, as the build step refuses it: URL parsers drop some
// characters (tab, CR, LF, leading controls) and fold others into ASCII (the Kelvin sign into k),
// so the host checked would not be the text the build step writes.
const UNSAFE = /[^\x21-\x7e]/;
const origin = (backend) => {
  if (UNSAFE.test(backend)) {
    return { problem: "has whitespace, a control or a non-ASCII character in it; an origin has none (write xn--...)" };
  }
  let base;
  try {
    base = new URL(backend);
  } catch {
    return { problem: "is not an http(s) URL" };
  }
  if (!["http:", "https:"].includes(base.protocol)) return { problem: "is not an http(s) URL" };
  if (base.username || base.password) return { problem: "has a user or password in it; the API's origin has none" };
  if (base.protocol === "http:" && !LOOPBACK.has(base.hostname)) return { problem: "is not https (Netlify proxies to https origins)" };
  if (base.pathname !== "/" || base.search || base.hash) return { problem: "has a path, query or fragment; give the origin only, e.g. https://api.example.com" };
  return { url: new URL("/readyz", base), host: base.hostname };
};

export const onPreBuild = async ({ utils, inputs }) => {
  const backend = process.env.BACKEND_URL || "";
  const skip = (process.env.SKIP_BACKEND_CHECK || "").trim().toLowerCase();
  if (!backend) {
    return utils.build.failBuild(
      "backend-ready: BACKEND_URL is not set for this deploy context; set it in netlify.toml's " +
        "[build.environment] or [context.<name>.environment]",
    );
  }
  const { url, host, problem } = origin(backend);
  if (problem) return utils.build.failBuild(`backend-ready: BACKEND_URL=${JSON.stringify(shown(backend))} ${problem}`);
  if (reserved(host)) {
    return utils.build.failBuild(
      `backend-ready: BACKEND_URL=${JSON.stringify(shown(backend))} is a documentation host (netlify.toml's placeholder), ` +
        "not your API: set this context's BACKEND_URL to the API's public origin",
    );
  }
  if (TRUE.has(skip)) {
    console.log(`backend-ready: SKIP_BACKEND_CHECK=${printable(skip)}: ${shown(url)} not checked (planned maintenance)`);
    return;
  }
  const attempts = Math.max(1, Math.min(10, Number(inputs.attempts) || 3));
  const seconds = Math.max(1, Math.min(60, Number(inputs.timeout) || 10));
  let outcome = "";
  for (let attempt = 1; attempt <= attempts; attempt += 1) {
    try {
      const response = await fetch(url, {
        redirect: "manual",
        signal: AbortSignal.timeout(seconds * 1000),
        headers: { "User-Agent": "netlify-build backend-ready", Accept: "application/json" },
      });
      // The body, read within the same timeout and up to 64 KB: an endless one is no answer.
      const reader = response.body ? response.body.getReader() : null;
      for (let size = 0; reader; ) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.length;
        if (size > 65536) {
          await reader.cancel().catch(() => undefined);
          throw Object.assign(new Error("a body of more than 64 KB; /readyz answers a few bytes"), { name: "TooLong" });
        }
      }
      if (response.status === 200) {
        console.log(`backend-ready: ${shown(url)} answered 200`);
        return;
      }
      outcome = `answered ${response.status}${response.statusText ? ` ${printable(response.statusText)}` : ""}`;
    } catch (error) {
      const cause = error && error.cause ? error.cause.code || error.cause.message : "";
      outcome =
        error && error.name === "TimeoutError"
          ? `did not answer within ${seconds} s`
          : error && error.name === "TooLong"
            ? `answered with ${error.message}`
            : `could not be reached (${printable(cause || error)})`;
    }
    if (attempt < attempts) await sleep(1000 * attempt);
  }
  return utils.build.failBuild(
    `backend-ready: ${shown(url)} ${outcome} (${attempts} attempt${attempts === 1 ? "" : "s"}): Netlify will not publish a ` +
      "front end whose API is down. Bring the API up (inv status, inv deploy), or for planned maintenance set " +
      "SKIP_BACKEND_CHECK=true in this context's environment.",
  );
};

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

export const onPreBuild = async ({ utils, inputs }) => {
  const backend = (process.env.BACKEND_URL || "").trim();
  const skip = (process.env.SKIP_BACKEND_CHECK || "").trim().toLowerCase();
  if (TRUE.has(skip)) {
    console.log(`backend-ready: SKIP_BACKEND_CHECK=${printable(skip)}: ${printable(backend)}/readyz not checked (planned maintenance)`);
    return;
  }
  if (!backend) {
    return utils.build.failBuild(
      "backend-ready: BACKEND_URL is not set for this deploy context; set it in netlify.toml's " +
        "[build.environment] or [context.<name>.environment]",
    );
  }
  let url;
  try {
    const base = new URL(backend);
    if (!["http:", "https:"].includes(base.protocol)) throw new Error("not http(s)");
    url = new URL("/readyz", base);
  } catch {
    return utils.build.failBuild(`backend-ready: BACKEND_URL=${JSON.stringify(printable(backend))} is not an http(s) URL`);
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
      await response.arrayBuffer().catch(() => undefined);
      if (response.status === 200) {
        console.log(`backend-ready: ${url} answered 200`);
        return;
      }
      outcome = `answered ${response.status}${response.statusText ? ` ${printable(response.statusText)}` : ""}`;
    } catch (error) {
      const cause = error && error.cause ? error.cause.code || error.cause.message : "";
      outcome = error && error.name === "TimeoutError" ? `did not answer within ${seconds} s` : `could not be reached (${printable(cause || error)})`;
    }
    if (attempt < attempts) await sleep(1000 * attempt);
  }
  return utils.build.failBuild(
    `backend-ready: ${url} ${outcome} (${attempts} attempt${attempts === 1 ? "" : "s"}): Netlify will not publish a ` +
      "front end whose API is down. Bring the API up (inv status, inv deploy), or for planned maintenance set " +
      "SKIP_BACKEND_CHECK=true in this context's environment.",
  );
};

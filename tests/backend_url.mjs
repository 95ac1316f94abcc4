// The backend-ready build plugin and Netlify's _redirects parser on a batch of BACKEND_URLs, for
// tests/test_backend_url_fuzz.py: one node process for every case.
//
//   node tests/backend_url.mjs NODE_MODULES PLUGIN_INDEX_JS < cases.json > results.json
//
// A case is {raw, redirects}: the BACKEND_URL, and the _redirects file the build step wrote for
// it (base64) or null. For each case this prints
//   plugin:    {refused: message} or {checks: the URL the plugin would ask} (SKIP_BACKEND_CHECK
//              set, so nothing is fetched; the URL is what it prints it would have checked);
//   redirects: the rules and errors @netlify/redirect-parser reads from the file, or null.
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [modules, pluginPath] = process.argv.slice(2);
const { parseAllRedirects } = await import(join(modules, '@netlify/redirect-parser/lib/index.js'));
const { onPreBuild } = await import(pluginPath);

class Failed extends Error {}
const utils = { build: { failBuild: (message) => { throw new Failed(message); } } };
const dir = mkdtempSync(join(tmpdir(), 'backend-url-'));
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const out = [];
const log = console.log;
for (const { raw, redirects } of JSON.parse(Buffer.concat(chunks).toString())) {
  process.env.BACKEND_URL = raw;
  process.env.SKIP_BACKEND_CHECK = 'true';
  let plugin;
  const said = [];
  console.log = (line) => said.push(String(line));
  try {
    await onPreBuild({ utils, inputs: {} });
    const checks = said.join('\n').match(/: (\S+)\/readyz not checked/);
    plugin = checks ? { checks: checks[1] } : { said: said.join('\n') };
  } catch (error) {
    plugin = error instanceof Failed ? { refused: error.message } : { crashed: String(error && error.stack) };
  } finally {
    console.log = log;
  }
  let parsed = null;
  if (redirects !== null) {
    const file = join(dir, '_redirects');
    writeFileSync(file, Buffer.from(redirects, 'base64'));
    const result = await parseAllRedirects({ redirectsFiles: [file], minimal: true });
    parsed = { rules: result.redirects, errors: result.errors.map((e) => String(e.message ?? e)) };
  }
  out.push({ plugin, redirects: parsed });
}
rmSync(dir, { recursive: true, force: true });
process.stdout.write(JSON.stringify(out));

// Netlify's own parsers (@netlify/redirect-parser, @netlify/headers-parser) on a batch of sites,
// for tests/test_netlify_parsers.py: one node process for every case.
//
//   node tests/netlify_parsers.mjs NODE_MODULES < cases.json > results.json
//
// A case is {redirects, headers, toml}: each file's bytes in base64, or null when absent. Files
// are written as bytes, so node decodes them exactly as it decodes a deploy's files. For each
// case this prints:
//   lines:   every _redirects line the parser reads (not blank, not a comment), parsed alone
//            (the parser is line by line), with its rules and errors;
//   blocks:  every _headers block (a path line and the lines up to the next path, or the lines
//            before the first path) parsed alone, with its rules and errors;
//   toml:    whether netlify.toml could be read at all (as the parsers' parseConfig reads it),
//            and the errors in its [[redirects]] and [[headers]];
//   all:     the whole site as a deploy sees it: rules in Netlify's order, and every error.
// Each part is parsed from a file with the same line numbers as in the whole file.
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';

const modules = process.argv[2];
const { parseAllRedirects } = await import(join(modules, '@netlify/redirect-parser/lib/index.js'));
const { parseAllHeaders } = await import(join(modules, '@netlify/headers-parser/lib/index.js'));
const toml = createRequire(join(modules, '@netlify/redirect-parser/package.json'))('@iarna/toml');

const dir = mkdtempSync(join(tmpdir(), 'netlify-parsers-'));
const file = (name) => join(dir, name);
const errors = (list) => list.map((error) => String(error.message ?? error));

const redirectLines = async (text) => {
  const out = [];
  const lines = text.split('\n');
  for (const [index, line] of lines.entries()) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    writeFileSync(file('line'), '\n'.repeat(index) + line);
    const parsed = await parseAllRedirects({ redirectsFiles: [file('line')], minimal: true });
    out.push({ line: index + 1, rules: parsed.redirects, errors: errors(parsed.errors) });
  }
  return out;
};

const headerBlocks = async (text) => {
  const lines = text.split('\n');
  const starts = [0, ...lines.flatMap((line, i) => (i > 0 && line.trim().startsWith('/') ? [i] : []))];
  const out = [];
  for (const [n, start] of starts.entries()) {
    const end = n + 1 < starts.length ? starts[n + 1] : lines.length;
    writeFileSync(file('block'), '\n'.repeat(start) + lines.slice(start, end).join('\n'));
    const parsed = await parseAllHeaders({ headersFiles: [file('block')], minimal: true });
    out.push({ start: start + 1, end, rules: parsed.headers, errors: errors(parsed.errors) });
  }
  return out;
};

// As both parsers' parseConfig reads netlify.toml: TOML, then a JSON round trip.
const tomlReadable = (text) => {
  try {
    JSON.parse(JSON.stringify(toml.parse(text)));
    return { ok: true };
  } catch (error) {
    return { ok: false, error: String(error.message ?? error).split('\n')[0] };
  }
};

const cases = JSON.parse(await new Promise((resolve) => {
  let data = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => (data += chunk));
  process.stdin.on('end', () => resolve(data));
}));

const results = [];
for (const site of cases) {
  const bytes = (value) => (value === null ? null : Buffer.from(value, 'base64'));
  const files = { redirects: bytes(site.redirects), headers: bytes(site.headers), toml: bytes(site.toml) };
  for (const [name, content] of Object.entries(files)) {
    rmSync(file(name), { force: true });
    if (content !== null) writeFileSync(file(name), content);
  }
  const text = (content) => (content === null ? '' : content.toString('utf8'));
  const all = {
    redirectsFiles: [file('redirects')],
    netlifyConfigPath: file('toml'),
    minimal: true,
  };
  const redirects = await parseAllRedirects(all);
  const headers = await parseAllHeaders({ ...all, headersFiles: [file('headers')] });
  const tomlRedirects = await parseAllRedirects({ netlifyConfigPath: file('toml'), minimal: true });
  const tomlHeaders = await parseAllHeaders({ netlifyConfigPath: file('toml'), minimal: true });
  results.push({
    lines: await redirectLines(text(files.redirects)),
    blocks: await headerBlocks(text(files.headers)),
    toml: {
      ...(files.toml === null ? { ok: true } : tomlReadable(text(files.toml))),
      errors: errors([...tomlRedirects.errors, ...tomlHeaders.errors]),
    },
    all: {
      redirects: redirects.redirects,
      redirectErrors: errors(redirects.errors),
      headers: headers.headers,
      headerErrors: errors(headers.errors),
    },
  });
}
rmSync(dir, { recursive: true, force: true });
process.stdout.write(JSON.stringify(results));

// The package as its users meet it. `npm pack` (which builds dist/ through "prepare"); the
// tarball's file list; the tarball installed offline into a new project, from the npm cache
// that `npm ci` filled (no tsx, no TypeScript, no @types/node there); a TypeScript app
// compiled by plain tsc with `tsc --init`'s settings and a plain .mjs file, both generating
// text with the shipped model through `import … from 'dsv3'`, and the installed `dsv3`
// command. Last, the first `npx dsv3` in this checkout: npx links the folder into a fresh npx
// cache and runs its install hooks again, which must not build anything a second time.

import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { REPO_ROOT } from '../helpers/golden.ts';
import { DeepseekV3 } from '../../src/model/deepseek-v3.ts';
import { Tokenizer } from '../../src/text/tokenizer.ts';
import { loadKernels, refKernels } from '../../src/kernels/index.ts';
import { nativeAddonPath, nativeInfo } from '../../src/kernels/native.ts';

const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const PKG = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
  name: string; version: string; license?: string; engines?: Record<string, string>;
  bin: Record<string, string>; dependencies: Record<string, string>;
};
const PROMPT = 'The jury said';
const TOKENS = 12;

// The app, in the package's simplest stable names: greedy decoding by hand. The same text is
// the TypeScript app and the .mjs file (it has no type annotations).
const APP = `import { DeepseekV3, Tokenizer, loadKernels } from 'dsv3';

const dir = 'node_modules/dsv3/models/default';
const model = DeepseekV3.load(dir, { kernels: loadKernels() });
const tok = Tokenizer.fromDir(dir);
const cache = model.newCache();
const ids = [];
let next = tok.encode(${JSON.stringify(PROMPT)}, { addSpecialTokens: true });
for (let i = 0; i < ${TOKENS}; i++) {
  const { logits } = model.forward([{ ids: next, cache }], { logits: 'last' });
  let best = 0;
  logits.forEach((v, j) => { if (v > (logits[best] ?? v)) best = j; });
  ids.push(best);
  next = [best];
}
console.log(JSON.stringify({ ids, text: tok.decode(ids) }));
`;
// The same continuation through the async API most users start with: load(), then a text
// stream from model.generate (greedy), and its result.
const ASYNC_APP = `import { load } from 'dsv3';

const model = await load('node_modules/dsv3/models/default');
const stream = model.generate(${JSON.stringify(PROMPT)}, { maxTokens: ${TOKENS}, temperature: 0 });
let streamed = '';
for await (const chunk of stream) streamed += chunk;
const r = await stream.result;
console.log(JSON.stringify({ ids: r.ids, text: r.text, streamed, finish: r.finish }));
`;
// Appended to the TypeScript app only: fails to compile if the package's types were missing
// (everything would be \`any\` and the directive unused).
const TYPED = `
export function typesAreReal() {
  // @ts-expect-error Tokenizer.encode takes a string
  Tokenizer.fromDir('.').encode(42);
}
`;

// npm's settings that say where its cache, registry and Node headers are; the other npm_*
// variables (npm test's own, e.g. npm_config_local_prefix pointing here) must not reach the
// npm and node processes started below, nor DSV3_FROM_SOURCE (users run dist/).
const KEEP_NPM = new Set(['npm_config_cache', 'npm_config_userconfig', 'npm_config_globalconfig',
  'npm_config_registry', 'npm_config_cafile', 'npm_config_nodedir', 'npm_config_proxy',
  'npm_config_https_proxy', 'npm_config_noproxy', 'npm_config_strict_ssl']);
function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || k.startsWith('DSV3_') || k === 'NODE_TEST_CONTEXT') continue;
    if (k.toLowerCase().startsWith('npm_') && !KEEP_NPM.has(k.toLowerCase())) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

function run(cmd: string, args: string[], cwd: string, env: Record<string, string>, timeout = 300_000) {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout, shell: process.platform === 'win32' });
  const seconds = (performance.now() - t0) / 1000;
  return { code: r.status, out: r.stdout ?? '', err: `${r.stderr ?? ''}${r.error ? String(r.error) : ''}`, seconds };
}

function ok(cmd: string, args: string[], cwd: string, env: Record<string, string>) {
  const r = run(cmd, args, cwd, env);
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')} (in ${cwd}) failed:\n${r.out}\n${r.err}`);
  return r;
}

/** Files under dir, relative to it, with / separators. */
function walk(dir: string, base = dir, out: string[] = []): string[] {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) walk(p, base, out);
    else out.push(relative(base, p).split('\\').join('/'));
  }
  return out;
}

// The same kernels in this process and in the apps: the addon this checkout built, else the
// TypeScript ones.
const native = nativeInfo() !== null;
const kernelEnv: Record<string, string> = native ? { DSV3_NATIVE_PATH: nativeAddonPath() } : { DSV3_KERNELS: 'ref' };

/** What the app must print, computed here from the sources. */
function expected(): { ids: number[]; text: string } {
  const dir = join(REPO_ROOT, 'models/default');
  const model = DeepseekV3.load(dir, { kernels: native ? loadKernels() : refKernels });
  const tok = Tokenizer.fromDir(dir);
  const cache = model.newCache();
  const ids: number[] = [];
  let next = tok.encode(PROMPT, { addSpecialTokens: true });
  for (let i = 0; i < TOKENS; i++) {
    const { logits } = model.forward([{ ids: next, cache }], { logits: 'last' });
    let best = 0;
    logits.forEach((v, j) => { if (v > logits[best]) best = j; });
    ids.push(best);
    next = [best];
  }
  return { ids, text: tok.decode(ids) };
}

describe('the npm package', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'dsv3-pack-'));
  const tarball = join(tmp, `${PKG.name}-${PKG.version}.tgz`);
  const app = join(tmp, 'app');
  let packed: string[] = [];
  let notInstalled: string | false = 'the install test did not run';
  after(() => rmSync(tmp, { recursive: true, force: true }));

  before(() => {
    // "prepare" compiles src/ into dist/ unless dist/ is already built from these sources.
    ok(NPM, ['pack', '--pack-destination', tmp, '--no-audit', '--no-fund'], REPO_ROOT, cleanEnv());
    assert.ok(existsSync(tarball), `npm pack wrote no ${tarball}`);
    packed = ok('tar', ['-tzf', tarball], tmp, cleanEnv()).out.split('\n').filter(Boolean)
      .map((f) => f.replace(/^package\//, ''));
  });

  it('holds dist/ (JavaScript and .d.ts for every source), the native sources and the model, and no tests', () => {
    const has = new Set(packed);
    const need = ['package.json', 'README.md', 'LICENSE', 'bin/dsv3.js', 'binding.gyp', 'scripts/build-native.mjs',
      'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'dist/server/web/index.html',
      ...['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'].map((f) => `models/default/${f}`),
      ...walk(join(REPO_ROOT, 'native')).map((f) => `native/${f}`)];
    for (const f of walk(join(REPO_ROOT, 'src')).filter((f) => !/\.test\.[cm]?[jt]s$/.test(f))) {
      if (f.endsWith('.ts') && !f.endsWith('.d.ts')) need.push(`dist/${f.replace(/\.ts$/, '.js')}`, `dist/${f.replace(/\.ts$/, '.d.ts')}`);
      else need.push(`dist/${f}`); // copied as it is: hand-written .js and .d.ts, the web page
    }
    assert.deepEqual(need.filter((f) => !has.has(f)), [], 'files missing from the tarball');
    const unwanted = packed.filter((f) =>
      /^(src|test|bench|\.ci|build|node_modules|runs|test-artifacts)\//.test(f) ||
      /\.test\.[cm]?[jt]s$/.test(f) || (f.endsWith('.ts') && !f.endsWith('.d.ts')) ||
      (f.startsWith('scripts/') && f !== 'scripts/build-native.mjs') || f === 'dist/.build-hash');
    assert.deepEqual(unwanted, [], 'files that do not belong in the tarball');
  });

  it('installs offline into a new project, without tsx, TypeScript or @types/node', (t) => {
    // A lockfile for the new project: the tarball, and dsv3's dependencies as this checkout's
    // package-lock.json pins them (all in the npm cache after `npm ci`).
    const lock = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean; link?: boolean }>;
    };
    const file = `file:${PKG.name}-${PKG.version}.tgz`;
    const packages: Record<string, unknown> = {
      '': { name: 'dsv3-app', dependencies: { [PKG.name]: file } },
      [`node_modules/${PKG.name}`]: {
        version: PKG.version, resolved: file,
        integrity: `sha512-${createHash('sha512').update(readFileSync(tarball)).digest('base64')}`,
        hasInstallScript: true, license: PKG.license, dependencies: PKG.dependencies, bin: PKG.bin, engines: PKG.engines,
      },
    };
    for (const [k, v] of Object.entries(lock.packages)) {
      if (k.startsWith('node_modules/') && !v.dev && !v.link) packages[k] = v;
    }
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify(
      { name: 'dsv3-app', private: true, type: 'module', dependencies: { [PKG.name]: file } }, null, 2));
    writeFileSync(join(app, 'package-lock.json'), JSON.stringify(
      { name: 'dsv3-app', lockfileVersion: 3, requires: true, packages }, null, 2));
    writeFileSync(join(app, `${PKG.name}-${PKG.version}.tgz`), readFileSync(tarball));
    // DSV3_SKIP_NATIVE: the install hook runs but does not compile the addon (a minute on two
    // cores); the apps below use this checkout's addon through DSV3_NATIVE_PATH instead.
    const r = run(NPM, ['ci', '--offline', '--no-audit', '--no-fund'], app, cleanEnv({ DSV3_SKIP_NATIVE: '1' }));
    if (r.code !== 0 && /ENOTCACHED|offline/i.test(r.err)) {
      notInstalled = `dsv3's dependencies are not in the npm cache (run npm ci first):\n${r.err.trim().split('\n').slice(-3).join('\n')}`;
      t.skip(notInstalled);
      return;
    }
    assert.equal(r.code, 0, `npm ci in the new project failed:\n${r.out}\n${r.err}`);
    notInstalled = false;
    const nm = join(app, 'node_modules');
    assert.ok(existsSync(join(nm, 'dsv3/dist/index.js')));
    for (const absent of ['tsx', 'typescript', '@types/node', 'dsv3/src']) {
      assert.ok(!existsSync(join(nm, absent)), `${absent} was installed`);
    }
  });

  it('runs a tsc-compiled TypeScript app and a .mjs file, which generate what the sources do', (t) => {
    if (notInstalled) return t.skip(notInstalled);
    const want = expected();
    assert.equal(want.ids.length, TOKENS);
    writeFileSync(join(app, 'app.ts'), APP + TYPED);
    writeFileSync(join(app, 'app.mjs'), APP);
    const tsc = join(REPO_ROOT, 'node_modules/typescript/bin/tsc');
    ok(process.execPath, [tsc, '--init'], app, cleanEnv());
    // skipLibCheck off (tsc --init turns it on): the package's declarations must check too,
    // with \`types: []\` and no @types/node installed.
    ok(process.execPath, [tsc, '-p', '.', '--skipLibCheck', 'false'], app, cleanEnv());
    for (const file of ['app.js', 'app.mjs']) {
      const r = ok(process.execPath, [file], app, cleanEnv(kernelEnv));
      assert.deepEqual(JSON.parse(r.out), want, `${file} printed ${r.out}`);
    }
  });

  it('runs an app on the async API (load, a streamed generate), which generates what the sources do', (t) => {
    if (notInstalled) return t.skip(notInstalled);
    const want = expected();
    writeFileSync(join(app, 'async.mjs'), ASYNC_APP);
    const r = ok(process.execPath, ['async.mjs'], app, cleanEnv(kernelEnv));
    const got = JSON.parse(r.out) as { ids: number[]; text: string; streamed: string; finish: string };
    // Greedy, so the ids are the hand-made loop's, up to an EOS that ends the stream early.
    assert.ok(got.ids.length > 0, `no tokens: ${r.out}`);
    assert.deepEqual(got.ids, want.ids.slice(0, got.ids.length), `async.mjs printed ${r.out}`);
    assert.equal(got.finish, got.ids.length === TOKENS ? 'length' : 'stop');
    assert.equal(got.streamed, got.text);
  });

  it('runs the installed dsv3 command from dist/', (t) => {
    if (notInstalled) return t.skip(notInstalled);
    const bin = join(app, 'node_modules/.bin/dsv3');
    assert.equal(realpathSync(bin), realpathSync(join(app, 'node_modules/dsv3/bin/dsv3.js')));
    const r = ok(process.execPath, [bin, 'generate', PROMPT, '--max-new-tokens', '4', '--seed', '1'], app, cleanEnv(kernelEnv));
    assert.match(r.err, /dsv3: loading .*models[/\\]default/);
    assert.ok(r.out.trim().length > 0, 'no text on stdout');
  });

  it('first `npx dsv3` here: links this folder into a fresh npx cache, builds nothing again', (t) => {
    // npx installs the folder's own package into its cache and runs its "prepare" and
    // "install" hooks there; both must find their outputs up to date. That holds after
    // `npm ci` in this checkout (the addon's stamp is written by the install hook).
    const check = run(process.execPath, ['scripts/build-native.mjs', '--check'], REPO_ROOT, cleanEnv());
    if (check.code !== 0) {
      return t.skip('the native addon here is not stamped by this checkout\'s install hook (run npm ci, or npm run build:native)');
    }
    const addon = join(REPO_ROOT, 'build/Release/dsv3_native.node');
    const stamp = join(REPO_ROOT, 'dist/.build-hash');
    const before = [statSync(addon).mtimeMs, statSync(stamp).mtimeMs];
    const cache = join(tmp, 'npm-cache');
    const r = run(NPM, ['exec', '--offline', '--cache', cache, '--no-audit', '--no-fund', '--',
      'dsv3', 'generate', PROMPT, '--max-new-tokens', '4', '--seed', '1'], REPO_ROOT, cleanEnv(kernelEnv));
    assert.equal(r.code, 0, `npx dsv3 failed:\n${r.out}\n${r.err}`);
    t.diagnostic(`first npx dsv3 generate: ${r.seconds.toFixed(2)} s`);
    assert.ok(r.out.trim().length > 0, 'no text on stdout');
    assert.deepEqual([statSync(addon).mtimeMs, statSync(stamp).mtimeMs], before, 'the addon or dist/ was built again');
    const npx = join(cache, '_npx');
    const links = readdirSync(npx).map((d) => join(npx, d, 'node_modules', PKG.name)).filter((p) => existsSync(p));
    assert.equal(links.length, 1);
    assert.ok(lstatSync(links[0]).isSymbolicLink() && realpathSync(links[0]) === realpathSync(REPO_ROOT),
      'npx linked this folder (no copy)');
    assert.ok(r.seconds < 20, `npx took ${r.seconds.toFixed(1)} s`);
  });
});

// Builds the native CPU kernels into build/Release/dsv3_native.node.
//
//   node scripts/build-native.mjs            the npm "install" hook: never fails the install;
//                                            on failure it says why, and dsv3 runs on the
//                                            TypeScript kernels (slow) instead
//   node scripts/build-native.mjs --strict   npm run build:native: fails loudly, always builds
//   node scripts/build-native.mjs --check    exits 0 when the install hook would not build, else 1
//
// The built addon is stamped with a hash of what it is made from (native/, binding.gyp, this
// script, the platform, the Node version, CXX and CXXFLAGS). The install hook does not build
// again when the stamp matches and the addon loads: `npx dsv3` links this folder into npx's
// cache and runs the hook again, and that must not cost a second build.
//
// It uses node-gyp (the copy that ships with npm; no download needed) with the running
// Node's own headers when they are installed next to it (<prefix>/include/node, as with
// Debian's nodejs package or the official tarballs), so no network is needed. When
// node-gyp cannot be found or fails, it falls back to calling the C++ compiler directly.
// DSV3_SKIP_NATIVE=1 skips the build; DSV3_NATIVE_BUILD=direct skips node-gyp.

import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, copyFileSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';

const strict = process.argv.includes('--strict');
const check = process.argv.includes('--check');
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'build', 'Release', 'dsv3_native.node');
const stamp = join(root, 'build', 'Release', 'dsv3_native.hash');
const log = (msg) => process.stderr.write(`dsv3: ${msg}\n`);

function giveUp(reason) {
  if (strict) {
    log(`native build failed: ${reason}`);
    process.exit(1);
  }
  log(`native build failed (${reason}); dsv3 will use the TypeScript kernels (slow). ` +
    'Retry with: npm run build:native');
  process.exit(0);
}

/** A directory holding include/node/node_api.h for the running Node, or null. */
function findNodeDir() {
  const hasHeaders = (d) => d && existsSync(join(d, 'include', 'node', 'node_api.h')) &&
    existsSync(join(d, 'include', 'node', 'common.gypi'));
  const env = process.env.npm_config_nodedir;
  if (env && hasHeaders(env)) return resolve(env);
  // <prefix>/bin/node → <prefix>/include/node (Linux/macOS); <dir>/node.exe → <dir>/include/node.
  for (const d of [resolve(dirname(process.execPath), '..'), dirname(process.execPath)]) {
    if (hasHeaders(d)) return d;
  }
  return null;
}

/** Path of node-gyp's CLI script, or null. */
function findNodeGyp() {
  const cands = [];
  if (process.env.npm_config_node_gyp) cands.push(process.env.npm_config_node_gyp);
  try {
    cands.push(createRequire(join(root, 'package.json')).resolve('node-gyp/bin/node-gyp.js'));
  } catch { /* not a local dependency */ }
  const bin = dirname(process.execPath);
  cands.push(join(bin, '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  cands.push(join(bin, 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  for (const c of cands) if (c && existsSync(c)) return c;
  // Last resort: ask npm where its global modules are.
  const r = spawnSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['root', '-g'], {
    encoding: 'utf8', shell: process.platform === 'win32', timeout: 30000,
  });
  if (r.status === 0) {
    const p = join(r.stdout.trim(), 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    if (existsSync(p)) return p;
  }
  return null;
}

function run(cmd, args, opts = {}) {
  return new Promise((res) => {
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let text = '';
    child.stdout.on('data', (d) => { text += d; });
    child.stderr.on('data', (d) => { text += d; });
    child.on('error', (e) => res({ code: -1, text: String(e) }));
    child.on('close', (code) => res({ code, text }));
  });
}

const tail = (text, n = 25) => text.trim().split('\n').slice(-n).join('\n');

async function buildWithNodeGyp(gyp, nodedir) {
  const args = [gyp, 'rebuild', '--release', `--jobs=${Math.max(1, os.availableParallelism?.() ?? os.cpus().length)}`];
  // node-gyp prefers npm_config_nodedir from the environment over --nodedir; a configured
  // nodedir without headers would make it fail, so replace it (or drop it, letting node-gyp
  // use its own header cache or download).
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.toLowerCase() === 'npm_config_nodedir') delete env[k];
  if (nodedir) {
    args.push(`--nodedir=${nodedir}`);
    env.npm_config_nodedir = nodedir;
  }
  log(`building native kernels: node-gyp rebuild${nodedir ? ` (headers from ${nodedir}/include/node)` : ''} …`);
  const r = await run(process.execPath, args, { env });
  if (r.code !== 0) return `node-gyp exited with ${r.code}:\n${tail(r.text)}`;
  return null;
}

/** Direct compile for Linux/macOS, mirroring binding.gyp. */
async function buildDirect(nodedir) {
  if (process.platform === 'win32') return 'no node-gyp, and the direct build supports only Linux and macOS';
  if (!nodedir) return 'no Node headers (include/node/node_api.h) found next to the node binary';
  const cxx = process.env.CXX || ['c++', 'g++', 'clang++'].find((c) => spawnSync(c, ['--version']).status === 0);
  if (!cxx) return 'no C++ compiler (c++, g++ or clang++) found';
  const x86 = process.arch === 'x64' || process.arch === 'ia32';
  const objDir = join(root, 'build', 'direct');
  rmSync(objDir, { recursive: true, force: true });
  mkdirSync(objDir, { recursive: true });
  const common = ['-std=c++17', '-O3', '-fPIC', '-fno-math-errno', '-ffp-contract=off', '-fno-exceptions', '-fno-rtti', '-pthread', `-I${join(nodedir, 'include', 'node')}`,
    '-DNODE_GYP_MODULE_NAME=dsv3_native', ...(x86 ? ['-DDSV3_X86'] : [])];
  const units = [
    ['native/binding.cc', []], ['native/mapfile.cc', []], ['native/ops.cc', []], ['native/pool.cc', []], ['native/quantize.cc', []], ['native/sample.cc', []], ['native/generic/kernels.cc', []],
  ];
  if (x86) {
    units.push(['native/arch/x86/avx2.cc', ['-mavx2', '-mfma', '-mf16c']]);
    units.push(['native/arch/x86/avx512.cc', ['-mavx512f', '-mavx512bw', '-mavx512vl', '-mavx512dq', '-mavx512vnni', '-mavx2', '-mfma', '-mf16c']]);
  }
  log(`building native kernels with ${cxx} directly …`);
  const objs = units.map(([src]) => join(objDir, src.replace(/[/\\]/g, '_') + '.o'));
  const results = await Promise.all(units.map(([src, flags], i) =>
    run(cxx, [...common, ...flags, '-c', join(root, src), '-o', objs[i]])));
  const bad = results.findIndex((r) => r.code !== 0);
  if (bad >= 0) return `${cxx} failed on ${units[bad][0]}:\n${tail(results[bad].text)}`;
  const linkFlags = process.platform === 'darwin' ? ['-bundle', '-undefined', 'dynamic_lookup'] : ['-shared', '-pthread'];
  mkdirSync(dirname(out), { recursive: true });
  const tmp = join(objDir, 'dsv3_native.node');
  const r = await run(cxx, [...objs, ...linkFlags, '-o', tmp]);
  if (r.code !== 0) return `link failed:\n${tail(r.text)}`;
  copyFileSync(tmp, out);
  return null;
}

/** Load the built addon in a fresh process; returns its level or throws. */
function verify() {
  const r = spawnSync(process.execPath, ['-e',
    `const a = require(${JSON.stringify(out)}); process.stdout.write(a.level() + ' ' + a.getThreads())`], {
    encoding: 'utf8', timeout: 60000,
  });
  if (r.status !== 0) throw new Error(`the built addon does not load: ${tail(r.stderr || r.stdout, 5)}`);
  return r.stdout.trim().split(' ');
}

/** Hash of everything the addon is built from. */
function sourceHash() {
  const files = [];
  const walk = (dir) => {
    for (const e of readdirSync(join(root, dir)).sort()) {
      const p = join(dir, e);
      if (statSync(join(root, p)).isDirectory()) walk(p);
      else files.push(p);
    }
  };
  walk('native');
  files.push('binding.gyp', join('scripts', 'build-native.mjs'));
  const h = createHash('sha256');
  h.update(JSON.stringify([process.platform, process.arch, process.versions.node, process.versions.napi,
    process.env.CXX ?? '', process.env.CXXFLAGS ?? '', process.env.DSV3_NATIVE_BUILD ?? '']));
  for (const f of files) {
    h.update(`\n${f.split('\\').join('/')}\n`);
    h.update(readFileSync(join(root, f)));
  }
  return h.digest('hex');
}

/** [level, threads] of the built addon when it is stamped with this hash and loads, else null. */
function upToDate(hash) {
  if (!existsSync(out) || !existsSync(stamp) || readFileSync(stamp, 'utf8').trim() !== hash) return null;
  try {
    return verify();
  } catch {
    return null;
  }
}

async function main() {
  if (process.env.DSV3_SKIP_NATIVE === '1' && !check) {
    log('DSV3_SKIP_NATIVE=1: not building the native kernels');
    return;
  }
  const hash = sourceHash();
  if (check) process.exit(upToDate(hash) ? 0 : 1);
  const built = strict ? null : upToDate(hash);
  if (built) {
    log(`native kernels up to date: ${out} (${built[0]}, ${built[1]} threads)`);
    return;
  }
  rmSync(stamp, { force: true });
  const nodedir = findNodeDir();
  const gyp = process.env.DSV3_NATIVE_BUILD === 'direct' ? null : findNodeGyp();
  let err = gyp ? await buildWithNodeGyp(gyp, nodedir) : 'node-gyp not found';
  if (err) {
    log(`${err}\ntrying the direct compiler build …`);
    const err2 = await buildDirect(nodedir);
    if (err2) giveUp(`${err}\n${err2}`);
  }
  try {
    const [level, threads] = verify();
    writeFileSync(stamp, `${hash}\n`);
    log(`native kernels built: ${out} (${level}, ${threads} threads)`);
  } catch (e) {
    giveUp(e instanceof Error ? e.message : String(e));
  }
}

main().catch((e) => giveUp(e instanceof Error ? e.stack ?? e.message : String(e)));

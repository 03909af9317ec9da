// Compiles src/ (without its tests) into dist/: ESM JavaScript and .d.ts files
// (tsconfig.build.json), plus the files tsc does not emit, copied as they are: hand-written
// .js and .d.ts files and the other files the code reads at run time (the web chat page).
//
//   node scripts/build.mjs           npm run build, and the "prepare" hook (npm ci, npm pack)
//   node scripts/build.mjs --force   builds even when dist/ is up to date
//   node scripts/build.mjs --check   exits 0 when dist/ is up to date, 1 when not; builds nothing
//
// dist/ is stamped with a hash of everything it is made from (scripts/dist-hash.mjs). When the
// stamp matches, nothing is built: `npx dsv3` links this folder into npx's cache and runs
// "prepare" again, and that must not cost a compile. The new tree is compiled aside and swapped
// in, so a failed build leaves dist/ as it was.
//
// A failed build fails `npm run build`, `npm pack` and `npm publish`. As the "prepare" hook of an
// install (npm ci, npm install, npx) it says why and lets the install finish, as the native
// build does: bin/dsv3.js then runs the sources, since dist/ does not match them.

import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { ROOT as root, STAMP, distIsCurrent, inputHash, sourceFiles } from './dist-hash.mjs';

const src = join(root, 'src');
const dist = join(root, 'dist');
const log = (msg) => process.stderr.write(`dsv3: ${msg}\n`);
const installHook = process.env.npm_lifecycle_event === 'prepare' &&
  !['pack', 'publish'].includes(process.env.npm_command ?? '');
function fail(msg) {
  log(installHook ? `${msg}; dsv3 will run the TypeScript sources through tsx. Retry with: npm run build` : msg);
  process.exit(installHook ? 0 : 1);
}

const hash = inputHash(root);
const current = distIsCurrent(root, hash);
if (process.argv.includes('--check')) process.exit(current ? 0 : 1);
if (!process.argv.includes('--force') && current) {
  log('dist/ is up to date');
  process.exit(0);
}
let tsc;
try {
  tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc');
} catch {
  fail('building dist/ needs TypeScript, a devDependency of dsv3: run npm ci (or npm install) first');
}

const tmp = join(root, `dist.tmp-${process.pid}`);
rmSync(tmp, { recursive: true, force: true });
log('compiling src/ into dist/ …');
const t0 = Date.now();
const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', tmp], {
  cwd: root, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8',
});
if (r.status !== 0) {
  rmSync(tmp, { recursive: true, force: true });
  process.stderr.write(r.stdout + r.stderr);
  fail(`building dist/ failed: tsc exited with ${r.status ?? r.signal}`);
}
// Files tsc does not emit: .js with their .d.ts, and files the code reads next to itself
// (new URL('./web/index.html', import.meta.url)).
for (const f of sourceFiles(root).filter((f) => !f.endsWith('.ts') || f.endsWith('.d.ts'))) {
  const to = join(tmp, relative(src, join(root, f)));
  mkdirSync(dirname(to), { recursive: true });
  copyFileSync(join(root, f), to);
}
writeFileSync(join(tmp, STAMP), `${hash}\n`);
rmSync(dist, { recursive: true, force: true });
renameSync(tmp, dist);
log(`dist/ built in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

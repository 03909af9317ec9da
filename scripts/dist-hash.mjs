// What dist/ is stamped with: a hash of everything it is compiled from (the sources without
// their tests, the tsconfigs, package.json, the build script, the TypeScript version).
// scripts/build.mjs writes it to dist/.build-hash; bin/dsv3.js, in a checkout, runs dist/ only
// when it matches, and the sources otherwise.

import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const STAMP = '.build-hash';

/** Files under src/ that dist/ is made from (not tests), sorted, relative to the root. */
export function sourceFiles(root = ROOT) {
  const out = [];
  const walk = (dir) => {
    for (const e of readdirSync(dir).sort()) {
      const p = join(dir, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (!/\.test\.[cm]?[jt]s$/.test(e)) out.push(relative(root, p));
    }
  };
  walk(join(root, 'src'));
  return out;
}

/** The installed TypeScript's version, or null. */
export function typescriptVersion(root = ROOT) {
  try {
    const req = createRequire(join(root, 'package.json'));
    return JSON.parse(readFileSync(req.resolve('typescript/package.json'), 'utf8')).version;
  } catch {
    return null;
  }
}

export function inputHash(root = ROOT) {
  const h = createHash('sha256');
  h.update(`typescript ${typescriptVersion(root)}\n`);
  for (const f of [...sourceFiles(root), 'tsconfig.json', 'tsconfig.build.json', 'package.json', 'scripts/build.mjs', 'scripts/dist-hash.mjs']) {
    h.update(`${f.split('\\').join('/')}\n`);
    h.update(readFileSync(join(root, f)));
    h.update('\n');
  }
  return h.digest('hex');
}

/** Whether dist/ is built from the sources as they are now. */
export function distIsCurrent(root = ROOT, hash = inputHash(root)) {
  const stamp = join(root, 'dist', STAMP);
  return existsSync(join(root, 'dist', 'index.js')) && existsSync(stamp) &&
    readFileSync(stamp, 'utf8').trim() === hash;
}

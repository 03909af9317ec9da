// bin/dsv3.js picks what to run: in the published package (no src/) always dist/; in a checkout
// dist/ only when its stamp matches the sources as they are now, else the sources through tsx;
// DSV3_FROM_SOURCE=1 always the sources. Checked on a small checkout made of the real bin/dsv3.js
// and scripts/dist-hash.mjs, whose src/ and dist/ entry points say which of them ran.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT } from '../helpers/golden.ts';
import { tempDir } from '../helpers/fixtures.ts';

// scripts/dist-hash.mjs is plain JavaScript without declarations.
const { inputHash: hashOf } = await import(pathToFileURL(join(REPO_ROOT, 'scripts/dist-hash.mjs')).href) as
  { inputHash: (root: string) => string };

function checkout(): string {
  const root = tempDir('dsv3-bin-');
  for (const d of ['bin', 'scripts', 'src/cli', 'dist/cli']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync(join(REPO_ROOT, 'bin/dsv3.js'), join(root, 'bin/dsv3.js'));
  for (const f of ['scripts/dist-hash.mjs', 'scripts/build.mjs', 'package.json', 'tsconfig.json', 'tsconfig.build.json']) {
    copyFileSync(join(REPO_ROOT, f), join(root, f));
  }
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(root, 'node_modules'), 'dir'); // tsx, typescript
  const entry = (what: string) => `export async function main(argv) { console.log('${what}', argv.join(' ')); return 0; }\n`;
  writeFileSync(join(root, 'src/cli/main.ts'), entry('src').replace('(argv)', '(argv: string[])'));
  writeFileSync(join(root, 'dist/cli/main.js'), entry('dist'));
  writeFileSync(join(root, 'dist/index.js'), '');
  writeFileSync(join(root, 'dist/.build-hash'), `${hashOf(root)}\n`);
  return root;
}

function dsv3(root: string, env: Record<string, string> = {}): string {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DSV3_')));
  const r = spawnSync(process.execPath, [join(root, 'bin/dsv3.js'), 'generate', 'x'], {
    encoding: 'utf8', env: { ...clean, ...env },
  });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

describe('bin/dsv3.js', () => {
  it('runs dist/ when it is built from the sources as they are', () => {
    assert.equal(dsv3(checkout()), 'dist generate x');
  });

  it('runs the sources when one changed after the build, or when dist/ is missing', () => {
    const root = checkout();
    writeFileSync(join(root, 'src/cli/extra.ts'), 'export const x = 1;\n');
    assert.equal(dsv3(root), 'src generate x');
    const root2 = checkout();
    rmSync(join(root2, 'dist'), { recursive: true });
    assert.equal(dsv3(root2), 'src generate x');
  });

  it('runs the sources with DSV3_FROM_SOURCE=1', () => {
    assert.equal(dsv3(checkout(), { DSV3_FROM_SOURCE: '1' }), 'src generate x');
  });

  it('runs dist/ where there is no src/ (the published package), whatever DSV3_FROM_SOURCE says', () => {
    const root = checkout();
    rmSync(join(root, 'src'), { recursive: true });
    rmSync(join(root, 'scripts'), { recursive: true });
    assert.equal(dsv3(root, { DSV3_FROM_SOURCE: '1' }), 'dist generate x');
  });
});

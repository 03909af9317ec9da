#!/usr/bin/env node
// Entry point of the `dsv3` command: the compiled CLI in dist/ (built from src/ by `npm ci`,
// `npm run build` and `npm pack`). The published package has no src/ and always runs dist/.
// In a checkout, dist/ runs only when it is built from the sources as they are now
// (scripts/dist-hash.mjs); otherwise, or with DSV3_FROM_SOURCE=1 (which the test suite sets),
// the TypeScript sources run through tsx (a devDependency), so nobody runs a stale dist/.
import { existsSync } from 'node:fs';

const dist = new URL('../dist/cli/main.js', import.meta.url);
const src = new URL('../src/cli/main.ts', import.meta.url);
let entry = dist;
if (existsSync(src) && (process.env.DSV3_FROM_SOURCE === '1' ||
    !(await import('../scripts/dist-hash.mjs')).distIsCurrent())) {
  const { register } = await import('tsx/esm/api');
  register();
  entry = src;
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));

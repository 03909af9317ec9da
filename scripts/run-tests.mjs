// Runs every *.test.ts under src/ and test/ with node's built-in runner.
// Node 20's runner does not expand globs and passes when it finds nothing, so we
// collect the files ourselves and fail loudly when there are none.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

function collect(dir, out) {
  let entries;
  try { entries = readdirSync(dir); } catch { return out; }
  for (const e of entries) {
    if (e === 'node_modules') continue;
    const p = join(dir, e);
    if (statSync(p).isDirectory()) collect(p, out);
    else if (e.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const filter = process.argv.slice(2);
let files = collect('src', collect('test', [])).sort();
if (filter.length) files = files.filter((f) => filter.some((s) => f.includes(s)));
if (files.length === 0) {
  console.error('run-tests: no test files found');
  process.exit(1);
}
// Files that assert wall-clock waits (how long a long prompt's tokenization holds up another
// stream) run after the others, alone: beside another file's test servers and kernel threads on
// two cores, the other stream's longest gap read 63–130 ms where alone it reads 40–50.
const ALONE = ['test/e2e/robustness.test.ts'];
const alone = files.filter((f) => ALONE.some((a) => f.endsWith(a)));
const run = (list, concurrency) => list.length === 0 ? 0 : spawnSync(process.execPath, ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, ...list], {
  stdio: 'inherit',
  // Every dsv3 command the tests start runs the sources, not a dist/ older than them.
  env: { ...process.env, DSV3_FROM_SOURCE: '1' },
}).status ?? 1;
const a = run(files.filter((f) => !alone.includes(f)), 2);
const b = run(alone, 1);
process.exit(a || b);

// CI runs the benchmark harness only as a smoke test: a tiny checkpoint, dsv3's side, every
// figure present and positive in the --json line format the outside checks read.

import { it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/golden.ts';

it('npm run bench -- --smoke --json prints one well-formed line per figure', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench/run.ts'), '--smoke', '--json', '--threads', '2'], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    timeout: 180_000,
  });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  const metrics = lines.map((l) => `${l.metric}/${l.prompt}/${l.batch}`);
  for (const m of ['prefill_tps/128/1', 'prefill_tps/512/1', 'decode_tps/0/1', 'decode_tps/512/1', 'decode_tps/128/8', 'peak_rss_mb/0/1', 'roofline_decode_tps/0/1']) {
    assert.ok(metrics.includes(m), `missing ${m}`);
  }
  for (const l of lines) {
    assert.equal(l.model, 'smoke');
    assert.ok(typeof l.dsv3 === 'number' && l.dsv3 > 0, JSON.stringify(l));
    assert.ok('llama_cpp' in l && 'ratio' in l);
  }
});

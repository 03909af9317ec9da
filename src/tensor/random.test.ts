import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from './random.ts';

test('xoshiro128** matches the reference output for state {1, 2, 3, 4}', () => {
  const r = new Rng(0);
  r.state = [1, 2, 3, 4];
  const out = Array.from({ length: 6 }, () => r.nextU32());
  assert.deepEqual(out, [11520, 0, 5927040, 70819200, 2031721883, 1637235492]);
});

test('uniform draws lie in [0, 1) and normals have mean 0 and variance 1', () => {
  const r = new Rng(7);
  let s = 0;
  let s2 = 0;
  const n = 20000;
  for (let i = 0; i < n; i++) {
    const u = r.uniform();
    assert.ok(u >= 0 && u < 1);
    const z = r.normal();
    s += z;
    s2 += z * z;
  }
  assert.ok(Math.abs(s / n) < 0.03);
  assert.ok(Math.abs(s2 / n - 1) < 0.05);
});

test('a seed reproduces its stream; saved state resumes it', () => {
  const a = new Rng(42);
  const b = new Rng(42);
  assert.deepEqual(Array.from({ length: 5 }, () => a.nextU32()), Array.from({ length: 5 }, () => b.nextU32()));
  const saved = a.state;
  const next = a.nextU32();
  const c = new Rng(1);
  c.state = saved;
  assert.equal(c.nextU32(), next);
  assert.notEqual(new Rng(1).nextU32(), new Rng(2).nextU32());
});

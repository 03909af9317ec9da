// The scratch arena: zeroed, non-overlapping arrays until reset, reused after it, and
// large requests left to the heap.

import { it } from 'node:test';
import assert from 'node:assert/strict';
import { Reused, Scratch } from './scratch.ts';

it('Scratch hands out zeroed, aligned, non-overlapping arrays until reset, then reuses its memory', () => {
  const s = new Scratch();
  const sizes = [1, 17, 1000, 60_000, 3, 200_000, 5];
  const got = sizes.map((n, i) => (i % 2 ? s.i32(n) : s.f32(n)));
  got.forEach((a, i) => {
    assert.equal(a.length, sizes[i]);
    assert.ok(a.every((v) => v === 0), `array ${i} is zeroed`);
    assert.equal(a.byteOffset % 64, 0, `array ${i} is 64-byte aligned`);
    a.fill(i + 1);
  });
  got.forEach((a, i) => assert.ok(a.every((v) => v === i + 1), `array ${i} kept its values`));
  // Past 1 MiB of requests the arena moves to another chunk: still no overlap.
  assert.notEqual(got[5].buffer, got[0].buffer);
  s.reset();
  const again = s.f32(1);
  assert.equal(again.buffer, got[0].buffer, 'after reset the first chunk is reused');
  assert.equal(again[0], 0, 'and handed out zeroed');
  const big = s.f32(1 << 20);
  assert.equal(big.byteOffset, 0);
  assert.equal(big.buffer.byteLength, 4 << 20, 'a 4 MiB request is a fresh array of its own');
});

it('Reused hands out views of one array, grown when a request is larger', () => {
  const r = new Reused();
  const a = r.view(10);
  a.fill(3);
  const b = r.view(4);
  assert.equal(b.buffer, a.buffer, 'a smaller request takes the same memory');
  assert.deepEqual([...b], [3, 3, 3, 3], 'not zeroed: the caller writes every element');
  const c = r.view(11);
  assert.equal(c.length, 11);
  assert.notEqual(c.buffer, a.buffer, 'a larger one a new array, at least twice as large');
  assert.equal(r.view(20).buffer, c.buffer);
});

// StopMatcher: hold-back of possible stop-string starts, matches across chunk boundaries.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StopMatcher } from './stop.ts';
import { DsError } from '../errors.ts';

function run(stops: string[], chunks: string[]): { out: string; stopped: boolean; emits: string[] } {
  const m = new StopMatcher(stops);
  const emits: string[] = [];
  let stopped = false;
  for (const c of chunks) {
    const r = m.push(c);
    emits.push(r.emit);
    stopped = r.stopped;
  }
  const tail = m.flush();
  return { out: emits.join('') + tail, stopped, emits };
}

test('no stop strings: text passes straight through', () => {
  const m = new StopMatcher([]);
  assert.deepEqual(m.push('hello'), { emit: 'hello', stopped: false });
  assert.equal(m.flush(), '');
});

test('a stop string inside one chunk cuts the text before it', () => {
  const m = new StopMatcher(['###']);
  assert.deepEqual(m.push('abc###def'), { emit: 'abc', stopped: true });
  assert.deepEqual(m.push('more'), { emit: '', stopped: true });
  assert.equal(m.stopped, true);
  assert.equal(m.flush(), '');
});

test('a stop string split across chunks', () => {
  const m = new StopMatcher(['<|end|>']);
  assert.deepEqual(m.push('Hello <|'), { emit: 'Hello ', stopped: false });
  assert.deepEqual(m.push('en'), { emit: '', stopped: false });
  assert.deepEqual(m.push('d|> ignored'), { emit: '', stopped: true });
  // One character per chunk.
  const r = run(['STOP'], [...'abcSTOxSTOPdef']);
  assert.equal(r.out, 'abcSTOx');
  assert.equal(r.stopped, true);
});

test('a false start is released once it cannot match', () => {
  const m = new StopMatcher(['\n\nUser:']);
  assert.deepEqual(m.push('line\n'), { emit: 'line', stopped: false });
  assert.deepEqual(m.push('\nUs'), { emit: '', stopped: false });
  assert.deepEqual(m.push('ing it'), { emit: '\n\nUsing it', stopped: false });
  assert.equal(m.flush(), '');
});

test('flush returns a held partial match when the stream ends', () => {
  const m = new StopMatcher(['END']);
  assert.deepEqual(m.push('the EN'), { emit: 'the ', stopped: false });
  assert.equal(m.flush(), 'EN');
});

test('several stop strings: the earliest match wins, overlapping prefixes held', () => {
  assert.equal(run(['bc', 'abcd'], ['xab', 'cd']).out, 'x');
  assert.equal(run(['bc', 'abcd'], ['xab', 'ce']).out, 'xa');
  assert.equal(run(['world', 'o'], ['hello world']).out, 'hell');
  const m = new StopMatcher(['aab', 'ab']);
  assert.deepEqual(m.push('xaa'), { emit: 'x', stopped: false });
  assert.deepEqual(m.push('a'), { emit: 'a', stopped: false });
  assert.deepEqual(m.push('b'), { emit: '', stopped: true }); // 'aab' starts first
  // Multi-unit characters are never split by the hold-back.
  assert.equal(run(['😀!'], ['a😀', '😀!b']).out, 'a😀');
});

test('every chunking of a text gives the same output', () => {
  const text = 'one two <stop> three';
  for (let i = 0; i <= text.length; i++) {
    for (let j = i; j <= text.length; j++) {
      const r = run(['<stop>', 'zzz'], [text.slice(0, i), text.slice(i, j), text.slice(j)]);
      assert.equal(r.out, 'one two ', `split at ${i},${j}`);
      assert.equal(r.stopped, true);
    }
  }
});

test('bad stop lists are BAD_INPUT', () => {
  for (const bad of [[''], ['a', 3], 'abc']) {
    assert.throws(() => new StopMatcher(bad as string[]),
      (e: unknown) => e instanceof DsError && e.code === 'BAD_INPUT');
  }
});

// `dsv3 train` as a real process on the tiny preset: Ctrl-C (SIGINT) and SIGTERM save and stop
// within one step, --resume continues to the run's recorded target, a second Ctrl-C aborts
// without saving and leaves the last checkpoint as it was, data preparation reports progress,
// and bad options are refused before any work.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../../test/helpers/golden.ts';
import { tempDir } from '../../test/helpers/fixtures.ts';

const BIN = join(REPO_ROOT, 'bin/dsv3.js');
const root = tempDir('dsv3-train-cli-');
const corpus = join(root, 'corpus.txt');
writeFileSync(
  corpus,
  Array.from({ length: 300 }, (_, i) =>
    [
      `The jury said the case number ${i % 17} was closed after a long day.`,
      `A quick brown fox jumps over the lazy dog ${i % 5} times.`,
      `Results of test ${i % 11} were good and the team was happy.`,
    ][i % 3],
  ).join('\n\n'),
);

/** A tiny run: a log line per step (--eval-every 1), steps of ~0.1–0.3 s on one thread. */
const tiny = (out: string, ...more: string[]) => [
  'train', '--out', out, '--data', `text:${corpus}`, '--preset', 'tiny', '--vocab-size', '320',
  '--batch', '8', '--seq-len', '64', '--eval-every', '1', '--eval-windows', '1', '--threads', '1', ...more,
];

interface Run {
  child: ChildProcess;
  err: () => string;
  out: () => string;
  /** Resolves when a stderr line matches, with the step it names (for /step (\d+):/). */
  waitFor: (re: RegExp) => Promise<RegExpMatchArray>;
  /** Arrival times (ms) of the "step N:" lines, by N. */
  stepTimes: Map<number, number>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

function start(args: string[]): Run {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  let out = '';
  const stepTimes = new Map<number, number>();
  const waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => {
    err += d;
    for (const m of String(d).matchAll(/step (\d+):/g)) stepTimes.set(Number(m[1]), performance.now());
    for (const w of [...waiters]) {
      const m = err.match(w.re);
      if (m) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, at: performance.now() })),
  );
  const waitFor = (re: RegExp) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const m = err.match(re);
      if (m) return resolve(m);
      waiters.push({ re, resolve });
      exit.then(() => setImmediate(() => reject(new Error(`exited before ${re}:\n${err}`))));
    });
  return { child, err: () => err, out: () => out, waitFor, stepTimes, exit };
}

/** Run to the end; the exit status and output. */
async function run(args: string[]) {
  const r = start(args);
  const e = await r.exit;
  return { ...e, err: r.err(), out: r.out() };
}

/** Wait until `sig` is no longer pending for process `pid` (Linux: /proc; elsewhere 50 ms). */
async function delivered(pid: number, sig: NodeJS.Signals): Promise<void> {
  const bit = 1n << BigInt(constants.signals[sig] - 1);
  for (let i = 0; i < 1000; i++) {
    let status: string;
    try {
      status = readFileSync(`/proc/${pid}/status`, 'utf8');
    } catch {
      return void (await new Promise((r) => setTimeout(r, 50)));
    }
    const pending = BigInt('0x' + (status.match(/^ShdPnd:\s*([0-9a-f]+)/m)?.[1] ?? '0'));
    if ((pending & bit) === 0n) return;
    await new Promise((r) => setTimeout(r, 1));
  }
}

const state = (out: string) => JSON.parse(readFileSync(join(out, 'checkpoint', 'trainer_state.json'), 'utf8'));

/** Send `sig` once step `k` is reported; check it stops at step k or k+1 with that checkpoint. */
async function stopAt(out: string, args: string[], sig: NodeJS.Signals, k: number) {
  const r = start(args);
  await r.waitFor(new RegExp(`step ${k}:`));
  const sent = performance.now();
  r.child.kill(sig);
  const e = await r.exit;
  const err = r.err();
  assert.equal(e.signal, null, err);
  assert.equal(e.code, sig === 'SIGINT' ? 130 : 143, err);
  assert.match(err, new RegExp(`${sig}: saving a checkpoint and stopping`));
  const stopped = Number(err.match(/stopped at step (\d+) of/)![1]);
  assert.ok(stopped === k || stopped === k + 1, `signal after step ${k}, stopped at ${stopped}`);
  assert.equal(state(out).step, stopped, 'the checkpoint holds the step it stopped at');
  const summary = JSON.parse(r.out());
  assert.equal(summary.steps, stopped);
  assert.equal(summary.stopped, true);
  // Within one step: the step in flight, the save and the exit.
  const times = [...r.stepTimes.entries()].sort((a, b) => a[0] - b[0]).map((x) => x[1]);
  const step = Math.max(...times.slice(1).map((t, i) => t - times[i]));
  assert.ok(e.at - sent < step + 3000, `exit ${(e.at - sent).toFixed(0)} ms after ${sig}; a step takes ${step.toFixed(0)} ms`);
  return { stopped, err };
}

describe('dsv3 train as a process', () => {
  it('Ctrl-C saves and stops within one step; --resume continues to the recorded target', async () => {
    const out = join(root, 'int');
    const { stopped, err } = await stopAt(out, tiny(out, '--steps', '6', '--warmup', '2'), 'SIGINT', 2);
    // Data preparation reports progress.
    assert.match(err, /training a 320-token BPE tokenizer on \d+ documents/);
    assert.match(err, /tokenizer: counting words in documents \d+\/\d+/);
    assert.match(err, /tokenizer: \d+ merges from \d+ words/);
    assert.match(err, /data: tokenizing documents \d+\/\d+ \(100%\)/);
    // No --steps and no other options: the run's own settings, to its own target (6, not 1000).
    const r = await run(['train', '--out', out, '--resume']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, new RegExp(`resumed at step ${stopped}, training to step 6`));
    assert.equal(JSON.parse(r.out).steps, 6);
    const st = state(out);
    assert.equal(st.step, 6);
    assert.equal(st.run.seq_len, 64);
    assert.equal(st.run.batch, 8);
    assert.equal(st.history.length, 6);
  });

  it('SIGTERM saves and stops within one step; --resume --steps sets a new target', async () => {
    const out = join(root, 'term');
    const tok = join(root, 'int', 'tokenizer');
    const { stopped } = await stopAt(out, tiny(out, '--steps', '200', '--tokenizer', tok), 'SIGTERM', 2);
    const r = await run(['train', '--out', out, '--resume', '--tokenizer', tok, '--steps', String(stopped + 2)]);
    assert.equal(r.code, 0, r.err);
    assert.equal(state(out).step, stopped + 2);
    assert.equal(state(out).run.steps, stopped + 2);
  });

  it('a second Ctrl-C aborts without saving: the last checkpoint stays, and --resume continues from it', async () => {
    const out = join(root, 'abort');
    const r = start(tiny(out, '--steps', '200', '--save-every', '2', '--tokenizer', join(root, 'int', 'tokenizer')));
    await r.waitFor(/step 2:/); // the checkpoint of step 2 is written next
    // Let step 3 begin (the line of step 2 may reach us before the process gets past it).
    await new Promise((res) => setTimeout(res, 40));
    r.child.kill('SIGINT');
    // Two SIGINTs sent back to back merge into one (signals do not queue): as a person's two
    // presses do, let the first reach the process before the second.
    await delivered(r.child.pid!, 'SIGINT');
    r.child.kill('SIGINT');
    const e = await r.exit;
    assert.ok(e.signal === 'SIGINT' || e.code === 130, `exit ${e.code} ${e.signal}:\n${r.err()}`);
    assert.match(r.err(), /SIGINT: aborted without saving/);
    assert.doesNotMatch(r.err(), /checkpoint saved/);
    assert.equal(r.out(), '');
    assert.equal(state(out).step, 2, 'the periodic checkpoint, untouched');
    const again = await run(['train', '--out', out, '--resume', '--steps', '4']);
    assert.equal(again.code, 0, again.err);
    assert.match(again.err, /resumed at step 2, training to step 4/);
    assert.equal(state(out).step, 4);
  });

  it('refuses bad options at once, before training a tokenizer or reading data', async () => {
    const out = join(root, 'bad');
    const cases: [string[], number, RegExp][] = [
      [tiny(out, '--preset', 'huge'), 2, /--preset must be one of default, tiny, got "huge"/],
      [tiny(out, '--lr=-1'), 2, /--lr must be a number > 0, got "-1"/],
      [tiny(out, '--seq-len', '4096'), 2, /--seq-len 4096 exceeds the model's max_position_embeddings 256/],
      [tiny(out, '--data', `text:${join(root, 'missing.txt')}`), 1, /missing\.txt: not found/],
      [['train', '--out', out, '--resume'], 1, /no checkpoint to resume/],
      [tiny(join(root, 'int')), 2, /already holds a run \(checkpoint at step 6\): continue it with --resume/],
    ];
    const results = await Promise.all(cases.map(([args]) => run(args)));
    results.forEach((r, i) => {
      const [args, code, re] = cases[i];
      assert.equal(r.code, code, `${args.join(' ')}:\n${r.err}`);
      assert.match(r.err, re);
      assert.equal(r.err.trim().split('\n').length, 1, `one line: ${r.err}`);
    });
    assert.ok(!existsSync(out), 'nothing was written');
  });
});

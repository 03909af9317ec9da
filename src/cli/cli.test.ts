// The dsv3 command as users and outside checks run it: a real process per invocation.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync, mkdirSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { GOLDEN_DIR, GOLDEN_MISSING, REPO_ROOT, goldenModelDir, logitTolerance, maxAbs, maxAbsDiff, readJson } from '../../test/helpers/golden.ts';
import { tempDir, textCheckpoint } from '../../test/helpers/fixtures.ts';
import { nativeInfo } from '../kernels/native.ts';
import { DSV3_BIN as BIN } from '../../test/helpers/cli.ts';

function dsv3(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [BIN, ...args], { input, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function ok(args: string[], input?: string) {
  const r = dsv3(args, input);
  assert.equal(r.code, 0, `dsv3 ${args.join(' ')} failed:\n${r.err}`);
  return r.out;
}

describe('dsv3 CLI', () => {
  it('logits --mtp prints the reference logits and MTP logits', { skip: GOLDEN_MISSING }, () => {
    const dir = goldenModelDir('v3-tiny');
    const g = readJson(join(dir, 'golden.json'));
    const c = g.cases[1];
    const out = JSON.parse(ok(['logits', '--model', dir, '--ids', c.prompt.join(','), '--mtp']));
    const tol = logitTolerance('F32', maxAbs(c.logits_all));
    assert.ok(maxAbsDiff(out.logits.flat(), c.logits_all) <= tol);
    assert.equal(out.mtp_logits.length, c.prompt.length - 1);
    assert.ok(maxAbsDiff(out.mtp_logits.flat(), c.mtp_logits) <= tol);
  });

  it('generate --ids --temperature 0 --json prints the reference greedy ids', { skip: GOLDEN_MISSING }, () => {
    const dir = goldenModelDir('v3-fp8');
    const c = readJson(join(dir, 'golden.json')).cases[0];
    const args = ['generate', '--model', dir, '--ids', c.prompt.join(','), '--max-new-tokens', '16'];
    const out = ok([...args, '--temperature', '0', '--json', '--attn', 'naive']);
    assert.deepEqual(JSON.parse(out), { ids: c.greedy });
  });

  it('the main command works on the shipped default model, and eval reports its perplexity', () => {
    const out = ok(['generate', 'The jury said', '--max-new-tokens', '12', '--seed', '1']);
    assert.ok(out.trim().length > 0);
    const f = join(tempDir(), 'held-out.txt');
    writeFileSync(f, 'The jury said that the city had been a good place for the people who lived there.\n');
    const e = JSON.parse(ok(['eval', '--file', f, '--json']));
    assert.deepEqual(Object.keys(e).sort(), ['bits_per_byte', 'perplexity', 'tokens']);
    assert.ok(e.perplexity > 1 && e.perplexity < 8192, `perplexity ${e.perplexity}`);
    assert.ok(e.bits_per_byte > 0 && e.tokens > 10);
  });

  it('generate --speculative mtp gives the same greedy text with --stats; bad flags are refused', () => {
    const args = ['generate', 'The jury said', '--max-new-tokens', '40', '--temperature', '0', '--json'];
    const plain = JSON.parse(ok([...args, '--stats']));
    assert.deepEqual(Object.keys(plain.stats), ['decode_tps']);
    // The fixed policy drafts every step (the adaptive one, the default, as far as its timings
    // say it pays: the same text, with acceptance figures that depend on the machine).
    for (const extra of [[], ['--draft-tokens', '2', '--draft-vocab', '512']]) {
      const spec = JSON.parse(ok([...args, '--stats', '--speculative', 'mtp', '--draft-policy', 'fixed', ...extra]));
      assert.equal(spec.text, plain.text);
      assert.deepEqual(spec.ids, plain.ids);
      const { acceptance, acceptance_per_position: per, accepted_per_step: step, decode_tps } = spec.stats;
      assert.ok(acceptance > 0.3 && acceptance <= 1, `acceptance ${acceptance}`);
      assert.equal(per.length, extra.length ? 2 : 1);
      assert.ok(step > 1 && decode_tps > 0);
      const adaptive = JSON.parse(ok([...args, '--stats', '--speculative', 'mtp', ...extra]));
      assert.deepEqual(adaptive.ids, plain.ids);
      assert.ok(adaptive.stats.decode_tps > 0);
    }
    let r = dsv3([...args, '--draft-vocab', '512']);
    assert.equal(r.code, 2);
    assert.match(r.err, /--draft-vocab needs --speculative mtp/);
    r = dsv3([...args, '--draft-policy', 'fixed']);
    assert.equal(r.code, 2);
    assert.match(r.err, /--draft-policy needs --speculative mtp/);
    r = dsv3([...args, '--speculative', 'mtp', '--draft-policy', 'fast']);
    assert.equal(r.code, 2);
    assert.match(r.err, /--draft-policy must be one of adaptive, fixed/);
    r = dsv3([...args, '--speculative', 'mtp', '--draft-vocab', '0']);
    assert.equal(r.code, 2);
    assert.match(r.err, /--draft-vocab must be an integer >= 1/);
    r = dsv3([...args, '--speculative', 'mtp', '--draft-vocab', '9000']);
    assert.notEqual(r.code, 0);
    assert.match(r.err, /draftVocab must be an integer in 1 … 8192/);
  });

  it('bench --json prints one line per figure on the shipped model; bad settings are usage errors', () => {
    const out = ok(['bench', '--json', '--prompts', '16,40', '--tokens', '4', '--depth', '20', '--batch', '3',
      '--batch-depth', '8', '--reps', '1']);
    const lines = out.trim().split('\n').map((l) => JSON.parse(l));
    const keys = lines.map((l) => `${l.metric}/${l.prompt}/${l.batch}`);
    const want = ['prefill_tps/16/1', 'prefill_tps/40/1', 'decode_tps/0/1', 'decode_tps/20/1', 'decode_tps/8/3', 'peak_rss_mb/0/1'];
    assert.deepEqual(keys.slice(0, want.length), want);
    for (const l of lines) {
      assert.deepEqual(Object.keys(l), ['model', 'metric', 'prompt', 'batch', 'dsv3']);
      assert.equal(l.model, 'default');
      assert.ok(Number.isFinite(l.dsv3) && l.dsv3 > 0, JSON.stringify(l));
    }
    // The roofline needs the native addon's bandwidth reading: present exactly when it loads.
    assert.equal(keys.includes('roofline_decode_tps/0/1'), nativeInfo() !== null);
    const bad = dsv3(['bench', '--depth', '5000']);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /context of 1024 tokens/);
  });

  describe('with a tokenizer', () => {
    const dir = textCheckpoint();

    it('generate streams text; a seed reproduces it; --json gives text and ids', () => {
      const a = ok(['generate', '--model', dir, 'The jury said', '--max-new-tokens', '8', '--seed', '5']);
      const b = ok(['generate', '--model', dir, 'The jury said', '--max-new-tokens', '8', '--seed', '5']);
      assert.equal(a, b);
      const j = JSON.parse(ok(['generate', '--model', dir, 'The jury said', '--max-new-tokens', '8', '--seed', '5', '--json']));
      assert.equal(j.ids.length, 8);
      assert.equal(a, j.text + '\n');
    });

    it('generate --input-file runs every prompt and prints one JSON line each', () => {
      const f = join(tempDir(), 'prompts.txt');
      writeFileSync(f, 'first prompt\nsecond one\n\nthird\n');
      const lines = ok(['generate', '--model', dir, '--input-file', f, '--max-new-tokens', '4', '--json', '--temperature', '0'])
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      assert.equal(lines.length, 3);
      const solo = JSON.parse(ok(['generate', '--model', dir, 'second one', '--max-new-tokens', '4', '--json', '--temperature', '0']));
      assert.deepEqual(lines[1], solo);
    });

    it('tokenize matches the golden tokenizer and chat cases', { skip: GOLDEN_MISSING }, () => {
      const enc = readJson(join(GOLDEN_DIR, 'tokenizer/encode.json')).cases;
      for (const c of enc.slice(0, 3)) {
        assert.deepEqual(JSON.parse(ok(['tokenize', '--model', dir], c.text)).ids, c.ids);
        assert.deepEqual(JSON.parse(ok(['tokenize', '--model', dir, '--add-special-tokens'], c.text)).ids, c.ids_with_special);
      }
      const chat = readJson(join(GOLDEN_DIR, 'tokenizer/chat.json')).cases;
      for (const c of chat.slice(0, 4)) {
        const f = join(tempDir(), 'm.json');
        writeFileSync(f, JSON.stringify(c.messages));
        const args = ['tokenize', '--model', dir, '--chat', f];
        if (c.add_generation_prompt) args.push('--add-generation-prompt');
        assert.deepEqual(JSON.parse(ok(args)), { text: c.rendered, ids: c.ids });
      }
    });

    it('chat keeps a conversation, /clear and /exit work', () => {
      const out = ok(['chat', '--model', dir, '--max-new-tokens', '4', '--seed', '1'], 'hello\nand again\n/clear\n/exit\n');
      assert.match(out, /conversation cleared/);
      assert.equal((out.match(/> /g) ?? []).length >= 3, true);
    });

    it('refuses bad input with a clear error and a non-zero exit code', () => {
      const bad = join(tempDir(), 'bad.json');
      writeFileSync(bad, JSON.stringify([{ role: 'wizard', content: 'hi' }]));
      let r = dsv3(['tokenize', '--model', dir, '--chat', bad]);
      assert.notEqual(r.code, 0);
      assert.match(r.err, /messages\[0\]\.role/);

      writeFileSync(bad, JSON.stringify([{ role: 'user' }]));
      r = dsv3(['tokenize', '--model', dir, '--chat', bad]);
      assert.notEqual(r.code, 0);
      assert.match(r.err, /messages\[0\]\.content/);

      r = dsv3(['generate', '--model', dir, 'word '.repeat(600), '--max-new-tokens', '2']);
      assert.notEqual(r.code, 0);
      assert.match(r.err, /CONTEXT_OVERFLOW.*context is 512/);

      const noTok = tempDir();
      mkdirSync(noTok, { recursive: true });
      for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(dir, f), join(noTok, f));
      r = dsv3(['generate', '--model', noTok, 'hello']);
      assert.notEqual(r.code, 0);
      assert.match(r.err, /tokenizer\.json.*not found/);

      r = dsv3(['frobnicate']);
      assert.equal(r.code, 2);
      r = dsv3(['generate', '--model', dir, '--ids', '1,x']);
      assert.equal(r.code, 2);
      assert.match(r.err, /--ids/);
    });
  });
});

// The dsv3 command without rough edges, as a real process each time: --version, did-you-mean
// for a mistyped command or flag, option values refused before any model is loaded, every
// error one line on stderr with a non-zero exit (a stack trace only with DSV3_DEBUG=1), a
// reader closing the pipe ends the command quietly, --model paths that are not models named
// as such, logits and train-step on the shipped model by default, chat's slash commands
// answered without the model, and --attn taking effect.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/golden.ts';
import { tempDir } from '../helpers/fixtures.ts';
import { DSV3_BIN as BIN } from '../helpers/cli.ts';

function dsv3(args: string[], opts: { input?: string; env?: Record<string, string> } = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    input: opts.input,
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, DSV3_DEBUG: '', ...opts.env },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** The command failed with `code`, printing exactly one line on stderr (no stack trace). */
function failsWith(r: ReturnType<typeof dsv3>, code: number, pattern: RegExp): string {
  // The loading line (rewritten with \r while a slow load shows progress) is not an error line.
  const lines = r.err.split('\n').filter((l) => l !== '' && !/^dsv3: loading [^\n]* (done|failed)/.test(l));
  assert.equal(r.code, code, r.err);
  assert.equal(lines.length, 1, `one error line, got:\n${r.err}`);
  assert.doesNotMatch(r.err, /^\s+at /m, 'no stack trace');
  assert.match(lines[0], pattern);
  return lines[0];
}

describe('dsv3 CLI errors and edges', () => {
  it('--version prints the package version', () => {
    const { version } = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8'));
    const r = dsv3(['--version']);
    assert.equal(r.code, 0);
    assert.equal(r.out, `dsv3 ${version}\n`);
  });

  it('a mistyped command or flag gets a did-you-mean', () => {
    failsWith(dsv3(['genrate', 'hi']), 2, /^dsv3: unknown command "genrate" \(did you mean "generate"\?\)/);
    failsWith(dsv3(['generate', '--modle', 'x', 'hi']), 2, /^dsv3 generate: unknown option --modle \(did you mean --model\?\)/);
    failsWith(dsv3(['generate', '--temprature', '0', 'hi']), 2, /did you mean --temperature\?/);
    failsWith(dsv3(['logits', '--ids', '1', '--kernels', 'nativ']), 2, /--kernels must be one of auto, native, ref, got "nativ" \(did you mean native\?\)/);
    failsWith(dsv3(['generate', '--frobnicate', 'hi']), 2, /^dsv3 generate: unknown option --frobnicate; --help lists the options$/);
  });

  it('option values are checked before anything is loaded', () => {
    const cases: [string[], RegExp][] = [
      [['generate', '--top-p', '2', 'hi'], /--top-p must be a number > 0 and <= 1, got "2"/],
      [['generate', '--max-new-tokens', '1.5', 'hi'], /--max-new-tokens must be an integer >= 1, got "1\.5"/],
      [['generate', '--temperature', '', 'hi'], /--temperature must be a number >= 0, got ""/],
      [['generate', '--attn', 'bogus', 'hi'], /--attn must be one of absorb, naive, got "bogus"/],
      [['generate', '--seed=-3', 'hi'], /--seed must be an integer >= 0/],
      [['generate', '--seed', '-3', 'hi'], /^dsv3 generate: --seed needs a value \(one that starts with a dash is written --seed=-…\)$/],
      [['generate', 'hi', '--max-new-tokens'], /^dsv3 generate: --max-new-tokens needs a value$/],
      [['chat', '--min-p', '1.5'], /--min-p must be a number >= 0 and <= 1/],
      [['logits', '--ids', '1,2', '--threads', 'two'], /--threads must be an integer >= 0/],
      [['train-step', '--tokens', 'x.json', '--balance-topk', 'most'], /--balance-topk must be one of routed, raw/],
    ];
    for (const [args, pattern] of cases) {
      const r = dsv3(args);
      failsWith(r, 2, pattern);
      assert.doesNotMatch(r.err, /loading/, `${args.join(' ')}: refused before loading`);
    }
    const out = join(tempDir('dsv3-cli-'), 'run');
    const r = dsv3(['train', '--out', out, '--preset', 'huge']);
    failsWith(r, 2, /--preset must be one of .*got "huge"/);
    assert.equal(existsSync(out), false, 'nothing written');
  });

  it('errors are one line without a stack trace, which DSV3_DEBUG=1 adds', () => {
    const missing = join(tempDir('dsv3-cli-'), 'prompts.txt');
    failsWith(dsv3(['generate', '--input-file', missing]), 1, /^dsv3 generate: error \[MISSING_FILE\]: --input-file .*prompts\.txt: no such file$/);

    // --kernels native without the addon (DSV3_NATIVE_PATH names where the loader looks).
    const env = { DSV3_NATIVE_PATH: join(tempDir('dsv3-cli-'), 'missing.node') };
    failsWith(dsv3(['generate', '--kernels', 'native', 'hi'], { env }), 1, /^dsv3 generate: error: the native kernels are unavailable \(.*missing\.node is not built\)/);
    const debug = dsv3(['generate', '--kernels', 'native', 'hi'], { env: { ...env, DSV3_DEBUG: '1' } });
    assert.equal(debug.code, 1);
    assert.match(debug.err, /^\s+at loadKernels /m, 'DSV3_DEBUG=1 shows the stack');
  });

  it('a reader closing the pipe (dsv3 logits … | head) ends the command quietly', () => {
    // Six rows of 8192 logits are ~600 kB: far more than a pipe holds, so writes hit EPIPE.
    const r = spawnSync('bash', ['-c', `"${process.execPath}" "${BIN}" logits --ids 1,2,3,4,5,6 | head -c 20; echo " status \${PIPESTATUS[0]}"`], {
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, DSV3_DEBUG: '' },
    });
    assert.match(r.stdout, /^\{"logits":\[\[.* status 0\n$/s, `stdout ${JSON.stringify(r.stdout)}, stderr ${JSON.stringify(r.stderr)}`);
    assert.doesNotMatch(r.stderr, /EPIPE|Error|^\s+at /m, r.stderr);
    assert.deepEqual(r.stderr.split('\n').filter((l) => l && !/^dsv3: loading [^\n]* done/.test(l)), [], 'nothing but the loading line');
  });

  it('--model that is not a model is reported as such', () => {
    const dir = tempDir('dsv3-cli-');
    failsWith(dsv3(['generate', '--model', join(dir, 'nope'), 'hi']), 1, /error \[MISSING_FILE\]: .*nope: no such model folder or GGUF file$/);
    const file = join(dir, 'notes.txt');
    writeFileSync(file, 'not a model\n');
    failsWith(dsv3(['logits', '--model', file, '--ids', '1']), 1, /notes\.txt: is a file but not a GGUF file .*a model is a checkpoint folder/);
    failsWith(dsv3(['tokenize', '--model', dir], { input: 'hi' }), 1, /tokenizer\.json: not found/);
  });

  it('logits and train-step run on the shipped model when --model is not given', () => {
    const r = dsv3(['logits', '--ids', '1,2,3']);
    assert.equal(r.code, 0, r.err);
    const { logits } = JSON.parse(r.out);
    assert.equal(logits.length, 3);
    assert.equal(logits[0].length, 8192);
    const f = join(tempDir('dsv3-cli-'), 'batch.json');
    writeFileSync(f, JSON.stringify([[5, 6, 7, 8, 9]]));
    const t = dsv3(['train-step', '--tokens', f, '--json', '--grads', 'model.norm.weight']);
    assert.equal(t.code, 0, t.err);
    const j = JSON.parse(t.out);
    assert.ok(Number.isFinite(j.loss.main_ce) && Number.isFinite(j.loss.mtp_ce));
    assert.equal(j.grads['model.norm.weight'].length, 256);
  });

  it('chat answers /help and unknown slash commands itself, never sending them to the model', () => {
    const r = dsv3(['chat', '--max-new-tokens', '4', '--seed', '1'], { input: '/help\n/bogus\n/cler\n/exit\n' });
    assert.equal(r.code, 0, r.err);
    const lines = r.out.split('\n');
    assert.match(lines[0], /^dsv3 chat — \/help for commands/);
    assert.match(r.out, /> commands:\n {2}\/help/);
    assert.match(r.out, /> \(unknown command \/bogus: \/help lists the commands\)\n/);
    assert.match(r.out, /> \(unknown command \/cler \(did you mean \/clear\?\): \/help lists the commands\)\n/);
    // Exactly the chat's own output: nothing was generated.
    const own = r.out.replace(/^dsv3 chat.*\n/, '').replace(/> /g, '').replace(/commands:\n( {2}.*\n)+/, '').replace(/\(unknown command [^\n]*\)\n/g, '');
    assert.equal(own, '', `nothing but the chat's own lines: ${JSON.stringify(own)}`);
    // A doubled slash sends the message with one.
    const sent = dsv3(['chat', '--max-new-tokens', '3', '--seed', '1'], { input: '//hello\n/exit\n' });
    assert.equal(sent.code, 0, sent.err);
    assert.doesNotMatch(sent.out, /unknown command/);
    assert.ok(sent.out.replace(/^dsv3 chat.*\n/, '').replace(/> /g, '').trim().length > 0, 'the model answered');
  });

  it('generate --attn naive takes effect (the model runs the naive path), and gives the greedy ids of absorb here', () => {
    const args = ['generate', '--ids', '1,20,300,4000', '--max-new-tokens', '6', '--temperature', '0', '--json'];
    const naive = dsv3([...args, '--attn', 'naive']);
    assert.equal(naive.code, 0, naive.err);
    assert.match(naive.err, /done in .* s \(\w+ kernels, naive attention\)/);
    const absorb = dsv3(args);
    assert.doesNotMatch(absorb.err, /naive attention/);
    assert.deepEqual(JSON.parse(naive.out), JSON.parse(absorb.out));
  });
});

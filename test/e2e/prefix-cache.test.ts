// `dsv3 serve --cache-mb`: prefix caching through the official client. A conversation's
// cached_tokens grows turn by turn (each turn's prompt starts with the last one's), answers
// are the same as a server without the cache (plain and with MTP speculation), and
// usage.prompt_tokens_details.cached_tokens is reported on /v1/chat/completions and
// /v1/completions, whole and streamed (stream_options.include_usage).

import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import OpenAI from 'openai';
import { DeepseekV3 } from '../../src/model/deepseek-v3.ts';
import { refKernels } from '../../src/kernels/ref/index.ts';
import { Tokenizer } from '../../src/text/tokenizer.ts';
import { textCheckpoint } from '../helpers/fixtures.ts';
import { REPO_ROOT } from '../helpers/golden.ts';
import { MODEL_NAME, serveProcess, startServer } from './helpers.ts';

const dir = textCheckpoint({ num_nextn_predict_layers: 1 }, { seed: 5 });
const m = { model: DeepseekV3.load(dir, { kernels: refKernels }), tokenizer: Tokenizer.fromDir(dir) };
const CACHE = 64 << 20;
const plain = await startServer(m);
const cached = await startServer(m, { prefixCacheBytes: CACHE });
const spec = await startServer(m, { prefixCacheBytes: CACHE, speculative: { draftTokens: 2 } });
after(() => Promise.all([plain.close(), cached.close(), spec.close()]));

const client = (url: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });

type Usage = OpenAI.CompletionUsage;
const cachedOf = (u: Usage | undefined | null) => u!.prompt_tokens_details!.cached_tokens!;

describe('prefix cache through the server', () => {
  it('grows cached_tokens turn by turn in a conversation, with the same answers as without the cache', async () => {
    const questions = ['Tell me about the jury.', 'And what did they decide?', 'Why?', 'What happened next?', 'Thanks. Anything else?'];
    const runs = [
      // server, system prompt, seed (none: greedy), what the first turn finds (a fresh server
      // nothing, later only BOS, which every prompt starts with)
      [cached.url, 'You are a court reporter.', undefined, 0],
      [spec.url, 'You are a court reporter.', undefined, 0],
      [cached.url, 'Answer as a judge would.', 9, 1],
    ] as const;
    for (const [url, system, seed, firstCached] of runs) {
      const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'system', content: system }];
      let last: Usage | null = null;
      for (const [turn, q] of questions.entries()) {
        messages.push({ role: 'user', content: q });
        const params = { model: MODEL_NAME, messages, max_tokens: 10, temperature: seed === undefined ? 0 : 0.9, seed };
        const want = await client(plain.url).chat.completions.create(params);
        const got = await client(url).chat.completions.create(params);
        assert.equal(got.choices[0].message.content, want.choices[0].message.content, `turn ${turn + 1}`);
        assert.equal(cachedOf(want.usage), 0, 'no cache, nothing cached');
        const u = got.usage!;
        assert.equal(u.prompt_tokens, want.usage!.prompt_tokens);
        if (!last) assert.equal(cachedOf(u), firstCached, 'the first turn');
        else {
          // This turn's prompt starts with the last turn's prompt (and, as far as the answer
          // re-encodes to the same ids, its answer): all of that comes from the cache.
          assert.ok(cachedOf(u) >= last.prompt_tokens - 1, `turn ${turn + 1}: ${cachedOf(u)} cached of ${u.prompt_tokens}, last prompt ${last.prompt_tokens}`);
          assert.ok(cachedOf(u) > cachedOf(last) && cachedOf(u) < u.prompt_tokens);
        }
        last = u;
        messages.push({ role: 'assistant', content: got.choices[0].message.content ?? '' });
      }
    }
  });

  it('reports cached_tokens on /v1/chat/completions and /v1/completions, whole and streamed', async () => {
    const c = client(cached.url);
    const messages = [{ role: 'user' as const, content: 'A question asked twice, to be answered from the cache.' }];
    const chat = { model: MODEL_NAME, messages, max_tokens: 4, temperature: 0 };
    const first = await c.chat.completions.create(chat);
    assert.equal(cachedOf(first.usage), 1, 'only BOS was seen before');
    const again = await c.chat.completions.create(chat);
    assert.equal(cachedOf(again.usage), again.usage!.prompt_tokens - 1, 'an exact repeat recomputes only its last token');
    assert.equal(again.choices[0].message.content, first.choices[0].message.content);
    const stream = await c.chat.completions.create({ ...chat, stream: true, stream_options: { include_usage: true } });
    let usage: Usage | null = null;
    let text = '';
    for await (const ch of stream) {
      usage = ch.usage ?? usage;
      text += ch.choices[0]?.delta?.content ?? '';
    }
    assert.deepEqual(usage, again.usage);
    assert.equal(text, first.choices[0].message.content);

    const prompt = 'The jury said, after a long day of deliberation, that';
    const comp = { model: MODEL_NAME, prompt, max_tokens: 4, temperature: 0 };
    const one = await c.completions.create(comp);
    assert.equal(cachedOf(one.usage), 1, 'only BOS was seen before');
    const two = await c.completions.create({ ...comp, prompt: prompt + ' the defendant' });
    assert.ok(cachedOf(two.usage) >= one.usage!.prompt_tokens - 1 && cachedOf(two.usage) < two.usage!.prompt_tokens);
    const s = await c.completions.create({ ...comp, stream: true, stream_options: { include_usage: true } });
    let su: Usage | null = null;
    let stext = '';
    for await (const ch of s) {
      su = ch.usage ?? su;
      stext += ch.choices[0]?.text ?? '';
    }
    assert.equal(stext, one.choices[0].text);
    assert.equal(cachedOf(su), one.usage!.prompt_tokens - 1);
    // The server without a cache says 0, in the same place.
    assert.equal(cachedOf((await client(plain.url).completions.create(comp)).usage), 0);
  });

  it('dsv3 serve has it on by default, off with --cache-mb 0, and refuses a bad --cache-mb', async () => {
    const BIN = join(REPO_ROOT, 'bin/dsv3.js');
    const bad = spawnSync(process.execPath, [BIN, 'serve', '--model', '/nonexistent', '--cache-mb=-1'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(bad.stderr, /^dsv3 serve: --cache-mb must be an integer >= 0, got "-1"\n$/);
    for (const [args, want] of [[[], 'cached'], [['--cache-mb', '0'], 'none']] as const) {
      const { child, url, exited } = await serveProcess(dir, [...args]);
      try {
        const c = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
        const req = { model: 'ignored', prompt: 'Twice the same prompt', max_tokens: 2, temperature: 0 };
        const models = await c.models.list();
        req.model = models.data[0].id;
        await c.completions.create(req);
        const u = (await c.completions.create(req)).usage!;
        assert.equal(cachedOf(u), want === 'cached' ? u.prompt_tokens - 1 : 0, `${args.join(' ')}: ${JSON.stringify(u)}`);
      } finally {
        child.kill('SIGTERM');
        await exited;
      }
    }
  });
});

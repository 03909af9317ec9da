// `dsv3 serve --speculative mtp` through the official client: greedy answers are the same
// text with and without MTP drafts, streamed or not.

import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { DeepseekV3 } from '../../src/model/deepseek-v3.ts';
import { refKernels } from '../../src/kernels/ref/index.ts';
import { Tokenizer } from '../../src/text/tokenizer.ts';
import { textCheckpoint } from '../helpers/fixtures.ts';
import { MODEL_NAME, startServer } from './helpers.ts';

const dir = textCheckpoint({ num_nextn_predict_layers: 1 }, { seed: 4 });
const m = { model: DeepseekV3.load(dir, { kernels: refKernels }), tokenizer: Tokenizer.fromDir(dir) };
const plain = await startServer(m);
const spec = await startServer(m, { speculative: { draftTokens: 2 } });
after(() => Promise.all([plain.close(), spec.close()]));

const client = (url: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none' });

describe('server with MTP speculative decoding', () => {
  it('gives the same greedy answer as plain decoding', async () => {
    const ask = async (url: string, stream: boolean) => {
      const messages = [{ role: 'user' as const, content: 'Tell me about the jury.' }];
      if (!stream) {
        const r = await client(url).chat.completions.create({ model: MODEL_NAME, messages, max_tokens: 24, temperature: 0 });
        return r.choices[0].message.content;
      }
      const s = await client(url).chat.completions.create({ model: MODEL_NAME, messages, max_tokens: 24, temperature: 0, stream: true });
      let text = '';
      for await (const c of s) text += c.choices[0]?.delta?.content ?? '';
      return text;
    };
    const want = await ask(plain.url, false);
    assert.ok(want && want.length > 0);
    assert.equal(await ask(spec.url, false), want);
    assert.equal(await ask(spec.url, true), want);
  });
});

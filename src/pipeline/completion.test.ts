// The text pipeline on a random model with the real DeepSeek-V3 tokenizer: streamed deltas
// add up to the final text, seeds reproduce, stop strings cut, logprobs are consistent.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startCompletion, type TextDelta } from './completion.ts';
import { Scheduler } from '../engine/scheduler.ts';
import { DeepseekV3 } from '../model/deepseek-v3.ts';
import { Tokenizer } from '../text/tokenizer.ts';
import { refKernels } from '../kernels/ref/index.ts';
import { textCheckpoint } from '../../test/helpers/fixtures.ts';

const dir = textCheckpoint();
const model = DeepseekV3.load(dir, { kernels: refKernels });
const tok = Tokenizer.fromDir(dir);
const sched = new Scheduler(model);
const prompt = tok.encode('The jury said', { addSpecialTokens: true });

describe('text completion pipeline', () => {
  it('streams deltas that add up to the final text and ids', async () => {
    const deltas: TextDelta[] = [];
    const r = await startCompletion(sched, tok, prompt, {
      maxTokens: 12,
      sampling: { temperature: 0.8, seed: 3 },
      onDelta: (d) => void deltas.push(d),
    }).done;
    assert.equal(r.text, deltas.map((d) => d.text).join(''));
    assert.deepEqual(r.ids, deltas.flatMap((d) => d.ids));
    assert.equal(r.text, tok.decode(r.ids, { skipSpecialTokens: true }));
    assert.ok(!r.text.includes('\uFFFD') || tok.decode(r.ids).includes('\uFFFD'));
    assert.equal(r.promptTokens, prompt.length);
    assert.equal(r.completionTokens, r.ids.length);
  });

  it('is reproducible with a seed and differs across seeds', async () => {
    const run = (seed: number) =>
      startCompletion(sched, tok, prompt, { maxTokens: 10, sampling: { temperature: 1, seed } }).done;
    const [a, b, c] = await Promise.all([run(7), run(7), run(8)]);
    assert.deepEqual(a.ids, b.ids);
    assert.notDeepEqual(a.ids, c.ids);
  });

  it('cuts the text at a stop string and reports finish "stop"', async () => {
    const free = await startCompletion(sched, tok, prompt, { maxTokens: 16, sampling: { temperature: 0 } }).done;
    const stop = free.text.slice(5, 8);
    assert.ok(stop.length > 0);
    const cut = await startCompletion(sched, tok, prompt, {
      maxTokens: 16,
      sampling: { temperature: 0 },
      stop: [stop],
    }).done;
    assert.equal(cut.finish, 'stop');
    assert.equal(cut.text, free.text.slice(0, free.text.indexOf(stop)));
  });

  it('reports logprobs of the chosen tokens with sorted alternatives', async () => {
    const r = await startCompletion(sched, tok, prompt, {
      maxTokens: 4,
      sampling: { temperature: 0 },
      topLogprobs: 3,
    }).done;
    assert.equal(r.logprobs!.length, 4);
    for (const lp of r.logprobs!) {
      assert.equal(lp.top.length, 3);
      assert.equal(lp.top[0].id, lp.id, 'greedy picks the top alternative');
      assert.ok(lp.top[0].logprob >= lp.top[1].logprob && lp.top[1].logprob >= lp.top[2].logprob);
      assert.ok(lp.logprob <= 0);
    }
  });
});

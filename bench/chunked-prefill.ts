// Chunked prefill: how long a decoding stream waits between two tokens while another
// request's long prompt is prefilled, with the prompt fed whole or in chunks. Random
// bench-s-sized checkpoint (written once into .cache/bench/), native kernels, greedy.
//   node --import tsx bench/chunked-prefill.ts [--prompt 2000] [--chunks 100000,512,128]

import { parseArgs } from 'node:util';
import { DeepseekV3 } from '../src/model/deepseek-v3.ts';
import { loadKernels } from '../src/kernels/index.ts';
import { Scheduler } from '../src/engine/scheduler.ts';
import { Sampler } from '../src/engine/sampler.ts';
import { benchSMtpDir } from './bench-s-mtp.ts';

const { values } = parseArgs({
  options: { prompt: { type: 'string', default: '2000' }, chunks: { type: 'string', default: '100000,512,128' } },
});
const model = DeepseekV3.load(benchSMtpDir(), { kernels: loadKernels(), mtp: false });
const long = Array.from({ length: Number(values.prompt) }, (_, i) => (i * 131 + 7) % 8000);

async function run(prefillChunk: number) {
  const s = new Scheduler(model, { maxBatch: 2, prefillChunk });
  const times: number[] = [];
  let longTtft = 0;
  await new Promise<void>((done) => {
    s.submit({
      prompt: [1, 2, 3],
      maxNewTokens: 100000,
      sampler: new Sampler({ temperature: 0 }),
      onToken: () => {
        times.push(performance.now());
        if (times.length === 20) {
          const t0 = performance.now();
          s.submit({
            prompt: long, maxNewTokens: 1, sampler: new Sampler({ temperature: 0 }),
            onToken: () => void (longTtft = performance.now() - t0), onDone: () => {},
          });
        }
        // Stop 20 tokens after the long prompt's first token.
        return !(longTtft && times.length > 20 && times[times.length - 1] - times[19] > longTtft + 1 &&
          times.filter((t) => t > times[19] + longTtft).length >= 20);
      },
      onDone: () => done(),
    });
  });
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  const steady = gaps.slice(5, 19).sort((a, b) => a - b)[7];
  return { prefillChunk, worst: Math.max(...gaps.slice(19)), steady, longTtft };
}

await run(512); // warm-up
console.log(`bench-s, a decoding stream while a ${long.length}-token prompt arrives (ms):`);
console.log('prefill chunk | longest wait between two tokens | usual wait | long prompt first token');
for (const c of values.chunks!.split(',').map(Number)) {
  const r = await run(c);
  console.log(`${String(c >= long.length ? 'whole' : c).padStart(13)} | ${r.worst.toFixed(0).padStart(31)} | ${r.steady.toFixed(1).padStart(10)} | ${r.longTtft.toFixed(0).padStart(23)}`);
}

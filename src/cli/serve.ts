// `dsv3 serve`: the OpenAI-compatible server (server/app.ts) on Node's HTTP stack, with a web
// chat page at /. It loads the model once, shares one Scheduler among all requests, and shuts
// down cleanly on SIGINT/SIGTERM: open streams end with an error event and [DONE].

import { basename, resolve } from 'node:path';
import { serve } from '@hono/node-server';
import { Scheduler } from '../engine/scheduler.ts';
import { createApp } from '../server/app.ts';
import { MODEL_OPTIONS, UsageError, intOption, loadModel, parse } from './args.ts';
import { loadTokenizer, modelDir, checkVocab } from './text.ts';
import { SPECULATIVE_OPTIONS, speculativeOption } from './speculative.ts';

const HELP = `usage: dsv3 serve [--model DIR] [--host 127.0.0.1] [--port 8000] [--api-key KEY]
  [--served-model-name NAME]… [--max-batch N] [--max-queue N] [--quiet] [--kernels auto|native|ref] [--threads N]
  [--prefill-chunk N]                      most prompt tokens per step (default 256), so a long
                                           prompt does not stall the other streams
  [--speculative mtp [--draft-tokens K]]   draft with the MTP module, verify in one pass
  [--draft-policy adaptive|fixed]          adaptive (default): each step drafts 0 … K tokens,
                                           whichever is measured to decode fastest; fixed: K
  [--cache-mb N]                           prefix cache: keep up to N MiB of finished and running
                                           requests' latent KV rows, so a prompt that starts like an
                                           earlier one skips that part (default 1024; 0: off)
  [--draft-vocab N]                        draft from the first N token ids (default max(1024, vocab/8))
  [--write-timeout-ms N]                   a streaming client that reads nothing for N ms is
                                           disconnected and its generation cancelled (default
                                           30000; 0: never); until then, while it is not reading,
                                           its generation is paused
  --served-model-name NAME (repeatable): the names clients may pass as "model" (/v1/models lists
                                           them); default: the checkpoint's folder or file name, and "default"
  routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health, GET / (web chat)
  --api-key (or DSV3_API_KEY) makes /v1/* require "Authorization: Bearer KEY"; an empty key is an error`;

/** The names the model answers to: the ones given, else its folder or file name and "default". */
function servedNames(given: string[], dir: string): string[] {
  for (const n of given) {
    if (n.trim() === '') throw new UsageError('--served-model-name must not be empty');
  }
  return [...new Set(given.length ? given : [basename(resolve(dir)), 'default'])];
}

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    ...MODEL_OPTIONS,
    host: { type: 'string' },
    port: { type: 'string' },
    'api-key': { type: 'string' },
    'served-model-name': { type: 'string', multiple: true },
    'model-name': { type: 'string' }, // the older spelling of one --served-model-name
    'max-batch': { type: 'string' },
    'max-queue': { type: 'string' },
    'prefill-chunk': { type: 'string' },
    'cache-mb': { type: 'string' },
    'write-timeout-ms': { type: 'string' },
    quiet: { type: 'boolean' },
    ...SPECULATIVE_OPTIONS,
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const apiKey = values['api-key'] ?? process.env.DSV3_API_KEY;
  if (apiKey !== undefined && apiKey.trim() === '') {
    const what = values['api-key'] !== undefined ? '--api-key' : 'DSV3_API_KEY';
    throw new UsageError(`${what} is empty: give a key, or leave it out to serve without authentication`);
  }
  const host = values.host ?? '127.0.0.1';
  const port = intOption(values.port, 'port', 8000, 0);
  if (port > 65535) throw new UsageError(`--port must be at most 65535, got ${port}`);
  const maxBatch = intOption(values['max-batch'], 'max-batch', 8, 1);
  const maxQueue = intOption(values['max-queue'], 'max-queue', 64, 0);
  const prefillChunk = intOption(values['prefill-chunk'], 'prefill-chunk', 256, 1);
  const cacheMb = intOption(values['cache-mb'], 'cache-mb', 1024, 0);
  const writeTimeoutMs = intOption(values['write-timeout-ms'], 'write-timeout-ms', 30_000, 0);
  const dir = modelDir(values.model);
  const names = servedNames([...(values['served-model-name'] ?? []), ...(values['model-name'] !== undefined ? [values['model-name']] : [])], dir);
  const tokenizer = loadTokenizer(dir);
  const speculative = speculativeOption(values);
  const model = loadModel(dir, { ...values, mtp: speculative !== undefined });
  checkVocab(model, tokenizer);
  const scheduler = new Scheduler(model, { maxBatch, maxQueue, speculative, prefillChunk, prefixCacheBytes: cacheMb * 2 ** 20 });
  const shutdown = new AbortController();
  const app = createApp({
    model,
    tokenizer,
    scheduler,
    modelName: names[0],
    modelNames: names,
    apiKey,
    log: values.quiet ? null : undefined,
    shutdown: shutdown.signal,
    writeTimeoutMs,
  });

  const server = serve({ fetch: app.fetch, hostname: host, port });
  await new Promise<void>((ok, fail) => {
    server.once('listening', ok);
    server.once('error', fail);
  });
  const addr = server.address();
  const shown = host.includes(':') ? `[${host}]` : host; // an IPv6 address needs brackets in a URL
  const where = typeof addr === 'object' && addr ? `http://${shown}:${addr.port}` : shown;
  process.stderr.write(`dsv3 serve: listening on ${where} (web chat at ${where}/)\n`);

  await new Promise<void>((done) => {
    const stop = () => {
      process.stderr.write('dsv3 serve: shutting down\n');
      shutdown.abort(); // each open stream gets an error event and [DONE], and ends
      server.close(() => done());
      // Their connections close once that is written; anything left is cut after a grace period.
      const http = server as unknown as { closeIdleConnections?: () => void; closeAllConnections?: () => void };
      setTimeout(() => http.closeIdleConnections?.(), 100).unref();
      setTimeout(() => http.closeAllConnections?.(), 2000).unref();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  return 0;
}

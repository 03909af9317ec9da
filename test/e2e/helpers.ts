// The real server for end-to-end tests: a random tiny model with the real DeepSeek-V3 tokenizer
// (textCheckpoint), the app on Node's HTTP stack on an ephemeral loopback port, and a forced GC
// for memory checks. HTTP client helpers are in http.ts.

import { spawn, type ChildProcess } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { serve } from '@hono/node-server';
import { DeepseekV3 } from '../../src/model/deepseek-v3.ts';
import { refKernels } from '../../src/kernels/ref/index.ts';
import { Scheduler, type SchedulerOptions } from '../../src/engine/scheduler.ts';
import { Tokenizer } from '../../src/text/tokenizer.ts';
import { createApp } from '../../src/server/app.ts';
import { textCheckpoint } from '../helpers/fixtures.ts';
import { DSV3_BIN } from '../helpers/cli.ts';
import { waitFor } from './http.ts';

export { parseSse, post, waitFor } from './http.ts';

export interface TextModel {
  model: DeepseekV3;
  tokenizer: Tokenizer;
}

export function loadTextModel(): TextModel {
  const dir = textCheckpoint();
  return { model: DeepseekV3.load(dir, { kernels: refKernels }), tokenizer: Tokenizer.fromDir(dir) };
}

export const MODEL_NAME = 'dsv3-test';

/** A real `dsv3 serve` process (reference kernels, a free port, --quiet). */
export interface ServeProcess {
  child: ChildProcess;
  url: string;
  /** Its exit code (null: killed by a signal). */
  exited: Promise<number | null>;
  stderr(): string;
}

/** Starts `dsv3 serve --model dir … flags`; resolves once it listens. */
export async function serveProcess(dir: string, flags: string[] = []): Promise<ServeProcess> {
  const child = spawn(process.execPath, [DSV3_BIN, 'serve', '--model', dir, '--kernels', 'ref', '--port', '0', '--quiet', ...flags],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  await waitFor(() => /listening on (\S+) /.test(stderr) || child.exitCode !== null, 60_000, 'dsv3 serve to listen');
  const url = /listening on (\S+) /.exec(stderr)?.[1];
  if (!url) {
    child.kill('SIGKILL');
    throw new Error(`dsv3 serve did not start:\n${stderr}`);
  }
  return { child, url, exited, stderr: () => stderr };
}

export interface TestServer {
  url: string;
  scheduler: Scheduler;
  close(): Promise<void>;
}

/** Serves `m` on 127.0.0.1 at a free port. */
export async function startServer(
  m: TextModel,
  opts: SchedulerOptions & {
    apiKey?: string; log?: (line: string) => void; shutdown?: AbortSignal; writeTimeoutMs?: number;
    modelNames?: string[];
  } = {},
): Promise<TestServer> {
  const scheduler = new Scheduler(m.model, opts);
  const app = createApp({
    ...m, scheduler, modelName: MODEL_NAME, apiKey: opts.apiKey, log: opts.log ?? null, shutdown: opts.shutdown,
    writeTimeoutMs: opts.writeTimeoutMs, modelNames: opts.modelNames,
  });
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 });
  await new Promise<void>((ok, fail) => {
    server.once('listening', ok);
    server.once('error', fail);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    scheduler,
    close: () =>
      new Promise<void>((done) => {
        (server as unknown as { closeAllConnections(): void }).closeAllConnections();
        server.close(() => done());
      }),
  };
}

/** A full garbage collection (the test runner does not pass --expose-gc). */
export function fullGc(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

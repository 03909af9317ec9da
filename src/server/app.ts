// The OpenAI-compatible HTTP app: routes, API-key check, error shape, request logs and the web
// chat page, on web-standard Request/Response (Hono). It runs on any runtime's adapter; the
// Node one is wired in cli/serve.ts. Generation goes through the Scheduler it is given, so
// concurrent requests share decode steps. Aborting `shutdown` ends the open streams, each with
// an error event and [DONE], and turns new API requests away with 503.

import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { DeepseekV3 } from '../model/deepseek-v3.ts';
import type { Scheduler } from '../engine/scheduler.ts';
import type { Tokenizer } from '../text/tokenizer.ts';
import { DsError } from '../errors.ts';
import { ApiError, errorResponse, toApiError } from './errors.ts';
import type { ServerContext } from './generation.ts';
import { RequestRecord, type LogSink } from './log.ts';
import { parseChatRequest, parseCompletionRequest, parseJsonBody } from './request.ts';
import { chatCompletion } from './routes/chat.ts';
import { textCompletion } from './routes/completions.ts';

export interface AppOptions {
  model: DeepseekV3;
  tokenizer: Tokenizer;
  scheduler: Scheduler;
  /** The name clients pass as `model` (and /v1/models lists first). */
  modelName: string;
  /** More names the model answers to (aliases; /v1/models lists them all). */
  modelNames?: string[];
  /** When set, /v1/* requires `Authorization: Bearer <apiKey>`; it may not be empty. */
  apiKey?: string;
  /** Where request log lines go; default stderr, null for none. */
  log?: LogSink;
  /** Largest request body accepted (default 4 MiB). */
  maxBodyBytes?: number;
  /** Abort it when the server shuts down (see above). */
  shutdown?: AbortSignal;
  /**
   * A streaming client that reads nothing for this long, while events wait for it, is
   * disconnected and its generation cancelled (default 30 000 ms; 0: never). Until then it is
   * only paused: its sequences stop decoding while its socket is full.
   */
  writeTimeoutMs?: number;
}

const WEB_PAGE = new URL('./web/index.html', import.meta.url);

const digest = (s: string) => createHash('sha256').update(s).digest();

type Env = { Variables: { rec: RequestRecord } };

/** The app; serve it with any Hono adapter, or call `app.fetch(request)` directly. */
export function createApp(opts: AppOptions): Hono<Env> {
  if (opts.apiKey !== undefined && opts.apiKey.trim() === '') {
    throw new DsError('BAD_INPUT', 'the API key is empty: give a key, or none to serve without one');
  }
  const ctx: ServerContext = {
    model: opts.model,
    tokenizer: opts.tokenizer,
    scheduler: opts.scheduler,
    modelName: opts.modelName,
    modelNames: [...new Set([opts.modelName, ...(opts.modelNames ?? [])])],
    shutdown: opts.shutdown,
    streams: new Set(),
    writeTimeoutMs: opts.writeTimeoutMs ?? 30_000,
  };
  if (!(Number.isFinite(ctx.writeTimeoutMs) && ctx.writeTimeoutMs! >= 0)) {
    throw new DsError('BAD_INPUT', `writeTimeoutMs must be a number >= 0 (got ${opts.writeTimeoutMs})`);
  }
  opts.shutdown?.addEventListener('abort', () => [...ctx.streams].forEach((end) => end()), { once: true });
  const sink: LogSink = opts.log === undefined ? (line) => process.stderr.write(line + '\n') : opts.log;
  const keyDigest = opts.apiKey !== undefined ? digest(opts.apiKey) : null;
  const maxBody = opts.maxBodyBytes ?? 4 * 1024 * 1024;
  const page = readFileSync(WEB_PAGE, 'utf8');
  const app = new Hono<Env>();

  app.use('*', async (c, next) => {
    const rec = new RequestRecord(c.req.method, c.req.path, sink);
    c.set('rec', rec);
    // On Node's HTTP stack (@hono/node-server) the connection can be cut (write timeout): reset,
    // so the kernel drops what the client never took rather than keep trying to send it.
    type Outgoing = { destroy(): void; socket?: { resetAndDestroy?(): void } | null };
    const outgoing = (c.env as { outgoing?: Outgoing } | undefined)?.outgoing;
    if (outgoing) {
      rec.disconnect = () => (outgoing.socket?.resetAndDestroy ? outgoing.socket.resetAndDestroy() : outgoing.destroy());
    }
    await next();
    if (!rec.stream || c.res.status !== 200) rec.log(c.res.status);
  });

  app.use('/v1/*', async (c, next) => {
    if (ctx.shutdown?.aborted) throw new ApiError(503, 'the server is shutting down', 'server_error', null, 'server_shutdown');
    if (!keyDigest) return next();
    const m = /^Bearer\s+(.+)$/i.exec(c.req.header('authorization') ?? '');
    // Compare digests so the comparison takes the same time whatever the key's length.
    if (!m || !timingSafeEqual(digest(m[1].trim()), keyDigest)) {
      const message = m ? 'Incorrect API key provided.' : 'Missing API key: send "Authorization: Bearer <key>".';
      throw new ApiError(401, message, 'authentication_error', null, 'invalid_api_key');
    }
    return next();
  });

  app.use('/v1/*', bodyLimit({
    maxSize: maxBody,
    onError: () => {
      throw new ApiError(413, `the request body is larger than this server's limit of ${maxBody} bytes`,
        'invalid_request_error', null, 'body_too_large');
    },
  }));

  // An unknown name is OpenAI's 404 model_not_found (with the names this server answers to).
  const checkModel = (name: string | undefined) => {
    if (name !== undefined && !ctx.modelNames.includes(name)) {
      const served = ctx.modelNames.map((n) => `\`${n}\``).join(', ');
      throw new ApiError(404, `The model \`${name}\` does not exist or you do not have access to it. ` +
        `This server serves ${served}.`, 'invalid_request_error', null, 'model_not_found');
    }
  };

  // A body of up to 4 MB: decoding it and parsing it are each tens of ms, so the event loop
  // gets a turn in between (and after the parse: chatCompletion before it renders the
  // messages, encodePrompt before it tokenizes).
  const body = async (c: { req: { text(): Promise<string> } }) => {
    const text = await c.req.text();
    if (text.length > 2 ** 16) await new Promise<void>((resolve) => setImmediate(resolve));
    return parseJsonBody(text);
  };

  app.post('/v1/chat/completions', async (c) => {
    const req = parseChatRequest(await body(c));
    checkModel(req.model);
    return chatCompletion(ctx, req, c.get('rec'), c.req.raw.signal);
  });

  app.post('/v1/completions', async (c) => {
    const req = parseCompletionRequest(await body(c), ctx.model.cfg.vocab_size);
    checkModel(req.model);
    return textCompletion(ctx, req, c.get('rec'), c.req.raw.signal);
  });

  const modelCard = (id: string) => ({
    id,
    object: 'model',
    created: 0,
    owned_by: 'dsv3',
    max_model_len: ctx.model.cfg.max_position_embeddings,
  });
  app.get('/v1/models', (c) => c.json({ object: 'list', data: ctx.modelNames.map(modelCard) }));
  app.get('/v1/models/:id', (c) => {
    const id = c.req.param('id');
    checkModel(id);
    return c.json(modelCard(id));
  });

  app.get('/health', (c) => c.json({
    status: 'ok', model: ctx.modelName, ...ctx.scheduler.load, paused: ctx.scheduler.paused,
  }));
  app.get('/', (c) => c.html(page));

  // A known route asked with the wrong method: 405 naming the right ones (GET serves HEAD too).
  const allowed: [string, string][] = [
    ['/v1/chat/completions', 'POST'], ['/v1/completions', 'POST'], ['/v1/models', 'GET, HEAD'],
    ['/v1/models/:id', 'GET, HEAD'], ['/health', 'GET, HEAD'],
  ];
  for (const [path, allow] of allowed) {
    app.all(path, (c) => {
      const err = new ApiError(405, `Method ${c.req.method} is not allowed on ${c.req.path}; use ${allow.split(',')[0]}`,
        'invalid_request_error', null, 'method_not_allowed');
      c.get('rec').note = `${err.code}: ${err.message}`;
      return errorResponse(err, { allow });
    });
  }

  app.notFound((c) => {
    const where = `${c.req.method} ${c.req.path}`;
    const err = new ApiError(404, `Invalid URL (${where})`, 'not_found_error', null, 'unknown_url');
    c.get('rec').note = `${err.code}: ${err.message}`;
    return errorResponse(err);
  });

  app.onError((e, c) => {
    const err = toApiError(e);
    const rec = c.get('rec');
    if (rec) rec.note = `${err.code ?? err.type}: ${err.message}`;
    if (err.status >= 500) sink?.(`dsv3 serve: internal error: ${(e as Error).stack ?? e}`);
    return errorResponse(err);
  });

  return app;
}

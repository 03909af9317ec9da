// What the serving benchmarks share (bench/server.ts, bench/serve-vs-llama.ts,
// bench/multiturn.ts): the bench-s GGUF file both engines serve, starting and stopping
// `dsv3 serve` and llama-server, and one streaming OpenAI client that times the first token and
// reads the usage the server reports.
//
// The bench-s GGUF that bench/run.ts exports (.cache/bench/bench-s-bf16.gguf) carries a minimal
// vocabulary without BOS/EOS ids or a chat template: enough for llama-bench, which feeds token
// ids, but neither server can take chat requests with it. benchSChatGguf() exports the same
// checkpoint (.cache/bench/bench-s-bf16/, written by run.ts's own code path when missing) with
// the same convertToGguf call, adding a tokenizer of the model's 8192 ids: DeepSeek-V3's special
// tokens and chat template, byte-level BPE over printable ASCII and its pairs (see
// writeBenchTokenizer). It checks that the tensor data is byte for byte that of bench-s-bf16.gguf.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, symlinkSync,
  writeFileSync,
} from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { byteToUnicode, convertToGguf } from '../src/io/convert-gguf.ts';
import { readGgufHeader } from '../src/io/gguf.ts';

export const ROOT = resolve(import.meta.dirname, '..');
export const CACHE = join(ROOT, '.cache', 'bench');
export const LLAMA_BIN = join(ROOT, '.cache', 'llama.cpp', 'build', 'bin');
const log = (s: string) => process.stderr.write(`bench: ${s}\n`);

// ---------------------------------------------------------------------------------------------
// The bench-s GGUF file with a chat tokenizer

/** DeepSeek-V3's added tokens that the chat template and the server's parsers use. */
const SPECIALS = [
  '<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>', '<｜User｜>', '<｜Assistant｜>',
  '<｜tool▁calls▁begin｜>', '<｜tool▁calls▁end｜>', '<｜tool▁call▁begin｜>', '<｜tool▁call▁end｜>',
  '<｜tool▁outputs▁begin｜>', '<｜tool▁outputs▁end｜>', '<｜tool▁output▁begin｜>', '<｜tool▁output▁end｜>',
  '<｜tool▁sep｜>',
];

/**
 * tokenizer.json and tokenizer_config.json for a `vocabSize`-token model: DeepSeek-V3's
 * pre-tokenizer, decoder, special tokens (flags as DeepSeek-V3 has them) and chat template; ids
 * from SPECIALS.length on are the byte symbols of tab, newline, carriage return, space and the
 * 94 printable ASCII characters, then two-character tokens of printable ASCII (each with the merge
 * that makes it) until the vocabulary is full. No token stands for a byte of 0x80 or above (nor
 * another control character), so whatever random weights sample decodes to valid ASCII text:
 * llama-server fails a chat request whose output is not valid UTF-8. (It encodes ASCII text only;
 * the benchmarks' prompts are lowercase words, digits and full stops.)
 */
export function writeBenchTokenizer(dir: string, vocabSize: number): void {
  const src = join(ROOT, 'node_modules', '@lenml', 'tokenizer-deepseek_v3', 'models');
  const ds = JSON.parse(readFileSync(join(src, 'tokenizer.json'), 'utf8'));
  const dsConfig = JSON.parse(readFileSync(join(src, 'tokenizer_config.json'), 'utf8'));
  const dsAdded = new Map<string, Record<string, unknown>>(
    (ds.added_tokens as Record<string, unknown>[]).map((a) => [a.content as string, a]),
  );
  const added = SPECIALS.map((content, id) => {
    const a = dsAdded.get(content);
    if (!a) throw new Error(`DeepSeek-V3's tokenizer has no ${content}`);
    return { ...a, id };
  });
  const bytes = byteToUnicode();
  const printable = bytes.slice(0x21, 0x7f);
  const vocab: Record<string, number> = {};
  const merges: string[] = [];
  let id = SPECIALS.length;
  for (const b of [0x09, 0x0a, 0x0d, 0x20]) vocab[bytes[b]] = id++;
  for (const c of printable) vocab[c] = id++;
  outer: for (const a of printable) {
    for (const b of printable) {
      if (id >= vocabSize) break outer;
      vocab[a + b] = id++;
      merges.push(`${a} ${b}`);
    }
  }
  if (id < vocabSize) throw new Error(`vocab_size ${vocabSize} is more than this tokenizer fills (${id})`);
  const { model, ...rest } = ds;
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({
    ...rest, added_tokens: added, model: { ...model, vocab, merges },
  }));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({
    add_bos_token: true, add_eos_token: false,
    bos_token: SPECIALS[0], eos_token: SPECIALS[1], pad_token: SPECIALS[1],
    clean_up_tokenization_spaces: false, legacy: true, model_max_length: 4096, unk_token: null,
    tokenizer_class: 'LlamaTokenizerFast', chat_template: dsConfig.chat_template,
  }, null, 1));
}

/** SHA-256 of a file's bytes from `from` to its end. */
function hashFrom(path: string, from: number): string {
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  const buf = Buffer.alloc(1 << 22);
  try {
    for (let pos = from; ; ) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      pos += n;
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

/** Same tensors (names, types, shapes, relative offsets) and byte-identical tensor data. */
function sameTensorData(a: string, b: string): boolean {
  const ha = readGgufHeader(a);
  const hb = readGgufHeader(b);
  const list = (h: typeof ha) =>
    JSON.stringify(h.tensors.map((t) => [t.name, t.type, t.shape, t.offset - h.dataOffset]));
  return list(ha) === list(hb) && hashFrom(a, ha.dataOffset) === hashFrom(b, hb.dataOffset);
}

let checked: string | null = null;

/**
 * The bench-s GGUF file with a chat tokenizer (see the top of this file):
 * .cache/bench/bench-s-bf16-chat.gguf, made again whenever its tensor data is not that of
 * bench-s-bf16.gguf (checked once per process, about a second).
 */
export function benchSChatGguf(): string {
  const ckpt = join(CACHE, 'bench-s-bf16');
  const plain = join(CACHE, 'bench-s-bf16.gguf');
  const out = join(CACHE, 'bench-s-bf16-chat.gguf');
  if (checked) return checked;
  if (existsSync(out) && existsSync(plain) && sameTensorData(out, plain)) return (checked = out);
  if (!existsSync(join(ckpt, 'config.json')) || !existsSync(plain)) {
    log('writing bench-s and its GGUF export (npm run bench -- --prepare --models bench-s)…');
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'run.ts'), '--prepare', '--models', 'bench-s'], {
      stdio: 'inherit',
    });
    if (r.status !== 0) throw new Error(`bench/run.ts --prepare --models bench-s failed (${r.status})`);
  }
  // The checkpoint's files (linked, not copied) plus the tokenizer, in a folder of its own.
  const dir = join(CACHE, 'bench-s-chat');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(ckpt)) {
    if (!f.startsWith('tokenizer')) symlinkSync(join(ckpt, f), join(dir, f));
  }
  const vocab = JSON.parse(readFileSync(join(ckpt, 'config.json'), 'utf8')).vocab_size as number;
  writeBenchTokenizer(dir, vocab);
  log(`exporting bench-s to GGUF (auto) with a chat tokenizer: ${out}…`);
  const tmp = `${out}.tmp`;
  convertToGguf(dir, tmp, { type: 'auto', name: 'bench-s-bf16' });
  if (!sameTensorData(tmp, plain)) {
    rmSync(tmp, { force: true });
    throw new Error(`${tmp}: tensor data differs from ${plain} (exported by older code? delete ${plain} and run again)`);
  }
  renameSync(tmp, out);
  log('tensor data identical to bench-s-bf16.gguf');
  return (checked = out);
}

/** The folder holding the chat tokenizer of benchSChatGguf() (for sizing prompts in tokens). */
export function benchSChatDir(): string {
  benchSChatGguf();
  return join(CACHE, 'bench-s-chat');
}

// ---------------------------------------------------------------------------------------------
// Servers

export interface Server {
  engine: 'dsv3' | 'llama.cpp';
  url: string;
  /** Resolves once nothing runs or waits (requests cut off included); the ms it took. */
  idle(): Promise<number>;
  stop(): Promise<void>;
}

/** Polls `busy` until false (at most 120 s); the ms it took. */
async function waitIdle(busy: () => Promise<boolean>): Promise<number> {
  const t0 = performance.now();
  while (await busy()) {
    if (performance.now() - t0 > 120_000) throw new Error('the server is still busy after 120 s');
    await sleep(50);
  }
  return performance.now() - t0;
}

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => ok(port));
    });
  });
}

function stopper(proc: ChildProcess): () => Promise<void> {
  return async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  };
}

export interface Dsv3Options {
  model: string;
  threads: number;
  maxBatch: number;
  /** --cache-mb; undefined: the server's default. */
  cacheMb?: number;
  kernels?: string;
  extra?: string[];
}

/** `dsv3 serve` in its own process, on a free port; resolves once it listens. */
export async function startDsv3(o: Dsv3Options): Promise<Server> {
  const args = [
    join(ROOT, 'bin', 'dsv3.js'), 'serve', '--model', o.model, '--port', '0', '--quiet',
    '--threads', String(o.threads), '--max-batch', String(o.maxBatch), '--max-queue', '256',
    ...(o.kernels ? ['--kernels', o.kernels] : []),
    ...(o.cacheMb !== undefined ? ['--cache-mb', String(o.cacheMb)] : []),
    ...(o.extra ?? []),
  ];
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const url = await new Promise<string>((ok, fail) => {
    let err = '';
    const onData = (b: Buffer) => {
      err += b.toString();
      const m = /listening on (http:\/\/\S+)/.exec(err);
      if (m) {
        proc.stderr!.off('data', onData);
        proc.off('exit', onExit);
        proc.stderr!.resume(); // keep draining
        ok(m[1]);
      }
    };
    const onExit = (code: number | null) => fail(new Error(`dsv3 serve exited (${code}): ${err.slice(-3000)}`));
    proc.stderr!.on('data', onData);
    proc.once('exit', onExit);
  });
  const idle = () => waitIdle(async () => {
    const h = await (await fetch(`${url}/health`)).json() as { active: number; queued: number };
    return h.active > 0 || h.queued > 0;
  });
  return { engine: 'dsv3', url, idle, stop: stopper(proc) };
}

export interface LlamaOptions {
  model: string;
  threads: number;
  /** -np: server slots (the most sequences decoded together). */
  slots: number;
  /** Context per slot: -c is slots × this (the KV cache is split evenly, -no-kvu). */
  ctxPerSlot: number;
  extra?: string[];
}

/** llama-server (built from the same llama.cpp source as llama-bench); resolves once /health is 200. */
export async function startLlama(o: LlamaOptions): Promise<Server> {
  const bin = join(LLAMA_BIN, 'llama-server');
  if (!existsSync(bin)) {
    throw new Error(`${bin} not found: build it with cmake --build .cache/llama.cpp/build --target llama-server`);
  }
  const port = await freePort();
  const args = [
    '-m', o.model, '--host', '127.0.0.1', '--port', String(port),
    '-t', String(o.threads), '-tb', String(o.threads),
    '-np', String(o.slots), '-c', String(o.slots * o.ctxPerSlot), '-no-kvu', '--cont-batching',
    '--no-webui', ...(o.extra ?? []),
  ];
  const logFile = join(tmpdir(), `llama-server-${port}.log`);
  const fd = openSync(logFile, 'w');
  const env = { ...process.env, LD_LIBRARY_PATH: [LLAMA_BIN, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':') };
  const proc = spawn(bin, args, { stdio: ['ignore', fd, fd], env });
  closeSync(fd);
  const url = `http://127.0.0.1:${port}`;
  let exited: number | null | undefined;
  proc.once('exit', (code) => (exited = code));
  for (const t0 = Date.now(); ; ) {
    if (exited !== undefined) {
      throw new Error(`llama-server exited (${exited}): ${readFileSync(logFile, 'utf8').slice(-3000)}`);
    }
    if (Date.now() - t0 > 300_000) {
      proc.kill('SIGKILL');
      throw new Error(`llama-server did not come up in 300 s (log: ${logFile})`);
    }
    try {
      const r = await fetch(`${url}/health`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    await sleep(200);
  }
  const stop = stopper(proc);
  const idle = () => waitIdle(async () => {
    const slots = await (await fetch(`${url}/slots`)).json() as { is_processing: boolean }[];
    return slots.some((x) => x.is_processing);
  });
  return { engine: 'llama.cpp', url, idle, stop: async () => { await stop(); rmSync(logFile, { force: true }); } };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// The client

export interface Sampling {
  temperature: number;
  seed: number;
}

/**
 * A streamed chat request's body, the same for both engines: sampling spelled out (llama-server's
 * defaults are top_k 40, top_p 0.95, min_p 0.05; here every filter is off, as dsv3's defaults for
 * requests), and `ignore_eos` so llama-server generates max_tokens (dsv3 has no such field and
 * ignores it; count completion tokens, which usage reports).
 */
export function chatBody(messages: { role: string; content: string }[], maxTokens: number, s: Sampling, extra: object = {}): object {
  return {
    messages, max_tokens: maxTokens, temperature: s.temperature, top_p: 1, top_k: 0, min_p: 0, seed: s.seed,
    stream: true, stream_options: { include_usage: true }, ignore_eos: true, ...extra,
  };
}

export interface StreamResult {
  /** Completion tokens: usage.completion_tokens, or (cut off, no usage) the chunks with text. */
  tokens: number;
  /** Chunks that carried text (content, reasoning_content or, for /v1/completions, text). */
  chunks: number;
  /** Request sent to first chunk with text (ms); null when none came. */
  ttftMs: number | null;
  totalMs: number;
  promptTokens: number | null;
  cachedTokens: number | null;
  finishReason: string | null;
  /** Cut off by the signal before the stream ended. */
  aborted: boolean;
}

/**
 * POSTs a streaming request and reads its server-sent events to the end (or until `signal`).
 * Each request has a connection of its own: with keep-alive, a server closing an idle or
 * much-used connection (cpp-httplib does after 100 requests) races the client's next request on
 * it, which then fails with "other side closed" without having reached the server.
 */
export async function streamRequest(url: string, path: string, body: object, signal?: AbortSignal): Promise<StreamResult> {
  const t0 = performance.now();
  const r: StreamResult = {
    tokens: 0, chunks: 0, ttftMs: null, totalMs: 0, promptTokens: null, cachedTokens: null, finishReason: null, aborted: false,
  };
  let completion: number | null = null;
  const where = `${url}${path}`;
  const onEvent = (data: string) => {
    if (data === '[DONE]') return;
    const ev = JSON.parse(data);
    if (ev.error) throw new Error(`${where}: stream error: ${JSON.stringify(ev.error)}`);
    const c = ev.choices?.[0];
    const text = c?.delta?.content || c?.delta?.reasoning_content || c?.text;
    if (typeof text === 'string' && text.length > 0) {
      r.chunks++;
      if (r.ttftMs === null) r.ttftMs = performance.now() - t0;
    }
    if (c?.finish_reason) r.finishReason = c.finish_reason;
    if (ev.usage) {
      completion = ev.usage.completion_tokens ?? null;
      r.promptTokens = ev.usage.prompt_tokens ?? null;
      r.cachedTokens = ev.usage.prompt_tokens_details?.cached_tokens ?? null;
    }
  };
  const payload = Buffer.from(JSON.stringify(body));
  try {
    await new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(new Error('aborted'));
      const onAbort = () => req.destroy(new Error('aborted'));
      const ok = () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const fail = (e: unknown) => {
        signal?.removeEventListener('abort', onAbort);
        reject(e);
      };
      const req = httpRequest(where, {
        method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': payload.length },
      }, (res) => {
        res.setEncoding('utf8');
        let buf = '';
        if (res.statusCode !== 200) {
          res.on('data', (c: string) => (buf += c));
          res.on('end', () => fail(new Error(`${where}: HTTP ${res.statusCode}: ${buf.slice(0, 500)}`)));
          return;
        }
        res.on('data', (chunk: string) => {
          buf += chunk;
          try {
            let nl: number;
            while ((nl = buf.indexOf('\n')) >= 0) {
              const line = buf.slice(0, nl).trim();
              buf = buf.slice(nl + 1);
              if (line.startsWith('data:')) onEvent(line.slice(5).trim());
            }
          } catch (e) {
            fail(e);
            req.destroy();
          }
        });
        res.on('end', ok);
        res.on('error', fail);
        res.on('close', () => {
          if (!res.complete) fail(new Error(`${where}: the connection closed mid-stream`));
        });
      });
      req.on('error', fail);
      signal?.addEventListener('abort', onAbort, { once: true });
      req.end(payload);
    });
  } catch (e) {
    if (!signal?.aborted) throw e;
    r.aborted = true;
  }
  r.totalMs = performance.now() - t0;
  r.tokens = completion ?? r.chunks;
  return r;
}

// ---------------------------------------------------------------------------------------------
// Prompts and statistics

/** A deterministic generator of lowercase words (mulberry32). */
export function wordSource(seed: number): () => string {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const letters = 'etaoinshrdlcumwfgypbvkjxqz';
  return () => {
    const n = 2 + Math.floor(next() * 8);
    let w = '';
    for (let i = 0; i < n; i++) w += letters[Math.floor(next() ** 1.5 * letters.length)];
    return w;
  };
}

/**
 * Text of exactly `tokens` tokens under `count` (a word at a time, then trimmed a character at a
 * time; with the bench tokenizer a word is about (length + 1) / 2 tokens), from seed `seed`.
 */
export function textOfTokens(tokens: number, seed: number, count: (s: string) => number): string {
  const word = wordSource(seed);
  let text = '';
  // Grow by words to just past the target (counting every ~16 words to keep it cheap).
  while (count(text) < tokens) for (let i = 0; i < 16; i++) text += (text ? ' ' : '') + word();
  while (text.length > 0 && count(text) > tokens) text = text.slice(0, -1).trimEnd();
  while (count(text) < tokens) text += 'a'; // an odd letter joins a pair or adds one token
  return text;
}

export const median = (xs: number[]) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Nearest-rank percentile (p in 0..100). */
export const percentile = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length, Math.max(1, Math.ceil((p / 100) * s.length))) - 1];
};

// The grammar worker: xgrammar runs here, off the main thread, so that compiling a grammar
// (tens of milliseconds to seconds at a 129k-token vocabulary) never holds up the decode loop
// or the HTTP server, and each next-token mask is computed while the main thread runs the
// model's next forward pass. Plain JavaScript, so the thread needs no TypeScript loader.
//
// Protocol (engine.ts is the other side). workerData: { vocab, vocabType, vocabSize, stopIds }.
// Requests carry an `id` and are answered { id, ok, ... } in order:
//   { op: 'compile', id, spec }            -> { grammar } (a handle), or { ok: false, message }
//   { op: 'matcher', id, grammar, shared } -> { matcher }; the first mask is in `shared`
// and these are not answered:
//   { op: 'accept', matcher, token }       the next mask goes into the matcher's `shared`
//   { op: 'free', matcher } / { op: 'drop', grammar }
// `shared` is an Int32Array on a SharedArrayBuffer: [0] counts the masks written, [1] is 1
// once a token was refused (then the mask allows only the stop tokens), [2…] is the mask, one
// bit per token id (bit i & 31 of word i >> 5; 1 = allowed). Each write ends with
// Atomics.store + notify on [0], which the main thread waits on.

import { parentPort, workerData } from 'node:worker_threads';
import { loadXgrammar, schemaToEbnf, JSON_STYLE } from './xgrammar.js';

const xg = loadXgrammar();
const { vocab, vocabType, vocabSize, stopIds } = workerData;
const info = await xg.TokenizerInfo.createTokenizerInfo(vocab, vocabType, false, vocabSize, stopIds);
const compiler = await xg.GrammarCompiler.createGrammarCompiler(info, false); // engine.ts caches
const grammars = new Map();
const matchers = new Map();
let next = 1;

// xgrammar reports a bad input by printing "[FATAL] file:line: message" (and "Aborted()") to
// stderr through a console.error it bound at load, and aborting the call: keep the message,
// without the build path, for the error reply instead of printing it.
async function withMessages(f) {
  const said = [];
  const write = process.stderr.write;
  process.stderr.write = function (chunk, ...rest) {
    const text = String(chunk);
    if (/\[FATAL\]|Aborted\(/.test(text)) {
      said.push(text);
      return true;
    }
    return write.call(this, chunk, ...rest);
  };
  try {
    return await f();
  } catch (e) {
    const fatal = said.map((s) => /\[FATAL\][^:]*:\d+: ([^\n]*)/.exec(s)?.[1]).find(Boolean);
    const message = fatal ?? (e instanceof Error && !/Aborted/.test(e.message) ? e.message : 'the grammar engine refused it');
    throw new Error(message.trim());
  } finally {
    process.stderr.write = write;
  }
}

async function compile(spec) {
  if (spec.kind === 'json_schema') {
    return compiler.compileGrammar(await schemaToEbnf(xg, spec.schema, spec.strict, spec.rules));
  }
  if (spec.kind === 'tool_calls') {
    // DeepSeek's tool-call block: begin, calls separated by `separator`, end; each call is
    // its fixed header, the arguments (JSON of the function's parameters schema), its footer.
    const tags = [];
    for (const c of spec.calls) {
      tags.push({ type: 'tag', begin: c.begin, content: { type: 'grammar', grammar: await schemaToEbnf(xg, c.schema, true, c.rules) }, end: c.end });
    }
    return compiler.compileStructuralTag({
      type: 'structural_tag',
      format: {
        type: 'tag',
        begin: spec.begin,
        content: { type: 'tags_with_separator', tags, separator: spec.separator, at_least_one: true, stop_after_first: spec.single },
        end: spec.end,
      },
    });
  }
  throw new Error(`unknown grammar kind ${spec.kind}`);
}

const words = Math.ceil(vocabSize / 32);

async function writeMask(m) {
  if (!m.matcher.isTerminated()) m.shared.set(await m.matcher.getNextTokenBitmask(), 2);
  Atomics.add(m.shared, 0, 1);
  Atomics.notify(m.shared, 0);
}

function refuse(m) {
  m.shared.fill(0, 2, 2 + words);
  for (const id of stopIds) m.shared[2 + (id >> 5)] |= 1 << (id & 31);
  Atomics.store(m.shared, 1, 1);
  Atomics.add(m.shared, 0, 1);
  Atomics.notify(m.shared, 0);
}

async function handle(msg) {
  switch (msg.op) {
    case 'compile': {
      try {
        const g = await withMessages(() => compile(msg.spec));
        const id = next++;
        grammars.set(id, g);
        parentPort.postMessage({ id: msg.id, ok: true, grammar: id });
      } catch (e) {
        parentPort.postMessage({ id: msg.id, ok: false, message: e.message });
      }
      return;
    }
    case 'matcher': {
      try {
        const matcher = await xg.GrammarMatcher.createGrammarMatcher(grammars.get(msg.grammar));
        const id = next++;
        const m = { matcher, shared: msg.shared };
        matchers.set(id, m);
        await writeMask(m);
        parentPort.postMessage({ id: msg.id, ok: true, matcher: id });
      } catch (e) {
        parentPort.postMessage({ id: msg.id, ok: false, message: String(e?.message ?? e) });
      }
      return;
    }
    case 'accept': {
      const m = matchers.get(msg.matcher);
      if (!m) return;
      if (m.matcher.isTerminated() || !m.matcher.acceptToken(msg.token)) refuse(m);
      else await writeMask(m);
      return;
    }
    case 'free': {
      matchers.get(msg.matcher)?.matcher.dispose();
      matchers.delete(msg.matcher);
      return;
    }
    case 'drop': {
      grammars.get(msg.grammar)?.dispose();
      grammars.delete(msg.grammar);
      return;
    }
  }
}

// One message at a time, in order (handlers await only already-loaded code, but a chain keeps
// that an invariant rather than a property of xgrammar's internals).
let chain = Promise.resolve();
parentPort.on('message', (msg) => {
  chain = chain.then(() => handle(msg)).catch((e) => parentPort.postMessage({ type: 'error', message: String(e?.stack ?? e) }));
});
parentPort.postMessage({ type: 'ready', style: JSON_STYLE });

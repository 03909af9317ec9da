// DeepSeek output formats -> OpenAI API fields, as pure text parsers. Reasoning models write
// their thoughts inside `<think>…</think>` (-> `reasoning_content`); DeepSeek-V3 writes tool
// calls in its own tokens, exactly as its chat template renders an assistant tool-call turn:
//
//   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
//   ```json
//   ARGS
//   ```<｜tool▁call▁end｜>
//   <｜tool▁call▁begin｜>…<｜tool▁call▁end｜><｜tool▁calls▁end｜>
//
// (-> `tool_calls`). Those tokens are not special in DeepSeek-V3's tokenizer, so the detokenizer
// lets them through as text. Each parser is incremental: push() any split of the text and
// flush() at the end, and the events add up to what the whole-text functions return, whatever
// the split. They work on text only; nothing here knows about HTTP or the model.

export const THINK_OPEN = '<think>';
export const THINK_CLOSE = '</think>';
export const CALLS_BEGIN = '<｜tool▁calls▁begin｜>';
export const CALLS_END = '<｜tool▁calls▁end｜>';
export const CALL_BEGIN = '<｜tool▁call▁begin｜>';
export const CALL_END = '<｜tool▁call▁end｜>';
export const TOOL_SEP = '<｜tool▁sep｜>';

/** One piece of parsed model output, in order. */
export type OutputEvent =
  | { type: 'content'; text: string }
  | { type: 'reasoning'; text: string }
  /** A tool call begins: its name is complete, its arguments follow as 'tool_args'. */
  | { type: 'tool_call'; index: number; id: string; name: string }
  | { type: 'tool_args'; index: number; text: string };

/** A finished tool call, OpenAI-style (`arguments` is the model's JSON text, unchecked). */
export interface ParsedToolCall {
  id: string;
  name: string;
  arguments: string;
}

// Where the earliest marker starts in buf (at, or -1), and when none does, how much of buf
// cannot be the start of one (`safe`: a suffix that is a proper prefix of a marker is held).
function scan(buf: string, markers: readonly string[]): { at: number; marker: string; safe: number } {
  let best = -1;
  let found = '';
  for (const m of markers) {
    const i = buf.indexOf(m);
    if (i >= 0 && (best < 0 || i < best)) {
      best = i;
      found = m;
    }
  }
  if (best >= 0) return { at: best, marker: found, safe: best };
  return { at: -1, marker: '', safe: buf.length - partialSuffix(buf, markers) };
}

// Length of the longest suffix of buf that is a proper prefix of one of the markers.
function partialSuffix(buf: string, markers: readonly string[]): number {
  let n = 0;
  for (const m of markers) {
    for (let k = Math.min(m.length - 1, buf.length); k > n; k--) {
      if (buf.endsWith(m.slice(0, k))) {
        n = k;
        break;
      }
    }
  }
  return n;
}

/** Splits `<think>…</think>` spans (reasoning) from the rest (content). */
export class ReasoningParser {
  private buf = '';
  private thinking: boolean;

  /** `startInReasoning`: the prompt already opened `<think>` (as R1's newer templates do). */
  constructor(opts: { startInReasoning?: boolean } = {}) {
    this.thinking = opts.startInReasoning ?? false;
  }

  push(text: string): OutputEvent[] {
    this.buf += text;
    const out: OutputEvent[] = [];
    for (;;) {
      const type = this.thinking ? 'reasoning' : 'content';
      const r = scan(this.buf, [this.thinking ? THINK_CLOSE : THINK_OPEN]);
      if (r.at < 0) {
        if (r.safe > 0) out.push({ type, text: this.buf.slice(0, r.safe) });
        this.buf = this.buf.slice(r.safe);
        return out;
      }
      if (r.at > 0) out.push({ type, text: this.buf.slice(0, r.at) });
      this.buf = this.buf.slice(r.at + r.marker.length);
      this.thinking = !this.thinking;
    }
  }

  flush(): OutputEvent[] {
    const text = this.buf;
    this.buf = '';
    return text ? [{ type: this.thinking ? 'reasoning' : 'content', text }] : [];
  }
}

type ToolState = 'text' | 'between' | 'head' | 'name' | 'fence' | 'args' | 'after';

// The opening fence the template writes before the arguments, and the closing one after.
const FENCE_OPEN = /^```(?:json)?[ \t]*\r?\n/;
const FENCE_OPEN_PARTIAL = /^(?:`{0,3}|```j?s?o?n?[ \t]*\r?)$/;
// Whitespace and up to three backticks at the end of the arguments (the closing fence).
const FENCE_CLOSE = /\s*`{0,3}\s*$/;

/** Turns DeepSeek-V3 tool-call tokens into tool-call events; other text stays content. */
export class ToolCallParser {
  private buf = '';
  private state: ToolState = 'text';
  private index = -1;
  private name = '';
  private readonly makeId: (index: number) => string;

  /** `makeId` names each call (default `call_0`, `call_1`, …). */
  constructor(opts: { makeId?: (index: number) => string } = {}) {
    this.makeId = opts.makeId ?? ((i) => `call_${i}`);
  }

  push(text: string): OutputEvent[] {
    this.buf += text;
    const out: OutputEvent[] = [];
    while (this.step(out, false));
    return out;
  }

  /** Ends the stream: held text comes out; a call cut short keeps what it had. */
  flush(): OutputEvent[] {
    const out: OutputEvent[] = [];
    while (this.step(out, true));
    return out;
  }

  // One transition; false when it needs more text (or, at the end, when all is out).
  private step(out: OutputEvent[], end: boolean): boolean {
    switch (this.state) {
      case 'text':
      case 'after': {
        const r = scan(this.buf, this.state === 'text' ? [CALLS_BEGIN, CALL_BEGIN] : []);
        const upto = r.at >= 0 ? r.at : end ? this.buf.length : r.safe;
        if (upto > 0) out.push({ type: 'content', text: this.buf.slice(0, upto) });
        this.buf = this.buf.slice(upto);
        if (r.at < 0) return false;
        this.buf = this.buf.slice(r.marker.length);
        this.state = r.marker === CALL_BEGIN ? 'head' : 'between';
        return true;
      }
      case 'between': {
        // Between calls: whitespace, then the next call or the end of the calls. Anything
        // else means the model left the format: it is content again.
        this.buf = this.buf.replace(/^\s+/, '');
        if (this.buf.startsWith(CALL_BEGIN) || this.buf.startsWith(CALLS_END)) {
          this.state = this.buf.startsWith(CALL_BEGIN) ? 'head' : 'after';
          this.buf = this.buf.slice(this.state === 'head' ? CALL_BEGIN.length : CALLS_END.length);
          return true;
        }
        if (!this.buf) return false;
        const partial = CALL_BEGIN.startsWith(this.buf) || CALLS_END.startsWith(this.buf);
        if (partial && !end) return false;
        this.state = 'text';
        return true;
      }
      case 'head':
      case 'name': {
        // head: the call type ("function") up to the separator; name: up to the newline.
        const stop = this.state === 'head' ? TOOL_SEP : '\n';
        const r = scan(this.buf, [stop, CALL_END]);
        if (r.at < 0 && !end) return false;
        const at = r.at >= 0 ? r.at : this.buf.length;
        if (this.state === 'name') this.name = this.buf.slice(0, at).trim();
        this.buf = this.buf.slice(at + (r.at >= 0 ? r.marker.length : 0));
        if (r.at >= 0 && r.marker === stop) {
          this.state = this.state === 'head' ? 'name' : 'fence';
          if (this.state === 'fence') this.openCall(out);
          return true;
        }
        // The call ended (or the stream did) before its name did.
        if (this.state === 'name' && this.name) this.openCall(out);
        this.state = r.at >= 0 ? 'between' : 'after';
        return r.at >= 0;
      }
      case 'fence': {
        const m = FENCE_OPEN.exec(this.buf);
        if (!m && FENCE_OPEN_PARTIAL.test(this.buf) && !end) return false;
        if (m) this.buf = this.buf.slice(m[0].length);
        this.state = 'args';
        return true;
      }
      case 'args': {
        const r = scan(this.buf, [CALL_END]);
        if (r.at < 0 && !end) {
          // Hold back what may be the closing fence and the start of the end token.
          const held = this.buf.slice(0, r.safe);
          const safe = closingStart(held);
          this.args(out, this.buf.slice(0, safe));
          this.buf = this.buf.slice(safe);
          return false;
        }
        const at = r.at >= 0 ? r.at : this.buf.length;
        const body = this.buf.slice(0, at);
        this.args(out, body.slice(0, closingStart(body)));
        this.buf = this.buf.slice(at + (r.at >= 0 ? CALL_END.length : 0));
        this.state = r.at >= 0 ? 'between' : 'after';
        return r.at >= 0 || this.buf.length > 0;
      }
    }
  }

  private openCall(out: OutputEvent[]): void {
    this.index++;
    out.push({ type: 'tool_call', index: this.index, id: this.makeId(this.index), name: this.name });
  }

  private args(out: OutputEvent[], text: string): void {
    if (text) out.push({ type: 'tool_args', index: this.index, text });
  }
}

// Where the trailing whitespace-and-backticks run of s (the closing fence) begins.
function closingStart(s: string): number {
  return FENCE_CLOSE.exec(s)!.index;
}

/** What {@link OutputParser} looks for. */
export interface OutputParserOptions {
  /** Parse tool calls (only when the request offered tools). Default false. */
  tools?: boolean;
  /**
   * Split `<think>` spans into reasoning. Default true; false when the output is constrained
   * to JSON or tool calls, where such text can only be part of a string.
   */
  reasoning?: boolean;
  startInReasoning?: boolean;
  makeId?: (index: number) => string;
}

/** Reasoning first, then tool calls in the content outside `<think>`. */
export class OutputParser {
  private readonly reasoning: ReasoningParser | null;
  private readonly tools: ToolCallParser | null;

  constructor(opts: OutputParserOptions = {}) {
    this.reasoning = opts.reasoning === false ? null : new ReasoningParser(opts);
    this.tools = opts.tools ? new ToolCallParser(opts) : null;
  }

  push(text: string): OutputEvent[] {
    if (!this.reasoning) return this.route(text ? [{ type: 'content', text }] : [], false);
    return this.route(this.reasoning.push(text), false);
  }

  flush(): OutputEvent[] {
    return this.route(this.reasoning ? this.reasoning.flush() : [], true);
  }

  private route(events: OutputEvent[], end: boolean): OutputEvent[] {
    if (!this.tools) return events;
    const out: OutputEvent[] = [];
    for (const e of events) {
      if (e.type === 'content') out.push(...this.tools.push(e.text));
      else out.push(e);
    }
    if (end) out.push(...this.tools.flush());
    return out;
  }
}

/** The whole output, parsed: `reasoning` is null when the model wrote no `<think>` span. */
export interface ParsedOutput {
  content: string;
  reasoning: string | null;
  toolCalls: ParsedToolCall[];
}

/** Folds events into content, reasoning and finished tool calls. */
export function collectEvents(events: Iterable<OutputEvent>): ParsedOutput {
  let content = '';
  let reasoning: string | null = null;
  const toolCalls: ParsedToolCall[] = [];
  for (const e of events) {
    if (e.type === 'content') content += e.text;
    else if (e.type === 'reasoning') reasoning = (reasoning ?? '') + e.text;
    else if (e.type === 'tool_call') toolCalls[e.index] = { id: e.id, name: e.name, arguments: '' };
    else toolCalls[e.index]!.arguments += e.text;
  }
  return { content, reasoning, toolCalls };
}

/** Parses a whole output at once. */
export function parseOutput(text: string, opts: OutputParserOptions = {}): ParsedOutput {
  const p = new OutputParser(opts);
  return collectEvents([...p.push(text), ...p.flush()]);
}

/** `<think>…</think>` spans -> reasoning; the rest -> content. */
export function parseReasoning(text: string): { reasoning: string | null; content: string } {
  const { reasoning, content } = parseOutput(text);
  return { reasoning, content };
}

/** DeepSeek-V3 tool-call tokens -> tool calls; the rest -> content. */
export function parseToolCalls(
  text: string,
  opts: { makeId?: (index: number) => string } = {},
): { content: string; toolCalls: ParsedToolCall[] } {
  const p = new ToolCallParser(opts);
  const { content, toolCalls } = collectEvents([...p.push(text), ...p.flush()]);
  return { content, toolCalls };
}

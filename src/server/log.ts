// One log line per request: id, route, status, and for generation the tokens in and out, the
// time to first token and the decode rate. A streamed request is logged when its stream ends,
// the others when their response is ready.

import { randomBytes } from 'node:crypto';
import type { CompletionResult } from '../pipeline/completion.ts';

/** Where log lines go; null: nowhere. */
export type LogSink = ((line: string) => void) | null;

export class RequestRecord {
  readonly id = randomBytes(12).toString('hex');
  private readonly t0 = performance.now();
  /** Set by a handler that answers with a stream: the line waits for done(). */
  stream = false;
  /** An error's code and message, for the line. */
  note = '';
  private stats = '';
  private logged = false;
  /** Closes the client's connection at once, where the HTTP layer allows it (else null). */
  disconnect: (() => void) | null = null;

  constructor(
    private readonly method: string,
    private readonly path: string,
    private readonly sink: LogSink,
  ) {}

  /** Records what the generation did; a stream's line goes out now. */
  done(results: CompletionResult[], promptTokens: number[]): void {
    const out = results.reduce((a, r) => a + r.completionTokens, 0);
    const inTok = promptTokens.reduce((a, b) => a + b, 0);
    const ttft = Math.min(...results.map((r) => r.ttftMs));
    const total = Math.max(...results.map((r) => r.totalMs));
    const rate = out > 0 && total > 0 ? (out / total) * 1e3 : 0;
    const finish = [...new Set(results.map((r) => r.finish))].join(',');
    const cached = results.reduce((a, r) => a + (r.cachedTokens ?? 0), 0);
    this.stats = `in=${inTok}${cached ? ` cached=${cached}` : ''} out=${out} ttft=${ttft.toFixed(0)}ms ${rate.toFixed(1)} tok/s ${finish}`;
    if (this.stream) this.log(200);
  }

  /** Writes a line about something that happened to this request (besides its request line). */
  event(text: string): void {
    this.sink?.(`dsv3 serve: ${this.id.slice(0, 12)} ${text}`);
  }

  /** Writes the line (once). */
  log(status: number): void {
    if (this.logged || !this.sink) return;
    this.logged = true;
    const ms = performance.now() - this.t0;
    const parts = [this.id.slice(0, 12), this.method, this.path, String(status)];
    if (this.stream) parts.push('stream');
    if (this.stats) parts.push(this.stats);
    parts.push(ms >= 1e3 ? `${(ms / 1e3).toFixed(2)}s` : `${ms.toFixed(1)}ms`);
    if (this.note) parts.push(this.note);
    this.sink(`dsv3 serve: ${parts.join(' ')}`);
  }
}

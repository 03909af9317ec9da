// Stop strings over streamed text: text goes out as soon as it cannot be the start of a stop
// string; on a match, the text before it goes out and the stream is over. Works on decoded
// text chunks (from detokenizer.ts), not on token ids; stop *tokens* are the engine's business.

import { DsError } from '../errors.ts';

/** What {@link StopMatcher.push} lets out. */
export interface StopResult {
  /** Text that is now safe to show. Never contains (the start of) a stop string. */
  emit: string;
  /** True once a stop string matched; later pushes emit nothing. */
  stopped: boolean;
}

/** Holds back streamed text that might begin a stop string; cuts the stream at the first match. */
export class StopMatcher {
  private readonly stops: string[];
  private held = '';
  private done = false;

  constructor(stops: string[]) {
    if (!Array.isArray(stops)) throw new DsError('BAD_INPUT', 'stop: must be an array of strings');
    stops.forEach((s, i) => {
      if (typeof s !== 'string' || s.length === 0) {
        throw new DsError('BAD_INPUT', `stop[${i}]: must be a non-empty string`);
      }
    });
    this.stops = [...stops];
  }

  /** True once a stop string has matched. */
  get stopped(): boolean {
    return this.done;
  }

  /** Feeds the next chunk of text. */
  push(text: string): StopResult {
    if (this.done) return { emit: '', stopped: true };
    const buf = this.held + text;
    let cut = -1;
    for (const s of this.stops) {
      const at = buf.indexOf(s);
      if (at !== -1 && (cut === -1 || at < cut)) cut = at;
    }
    if (cut !== -1) {
      this.done = true;
      this.held = '';
      return { emit: buf.slice(0, cut), stopped: true };
    }
    const keep = this.partialTail(buf);
    this.held = buf.slice(buf.length - keep);
    return { emit: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** Ends the stream: returns the held-back text (none after a stop) and resets the hold. */
  flush(): string {
    const out = this.done ? '' : this.held;
    this.held = '';
    return out;
  }

  // Length of the longest suffix of buf that is a proper prefix of some stop string.
  private partialTail(buf: string): number {
    let best = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, buf.length); n > best; n--) {
        if (buf.endsWith(s.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}

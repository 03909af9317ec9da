// The --speculative / --draft-tokens / --draft-vocab / --draft-policy / --stats flags shared by
// generate, chat and serve.

import type { SeqResult } from '../engine/scheduler.ts';
import { UsageError, intOption } from './args.ts';

export const SPECULATIVE_OPTIONS = {
  speculative: { type: 'string' },
  'draft-tokens': { type: 'string' },
  'draft-vocab': { type: 'string' },
  'draft-policy': { type: 'string' },
  stats: { type: 'boolean' },
} as const;

/**
 * `--speculative mtp [--draft-tokens K] [--draft-vocab N] [--draft-policy adaptive|fixed]` →
 * the scheduler's setting.
 */
export function speculativeOption(values: {
  speculative?: string;
  'draft-tokens'?: string;
  'draft-vocab'?: string;
  'draft-policy'?: string;
}): { draftTokens: number; draftVocab?: number; policy?: 'adaptive' | 'fixed' } | undefined {
  const mode = values.speculative;
  if (mode === undefined) {
    for (const f of ['draft-tokens', 'draft-vocab', 'draft-policy'] as const) {
      if (values[f] !== undefined) throw new UsageError(`--${f} needs --speculative mtp`);
    }
    return undefined;
  }
  if (mode !== 'mtp') throw new UsageError(`--speculative must be "mtp", got "${mode}"`);
  const v = values['draft-vocab'];
  const policy = values['draft-policy'];
  if (policy !== undefined && policy !== 'adaptive' && policy !== 'fixed') {
    throw new UsageError(`--draft-policy must be one of adaptive, fixed, got "${policy}"`);
  }
  return {
    draftTokens: intOption(values['draft-tokens'], 'draft-tokens', 1, 1),
    draftVocab: v === undefined ? undefined : intOption(v, 'draft-vocab', 0, 1),
    ...(policy === undefined ? {} : { policy }),
  };
}

export interface DecodeStats {
  acceptance?: number;
  acceptance_per_position?: number[];
  accepted_per_step?: number;
  decode_tps: number;
}

/** Decode speed (tokens after the first, per second) and, when speculating, acceptance. */
export function decodeStats(r: SeqResult): DecodeStats {
  const secs = (r.totalMs - r.ttftMs) / 1e3;
  const decode_tps = r.completionTokens > 1 && secs > 0 ? (r.completionTokens - 1) / secs : 0;
  const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
  if (!r.spec) return { decode_tps: round(decode_tps, 1) };
  return {
    acceptance: round(r.spec.acceptance),
    acceptance_per_position: r.spec.perPosition.map((a) => round(a)),
    accepted_per_step: round(r.spec.acceptedPerStep),
    decode_tps: round(decode_tps, 1),
  };
}

export function printStats(s: DecodeStats): void {
  const parts = [`decode ${s.decode_tps.toFixed(1)} tok/s`];
  if (s.acceptance !== undefined) {
    parts.push(`acceptance ${(s.acceptance * 100).toFixed(1)}%`);
    parts.push(`per position [${s.acceptance_per_position!.map((a) => (a * 100).toFixed(0) + '%').join(', ')}]`);
    parts.push(`${s.accepted_per_step!.toFixed(2)} tokens per step`);
  }
  process.stderr.write(`dsv3: ${parts.join(', ')}\n`);
}

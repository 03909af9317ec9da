// The absorbed MLA cache: per layer and position it keeps only the normed KV latent
// (kv_lora_rank numbers) and the shared RoPE key (qk_rope_head_dim numbers), never the
// per-head keys and values. One SequenceCache per sequence; layers beyond
// num_hidden_layers are the MTP modules' own caches.

import { DsError } from '../errors.ts';

/** Latent cache of one layer of one sequence; grows by doubling up to `maxLen`. */
export class LayerCache {
  /** [capacity, C] normed latents, position-major. */
  kv: Float32Array;
  /** [capacity, R] rotated RoPE keys. */
  pe: Float32Array;
  /** Positions 0 … length-1 are filled. */
  length = 0;

  constructor(
    readonly C: number,
    readonly R: number,
    readonly maxLen: number,
  ) {
    const cap = Math.min(16, maxLen);
    this.kv = new Float32Array(cap * C);
    this.pe = new Float32Array(cap * R);
  }

  get capacity(): number {
    return this.kv.length / this.C;
  }

  /**
   * Write T new positions at p0 … p0+T-1 (kvNew [T, C], peNew [T, R]) and return views of
   * positions 0 … p0+T-1. Writing at p0 < length overwrites (rolls back) the tail.
   */
  update(kvNew: Float32Array, peNew: Float32Array, p0: number, T: number) {
    const end = p0 + T;
    if (p0 > this.length) throw new Error(`cache write at ${p0} leaves a hole after ${this.length}`);
    if (end > this.maxLen) {
      throw new DsError(
        'CONTEXT_OVERFLOW',
        `sequence of ${end} positions exceeds max_position_embeddings (${this.maxLen})`,
      );
    }
    if (end > this.capacity) this.grow(end);
    this.kv.set(kvNew.subarray(0, T * this.C), p0 * this.C);
    this.pe.set(peNew.subarray(0, T * this.R), p0 * this.R);
    this.length = end;
    return { kv: this.kv.subarray(0, end * this.C), pe: this.pe.subarray(0, end * this.R) };
  }

  /** Make room for `n` positions in one allocation (instead of doubling step by step). */
  reserve(n: number): void {
    if (n > this.capacity) this.grow(Math.min(n, this.maxLen));
  }

  private grow(need: number): void {
    let cap = this.capacity;
    while (cap < need) cap *= 2;
    cap = Math.min(cap, this.maxLen);
    const kv = new Float32Array(cap * this.C);
    kv.set(this.kv.subarray(0, this.length * this.C));
    const pe = new Float32Array(cap * this.R);
    pe.set(this.pe.subarray(0, this.length * this.R));
    this.kv = kv;
    this.pe = pe;
  }

  /** Bytes held per cached position: (C + R) float32 numbers. */
  get bytesPerPosition(): number {
    return (this.C + this.R) * 4;
  }
}

/** The caches of every layer (main model, then MTP modules) for one sequence. */
export class SequenceCache {
  readonly layers: LayerCache[];

  constructor(nLayers: number, C: number, R: number, maxLen: number) {
    this.layers = Array.from({ length: nLayers }, () => new LayerCache(C, R, maxLen));
  }

  /** Forget every position from `n` on, in every layer (speculative rollback). */
  truncate(n: number): void {
    for (const l of this.layers) l.length = Math.min(l.length, n);
  }
}

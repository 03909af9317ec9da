// The project's one seeded PRNG: xoshiro128** (Blackman & Vigna), seeded through splitmix32,
// with uniform, normal and integer draws. Used wherever dsv3 needs reproducible randomness:
// weight init, sampling, data shuffling. Without a seed it starts from crypto randomness.

import { getRandomValues } from 'node:crypto';

// splitmix32, used only to spread a seed over xoshiro128**'s four words of state.
function splitmix32(x: number): [number, number] {
  x = (x + 0x9e3779b9) | 0;
  let z = x;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [x, (z ^ (z >>> 16)) >>> 0];
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export class Rng {
  private readonly s = new Uint32Array(4);
  private spare: number | null = null;

  /** Seeds from a safe integer (both 32-bit halves used), or from crypto randomness. */
  constructor(seed?: number) {
    const s = this.s;
    if (seed === undefined) {
      do getRandomValues(s);
      while ((s[0] | s[1] | s[2] | s[3]) === 0);
      return;
    }
    const hi = Math.floor(seed / 0x100000000) | 0;
    let x = (seed | 0) ^ Math.imul(hi, 0x5bd1e995);
    for (let i = 0; i < 4; i++) {
      const [nx, out] = splitmix32(x);
      x = nx;
      s[i] = out;
    }
    if ((s[0] | s[1] | s[2] | s[3]) === 0) s[0] = 1;
  }

  /** The generator's state, to save and restore a stream exactly. */
  get state(): number[] {
    return Array.from(this.s);
  }

  set state(v: number[]) {
    this.s.set(v);
    this.spare = null;
  }

  /** The next 32-bit unsigned integer. */
  nextU32(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return r;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  uniform(): number {
    const a = this.nextU32() >>> 5; // 27 bits
    const b = this.nextU32() >>> 6; // 26 bits
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** Standard normal (Box–Muller, keeping the second value for the next call). */
  normal(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }
}

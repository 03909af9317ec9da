// Where a forward pass takes its temporary arrays. A fresh typed array costs about a
// microsecond (a zeroed backing store from malloc, then the garbage collector's sweep of
// it); a decode step of a small model takes ~40 of them per layer call chain, which was
// 10-20% of the step. At inference the model takes them from a Scratch arena instead:
// zeroed views into a few reused buffers, all given back at once when the next pass starts.

/** Zeroed temporary arrays of n elements. */
export interface Alloc {
  f32(n: number): Float32Array;
  i32(n: number): Int32Array;
}

/** Fresh arrays every time (training keeps its arrays on the tape, so it uses this). */
export const HEAP: Alloc = {
  f32: (n) => new Float32Array(n),
  i32: (n) => new Int32Array(n),
};

/** Requests above this many bytes take fresh arrays: big work amortises the allocation. */
const LARGE = 256 << 10;
const CHUNK = 1 << 20;
/** Chunks kept across reset(); a pass that needed more frees the rest. */
const KEEP = 8;

/**
 * A bump allocator over reused 1 MiB chunks. Every array it returns is valid until the
 * next reset(), so only arrays that do not outlive one forward pass may come from it.
 */
export class Scratch implements Alloc {
  private readonly chunks: ArrayBuffer[] = [];
  private chunk = 0;
  private off = 0;
  private buf = new ArrayBuffer(0);
  private at = 0;

  /** Give back every array handed out so far. */
  reset(): void {
    if (this.chunks.length > KEEP) this.chunks.length = KEEP;
    this.chunk = 0;
    this.off = 0;
  }

  f32(n: number): Float32Array {
    if (n * 4 > LARGE) return new Float32Array(n);
    this.take(n * 4);
    return new Float32Array(this.buf, this.at, n).fill(0);
  }

  i32(n: number): Int32Array {
    if (n * 4 > LARGE) return new Int32Array(n);
    this.take(n * 4);
    return new Int32Array(this.buf, this.at, n).fill(0);
  }

  /** Point buf/at at the next `bytes` (64-byte aligned), moving to a new chunk if needed. */
  private take(bytes: number): void {
    const size = (bytes + 63) & ~63;
    for (;;) {
      if (this.chunk === this.chunks.length) this.chunks.push(new ArrayBuffer(CHUNK));
      if (this.off + size <= CHUNK) {
        this.buf = this.chunks[this.chunk];
        this.at = this.off;
        this.off += size;
        return;
      }
      this.chunk++;
      this.off = 0;
    }
  }
}

/**
 * One array reused from call to call: view(n) is its first n elements (not zeroed; grown
 * when n is more than it holds), valid until the next view(). For a pass's outputs that the
 * caller reads before the next pass: a fresh array each step (the logits) is memory outside
 * the JavaScript heap whose growth makes the garbage collector run full collections.
 */
export class Reused {
  private buf = new Float32Array(0);

  view(n: number): Float32Array {
    if (this.buf.length < n) this.buf = new Float32Array(Math.max(n, 2 * this.buf.length));
    return this.buf.subarray(0, n);
  }
}

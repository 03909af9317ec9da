// Prefix caching: the latent KV rows of finished and running sequences, kept in a radix tree
// over token ids (SGLang's RadixAttention), so a new prompt starts after the longest prefix
// whose rows are already computed. Each edge holds a run of tokens and, for every token, its
// rows in every main layer (kv_lora_rank + qk_rope_head_dim float32 numbers each, what
// SequenceCache stores). A latent row at position p is a function of tokens 0 … p alone (the
// kernels compute each row the same whatever else is in the batch or chunk: tested bitwise),
// so rows are keyed exactly by the path to their token.
//
// Why a radix tree and not hashed fixed-size blocks (vLLM): attention here reads one
// contiguous [positions, C] array per sequence and layer (no paged attention), so a reused
// prefix is copied into the new sequence's own SequenceCache either way, and blocks would
// bring no sharing, only a coarser match (up to block-1 tokens lost at every boundary). The
// tree matches to the token, splits an edge where prompts diverge, and stores each computed
// row once however many conversations share it. Copies are only what is needed: a hit copies
// the rows it reuses (once, into a cache sized for the whole prompt), an insert copies only
// the rows the tree does not hold yet.
//
// MTP speculation (`mtp`): the MTP module's cache row i pairs the main model's hidden state
// h_i with token i+1, so it is a function of tokens 0 … i+1 and is stored with token i+1
// (the first token of a path has none). A speculating sequence then resumes at k with main
// rows 0 … k-1 and MTP rows 0 … k-1: k is one less than the match, since MTP row k-1 needs
// token k to match too, and the prefill's first MTP row is then h_k paired with token k+1,
// as without the cache.
//
// Memory: entries (rows and token ids) stay within `bytes`; to make room the least recently
// used leaves go first. A running sequence pins the entries it started from until it ends,
// and they are never evicted meanwhile; an insert that cannot make room for all its rows
// keeps as many of its first rows as fit. The rows a running sequence computes live in its
// own SequenceCache and are not counted here.

import type { SequenceCache } from '../model/cache.ts';

export interface PrefixCacheOptions {
  /** Budget in bytes for the rows and token ids held. */
  bytes: number;
  /** Main-model layers (num_hidden_layers); SequenceCache layer `layers` is the first MTP module's. */
  layers: number;
  /** kv_lora_rank and qk_rope_head_dim. */
  C: number;
  R: number;
  /** Keep the first MTP module's rows too (for a scheduler that speculates with it). */
  mtp: boolean;
}

/** An entry pinned by a running sequence (see PrefixCache.release). */
export type PrefixPin = object;

class Node {
  readonly children = new Map<number, Node>();
  lastUsed = 0;
  /** Running sequences that started from this entry (it and its ancestors stay). */
  pins = 0;

  constructor(
    public parent: Node | null,
    /** The edge's tokens; tokens[0] sits at position `depth`. */
    public tokens: Int32Array,
    public depth: number,
    /** Per layer: kv [n, C] then pe [n, R]. */
    public rows: Float32Array,
  ) {}

  get n(): number {
    return this.tokens.length;
  }

  get bytes(): number {
    return this.rows.byteLength + this.tokens.byteLength;
  }
}

export interface PrefixCacheStats {
  /** Bytes held, and the budget. */
  bytes: number;
  budget: number;
  /** Tokens held (each with its rows) and tree edges. */
  tokens: number;
  nodes: number;
  /** Lookups, prompt tokens they reused, and tokens evicted so far. */
  lookups: number;
  hitTokens: number;
  evictedTokens: number;
}

/** One sequence's token ids and latent cache, as restore() may copy from. */
export interface CachedSequence {
  tokens: readonly number[];
  cache: SequenceCache;
}

export class PrefixCache {
  readonly budget: number;
  private readonly L: number;
  private readonly C: number;
  private readonly R: number;
  private readonly mtp: boolean;
  /** Layers stored per token (main layers, plus the MTP module's). */
  private readonly nl: number;
  private readonly root = new Node(null, new Int32Array(0), 0, new Float32Array(0));
  private readonly nodes = new Set<Node>();
  private held = 0;
  private clock = 0;
  private lookups = 0;
  private hitTokens = 0;
  private evictedTokens = 0;

  constructor(opts: PrefixCacheOptions) {
    this.budget = opts.bytes;
    this.L = opts.layers;
    this.C = opts.C;
    this.R = opts.R;
    this.mtp = opts.mtp;
    this.nl = opts.layers + (opts.mtp ? 1 : 0);
  }

  /** Bytes one cached token takes: its rows in every stored layer and its id. */
  get bytesPerToken(): number {
    return this.nl * (this.C + this.R) * 4 + 4;
  }

  get stats(): PrefixCacheStats {
    let tokens = 0;
    for (const n of this.nodes) tokens += n.n;
    return {
      bytes: this.held,
      budget: this.budget,
      tokens,
      nodes: this.nodes.size,
      lookups: this.lookups,
      hitTokens: this.hitTokens,
      evictedTokens: this.evictedTokens,
    };
  }

  /**
   * Start `prompt` from the cache: copy the rows of its longest cached prefix into `cache`
   * (empty, fresh) and return how many prompt tokens they cover; the rest is to be computed,
   * always including the prompt's last token (its logits pick the first new token). A
   * sequence in `running` that shares a longer prefix with the prompt than the tree does is
   * stored first. The returned pin keeps the entries used until release().
   */
  restore(prompt: readonly number[], cache: SequenceCache, running: readonly CachedSequence[] = []): { tokens: number; pin: PrefixPin | null } {
    const P = prompt.length;
    this.lookups++;
    let hit = this.walk(prompt, P);
    for (const r of running) {
      const n = Math.min(this.valid(r), P);
      let c = 0;
      while (c < n && r.tokens[c] === prompt[c]) c++;
      if (c > hit.m) {
        this.insert(r.tokens, r.cache, c);
        hit = this.walk(prompt, P); // (making room may have evicted part of the old path)
      }
    }
    const k = Math.max(0, Math.min(this.mtp ? hit.m - 1 : hit.m, P - 1));
    if (k === 0) return { tokens: 0, pin: null };
    const t = ++this.clock;
    const { C, R } = this;
    for (let l = 0; l < this.L; l++) cache.layers[l].reserve(P);
    if (this.mtp) cache.layers[this.L].reserve(P);
    // Main rows 0 … k-1; with MTP, the entries of tokens 1 … k (MTP rows 0 … k-1).
    const last = this.mtp ? k : k - 1;
    let pin: Node | null = null;
    for (const node of hit.path) {
      const d = node.depth;
      if (d > last) break;
      node.lastUsed = t;
      pin = node;
      const b = Math.min(node.n, k - d);
      for (let l = 0; l < this.L; l++) {
        const { kv, pe } = this.layer(node, l);
        if (b > 0) cache.layers[l].update(kv.subarray(0, b * C), pe.subarray(0, b * R), d, b);
      }
      if (this.mtp) {
        const a1 = d === 0 ? 1 : 0; // the first token has no MTP row
        const b1 = Math.min(node.n, k + 1 - d);
        const { kv, pe } = this.layer(node, this.L);
        if (b1 > a1) cache.layers[this.L].update(kv.subarray(a1 * C, b1 * C), pe.subarray(a1 * R, b1 * R), d + a1 - 1, b1 - a1);
      }
    }
    pin!.pins++;
    this.hitTokens += k;
    return { tokens: k, pin };
  }

  /** Let the entries a sequence started from be evicted again. */
  release(pin: PrefixPin | null): void {
    if (pin) (pin as Node).pins--;
  }

  /**
   * Keep the rows of a sequence (`tokens`: its ids, prompt then generated; `cache`: its
   * latent cache, between steps) that the tree does not hold yet. Rows past what the cache
   * validly holds (the last token, rejected drafts, draft-only MTP rows) are left out.
   */
  store(tokens: readonly number[], cache: SequenceCache): void {
    this.insert(tokens, cache, this.valid({ tokens, cache }));
  }

  /** Drop every entry not pinned by a running sequence. */
  clear(): void {
    for (let v = this.lru(); v; v = this.lru()) this.evict(v);
  }

  /**
   * How many leading tokens of a sequence have valid rows: main rows exist for positions
   * below every main layer's length and the number of tokens; with MTP, the entry of token p
   * is MTP row p-1, and the MTP cache is cut back to the verified positions at each step
   * (rows past them are drafts), so its length bounds the entries too.
   */
  private valid(s: CachedSequence): number {
    let n = s.tokens.length;
    for (let l = 0; l < this.L; l++) n = Math.min(n, s.cache.layers[l].length);
    if (this.mtp) n = Math.min(n, s.cache.layers[this.L].length + 1);
    return n;
  }

  /** The cached path along tokens[0 … limit-1]: matched length and the edges it used. */
  private walk(tokens: readonly number[], limit: number): { m: number; path: Node[] } {
    const path: Node[] = [];
    let node = this.root;
    let m = 0;
    while (m < limit) {
      const child = node.children.get(tokens[m]);
      if (!child) break;
      let i = 0;
      while (i < child.n && m + i < limit && child.tokens[i] === tokens[m + i]) i++;
      path.push(child);
      m += i;
      if (i < child.n) break;
      node = child;
    }
    return { m, path };
  }

  private layer(node: Node, l: number): { kv: Float32Array; pe: Float32Array } {
    const n = node.n;
    const o = l * n * (this.C + this.R);
    return { kv: node.rows.subarray(o, o + n * this.C), pe: node.rows.subarray(o + n * this.C, o + n * (this.C + this.R)) };
  }

  /** Rows a … b-1 of a node, as a new array in node layout. */
  private sliceRows(node: Node, a: number, b: number): Float32Array {
    const { C, R } = this;
    const n = b - a;
    const out = new Float32Array(this.nl * n * (C + R));
    for (let l = 0; l < this.nl; l++) {
      const { kv, pe } = this.layer(node, l);
      const o = l * n * (C + R);
      out.set(kv.subarray(a * C, b * C), o);
      out.set(pe.subarray(a * R, b * R), o + n * C);
    }
    return out;
  }

  /** Rows of positions a … b-1 of a sequence's cache, in node layout. */
  private copyOut(cache: SequenceCache, a: number, b: number): Float32Array {
    const { C, R } = this;
    const n = b - a;
    const out = new Float32Array(this.nl * n * (C + R));
    for (let l = 0; l < this.L; l++) {
      const lc = cache.layers[l];
      const o = l * n * (C + R);
      out.set(lc.kv.subarray(a * C, b * C), o);
      out.set(lc.pe.subarray(a * R, b * R), o + n * C);
    }
    if (this.mtp) {
      // Token p's entry is MTP row p-1; token 0 has none (left zero).
      const lc = cache.layers[this.L];
      const o = this.L * n * (C + R);
      const a1 = Math.max(a, 1);
      if (b > a1) {
        out.set(lc.kv.subarray((a1 - 1) * C, (b - 1) * C), o + (a1 - a) * C);
        out.set(lc.pe.subarray((a1 - 1) * R, (b - 1) * R), o + n * C + (a1 - a) * R);
      }
    }
    return out;
  }

  /** Split `node` after its first i tokens; returns the new upper part. */
  private split(node: Node, i: number): Node {
    const parent = node.parent!;
    const head = new Node(parent, node.tokens.slice(0, i), node.depth, this.sliceRows(node, 0, i));
    head.lastUsed = node.lastUsed;
    node.rows = this.sliceRows(node, i, node.n);
    node.tokens = node.tokens.slice(i);
    node.depth += i;
    node.parent = head;
    head.children.set(node.tokens[0], node);
    parent.children.set(head.tokens[0], head);
    this.nodes.add(head);
    return head;
  }

  /** Store the rows of tokens[0 … n-1] from `cache` that the tree lacks. */
  private insert(tokens: readonly number[], cache: SequenceCache, n: number): void {
    if (n <= 0 || this.budget <= 0) return;
    const t = ++this.clock;
    const { m, path } = this.walk(tokens, n);
    for (const c of path) c.lastUsed = t;
    if (m >= n) return; // all held
    // The new leaf hangs below the last edge matched, split where the match ended inside it.
    const last = path.at(-1);
    let node = this.root;
    if (last) node = m === last.depth + last.n ? last : this.split(last, m - last.depth);
    // Make room without evicting where the new leaf hangs (a pin protects it and its ancestors).
    node.pins++;
    const per = this.bytesPerToken;
    this.makeRoom((n - m) * per);
    node.pins--;
    const end = Math.min(n, m + Math.floor((this.budget - this.held) / per));
    if (end <= m) return;
    const leaf = new Node(node, Int32Array.from(tokens.slice(m, end)), m, this.copyOut(cache, m, end));
    leaf.lastUsed = t;
    node.children.set(leaf.tokens[0], leaf);
    this.nodes.add(leaf);
    this.held += leaf.bytes;
  }

  private makeRoom(need: number): void {
    while (this.held + need > this.budget) {
      const v = this.lru();
      if (!v) return;
      this.evict(v);
    }
  }

  /** The least recently used leaf nobody pins. */
  private lru(): Node | null {
    let best: Node | null = null;
    for (const n of this.nodes) {
      if (n.children.size === 0 && n.pins === 0 && (!best || n.lastUsed < best.lastUsed)) best = n;
    }
    return best;
  }

  private evict(v: Node): void {
    v.parent!.children.delete(v.tokens[0]);
    this.nodes.delete(v);
    this.held -= v.bytes;
    this.evictedTokens += v.n;
  }
}

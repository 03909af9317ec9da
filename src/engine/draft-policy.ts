// How far to draft, decided step by step. Speculation pays only when a verify pass over k+1
// rows per sequence, plus the k MTP passes that drafted them, costs less than the plain steps
// its accepted tokens replace; on a compute-bound model (every extra row costs about what the
// first did) it does not, on a memory-bound one with a good MTP head it does. So the
// scheduler measures instead of assuming: at the end of each step it asks choose() for the
// next step's draft length k (0 = plain decoding), which maximizes the expected tokens per
// second from running estimates of
//   - c0(b): the time of a plain decode step at batch b (forward, head, sampling),
//   - v(b, k): what a verify pass adds per sequence carrying k drafts,
//   - d(b, k): the time of drafting k tokens for the sequences at batch b (the MTP passes),
//   - a_j: the fraction of drafts whose first j+1 positions were all accepted (all sequences),
// as  rate(k) = (b + n·(E_k − 1)) / (c0 + n·v + d),  E_k = 1 + a_0 + … + a_{k−1},
// against rate(0) = b / c0. Times come from performance.now() around the passes (the work
// done per emitted token, like streaming it out, is left out: it cancels from the comparison).
//
// Estimates. The machine's speed drifts (this VM's memory bandwidth swings by half from minute
// to minute), and the options are timed at different times: the chosen one every step, the
// others when explored, seconds apart. So v and d are kept in units of c0 at the time: each
// verify or drafting pass counts as its time over c0 now, the median of the last 5 plain steps
// at that batch size. What decides is then how drafting compared with plain steps around it,
// not how fast the machine was when each was last timed. (While drafting is chosen, plain
// decoding is looked at again at least every 128 steps, and a batch size whose last plain step
// is older than 256 steps starts with one, so that c0 now stays recent. A plain step right
// after a drafting step is not timed: it runs slower, the drafting pass's weights and garbage
// still about, so a look at plain decoding is two steps.) Each estimate is a
// trimmed mean (the median up to 5) of its last 15 measurements, with a standard error from
// their spread; the first measurement of each pays for warm-up and is dropped, and an option
// counts as measured after 4 more. A measurement over twice the estimate is a step that lost
// the CPU to another process and is left out, unless 5 come in a row; 5 in a row that far
// above it, or 3 below half of it, are a change of regime and the estimate starts again from
// them. For c0 the streak must also last 50 ms (a VM that loses the CPU for a few milliseconds
// stalls a dozen short steps); a change of regime in c0 (another load on the machine, say) has
// drafting at that batch size measured anew, 128 steps later, once c0 now has settled.
//
// Choosing. For its first 128 decode steps the policy decodes plain: looking at drafting costs
// some plain steps (4 at batch 8 on the shipped model), which a short generation would not earn
// back, and only sequences that may outlast those steps keep MTP rows for a look. After that, the
// option chosen before is kept unless another is expected faster by 1% plus 1.5 standard errors
// (the larger relative one of the two); one expected faster by more than 1%, but not by that, is
// tried every other step until measured 15 times. Options not measured at this batch size are tried
// first, shortest draft first, in consecutive steps, as drafting runs once chosen. Measured ones
// are tried again after 8 steps, then 16, 32 … up to 4096 (back to 8 when the chosen one loses the
// lead; an interval doubles only once the option's deepest draft position has about 24 verdicts, so
// a thin acceptance estimate does not stay thin). Such a look drafts in as many consecutive steps
// as bring 4 verdicts (4 at batch 1, one from batch 4 on): each look from plain decoding pays to
// start (the MTP weights and the rows owed to read, the main model's weights to read again after),
// and at batch 1 that was some 24 looks of one step each before an interval could double; on fresh
// batch-1 Schedulers of the shipped model this took k ≤ 1 from 0.976 to 0.983–0.987× plain
// decoding. An option that could not win even at its best (each a_j at (accepted + 1) /
// (proposed + 1), its time 1.5 standard errors lower) is tried only every 4096 steps, and a look
// at it stops; before it counts as measured, the least of its first 2 timings stands for that
// time, so drafts never accepted are ruled out in 3 steps, the first of which (the warm-up, left
// out) drafts for one sequence only. An untimed one that a shorter draft's such time rules out
// (each draft further costs at least as much as each before it) is not tried. So on a
// compute-bound model plain decoding costs almost nothing beyond the first measurements.
//
// Only the speed changes: greedy output is the same whatever k is, and a seeded sampler's
// sequence is never drafted for under this policy (its output would depend on the timings;
// see Scheduler). The 'fixed' policy drafts the configured k every step.

/** Measurements kept per estimate. */
const WINDOW = 15;
/** Of those, the highest and lowest fifth are left out of the mean (from 6 on). */
const TRIM = 0.2;
/** Measurements (after the warm-up one) before an option counts as measured ... */
const MIN = 4;
/** ... and before its least ones may rule it out (see least()). */
const LOOK = 2;
/** Another option replaces the chosen one when expected this much faster ... */
const HYSTERESIS = 0.01;
/** ... plus this many of its standard errors; one expected faster by more than HYSTERESIS,
 * but not by that, is tried every other step until measured FULL times (one within HYSTERESIS
 * could never replace it). */
const ZS = 1.5;
const FULL = 15;
/** An option is out (cannot win) even this many standard errors cheaper than estimated. */
const Z = 1.5;
/** A measurement this far off the estimate (either way) is a stall, or a change of regime ... */
const FAR = 2;
/** ... when this many come in a row above it (stalls come in twos and threes), or below. */
const STREAK = 5;
const LOWSTREAK = 3;
/** Exploration backoff: first interval and longest (steps) ... */
const BASE = 8;
const MAX = 4096;
/** ... and longest for plain decoding while drafting is chosen (c0 now stays recent). */
const PLAIN_MAX = 128;
/** Plain steps whose median is c0 now. */
const RECENT = 5;
/** A change of regime in c0 lasts at least this long (ms). */
const REGIME_MS = 50;
/** Verdicts at an option's deepest draft position before its interval doubles. */
const VERDICTS = 24;
/** Steps in a row an option is tried without a measurement coming before it is put off. */
const TRIES = 8;
/** Acceptance counts decay by this per drafted sequence, so they follow the text. */
const DECAY = 0.995;
/** A look at drafting lasts until it brings this many verdicts (consecutive steps: each cold start costs). */
const BURST = 4;
/** Decode steps before the first look at drafting (a short generation would not earn it back). */
export const PATIENCE = 128;

/** Scratch for Est (at most WINDOW + STREAK measurements). */
const SORTED = new Float64Array(WINDOW + STREAK);
const DEVS = new Float64Array(WINDOW + STREAK);

/** xs (or with `from`, |xs[i] − from|) in ascending order, into `out` (insertion sort: a handful). */
function sorted(out: Float64Array, xs: ArrayLike<number>, from?: number): Float64Array {
  for (let i = 0; i < xs.length; i++) {
    const x = from === undefined ? xs[i] : Math.abs(xs[i] - from);
    let j = i;
    for (; j > 0 && out[j - 1] > x; j--) out[j] = out[j - 1];
    out[j] = x;
  }
  return out;
}

/** The median of the first n entries of v, sorted ascending. */
function median(v: ArrayLike<number>, n: number): number {
  return n % 2 ? v[n >> 1] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/** An estimate and its standard error. */
interface Val {
  v: number;
  se: number;
}

/** A running estimate: a trimmed mean of the last WINDOW measurements (see the header). */
class Est {
  /** Measurements kept, oldest first, and their weights (sequences drafting, for v). */
  private xs: number[] = [];
  private ws: number[] = [];
  /** Measurements ever (the first is dropped). */
  private seen = 0;
  /** Measurements far above the estimate, in a row (left out unless STREAK of them). */
  private high: [number, number][] = [];
  /** Measurements far below it, in a row. */
  private low = 0;
  /** The last value() (null: to compute; it is asked more often than measurements come). */
  private cached: (Val & { w: number }) | undefined | null = null;

  /**
   * `regimeMs`: for times in ms, a streak far off the estimate must also last this long to be
   * a change of regime (a VM that loses the CPU for a millisecond stalls a dozen short steps).
   */
  constructor(private readonly regimeMs = 0) {}

  /** Whether a measurement came at all (the warm-up one included). */
  get timed(): boolean {
    return this.seen > 0;
  }

  /** Measurements that count. */
  get n(): number {
    return this.xs.length;
  }

  /**
   * Add a measurement; `pred` is what the estimate expects of it (undefined: no outlier test).
   * True when it completes a change of regime: the estimate starts again from the last ones.
   */
  add(x: number, w: number, pred: number | undefined): boolean {
    if (++this.seen === 1) return false; // warm-up
    this.cached = null;
    if (pred !== undefined && this.xs.length >= 1) {
      if (x > FAR * pred) {
        this.low = 0;
        this.high.push([x, w]);
        if (this.high.length < this.streak(STREAK, pred)) return false; // a stall, most likely: left out
        const last = this.high.slice(-WINDOW);
        this.xs = last.map((h) => h[0]);
        this.ws = last.map((h) => h[1]);
        this.high = [];
        return true;
      }
      if (this.high.length > 0) this.high = [];
      this.low = x < pred / FAR ? this.low + 1 : 0;
    }
    this.xs.push(x);
    this.ws.push(w);
    // (low counts only where there is a pred.)
    if (this.low > 0 && this.low >= this.streak(LOWSTREAK, pred!)) {
      const n = Math.min(this.low, WINDOW);
      this.xs = this.xs.slice(-n);
      this.ws = this.ws.slice(-n);
      this.low = 0;
      return true;
    }
    if (this.xs.length > WINDOW) {
      this.xs.shift();
      this.ws.shift();
    }
    return false;
  }

  /** A streak of `n` measurements, or as many as last regimeMs at `pred` each. */
  private streak(n: number, pred: number): number {
    return Math.max(n, Math.ceil(this.regimeMs / pred));
  }

  /** The median of the last RECENT measurements that count (undefined: none). */
  recent(): number | undefined {
    const n = Math.min(RECENT, this.xs.length);
    if (n === 0) return undefined;
    return median(sorted(SORTED, this.xs.slice(-n)), n);
  }

  /** The least measurement that counts (undefined: none). */
  least(): number | undefined {
    return this.xs.length > 0 ? Math.min(...this.xs) : undefined;
  }

  /** Drop the measurements (not the warm-up: that was paid). */
  forget(): void {
    this.cached = null;
    this.xs = [];
    this.ws = [];
    this.high = [];
    this.low = 0;
  }

  /**
   * The trimmed mean of the measurements, its standard error, and the mean weight.
   * Undefined: none.
   */
  value(): (Val & { w: number }) | undefined {
    if (this.cached === null) this.cached = this.compute();
    return this.cached;
  }

  private compute(): (Val & { w: number }) | undefined {
    const n = this.xs.length;
    if (n === 0) return undefined;
    const v = sorted(SORTED, this.xs);
    // (Up to 5, the median: robust to two stalls among the first measurements.)
    const q = n <= 5 ? (n - 1) >> 1 : Math.floor(n * TRIM);
    let t = 0;
    for (let i = q; i < n - q; i++) t += v[i];
    const mean = t / (n - 2 * q);
    // The spread from the median absolute deviation (σ ≈ 1.4826 MAD).
    const med = median(v, n);
    const dev = sorted(DEVS, v.subarray(0, n), med);
    const mad = median(dev, n);
    let w = 0;
    for (const x of this.ws) w += x;
    return { v: mean, se: (1.15 * 1.4826 * mad) / Math.sqrt(n), w: w / n };
  }
}

/** When an option is tried next, the interval after that, and tries while unmeasured. */
interface Due {
  next: number;
  interval: number;
  /** Tries in a row without a measurement coming. */
  tries: number;
  /** It could not win at the last look (then it is tried only MAX steps after the last time). */
  out?: boolean;
  /** When it was last tried. */
  last: number;
}

export interface DraftPolicyStats {
  /** Decode steps by the draft length chosen for them: decided[k]. */
  decided: number[];
  /** Of those, steps that tried an option to refresh its estimate. */
  explored: number;
}

export class DraftPolicy {
  /** Decode steps by the draft length chosen for them (index k; 0 = plain decoding). */
  readonly decided: number[];
  explored = 0;
  /**
   * The draft length just chosen is timed for the first time at this batch size, a warm-up
   * that is left out: the scheduler drafts for one sequence only, the cheapest such step.
   */
  probe = false;
  private step = 0;
  /** The batch size of the last choice (a drafting pass belongs to it). */
  private lastB = 0;
  /** The draft length of the step being run, and of the one before it. */
  private curK = 0;
  private prevK = 0;
  /**
   * Steps left in a look, and its draft length: a look at plain decoding is two steps (see
   * plainStep), one at drafting as many as bring BURST verdicts.
   */
  private burst = 0;
  private burstK = 0;
  /**
   * c0 by batch size (ms); verify and drafting passes by batch size and k, in units of c0 at
   * the time (see the header).
   */
  private readonly plain = new Map<number, Est>();
  /** The step of the last plain step timed, by batch size (c0 now is that recent). */
  private readonly plainAt = new Map<number, number>();
  private readonly verify = new Map<number, Est[]>();
  private readonly draft = new Map<number, Est[]>();
  private readonly due = new Map<number, Due[]>();
  private readonly best = new Map<number, number>();
  private readonly acc: number[] = [];
  private readonly prop: number[] = [];

  constructor(
    /** The longest draft (the scheduler's draftTokens). */
    readonly maxDraft: number,
    /** false: always draft maxDraft (the 'fixed' policy). */
    readonly adaptive = true,
  ) {
    this.decided = new Array(maxDraft + 1).fill(0);
  }

  get stats(): DraftPolicyStats {
    return { decided: [...this.decided], explored: this.explored };
  }

  /**
   * The draft length for the next step: `b` sequences decode in it, `n` of them may draft
   * (each drafts min(k, what it has room for)).
   */
  choose(b: number, n: number): number {
    this.step++;
    this.lastB = b;
    if (n === 0) return this.take(0, false);
    if (!this.adaptive) return this.take(this.maxDraft, false);
    const prev = this.best.get(b) ?? 0;
    // (Plain steps measure c0; they are exploring only when drafting is what pays. Where c0
    // now is stale, as at a batch size not seen for a while, drafting waits for a plain step.)
    if (!this.measured(b) || (prev !== 0 && !this.fresh(b))) return this.take(0, prev !== 0);
    if (this.step <= PATIENCE) return this.take(0, false);
    const costs: (Val | undefined)[] = [];
    const rate: number[] = [];
    for (let k = 0; k <= this.maxDraft; k++) {
      costs.push(this.costOf(b, n, k));
      rate.push(costs[k] ? this.tokens(b, n, k) / costs[k]!.v : NaN);
    }
    // The chosen option: the one before, unless another is expected faster by HYSTERESIS and
    // ZS of its standard errors; one expected faster by more than HYSTERESIS, but not by that,
    // is tried every other step while it has fewer than FULL measurements.
    const inc = costs[prev] ? prev : 0;
    let bestK = inc;
    let promising = -1;
    const seInc = costs[inc]!.se / costs[inc]!.v;
    for (let k = 0; k <= this.maxDraft; k++) {
      if (k === inc || !costs[k] || rate[k] <= rate[inc]) continue;
      if (rate[k] > rate[inc] * (1 + HYSTERESIS + ZS * Math.max(seInc, costs[k]!.se / costs[k]!.v))) {
        if (rate[k] > rate[bestK]) bestK = k;
      } else if (promising < 0 && rate[k] > rate[inc] * (1 + HYSTERESIS) && this.samples(b, k) < FULL) promising = k;
    }
    if (prev !== bestK) {
      // The old best becomes an alternative: look at it again soon.
      this.best.set(b, bestK);
      const d = this.dueOf(b, prev);
      d.next = this.step + BASE;
      d.interval = BASE;
    }
    // Options that could not beat the best one even at their best (optimistic acceptance, Z
    // standard errors cheaper) are out: left alone, and a look at one stops.
    const c0 = costs[0]!.v;
    const floor = rate[bestK];
    const lows = costs.map((c, k) => (c ? c.v - Z * c.se : this.least(b, n, k)));
    for (let k = 1; k <= this.maxDraft; k++) {
      if (k === bestK) continue;
      // Not timed at all: each draft costs at least what each of a shorter draft's did at its
      // least (one more MTP pass, and one more row per sequence in a verify pass, where rows
      // cost no less as a pass grows).
      let low = lows[k] ?? 0;
      for (let j = 1; j < k && lows[k] === undefined; j++) {
        if (lows[j] !== undefined) low = Math.max(low, c0 + ((lows[j]! - c0) * k) / j);
      }
      this.dueOf(b, k).out = low > 0 && this.tokens(b, n, k, true) / Math.max(low, c0) < floor;
    }
    if (this.burst > 0) {
      this.burst--;
      if (this.burstK !== bestK && !this.dueOf(b, this.burstK).out) return this.take(this.burstK, true);
      this.burst = 0;
    }
    if (bestK === inc && promising >= 0) {
      const d = this.dueOf(b, promising);
      if (this.step - d.last >= 2 && d.tries++ < TRIES) {
        d.last = this.step;
        return this.take(promising, true);
      }
    }
    // The others are tried when due.
    for (let k = 0; k <= this.maxDraft; k++) {
      if (k === bestK) continue;
      const d = this.dueOf(b, k);
      // (One that cannot win is looked at again only every MAX steps, if it was ever timed.)
      if (d.out && lows[k] === undefined) continue;
      if (this.step < (d.out ? d.last + MAX : d.next)) continue;
      d.last = this.step;
      if (!costs[k] && d.tries++ < TRIES) return this.take(k, true);
      d.next = this.step + d.interval;
      const longest = k === 0 && bestK > 0 ? PLAIN_MAX : MAX;
      if (k === 0 || (this.prop[k - 1] ?? 0) >= VERDICTS) d.interval = Math.min(2 * d.interval, longest);
      if (!costs[k]) {
        d.tries = 0; // no measurement came (steps with prompts, or uneven drafts): later
        continue;
      }
      // A look at plain decoding is two steps (the first after drafting is not timed), one at
      // drafting as many as bring BURST verdicts.
      this.burst = k === 0 ? 1 : Math.ceil(BURST / n) - 1;
      this.burstK = k;
      return this.take(k, true);
    }
    return this.take(bestK, false);
  }

  /**
   * Whether a sequence not drafting now, with at most `left` steps to go, should keep its MTP
   * cache rows up to date at batch `b`: drafting wins there, or is to be tried within `steps`
   * steps, or (in the first PATIENCE steps) it may outlast them.
   */
  keepsMtp(b: number, steps: number, left = Infinity): boolean {
    if (!this.adaptive || (this.best.get(b) ?? 0) > 0) return true;
    if (this.step < PATIENCE) return this.step + left > PATIENCE;
    const ds = this.due.get(b);
    for (let k = 1; k <= this.maxDraft; k++) {
      const d = ds?.[k];
      if (!d) return true;
      // (Out, and too little timed to be looked at again: not tried while that holds.)
      if (d.out && this.est(this.verify, b, k).n < LOOK) continue;
      if ((d.out ? d.last + MAX : d.next) - this.step <= steps) return true;
    }
    return false;
  }

  /**
   * A decode step without drafts and without prompt rows, at batch b, took `ms`. One right
   * after a drafting step is left out: it runs slower (the drafting pass's weights and garbage
   * are still about), and while drafting is chosen every look at plain decoding would be such
   * a step, which made plain decoding look slower than it is, and drafting stick where it lost.
   */
  plainStep(b: number, ms: number): void {
    let e = this.plain.get(b);
    if (!e) this.plain.set(b, (e = new Est(REGIME_MS)));
    this.dueOf(b, 0).tries = 0;
    if (this.prevK > 0) return;
    this.plainAt.set(b, this.step);
    if (e.add(ms, 1, e.value()?.v)) this.changed(b);
  }

  /** A verify pass at batch b where n sequences carried k drafts each took `ms`. */
  verifyStep(b: number, n: number, k: number, ms: number): void {
    if (n === 0 || k < 1 || k > this.maxDraft) return;
    const now = this.now(b);
    if (now === undefined || !this.fresh(b)) return;
    const v = this.v(b, k);
    this.dueOf(b, k).tries = 0;
    this.est(this.verify, b, k).add(ms / now, n, v !== undefined ? 1 + n * v.v : undefined);
  }

  /** Drafting k tokens for n sequences (at the batch size of the last choice) took `ms`. */
  draftPass(n: number, k: number, ms: number): void {
    const now = this.now(this.lastB);
    if (n === 0 || k < 1 || k > this.maxDraft || now === undefined || !this.fresh(this.lastB)) return;
    const e = this.est(this.draft, this.lastB, k);
    e.add(ms / now, n, e.value()?.v);
  }

  /** One sequence's verify: of `drafts` drafts, the first `accepted` stood. */
  accepted(drafts: number, accepted: number): void {
    for (let j = 0; j < drafts; j++) {
      this.prop[j] = (this.prop[j] ?? 0) * DECAY + 1;
      this.acc[j] = (this.acc[j] ?? 0) * DECAY + (j < accepted ? 1 : 0);
    }
  }

  /**
   * Expected tokens per verify pass with k drafts: 1 + Σ a_j, each a_j the posterior mean
   * (Beta(1, 1) prior), or with `optimistic` the bound (accepted + 1) / (proposed + 1); a_j is
   * at most a_{j−1} (the first j+1 standing needs the first j to).
   */
  expected(k: number, optimistic = false): number {
    let e = 1;
    let prev = 1;
    for (let j = 0; j < k; j++) {
      const a = this.acc[j] ?? 0;
      const p = this.prop[j] ?? 0;
      const mean = (a + 1) / (p + 2);
      prev = Math.min(prev, optimistic ? Math.min(1, (a + 1) / (p + 1)) : mean);
      e += prev;
    }
    return e;
  }

  /** Predicted milliseconds of a step with k drafts for n of b sequences (undefined: not measured). */
  cost(b: number, n: number, k: number): number | undefined {
    const c = this.costOf(b, n, k)?.v;
    return c === undefined ? undefined : c * this.now(b)!;
  }

  /** The estimates at batch b with n drafting: milliseconds per step and expected tokens, by k. */
  estimates(b: number, n = b): { k: number; ms?: number; tokens: number }[] {
    return Array.from({ length: this.maxDraft + 1 }, (_, k) => ({ k, ms: this.cost(b, n, k), tokens: this.expected(k) }));
  }

  /** cost(), in units of c0 now, with its standard error. */
  private costOf(b: number, n: number, k: number): Val | undefined {
    if (!this.measured(b)) return undefined;
    if (k === 0) return { v: 1, se: 0 };
    const v = this.v(b, k);
    const d = this.d(b, n, k);
    if (v === undefined || d === undefined || this.est(this.verify, b, k).n < MIN) return undefined;
    const c = 1 + n * v.v + d.v;
    return { v: c, se: Math.max(0.01 * c, Math.hypot(n * v.se, d.se)) };
  }

  /**
   * What a step with k drafts costs at least, from its first LOOK timings, before it counts as
   * measured: the least verify pass and the least drafting pass (stalls only add time). Enough
   * to rule out an option that loses by far, like drafts that are never accepted, in LOOK
   * steps (after the warm-up) rather than MIN. Undefined: fewer timings.
   */
  private least(b: number, n: number, k: number): number | undefined {
    const e = this.est(this.verify, b, k);
    const w = e.value()?.w;
    if (k === 0 || !this.measured(b) || e.n < LOOK || w === undefined) return undefined;
    // (Drafting for n sequences costs no less than for fewer; none timed yet: at least 0.)
    const d = this.est(this.draft, b, k);
    const dw = d.value()?.w ?? n;
    return 1 + (n * Math.max(0, e.least()! - 1)) / w + (d.n ? (d.least()! * Math.min(n, dw)) / dw : 0);
  }

  /** Tokens a step with k drafts emits, over all b sequences. */
  private tokens(b: number, n: number, k: number, optimistic = false): number {
    return b + n * (this.expected(k, optimistic) - 1);
  }

  /** Measurements behind option k at batch b (its verify passes; c0's for k = 0). */
  private samples(b: number, k: number): number {
    return k === 0 ? this.plain.get(b)?.n ?? 0 : this.est(this.verify, b, k).n;
  }

  /** Whether c0 is measured at batch b (the unit every other time there is kept in). */
  private measured(b: number): boolean {
    return (this.plain.get(b)?.n ?? 0) >= MIN;
  }

  /** c0 now at batch b (ms): the median of the last plain steps, once c0 is measured. */
  private now(b: number): number | undefined {
    return this.measured(b) ? this.plain.get(b)!.recent() : undefined;
  }

  /** Whether c0 now at batch b is recent: a plain step was timed there within 2 × PLAIN_MAX steps. */
  private fresh(b: number): boolean {
    return this.step - (this.plainAt.get(b) ?? -Infinity) <= 2 * PLAIN_MAX;
  }

  /** v(b, k) in units of c0: (verify pass − c0) / sequences drafting in it, at least 0. */
  private v(b: number, k: number): Val | undefined {
    const m = this.est(this.verify, b, k).value();
    return m && { v: Math.max(0, (m.v - 1) / m.w), se: m.se / m.w };
  }

  /**
   * d(b, k) in units of c0, for n sequences drafting: as measured (for more sequences than it
   * was measured for, in proportion).
   */
  private d(b: number, n: number, k: number): Val | undefined {
    const e = this.est(this.draft, b, k);
    const m = e.n >= MIN ? e.value() : undefined;
    const f = m ? Math.max(1, n / m.w) : 1;
    return m && { v: m.v * f, se: m.se * f };
  }

  /**
   * c0 changed regime at batch b: drafting there is measured anew, once plain steps have
   * settled c0 now (a change often comes as a ramp, or goes again soon after).
   */
  private changed(b: number): void {
    this.verify.get(b)?.forEach((e) => e.forget());
    this.draft.get(b)?.forEach((e) => e.forget());
    const ds = this.due.get(b)!;
    for (let k = 1; k <= this.maxDraft; k++) {
      ds[k] = { next: this.step + PLAIN_MAX, interval: BASE, tries: 0, last: this.step };
    }
  }

  private take(k: number, explore: boolean): number {
    this.prevK = this.curK;
    this.curK = k;
    this.probe = k > 0 && this.adaptive && !this.est(this.verify, this.lastB, k).timed;
    this.decided[k]++;
    if (explore) this.explored++;
    return k;
  }

  private est(m: Map<number, Est[]>, key: number, k: number): Est {
    let es = m.get(key);
    if (!es) m.set(key, (es = []));
    return (es[k] ??= new Est());
  }

  private dueOf(b: number, k: number): Due {
    let ds = this.due.get(b);
    if (!ds) this.due.set(b, (ds = []));
    return (ds[k] ??= { next: 0, interval: BASE, tries: 0, last: this.step });
  }
}

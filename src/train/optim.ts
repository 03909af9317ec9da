// AdamW with global-norm gradient clipping and a warm-up + cosine learning-rate schedule,
// the optimiser of the DeepSeek-V3 paper (β1 0.9, β2 0.95, weight decay 0.1). Parameters
// and gradients are named float32 arrays (fp32 master weights); the moments live beside
// them and can be saved and restored exactly for --resume.

export interface AdamWOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Clip the global gradient norm to this value (0: no clipping). */
  clip?: number;
}

export interface ScheduleOptions {
  /** Peak learning rate, reached after `warmup` steps. */
  lr: number;
  warmup: number;
  total: number;
  /** The rate the cosine decays to, as a fraction of the peak (default 0.1). */
  minRatio?: number;
}

/** Linear warm-up from 0 to the peak, then cosine decay to minRatio·peak at `total`. */
export function learningRate(step: number, o: ScheduleOptions): number {
  const min = o.lr * (o.minRatio ?? 0.1);
  if (step < o.warmup) return (o.lr * (step + 1)) / o.warmup;
  if (step >= o.total) return min;
  const t = (step - o.warmup) / Math.max(1, o.total - o.warmup);
  return min + 0.5 * (o.lr - min) * (1 + Math.cos(Math.PI * t));
}

/** Parameters that get no weight decay: norms, biases and other vectors. */
export function decays(name: string, shape: readonly number[]): boolean {
  return shape.length >= 2 && !name.endsWith('bias');
}

export class AdamW {
  /** Steps taken so far. */
  step = 0;
  readonly m = new Map<string, Float32Array>();
  readonly v = new Map<string, Float32Array>();

  constructor(readonly opts: AdamWOptions) {}

  /** The global L2 norm of all gradients. */
  static gradNorm(grads: Map<string, Float32Array>): number {
    let ss = 0;
    for (const g of grads.values()) for (let i = 0; i < g.length; i++) ss += g[i] * g[i];
    return Math.sqrt(ss);
  }

  /**
   * One update of every parameter that has a gradient, at learning rate `lr` (defaults to
   * opts.lr). `noDecay(name)` marks parameters exempt from weight decay. Returns the
   * gradient norm before clipping.
   */
  update(
    params: Map<string, Float32Array>,
    grads: Map<string, Float32Array>,
    opts: { lr?: number; decay?: (name: string) => boolean } = {},
  ): number {
    const { beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weightDecay = 0.1, clip = 0 } = this.opts;
    const lr = opts.lr ?? this.opts.lr;
    const norm = AdamW.gradNorm(grads);
    const scale = clip > 0 && norm > clip ? clip / norm : 1;
    this.step++;
    const bc1 = 1 - beta1 ** this.step;
    const bc2 = 1 - beta2 ** this.step;
    for (const [name, g] of grads) {
      const p = params.get(name);
      if (!p) throw new Error(`AdamW: gradient for unknown parameter "${name}"`);
      if (p.length !== g.length) throw new Error(`AdamW: "${name}" has ${p.length} values, gradient ${g.length}`);
      let m = this.m.get(name);
      let v = this.v.get(name);
      if (!m || !v) {
        m = new Float32Array(p.length);
        v = new Float32Array(p.length);
        this.m.set(name, m);
        this.v.set(name, v);
      }
      const wd = (opts.decay?.(name) ?? true) ? weightDecay : 0;
      for (let i = 0; i < p.length; i++) {
        const gi = g[i] * scale;
        m[i] = beta1 * m[i] + (1 - beta1) * gi;
        v[i] = beta2 * v[i] + (1 - beta2) * gi * gi;
        const mh = m[i] / bc1;
        const vh = v[i] / bc2;
        // Decoupled weight decay (Loshchilov & Hutter): shrink the weight, then the Adam step.
        p[i] = p[i] * (1 - lr * wd) - (lr * mh) / (Math.sqrt(vh) + eps);
      }
    }
    return norm;
  }
}

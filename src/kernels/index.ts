// Picks the kernel backend. (Placeholder until the native addon lands: only the
// TypeScript reference is available.)

import type { Kernels } from './kernels.ts';
import { refKernels } from './ref/index.ts';

export type { Kernels, RouteParams } from './kernels.ts';

export interface KernelOptions {
  backend?: 'auto' | 'native' | 'ref';
  threads?: number;
}

export function loadKernels(opts: KernelOptions = {}): Kernels {
  if (opts.backend === 'native') throw new Error('the native kernels are not built');
  return refKernels;
}

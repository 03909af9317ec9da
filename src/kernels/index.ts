// Picks the kernel backend: the native addon when it loads, else the TypeScript reference.
// DSV3_KERNELS=ref|native overrides 'auto'.

import type { Kernels } from './kernels.ts';
import { refKernels } from './ref/index.ts';
import { loadNative, nativeLoadError, setThreads } from './native.ts';

export type { Kernels, RouteParams } from './kernels.ts';
export { refKernels } from './ref/index.ts';
export { loadNative, nativeInfo, setThreads, setNativeLevel } from './native.ts';

export interface KernelOptions {
  backend?: 'auto' | 'native' | 'ref';
  /** Threads for the native backend (default: all cores). */
  threads?: number;
}

let warned = false;

export function loadKernels(opts: KernelOptions = {}): Kernels {
  let backend = opts.backend ?? 'auto';
  const env = process.env.DSV3_KERNELS;
  if (backend === 'auto' && env) {
    if (env !== 'ref' && env !== 'native' && env !== 'auto') {
      throw new Error(`DSV3_KERNELS must be ref, native or auto, got "${env}"`);
    }
    backend = env;
  }
  if (backend === 'ref') return refKernels;
  const native = loadNative();
  if (native) {
    if (opts.threads !== undefined && opts.threads > 0) setThreads(opts.threads);
    return native;
  }
  if (backend === 'native') {
    throw new Error(`dsv3: the native kernels are unavailable (${nativeLoadError()}); build them with npm run build:native`);
  }
  if (!warned) {
    warned = true;
    process.stderr.write(`dsv3: native kernels unavailable (${nativeLoadError()}); using the TypeScript kernels (slow)\n`);
  }
  return refKernels;
}

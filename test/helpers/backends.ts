// Every kernel backend the test suite runs the model on: the TypeScript reference always,
// the native addon when it is built (a skipped build says so once on stderr).

import type { Kernels } from '../../src/kernels/kernels.ts';
import { refKernels } from '../../src/kernels/ref/index.ts';
import { loadNative, nativeLoadError } from '../../src/kernels/native.ts';

let warned = false;

export function backends(): Kernels[] {
  const native = loadNative();
  if (!native && !warned) {
    warned = true;
    process.stderr.write(`tests: native kernels not tested (${nativeLoadError()})\n`);
  }
  return native ? [refKernels, native] : [refKernels];
}

// Every kernel backend the test suite runs the model on: the TypeScript reference always,
// the native addon when it is built.

import type { Kernels } from '../../src/kernels/kernels.ts';
import { refKernels } from '../../src/kernels/ref/index.ts';

export function backends(): Kernels[] {
  return [refKernels];
}

// Long synchronous work (loading weights, quantising them) written as a generator that yields
// between units of work: a tensor read, a matrix quantised. runSteps runs it to the end at
// once; runStepsAsync lets the event loop run every few milliseconds in between, so timers,
// I/O and an AbortSignal get their turn, and stops the work when the signal aborts.

/** Work that pauses (yields) between units and returns a T. */
export type Steps<T> = Generator<void, T, undefined>;

/** Milliseconds of work between two turns of the event loop. */
const SLICE_MS = 10;

/** Run the steps to the end, synchronously. */
export function runSteps<T>(steps: Steps<T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/**
 * Run the steps, letting the event loop run at least every SLICE_MS of work (a single step
 * longer than that still runs whole). When `signal` aborts, the steps are stopped where they
 * paused (their `finally` blocks run: files are closed) and the promise rejects with the
 * signal's reason; an already aborted signal rejects before any work.
 */
export async function runStepsAsync<T>(steps: Steps<T>, signal?: AbortSignal): Promise<T> {
  let t0 = performance.now();
  for (;;) {
    if (signal?.aborted) {
      steps.throw(signal.reason); // runs the steps' finally blocks and rethrows here
      throw signal.reason;
    }
    const r = steps.next();
    if (r.done) return r.value;
    if (performance.now() - t0 >= SLICE_MS) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      t0 = performance.now();
    }
  }
}

/**
 * Long work written as a generator that yields between steps, run either at
 * once (`runSteps`, for `check` and tests) or in slices that let the event
 * loop in between (`runStepsSliced`, for a reload while relaying: a 10,000-rule
 * file must not hold every session still for half a second).
 *
 * @module
 */

/** Work that may pause after any step; its return value is the result. */
export type Steps<T> = Generator<void, T, void>;

/** Runs `steps` to the end without pausing. */
export function runSteps<T>(steps: Steps<T>): T {
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
  }
}

/** How long a slice of work runs before the event loop gets its turn. */
export const SLICE_MS = 4;

/**
 * Runs `steps` to the end, handing the event loop a turn (a timer, so that
 * pending I/O is served) whenever a slice has run `sliceMs`.
 */
export async function runStepsSliced<T>(steps: Steps<T>, sliceMs = SLICE_MS): Promise<T> {
  let sliceStart = performance.now();
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
    if (performance.now() - sliceStart >= sliceMs) {
      await nextTurn();
      sliceStart = performance.now();
    }
  }
}

/** Resolves once the event loop has had a turn (timers, so pending I/O too). */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

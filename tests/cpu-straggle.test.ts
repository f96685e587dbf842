/**
 * @file The CPU runtime's pause rule for oversubscribed machines (src/ops/backend/cpu/wasm/straggle.ts)
 * on a fake clock: which jobs count as waiting, how long pauses last, how they back off and reset.
 * Every expected value is worked out by hand from the rule in the file comment.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { STRAGGLE_DEFAULTS, StraggleGuard } from "../src/ops/backend/cpu/wasm/straggle.js";

/** A guard on a clock the test moves. */
function guarded(): { guard: StraggleGuard; clock: { t: number } } {
  const clock = { t: 1000 };
  return { guard: new StraggleGuard(() => clock.t), clock };
}

// A job whose main thread ran 4 tasks in 2 ms: a running worker may keep it waiting 2·0.5 + 0.2 = 1.2 ms.
const RAN = 4;
const WORK = 2;

describe("StraggleGuard", () => {
  it("never pauses when the waits stay within one task and a wake-up (any sequence of such jobs)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ ran: fc.integer({ min: 1, max: 16 }), work: fc.double({ min: 0.01, max: 50, noNaN: true }), f: fc.double({ min: 0, max: 1, noNaN: true }) }), { maxLength: 200 }),
        (jobs) => {
          const { guard } = guarded();
          for (const { ran, work, f } of jobs) {
            const allowed = (2 * work) / ran + STRAGGLE_DEFAULTS.wakeUpMs;
            expect(guard.record(ran, work, f * allowed)).toBe(0);
          }
          expect(guard.paused).toBe(false);
          expect(guard.pauses).toBe(0);
          expect(guard.average).toBe(0);
        },
      ),
    );
  });

  it("averages the share of job time waited beyond the allowance, with weight 1/2", () => {
    const { guard } = guarded();
    // Wait 1.2 + 0.8 = 2 ms: 0.8 ms beyond, of a 4 ms job: share 0.2, average 0.1.
    expect(guard.record(RAN, WORK, 2)).toBe(0);
    expect(guard.average).toBeCloseTo(0.1, 12);
    // The same again: 0.5·0.1 + 0.5·0.2 = 0.15, still under the limit 0.2.
    expect(guard.record(RAN, WORK, 2)).toBe(0);
    expect(guard.average).toBeCloseTo(0.15, 12);
    // A wait of 6 ms: 4.8 beyond of 8, share 0.6; average 0.375 > 0.2: a pause.
    expect(guard.record(RAN, WORK, 6)).toBe(STRAGGLE_DEFAULTS.minBackoffMs);
    expect(guard.average).toBeCloseTo(STRAGGLE_DEFAULTS.limit / 2, 12);
  });

  it("pauses for the backoff, doubling while the waits go on, up to the longest pause", () => {
    const { guard, clock } = guarded();
    const { minBackoffMs: min, maxBackoffMs: max } = STRAGGLE_DEFAULTS;
    const bad = (): number => guard.record(RAN, WORK, 20); // share 18.8 / 22 ≈ 0.85
    const pauses: number[] = [];
    for (let i = 0; i < 8; i++) {
      const p = bad();
      pauses.push(p);
      expect(guard.paused).toBe(true);
      clock.t += p - 1;
      expect(guard.paused).toBe(true);
      clock.t += 1;
      expect(guard.paused).toBe(false);
    }
    // 100, 200, 400, ... capped at 2000 (one bad job after each pause pauses again at once).
    const expected = pauses.map((_, i) => Math.min(max, min * 2 ** i));
    expect(pauses).toEqual(expected);
    expect(pauses.at(-1)).toBe(max);
    expect(guard.pauses).toBe(8);
  });

  it("starts from the shortest pause again after a quiet stretch", () => {
    const { guard, clock } = guarded();
    const { minBackoffMs: min, resetMs } = STRAGGLE_DEFAULTS;
    expect(guard.record(RAN, WORK, 20)).toBe(min);
    clock.t += min;
    expect(guard.record(RAN, WORK, 20)).toBe(2 * min);
    // Just within resetMs of the end of that pause: the backoff goes on.
    clock.t += 2 * min + resetMs;
    expect(guard.record(RAN, WORK, 20)).toBe(4 * min);
    // Past it: back to the shortest.
    clock.t += 4 * min + resetMs + 1;
    expect(guard.record(RAN, WORK, 20)).toBe(min);
  });

  it("ignores jobs where the main thread ran no task", () => {
    const { guard } = guarded();
    expect(guard.record(0, 0, 100)).toBe(0);
    expect(guard.average).toBe(0);
  });
});

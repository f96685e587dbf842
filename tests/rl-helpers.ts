/**
 * @file Small helpers shared by the RL loss suites (tests/rl-dpo.test.ts, tests/rl-reward.test.ts):
 * reading arrays back as JS numbers, float64 / int32 literals, a relative-error comparison, and the
 * hand references both suites compute in JS doubles (-log σ, the mean). Nothing here calls library
 * math, so expectations built with it stay independent of the code under test.
 */
import { expect } from "vitest";
import { np, type Array as WArray, type Value } from "../src/index.js";

/** An array's elements as JS numbers (C order). */
export const data = (v: unknown): number[] => globalThis.Array.from((v as WArray).dataSync(), Number);
/** The first element (of a scalar) as a JS number. */
export const num = (v: unknown): number => data(v)[0]!;
export const f64 = (x: number[] | number[][]): Value => np.array(x, { dtype: "float64" });
export const i32 = (x: number[] | number[][]): Value => np.array(x, { dtype: "int32" });

/** Equal lengths and |actual - expected| / max(1, |expected|) <= tol entrywise (NaN fails). */
export function expectClose(actual: number[], expected: number[], tol: number): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i]! - expected[i]!) / Math.max(1, Math.abs(expected[i]!));
    if (!(err <= tol)) throw new Error(`entry ${i}: got ${actual[i]}, expected ${expected[i]} (err ${err} > ${tol})`);
  }
}

/** -log σ(d) = log(1 + e^-d), by hand in doubles (stable for both signs). */
export const negLogSigmoid = (d: number): number => (d >= 0 ? Math.log1p(Math.exp(-d)) : -d + Math.log1p(Math.exp(d)));
export const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

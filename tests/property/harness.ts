/**
 * @file Test harness for the property suites: host-side n-d arrays (`HostArray`, plain Float64Array
 * data in C order) with index helpers, a seeded PRNG for operand data, conversion to and from library
 * arrays, tolerant comparison, and the few numeric helpers the properties share (finite differences,
 * inner products). Nothing here calls library math: references and expectations are computed on the
 * host with plain JS loops, so they stay independent of the code under test.
 *
 * Read spec.ts next (the per-primitive table), then primitives-*.test.ts.
 */
import fc from "fast-check";
import { np, Array as WArray } from "../../src/index.js";
import type { DType, Value } from "../../src/index.js";

// ---------------------------------------------------------------------------------------------------
// Run counts: scaled by FC_RUNS_SCALE (e.g. FC_RUNS_SCALE=10 for a deep local run), seeded by FC_SEED.

const SCALE = Number(process.env.FC_RUNS_SCALE ?? "1") || 1;

/** fast-check parameters for `runs` runs (scaled), reproducible when FC_SEED is set. */
export function fcParams(runs: number): fc.Parameters<unknown> {
  const p: fc.Parameters<unknown> = { numRuns: Math.max(1, Math.round(runs * SCALE)) };
  if (process.env.FC_SEED) p.seed = Number(process.env.FC_SEED);
  return p;
}

// ---------------------------------------------------------------------------------------------------
// Host arrays

/** A host-side n-d array: C-order values as JS numbers (bool as 0/1, uint32 as non-negative ints). */
export interface HostArray {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly data: Float64Array;
  /**
   * References of sums (reduce_sum, dot_general, cumsum, scatter_add) set this to Σ|terms| per
   * element: rounding error scales with it, not with the result (which may cancel to ~0), so
   * `assertClose` multiplies the absolute tolerance by it.
   */
  readonly errScale?: Float64Array;
}

export const sizeOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Multi-index of flat position `flat` in `shape` (C order). */
export function unravel(flat: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let i = shape.length - 1; i >= 0; i--) {
    const d = shape[i]!;
    idx[i] = flat % d;
    flat = Math.floor(flat / d);
  }
  return idx;
}

export function ravel(idx: readonly number[], shape: readonly number[]): number {
  let f = 0;
  for (let i = 0; i < shape.length; i++) f = f * shape[i]! + idx[i]!;
  return f;
}

/** Builds a host array by evaluating `fn` at every multi-index. */
export function build(shape: readonly number[], dtype: DType, fn: (idx: number[]) => number): HostArray {
  const n = sizeOf(shape);
  const data = new Float64Array(n);
  for (let f = 0; f < n; f++) data[f] = fn(unravel(f, shape));
  return { shape: [...shape], dtype, data };
}

export function at(x: HostArray, idx: readonly number[]): number {
  return x.data[ravel(idx, x.shape)]!;
}

/** Stacks same-shape arrays along a new axis `axis` (`exampleShape` is used when `xs` is empty). */
export function stack(xs: readonly HostArray[], axis: number, exampleShape: readonly number[], dtype: DType): HostArray {
  const shape = [...exampleShape];
  shape.splice(axis, 0, xs.length);
  return build(shape, dtype, (idx) => {
    const b = idx[axis]!;
    const rest = idx.filter((_, i) => i !== axis);
    return at(xs[b]!, rest);
  });
}

/** Rounds values to what `dtype` stores (float32 rounding, int wrapping, bool to 0/1). */
export function storeAs(v: number, dtype: DType): number {
  switch (dtype) {
    case "float32":
      return Math.fround(v);
    case "float64":
      return v;
    case "int32":
      return v | 0;
    case "uint32":
      return v >>> 0;
    case "bool":
      return v !== 0 ? 1 : 0;
  }
}

// ---------------------------------------------------------------------------------------------------
// Library conversion

export function toLib(x: HostArray): WArray {
  return np.array(x.data, { shape: x.shape, dtype: x.dtype });
}

export function fromLib(v: Value | unknown): HostArray {
  if (!(v instanceof WArray)) throw new Error(`expected a concrete library Array, got ${String(v)}`);
  const d = v.dataSync();
  const data = new Float64Array(d.length);
  for (let i = 0; i < d.length; i++) data[i] = Number(d[i]);
  return { shape: [...v.shape], dtype: v.dtype, data };
}

// ---------------------------------------------------------------------------------------------------
// Seeded data

/** mulberry32: a small, fast, well-mixed 32-bit PRNG; returns floats in [0, 1). */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
  uint32(): number {
    return Math.floor(this.next() * 4294967296) >>> 0;
  }
}

/**
 * `value` data may contain ties, special values and boundary values (where the row's domain allows);
 * `ad` data are continuous random values strictly inside the smooth part of the domain (no ties).
 */
export type Mode = "value" | "ad";

/** Draws one element of an operand. */
export type Domain = (rng: Rng, dtype: DType, mode: Mode) => number;

// ---------------------------------------------------------------------------------------------------
// Comparison

export interface Tol {
  readonly rtol: number;
  readonly atol: number;
}

export const EXACT: Tol = { rtol: 0, atol: 0 };

const fmt = (x: HostArray, limit = 24): string =>
  `${x.dtype}[${x.shape.join(",")}] ${JSON.stringify(Array.from(x.data.slice(0, limit)))}${x.data.length > limit ? "..." : ""}`;

/**
 * Throws (with both arrays printed) unless `got` matches `want` in shape, dtype (unless `checkDtype`
 * is false) and values: NaN matches NaN, infinities must match exactly, and other floats must satisfy
 * |got - want| <= atol·max(1, errScale) + rtol·|want|. Integer and bool dtypes are compared exactly.
 */
export function assertClose(got: HostArray, want: HostArray, tol: Tol, what: string, checkDtype = true): void {
  const sameShape = got.shape.length === want.shape.length && got.shape.every((d, i) => d === want.shape[i]);
  if (!sameShape) throw new Error(`${what}: shape ${JSON.stringify(got.shape)} != expected ${JSON.stringify(want.shape)}`);
  if (checkDtype && got.dtype !== want.dtype) throw new Error(`${what}: dtype ${got.dtype} != expected ${want.dtype}`);
  const exact = got.dtype !== "float32" && got.dtype !== "float64";
  for (let i = 0; i < want.data.length; i++) {
    const g = got.data[i]!;
    const w = want.data[i]!;
    if (Number.isNaN(w) && Number.isNaN(g)) continue;
    let ok: boolean;
    if (exact || !Number.isFinite(w) || !Number.isFinite(g)) ok = g === w;
    else ok = Math.abs(g - w) <= tol.atol * Math.max(1, want.errScale?.[i] ?? 1) + tol.rtol * Math.abs(w);
    if (!ok) {
      throw new Error(
        `${what}: element ${i} (index [${unravel(i, want.shape).join(",")}]) is ${g}, expected ${w} ` +
          `(tol rtol=${tol.rtol} atol=${tol.atol})\n  got:      ${fmt(got)}\n  expected: ${fmt(want)}`,
      );
    }
  }
}

/** Sum of elementwise products of two host arrays of one size. */
export function vdot(a: HostArray, b: HostArray): number {
  if (a.data.length !== b.data.length) throw new Error(`vdot: sizes ${a.data.length} and ${b.data.length}`);
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += a.data[i]! * b.data[i]!;
  return s;
}

export function sumAbs(a: HostArray): number {
  let s = 0;
  for (const v of a.data) s += Math.abs(v);
  return s;
}

/** a + s·b elementwise (float64). */
export function axpy(a: HostArray, s: number, b: HostArray): HostArray {
  const data = new Float64Array(a.data.length);
  for (let i = 0; i < data.length; i++) data[i] = a.data[i]! + s * b.data[i]!;
  return { shape: a.shape, dtype: a.dtype, data };
}

/** (plus - minus) / (2·eps), elementwise. */
export function centralDiff(plus: HostArray, minus: HostArray, eps: number): HostArray {
  const data = new Float64Array(plus.data.length);
  for (let i = 0; i < data.length; i++) data[i] = (plus.data[i]! - minus.data[i]!) / (2 * eps);
  return { shape: plus.shape, dtype: plus.dtype, data };
}

/** A float64 array of standard-uniform noise in [-1, 1) of the given shape. */
export function noise(shape: readonly number[], rng: Rng, dtype: DType = "float64"): HostArray {
  return build(shape, dtype, () => storeAs(rng.uniform(-1, 1), dtype));
}

// ---------------------------------------------------------------------------------------------------
// Shapes for fast-check

export interface ShapeOpts {
  minRank?: number;
  maxRank?: number;
  /** Largest dimension (dims 0 and 1 are always possible). */
  maxDim?: number;
  /** Largest total size. */
  maxSize?: number;
  /** Smallest dimension (1 to exclude empty arrays). */
  minDim?: number;
}

/** Shapes biased towards the interesting edge cases: dims of 0 and 1, rank 0. */
export function shapeArb(o: ShapeOpts = {}): fc.Arbitrary<number[]> {
  const minRank = o.minRank ?? 0;
  const maxRank = o.maxRank ?? 3;
  const maxDim = o.maxDim ?? 4;
  const minDim = o.minDim ?? 0;
  const maxSize = o.maxSize ?? 48;
  const small = Math.min(maxDim, 6);
  const dim = fc.oneof(
    { weight: 1, arbitrary: fc.constantFrom(...[0, 1].filter((d) => d >= minDim)) },
    { weight: 4, arbitrary: fc.integer({ min: Math.max(minDim, 1), max: small }) },
    // Big dims only where maxDim allows them (large signatures).
    ...(maxDim > small ? [{ weight: 3, arbitrary: fc.integer({ min: small + 1, max: maxDim }) }] : []),
  );
  return fc
    .array(dim, { minLength: minRank, maxLength: maxRank })
    .filter((s) => sizeOf(s) <= maxSize);
}

/** A fast-check seed for the host PRNG. */
export const seedArb = fc.integer({ min: 0, max: 0x7fffffff });

/** Random permutation of 0..n-1 from the host PRNG. */
export function permutation(n: number, rng: Rng): number[] {
  const p = [...Array(n).keys()];
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
}

export const isFloatDtype = (d: DType): boolean => d === "float32" || d === "float64";

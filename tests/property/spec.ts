/**
 * @file The property-test spec table: ONE ROW PER PRIMITIVE in `primitiveRegistry`. An `op` row says
 * how to generate valid random operands and params (fast-check, with shapes that include size-0/1 dims
 * and the dtypes the primitive accepts, restricted to its domain), gives an independent float64
 * reference written with plain JS loops over host arrays (never via the library), whether and how it
 * is differentiable, and its float32 tolerance. A `higherOrder` row (jit, custom_jvp_call, ...) points
 * to the test files that cover it. spec.test.ts fails when the registry and this table differ.
 *
 * Read harness.ts first (HostArray, Rng, Domain), then this file, then primitives-*.test.ts.
 *
 * Semantics the references follow, where the primitive's docs leave room (sources in brackets):
 * - int32/uint32 arithmetic wraps modulo 2^32; int division truncates; rem has the dividend's sign;
 *   add/mul/max/min on bool are or/and/or/and [XLA operation semantics].
 * - shifts by an amount outside [0, 32) give 0, or the sign fill for arithmetic shift right of int32
 *   [XLA ShiftLeft / ShiftRightArithmetic / ShiftRightLogical].
 * - float max/min propagate NaN; round is half to even; sort is stable with NaNs last; argmax/argmin
 *   return the first extreme index with NaN counting as the extreme [backend/kernel.ts docs, numpy].
 * - gather / dynamic_slice / dynamic_update_slice clamp out-of-range indices [kernel.ts docs, XLA].
 * - convert: float -> int truncates toward zero and saturates; int -> int wraps; to bool is `!= 0`
 *   [kernel.ts docs for float -> int; JAX/XLA for int -> int].
 * - reductions over an empty axis give the identity (0, 1, -inf / int min / false, +inf / int max /
 *   true) [JAX lax.reduce_* semantics]; sums of bools count (int32) [jnp.sum].
 * - dot_general of bools stays bool (an OR of ANDs) [XLA Dot on PRED, JAX lax.dot_general].
 */
import fc from "fast-check";
import type { DType } from "../../src/index.js";
import {
  at,
  build,
  Domain,
  EXACT,
  HostArray,
  isFloatDtype,
  Mode,
  permutation,
  Rng,
  seedArb,
  shapeArb,
  ShapeOpts,
  sizeOf,
  storeAs,
  Tol,
  unravel,
} from "./harness.js";

// ---------------------------------------------------------------------------------------------------
// Row types

export interface OperandSig {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly domain: Domain;
}

/** Everything about one call of a primitive except the operand values. */
export interface Sig {
  readonly operands: readonly OperandSig[];
  readonly params: any;
}

/**
 * How the primitive differentiates:
 * - `fd`: smooth on the generated `ad` domain; checked against finite differences, the transpose
 *   identity and second order.
 * - `zero`: float inputs, but the derivative is zero by definition (comparisons, stop_gradient, ...).
 * - `none`: no float operands at all (bitwise ops, threefry): nothing to differentiate.
 */
export type AdKind = "fd" | "zero" | "none";

export interface OpRow {
  readonly kind: "op";
  readonly name: string;
  /** The operand dtypes exercised (documentation; the generators draw from these). */
  readonly dtypes: readonly DType[];
  /**
   * Operands and params: `value` signatures cover every dtype; `ad` ones are float64 where it matters.
   * `large` signatures use big dims (up to ~70, sizes up to a few thousand) to reach the backends'
   * fast paths (blocked matmul, merge-sort runs, bulk copies) that tiny arrays never take.
   */
  readonly sig: (mode: Mode, scale?: Scale) => fc.Arbitrary<Sig>;
  /** float64 reference on host arrays; returns one host array per output (with the expected dtype). */
  readonly ref: (xs: readonly HostArray[], params: any) => HostArray[];
  readonly ad: AdKind;
  /** Operands that AD properties differentiate (float64 in `ad` signatures). */
  readonly diffArgs: readonly number[];
  /** Tolerance of float32 results against the reference. */
  readonly tol32: Tol;
  /** Tolerance of float64 results against the reference (default 1e-12 relative). */
  readonly tol64?: Tol;
  /** Relative / absolute tolerance of the finite-difference checks (default 1e-6 / 1e-7). */
  readonly fdTol?: Tol;
  /** Why the row departs from the defaults, where it does. */
  readonly note?: string;
}

export interface HigherOrderRow {
  readonly kind: "higherOrder";
  readonly name: string;
  /** Test files (from the repo root) that cover this primitive's rules. */
  readonly testedIn: readonly string[];
  readonly note: string;
}

export type Row = OpRow | HigherOrderRow;

export const TOL64_DEFAULT: Tol = { rtol: 1e-12, atol: 1e-13 };
export const FD_TOL_DEFAULT: Tol = { rtol: 1e-6, atol: 1e-7 };

// ---------------------------------------------------------------------------------------------------
// Domains

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;
const UINT32_MAX = 4294967295;

interface NumDomain {
  /** Float range of `ad` data (and most `value` data). */
  lo: number;
  hi: number;
  /** Excludes (-gap, gap) from float data (away from a kink or pole at 0). */
  gap?: number;
  /** `value` mode: a tenth of the floats are special values (NaN, ±Inf, ±0). */
  specials?: boolean;
  /** `value` mode: draw from a small pool so ties and half-integers occur. */
  ties?: boolean;
  /** Integer ranges (default: the full dtype range). */
  ilo?: number;
  ihi?: number;
  uhi?: number;
  /** Integers must be non-zero (divisors). */
  nonzero?: boolean;
  /**
   * `value` mode: a quarter of the floats are drawn log-uniformly in magnitude (1e-12 up to the
   * range's end) within [lo, hi]: tiny arguments (precision of log1p, expm1, sin, ...) and huge
   * ones (overflow to ±inf, saturation of tanh / logistic / erf).
   */
  wide?: { lo: number; hi: number };
}

const TIE_POOL = [0, 0.5, -0.5, 1, -1, 1.5, -1.5, 2, -2, 2.5, -2.5, 3, -3];
const SPECIALS = [NaN, Infinity, -Infinity, -0, 0];

function num(d: NumDomain): Domain {
  return (rng, dtype, mode) => {
    if (dtype === "bool") return rng.int(0, 1);
    if (dtype === "int32" || dtype === "uint32") {
      const lo = dtype === "int32" ? (d.ilo ?? INT32_MIN) : Math.max(0, d.ilo ?? 0);
      const hi = dtype === "int32" ? (d.ihi ?? INT32_MAX) : (d.uhi ?? d.ihi ?? UINT32_MAX);
      for (let k = 0; k < 100; k++) {
        let v: number;
        const r = rng.next();
        if (mode === "value" && r < 0.15) v = rng.pick([lo, hi, 0, 1, -1, 2].filter((x) => x >= lo && x <= hi));
        else if (mode === "value" && r < 0.35) v = rng.int(Math.max(lo, -3), Math.min(hi, 3));
        else v = rng.int(lo, hi);
        if (!(d.nonzero && v === 0)) return v;
      }
      return 1;
    }
    const okFloat = (v: number) => v >= d.lo && v <= d.hi && !(d.gap !== undefined && Math.abs(v) < d.gap);
    if (mode === "value") {
      const r = rng.next();
      if (d.specials && r < 0.1) return rng.pick(SPECIALS);
      if (d.wide && r > 0.75) {
        const { lo, hi } = d.wide;
        for (let k = 0; k < 100; k++) {
          const top = Math.log10(Math.max(Math.abs(lo), Math.abs(hi)));
          const v = (rng.next() < 0.5 ? -1 : 1) * Math.pow(10, rng.uniform(-12, top));
          if (v >= lo && v <= hi) return v;
        }
      }
      if (d.ties && r < 0.35) {
        const pool = TIE_POOL.filter(okFloat);
        if (pool.length > 0) return rng.pick(pool);
      }
    }
    for (let k = 0; k < 1000; k++) {
      const v = rng.uniform(d.lo, d.hi);
      if (okFloat(v)) return v;
    }
    throw new Error("num domain: could not draw a value (empty domain?)");
  };
}

const boolDomain: Domain = (rng) => rng.int(0, 1);
const uint32Bits: Domain = (rng) => rng.uint32();

// ---------------------------------------------------------------------------------------------------
// Small generator helpers

const FLOATS: readonly DType[] = ["float32", "float64"];
const INTS: readonly DType[] = ["int32", "uint32"];
const ALL: readonly DType[] = ["float32", "float64", "int32", "uint32", "bool"];
const NUMERIC: readonly DType[] = ["float32", "float64", "int32", "uint32"];

export type Scale = "small" | "large";

/** Shapes for a signature: the harness defaults, or big dims for `large` signatures. */
function shp(scale: Scale, o: ShapeOpts = {}): fc.Arbitrary<number[]> {
  if (scale === "small") return shapeArb(o);
  return shapeArb({ ...o, maxRank: Math.min(o.maxRank ?? 3, 3), maxDim: 70, maxSize: 4000 });
}

/** A size cap of a small signature, scaled for large ones. */
const cap = (scale: Scale, n: number) => (scale === "small" ? n : n * 40);

/** The dtype of an operand: `ad` signatures use float64 for float-capable rows. */
function dtypeArb(dtypes: readonly DType[], mode: Mode): fc.Arbitrary<DType> {
  if (mode === "ad") {
    if (!dtypes.includes("float64")) throw new Error("ad signatures need float64 in the row's dtypes");
    return fc.constant("float64");
  }
  return fc.constantFrom(...dtypes);
}

/** Draws a signature from a shape, a dtype and a host PRNG (for params that depend on the shape). */
function withSeed<T>(arb: fc.Arbitrary<T>): fc.Arbitrary<[T, Rng]> {
  return fc.tuple(arb, seedArb).map(([t, s]) => [t, new Rng(s)] as [T, Rng]);
}

function randomSubset(n: number, rng: Rng): number[] {
  return [...Array(n).keys()].filter(() => rng.next() < 0.5);
}


// ---------------------------------------------------------------------------------------------------
// Reference helpers (plain loops)

function mapUnary(x: HostArray, outDtype: DType, f: (v: number) => number): HostArray {
  const data = new Float64Array(x.data.length);
  for (let i = 0; i < data.length; i++) data[i] = storeAs(f(x.data[i]!), outDtype);
  return { shape: x.shape, dtype: outDtype, data };
}

function mapBinary(a: HostArray, b: HostArray, outDtype: DType, f: (x: number, y: number) => number): HostArray {
  const data = new Float64Array(a.data.length);
  for (let i = 0; i < data.length; i++) data[i] = storeAs(f(a.data[i]!, b.data[i]!), outDtype);
  return { shape: a.shape, dtype: outDtype, data };
}

/** erf by the series erf(x) = 2/√π · e^{-x²} · Σ 2ⁿ x^{2n+1} / (1·3···(2n+1)) (all terms positive). */
export function erfRef(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x === Infinity) return 1;
  if (x === -Infinity) return -1;
  if (Math.abs(x) > 6) return Math.sign(x);
  let term = x;
  let sum = x;
  for (let n = 1; n < 500; n++) {
    term *= (2 * x * x) / (2 * n + 1);
    sum += term;
    if (Math.abs(term) < 1e-17 * Math.abs(sum)) break;
  }
  return (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum;
}

/** erf⁻¹ by Newton's method on erfRef. */
export function erfInvRef(y: number): number {
  if (Number.isNaN(y) || y < -1 || y > 1) return NaN;
  if (y === 1) return Infinity;
  if (y === -1) return -Infinity;
  let x = 0;
  for (let k = 0; k < 100; k++) {
    const e = erfRef(x) - y;
    const step = e / ((2 / Math.sqrt(Math.PI)) * Math.exp(-x * x));
    x -= step;
    if (Math.abs(step) < 1e-16 * Math.max(1, Math.abs(x))) break;
  }
  return x;
}

/** Round half to even. */
export function roundHalfEven(x: number): number {
  if (!Number.isFinite(x)) return x;
  const f = Math.floor(x);
  const d = x - f;
  const r = d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
  return r === 0 && (x < 0 || Object.is(x, -0)) ? -0 : r; // keeps the sign of zero, as numpy
}

function signRef(x: number): number {
  return x > 0 ? 1 : x < 0 ? -1 : x; // 0, -0 and NaN map to themselves
}

// ---------------------------------------------------------------------------------------------------
// Elementwise unary rows

interface UnarySpec {
  name: string;
  dtypes: readonly DType[];
  f: (x: number, dtype: DType) => number;
  domain: NumDomain;
  ad: AdKind;
  tol32?: Tol;
  tol64?: Tol;
  outBool?: boolean;
  note?: string;
}

const TRANSC32: Tol = { rtol: 1e-5, atol: 2e-6 };
/** Sums: absolute error relative to Σ|terms| (HostArray.errScale), ~30 float32 / 500 float64 ulps. */
const SUM32: Tol = { rtol: 1e-6, atol: 4e-6 };
const SUM64: Tol = { rtol: 1e-13, atol: 1e-13 };
/** Products of up to ~70 factors: relative error grows with the count. */
// Products that underflow below float32's smallest normal (2^-126) keep only absolute precision: allow
// 1024 subnormal ulps (2^-149 each) besides the relative bound (FC_SEED=44 found one at 2.4e-41).
const PROD32: Tol = { rtol: 2e-5, atol: 2 ** -139 };
const PROD64: Tol = { rtol: 1e-13, atol: 0 };
const ARITH32: Tol = { rtol: 3e-7, atol: 0 };

function unaryRow(u: UnarySpec): OpRow {
  return {
    kind: "op",
    name: u.name,
    dtypes: u.dtypes,
    sig: (mode, scale = "small") =>
      fc.record({ shape: shp(scale), dtype: dtypeArb(u.dtypes, mode) }).map(({ shape, dtype }) => ({
        operands: [{ shape, dtype, domain: num(u.domain) }],
        params: {},
      })),
    ref: ([x]) => [mapUnary(x!, u.outBool ? "bool" : x!.dtype, (v) => u.f(v, x!.dtype))],
    ad: u.ad,
    diffArgs: u.ad === "none" ? [] : [0],
    tol32: u.tol32 ?? TRANSC32,
    ...(u.tol64 ? { tol64: u.tol64 } : {}),
    ...(u.note ? { note: u.note } : {}),
  };
}

const unaryRows: OpRow[] = [
  unaryRow({
    name: "neg",
    dtypes: NUMERIC,
    f: (x) => -x,
    domain: { lo: -3, hi: 3, specials: true },
    ad: "fd",
    tol32: EXACT,
  }),
  unaryRow({ name: "exp", dtypes: FLOATS, f: Math.exp, domain: { lo: -5, hi: 5, specials: true, wide: { lo: -800, hi: 800 } }, ad: "fd" }),
  unaryRow({ name: "log", dtypes: FLOATS, f: Math.log, domain: { lo: 0.1, hi: 10, specials: true, wide: { lo: 0, hi: 1e30 } }, ad: "fd" }),
  unaryRow({ name: "log1p", dtypes: FLOATS, f: Math.log1p, domain: { lo: -0.9, hi: 5, specials: true, wide: { lo: -0.999, hi: 1e30 } }, ad: "fd" }),
  unaryRow({ name: "expm1", dtypes: FLOATS, f: Math.expm1, domain: { lo: -5, hi: 5, specials: true, wide: { lo: -800, hi: 800 } }, ad: "fd" }),
  unaryRow({ name: "sqrt", dtypes: FLOATS, f: Math.sqrt, domain: { lo: 0.1, hi: 10, specials: true, wide: { lo: 0, hi: 1e30 } }, ad: "fd" }),
  unaryRow({ name: "rsqrt", dtypes: FLOATS, f: (x) => 1 / Math.sqrt(x), domain: { lo: 0.1, hi: 10, specials: true, wide: { lo: 0, hi: 1e30 } }, ad: "fd" }),
  unaryRow({ name: "sin", dtypes: FLOATS, f: Math.sin, domain: { lo: -6, hi: 6, specials: true, wide: { lo: -1e4, hi: 1e4 } }, ad: "fd" }),
  unaryRow({ name: "cos", dtypes: FLOATS, f: Math.cos, domain: { lo: -6, hi: 6, specials: true, wide: { lo: -1e4, hi: 1e4 } }, ad: "fd" }),
  unaryRow({ name: "tan", dtypes: FLOATS, f: Math.tan, domain: { lo: -1.4, hi: 1.4, wide: { lo: -1e4, hi: 1e4 } }, ad: "fd" }),
  unaryRow({ name: "tanh", dtypes: FLOATS, f: Math.tanh, domain: { lo: -5, hi: 5, specials: true, wide: { lo: -1e3, hi: 1e3 } }, ad: "fd" }),
  unaryRow({ name: "asin", dtypes: FLOATS, f: Math.asin, domain: { lo: -0.95, hi: 0.95, wide: { lo: -1, hi: 1 } }, ad: "fd" }),
  unaryRow({ name: "acos", dtypes: FLOATS, f: Math.acos, domain: { lo: -0.95, hi: 0.95, wide: { lo: -1, hi: 1 } }, ad: "fd" }),
  unaryRow({ name: "atan", dtypes: FLOATS, f: Math.atan, domain: { lo: -5, hi: 5, specials: true, wide: { lo: -1e30, hi: 1e30 } }, ad: "fd" }),
  unaryRow({ name: "sinh", dtypes: FLOATS, f: Math.sinh, domain: { lo: -4, hi: 4, wide: { lo: -1e3, hi: 1e3 } }, ad: "fd" }),
  unaryRow({ name: "cosh", dtypes: FLOATS, f: Math.cosh, domain: { lo: -4, hi: 4, wide: { lo: -1e3, hi: 1e3 } }, ad: "fd" }),
  unaryRow({ name: "asinh", dtypes: FLOATS, f: Math.asinh, domain: { lo: -5, hi: 5, wide: { lo: -1e30, hi: 1e30 } }, ad: "fd" }),
  unaryRow({ name: "acosh", dtypes: FLOATS, f: Math.acosh, domain: { lo: 1.1, hi: 10, wide: { lo: 1, hi: 1e30 } }, ad: "fd" }),
  unaryRow({ name: "atanh", dtypes: FLOATS, f: Math.atanh, domain: { lo: -0.95, hi: 0.95, wide: { lo: -0.999999, hi: 0.999999 } }, ad: "fd" }),
  unaryRow({
    name: "abs",
    dtypes: NUMERIC,
    f: (x, d) => (d === "int32" ? Math.abs(x) | 0 : Math.abs(x)),
    domain: { lo: -3, hi: 3, gap: 0.05, specials: true },
    ad: "fd",
    tol32: EXACT,
    note: "ad data stays away from the kink at 0",
  }),
  unaryRow({
    name: "sign",
    dtypes: NUMERIC,
    f: signRef,
    domain: { lo: -3, hi: 3, gap: 0.05, specials: true },
    ad: "fd",
    tol32: EXACT,
    note: "derivative is 0 away from 0, which finite differences confirm",
  }),
  unaryRow({ name: "floor", dtypes: FLOATS, f: Math.floor, domain: { lo: -5, hi: 5, specials: true, ties: true, wide: { lo: -1e10, hi: 1e10 } }, ad: "fd", tol32: EXACT }),
  unaryRow({ name: "ceil", dtypes: FLOATS, f: Math.ceil, domain: { lo: -5, hi: 5, specials: true, ties: true, wide: { lo: -1e10, hi: 1e10 } }, ad: "fd", tol32: EXACT }),
  unaryRow({
    name: "round",
    dtypes: FLOATS,
    f: roundHalfEven,
    domain: { lo: -5, hi: 5, specials: true, ties: true, wide: { lo: -1e10, hi: 1e10 } },
    ad: "fd",
    tol32: EXACT,
    note: "value data include exact halves (half to even)",
  }),
  unaryRow({ name: "erf", dtypes: FLOATS, f: erfRef, domain: { lo: -3, hi: 3, specials: true, wide: { lo: -30, hi: 30 } }, ad: "fd" }),
  unaryRow({ name: "erf_inv", dtypes: FLOATS, f: erfInvRef, domain: { lo: -0.95, hi: 0.95, wide: { lo: -0.999999, hi: 0.999999 } }, ad: "fd" }),
  unaryRow({
    name: "logistic",
    dtypes: FLOATS,
    f: (x) => 1 / (1 + Math.exp(-x)),
    domain: { lo: -8, hi: 8, specials: true, wide: { lo: -1e3, hi: 1e3 } },
    ad: "fd",
  }),
  unaryRow({
    name: "is_finite",
    dtypes: FLOATS,
    f: (x) => (Number.isFinite(x) ? 1 : 0),
    domain: { lo: -3, hi: 3, specials: true },
    ad: "zero",
    outBool: true,
    tol32: EXACT,
  }),
  unaryRow({
    name: "not",
    dtypes: ["int32", "uint32", "bool"],
    f: (x, d) => (d === "bool" ? 1 - x : ~x),
    domain: { lo: 0, hi: 0 },
    ad: "none",
    tol32: EXACT,
  }),
];

// ---------------------------------------------------------------------------------------------------
// Elementwise binary rows

interface BinarySpec {
  name: string;
  dtypes: readonly DType[];
  f: (a: number, b: number, dtype: DType) => number;
  da: NumDomain;
  db?: NumDomain;
  ad: AdKind;
  outBool?: boolean;
  tol32?: Tol;
  note?: string;
}

function binaryRow(b: BinarySpec): OpRow {
  return {
    kind: "op",
    name: b.name,
    dtypes: b.dtypes,
    sig: (mode, scale = "small") =>
      fc.record({ shape: shp(scale), dtype: dtypeArb(b.dtypes, mode) }).map(({ shape, dtype }) => ({
        operands: [
          { shape, dtype, domain: num(b.da) },
          { shape, dtype, domain: num(b.db ?? b.da) },
        ],
        params: {},
      })),
    ref: ([x, y]) => [mapBinary(x!, y!, b.outBool ? "bool" : x!.dtype, (u, v) => b.f(u, v, x!.dtype))],
    ad: b.ad,
    diffArgs: b.ad === "none" ? [] : [0, 1],
    tol32: b.tol32 ?? ARITH32,
    ...(b.note ? { note: b.note } : {}),
  };
}

const isIntD = (d: DType) => d === "int32" || d === "uint32";

const arithDomain: NumDomain = { lo: -3, hi: 3, specials: true, ties: true };

function shiftLeftRef(a: number, s: number, d: DType): number {
  const amt = d === "int32" ? s >>> 0 : s;
  return amt >= 32 ? 0 : a << amt;
}

function shiftRightRef(a: number, s: number, d: DType): number {
  const amt = d === "int32" ? s >>> 0 : s;
  if (d === "int32") return amt >= 32 ? (a < 0 ? -1 : 0) : a >> amt;
  return amt >= 32 ? 0 : a >>> amt;
}

/** A JS comparison as 0/1 (NaN compares false except for `!=`). */
const cmp = (f: (a: number, b: number) => boolean) => (a: number, b: number) => (f(a, b) ? 1 : 0);

const binaryRows: OpRow[] = [
  binaryRow({
    name: "add",
    dtypes: ALL,
    f: (a, b, d) => (d === "bool" ? a | b : a + b),
    da: arithDomain,
    ad: "fd",
  }),
  binaryRow({ name: "sub", dtypes: NUMERIC, f: (a, b) => a - b, da: arithDomain, ad: "fd" }),
  binaryRow({
    name: "mul",
    dtypes: ALL,
    f: (a, b, d) => (d === "bool" ? a & b : isIntD(d) ? Math.imul(a, b) : a * b),
    da: arithDomain,
    ad: "fd",
  }),
  binaryRow({
    name: "div",
    dtypes: NUMERIC,
    f: (a, b, d) => (isIntD(d) ? Math.trunc(a / b) : a / b),
    da: arithDomain,
    db: { lo: -3, hi: 3, gap: 0.5, specials: true, ties: true, nonzero: true },
    ad: "fd",
    note: "integer divisors are non-zero (integer division by zero is implementation-defined)",
  }),
  binaryRow({
    name: "rem",
    dtypes: NUMERIC,
    f: (a, b) => a % b,
    da: { lo: -5, hi: 5, specials: true, ties: true },
    db: { lo: -3, hi: 3, gap: 0.5, ties: true, nonzero: true },
    ad: "fd",
    tol32: { rtol: 1e-6, atol: 1e-6 },
  }),
  binaryRow({
    name: "pow",
    dtypes: ["float32", "float64", "int32"],
    f: (a, b) => Math.pow(a, b),
    da: { lo: 0.5, hi: 3, ilo: -3, ihi: 3 },
    db: { lo: -2, hi: 2, ilo: 0, ihi: 5, ties: true },
    ad: "fd",
    tol32: TRANSC32,
    note: "positive bases (real powers); integer powers use small non-negative exponents",
  }),
  binaryRow({
    name: "max",
    dtypes: ALL,
    f: (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(a, b)),
    da: arithDomain,
    ad: "fd",
    tol32: EXACT,
    note: "ad data have no ties (the tie rule is tested in composition.test.ts)",
  }),
  binaryRow({
    name: "min",
    dtypes: ALL,
    f: (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.min(a, b)),
    da: arithDomain,
    ad: "fd",
    tol32: EXACT,
  }),
  binaryRow({
    name: "atan2",
    dtypes: FLOATS,
    f: Math.atan2,
    da: { lo: -2, hi: 2, specials: true, ties: true },
    db: { lo: -2, hi: 2, gap: 0.5, specials: true, ties: true },
    ad: "fd",
    tol32: TRANSC32,
  }),
  binaryRow({ name: "and", dtypes: ["int32", "uint32", "bool"], f: (a, b) => a & b, da: { lo: 0, hi: 0 }, ad: "none" }),
  binaryRow({ name: "or", dtypes: ["int32", "uint32", "bool"], f: (a, b) => a | b, da: { lo: 0, hi: 0 }, ad: "none" }),
  binaryRow({ name: "xor", dtypes: ["int32", "uint32", "bool"], f: (a, b) => a ^ b, da: { lo: 0, hi: 0 }, ad: "none" }),
  binaryRow({
    name: "shift_left",
    dtypes: INTS,
    f: shiftLeftRef,
    da: { lo: 0, hi: 0 },
    db: { lo: 0, hi: 0, ilo: -3, ihi: 40, uhi: 40 },
    ad: "none",
  }),
  binaryRow({
    name: "shift_right",
    dtypes: INTS,
    f: shiftRightRef,
    da: { lo: 0, hi: 0 },
    db: { lo: 0, hi: 0, ilo: -3, ihi: 40, uhi: 40 },
    ad: "none",
    note: "arithmetic for int32, logical for uint32",
  }),
  ...(
    [
      ["eq", (a: number, b: number) => a === b],
      ["ne", (a: number, b: number) => a !== b],
      ["lt", (a: number, b: number) => a < b],
      ["le", (a: number, b: number) => a <= b],
      ["gt", (a: number, b: number) => a > b],
      ["ge", (a: number, b: number) => a >= b],
    ] as const
  ).map(([name, f]) =>
    binaryRow({
      name,
      dtypes: ALL,
      f: cmp(f),
      da: { lo: -3, hi: 3, specials: true, ties: true, ilo: -3, ihi: 3, uhi: 3 },
      ad: "zero",
      outBool: true,
      tol32: EXACT,
    }),
  ),
];

// ---------------------------------------------------------------------------------------------------
// integer_pow (static integer exponent, as JAX's lax.integer_pow)

/** x^y by repeated multiplication in the dtype's arithmetic (ints wrap); x^0 = 1, negative y = 1/x^|y|. */
function integerPowRef(x: number, y: number, dtype: DType): number {
  if (isIntD(dtype)) {
    let acc = 1;
    for (let k = 0; k < y; k++) acc = storeAs(Math.imul(acc, x), dtype);
    return acc;
  }
  return Math.pow(x, y);
}

const integerPowRow: OpRow = {
  kind: "op",
  name: "integer_pow",
  dtypes: NUMERIC,
  sig: (mode, scale = "small") =>
    fc
      .record({ shape: shp(scale), dtype: dtypeArb(NUMERIC, mode), y: fc.integer({ min: -3, max: 7 }) })
      .map(({ shape, dtype, y }) => ({
        operands: [{ shape, dtype, domain: num({ lo: -2, hi: 2, gap: mode === "ad" ? 0.2 : undefined, specials: true, ties: true }) }],
        params: { y: isIntD(dtype) ? Math.abs(y) : y },
      })),
  ref: ([x], p) => [mapUnary(x!, x!.dtype, (v) => integerPowRef(v, p.y, x!.dtype))],
  ad: "fd",
  diffArgs: [0],
  tol32: { rtol: 1e-6, atol: 0 },
  tol64: { rtol: 1e-14, atol: 0 },
  note: "integer exponents wrap modulo 2^32 for int dtypes; negative exponents only for floats",
};

// ---------------------------------------------------------------------------------------------------
// select_n, casts, stop_gradient

const selectRow: OpRow = {
  kind: "op",
  name: "select_n",
  dtypes: ALL,
  sig: (mode, scale = "small") =>
    fc.record({ shape: shp(scale), dtype: dtypeArb(ALL, mode) }).map(({ shape, dtype }) => ({
      operands: [
        { shape, dtype: "bool", domain: boolDomain },
        { shape, dtype, domain: num(arithDomain) },
        { shape, dtype, domain: num(arithDomain) },
      ],
      params: {},
    })),
  ref: ([p, f, t]) => [build(f!.shape, f!.dtype, (i) => (at(p!, i) ? at(t!, i) : at(f!, i)))],
  ad: "fd",
  diffArgs: [1, 2],
  tol32: EXACT,
  note: "operand order is JAX's: (pred, onFalse, onTrue)",
};

/** Value conversion per the rules in the file header. */
export function convertRef(v: number, from: DType, to: DType): number {
  if (to === "bool") return v !== 0 ? 1 : 0; // NaN != 0
  if (isFloatDtype(to)) return storeAs(v, to);
  if (isFloatDtype(from)) {
    if (Number.isNaN(v)) return 0;
    const t = Math.trunc(v);
    return to === "int32" ? Math.max(INT32_MIN, Math.min(INT32_MAX, t)) : Math.max(0, Math.min(UINT32_MAX, t));
  }
  return storeAs(v, to); // int/bool -> int wraps modulo 2^32
}

const convertRow: OpRow = {
  kind: "op",
  name: "convert_element_type",
  dtypes: ALL,
  sig: (mode, scale = "small") =>
    mode === "ad"
      ? fc.record({ shape: shp(scale), weakType: fc.boolean() }).map(({ shape, weakType }) => ({
          operands: [{ shape, dtype: "float64" as DType, domain: num({ lo: -3, hi: 3 }) }],
          params: { newDtype: "float64", weakType },
        }))
      : fc
          .record({ shape: shp(scale), from: fc.constantFrom(...ALL), to: fc.constantFrom(...ALL), weakType: fc.boolean() })
          .map(({ shape, from, to, weakType }) => ({
            operands: [
              {
                shape,
                dtype: from,
                // Mostly in range for every target; some values beyond int32 test saturation.
                domain: (rng: Rng, d: DType, m: Mode) =>
                  isFloatDtype(d) && rng.next() < 0.1
                    ? rng.pick([3e9, -3e9, 5e9, NaN, 2147483647.5, -2147483648.7, 4294967295.2])
                    : num({ lo: -1000, hi: 1000, specials: true, ties: true })(rng, d, m),
              },
            ],
            params: { newDtype: to, weakType },
          })),
  ref: ([x], p) => [{ shape: x!.shape, dtype: p.newDtype, data: x!.data.map((v) => convertRef(v, x!.dtype, p.newDtype)) }],
  ad: "fd",
  diffArgs: [0],
  tol32: EXACT,
  note: "ad checks float64 -> float64 (the only float-to-float cast with a float64 tangent space)",
};

const WIDTH4: readonly DType[] = ["float32", "int32", "uint32"];

/** Reinterprets the bits of `v` stored as `from` as a value of `to` (same width). */
export function bitcastRef(v: number, from: DType, to: DType): number {
  const dv = new DataView(new ArrayBuffer(8));
  if (from === "float64") {
    dv.setFloat64(0, v, true);
    return dv.getFloat64(0, true);
  }
  if (from === "float32") dv.setFloat32(0, v, true);
  else if (from === "int32") dv.setInt32(0, v, true);
  else dv.setUint32(0, v, true);
  return to === "float32" ? dv.getFloat32(0, true) : to === "int32" ? dv.getInt32(0, true) : dv.getUint32(0, true);
}

const bitcastRow: OpRow = {
  kind: "op",
  name: "bitcast_convert_type",
  dtypes: ["float32", "float64", "int32", "uint32"],
  sig: (_mode, scale = "small") =>
    fc
      .record({ shape: shp(scale), pair: fc.oneof(fc.tuple(fc.constantFrom(...WIDTH4), fc.constantFrom(...WIDTH4)), fc.constant(["float64", "float64"] as [DType, DType])) })
      .map(({ shape, pair: [from, to] }) => ({
        operands: [
          {
            shape,
            dtype: from,
            domain: (rng: Rng, d: DType) => (isFloatDtype(d) ? rng.uniform(-1e6, 1e6) * rng.pick([1, 1e-30, 1e30]) : d === "int32" ? rng.uint32() | 0 : rng.uint32()),
          },
        ],
        params: { newDtype: to },
      })),
  ref: ([x], p) => [{ shape: x!.shape, dtype: p.newDtype, data: x!.data.map((v) => bitcastRef(v, x!.dtype, p.newDtype)) }],
  ad: "none",
  diffArgs: [],
  tol32: EXACT,
  note: "float sources avoid NaN (payload bits are not portable through JS numbers)",
};

const stopGradientRow: OpRow = {
  kind: "op",
  name: "stop_gradient",
  dtypes: ALL,
  sig: (mode, scale = "small") =>
    fc.record({ shape: shp(scale), dtype: dtypeArb(ALL, mode) }).map(({ shape, dtype }) => ({
      operands: [{ shape, dtype, domain: num(arithDomain) }],
      params: {},
    })),
  ref: ([x]) => [x!],
  ad: "zero",
  diffArgs: [0],
  tol32: EXACT,
};

// ---------------------------------------------------------------------------------------------------
// Structural rows

const anyDomain = num({ lo: -3, hi: 3, ties: true });

function reshapeTarget(shape: readonly number[], rng: Rng): number[] {
  const n = sizeOf(shape);
  if (n === 0) {
    const r = rng.int(1, 3);
    const out = Array.from({ length: r }, () => rng.int(0, 3));
    out[rng.int(0, r - 1)] = 0;
    return out;
  }
  const primes: number[] = [];
  let m = n;
  for (let p = 2; m > 1; p++) {
    while (m % p === 0) {
      primes.push(p);
      m /= p;
    }
  }
  const r = rng.int(primes.length === 0 ? 0 : 1, 4);
  const out = Array.from({ length: r }, () => 1);
  for (const p of primes) out[rng.int(0, r - 1)]! *= p;
  return out;
}

const reshapeRow: OpRow = {
  kind: "op",
  name: "reshape",
  dtypes: ALL,
  sig: (mode, scale = "small") =>
    withSeed(fc.record({ shape: shp(scale), dtype: dtypeArb(ALL, mode) })).map(([{ shape, dtype }, rng]) => ({
      operands: [{ shape, dtype, domain: anyDomain }],
      params: { newSizes: reshapeTarget(shape, rng) },
    })),
  ref: ([x], p) => [{ shape: p.newSizes, dtype: x!.dtype, data: x!.data }],
  ad: "fd",
  diffArgs: [0],
  tol32: EXACT,
};

const transposeRow: OpRow = {
  kind: "op",
  name: "transpose",
  dtypes: ALL,
  sig: (mode, scale = "small") =>
    withSeed(fc.record({ shape: shp(scale, { maxRank: 4 }), dtype: dtypeArb(ALL, mode) })).map(([{ shape, dtype }, rng]) => ({
      operands: [{ shape, dtype, domain: anyDomain }],
      params: { permutation: permutation(shape.length, rng) },
    })),
  ref: ([x], p) => {
    const perm: number[] = p.permutation;
    const shape = perm.map((i) => x!.shape[i]!);
    return [
      build(shape, x!.dtype, (j) => {
        const src = new Array<number>(perm.length);
        perm.forEach((pi, k) => (src[pi] = j[k]!));
        return at(x!, src);
      }),
    ];
  },
  ad: "fd",
  diffArgs: [0],
  tol32: EXACT,
};

const broadcastRow: OpRow = {
  kind: "op",
  name: "broadcast_in_dim",
  dtypes: ALL,
  sig: (mode, scale = "small") =>
    withSeed(fc.record({ shape: shp(scale, { maxRank: 3 }), dtype: dtypeArb(ALL, mode) }))
      .map(([{ shape, dtype }, rng]) => {
        const r = shape.length;
        const R = r + rng.int(0, 2);
        const dims = permutation(R, rng).slice(0, r).sort((a, b) => a - b);
        const out = Array.from({ length: R }, () => rng.pick([0, 1, 2, 3]));
        dims.forEach((d, i) => (out[d] = shape[i] === 1 ? rng.pick([1, 2, 3, 0]) : shape[i]!));
        return { operands: [{ shape, dtype, domain: anyDomain }], params: { shape: out, broadcastDimensions: dims } };
      })
      .filter((s) => sizeOf(s.params.shape) <= cap(scale, 96)),
  ref: ([x], p) => [
    build(p.shape, x!.dtype, (j) => at(x!, (p.broadcastDimensions as number[]).map((d, i) => (x!.shape[i] === 1 ? 0 : j[d]!)))),
  ],
  ad: "fd",
  diffArgs: [0],
  tol32: EXACT,
};

const sliceRow: OpRow = {
  kind: "op",
  name: "slice",
  dtypes: ALL,
  sig: (mode, scale = "small") =>
    withSeed(fc.record({ shape: shp(scale, { maxDim: 6 }), dtype: dtypeArb(ALL, mode) })).map(([{ shape, dtype }, rng]) => {
      const startIndices = shape.map((d) => rng.int(0, d));
      const limitIndices = shape.map((d, i) => rng.int(startIndices[i]!, d));
      const strides = shape.map(() => rng.int(1, 3));
      return { operands: [{ shape, dtype, domain: anyDomain }], params: { startIndices, limitIndices, strides } };
    }),
  ref: ([x], p) => {
    const shape = x!.shape.map((_, i) => Math.ceil((p.limitIndices[i] - p.startIndices[i]) / p.strides[i]));
    return [build(shape, x!.dtype, (j) => at(x!, j.map((v, i) => p.startIndices[i] + v * p.strides[i])))];
  },
  ad: "fd",
  diffArgs: [0],
  tol32: EXACT,
};

const revRow: OpRow = {
  kind: "op",
  name: "rev",
  dtypes: ALL,
  sig: (mode, scale = "small") =>
    withSeed(fc.record({ shape: shp(scale), dtype: dtypeArb(ALL, mode) })).map(([{ shape, dtype }, rng]) => ({
      operands: [{ shape, dtype, domain: anyDomain }],
      params: { dimensions: randomSubset(shape.length, rng) },
    })),
  ref: ([x], p) => [build(x!.shape, x!.dtype, (j) => at(x!, j.map((v, i) => (p.dimensions.includes(i) ? x!.shape[i]! - 1 - v : v))))],
  ad: "fd",
  diffArgs: [0],
  tol32: EXACT,
};

function padOutDim(d: number, lo: number, hi: number, interior: number): number {
  return lo + (d === 0 ? 0 : d + (d - 1) * interior) + hi;
}

const padRow: OpRow = {
  kind: "op",
  name: "pad",
  dtypes: ALL,
  sig: (mode, scale = "small") =>
    withSeed(fc.record({ shape: shp(scale), dtype: dtypeArb(ALL, mode) }))
      .map(([{ shape, dtype }, rng]) => {
        const lo = shape.map(() => rng.int(-2, 3));
        const hi = shape.map(() => rng.int(-2, 3));
        const interior = shape.map(() => rng.int(0, 2));
        const value = dtype === "bool" ? rng.int(0, 1) : isFloatDtype(dtype) ? rng.pick([0, 1.5, -2]) : rng.pick([0, 7]);
        return { operands: [{ shape, dtype, domain: anyDomain }], params: { value, lo, hi, interior } };
      })
      .filter((s) => {
        const out = s.operands[0]!.shape.map((d, i) => padOutDim(d, s.params.lo[i], s.params.hi[i], s.params.interior[i]));
        return out.every((d) => d >= 0) && sizeOf(out) <= cap(scale, 200);
      }),
  ref: ([x], p) => {
    const shape = x!.shape.map((d, i) => padOutDim(d, p.lo[i], p.hi[i], p.interior[i]));
    return [
      build(shape, x!.dtype, (j) => {
        const src: number[] = [];
        for (let i = 0; i < j.length; i++) {
          const q = j[i]! - p.lo[i];
          const step = p.interior[i] + 1;
          if (q < 0 || q % step !== 0 || q / step >= x!.shape[i]!) return storeAs(p.value, x!.dtype);
          src.push(q / step);
        }
        return at(x!, src);
      }),
    ];
  },
  ad: "fd",
  diffArgs: [0],
  tol32: EXACT,
  note: "negative lo/hi (cropping) and interior padding included",
};

const concatRow: OpRow = {
  kind: "op",
  name: "concatenate",
  dtypes: ALL,
  sig: (mode, scale = "small") =>
    withSeed(fc.record({ shape: shp(scale, { minRank: 1 }), dtype: dtypeArb(ALL, mode), k: fc.integer({ min: 1, max: 3 }) })).map(
      ([{ shape, dtype, k }, rng]) => {
        const dimension = rng.int(0, shape.length - 1);
        const operands = Array.from({ length: k }, () => ({
          shape: shape.map((d, i) => (i === dimension ? rng.int(0, 3) : d)),
          dtype,
          domain: anyDomain,
        }));
        return { operands, params: { dimension } };
      },
    ),
  ref: (xs, p) => {
    const d = p.dimension;
    const shape = [...xs[0]!.shape];
    shape[d] = xs.reduce((s, x) => s + x.shape[d]!, 0);
    return [
      build(shape, xs[0]!.dtype, (j) => {
        let k = j[d]!;
        for (const x of xs) {
          if (k < x.shape[d]!) return at(x, j.map((v, i) => (i === d ? k : v)));
          k -= x.shape[d]!;
        }
        throw new Error("unreachable");
      }),
    ];
  },
  ad: "fd",
  diffArgs: [0, 1, 2],
  tol32: EXACT,
  note: "diffArgs beyond the operand count are ignored",
};

const iotaRow: OpRow = {
  kind: "op",
  name: "iota",
  dtypes: ["int32", "uint32", "float32", "float64"],
  sig: (_mode, scale = "small") =>
    withSeed(fc.record({ shape: shp(scale, { minRank: 1 }), dtype: fc.constantFrom<DType>("int32", "uint32", "float32", "float64") })).map(
      ([{ shape, dtype }, rng]) => ({ operands: [], params: { dtype, shape, dimension: rng.int(0, shape.length - 1) } }),
    ),
  ref: (_xs, p) => [build(p.shape, p.dtype, (j) => j[p.dimension]!)],
  ad: "none",
  diffArgs: [],
  tol32: EXACT,
  note: "no operands: vmap checks the unbatched output broadcast by axisSize",
};

// ---------------------------------------------------------------------------------------------------
// Reductions

type RedOp = "sum" | "prod" | "max" | "min";

function reduceIdentity(op: RedOp, dtype: DType): number {
  switch (op) {
    case "sum":
      return 0;
    case "prod":
      return 1;
    case "max":
      return dtype === "int32" ? INT32_MIN : dtype === "uint32" || dtype === "bool" ? 0 : -Infinity;
    case "min":
      return dtype === "int32" ? INT32_MAX : dtype === "uint32" ? UINT32_MAX : dtype === "bool" ? 1 : Infinity;
  }
}

function combine(op: RedOp, dtype: DType, a: number, b: number): number {
  const isInt = dtype === "int32" || dtype === "uint32";
  switch (op) {
    case "sum":
      return storeAs(a + b, dtype);
    case "prod":
      return isInt ? storeAs(Math.imul(a, b), dtype) : a * b;
    case "max":
      return Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(a, b);
    case "min":
      return Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.min(a, b);
  }
}

function reduceRef(op: RedOp, x: HostArray, axes: readonly number[]): HostArray {
  const outDtype: DType = (op === "sum" || op === "prod") && x.dtype === "bool" ? "int32" : x.dtype;
  const kept = x.shape.map((_, i) => i).filter((i) => !axes.includes(i));
  const outShape = kept.map((i) => x.shape[i]!);
  const redShape = axes.map((a) => x.shape[a]!);
  const absSum: number[] = [];
  const out = build(outShape, outDtype, (j) => {
    let acc = reduceIdentity(op, outDtype);
    let mag = 0;
    const n = sizeOf(redShape);
    for (let f = 0; f < n; f++) {
      const r = unravel(f, redShape);
      const src = new Array<number>(x.shape.length);
      kept.forEach((k, i) => (src[k] = j[i]!));
      axes.forEach((a, i) => (src[a] = r[i]!));
      acc = combine(op, outDtype, acc, at(x, src));
      mag += Math.abs(at(x, src));
    }
    absSum.push(mag);
    return outDtype === "float32" ? acc : storeAs(acc, outDtype);
  });
  return op === "sum" ? { ...out, errScale: Float64Array.from(absSum) } : out;
}

function reduceRow(name: string, op: RedOp): OpRow {
  const dtypes = ALL;
  const domain =
    op === "prod"
      ? num({ lo: 0.5, hi: 1.5, ilo: -3, ihi: 3, uhi: 3, specials: false })
      : num({ lo: -3, hi: 3, ties: true, specials: op === "max" || op === "min" });
  return {
    kind: "op",
    name,
    dtypes,
    sig: (mode, scale = "small") =>
      withSeed(fc.record({ shape: shp(scale, { maxRank: 4 }), dtype: dtypeArb(dtypes, mode) }))
        .map(([{ shape, dtype }, rng]) => ({
          operands: [{ shape, dtype, domain }],
          params: { axes: randomSubset(shape.length, rng) },
        }))
        // max/min over an empty axis is the constant ∓inf: no derivative to check there.
        .filter((s) => !(mode === "ad" && (op === "max" || op === "min") && s.params.axes.some((a: number) => s.operands[0]!.shape[a] === 0))),
    ref: ([x], p) => [reduceRef(op, x!, p.axes)],
    ad: "fd",
    diffArgs: [0],
    tol32: op === "max" || op === "min" ? EXACT : op === "prod" ? PROD32 : SUM32,
    tol64: op === "prod" ? PROD64 : SUM64,
    note: "empty reductions give the identity (value data only); ad data have no ties",
  };
}

function argRef(isMax: boolean, x: HostArray, axis: number): HostArray {
  const outShape = x.shape.filter((_, i) => i !== axis);
  return build(outShape, "int32", (j) => {
    let best = 0;
    let bestV = NaN;
    for (let k = 0; k < x.shape[axis]!; k++) {
      const src = [...j];
      src.splice(axis, 0, k);
      const v = at(x, src);
      if (k === 0) {
        bestV = v;
        continue;
      }
      if (Number.isNaN(bestV)) break;
      if (Number.isNaN(v) || (isMax ? v > bestV : v < bestV)) {
        best = k;
        bestV = v;
      }
    }
    return best;
  });
}

function argRow(name: string, isMax: boolean): OpRow {
  return {
    kind: "op",
    name,
    dtypes: ALL,
    sig: (mode, scale = "small") =>
      withSeed(fc.record({ shape: shp(scale, { minRank: 1, minDim: 1 }), dtype: dtypeArb(ALL, mode) })).map(([{ shape, dtype }, rng]) => ({
        operands: [{ shape, dtype, domain: num({ lo: -3, hi: 3, ties: true, specials: true, ilo: -3, ihi: 3, uhi: 3 }) }],
        params: { axis: rng.int(0, shape.length - 1), indexDtype: "int32" },
      })),
    ref: ([x], p) => [argRef(isMax, x!, p.axis)],
    ad: "zero",
    diffArgs: [0],
    tol32: EXACT,
    note: "ties pick the first index; NaN counts as the extreme",
  };
}

function cumRef(op: RedOp, x: HostArray, axis: number, reverse: boolean): HostArray {
  const outDtype: DType = (op === "sum" || op === "prod") && x.dtype === "bool" ? "int32" : x.dtype;
  const absSum: number[] = [];
  const out = build(x.shape, outDtype, (j) => {
    let acc = reduceIdentity(op, outDtype);
    let mag = 0;
    const n = x.shape[axis]!;
    const k = j[axis]!;
    const from = reverse ? n - 1 : 0;
    const step = reverse ? -1 : 1;
    for (let i = from; reverse ? i >= k : i <= k; i += step) {
      const v = at(x, j.map((u, a) => (a === axis ? i : u)));
      acc = combine(op, outDtype, acc, v);
      mag += Math.abs(v);
    }
    absSum.push(mag);
    return storeAs(acc, outDtype);
  });
  return op === "sum" ? { ...out, errScale: Float64Array.from(absSum) } : out;
}

function cumRow(name: string, op: RedOp): OpRow {
  const dtypes = ALL;
  const domain =
    op === "prod" ? num({ lo: 0.5, hi: 1.5, ilo: -3, ihi: 3, uhi: 3 }) : num({ lo: -3, hi: 3, ties: true, specials: op !== "sum" });
  return {
    kind: "op",
    name,
    dtypes,
    sig: (mode, scale = "small") =>
      withSeed(fc.record({ shape: shp(scale, { minRank: 1, maxDim: 6 }), dtype: dtypeArb(dtypes, mode) })).map(([{ shape, dtype }, rng]) => ({
        operands: [{ shape, dtype, domain }],
        params: { axis: rng.int(0, shape.length - 1), reverse: rng.next() < 0.5 },
      })),
    ref: ([x], p) => [cumRef(op, x!, p.axis, p.reverse)],
    ad: "fd",
    diffArgs: [0],
    tol32: op === "max" || op === "min" ? EXACT : op === "prod" ? PROD32 : SUM32,
    tol64: op === "prod" ? PROD64 : SUM64,
  };
}

// ---------------------------------------------------------------------------------------------------
// dot_general

interface DotStructure {
  lhsShape: number[];
  rhsShape: number[];
  dims: { contracting: [number[], number[]]; batch: [number[], number[]] };
}

/**
 * A random dot_general structure. Large cases are redrawn until the reference's work (output size ×
 * contraction size) stays under 4M multiply-adds: a naive JS reference over e.g. a [1,1,33,17,64]
 * output with K = 255·33 takes minutes and gigabytes (it hung a CI run).
 */
function dotStructure(rng: Rng, scale: Scale): DotStructure {
  for (;;) {
    const s = dotStructureOnce(rng, scale);
    if (scale === "small") return s;
    const k = s.dims.contracting[0].reduce((n, a) => n * s.lhsShape[a]!, 1);
    const lhsOut = s.lhsShape.reduce((n, d, a) => (s.dims.contracting[0].includes(a) ? n : n * d), 1);
    const rhsFree = s.rhsShape.reduce(
      (n, d, a) => (s.dims.contracting[1].includes(a) || s.dims.batch[1].includes(a) ? n : n * d),
      1,
    );
    if (lhsOut * rhsFree * k <= 4_000_000) return s;
  }
}

function dotStructureOnce(rng: Rng, scale: Scale): DotStructure {
  const nb = rng.int(0, 2);
  const nc = rng.int(0, 2);
  const nl = rng.int(0, 2);
  const nr = rng.int(0, 2);
  // Large: sizes around the CPU matmul's blocking (4×4 micro-tiles, 256-deep k panels), one big
  // contraction at most so the reference stays cheap.
  let bigK = false;
  const dim =
    scale === "small"
      ? () => rng.pick([0, 1, 1, 2, 2, 3, 3])
      : () => rng.pick([1, 2, 3, 5, 17, 33, 64]);
  const kDim = () => {
    if (scale === "small" || bigK) return dim();
    bigK = true;
    return rng.pick([1, 7, 64, 255, 257, 300]);
  };
  const bs = Array.from({ length: scale === "small" ? nb : Math.min(nb, 1) }, dim);
  const cs = Array.from({ length: nc }, kDim);
  const ls = Array.from({ length: nl }, dim);
  const rs = Array.from({ length: nr }, dim);
  // Role lists in some order, then a random permutation of axes per operand.
  const lhsRoles = [...bs.map((_, i) => ["b", i] as const), ...cs.map((_, i) => ["c", i] as const), ...ls.map((_, i) => ["f", i] as const)];
  const rhsRoles = [...bs.map((_, i) => ["b", i] as const), ...cs.map((_, i) => ["c", i] as const), ...rs.map((_, i) => ["f", i] as const)];
  const lp = permutation(lhsRoles.length, rng).map((k) => lhsRoles[k]!);
  const rp = permutation(rhsRoles.length, rng).map((k) => rhsRoles[k]!);
  const size = (side: "l" | "r", [role, i]: readonly [string, number]) =>
    role === "b" ? bs[i]! : role === "c" ? cs[i]! : side === "l" ? ls[i]! : rs[i]!;
  const find = (roles: (readonly [string, number])[], role: string, i: number) => roles.findIndex(([r, k]) => r === role && k === i);
  return {
    lhsShape: lp.map((r) => size("l", r)),
    rhsShape: rp.map((r) => size("r", r)),
    dims: {
      contracting: [cs.map((_, i) => find(lp, "c", i)), cs.map((_, i) => find(rp, "c", i))],
      batch: [bs.map((_, i) => find(lp, "b", i)), bs.map((_, i) => find(rp, "b", i))],
    },
  };
}

/**
 * The result dtype of dot_general on bools. JAX's lax.dot_general (XLA's Dot on PRED) and numpy's
 * matmul keep bool (an OR of ANDs); webgrad's abstractEval gives int32 (a count). This table follows
 * JAX; if int32 is the intended webgrad semantics, change it here (the reference then counts).
 */
const BOOL_DOT_DTYPE: DType = "bool";

function dotRef([x, y]: readonly HostArray[], p: { dims: DotStructure["dims"] }): HostArray[] {
  const [lc, rc] = p.dims.contracting;
  const [lb, rb] = p.dims.batch;
  const lf = x!.shape.map((_, i) => i).filter((i) => !lc.includes(i) && !lb.includes(i));
  const rf = y!.shape.map((_, i) => i).filter((i) => !rc.includes(i) && !rb.includes(i));
  const outShape = [...lb.map((a) => x!.shape[a]!), ...lf.map((a) => x!.shape[a]!), ...rf.map((a) => y!.shape[a]!)];
  const cShape = lc.map((a) => x!.shape[a]!);
  const outDtype: DType = x!.dtype === "bool" ? BOOL_DOT_DTYPE : x!.dtype;
  const absSum: number[] = [];
  const out = build(outShape, outDtype, (j) => {
      const xi = new Array<number>(x!.shape.length);
      const yi = new Array<number>(y!.shape.length);
      lb.forEach((a, k) => {
        xi[a] = j[k]!;
        yi[rb[k]!] = j[k]!;
      });
      lf.forEach((a, k) => (xi[a] = j[lb.length + k]!));
      rf.forEach((a, k) => (yi[a] = j[lb.length + lf.length + k]!));
      let acc = 0;
      let mag = 0;
      const n = sizeOf(cShape);
      for (let f = 0; f < n; f++) {
        const c = unravel(f, cShape);
        lc.forEach((a, k) => (xi[a] = c[k]!));
        rc.forEach((a, k) => (yi[a] = c[k]!));
        const u = at(x!, xi);
        const v = at(y!, yi);
        if (outDtype === "bool") acc = acc | (u & v);
        else if (isFloatDtype(outDtype)) acc += u * v;
        else acc = storeAs(acc + Math.imul(u, v), outDtype);
        mag += Math.abs(u * v);
      }
      absSum.push(mag);
      return acc;
    });
  return [{ ...out, errScale: Float64Array.from(absSum) }];
}

const dotRow: OpRow = {
  kind: "op",
  name: "dot_general",
  dtypes: ALL,
  sig: (mode, scale = "small") =>
    withSeed(dtypeArb(ALL, mode)).map(([dtype, rng]) => {
      const s = dotStructure(rng, scale);
      const domain = num({ lo: -2, hi: 2, ilo: -5, ihi: 5, uhi: 5 });
      return {
        operands: [
          { shape: s.lhsShape, dtype, domain },
          { shape: s.rhsShape, dtype, domain },
        ],
        params: { dims: s.dims },
      };
    }),
  ref: dotRef,
  ad: "fd",
  diffArgs: [0, 1],
  tol32: SUM32,
  tol64: SUM64,
  note: "random batch / contracting / free axes in random positions of both operands; bool stays bool (JAX)",
};

// ---------------------------------------------------------------------------------------------------
// Indexing

const clamp = (v: number, lo: number, hi: number) => Math.max(lo, Math.min(hi, v));

interface GatherStructure {
  x: number[];
  idx: number[];
  axis: number;
  batchDims: number;
}

function gatherStructure(xShape: number[], rng: Rng): GatherStructure {
  const axis = rng.int(0, xShape.length - 1);
  const batchDims = rng.int(0, axis);
  const extra = Array.from({ length: rng.int(0, 2) }, () => rng.pick([0, 1, 2, 3]));
  if (xShape[axis] === 0 && sizeOf(extra) > 0) extra.push(0);
  return { x: xShape, idx: [...xShape.slice(0, batchDims), ...extra], axis, batchDims };
}

function gatherOutShape(s: { x: readonly number[]; idx: readonly number[]; axis: number; batchDims: number }): number[] {
  return [...s.x.slice(0, s.axis), ...s.idx.slice(s.batchDims), ...s.x.slice(s.axis + 1)];
}

/** The x index that output index `j` of a gather reads (clamped). */
function gatherSource(x: HostArray, idx: HostArray, axis: number, nb: number, j: readonly number[]): number[] {
  const ni = idx.shape.length - nb;
  const b = j.slice(0, nb);
  const pre = j.slice(nb, axis);
  const i = j.slice(axis, axis + ni);
  const post = j.slice(axis + ni);
  const raw = at(idx, [...b, ...i]);
  return [...b, ...pre, clamp(raw, 0, x.shape[axis]! - 1), ...post];
}

function indexDomain(n: number): Domain {
  return (rng, _d, mode) => (mode === "value" ? rng.int(-2, n + 1) : rng.int(0, Math.max(0, n - 1)));
}

const gatherRow: OpRow = {
  kind: "op",
  name: "gather",
  dtypes: ALL,
  sig: (mode, scale = "small") =>
    withSeed(fc.record({ shape: shp(scale, { minRank: 1 }), dtype: dtypeArb(ALL, mode), idxDtype: fc.constantFrom<DType>("int32", "uint32") }))
      .map(([{ shape, dtype, idxDtype }, rng]) => {
        const s = gatherStructure(shape, rng);
        return {
          operands: [
            { shape, dtype, domain: anyDomain },
            { shape: s.idx, dtype: idxDtype, domain: indexDomain(shape[s.axis]!) },
          ],
          params: { axis: s.axis, batchDims: s.batchDims },
        };
      })
      .filter((s) => sizeOf(gatherOutShape({ x: s.operands[0]!.shape, idx: s.operands[1]!.shape, ...s.params })) <= cap(scale, 200)),
  ref: ([x, idx], p) => [
    build(gatherOutShape({ x: x!.shape, idx: idx!.shape, ...p }), x!.dtype, (j) => at(x!, gatherSource(x!, idx!, p.axis, p.batchDims, j))),
  ],
  ad: "fd",
  diffArgs: [0],
  tol32: EXACT,
  note: "value data include out-of-range indices (clamped); uint32 indices too",
};

const scatterAddRow: OpRow = {
  kind: "op",
  name: "scatter_add",
  dtypes: NUMERIC,
  sig: (mode, scale = "small") =>
    withSeed(fc.record({ shape: shp(scale, { minRank: 1 }), dtype: dtypeArb(NUMERIC, mode) }))
      .map(([{ shape, dtype }, rng]) => {
        const s = gatherStructure(shape, rng);
        const domain = num({ lo: -3, hi: 3, ilo: -100, ihi: 100, uhi: 100 });
        return {
          operands: [
            { shape, dtype, domain },
            { shape: s.idx, dtype: "int32" as DType, domain: indexDomain(shape[s.axis]!) },
            { shape: gatherOutShape(s), dtype, domain },
          ],
          params: { axis: s.axis, batchDims: s.batchDims },
        };
      })
      .filter((s) => sizeOf(s.operands[2]!.shape) <= cap(scale, 200)),
  ref: ([x, idx, upd], p) => {
    const data = Float64Array.from(x!.data);
    const outShape = upd!.shape;
    const n = sizeOf(outShape);
    for (let f = 0; f < n; f++) {
      const j = unravel(f, outShape);
      const src = gatherSource(x!, idx!, p.axis, p.batchDims, j);
      const k = src.reduce((acc, v, i) => acc * x!.shape[i]! + v, 0);
      data[k] = x!.dtype === "float32" ? data[k]! + upd!.data[f]! : storeAs(data[k]! + upd!.data[f]!, x!.dtype);
    }
    return [{ shape: x!.shape, dtype: x!.dtype, data }];
  },
  ad: "fd",
  diffArgs: [0, 2],
  tol32: { rtol: 1e-6, atol: 1e-6 },
  note: "duplicate indices accumulate; out-of-range indices are clamped",
};

const dynSliceRow: OpRow = {
  kind: "op",
  name: "dynamic_slice",
  dtypes: ALL,
  sig: (mode, scale = "small") =>
    withSeed(fc.record({ shape: shp(scale, { maxDim: 5 }), dtype: dtypeArb(ALL, mode), sDtype: fc.constantFrom<DType>("int32", "int32", "uint32") })).map(
      ([{ shape, dtype, sDtype }, rng]) => ({
        operands: [
          { shape, dtype, domain: anyDomain },
          ...shape.map((d) => ({ shape: [] as number[], dtype: sDtype, domain: ((r: Rng) => r.int(-2, d + 2)) as Domain })),
        ],
        params: { sliceSizes: shape.map((d) => rng.int(0, d)) },
      }),
    ),
  ref: ([x, ...starts], p) => {
    const s = starts.map((st, i) => clamp(st!.data[0]!, 0, x!.shape[i]! - p.sliceSizes[i]));
    return [build(p.sliceSizes, x!.dtype, (j) => at(x!, j.map((v, i) => v + s[i]!)))];
  },
  ad: "fd",
  diffArgs: [0],
  tol32: EXACT,
  note: "start indices may be out of range (clamped so the slice fits)",
};

const dynUpdateRow: OpRow = {
  kind: "op",
  name: "dynamic_update_slice",
  dtypes: ALL,
  sig: (mode, scale = "small") =>
    withSeed(fc.record({ shape: shp(scale, { maxDim: 5 }), dtype: dtypeArb(ALL, mode) })).map(([{ shape, dtype }, rng]) => ({
      operands: [
        { shape, dtype, domain: anyDomain },
        { shape: shape.map((d) => rng.int(0, d)), dtype, domain: anyDomain },
        ...shape.map((d) => ({ shape: [] as number[], dtype: "int32" as DType, domain: ((r: Rng) => r.int(-2, d + 2)) as Domain })),
      ],
      params: {},
    })),
  ref: ([x, u, ...starts]) => {
    const s = starts.map((st, i) => clamp(st!.data[0]!, 0, x!.shape[i]! - u!.shape[i]!));
    return [
      build(x!.shape, x!.dtype, (j) => {
        const k = j.map((v, i) => v - s[i]!);
        return k.every((v, i) => v >= 0 && v < u!.shape[i]!) ? at(u!, k) : at(x!, j);
      }),
    ];
  },
  ad: "fd",
  diffArgs: [0, 1],
  tol32: EXACT,
};

// ---------------------------------------------------------------------------------------------------
// sort

/** Ascending order with NaN last and equal to NaN; -0 equals 0. */
function lessKey(a: number, b: number): number {
  const an = Number.isNaN(a);
  const bn = Number.isNaN(b);
  if (an || bn) return an && bn ? 0 : an ? 1 : -1;
  return a < b ? -1 : a > b ? 1 : 0;
}

function sortRef(xs: readonly HostArray[], p: { dimension: number; numKeys: number }): HostArray[] {
  const shape = xs[0]!.shape;
  const d = p.dimension;
  const n = shape[d]!;
  const outs = xs.map((x) => ({ shape: x.shape, dtype: x.dtype, data: new Float64Array(x.data.length) }));
  const fiberShape = shape.map((s, i) => (i === d ? 1 : s));
  const m = sizeOf(fiberShape);
  for (let f = 0; f < m; f++) {
    const base = unravel(f, fiberShape);
    const idxAt = (k: number) => base.map((v, i) => (i === d ? k : v));
    const order = [...Array(n).keys()];
    order.sort((a, b) => {
      for (let k = 0; k < p.numKeys; k++) {
        const c = lessKey(at(xs[k]!, idxAt(a)), at(xs[k]!, idxAt(b)));
        if (c !== 0) return c;
      }
      return a - b; // stable
    });
    for (let k = 0; k < n; k++) {
      xs.forEach((x, o) => {
        const dst = idxAt(k).reduce((acc, v, i) => acc * shape[i]! + v, 0);
        outs[o]!.data[dst] = at(x, idxAt(order[k]!));
      });
    }
  }
  return outs;
}

const sortDomain = num({ lo: -3, hi: 3, ties: true, ilo: -3, ihi: 3, uhi: 3 });
const sortValueDomain: Domain = (rng, dtype, mode) =>
  isFloatDtype(dtype) && mode === "value" && rng.next() < 0.08 ? rng.pick([NaN, Infinity, -Infinity]) : sortDomain(rng, dtype, mode);

const sortRow: OpRow = {
  kind: "op",
  name: "sort",
  dtypes: ALL,
  sig: (mode, scale = "small") =>
    withSeed(
      fc.record({
        shape: shp(scale, { minRank: 1, maxDim: 6 }),
        dtypes: fc.array(dtypeArb(ALL, mode), { minLength: 1, maxLength: 3 }),
      }),
    ).map(([{ shape, dtypes }, rng]) => ({
      operands: dtypes.map((dtype) => ({ shape, dtype, domain: sortValueDomain })),
      params: { dimension: rng.int(0, shape.length - 1), numKeys: rng.int(1, dtypes.length) },
    })),
  ref: sortRef,
  ad: "fd",
  diffArgs: [0, 1, 2],
  tol32: EXACT,
  note: "value data have ties (stability, multi-key order) and NaN/±Inf; ad data are distinct",
};

// ---------------------------------------------------------------------------------------------------
// threefry2x32 (Salmon et al. 2011, Random123; rotation constants from the paper)

const ROT = [13, 15, 26, 6, 17, 29, 16, 24];

/** Threefry-2x32 with 20 rounds, written from the Random123 specification. */
export function threefryRef(k0: number, k1: number, c0: number, c1: number): [number, number] {
  const rotl = (x: number, r: number) => ((x << r) | (x >>> (32 - r))) >>> 0;
  const ks = [k0 >>> 0, k1 >>> 0, (0x1bd11bda ^ k0 ^ k1) >>> 0];
  let x0 = (c0 + ks[0]!) >>> 0;
  let x1 = (c1 + ks[1]!) >>> 0;
  for (let r = 0; r < 20; r++) {
    x0 = (x0 + x1) >>> 0;
    x1 = rotl(x1, ROT[r % 8]!);
    x1 = (x1 ^ x0) >>> 0;
    if (r % 4 === 3) {
      const s = (r + 1) / 4;
      x0 = (x0 + ks[s % 3]!) >>> 0;
      x1 = (x1 + ks[(s + 1) % 3]! + s) >>> 0;
    }
  }
  return [x0, x1];
}

const threefryRow: OpRow = {
  kind: "op",
  name: "threefry2x32",
  dtypes: ["uint32"],
  sig: (_mode, scale = "small") =>
    shp(scale).map((shape) => ({
      operands: [0, 1, 2, 3].map(() => ({ shape, dtype: "uint32" as DType, domain: uint32Bits })),
      params: {},
    })),
  ref: ([k0, k1, x0, x1]) => {
    const n = k0!.data.length;
    const a = new Float64Array(n);
    const b = new Float64Array(n);
    for (let i = 0; i < n; i++) [a[i], b[i]] = threefryRef(k0!.data[i]!, k1!.data[i]!, x0!.data[i]!, x1!.data[i]!);
    return [
      { shape: k0!.shape, dtype: "uint32", data: a },
      { shape: k0!.shape, dtype: "uint32", data: b },
    ];
  },
  ad: "none",
  diffArgs: [],
  tol32: EXACT,
  note: "the reference is checked against Random123's known-answer vectors in primitives-values.test.ts",
};

// ---------------------------------------------------------------------------------------------------
// Higher-order primitives

const COMPOSITION = "tests/property/composition.test.ts";
const CONTROL_FLOW = "tests/control-flow.test.ts";

const higherOrderRows: HigherOrderRow[] = [
  { kind: "higherOrder", name: "jit", testedIn: [COMPOSITION, "tests/property/primitives-values.test.ts"], note: "jit(f) == f for every row; jit∘grad, grad∘jit, vmap∘jit in composition" },
  { kind: "higherOrder", name: "custom_jvp_call", testedIn: [COMPOSITION], note: "customJvp: same jvp / grad / vmap / jit as the plain function" },
  { kind: "higherOrder", name: "custom_vjp_call", testedIn: [COMPOSITION], note: "customVjp: same grad as the plain function, under vmap and jit" },
  { kind: "higherOrder", name: "custom_lin", testedIn: [COMPOSITION], note: "the linear part of customVjp; only reachable through grad/vjp" },
  { kind: "higherOrder", name: "checkpoint", testedIn: [COMPOSITION], note: "checkpoint: same values and gradients (first and second order)" },
  // Control flow (src/ops/control-flow/): values, jvp/grad against finite differences and unrolled
  // loops, vmap against loops, jit, in the control-flow engineer's dedicated file.
  { kind: "higherOrder", name: "scan", testedIn: [CONTROL_FLOW], note: "lax.scan: values, both AD modes, vmap, jit, nesting" },
  { kind: "higherOrder", name: "cond", testedIn: [CONTROL_FLOW], note: "lax.cond / switch: branches, AD, batched predicates, jit" },
  { kind: "higherOrder", name: "while", testedIn: [CONTROL_FLOW], note: "lax.while_loop: values, forward mode, per-lane trip counts under vmap" },
];

// ---------------------------------------------------------------------------------------------------
// The table

export const SPEC: readonly Row[] = [
  ...unaryRows,
  ...binaryRows,
  integerPowRow,
  selectRow,
  convertRow,
  bitcastRow,
  stopGradientRow,
  reshapeRow,
  transposeRow,
  broadcastRow,
  sliceRow,
  revRow,
  padRow,
  concatRow,
  iotaRow,
  reduceRow("reduce_sum", "sum"),
  reduceRow("reduce_max", "max"),
  reduceRow("reduce_min", "min"),
  reduceRow("reduce_prod", "prod"),
  argRow("argmax", true),
  argRow("argmin", false),
  cumRow("cumsum", "sum"),
  cumRow("cumprod", "prod"),
  cumRow("cummax", "max"),
  cumRow("cummin", "min"),
  dotRow,
  gatherRow,
  scatterAddRow,
  dynSliceRow,
  dynUpdateRow,
  sortRow,
  threefryRow,
  ...higherOrderRows,
];

export const OP_ROWS: readonly OpRow[] = SPEC.filter((r): r is OpRow => r.kind === "op");

/** Draws operand data for a signature from a seed. */
export function makeData(sig: Sig, seed: number, mode: Mode): HostArray[] {
  const rng = new Rng(seed);
  return sig.operands.map((o) => {
    const n = sizeOf(o.shape);
    const data = new Float64Array(n);
    for (let i = 0; i < n; i++) data[i] = storeAs(o.domain(rng, o.dtype, mode), o.dtype);
    return { shape: [...o.shape], dtype: o.dtype, data };
  });
}

/**
 * @file Float32 transcendental functions on f32x4 lanes, emitted inline into a Wasm function body
 * (emitter.ts): exp, log, tanh, logistic, sin, cos, erf, expm1, log1p. Read `vexpr` (a
 * tiny expression builder over the stack machine) first; every function takes the operand as a v128
 * local and leaves the result on the stack.
 *
 * Accuracy (tested in tests/cpu-fused.test.ts against float64 `Math` on many points, edge cases
 * included): a few float32 ulps, with the IEEE special values of the C library (±0, ±Inf, NaN,
 * subnormal inputs and results). Measured maxima against the exact value over ~250k points in
 * [-100, 100] plus subnormals (ulps): exp 0.95, log 0.75, tanh 1.20, logistic 2.25, sin 1.46,
 * cos 1.45, erf 1.07, expm1 2.38, log1p 2.23. The range reductions and polynomials are those of S. L. Moshier's
 * Cephes single-precision library (expf, logf, tanhf, sinf / cosf, http://www.netlib.org/cephes/);
 * sin / cos hand lanes with |x| > 8192 (where a float32 Cody-Waite reduction loses bits) to the
 * imported `Math.sin` / `Math.cos`, so large arguments stay correct.
 */
import type { Code, Local } from "./emitter.js";

/** Pushes one v128 onto the stack. */
export type V = () => void;

/** Expression helpers over `c`: each returns an emitter of one v128 value. */
export function vexpr(c: Code) {
  const bin =
    (op: Parameters<Code["simd"]>[0]) =>
    (a: V, b: V): V =>
    () => {
      a();
      b();
      c.simd(op);
    };
  const un =
    (op: Parameters<Code["simd"]>[0]) =>
    (a: V): V =>
    () => {
      a();
      c.simd(op);
    };
  return {
    get: (l: Local): V => () => c.get(l),
    f: (v: number): V => () => c.f32x4Const(v),
    i: (v: number): V => () => c.v128I32([v, v, v, v]),
    add: bin("f32x4.add"),
    sub: bin("f32x4.sub"),
    mul: bin("f32x4.mul"),
    div: bin("f32x4.div"),
    min: bin("f32x4.min"),
    max: bin("f32x4.max"),
    /** b < a ? b : a (one instruction; NaN in a passes through). */
    pmin: bin("f32x4.pmin"),
    /** a < b ? b : a (one instruction; NaN in a passes through). */
    pmax: bin("f32x4.pmax"),
    lt: bin("f32x4.lt"),
    gt: bin("f32x4.gt"),
    le: bin("f32x4.le"),
    eq: bin("f32x4.eq"),
    ne: bin("f32x4.ne"),
    and: bin("v128.and"),
    or: bin("v128.or"),
    xor: bin("v128.xor"),
    iadd: bin("i32x4.add"),
    isub: bin("i32x4.sub"),
    abs: un("f32x4.abs"),
    neg: un("f32x4.neg"),
    nearest: un("f32x4.nearest"),
    floor: un("f32x4.floor"),
    toInt: un("i32x4.trunc_sat_f32x4_s"),
    toFloat: un("f32x4.convert_i32x4_s"),
    shl: (a: V, n: number): V => () => {
      a();
      c.i32(n).simd("i32x4.shl");
    },
    shrS: (a: V, n: number): V => () => {
      a();
      c.i32(n).simd("i32x4.shr_s");
    },
    /** mask ? a : b (mask lanes all ones or all zeros). */
    sel: (mask: V, a: V, b: V): V => () => {
      a();
      b();
      mask();
      c.simd("v128.bitselect");
    },
    /** Evaluates `v` once into a fresh local and returns a reader of it. */
    let: (v: V): V => {
      const l = c.local("v128");
      v();
      c.set(l);
      return () => c.get(l);
    },
  };
}

/** Horner evaluation of Σ coef[i]·z^(n-1-i) (coefficients from the highest degree down). */
function horner(e: ReturnType<typeof vexpr>, z: V, coefs: readonly number[]): V {
  let p: V = e.f(coefs[0]!);
  for (let i = 1; i < coefs.length; i++) p = e.add(e.mul(p, z), e.f(coefs[i]!));
  return p;
}

const LOG2E = 1.44269504088896341;
const LN2_HI = 0.693359375;
const LN2_LO = -2.12194440e-4;
/** Cephes expf polynomial for e^r - 1 - r = r²·P(r), |r| <= ln2 / 2. */
const EXP_P = [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1];

/** 2^n for int32 lanes n in [-126, 127] (as float bits). */
function pow2(e: ReturnType<typeof vexpr>, n: V): V {
  return e.shl(e.iadd(n, e.i(127)), 23);
}

/**
 * e^x on f32x4 lanes (Cephes expf with a two-step scaling, so subnormal results round once). The clamp
 * uses pseudo-min / max (one instruction each where `min` / `max` take several for their NaN rules;
 * NaN still passes through, since every comparison with it is false), and n = round(x·log2 e) comes
 * with its integer from one float add of 1.5·2^23 (the sum's low mantissa bits are n, rounded half to
 * even): measured 20-25% faster than `nearest` + `trunc_sat`.
 */
export function expF32(c: Code, x: Local): void {
  const e = vexpr(c);
  const xc = e.let(e.pmax(e.pmin(e.get(x), e.f(89)), e.f(-104)));
  const MAGIC = 12582912; // 1.5 · 2^23
  const t = e.let(e.add(e.mul(xc, e.f(LOG2E)), e.f(MAGIC)));
  const n = e.let(e.sub(t, e.f(MAGIC)));
  const r = e.let(e.sub(e.sub(xc, e.mul(n, e.f(LN2_HI))), e.mul(n, e.f(LN2_LO))));
  const r2 = e.let(e.mul(r, r));
  const p = e.add(e.add(e.mul(horner(e, r, EXP_P), r2), r), e.f(1));
  const ni = e.let(e.isub(t, e.i(0x4b400000)));
  const n1 = e.let(e.shrS(ni, 1));
  const n2 = e.isub(ni, n1);
  e.mul(e.mul(p, pow2(e, n1)), pow2(e, n2))();
}

/** Cephes logf polynomial: log(1 + m) = m - m²/2 + m³·P(m), m in [sqrt(1/2) - 1, sqrt(2) - 1). */
const LOG_P = [
  7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
  2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1,
];

/** log(x) on f32x4 lanes: log(±0) = -Inf, log(x < 0) = NaN, log(Inf) = Inf, subnormals scaled first. */
export function logF32(c: Code, x: Local): void {
  const e = vexpr(c);
  const X = e.get(x);
  // Subnormals: scale by 2^23 and remember to subtract 23 from the exponent.
  const sub = e.let(e.lt(X, e.f(1.1754943508222875e-38)));
  const xs = e.let(e.sel(sub, e.mul(X, e.f(8388608)), X));
  // frexp: xs = m · 2^k with m in [0.5, 1).
  const k0 = e.isub(e.shrS(e.and(xs, e.i(0x7f800000)), 23), e.i(126));
  const k1 = e.let(e.isub(k0, e.and(sub, e.i(23))));
  const m0 = e.let(e.or(e.and(xs, e.i(0x007fffff)), e.i(0x3f000000)));
  // m < sqrt(1/2): use 2m - 1 and k - 1, else m - 1.
  const small = e.let(e.lt(m0, e.f(0.707106781186547524)));
  const m = e.let(e.sub(e.sel(small, e.add(m0, m0), m0), e.f(1)));
  const kf = e.let(e.toFloat(e.iadd(k1, small))); // k - 1 where small (a true mask lane is -1)
  const z = e.let(e.mul(m, m));
  let y: V = e.mul(e.mul(horner(e, m, LOG_P), m), z);
  y = e.add(y, e.mul(kf, e.f(LN2_LO)));
  y = e.sub(y, e.mul(z, e.f(0.5)));
  const r = e.let(e.add(e.add(m, y), e.mul(kf, e.f(LN2_HI))));
  // Special values: x == 0 -> -Inf; x < 0 or NaN -> NaN; x == Inf -> Inf.
  const zero = e.eq(X, e.f(0));
  const bad = e.ne(e.max(X, e.f(0)), X); // NaN or negative (max(-0, 0) = 0 != -0 is caught by zero first)
  const inf = e.eq(X, e.f(Infinity));
  e.sel(zero, e.f(-Infinity), e.sel(bad, e.f(NaN), e.sel(inf, e.f(Infinity), r)))();
}

/** Cephes tanhf polynomial for |x| < 0.625: tanh(x) = x + x·z·P(z), z = x². */
const TANH_P = [-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1];

/** tanh on f32x4 lanes (tanh(±0) = ±0, ±1 beyond |x| = 9, NaN propagates). */
export function tanhF32(c: Code, x: Local): void {
  const e = vexpr(c);
  const X = e.get(x);
  const ax = c.local("v128");
  e.abs(X)();
  c.set(ax);
  const z = e.let(e.mul(X, X));
  const small = e.add(e.mul(e.mul(horner(e, z, TANH_P), z), X), X);
  // Large: 1 - 2 / (e^{2|x|} + 1), with x's sign.
  const t = c.local("v128");
  e.pmin(e.add(e.get(ax), e.get(ax)), e.f(20))();
  c.set(t);
  expF32(c, t);
  c.set(t);
  const big = e.let(e.sub(e.f(1), e.div(e.f(2), e.add(e.get(t), e.f(1)))));
  const signed = e.or(big, e.and(X, e.i(-0x80000000)));
  // |x| < 2^-12 (or ±0): x itself; NaN fails the comparison and takes `signed` (NaN through exp).
  const r = e.sel(e.lt(e.get(ax), e.f(0.625)), small, signed);
  e.sel(e.lt(e.get(ax), e.f(2.44140625e-4)), X, r)();
}

/** logistic(x) = 1 / (1 + e^-x) on f32x4 lanes, as e^x / (1 + e^x) for x < 0 (no overflow). */
export function logisticF32(c: Code, x: Local): void {
  const e = vexpr(c);
  const X = e.get(x);
  const t = c.local("v128");
  e.neg(e.abs(X))();
  c.set(t);
  expF32(c, t); // e^-|x| in (0, 1]
  c.set(t);
  const d = e.let(e.add(e.f(1), e.get(t)));
  const pos = e.div(e.f(1), d);
  const neg = e.div(e.get(t), d);
  e.sel(e.lt(X, e.f(0)), neg, pos)();
}

/** Cephes sinf / cosf polynomials on [-π/4, π/4] (z = r²). */
const SIN_P = [-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1];
const COS_P = [2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2];
/** π/2 in three parts with few significant bits (Cephes' DP1..3 doubled): q·P1, q·P2 exact for q < 2^13. */
const PIO2_1 = 1.5703125;
const PIO2_2 = 4.837512969970703125e-4;
const PIO2_3 = 7.54978995489188216e-8;
const LARGE_TRIG = 8192;

/**
 * sin or cos on f32x4 lanes: q = nearest(x·2/π), r = x - q·π/2 (Cody-Waite in three parts), then
 * ±sin(r) or ±cos(r) by the quadrant (q + 1 for cos). Lanes with |x| > 8192 (or not finite) are
 * recomputed by the imported `Math.sin` / `Math.cos` (function index `slow`: f64 -> f64).
 */
export function trigF32(c: Code, x: Local, cos: boolean, slow: number): void {
  const e = vexpr(c);
  const X = e.get(x);
  // q = round(x·2/π) and its integer from one add of 1.5·2^23 (as in expF32); exact for |x| <= 8192,
  // and the other lanes are recomputed below.
  const t = e.let(e.add(e.mul(X, e.f(2 / Math.PI)), e.f(12582912)));
  const q = e.let(e.sub(t, e.f(12582912)));
  const r = e.let(e.sub(e.sub(e.sub(X, e.mul(q, e.f(PIO2_1))), e.mul(q, e.f(PIO2_2))), e.mul(q, e.f(PIO2_3))));
  const z = e.let(e.mul(r, r));
  const s = e.let(e.add(e.mul(e.mul(horner(e, z, SIN_P), z), r), r));
  const co = e.let(e.add(e.sub(e.mul(e.mul(horner(e, z, COS_P), z), z), e.mul(z, e.f(0.5))), e.f(1)));
  let qi: V = e.isub(t, e.i(0x4b400000));
  if (cos) qi = e.iadd(qi, e.i(1));
  const qq = e.let(qi);
  const odd = e.let(e.ne(e.and(qq, e.i(1)), e.i(0)));
  // Sign flip for quadrants 2 and 3: bit 1 of q moved to the float sign bit.
  const flip = e.shl(e.and(qq, e.i(2)), 30);
  const res = c.local("v128");
  let fast: V = e.xor(e.sel(odd, co, s), flip);
  // sin(x) = x in float32 for |x| < 2^-12 (x³/6 is below half an ulp); this also keeps sin(-0) = -0.
  if (!cos) fast = e.sel(e.lt(e.abs(X), e.f(2.44140625e-4)), X, fast);
  fast();
  c.set(res);
  // Slow lanes: |x| > 8192, Inf, NaN (the comparison is false for NaN, hence the negation).
  const slowMask = c.local("v128");
  e.le(e.abs(X), e.f(LARGE_TRIG))();
  c.simd("v128.not").set(slowMask);
  c.get(slowMask).simd("v128.any_true").if();
  for (let lane = 0; lane < 4; lane++) {
    c.get(res);
    c.get(x).lane("f32x4.extract_lane", lane).op("f64.promote_f32").call(slow).op("f32.demote_f64");
    c.lane("f32x4.replace_lane", lane);
    // Keep the fast result where the lane is not slow.
    c.get(res);
    c.get(slowMask);
    c.simd("v128.bitselect").set(res);
  }
  c.end();
  c.get(res);
}

/**
 * erf on f32x4 lanes: N. Juffa's single-precision approximation (odd polynomial below |x| = 0.9277,
 * 1 - e^(poly(|x|)) above, sign restored); within about 1 ulp with a correctly rounded exp, 2 with
 * `expF32` and no fused multiply-add (measured 1.07 before the exp).
 */
export function erfF32(c: Code, x: Local): void {
  const e = vexpr(c);
  const X = e.get(x);
  const t = e.let(e.pmin(e.abs(X), e.f(10))); // erf(10) = 1 in float32; keeps the polynomial finite
  const s = e.let(e.mul(X, X));
  // Small: a + a·P(a²).
  const small = e.add(e.mul(horner(e, s, [-5.96761703e-4, 4.99119423e-3, -2.67681349e-2, 1.12819925e-1, -3.76125336e-1, 1.28379166e-1]), X), X);
  // Large: 1 - exp(r(t)).
  const t2 = e.let(e.mul(t, t));
  let r: V = e.add(e.mul(e.f(-1.72853470e-5), t), e.f(3.83197126e-4));
  const u = e.add(e.mul(e.f(-3.88396438e-3), t), e.f(2.42546219e-2));
  r = e.add(e.mul(r, t2), u);
  r = e.add(e.mul(r, t), e.f(-1.06777877e-1));
  r = e.add(e.mul(r, t), e.f(-6.34846687e-1));
  r = e.add(e.mul(r, t), e.f(-1.28717512e-1));
  r = e.sub(e.mul(r, t), t);
  const ex = c.local("v128");
  r();
  c.set(ex);
  expF32(c, ex);
  c.set(ex);
  const big = e.or(e.sub(e.f(1), e.get(ex)), e.and(X, e.i(-0x80000000)));
  e.sel(e.gt(e.abs(X), e.f(0.927734375)), big, small)();
}

/** e^x - 1 on f32x4 lanes by Kahan's formula (u - 1)·x / log(u), u = e^x (exact at u = 1, -1, Inf). */
export function expm1F32(c: Code, x: Local): void {
  const e = vexpr(c);
  const X = e.get(x);
  const u = c.local("v128");
  expF32(c, x);
  c.set(u);
  const lu = c.local("v128");
  logF32(c, u);
  c.set(lu);
  const um1 = e.let(e.sub(e.get(u), e.f(1)));
  const r = e.mul(um1, e.div(X, e.get(lu))); // x / log(u) ≈ 1 first: no overflow near x = 88.7
  const one = e.eq(e.get(u), e.f(1));
  const minus1 = e.eq(um1, e.f(-1));
  const inf = e.eq(e.get(u), e.f(Infinity));
  e.sel(one, X, e.sel(minus1, e.f(-1), e.sel(inf, e.f(Infinity), r)))();
}

/** log(1 + x) on f32x4 lanes by log(u)·x / (u - 1), u = 1 + x (exact where u = 1; Inf at Inf). */
export function log1pF32(c: Code, x: Local): void {
  const e = vexpr(c);
  const X = e.get(x);
  const u = c.local("v128");
  e.add(e.f(1), X)();
  c.set(u);
  const lu = c.local("v128");
  logF32(c, u);
  c.set(lu);
  const r = e.mul(e.get(lu), e.div(X, e.sub(e.get(u), e.f(1)))); // x / (u - 1) ≈ 1 first: no overflow
  const one = e.eq(e.get(u), e.f(1));
  const inf = e.eq(e.get(u), e.f(Infinity));
  e.sel(one, X, e.sel(inf, e.f(Infinity), r))();
}

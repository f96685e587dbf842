/**
 * @file Scalar special functions that JavaScript's `Math` lacks, accurate to float64: erf / erfc
 * (W. J. Cody's rational Chebyshev approximations), erf_inv (an initial guess refined by Halley steps
 * on erf or, in the tails, on erfc so no precision is lost to 1 - y), round half to even, a stable
 * logistic, and integer power by repeated squaring.
 */

// W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23 (1969),
// coefficients as in Netlib SPECFUN's CALERF.
const A = [
  3.16112374387056560e0, 1.13864154151050156e2, 3.77485237685302021e2, 3.20937758913846947e3,
  1.85777706184603153e-1,
];
const B = [2.36012909523441209e1, 2.44024637934444173e2, 1.28261652607737228e3, 2.84423683343917062e3];
const C = [
  5.64188496988670089e-1, 8.88314979438837594e0, 6.61191906371416295e1, 2.98635138197400131e2,
  8.81952221241769090e2, 1.71204761263407058e3, 2.05107837782607147e3, 1.23033935479799725e3,
  2.15311535474403846e-8,
];
const D = [
  1.57449261107098347e1, 1.17693950891312499e2, 5.37181101862009858e2, 1.62138957456669019e3,
  3.29079923573345963e3, 4.36261909014324716e3, 3.43936767414372164e3, 1.23033935480374942e3,
];
const P = [
  3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
  6.58749161529837803e-4, 1.63153871373020978e-2,
];
const Q = [
  2.56852019228982242e0, 1.87295284992346047e0, 5.27905102951428412e-1, 6.05183413124413191e-2,
  2.33520497626869185e-3,
];
const ONE_OVER_SQRT_PI = 0.56418958354775628695;
const TWO_OVER_SQRT_PI = 1.1283791670955125739;

/** erf(|x|) for |x| <= 0.46875. */
function erfSmall(y: number): number {
  const z = y * y;
  let num = A[4]! * z;
  let den = z;
  for (let i = 0; i < 3; i++) {
    num = (num + A[i]!) * z;
    den = (den + B[i]!) * z;
  }
  return (y * (num + A[3]!)) / (den + B[3]!);
}

/** erfc(y) for y > 0.46875 (y >= 0), underflowing to 0 beyond ~26.5. */
function erfcPositive(y: number): number {
  let r: number;
  if (y <= 4) {
    let num = C[8]! * y;
    let den = y;
    for (let i = 0; i < 7; i++) {
      num = (num + C[i]!) * y;
      den = (den + D[i]!) * y;
    }
    r = (num + C[7]!) / (den + D[7]!);
  } else {
    if (y >= 26.543) return 0;
    const z = 1 / (y * y);
    let num = P[5]! * z;
    let den = z;
    for (let i = 0; i < 4; i++) {
      num = (num + P[i]!) * z;
      den = (den + Q[i]!) * z;
    }
    r = (z * (num + P[4]!)) / (den + Q[4]!);
    r = (ONE_OVER_SQRT_PI - r) / y;
  }
  // exp(-y²) split as exp(-ys²)·exp(-(y-ys)(y+ys)) with ys = y rounded to 1/16, which keeps the
  // product accurate where y² has rounding error.
  const ys = Math.trunc(16 * y) / 16;
  const del = (y - ys) * (y + ys);
  return Math.exp(-ys * ys) * Math.exp(-del) * r;
}

/** The error function, to about 1 ulp in float64. */
export function erf(x: number): number {
  const y = Math.abs(x);
  if (y <= 0.46875) return x < 0 ? -erfSmall(y) : erfSmall(y);
  if (y !== y) return NaN;
  const r = 1 - erfcPositive(y);
  return x < 0 ? -r : r;
}

/** The complementary error function 1 - erf(x), accurate in relative terms for large x. */
export function erfc(x: number): number {
  const y = Math.abs(x);
  if (y <= 0.46875) return 1 - (x < 0 ? -erfSmall(y) : erfSmall(y));
  if (y !== y) return NaN;
  const r = erfcPositive(y);
  return x < 0 ? 2 - r : r;
}

/**
 * Inverse error function: erf_inv(±1) = ±Inf, NaN outside [-1, 1]. Starts from M. Giles' single
 * precision approximation ("Approximating the erfinv function", GPU Computing Gems, 2011) and applies
 * Halley steps; for |y| > 0.5 the residual is computed as (1 - |y|) - erfc(x), where 1 - |y| is exact,
 * so the tails keep full relative precision.
 */
export function erfInv(y: number): number {
  if (!(y >= -1 && y <= 1)) return NaN;
  if (y === 1) return Infinity;
  if (y === -1) return -Infinity;
  if (y === 0) return y; // keeps -0
  const a = Math.abs(y);
  let w = -Math.log((1 - a) * (1 + a));
  let p: number;
  if (w < 5) {
    w -= 2.5;
    p = 2.81022636e-8;
    p = 3.43273939e-7 + p * w;
    p = -3.5233877e-6 + p * w;
    p = -4.39150654e-6 + p * w;
    p = 0.00021858087 + p * w;
    p = -0.00125372503 + p * w;
    p = -0.00417768164 + p * w;
    p = 0.246640727 + p * w;
    p = 1.50140941 + p * w;
  } else {
    w = Math.sqrt(w) - 3;
    p = -0.000200214257;
    p = 0.000100950558 + p * w;
    p = 0.00134934322 + p * w;
    p = -0.00367342844 + p * w;
    p = 0.00573950773 + p * w;
    p = -0.0076224613 + p * w;
    p = 0.00943887047 + p * w;
    p = 1.00167406 + p * w;
    p = 2.83297682 + p * w;
  }
  let x = p * a;
  if (a <= 0.5) {
    // Halley on f(x) = erf(x) - a: x -= u / (1 + x·u) with u = f / f', since f'' = -2x·f'.
    for (let it = 0; it < 4; it++) {
      const u = (erf(x) - a) / (TWO_OVER_SQRT_PI * Math.exp(-x * x));
      const step = u / (1 + x * u);
      x -= step;
      if (Math.abs(step) <= 1e-17 * x) break;
    }
  } else {
    // Newton on g(x) = log(erfc(x) / q), q = 1 - a exact: g is close to quadratic in x, so this
    // converges fast even from the rough far-tail guess, and keeps relative precision as q -> 0.
    const q = 1 - a;
    for (let it = 0; it < 8; it++) {
      const c = erfc(x);
      const step = Math.log(c / q) / (-TWO_OVER_SQRT_PI * Math.exp(-x * x) / c);
      x -= step;
      if (Math.abs(step) <= 1e-17 * x) break;
    }
  }
  return y < 0 ? -x : x;
}

/** Round half to even (banker's rounding), as numpy.round / XLA ROUND_NEAREST_EVEN. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x); // half up (toward +Inf); exact for |x| < 2^52, identity beyond
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** 1 / (1 + exp(-x)) without overflow for large |x|. */
export function logistic(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/** sign with sign(±0) = ±0 and sign(NaN) = NaN. */
export function signFloat(x: number): number {
  return x > 0 ? 1 : x < 0 ? -1 : x;
}

/** C / XLA pow: like Math.pow except pow(1, y) = 1 and pow(-1, ±Inf) = 1 for every y. */
export function powFloat(x: number, y: number): number {
  if (x === 1) return 1;
  if (x === -1 && (y === Infinity || y === -Infinity)) return 1;
  return Math.pow(x, y);
}

/**
 * Integer power with wrapping (int32 arithmetic, the caller stores into Int32Array / Uint32Array):
 * repeated squaring; a negative exponent gives 0 except for bases 1 and -1.
 */
export function powInt(base: number, exp: number): number {
  if (exp < 0) {
    if (base === 1) return 1;
    if (base === -1) return (exp & 1) === 0 ? 1 : -1;
    return 0;
  }
  let result = 1;
  let b = base | 0;
  let e = exp;
  while (e > 0) {
    if (e % 2 === 1) result = Math.imul(result, b);
    b = Math.imul(b, b);
    e = Math.floor(e / 2);
  }
  return result;
}

/**
 * @file WGSL building blocks: scalar helper functions (NaN-aware max/min, exact fmod, log1p, expm1,
 * erf, erf_inv, casts that saturate, wrapping integer power, ...) and the expression of every unary,
 * binary and cast op of kernel.ts for each dtype, with the CPU backend's semantics
 * (../cpu/elementwise.ts).
 *
 * Written for what shader compilers do to floats: Mesa (lavapipe) folds `x != x` to false, drops NaNs
 * in `max`, and simplifies `(a + b) - a` to `b`, so NaN tests are bit tests, and no helper relies on
 * compensated arithmetic. WGSL const-expressions may not produce Inf / NaN, so those come from
 * module-scope `var<private>` bit patterns.
 */
import { isFloat, type DType } from "../../../autodiff/aval.js";
import { DTypeError } from "../../../autodiff/errors.js";
import type { BinaryOp, UnaryOp } from "../kernel.js";
import { wgslType } from "./handle.js";

/** A helper: its WGSL text and the helpers it calls. */
interface Helper {
  readonly deps: readonly string[];
  readonly code: string;
}

const H: Record<string, Helper> = {
  consts: {
    deps: [],
    code: `var<private> NAN_BITS: u32 = 0x7fc00000u;
var<private> INF_BITS: u32 = 0x7f800000u;
fn nanF() -> f32 { return bitcast<f32>(NAN_BITS); }
fn infF() -> f32 { return bitcast<f32>(INF_BITS); }`,
  },
  isNan: { deps: [], code: `fn isNan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }` },
  isFinite: { deps: [], code: `fn isFiniteF(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }` },
  fmax: {
    deps: ["isNan", "consts"],
    code: `fn fmax(a: f32, b: f32) -> f32 { if (isNan(a) || isNan(b)) { return nanF(); } return max(a, b); }`,
  },
  fmin: {
    deps: ["isNan", "consts"],
    code: `fn fmin(a: f32, b: f32) -> f32 { if (isNan(a) || isNan(b)) { return nanF(); } return min(a, b); }`,
  },
  fne: { deps: ["isNan"], code: `fn fne(a: f32, b: f32) -> bool { return isNan(a) || isNan(b) || a != b; }` },
  fsign: { deps: [], code: `fn fsign(x: f32) -> f32 { if (x > 0.0) { return 1.0; } if (x < 0.0) { return -1.0; } return x; }` },
  // log1p(x) = 2·atanh(s), s = x / (2 + x): an odd series in s, exact in relative terms near 0.
  log1p: {
    deps: [],
    code: `fn log1pF(x: f32) -> f32 {
  if (x > -0.2929 && x < 0.4142) {
    let s = x / (2.0 + x);
    let s2 = s * s;
    let p = 1.0 + s2 * (0.33333333 + s2 * (0.2 + s2 * (0.14285714 + s2 * (0.11111111 + s2 * (0.09090909 + s2 * 0.07692308)))));
    return 2.0 * s * p;
  }
  return log(1.0 + x);
}`,
  },
  expm1: {
    deps: ["exp"],
    code: `fn expm1F(x: f32) -> f32 {
  if (abs(x) < 0.5) {
    return x * (1.0 + x * (0.5 + x * (0.16666667 + x * (0.041666668 + x * (0.008333334 + x * (0.0013888889 + x * (0.0001984127 + x * (0.0000248016 + x * 0.0000027557319))))))));
  }
  return expF(x) - 1.0;
}`,
  },
  // exp with Cody-Waite range reduction (x = n·ln2 + r, ln2 split so n·C1 is exact) and Cephes' expf
  // polynomial: lavapipe's exp loses ~14 ulp near the overflow threshold.
  exp: {
    deps: ["consts", "isNan"],
    code: `fn expF(x: f32) -> f32 {
  if (isNan(x)) { return x; }
  if (x > 88.72284) { return infF(); }
  if (x < -103.972084) { return 0.0; }
  let n = round(x * 1.4426950408889634);
  let r = (x - n * 0.693359375) - n * -2.12194440e-4;
  let z = r * r;
  let p = (((((1.9875691500e-4 * r + 1.3981999507e-3) * r + 8.3334519073e-3) * r + 4.1665795894e-2) * r + 1.6666665459e-1) * r + 5.0000001201e-1) * z + r + 1.0;
  let e = i32(n);
  if (e < -125) { return ldexp(ldexp(p, e + 64), -64); }
  if (e > 127) { return ldexp(ldexp(p, e - 1), 1); }
  return ldexp(p, e);
}`,
  },
  // log near 1 through log1p (x - 1 is exact there): lavapipe's log loses ~100 ulp around 1.
  log: {
    deps: ["log1p"],
    code: `fn logF(x: f32) -> f32 {
  if (x > 0.7072 && x < 1.4142) { return log1pF(x - 1.0); }
  return log(x);
}`,
  },
  // atan, asin, acos after Cephes' single-precision atanf / asinf / acosf (S. L. Moshier): lavapipe's
  // builtins are off by up to ~3000 ulp.
  atan: {
    deps: [],
    code: `fn atanF(x0: f32) -> f32 {
  var x = abs(x0);
  var y = 0.0;
  if (x > 2.414213562373095) { y = 1.5707963267948966; x = -1.0 / x; }
  else if (x > 0.4142135623730950) { y = 0.7853981633974483; x = (x - 1.0) / (x + 1.0); }
  let z = x * x;
  y += (((8.05374449538e-2 * z - 1.38776856032e-1) * z + 1.99777106478e-1) * z - 3.33329491539e-1) * z * x + x;
  return select(y, -y, x0 < 0.0);
}`,
  },
  asin: {
    deps: ["consts"],
    code: `fn asinF(x0: f32) -> f32 {
  let a = abs(x0);
  if (!(a <= 1.0)) { return nanF(); }
  var x = a;
  var z = a * a;
  let big = a > 0.5;
  if (big) { z = 0.5 * (1.0 - a); x = sqrt(z); }
  var r = ((((4.2163199048e-2 * z + 2.4181311049e-2) * z + 4.5470025998e-2) * z + 7.4953002686e-2) * z + 1.6666752422e-1) * z * x + x;
  if (big) { r = 1.5707963267948966 - (r + r); }
  return select(r, -r, x0 < 0.0);
}`,
  },
  acos: {
    deps: ["asin"],
    code: `fn acosF(x: f32) -> f32 {
  if (x < -0.5) { return 3.141592653589793 - 2.0 * asinF(sqrt(0.5 * (1.0 + x))); }
  if (x > 0.5) { return 2.0 * asinF(sqrt(0.5 * (1.0 - x))); }
  return 1.5707963267948966 - asinF(x);
}`,
  },
  tanh: {
    deps: ["expm1"],
    code: `fn tanhF(x: f32) -> f32 {
  let a = abs(x);
  if (a > 9.1) { return sign(x); }
  let e = expm1F(2.0 * a);
  let t = e / (e + 2.0);
  return select(t, -t, x < 0.0);
}`,
  },
  sinh: {
    deps: ["expm1", "exp"],
    code: `fn sinhF(x: f32) -> f32 {
  let a = abs(x);
  var s: f32;
  if (a < 1.0) { let e = expm1F(a); s = 0.5 * (e + e / (e + 1.0)); }
  else if (a < 10.0) { s = 0.5 * (expF(a) - expF(-a)); }
  else { let t = expF(0.5 * a); s = (0.5 * t) * t; }
  return select(s, -s, x < 0.0);
}`,
  },
  cosh: {
    deps: ["exp"],
    code: `fn coshF(x: f32) -> f32 {
  let a = abs(x);
  if (a < 10.0) { return 0.5 * (expF(a) + expF(-a)); }
  let t = expF(0.5 * a);
  return (0.5 * t) * t;
}`,
  },
  asinh: {
    deps: ["log1p"],
    code: `fn asinhF(x: f32) -> f32 {
  let a = abs(x);
  var r: f32;
  if (a > 1e9) { r = log(a) + 0.6931471805599453; }
  else { r = log1pF(a + a * a / (1.0 + sqrt(1.0 + a * a))); }
  return select(r, -r, x < 0.0);
}`,
  },
  acosh: {
    deps: ["log1p", "consts"],
    code: `fn acoshF(x: f32) -> f32 {
  if (!(x >= 1.0)) { return nanF(); }
  if (x > 1e9) { return log(x) + 0.6931471805599453; }
  let t = x - 1.0;
  return log1pF(t + sqrt(2.0 * t + t * t));
}`,
  },
  atanh: {
    deps: ["log1p", "consts", "isNan"],
    code: `fn atanhF(x: f32) -> f32 {
  let a = abs(x);
  if (isNan(x) || a > 1.0) { return nanF(); }
  if (a == 1.0) { return select(infF(), -infF(), x < 0.0); }
  let r = 0.5 * log1pF(2.0 * a / (1.0 - a));
  return select(r, -r, x < 0.0);
}`,
  },
  // The rational approximation XLA and Eigen use for float32 erf (clamped to [-4, 4]).
  erf: {
    deps: ["isNan"],
    code: `fn erfF(x0: f32) -> f32 {
  if (isNan(x0)) { return x0; }
  let x = clamp(x0, -4.0, 4.0);
  let x2 = x * x;
  var p = x2 * -2.72614225801306e-10 + 2.77068142495902e-08;
  p = x2 * p + -2.10102402082508e-06;
  p = x2 * p + -5.69250639462346e-05;
  p = x2 * p + -7.34990630326855e-04;
  p = x2 * p + -2.95459980854025e-03;
  p = x2 * p + -1.60960333262415e-02;
  p = x * p;
  var q = x2 * -1.45660718464996e-05 + -2.13374055278905e-04;
  q = x2 * q + -1.68282697438203e-03;
  q = x2 * q + -7.37332916720468e-03;
  q = x2 * q + -1.42647390514189e-02;
  return clamp(p / q, -1.0, 1.0);
}`,
  },
  // M. Giles, "Approximating the erfinv function", GPU Computing Gems (2011), single precision.
  erfInv: {
    deps: ["consts", "isNan"],
    code: `fn erfInvF(y: f32) -> f32 {
  let a = abs(y);
  if (isNan(y) || a > 1.0) { return nanF(); }
  if (a == 1.0) { return select(infF(), -infF(), y < 0.0); }
  var w = -log((1.0 - a) * (1.0 + a));
  var p: f32;
  if (w < 5.0) {
    w = w - 2.5;
    p = 2.81022636e-08;
    p = 3.43273939e-07 + p * w;
    p = -3.5233877e-06 + p * w;
    p = -4.39150654e-06 + p * w;
    p = 0.00021858087 + p * w;
    p = -0.00125372503 + p * w;
    p = -0.00417768164 + p * w;
    p = 0.246640727 + p * w;
    p = 1.50140941 + p * w;
  } else {
    w = sqrt(w) - 3.0;
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
  return p * y;
}`,
  },
  logistic: {
    deps: ["exp"],
    code: `fn logisticF(x: f32) -> f32 {
  if (x >= 0.0) { return 1.0 / (1.0 + expF(-x)); }
  let e = expF(x);
  return e / (1.0 + e);
}`,
  },
  // C pow, as the CPU's powFloat (Math.pow plus pow(1, y) = 1 and pow(-1, ±Inf) = 1).
  pow: {
    deps: ["consts", "isNan", "isFinite"],
    code: `fn powF(x: f32, y: f32) -> f32 {
  if (y == 0.0 || x == 1.0) { return 1.0; }
  if (isNan(x) || isNan(y)) { return nanF(); }
  let ax = abs(x);
  let yInt = isFiniteF(y) && floor(y) == y;
  let yOdd = yInt && abs(y) < 16777216.0 && (i32(abs(y)) & 1) == 1;
  if (!isFiniteF(y)) {
    if (ax == 1.0) { return 1.0; }
    return select(0.0, infF(), (ax > 1.0) == (y > 0.0));
  }
  var r: f32;
  if (ax == 0.0) { r = select(0.0, infF(), y < 0.0); }
  else if (!isFiniteF(ax)) { r = select(0.0, infF(), y > 0.0); }
  else if (x < 0.0 && !yInt) { return nanF(); }
  else if (yInt && abs(y) <= 64.0) {
    // Small integer powers by repeated squaring (x*x is then correctly rounded, as on the CPU).
    var b = ax; var e = u32(abs(y)); r = 1.0;
    while (e > 0u) { if ((e & 1u) == 1u) { r = r * b; } b = b * b; e = e >> 1u; }
    if (y < 0.0) { r = 1.0 / r; }
  }
  else { r = exp2(y * log2(ax)); }
  let neg = yOdd && (x < 0.0 || (x == 0.0 && (bitcast<u32>(x) & 0x80000000u) != 0u));
  return select(r, -r, neg);
}`,
  },
  // fmod, exact: subtracts the divisor shifted to the remainder's exponent (each step is exact by
  // Sterbenz's lemma) until the remainder is below the divisor.
  frem: {
    deps: ["consts", "isNan", "isFinite"],
    code: `fn fremF(x: f32, y: f32) -> f32 {
  if (isNan(x) || isNan(y) || !isFiniteF(x) || y == 0.0) { return nanF(); }
  if (!isFiniteF(y)) { return x; }
  var r = abs(x);
  let ay = abs(y);
  let ey = frexp(ay).exp;
  for (var i = 0; i < 300 && r >= ay; i++) {
    var t = ldexp(ay, frexp(r).exp - ey);
    if (t > r) { t = t * 0.5; }
    r = r - t;
  }
  return select(r, -r, x < 0.0 || (x == 0.0 && (bitcast<u32>(x) & 0x80000000u) != 0u));
}`,
  },
  // atan2 from atanF by quadrant, with C's signed-zero and infinity cases.
  atan2: {
    deps: ["consts", "isNan", "isFinite", "atan"],
    code: `fn atan2F(y: f32, x: f32) -> f32 {
  if (isNan(x) || isNan(y)) { return nanF(); }
  let yNeg = (bitcast<u32>(y) & 0x80000000u) != 0u;
  let xNeg = (bitcast<u32>(x) & 0x80000000u) != 0u;
  let ax = abs(x);
  let ay = abs(y);
  var r: f32;
  if (ay == 0.0) { r = select(0.0, 3.141592653589793, xNeg); }
  else if (ax == 0.0) { r = 1.5707963267948966; }
  else if (!isFiniteF(ax) && !isFiniteF(ay)) { r = select(0.7853981633974483, 2.356194490192345, xNeg); }
  else if (!isFiniteF(ax)) { r = select(0.0, 3.141592653589793, xNeg); }
  else if (!isFiniteF(ay)) { r = 1.5707963267948966; }
  else { let t = atanF(ay / ax); r = select(t, 3.141592653589793 - t, xNeg); }
  return select(r, -r, yNeg);
}`,
  },
  ipowI: {
    deps: [],
    code: `fn ipowI(b0: i32, e0: i32) -> i32 {
  if (e0 < 0) {
    if (b0 == 1) { return 1; }
    if (b0 == -1) { return select(-1, 1, (e0 & 1) == 0); }
    return 0;
  }
  var r = 1i; var b = b0; var e = e0;
  while (e > 0) { if ((e & 1) == 1) { r = r * b; } b = b * b; e = e >> 1u; }
  return r;
}`,
  },
  ipowU: {
    deps: [],
    code: `fn ipowU(b0: u32, e0: u32) -> u32 {
  var r = 1u; var b = b0; var e = e0;
  while (e > 0u) { if ((e & 1u) == 1u) { r = r * b; } b = b * b; e = e >> 1u; }
  return r;
}`,
  },
  f2i: {
    deps: ["isNan"],
    code: `fn f2i(v: f32) -> i32 {
  if (isNan(v)) { return 0; }
  if (v >= 2147483648.0) { return 2147483647; }
  if (v <= -2147483648.0) { return -2147483647 - 1; }
  return i32(v);
}`,
  },
  f2u: {
    deps: ["isNan"],
    code: `fn f2u(v: f32) -> u32 {
  if (isNan(v) || v <= 0.0) { return 0u; }
  if (v >= 4294967296.0) { return 4294967295u; }
  return u32(v);
}`,
  },
  // Totally ordered u32 keys: ints and floats compare like their values; NaN after +Inf; -0 == 0.
  sortKeyF: {
    deps: ["isNan"],
    code: `fn sortKeyF(v: f32) -> u32 {
  if (isNan(v)) { return 0xffffffffu; }
  var b = bitcast<u32>(v);
  if (b == 0x80000000u) { b = 0u; }
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}`,
  },
};

/** WGSL text of the helpers `names` and everything they depend on, each once, dependencies first. */
export function helperCode(names: Iterable<string>): string {
  const seen = new Set<string>();
  const out: string[] = [];
  const visit = (n: string): void => {
    if (seen.has(n)) return;
    seen.add(n);
    const h = H[n];
    if (!h) throw new Error(`wgsl: unknown helper ${n}`);
    h.deps.forEach(visit);
    out.push(h.code);
  };
  for (const n of names) visit(n);
  return out.join("\n");
}

/** An expression (in the operands' WGSL variables) plus the helpers it needs. */
export interface Expr {
  readonly code: string;
  readonly helpers: readonly string[];
}

const e = (code: string, ...helpers: string[]): Expr => ({ code, helpers });

function unsupported(op: string, dtype: DType): never {
  throw new DTypeError(`${op}: a dtype the op is defined on, got ${dtype}`);
}

/** `op` applied to `a` (of WGSL storage type for `dtype`); the result has the output's storage type. */
export function unaryExpr(op: UnaryOp, dtype: DType, a: string): Expr {
  if (isFloat(dtype)) {
    switch (op) {
      case "neg":
        return e(`-${a}`);
      case "abs":
        return e(`abs(${a})`);
      case "sqrt":
      case "sin":
      case "cos":
      case "tan":
      case "floor":
      case "ceil":
      case "round": // WGSL's round is round-half-to-even
        return e(`${op}(${a})`);
      case "rsqrt":
        return e(`(1.0 / sqrt(${a}))`);
      case "exp":
        return e(`expF(${a})`, "exp");
      case "log":
        return e(`logF(${a})`, "log");
      case "atan":
        return e(`atanF(${a})`, "atan");
      case "asin":
        return e(`asinF(${a})`, "asin");
      case "acos":
        return e(`acosF(${a})`, "acos");
      case "log1p":
        return e(`log1pF(${a})`, "log1p");
      case "expm1":
        return e(`expm1F(${a})`, "expm1");
      case "tanh":
        return e(`tanhF(${a})`, "tanh");
      case "sinh":
        return e(`sinhF(${a})`, "sinh");
      case "cosh":
        return e(`coshF(${a})`, "cosh");
      case "asinh":
        return e(`asinhF(${a})`, "asinh");
      case "acosh":
        return e(`acoshF(${a})`, "acosh");
      case "atanh":
        return e(`atanhF(${a})`, "atanh");
      case "sign":
        return e(`fsign(${a})`, "fsign");
      case "erf":
        return e(`erfF(${a})`, "erf");
      case "erf_inv":
        return e(`erfInvF(${a})`, "erfInv");
      case "logistic":
        return e(`logisticF(${a})`, "logistic");
      case "is_finite":
        return e(`select(0u, 1u, isFiniteF(${a}))`, "isFinite");
      case "not":
        return unsupported(op, dtype);
      default:
        throw new DTypeError(`unary: a known op, got ${String(op satisfies never)}`);
    }
  }
  if (op === "is_finite") return e("1u");
  if (dtype === "bool") return op === "not" ? e(`(1u - ${a})`) : unsupported(op, dtype);
  const signed = dtype === "int32";
  switch (op) {
    case "neg":
      return e(signed ? `(0i - ${a})` : `(0u - ${a})`);
    case "abs":
      return e(signed ? `select(${a}, 0i - ${a}, ${a} < 0i)` : a);
    case "sign":
      return e(signed ? `sign(${a})` : `select(0u, 1u, ${a} > 0u)`);
    case "floor":
    case "ceil":
    case "round":
      return e(a);
    case "not":
      return e(`(~${a})`);
    default:
      return unsupported(op, dtype);
  }
}

/** `op` on `a`, `b` of `dtype`; comparisons produce u32 0/1 (bool storage). */
export function binaryExpr(op: BinaryOp, dtype: DType, a: string, b: string): Expr {
  const float = isFloat(dtype);
  const bool = dtype === "bool";
  const cmp = (c: string, ...h: string[]): Expr => e(`select(0u, 1u, ${c})`, ...h);
  switch (op) {
    case "eq":
      return cmp(`${a} == ${b}`);
    case "ne":
      return float ? cmp(`fne(${a}, ${b})`, "fne") : cmp(`${a} != ${b}`);
    case "lt":
      return cmp(`${a} < ${b}`);
    case "le":
      return cmp(`${a} <= ${b}`);
    case "gt":
      return cmp(`${a} > ${b}`);
    case "ge":
      return cmp(`${a} >= ${b}`);
    default:
      break;
  }
  if (float) {
    switch (op) {
      case "add":
        return e(`(${a} + ${b})`);
      case "sub":
        return e(`(${a} - ${b})`);
      case "mul":
        return e(`(${a} * ${b})`);
      case "div":
        return e(`(${a} / ${b})`);
      case "rem":
        return e(`fremF(${a}, ${b})`, "frem");
      case "pow":
        return e(`powF(${a}, ${b})`, "pow");
      case "max":
        return e(`fmax(${a}, ${b})`, "fmax");
      case "min":
        return e(`fmin(${a}, ${b})`, "fmin");
      case "atan2":
        return e(`atan2F(${a}, ${b})`, "atan2");
      default:
        return unsupported(op, dtype);
    }
  }
  if (bool) {
    switch (op) {
      case "add":
      case "or":
      case "max":
        return e(`(${a} | ${b})`);
      case "mul":
      case "and":
      case "min":
        return e(`(${a} & ${b})`);
      case "xor":
        return e(`(${a} ^ ${b})`);
      default:
        return unsupported(op, dtype);
    }
  }
  const signed = dtype === "int32";
  const zero = signed ? "0i" : "0u";
  switch (op) {
    case "add":
      return e(`(${a} + ${b})`);
    case "sub":
      return e(`(${a} - ${b})`);
    case "mul":
      return e(`(${a} * ${b})`);
    case "div":
      return e(`select(${a} / ${b}, ${zero}, ${b} == ${zero})`);
    case "rem":
      return e(`select(${a} % ${b}, ${zero}, ${b} == ${zero})`);
    case "pow":
      return signed ? e(`ipowI(${a}, ${b})`, "ipowI") : e(`ipowU(${a}, ${b})`, "ipowU");
    case "max":
      return e(`max(${a}, ${b})`);
    case "min":
      return e(`min(${a}, ${b})`);
    case "and":
      return e(`(${a} & ${b})`);
    case "or":
      return e(`(${a} | ${b})`);
    case "xor":
      return e(`(${a} ^ ${b})`);
    case "shl":
      return e(`select(${a} << bitcast<u32>(${b}), ${zero}, bitcast<u32>(${b}) >= 32u)`);
    case "shr":
      return signed
        ? e(`(${a} >> min(bitcast<u32>(${b}), 31u))`)
        : e(`select(${a} >> ${b}, 0u, ${b} >= 32u)`);
    case "atan2":
      return unsupported(op, dtype);
    default:
      throw new DTypeError(`binary: a known op, got ${String(op satisfies never)}`);
  }
}

/** Value conversion `from` -> `to` of `a`, with the CPU's semantics (see cpu/elementwise.ts `cast`). */
export function castExpr(from: DType, to: DType, a: string): Expr {
  if (from === to) return e(a);
  if (to === "bool") {
    return from === "float32" ? e(`select(0u, 1u, (bitcast<u32>(${a}) & 0x7fffffffu) != 0u)`) : e(`select(0u, 1u, ${a} != ${zeroOf(from)})`);
  }
  if (from === "float32") {
    if (to === "int32") return e(`f2i(${a})`, "f2i");
    return e(`f2u(${a})`, "f2u");
  }
  // from int32 / uint32 / bool
  if (to === "float32") return e(`f32(${a})`);
  if (from === "bool") return e(`${wgslType(to)}(${a})`);
  return e(`bitcast<${wgslType(to)}>(${a})`);
}

function zeroOf(d: DType): string {
  return d === "float32" ? "0.0" : d === "int32" ? "0i" : "0u";
}

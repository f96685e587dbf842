/**
 * @file The numpy-like API (`np`): broadcasting, dtype promotion (JAX's rules, JS numbers weakly
 * typed) and convenience on top of the lax primitives. Everything here is composition; no primitive is
 * defined in this file, so every function works under every transform.
 *
 * JS numbers: an integer-valued number is a weak int and any other a weak float, so `np.add(i32, 1)`
 * stays int32 and `np.multiply(f32, 2)` stays float32. Arrays built from JS lists are float32 unless a
 * dtype is given (JS has no int/float distinction to infer from); lists of booleans are bool.
 */
import { DType, isFloat, isInt, Shape, shapeStr } from "../autodiff/aval.js";
import { isEagerContext, Tracer, Value } from "../autodiff/core.js";
import { ArgumentError, DTypeError, ShapeError } from "../autodiff/errors.js";
import { Array, ArrayOptions, beginTemporaries, endTemporaries, fromHost, NestedArray, resolveDevice, scalar } from "./array.js";
import type { AnyTypedArray } from "./backend/kernel.js";
import { checkDType, promoteTypes, resultType } from "./dtype.js";
import * as lax from "./lax/elementwise.js";
import { dotGeneral } from "./lax/dot.js";
import { gather } from "./lax/indexing.js";
import * as red from "./lax/reduce.js";
import { sort as laxSort, takeAlongAxisSameShape } from "./lax/sort.js";
import {
  broadcastInDim,
  concatenate as laxConcatenate,
  iota,
  pad as laxPad,
  reshape as laxReshape,
  rev,
  slice as laxSlice,
  sliceInDim,
  transpose as laxTranspose,
} from "./lax/structural.js";
import { range } from "./lax/util.js";

/** What np functions accept: arrays, tracers, JS numbers/booleans and nested lists of them. */
export type ArrayLike = Value | number | boolean | NestedArray | AnyTypedArray;

// ---------------------------------------------------------------------------------------------------
// Conversion, promotion, broadcasting

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

/** Converts an ArrayLike to a Value. JS numbers become weak scalars (int if integer-valued). */
export function asArray(x: ArrayLike, what = "np.asarray"): Value {
  if (x instanceof Array || x instanceof Tracer) return x;
  if (typeof x === "number") {
    const isI = Number.isInteger(x) && x >= INT32_MIN && x <= INT32_MAX;
    return scalar(x, isI ? "int32" : "float32", true);
  }
  if (typeof x === "boolean") return scalar(x, "bool", false);
  if (globalThis.Array.isArray(x) || ArrayBuffer.isView(x)) return fromHost(x as NestedArray | AnyTypedArray, undefined, {}, what);
  throw new ArgumentError(`${what}: expected an array, number, boolean or nested list, got ${x === null ? "null" : typeof x}`);
}

/** Shape of broadcasting `shapes` together (numpy rules), or a ShapeError naming `name`. */
export function broadcastShapes(name: string, ...shapes: Shape[]): number[] {
  return broadcastShapeList(name, shapes);
}

function broadcastShapeList(name: string, shapes: readonly Shape[]): number[] {
  let n = 0;
  for (let j = 0; j < shapes.length; j++) if (shapes[j]!.length > n) n = shapes[j]!.length;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    let d = 1;
    for (let j = 0; j < shapes.length; j++) {
      const s = shapes[j]!;
      const k = s.length - n + i;
      const v = k >= 0 ? s[k]! : 1;
      if (v === 1) continue;
      if (d !== 1 && d !== v) {
        throw new ShapeError(`${name}: shapes ${shapes.map(shapeStr).join(" and ")} cannot broadcast`);
      }
      d = v;
    }
    out.push(d);
  }
  return out;
}

/** Broadcasts x to `shape` (numpy rules: align trailing axes). */
export function broadcastTo(x: ArrayLike, shape: Shape): Value {
  const v = asArray(x, "np.broadcastTo");
  const s = v.aval.shape;
  const target = broadcastShapes("np.broadcastTo", s, shape);
  if (target.length !== shape.length || target.some((d, i) => d !== shape[i])) {
    throw new ShapeError(`np.broadcastTo: cannot broadcast ${shapeStr(s)} to ${shapeStr(shape)}`);
  }
  const off = shape.length - s.length;
  return broadcastInDim(v, shape, s.map((_, i) => i + off));
}

/** Casts to dtype (keeping weakness only when asked). */
export function astype(x: ArrayLike, dtype: DType): Value {
  return lax.convert(asArray(x, "np.astype"), checkDType("np.astype", dtype));
}

/** Promotes operands to their common dtype and broadcasts them to a common shape. */
function promote(name: string, xs: readonly ArrayLike[], minFloat = false): Value[] {
  if (sameTypeAndShape(xs, minFloat)) return xs as Value[];
  // Plain loops (no map / spread): this runs for every eager binary op whose operands differ.
  const what = `np.${name}`;
  const n = xs.length;
  const vs: Value[] = [];
  for (let i = 0; i < n; i++) vs.push(asArray(xs[i]!, what));
  let dtype: DType;
  let weakType: boolean;
  if (n === 2) {
    const a = vs[0]!.aval;
    const b = vs[1]!.aval;
    ({ dtype, weakType } = promoteTypes(a.dtype, a.weakType, b.dtype, b.weakType));
  } else {
    ({ dtype, weakType } = resultType(vs.map((v) => ({ dtype: v.aval.dtype, weakType: v.aval.weakType }))));
  }
  if (minFloat && !isFloat(dtype)) dtype = "float32";
  const shapes: Shape[] = [];
  for (let i = 0; i < n; i++) shapes.push(vs[i]!.aval.shape);
  const shape = broadcastShapeList(name, shapes);
  // JS scalars are made in the result dtype directly, so jaxprs show a literal, not a conversion.
  const out: Value[] = [];
  for (let i = 0; i < n; i++) {
    const raw = xs[i];
    const c = typeof raw === "number" || typeof raw === "boolean" ? scalar(raw, dtype, weakType) : lax.convert(vs[i]!, dtype, weakType);
    out.push(broadcastToResult(c, shape));
  }
  return out;
}

/**
 * `broadcastTo(v, shape)` for an operand whose shape is known to broadcast to `shape` (it is the
 * broadcast of all the operands' shapes), so without re-checking.
 */
function broadcastToResult(v: Value, shape: Shape): Value {
  const s = v.aval.shape;
  if (sameShape(s, shape)) return v; // what broadcastInDim returns for identity dims
  const off = shape.length - s.length;
  const dims: number[] = [];
  for (let i = 0; i < s.length; i++) dims.push(i + off);
  return broadcastInDim(v, shape, dims);
}

/** Fast path of `promote`: arrays that already share a shape and dtype need nothing. */
function sameTypeAndShape(xs: readonly ArrayLike[], minFloat: boolean): boolean {
  const a0 = xs[0];
  if (!(a0 instanceof Array || a0 instanceof Tracer)) return false;
  const { dtype, shape, weakType } = a0.aval;
  if (minFloat && !isFloat(dtype)) return false;
  for (let i = 1; i < xs.length; i++) {
    const x = xs[i];
    if (!(x instanceof Array || x instanceof Tracer)) return false;
    const b = x.aval;
    if (b.dtype !== dtype || b.weakType !== weakType || b.shape.length !== shape.length) return false;
    for (let k = 0; k < shape.length; k++) if (b.shape[k] !== shape[k]) return false;
  }
  return true;
}

/** A float version of x (ints and bools become float32, as jnp does for sin, exp, ...). */
function asFloat(name: string, x: ArrayLike): Value {
  const v = asArray(x, `np.${name}`);
  return isFloat(v.aval.dtype) ? v : lax.convert(v, "float32", v.aval.weakType);
}

/**
 * A binary np function: promote, broadcast, apply `f`. The two commonest eager calls skip the general
 * `promote` (which allocates lists, walks the type lattice and re-checks broadcasting): two arrays of
 * one aval, and an array with a JS number. Both give exactly what `promote` gives, with the same
 * primitives bound in the same order.
 *
 * In eager code (no transform active) the operands that promotion creates (a broadcast scalar, a
 * broadcast or converted array) are temporaries: they are disposed as soon as `f` has run, instead of
 * being registered with the GC safety net (the largest cost of a small eager op) and counted as live
 * until a collection or the end of the enclosing scope.
 */
const binary = (name: string, f: (a: Value, b: Value) => Value, minFloat = false) => (x: ArrayLike, y: ArrayLike): Value => {
  const xIsValue = x instanceof Array || x instanceof Tracer;
  const yIsValue = y instanceof Array || y instanceof Tracer;
  if (xIsValue && yIsValue) {
    const a = x.aval;
    const b = y.aval;
    if (a.dtype === b.dtype && a.weakType === b.weakType && (!minFloat || isFloat(a.dtype)) && sameShape(a.shape, b.shape)) {
      return f(x, y);
    }
  } else if ((xIsValue && typeof y === "number") || (yIsValue && typeof x === "number")) {
    const numFirst = !xIsValue;
    const v = (numFirst ? y : x) as Value;
    const num = (numFirst ? x : y) as number;
    const t = numberType(v, num, minFloat);
    const va = v.aval;
    if (va.shape.length === 0 && va.dtype === t.dtype && va.weakType === t.weakType) {
      // A scalar that needs no conversion: nothing to broadcast or convert.
      const s = scalar(num, t.dtype, t.weakType);
      return numFirst ? f(s, v) : f(v, s);
    }
    const prepare = () => numberOperands(v, num, numFirst, t);
    return isEagerContext() ? withTemporaries(prepare, f) : f(...prepare());
  }
  const prepare = () => promote(name, [x, y], minFloat) as [Value, Value];
  return isEagerContext() ? withTemporaries(prepare, f) : f(...prepare());
};

function sameShape(a: Shape, b: Shape): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let k = 0; k < a.length; k++) if (a[k] !== b[k]) return false;
  return true;
}

/**
 * The common type of an array and a JS number, as `promote` finds it: the number is a weak int32 if
 * integer-valued in int32 range, else a weak float32; `minFloat` turns a non-float result into float32.
 */
function numberType(v: Value, num: number, minFloat: boolean): { dtype: DType; weakType: boolean } {
  const va = v.aval;
  const isI = Number.isInteger(num) && num >= INT32_MIN && num <= INT32_MAX;
  const t = promoteTypes(va.dtype, va.weakType, isI ? "int32" : "float32", true);
  return minFloat && !isFloat(t.dtype) ? { dtype: "float32", weakType: t.weakType } : t;
}

/**
 * The operands `promote` makes of an array `v` and a JS number `num` (`numFirst`: the number is the
 * left operand) of common type `t`, made in the same order: both take type `t`; the number becomes a
 * scalar broadcast to v's shape (a scalar always broadcasts, and v's shape is the result shape).
 */
function numberOperands(v: Value, num: number, numFirst: boolean, t: { dtype: DType; weakType: boolean }): [Value, Value] {
  if (numFirst) {
    const s = broadcastScalar(scalar(num, t.dtype, t.weakType), v.aval.shape);
    return [s, lax.convert(v, t.dtype, t.weakType)];
  }
  const c = lax.convert(v, t.dtype, t.weakType);
  return [c, broadcastScalar(scalar(num, t.dtype, t.weakType), v.aval.shape)];
}

/**
 * `f` on the operands `prepare` makes, in eager code only: the arrays that `prepare` creates (converted
 * or broadcast operands, arrays made from JS lists) are temporaries (array.ts, beginTemporaries),
 * disposed as soon as `f` has run.
 */
function withTemporaries(prepare: () => [Value, Value], f: (a: Value, b: Value) => Value): Value {
  const temps: Array[] = [];
  const prev = beginTemporaries(temps);
  let ops: [Value, Value];
  try {
    ops = prepare();
  } catch (e) {
    endTemporaries(prev);
    for (const t of temps) t.dispose();
    throw e;
  }
  endTemporaries(prev);
  if (temps.length === 0) return f(ops[0], ops[1]);
  let out: Value | undefined;
  try {
    out = f(ops[0], ops[1]);
    return out;
  } finally {
    for (const t of temps) if (t !== out) t.dispose();
  }
}

/** A scalar broadcast to `shape` (what broadcastTo does for a rank-0 operand, without its checks). */
function broadcastScalar(s: Value, shape: Shape): Value {
  return shape.length === 0 ? s : broadcastInDim(s, shape, []);
}
const unaryFloat = (name: string, f: (a: Value) => Value) => (x: ArrayLike): Value =>
  // A float array needs no conversion (the common eager case; skips building asFloat's error label).
  (x instanceof Array || x instanceof Tracer) && isFloat(x.aval.dtype) ? f(x) : f(asFloat(name, x));

// ---------------------------------------------------------------------------------------------------
// Creation

/** An array from nested lists, a typed array, a number, or another array (copied to `dtype`). */
export function array(data: ArrayLike, opts: ArrayOptions & { shape?: Shape } = {}): Array {
  if (data instanceof Tracer) {
    throw new ArgumentError("np.array: cannot make a concrete array from a traced value\nTip: use np.asarray inside transforms");
  }
  if (data instanceof Array) {
    const v = opts.dtype ? lax.convert(data, opts.dtype) : data;
    return v as Array;
  }
  if (typeof data === "number" || typeof data === "boolean") {
    const dtype = opts.dtype ?? (typeof data === "boolean" ? "bool" : "float32");
    // An explicit device commits the array: make a fresh one (cached scalars are shared, uncommitted).
    if (opts.device !== undefined) return fromHost(data, [], { ...opts, dtype });
    return scalar(data, dtype, false, resolveDevice(opts.device));
  }
  return fromHost(data as NestedArray | AnyTypedArray, opts.shape, opts);
}

function shapeArg(name: string, shape: number | Shape): number[] {
  const s = typeof shape === "number" ? [shape] : [...shape];
  if (s.some((d) => !Number.isInteger(d) || d < 0)) throw new ShapeError(`np.${name}: invalid shape ${shapeStr(s)}`);
  return s;
}

export function full(shape: number | Shape, value: number | boolean, opts: { dtype?: DType } = {}): Value {
  const dtype = opts.dtype ?? (typeof value === "boolean" ? "bool" : "float32");
  return lax.full(shapeArg("full", shape), value, dtype);
}
export const zeros = (shape: number | Shape, opts: { dtype?: DType } = {}): Value => full(shape, 0, opts);
export const ones = (shape: number | Shape, opts: { dtype?: DType } = {}): Value => full(shape, 1, opts);
export function fullLike(x: ArrayLike, value: number | boolean, opts: { dtype?: DType } = {}): Value {
  const v = asArray(x);
  return lax.full(v.aval.shape, value, opts.dtype ?? v.aval.dtype);
}
export const zerosLike = (x: ArrayLike, opts: { dtype?: DType } = {}): Value => fullLike(x, 0, opts);
export const onesLike = (x: ArrayLike, opts: { dtype?: DType } = {}): Value => fullLike(x, 1, opts);

/** `arange(stop)`, `arange(start, stop, step?)`; int32 when all arguments are integers, else float32. */
export function arange(start: number, stop?: number, step = 1, opts: { dtype?: DType } = {}): Value {
  const [a, b] = stop === undefined ? [0, start] : [start, stop];
  for (const [what, v] of [["start", start], ["stop", stop ?? 0], ["step", step]] as const) {
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new ArgumentError(
        `np.arange: a finite number for ${what}, got ${typeof v === "number" ? v : typeof v}` +
          `\nTip: options go last: np.arange(start, stop, step, { dtype })`,
      );
    }
  }
  if (step === 0) throw new ArgumentError("np.arange: step must not be zero");
  const n = Math.max(0, Math.ceil((b - a) / step));
  const allInt = [a, b, step].every(Number.isInteger);
  const dtype = opts.dtype ?? (allInt ? "int32" : "float32");
  const i = iota(isFloat(dtype) ? dtype : "int32", [n]);
  const r = lax.add(lax.mul(i, lax.full([n], step, i.aval.dtype)), lax.full([n], a, i.aval.dtype));
  return lax.convert(r, dtype);
}

export function linspace(start: number, stop: number, num = 50, opts: { endpoint?: boolean; dtype?: DType } = {}): Value {
  const endpoint = opts.endpoint ?? true;
  const dtype = opts.dtype ?? "float32";
  if (!Number.isInteger(num) || num < 0) throw new ArgumentError(`np.linspace: num must be a non-negative integer, got ${num}`);
  const div = endpoint ? num - 1 : num;
  const step = div > 0 ? (stop - start) / div : 0;
  // Computed in float64 on the host for accuracy, then stored in dtype.
  const data = new Float64Array(num);
  for (let i = 0; i < num; i++) data[i] = start + i * step;
  if (endpoint && num > 1) data[num - 1] = stop;
  return fromHost(data, [num], { dtype });
}

export function eye(n: number, m?: number, opts: { k?: number; dtype?: DType } = {}): Value {
  const cols = m ?? n;
  const k = opts.k ?? 0;
  const r = iota("int32", [n, cols], 0);
  const c = iota("int32", [n, cols], 1);
  return lax.convert(lax.eq(lax.add(r, lax.full([n, cols], k, "int32")), c), opts.dtype ?? "float32");
}
export const identity = (n: number, opts: { dtype?: DType } = {}): Value => eye(n, n, opts);

// ---------------------------------------------------------------------------------------------------
// Elementwise

export const add = binary("add", lax.add);
export const subtract = binary("subtract", lax.sub);
export const multiply = binary("multiply", lax.mul);
/** True division: integers divide as float32. */
export const divide = binary("divide", lax.div, true);
export const trueDivide = divide;
const powerGeneral = binary("power", lax.pow);
/**
 * x ** y. A JS integer exponent uses integer_pow (repeated squaring: exact, and differentiable at
 * x = 0), as jnp.power does for Python ints; anything else uses pow.
 */
export function power(x: ArrayLike, y: ArrayLike): Value {
  if (typeof y === "number" && Number.isInteger(y) && Math.abs(y) <= 1 << 16) {
    let v = asArray(x, "np.power");
    if (v.aval.dtype === "bool") v = lax.convert(v, "int32", true); // bool ⊔ weak int = weak int32
    if (y >= 0 || isFloat(v.aval.dtype)) return lax.integerPow(v, y);
  }
  return powerGeneral(x, y);
}
export const maximum = binary("maximum", lax.max);
export const minimum = binary("minimum", lax.min);
export const arctan2 = binary("arctan2", lax.atan2, true);
export const equal = binary("equal", lax.eq);
export const notEqual = binary("notEqual", lax.ne);
export const less = binary("less", lax.lt);
export const lessEqual = binary("lessEqual", lax.le);
export const greater = binary("greater", lax.gt);
export const greaterEqual = binary("greaterEqual", lax.ge);

/** Floor division (rounds toward -inf, like Python's //). */
export const floorDivide = binary("floorDivide", (a, b) => {
  if (isFloat(a.aval.dtype)) return lax.floor(lax.div(a, b));
  const q = lax.div(a, b);
  const r = lax.rem(a, b);
  const zero = lax.zerosLike(r);
  const adjust = lax.and(lax.ne(r, zero), lax.ne(lax.lt(r, zero), lax.lt(b, zero)));
  return lax.select(adjust, lax.sub(q, lax.fullLike(q, 1)), q);
});
/** Remainder with the sign of the divisor (Python's %, numpy's mod). */
export const mod = binary("mod", (a, b) => {
  const r = lax.rem(a, b);
  const zero = lax.zerosLike(r);
  const adjust = lax.and(lax.ne(r, zero), lax.ne(lax.lt(r, zero), lax.lt(b, zero)));
  return lax.select(adjust, lax.add(r, b), r);
});
export const remainder = mod;
/** Remainder with the sign of the dividend (C's fmod). */
export const fmod = binary("fmod", lax.rem);

function logicalArgs(name: string, x: ArrayLike, y: ArrayLike): [Value, Value] {
  const toBool = (v: Value) => (v.aval.dtype === "bool" ? v : lax.ne(v, lax.zerosLike(v)));
  const a = toBool(asArray(x, `np.${name}`));
  const b = toBool(asArray(y, `np.${name}`));
  const shape = broadcastShapes(name, a.aval.shape, b.aval.shape);
  return [broadcastTo(a, shape), broadcastTo(b, shape)];
}
export const logicalAnd = (x: ArrayLike, y: ArrayLike): Value => lax.and(...logicalArgs("logicalAnd", x, y));
export const logicalOr = (x: ArrayLike, y: ArrayLike): Value => lax.or(...logicalArgs("logicalOr", x, y));
export const logicalXor = (x: ArrayLike, y: ArrayLike): Value => lax.xor(...logicalArgs("logicalXor", x, y));
export function logicalNot(x: ArrayLike): Value {
  const v = asArray(x, "np.logicalNot");
  return lax.not(v.aval.dtype === "bool" ? v : lax.ne(v, lax.zerosLike(v)));
}

function intOrBool(name: string, x: ArrayLike, y: ArrayLike): [Value, Value] {
  const [a, b] = promote(name, [x, y]);
  if (isFloat(a!.aval.dtype)) throw new DTypeError(`np.${name}: expects integer or bool arrays, got ${a!.aval.dtype}`);
  return [a!, b!];
}
export const bitwiseAnd = (x: ArrayLike, y: ArrayLike): Value => lax.and(...intOrBool("bitwiseAnd", x, y));
export const bitwiseOr = (x: ArrayLike, y: ArrayLike): Value => lax.or(...intOrBool("bitwiseOr", x, y));
export const bitwiseXor = (x: ArrayLike, y: ArrayLike): Value => lax.xor(...intOrBool("bitwiseXor", x, y));
export const leftShift = (x: ArrayLike, y: ArrayLike): Value => lax.shiftLeft(...intOrBool("leftShift", x, y));
export const rightShift = (x: ArrayLike, y: ArrayLike): Value => lax.shiftRight(...intOrBool("rightShift", x, y));
export const invert = (x: ArrayLike): Value => lax.not(asArray(x, "np.invert"));

export const negative = (x: ArrayLike): Value => lax.neg(asArray(x, "np.negative"));
export const positive = (x: ArrayLike): Value => asArray(x, "np.positive");
export const exp = unaryFloat("exp", lax.exp);
export const exp2 = unaryFloat("exp2", (x) => lax.exp(lax.mul(x, lax.fullLike(x, Math.LN2))));
export const log = unaryFloat("log", lax.log);
export const log2 = unaryFloat("log2", (x) => lax.div(lax.log(x), lax.fullLike(x, Math.LN2)));
export const log10 = unaryFloat("log10", (x) => lax.div(lax.log(x), lax.fullLike(x, Math.LN10)));
export const log1p = unaryFloat("log1p", lax.log1p);
export const expm1 = unaryFloat("expm1", lax.expm1);
export const sqrt = unaryFloat("sqrt", lax.sqrt);
export const rsqrt = unaryFloat("rsqrt", lax.rsqrt);
export const cbrt = unaryFloat("cbrt", (x) =>
  lax.mul(lax.sign(x), lax.exp(lax.div(lax.log(lax.abs(x)), lax.fullLike(x, 3)))),
);
export const sin = unaryFloat("sin", lax.sin);
export const cos = unaryFloat("cos", lax.cos);
export const tan = unaryFloat("tan", lax.tan);
export const arcsin = unaryFloat("arcsin", lax.asin);
export const arccos = unaryFloat("arccos", lax.acos);
export const arctan = unaryFloat("arctan", lax.atan);
export const sinh = unaryFloat("sinh", lax.sinh);
export const cosh = unaryFloat("cosh", lax.cosh);
export const tanh = unaryFloat("tanh", lax.tanh);
export const arcsinh = unaryFloat("arcsinh", lax.asinh);
export const arccosh = unaryFloat("arccosh", lax.acosh);
export const arctanh = unaryFloat("arctanh", lax.atanh);
export const floor = (x: ArrayLike): Value => {
  const v = asArray(x, "np.floor");
  return isFloat(v.aval.dtype) ? lax.floor(v) : v;
};
export const ceil = (x: ArrayLike): Value => {
  const v = asArray(x, "np.ceil");
  return isFloat(v.aval.dtype) ? lax.ceil(v) : v;
};
/** Rounds half to even, as numpy. */
export const round = (x: ArrayLike): Value => {
  const v = asArray(x, "np.round");
  return isFloat(v.aval.dtype) ? lax.round(v) : v;
};
export const trunc = (x: ArrayLike): Value => {
  const v = asArray(x, "np.trunc");
  return isFloat(v.aval.dtype) ? lax.select(lax.lt(v, lax.zerosLike(v)), lax.ceil(v), lax.floor(v)) : v;
};
export const abs = (x: ArrayLike): Value => {
  const v = asArray(x, "np.abs");
  return v.aval.dtype === "bool" || v.aval.dtype === "uint32" ? v : lax.abs(v);
};
export const absolute = abs;
export const sign = (x: ArrayLike): Value => {
  const v = asArray(x, "np.sign");
  if (v.aval.dtype === "bool") return v;
  if (v.aval.dtype === "uint32") return lax.convert(lax.ne(v, lax.zerosLike(v)), "uint32");
  return lax.sign(v);
};
export const square = (x: ArrayLike): Value => {
  const v = asArray(x, "np.square");
  return lax.mul(v, v);
};
export const reciprocal = (x: ArrayLike): Value => {
  const v = asFloat("reciprocal", x);
  return lax.div(lax.fullLike(v, 1), v);
};
export const erf = unaryFloat("erf", lax.erf);
export const erfinv = unaryFloat("erfinv", lax.erfInv);
export const isfinite = (x: ArrayLike): Value => {
  const v = asArray(x, "np.isfinite");
  return isFloat(v.aval.dtype) ? lax.isFinite(v) : lax.full(v.aval.shape, true, "bool");
};
export const isnan = (x: ArrayLike): Value => {
  const v = asArray(x, "np.isnan");
  return isFloat(v.aval.dtype) ? lax.ne(v, v) : lax.full(v.aval.shape, false, "bool");
};
export const isinf = (x: ArrayLike): Value => {
  const v = asArray(x, "np.isinf");
  return isFloat(v.aval.dtype) ? lax.and(lax.not(lax.isFinite(v)), lax.eq(v, v)) : lax.full(v.aval.shape, false, "bool");
};

/** `cond ? x : y` elementwise, with broadcasting and promotion of x and y. */
export function where(cond: ArrayLike, x: ArrayLike, y: ArrayLike): Value {
  let c = asArray(cond, "np.where");
  if (c.aval.dtype !== "bool") c = lax.ne(c, lax.zerosLike(c));
  const [a, b] = promote("where", [x, y]);
  const shape = broadcastShapes("where", c.aval.shape, a!.aval.shape);
  return lax.select(broadcastTo(c, shape), broadcastTo(a!, shape), broadcastTo(b!, shape));
}

/** Limits values to [lo, hi]; either bound may be null. */
export function clip(x: ArrayLike, lo: ArrayLike | null, hi: ArrayLike | null): Value {
  let v = asArray(x, "np.clip");
  if (lo !== null && lo !== undefined) v = maximum(v, lo);
  if (hi !== null && hi !== undefined) v = minimum(v, hi);
  return v;
}

// ---------------------------------------------------------------------------------------------------
// Reductions

export type Axis = number | readonly number[] | null | undefined;

/** Normalised, sorted reduction axes (all axes for null/undefined). */
export function normalizeAxes(name: string, axis: Axis, ndim: number): number[] {
  if (axis === null || axis === undefined) {
    const all: number[] = []; // every axis (a plain loop: reductions call this on every eager op)
    for (let i = 0; i < ndim; i++) all.push(i);
    return all;
  }
  const list = typeof axis === "number" ? [axis] : [...axis];
  const out = list.map((a) => {
    if (!Number.isInteger(a) || a < -ndim || a >= ndim) {
      throw new ShapeError(`np.${name}: axis ${a} is out of bounds for an array of rank ${ndim}`);
    }
    return a < 0 ? a + ndim : a;
  });
  if (new Set(out).size !== out.length) throw new ShapeError(`np.${name}: repeated axis in ${JSON.stringify(axis)}`);
  return out.sort((a, b) => a - b);
}

export function normalizeAxis(name: string, axis: number, ndim: number): number {
  return normalizeAxes(name, axis, ndim)[0]!;
}

export interface ReduceOptions {
  axis?: Axis;
  keepdims?: boolean;
}

function keep(y: Value, shape: Shape, axes: readonly number[], keepdims: boolean | undefined): Value {
  if (!keepdims) return y;
  return laxReshape(y, shape.map((d, i) => (axes.includes(i) ? 1 : d)));
}

function reduction(name: string, f: (x: Value, axes: number[]) => Value, pre?: (v: Value) => Value) {
  const what = `np.${name}`; // made once, not on every call
  return (x: ArrayLike, opts: ReduceOptions = {}): Value => {
    let v = asArray(x, what);
    if (pre) v = pre(v);
    const axes = normalizeAxes(name, opts.axis, v.aval.ndim);
    return keep(f(v, axes), v.aval.shape, axes, opts.keepdims);
  };
}

const boolToInt = (v: Value) => (v.aval.dtype === "bool" ? lax.convert(v, "int32") : v);

export const sum = reduction("sum", red.reduceSum, boolToInt);
export const prod = reduction("prod", red.reduceProd, boolToInt);
export const max = reduction("max", (v, axes) => {
  checkNonEmpty("max", v, axes);
  return red.reduceMax(v, axes);
});
export const min = reduction("min", (v, axes) => {
  checkNonEmpty("min", v, axes);
  return red.reduceMin(v, axes);
});
export const amax = max;
export const amin = min;
export const all = reduction("all", (v, axes) => red.reduceMin(v.aval.dtype === "bool" ? v : lax.ne(v, lax.zerosLike(v)), axes));
export const any = reduction("any", (v, axes) => red.reduceMax(v.aval.dtype === "bool" ? v : lax.ne(v, lax.zerosLike(v)), axes));

function checkNonEmpty(name: string, v: Value, axes: readonly number[]): void {
  if (axes.some((a) => v.aval.shape[a] === 0)) {
    throw new ShapeError(`np.${name}: zero-size reduction over ${v.aval.str()} has no identity`);
  }
}

export const mean = reduction("mean", (v, axes) => {
  const f = isFloat(v.aval.dtype) ? v : lax.convert(v, "float32");
  const n = axes.reduce((m, a) => m * v.aval.shape[a]!, 1);
  const s = red.reduceSum(f, axes);
  return lax.div(s, lax.fullLike(s, n));
});

/** Variance with `ddof` delta degrees of freedom (0: population variance). */
export function variance(x: ArrayLike, opts: ReduceOptions & { ddof?: number } = {}): Value {
  const v = asFloat("var", x);
  const axes = normalizeAxes("var", opts.axis, v.aval.ndim);
  const m = mean(v, { axis: axes, keepdims: true });
  const d = lax.sub(v, broadcastTo(m, v.aval.shape));
  const n = axes.reduce((k, a) => k * v.aval.shape[a]!, 1) - (opts.ddof ?? 0);
  const s = red.reduceSum(lax.mul(d, d), axes);
  return keep(lax.div(s, lax.fullLike(s, n)), v.aval.shape, axes, opts.keepdims);
}
export { variance as var };

export function std(x: ArrayLike, opts: ReduceOptions & { ddof?: number } = {}): Value {
  return lax.sqrt(variance(x, opts));
}

/** log(sum(exp(x))) computed stably: the max is subtracted first (and not differentiated through). */
export function logsumexp(x: ArrayLike, opts: ReduceOptions = {}): Value {
  const v = asFloat("logsumexp", x);
  const axes = normalizeAxes("logsumexp", opts.axis, v.aval.ndim);
  checkNonEmpty("logsumexp", v, axes);
  const mRaw = lax.stopGradient(red.reduceMax(v, axes));
  const m = lax.select(lax.isFinite(mRaw), mRaw, lax.zerosLike(mRaw));
  const mb = broadcastInDim(m, v.aval.shape, range(v.aval.ndim).filter((i) => !axes.includes(i)));
  const s = red.reduceSum(lax.exp(lax.sub(v, mb)), axes);
  return keep(lax.add(lax.log(s), m), v.aval.shape, axes, opts.keepdims);
}

function argReduce(name: string, f: (x: Value, axis: number) => Value) {
  return (x: ArrayLike, opts: { axis?: number | null; keepdims?: boolean } = {}): Value => {
    let v = asArray(x, `np.${name}`);
    if (opts.axis === null || opts.axis === undefined) {
      v = laxReshape(v, [v.aval.size]);
      const r = f(v, 0);
      return opts.keepdims ? laxReshape(r, asArray(x).aval.shape.map(() => 1)) : r;
    }
    const axis = normalizeAxis(name, opts.axis, v.aval.ndim);
    return keep(f(v, axis), v.aval.shape, [axis], opts.keepdims);
  };
}
export const argmax = argReduce("argmax", red.argmax);
export const argmin = argReduce("argmin", red.argmin);

function cumulative(name: string, f: (x: Value, axis: number, reverse: boolean) => Value) {
  return (x: ArrayLike, opts: { axis?: number | null; reverse?: boolean } = {}): Value => {
    let v = boolToInt(asArray(x, `np.${name}`));
    if (opts.axis === null || opts.axis === undefined) {
      v = laxReshape(v, [v.aval.size]);
      return f(v, 0, !!opts.reverse);
    }
    return f(v, normalizeAxis(name, opts.axis, v.aval.ndim), !!opts.reverse);
  };
}
export const cumsum = cumulative("cumsum", red.cumsum);
export const cumprod = cumulative("cumprod", red.cumprod);
export const cummax = cumulative("cummax", red.cummax);
export const cummin = cumulative("cummin", red.cummin);

// ---------------------------------------------------------------------------------------------------
// Shapes

export function reshape(x: ArrayLike, shape: number | readonly number[]): Value {
  const v = asArray(x, "np.reshape");
  const s = typeof shape === "number" ? [shape] : [...shape];
  const neg = s.filter((d) => d === -1).length;
  if (neg > 1) throw new ShapeError(`np.reshape: only one -1 allowed in ${shapeStr(s)}`);
  if (neg === 1) {
    const known = s.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
    if (known === 0 || v.aval.size % known !== 0) {
      throw new ShapeError(`np.reshape: cannot reshape ${v.aval.str()} into ${shapeStr(s)}`);
    }
    s[s.indexOf(-1)] = v.aval.size / known;
  }
  return laxReshape(v, s);
}
export const ravel = (x: ArrayLike): Value => reshape(x, [-1]);

export function transpose(x: ArrayLike, axes?: readonly number[]): Value {
  const v = asArray(x, "np.transpose");
  const n = v.aval.ndim;
  const perm = axes ? axes.map((a) => normalizeAxis("transpose", a, n)) : range(n).reverse();
  if (perm.length !== n || new Set(perm).size !== n) {
    throw new ShapeError(`np.transpose: axes ${JSON.stringify(axes)} are not a permutation of ${n} axes`);
  }
  return laxTranspose(v, perm);
}

export function swapaxes(x: ArrayLike, a: number, b: number): Value {
  const v = asArray(x, "np.swapaxes");
  const n = v.aval.ndim;
  const perm = range(n);
  const i = normalizeAxis("swapaxes", a, n);
  const j = normalizeAxis("swapaxes", b, n);
  [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  return laxTranspose(v, perm);
}

export function moveaxis(x: ArrayLike, source: number, destination: number): Value {
  const v = asArray(x, "np.moveaxis");
  const n = v.aval.ndim;
  const s = normalizeAxis("moveaxis", source, n);
  const d = normalizeAxis("moveaxis", destination, n);
  const perm = range(n).filter((i) => i !== s);
  perm.splice(d, 0, s);
  return laxTranspose(v, perm);
}

export function expandDims(x: ArrayLike, axis: number | readonly number[]): Value {
  const v = asArray(x, "np.expandDims");
  const list = typeof axis === "number" ? [axis] : [...axis];
  const outNdim = v.aval.ndim + list.length;
  const axes = normalizeAxes("expandDims", list, outNdim);
  const shape: number[] = [];
  let k = 0;
  for (let i = 0; i < outNdim; i++) shape.push(axes.includes(i) ? 1 : v.aval.shape[k++]!);
  return laxReshape(v, shape);
}

export function squeeze(x: ArrayLike, axis?: number | readonly number[]): Value {
  const v = asArray(x, "np.squeeze");
  const s = v.aval.shape;
  const axes = axis === undefined ? range(s.length).filter((i) => s[i] === 1) : normalizeAxes("squeeze", axis, s.length);
  for (const a of axes) {
    if (s[a] !== 1) throw new ShapeError(`np.squeeze: axis ${a} of ${v.aval.str()} has size ${s[a]}, not 1`);
  }
  return laxReshape(v, s.filter((_, i) => !axes.includes(i)));
}

function promoteList(name: string, xs: readonly ArrayLike[]): Value[] {
  if (xs.length === 0) throw new ArgumentError(`np.${name}: needs at least one array`);
  const vs = xs.map((x) => asArray(x, `np.${name}`));
  const { dtype, weakType } = resultType(vs.map((v) => ({ dtype: v.aval.dtype, weakType: v.aval.weakType })));
  return vs.map((v) => lax.convert(v, dtype, weakType));
}

export function concatenate(xs: readonly ArrayLike[], axis = 0): Value {
  const vs = promoteList("concatenate", xs);
  const n = vs[0]!.aval.ndim;
  if (n === 0) throw new ShapeError("np.concatenate: zero-dimensional arrays cannot be concatenated\nTip: use np.stack");
  return laxConcatenate(vs, normalizeAxis("concatenate", axis, n));
}

export function stack(xs: readonly ArrayLike[], axis = 0): Value {
  const vs = promoteList("stack", xs);
  const s0 = vs[0]!.aval.shape;
  for (const v of vs) {
    if (v.aval.ndim !== s0.length || v.aval.shape.some((d, i) => d !== s0[i])) {
      throw new ShapeError(`np.stack: arrays must share a shape, got ${vs.map((u) => u.aval.str()).join(", ")}`);
    }
  }
  const a = normalizeAxis("stack", axis, s0.length + 1);
  return laxConcatenate(vs.map((v) => expandDims(v, a)), a);
}

/** numpy's split: `sections` equal parts, or at the given indices. */
export function split(x: ArrayLike, sections: number | readonly number[], axis = 0): Value[] {
  const v = asArray(x, "np.split");
  const a = normalizeAxis("split", axis, v.aval.ndim);
  const n = v.aval.shape[a]!;
  let cuts: number[];
  if (typeof sections === "number") {
    if (!Number.isInteger(sections) || sections <= 0 || n % sections !== 0) {
      throw new ShapeError(`np.split: axis ${a} of size ${n} does not divide into ${sections} equal sections`);
    }
    cuts = range(sections - 1, 1).map((i) => (i * n) / sections);
  } else cuts = [...sections];
  const bounds = [0, ...cuts.map((c) => Math.max(0, Math.min(n, c < 0 ? c + n : c))), n];
  return range(bounds.length - 1).map((i) => sliceInDim(v, bounds[i]!, Math.max(bounds[i]!, bounds[i + 1]!), a));
}

export function flip(x: ArrayLike, axis?: Axis): Value {
  const v = asArray(x, "np.flip");
  return rev(v, normalizeAxes("flip", axis, v.aval.ndim));
}

export function tile(x: ArrayLike, reps: number | readonly number[]): Value {
  let v = asArray(x, "np.tile");
  const r = typeof reps === "number" ? [reps] : [...reps];
  const n = Math.max(r.length, v.aval.ndim);
  const rr = [...globalThis.Array<number>(n - r.length).fill(1), ...r];
  v = laxReshape(v, [...globalThis.Array(n - v.aval.ndim).fill(1), ...v.aval.shape]);
  const s = v.aval.shape;
  // [r0, s0, r1, s1, ...] then merge pairs.
  const inter = s.flatMap((d, i) => [rr[i]!, d]);
  const b = broadcastInDim(v, inter, range(n).map((i) => 2 * i + 1));
  return laxReshape(b, s.map((d, i) => d * rr[i]!));
}

/** Repeats each element `repeats` times along `axis` (flattened when axis is null). */
export function repeat(x: ArrayLike, repeats: number, axis: number | null = null): Value {
  let v = asArray(x, "np.repeat");
  if (!Number.isInteger(repeats) || repeats < 0) throw new ArgumentError(`np.repeat: repeats must be a non-negative integer, got ${repeats}`);
  if (axis === null) v = laxReshape(v, [v.aval.size]);
  const a = axis === null ? 0 : normalizeAxis("repeat", axis, v.aval.ndim);
  const s = v.aval.shape;
  const inter = [...s.slice(0, a + 1), repeats, ...s.slice(a + 1)];
  const dims = range(s.length).map((i) => (i <= a ? i : i + 1));
  const b = broadcastInDim(v, inter, dims);
  return laxReshape(b, s.map((d, i) => (i === a ? d * repeats : d)));
}

export type PadWidth = number | readonly [number, number] | readonly (readonly [number, number])[];

/** Constant padding, numpy's pad_width forms. */
export function pad(x: ArrayLike, padWidth: PadWidth, opts: { constantValue?: number; mode?: "constant" } = {}): Value {
  const v = asArray(x, "np.pad");
  if (opts.mode !== undefined && opts.mode !== "constant") {
    throw new ArgumentError(`np.pad: only mode "constant" is supported, got ${JSON.stringify(opts.mode)}`);
  }
  const n = v.aval.ndim;
  let pairs: [number, number][];
  if (typeof padWidth === "number") pairs = range(n).map(() => [padWidth, padWidth]);
  else if (typeof padWidth[0] === "number") pairs = range(n).map(() => [padWidth[0] as number, padWidth[1] as number]);
  else pairs = (padWidth as readonly (readonly [number, number])[]).map((p) => [p[0], p[1]]);
  if (pairs.length !== n || pairs.some(([a, b]) => !(Number.isInteger(a) && Number.isInteger(b) && a >= 0 && b >= 0))) {
    throw new ShapeError(`np.pad: pad widths must be non-negative integer pairs, one per axis of ${v.aval.str()}`);
  }
  return laxPad(v, opts.constantValue ?? 0, pairs.map((p) => p[0]), pairs.map((p) => p[1]));
}

function triMask(name: string, v: Value, k: number, lower: boolean): Value {
  const s = v.aval.shape;
  if (s.length < 2) throw new ShapeError(`np.${name}: needs at least 2 dimensions, got ${v.aval.str()}`);
  const [m, n] = [s[s.length - 2]!, s[s.length - 1]!];
  const r = iota("int32", [m, n], 0);
  const c = iota("int32", [m, n], 1);
  const rk = lax.add(r, lax.full([m, n], k, "int32"));
  const mask = lower ? lax.ge(rk, c) : lax.le(rk, c);
  const mb = broadcastInDim(mask, s, [s.length - 2, s.length - 1]);
  return lax.select(mb, v, lax.zerosLike(v));
}
export const tril = (x: ArrayLike, k = 0): Value => triMask("tril", asArray(x, "np.tril"), k, true);
export const triu = (x: ArrayLike, k = 0): Value => triMask("triu", asArray(x, "np.triu"), k, false);

// ---------------------------------------------------------------------------------------------------
// Indexing

function indexArray(name: string, idx: ArrayLike): Value {
  let i = asArray(typeof idx === "number" ? idx : idx, `np.${name}`);
  if (typeof idx !== "number" && !(idx instanceof Array) && !(idx instanceof Tracer)) i = lax.convert(i, "int32");
  if (!isInt(i.aval.dtype)) throw new DTypeError(`np.${name}: indices must be integers, got ${i.aval.dtype}`);
  return lax.convert(i, "int32");
}

/** Negative indices count from the end; out-of-range indices are clamped. */
function wrapNegative(i: Value, n: number): Value {
  return lax.select(lax.lt(i, lax.zerosLike(i)), lax.add(i, lax.fullLike(i, n)), i);
}

/** numpy's take: elements of x at `indices` along `axis` (flattened x when axis is null). */
export function take(x: ArrayLike, indices: ArrayLike, axis: number | null = null): Value {
  let v = asArray(x, "np.take");
  if (axis === null) v = laxReshape(v, [v.aval.size]);
  const a = axis === null ? 0 : normalizeAxis("take", axis, v.aval.ndim);
  const i = wrapNegative(indexArray("take", indices), v.aval.shape[a]!);
  return gather(v, i, a, 0);
}

/** numpy's take_along_axis: x and indices broadcast on every axis but `axis`. */
export function takeAlongAxis(x: ArrayLike, indices: ArrayLike, axis: number): Value {
  const v = asArray(x, "np.takeAlongAxis");
  let i = indexArray("takeAlongAxis", indices);
  if (i.aval.ndim !== v.aval.ndim) {
    throw new ShapeError(`np.takeAlongAxis: indices ${i.aval.str()} must have the rank of x ${v.aval.str()}`);
  }
  const a = normalizeAxis("takeAlongAxis", axis, v.aval.ndim);
  const n = v.aval.shape[a]!;
  i = wrapNegative(i, n);
  const others = broadcastShapes(
    "takeAlongAxis",
    v.aval.shape.map((d, k) => (k === a ? 1 : d)),
    i.aval.shape.map((d, k) => (k === a ? 1 : d)),
  );
  const vb = broadcastTo(v, others.map((d, k) => (k === a ? n : d)));
  const ib = broadcastTo(i, others.map((d, k) => (k === a ? i.aval.shape[a]! : d)));
  const r = v.aval.ndim - 1;
  const perm = [...range(r + 1).filter((k) => k !== a), a];
  const inv = range(r + 1);
  perm.forEach((p, k) => (inv[p] = k));
  const g = gather(laxTranspose(vb, perm), laxTranspose(ib, perm), r, r);
  return laxTranspose(g, inv);
}

/** One-hot encoding along a new last axis; out-of-range labels give all zeros. */
export function oneHot(x: ArrayLike, numClasses: number, opts: { dtype?: DType } = {}): Value {
  const v = asArray(x, "oneHot");
  if (!isInt(v.aval.dtype)) throw new DTypeError(`oneHot: labels must be integers, got ${v.aval.dtype}`);
  const s = [...v.aval.shape, numClasses];
  const labels = broadcastInDim(lax.convert(v, "int32"), s, range(v.aval.ndim));
  return lax.convert(lax.eq(labels, iota("int32", s, s.length - 1)), opts.dtype ?? "float32");
}

// ---------------------------------------------------------------------------------------------------
// Sorting

/** A key that sorts ascending in the order x sorts descending (NaNs stay last for floats). */
function descendingKey(v: Value): Value {
  if (isFloat(v.aval.dtype)) return lax.neg(v);
  return lax.not(v); // bitwise not reverses the order of ints and uints; logical not of bools
}

export function sort(x: ArrayLike, opts: { axis?: number; descending?: boolean } = {}): Value {
  const v = asArray(x, "np.sort");
  if (v.aval.ndim === 0) return v;
  const a = normalizeAxis("sort", opts.axis ?? -1, v.aval.ndim);
  if (!opts.descending) return laxSort([v], a, 1)[0]!;
  const perm = argsort(v, { axis: a, descending: true });
  return takeAlongAxisSameShape(v, perm, a);
}

/** Indices that sort x along `axis` (stable: equal elements keep their order). */
export function argsort(x: ArrayLike, opts: { axis?: number; descending?: boolean } = {}): Value {
  const v = asArray(x, "np.argsort");
  const a = normalizeAxis("argsort", opts.axis ?? -1, v.aval.ndim);
  const key = opts.descending ? descendingKey(v) : v;
  return laxSort([key, iota("int32", v.aval.shape, a)], a, 1)[1]!;
}

/** The k largest entries along the last axis and their indices (ties: lower index first). */
export function topK(x: ArrayLike, k: number): [Value, Value] {
  const v = asArray(x, "topK");
  if (v.aval.ndim === 0) throw new ShapeError("topK: needs at least one dimension");
  const r = v.aval.ndim - 1;
  const n = v.aval.shape[r]!;
  if (!Number.isInteger(k) || k < 0 || k > n) throw new ShapeError(`topK: k must be in [0, ${n}], got ${k}`);
  const idx = sliceInDim(argsort(v, { axis: r, descending: true }), 0, k, r);
  return [gather(v, idx, r, r), idx];
}

// ---------------------------------------------------------------------------------------------------
// Linear algebra

/** numpy's matmul: batched over leading dims (broadcast), 1-D operands promoted and squeezed. */
export function matmul(x: ArrayLike, y: ArrayLike): Value {
  let [a, b] = promoteNoBroadcast("matmul", x, y);
  if (a.aval.ndim === 0 || b.aval.ndim === 0) throw new ShapeError("np.matmul: operands must not be scalars\nTip: use np.multiply");
  const aVec = a.aval.ndim === 1;
  const bVec = b.aval.ndim === 1;
  if (aVec) a = laxReshape(a, [1, a.aval.shape[0]!]);
  if (bVec) b = laxReshape(b, [b.aval.shape[0]!, 1]);
  const as = a.aval.shape;
  const bs = b.aval.shape;
  const [m, k1] = as.slice(-2) as [number, number];
  const [k2, n] = bs.slice(-2) as [number, number];
  if (k1 !== k2) {
    throw new ShapeError(`np.matmul: contraction sizes differ, got ${shapeStr(as)} @ ${shapeStr(bs)} (${k1} vs ${k2})`);
  }
  const batch = broadcastShapes("matmul", as.slice(0, -2), bs.slice(0, -2));
  a = broadcastTo(a, [...batch, m, k1]);
  b = broadcastTo(b, [...batch, k2, n]);
  const nb = batch.length;
  let out = dotGeneral(a, b, { contracting: [[nb + 1], [nb]], batch: [range(nb), range(nb)] }); // [...batch, m, n]
  if (aVec) out = laxReshape(out, [...batch, n]);
  if (bVec) out = laxReshape(out, aVec ? batch : [...batch, m]);
  return out;
}

function promoteNoBroadcast(name: string, x: ArrayLike, y: ArrayLike): [Value, Value] {
  const a = asArray(x, `np.${name}`);
  const b = asArray(y, `np.${name}`);
  const { dtype, weakType } = resultType([a.aval, b.aval].map((v) => ({ dtype: v.dtype, weakType: v.weakType })));
  return [lax.convert(a, dtype, weakType), lax.convert(b, dtype, weakType)];
}

/** numpy's dot: inner product of vectors, matmul of matrices, contraction of x's last axis with y's second-to-last. */
export function dot(x: ArrayLike, y: ArrayLike): Value {
  const [a, b] = promoteNoBroadcast("dot", x, y);
  if (a.aval.ndim === 0 || b.aval.ndim === 0) return multiply(a, b);
  const ca = a.aval.ndim - 1;
  const cb = b.aval.ndim === 1 ? 0 : b.aval.ndim - 2;
  if (a.aval.shape[ca] !== b.aval.shape[cb]) {
    throw new ShapeError(`np.dot: shapes ${shapeStr(a.aval.shape)} and ${shapeStr(b.aval.shape)} are not aligned`);
  }
  return dotGeneral(a, b, { contracting: [[ca], [cb]], batch: [[], []] });
}

export function inner(x: ArrayLike, y: ArrayLike): Value {
  const [a, b] = promoteNoBroadcast("inner", x, y);
  if (a.aval.ndim === 0 || b.aval.ndim === 0) return multiply(a, b);
  return dotGeneral(a, b, { contracting: [[a.aval.ndim - 1], [b.aval.ndim - 1]], batch: [[], []] });
}

export function outer(x: ArrayLike, y: ArrayLike): Value {
  const [a, b] = promoteNoBroadcast("outer", x, y);
  const av = laxReshape(a, [a.aval.size, 1]);
  const bv = laxReshape(b, [1, b.aval.size]);
  return multiply(av, bv);
}

/**
 * Einstein summation, e.g. `einsum("bij,bjk->bik", a, b)`. Operands are contracted pairwise left to
 * right with dot_general; an index repeated within one operand takes its diagonal; indices missing
 * from the output are summed. Without `->` the output is the sorted indices that appear once.
 */
export function einsum(subscripts: string, ...operands: ArrayLike[]): Value {
  const spec = subscripts.replace(/\s+/g, "");
  const [lhs, rhsRaw] = spec.includes("->") ? spec.split("->") : [spec, undefined];
  const ins = lhs!.split(",");
  if (ins.length !== operands.length) {
    throw new ArgumentError(`np.einsum: "${subscripts}" names ${ins.length} operands, got ${operands.length}`);
  }
  for (const s of [...ins, rhsRaw ?? ""]) {
    if (!/^[a-zA-Z]*$/.test(s)) {
      throw new ArgumentError(`np.einsum: subscripts must be letters (ellipsis is not supported), got "${s}"`);
    }
  }
  const counts = new Map<string, number>();
  for (const s of ins) for (const ch of s) counts.set(ch, (counts.get(ch) ?? 0) + 1);
  const out = rhsRaw ?? [...counts.keys()].filter((c) => counts.get(c) === 1).sort().join("");
  for (const ch of out) {
    if (!counts.has(ch)) throw new ArgumentError(`np.einsum: output index "${ch}" does not appear in the inputs`);
  }
  const vals = promoteList("einsum", operands);
  const sizes = new Map<string, number>();
  let terms: { v: Value; idx: string }[] = vals.map((v, k) => {
    const idx = ins[k]!;
    if (idx.length !== v.aval.ndim) {
      throw new ShapeError(`np.einsum: operand ${k} ${v.aval.str()} has rank ${v.aval.ndim}, subscripts "${idx}" name ${idx.length} axes`);
    }
    [...idx].forEach((ch, i) => {
      const d = v.aval.shape[i]!;
      const prev = sizes.get(ch);
      if (prev !== undefined && prev !== d && prev !== 1 && d !== 1) {
        throw new ShapeError(`np.einsum: index "${ch}" has sizes ${prev} and ${d}`);
      }
      sizes.set(ch, Math.max(prev ?? 1, d));
    });
    return takeDiagonals(v, idx);
  });
  // Broadcast size-1 axes to the index size.
  terms = terms.map(({ v, idx }) => ({ v: broadcastTo(v, [...idx].map((ch) => sizes.get(ch)!)), idx }));
  const neededLater = (k: number) => new Set([...out, ...terms.slice(k).flatMap((t) => [...t.idx])]);
  // Sum out indices private to one term and not needed elsewhere.
  const sumPrivate = (t: { v: Value; idx: string }, keepSet: Set<string>) => {
    const axes = [...t.idx].map((ch, i) => (keepSet.has(ch) ? -1 : i)).filter((i) => i >= 0);
    if (axes.length === 0) return t;
    return { v: red.reduceSum(t.v, axes), idx: [...t.idx].filter((ch) => keepSet.has(ch)).join("") };
  };
  let acc = sumPrivate(terms[0]!, new Set([...out, ...terms.slice(1).flatMap((t) => [...t.idx])]));
  for (let k = 1; k < terms.length; k++) {
    const later = neededLater(k + 1);
    const other = sumPrivate(terms[k]!, new Set([...later, ...acc.idx]));
    const shared = [...acc.idx].filter((ch) => other.idx.includes(ch));
    const batch = shared.filter((ch) => later.has(ch));
    const contract = shared.filter((ch) => !later.has(ch));
    const lb = batch.map((ch) => acc.idx.indexOf(ch));
    const rb = batch.map((ch) => other.idx.indexOf(ch));
    const lc = contract.map((ch) => acc.idx.indexOf(ch));
    const rc = contract.map((ch) => other.idx.indexOf(ch));
    const lf = [...acc.idx].filter((ch) => !shared.includes(ch));
    const rf = [...other.idx].filter((ch) => !shared.includes(ch));
    acc = {
      v: dotGeneral(acc.v, other.v, { contracting: [lc, rc], batch: [lb, rb] }),
      idx: [...batch, ...lf, ...rf].join(""),
    };
  }
  acc = sumPrivate(acc, new Set(out));
  return laxTranspose(acc.v, [...out].map((ch) => acc.idx.indexOf(ch)));
}

/** For an index repeated within one operand, keeps the diagonal (x_ii -> y_i). */
function takeDiagonals(v: Value, idx: string): { v: Value; idx: string } {
  for (let i = 0; i < idx.length; i++) {
    const j = idx.indexOf(idx[i]!, i + 1);
    if (j < 0) continue;
    const s = v.aval.shape;
    if (s[i] !== s[j]) throw new ShapeError(`np.einsum: repeated index "${idx[i]}" has sizes ${s[i]} and ${s[j]}`);
    const mask = lax.eq(iota("int32", s, i), iota("int32", s, j));
    const masked = lax.select(mask, v, lax.zerosLike(v));
    const reduced = red.reduceSum(masked, [j]);
    return takeDiagonals(reduced, idx.slice(0, j) + idx.slice(j + 1));
  }
  return { v, idx };
}

export function tensordot(x: ArrayLike, y: ArrayLike, axes: number | readonly [readonly number[], readonly number[]] = 2): Value {
  const [a, b] = promoteNoBroadcast("tensordot", x, y);
  let la: number[];
  let lbAxes: number[];
  if (typeof axes === "number") {
    la = range(axes, a.aval.ndim - axes);
    lbAxes = range(axes);
  } else {
    la = axes[0].map((i) => normalizeAxis("tensordot", i, a.aval.ndim));
    lbAxes = axes[1].map((i) => normalizeAxis("tensordot", i, b.aval.ndim));
  }
  return dotGeneral(a, b, { contracting: [la, lbAxes], batch: [[], []] });
}

export function trace(x: ArrayLike): Value {
  return einsum("ii->", x);
}

// ---------------------------------------------------------------------------------------------------
// Introspection helpers

export function shape(x: ArrayLike): Shape {
  return asArray(x).aval.shape;
}
export function ndim(x: ArrayLike): number {
  return asArray(x).aval.ndim;
}
export function size(x: ArrayLike): number {
  return asArray(x).aval.size;
}

export { laxSlice as slice };

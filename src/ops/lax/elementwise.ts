/**
 * @file Elementwise primitives (unary math, binary arithmetic, comparisons, select, casts) and their
 * `lax` functions. lax functions require operands of one shape and dtype; the numpy layer (np.ts)
 * broadcasts and promotes before calling them.
 */
import { DType, isFloat, ShapedArray } from "../../autodiff/aval.js";
import { addTangents, bind1, MaybeZero, nonlinear, UndefinedPrimal, Value } from "../../autodiff/core.js";
import { DTypeError } from "../../autodiff/errors.js";
import { scalar } from "../array.js";
import { BinaryOp, COMPARISON_OPS, KernelBuilder, OutType, UnaryOp } from "../backend/kernel.js";
import { checkDType } from "../dtype.js";
import { definePrimitive, OpsPrimitive } from "../primitive.js";
import { broadcastInDim } from "./structural.js";
import { checkDtypeClass, DTypeClass, moveTo0, sameShapeDtype } from "./util.js";

// ---------------------------------------------------------------------------------------------------
// Constants

/** An array of `shape` filled with `value` (a broadcast scalar: free on CPU, a literal in a jaxpr). */
export function full(shape: readonly number[], value: number | boolean, dtype: DType): Value {
  const s = scalar(value, dtype, false);
  return shape.length === 0 ? s : broadcastInDim(s, shape, []);
}

/** `full` with x's shape and dtype. */
export function fullLike(x: Value, value: number | boolean): Value {
  return full(x.aval.shape, value, x.aval.dtype);
}

export const zerosLike = (x: Value): Value => fullLike(x, 0);

// ---------------------------------------------------------------------------------------------------
// Batching rule shared by all elementwise primitives

function elementwiseBatch(prim: OpsPrimitive<any>) {
  return (args: readonly Value[], dims: readonly (number | null)[], params: any, size: number): [Value[], number[]] => {
    const d0 = dims.find((d) => d !== null)!;
    if (dims.every((d) => d === d0)) return [[bind1(prim, args, params)], [d0]];
    return [[bind1(prim, args.map((a, i) => moveTo0(a, dims[i]!, size)), params)], [0]];
  };
}

// ---------------------------------------------------------------------------------------------------
// Unary

type UnaryJvp = ((x: Value, y: Value, t: Value) => Value) | null;

function unaryPrim(name: string, op: UnaryOp, cls: DTypeClass, jvp: UnaryJvp, outBool = false): OpsPrimitive<{}> {
  const p: OpsPrimitive<{}> = definePrimitive<{}>({
    name,
    abstractEval: ([x]) => {
      checkDtypeClass(name, x!.dtype, cls);
      return [new ShapedArray(x!.shape, outBool ? "bool" : x!.dtype, outBool ? false : x!.weakType)];
    },
    jvp: ([x], [t], params) => {
      const y = bind1(p, [x!], params);
      return [[y], [jvp && t !== null ? jvp(x!, y, t!) : null]];
    },
    transpose: name === "neg" ? ([ct]) => [ct === null ? null : neg(ct!)] : nonlinear,
    vmap: (args, dims, params, size) => elementwiseBatch(p)(args, dims, params, size),
    lower: (b, [x], _p, _ai, [out]) => [b.unary(op, x!, out!)],
  });
  return p;
}

const c = fullLike;
const SQRT_PI_OVER_2 = Math.sqrt(Math.PI) / 2;
const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);

export const negP = unaryPrim("neg", "neg", "number", (_x, _y, t) => neg(t));
export const expP = unaryPrim("exp", "exp", "float", (_x, y, t) => mul(t, y));
export const logP = unaryPrim("log", "log", "float", (x, _y, t) => div(t, x));
export const log1pP = unaryPrim("log1p", "log1p", "float", (x, _y, t) => div(t, add(c(x, 1), x)));
export const expm1P = unaryPrim("expm1", "expm1", "float", (_x, y, t) => mul(t, add(y, c(y, 1))));
export const sqrtP = unaryPrim("sqrt", "sqrt", "float", (_x, y, t) => div(t, mul(c(y, 2), y)));
export const rsqrtP = unaryPrim("rsqrt", "rsqrt", "float", (x, y, t) => mul(t, mul(c(y, -0.5), div(y, x))));
export const sinP = unaryPrim("sin", "sin", "float", (x, _y, t) => mul(t, cos(x)));
export const cosP = unaryPrim("cos", "cos", "float", (x, _y, t) => neg(mul(t, sin(x))));
export const tanP = unaryPrim("tan", "tan", "float", (_x, y, t) => mul(t, add(c(y, 1), mul(y, y))));
export const tanhP = unaryPrim("tanh", "tanh", "float", (_x, y, t) => mul(t, sub(c(y, 1), mul(y, y))));
export const asinP = unaryPrim("asin", "asin", "float", (x, _y, t) => mul(t, rsqrt(sub(c(x, 1), mul(x, x)))));
export const acosP = unaryPrim("acos", "acos", "float", (x, _y, t) => neg(mul(t, rsqrt(sub(c(x, 1), mul(x, x))))));
export const atanP = unaryPrim("atan", "atan", "float", (x, _y, t) => div(t, add(c(x, 1), mul(x, x))));
export const sinhP = unaryPrim("sinh", "sinh", "float", (x, _y, t) => mul(t, cosh(x)));
export const coshP = unaryPrim("cosh", "cosh", "float", (x, _y, t) => mul(t, sinh(x)));
export const asinhP = unaryPrim("asinh", "asinh", "float", (x, _y, t) => mul(t, rsqrt(add(mul(x, x), c(x, 1)))));
export const acoshP = unaryPrim("acosh", "acosh", "float", (x, _y, t) =>
  div(t, mul(sqrt(sub(x, c(x, 1))), sqrt(add(x, c(x, 1))))),
);
export const atanhP = unaryPrim("atanh", "atanh", "float", (x, _y, t) => div(t, sub(c(x, 1), mul(x, x))));
// d|x| = sign(x)·ẋ, so the derivative at 0 is 0 (the subgradient PyTorch also picks).
export const absP = unaryPrim("abs", "abs", "number", (x, _y, t) => mul(t, sign(x)));
export const signP = unaryPrim("sign", "sign", "number", null);
export const floorP = unaryPrim("floor", "floor", "float", null);
export const ceilP = unaryPrim("ceil", "ceil", "float", null);
export const roundP = unaryPrim("round", "round", "float", null);
export const erfP = unaryPrim("erf", "erf", "float", (x, _y, t) => mul(t, mul(c(x, TWO_OVER_SQRT_PI), exp(neg(mul(x, x))))));
export const erfInvP = unaryPrim("erf_inv", "erf_inv", "float", (_x, y, t) => mul(t, mul(c(y, SQRT_PI_OVER_2), exp(mul(y, y)))));
export const logisticP = unaryPrim("logistic", "logistic", "float", (_x, y, t) => mul(t, mul(y, sub(c(y, 1), y))));
export const isFiniteP = unaryPrim("is_finite", "is_finite", "float", null, true);
export const notP = unaryPrim("not", "not", "intOrBool", null);

const u = (p: OpsPrimitive<{}>) => (x: Value): Value => bind1(p, [x], {});
export const neg = u(negP);
export const exp = u(expP);
export const log = u(logP);
export const log1p = u(log1pP);
export const expm1 = u(expm1P);
export const sqrt = u(sqrtP);
export const rsqrt = u(rsqrtP);
export const sin = u(sinP);
export const cos = u(cosP);
export const tan = u(tanP);
export const tanh = u(tanhP);
export const asin = u(asinP);
export const acos = u(acosP);
export const atan = u(atanP);
export const sinh = u(sinhP);
export const cosh = u(coshP);
export const asinh = u(asinhP);
export const acosh = u(acoshP);
export const atanh = u(atanhP);
export const abs = u(absP);
export const sign = u(signP);
export const floor = u(floorP);
export const ceil = u(ceilP);
export const round = u(roundP);
export const erf = u(erfP);
export const erfInv = u(erfInvP);
export const logistic = u(logisticP);
export const isFinite = u(isFiniteP);
export const not = u(notP);

// ---------------------------------------------------------------------------------------------------
// Binary

type BinaryJvp = ((a: Value, b: Value, ta: MaybeZero, tb: MaybeZero, out: Value) => MaybeZero) | null;
type BinaryTranspose = (ct: Value, a: Value | UndefinedPrimal, b: Value | UndefinedPrimal) => [MaybeZero, MaybeZero];

function binaryPrim(name: string, op: BinaryOp, cls: DTypeClass, jvp: BinaryJvp, transpose?: BinaryTranspose): OpsPrimitive<{}> {
  const isCmp = COMPARISON_OPS.has(op);
  const p: OpsPrimitive<{}> = definePrimitive<{}>({
    name,
    abstractEval: (avals) => {
      const { shape, dtype, weak } = sameShapeDtype(name, avals);
      checkDtypeClass(name, dtype, cls);
      return [new ShapedArray(shape, isCmp ? "bool" : dtype, isCmp ? false : weak)];
    },
    jvp: ([a, b], [ta, tb], params) => {
      const out = bind1(p, [a!, b!], params);
      return [[out], [jvp ? jvp(a!, b!, ta ?? null, tb ?? null, out) : null]];
    },
    transpose: transpose ? ([ct], [a, b]) => (ct === null ? [null, null] : transpose(ct!, a!, b!)) : nonlinear,
    vmap: (args, dims, params, size) => elementwiseBatch(p)(args, dims, params, size),
    lower: (b, [x, y], _p, _ai, [out]) => [b.binary(op, x!, y!, out!)],
  });
  return p;
}

/** t·f where t may be a symbolic zero. */
const scaleT = (t: MaybeZero, f: () => Value): MaybeZero => (t === null ? null : mul(t, f()));

/** JAX's balanced equality: 1 where x alone attains the extreme z, 0.5 on ties, 0 elsewhere. */
function balancedEq(x: Value, z: Value, y: Value): Value {
  return select(eq(x, z), select(eq(y, z), c(x, 0.5), c(x, 1)), c(x, 0));
}

function truncDiv(a: Value, b: Value): Value {
  const q = div(a, b);
  return select(lt(q, c(q, 0)), ceil(q), floor(q));
}

export const addP = binaryPrim("add", "add", "any", (_a, _b, ta, tb) => addTangents(ta, tb), (ct) => [ct, ct]);
export const subP = binaryPrim(
  "sub",
  "sub",
  "number",
  (_a, _b, ta, tb) => (tb === null ? ta : ta === null ? neg(tb) : sub(ta, tb)),
  (ct) => [ct, neg(ct)],
);
export const mulP = binaryPrim(
  "mul",
  "mul",
  "any",
  (a, b, ta, tb) => addTangents(scaleT(ta, () => b), scaleT(tb, () => a)),
  (ct, a, b) => {
    if (a instanceof UndefinedPrimal && b instanceof UndefinedPrimal) throw nonlinearMul();
    return a instanceof UndefinedPrimal ? [mul(ct, b as Value), null] : [null, mul(a as Value, ct)];
  },
);
export const divP = binaryPrim(
  "div",
  "div",
  "number",
  (_a, b, ta, tb, out) => addTangents(ta === null ? null : div(ta, b), tb === null ? null : neg(mul(tb, div(out, b)))),
  (ct, a, b) => {
    if (b instanceof UndefinedPrimal) throw nonlinearMul("div", "the divisor");
    void a;
    return [div(ct, b), null];
  },
);
export const remP = binaryPrim("rem", "rem", "number", (a, b, ta, tb) =>
  addTangents(ta, tb === null ? null : neg(mul(tb, truncDiv(a, b)))),
);
export const powP = binaryPrim("pow", "pow", "number", (a, b, ta, tb, out) => {
  if (!isFloat(a.aval.dtype)) return null;
  // d/da a^b = b·a^(b-1) (0 where b == 0); d/db a^b = log(a)·a^b with log(0) read as 0, as JAX does.
  const da =
    ta === null ? null : mul(ta, select(eq(b, c(b, 0)), c(b, 0), mul(b, pow(a, sub(b, c(b, 1))))));
  const db = tb === null ? null : mul(tb, mul(log(select(eq(a, c(a, 0)), c(a, 1), a)), out));
  return addTangents(da, db);
});
export const maxP = binaryPrim("max", "max", "any", (a, b, ta, tb, out) =>
  addTangents(scaleT(ta, () => balancedEq(a, out, b)), scaleT(tb, () => balancedEq(b, out, a))),
);
export const minP = binaryPrim("min", "min", "any", (a, b, ta, tb, out) =>
  addTangents(scaleT(ta, () => balancedEq(a, out, b)), scaleT(tb, () => balancedEq(b, out, a))),
);
// atan2(a, b) is the angle of the point (x=b, y=a).
export const atan2P = binaryPrim("atan2", "atan2", "float", (a, b, ta, tb) => {
  const r2 = add(mul(a, a), mul(b, b));
  return addTangents(scaleT(ta, () => div(b, r2)), scaleT(tb, () => neg(div(a, r2))));
});
export const andP = binaryPrim("and", "and", "intOrBool", null);
export const orP = binaryPrim("or", "or", "intOrBool", null);
export const xorP = binaryPrim("xor", "xor", "intOrBool", null);
export const shiftLeftP = binaryPrim("shift_left", "shl", "int", null);
export const shiftRightP = binaryPrim("shift_right", "shr", "int", null);
export const eqP = binaryPrim("eq", "eq", "any", null);
export const neP = binaryPrim("ne", "ne", "any", null);
export const ltP = binaryPrim("lt", "lt", "any", null);
export const leP = binaryPrim("le", "le", "any", null);
export const gtP = binaryPrim("gt", "gt", "any", null);
export const geP = binaryPrim("ge", "ge", "any", null);

function nonlinearMul(name = "mul", which = "both operands"): Error {
  return new DTypeError(`grad: ${name} is not linear in ${which}; a tangent reached it there (webgrad bug)`);
}

const bin = (p: OpsPrimitive<{}>) => (x: Value, y: Value): Value => bind1(p, [x, y], {});
export const add = bin(addP);
export const sub = bin(subP);
export const mul = bin(mulP);
export const div = bin(divP);
export const rem = bin(remP);
export const pow = bin(powP);
export const max = bin(maxP);
export const min = bin(minP);
export const atan2 = bin(atan2P);
export const and = bin(andP);
export const or = bin(orP);
export const xor = bin(xorP);
export const shiftLeft = bin(shiftLeftP);
export const shiftRight = bin(shiftRightP);
export const eq = bin(eqP);
export const ne = bin(neP);
export const lt = bin(ltP);
export const le = bin(leP);
export const gt = bin(gtP);
export const ge = bin(geP);

// ---------------------------------------------------------------------------------------------------
// integer_pow: x^y for a static integer y, by repeated squaring (exact, and differentiable at x = 0
// to any order, unlike pow's x^(y-1)·log(x) form), as JAX's lax.integer_pow.

interface IntegerPowParams {
  readonly y: number;
}

export const integerPowP: OpsPrimitive<IntegerPowParams> = definePrimitive<IntegerPowParams>({
  name: "integer_pow",
  abstractEval: ([x], p) => {
    checkDtypeClass("integer_pow", x!.dtype, "number");
    if (!Number.isInteger(p.y)) throw new DTypeError(`integer_pow: exponent must be an integer, got ${p.y}`);
    if (p.y < 0 && !isFloat(x!.dtype)) throw new DTypeError(`integer_pow: negative exponent ${p.y} needs a float base, got ${x!.dtype}`);
    return [x!];
  },
  jvp: ([x], [t], p) => {
    const out = bind1(integerPowP, [x!], p);
    if (t === null || p.y === 0) return [[out], [null]];
    // d x^y = y·x^(y-1)·ẋ
    const d = p.y === 1 ? t! : mul(t!, mul(c(x!, p.y), bind1(integerPowP, [x!], { y: p.y - 1 })));
    return [[out], [d]];
  },
  transpose: nonlinear,
  vmap: ([x], [d], p) => [[bind1(integerPowP, [x!], p)], [d!]],
  lower: (b, [x], p, [a]) => [lowerIntegerPow(b, x!, p.y, { shape: a!.shape, dtype: a!.dtype })],
  printParams: (p) => `y=${p.y}`,
});

function lowerIntegerPow<H>(b: KernelBuilder<H>, x: H, y: number, out: OutType): H {
  let n = Math.abs(y);
  let acc: H | null = null;
  let base = x;
  while (n > 0) {
    if (n & 1) acc = acc === null ? base : b.binary("mul", acc, base, out);
    n >>= 1;
    if (n > 0) base = b.binary("mul", base, base, out);
  }
  const pos = acc ?? b.full(out, 1);
  if (y < 0) return b.binary("div", b.full(out, 1), pos, out);
  return pos === x ? b.reshape(x, out.shape) : pos; // y = 1: a new handle, never the input itself
}

/** x^y for a static integer y. */
export function integerPow(x: Value, y: number): Value {
  return bind1(integerPowP, [x], { y });
}

// ---------------------------------------------------------------------------------------------------
// select_n: JAX's operand order, (pred, onFalse, onTrue)

export const selectNP: OpsPrimitive<{}> = definePrimitive<{}>({
  name: "select_n",
  abstractEval: ([pred, f, t]) => {
    const { shape, dtype, weak } = sameShapeDtype("select_n", [f!, t!]);
    sameShapeDtype("select_n", [new ShapedArray(pred!.shape, dtype), f!]);
    checkDtypeClass("select_n predicate", pred!.dtype, "bool");
    return [new ShapedArray(shape, dtype, weak)];
  },
  jvp: ([pred, f, t], [, tf, tt]) => {
    const out = bind1(selectNP, [pred!, f!, t!], {});
    if ((tf ?? null) === null && (tt ?? null) === null) return [[out], [null]];
    const z = () => zerosLike(out);
    return [[out], [bind1(selectNP, [pred!, tf ?? z(), tt ?? z()], {})]];
  },
  transpose: ([ct], [pred, f, t]) => {
    if (ct === null) return [null, null, null];
    if (pred instanceof UndefinedPrimal) throw nonlinearMul("select_n", "the predicate");
    const z = zerosLike(ct!);
    return [
      null,
      f instanceof UndefinedPrimal ? bind1(selectNP, [pred!, ct!, z], {}) : null,
      t instanceof UndefinedPrimal ? bind1(selectNP, [pred!, z, ct!], {}) : null,
    ];
  },
  vmap: (args, dims, params, size) => elementwiseBatch(selectNP)(args, dims, params, size),
  lower: (b, [pred, f, t]) => [b.select(pred!, t!, f!)],
});

/** `pred ? onTrue : onFalse`, elementwise (operands of one shape). */
export function select(pred: Value, onTrue: Value, onFalse: Value): Value {
  return bind1(selectNP, [pred, onFalse, onTrue], {});
}

// ---------------------------------------------------------------------------------------------------
// Casts

interface ConvertParams {
  readonly newDtype: DType;
  readonly weakType: boolean;
}

export const convertElementTypeP: OpsPrimitive<ConvertParams> = definePrimitive<ConvertParams>({
  name: "convert_element_type",
  abstractEval: ([x], p) => [new ShapedArray(x!.shape, p.newDtype, p.weakType)],
  jvp: ([x], [t], p) => {
    const out = bind1(convertElementTypeP, [x!], p);
    const floatIn = isFloat(x!.aval.dtype);
    const floatOut = isFloat(p.newDtype);
    return [[out], [floatIn && floatOut && t ? bind1(convertElementTypeP, [t], { newDtype: p.newDtype, weakType: false }) : null]];
  },
  transpose: ([ct], [x]) => {
    if (ct === null) return [null];
    const a = (x as UndefinedPrimal).aval;
    return [bind1(convertElementTypeP, [ct!], { newDtype: a.dtype, weakType: false })];
  },
  vmap: ([x], [d], p) => [[bind1(convertElementTypeP, [x!], p)], [d!]],
  lower: (b, [x], p, [a]) => [a!.dtype === p.newDtype ? b.reshape(x!, a!.shape) : b.cast(x!, p.newDtype)],
  printParams: (p) => `new_dtype=${p.newDtype} weak_type=${p.weakType ? "True" : "False"}`,
});

/** Converts to `dtype` (float -> int truncates toward zero). */
export function convert(x: Value, dtype: DType, weakType = false): Value {
  checkDType("convert", dtype);
  if (x.aval.dtype === dtype && x.aval.weakType === weakType) return x;
  return bind1(convertElementTypeP, [x], { newDtype: dtype, weakType });
}

export const bitcastConvertTypeP: OpsPrimitive<{ newDtype: DType }> = definePrimitive<{ newDtype: DType }>({
  name: "bitcast_convert_type",
  abstractEval: ([x], p) => {
    const w = (d: DType) => (d === "float64" ? 8 : d === "bool" ? 1 : 4);
    if (w(x!.dtype) !== w(p.newDtype) || x!.dtype === "bool" || p.newDtype === "bool") {
      throw new DTypeError(`bitcast_convert_type: needs dtypes of one width (not bool), got ${x!.dtype} -> ${p.newDtype}`);
    }
    return [new ShapedArray(x!.shape, p.newDtype)];
  },
  jvp: ([x], _t, p) => [[bind1(bitcastConvertTypeP, [x!], p)], [null]],
  transpose: nonlinear,
  vmap: ([x], [d], p) => [[bind1(bitcastConvertTypeP, [x!], p)], [d!]],
  lower: (b, [x], p) => [b.bitcast(x!, p.newDtype)],
});

export function bitcastConvertType(x: Value, dtype: DType): Value {
  return bind1(bitcastConvertTypeP, [x], { newDtype: dtype });
}

// ---------------------------------------------------------------------------------------------------
// stop_gradient

export const stopGradientP: OpsPrimitive<{}> = definePrimitive<{}>({
  name: "stop_gradient",
  abstractEval: ([x]) => [x!],
  jvp: ([x]) => [[bind1(stopGradientP, [x!], {})], [null]],
  transpose: nonlinear,
  vmap: ([x], [d]) => [[bind1(stopGradientP, [x!], {})], [d!]],
  lower: (b, [x], _p, [a]) => [b.reshape(x!, a!.shape)],
});

/** Identity whose derivative is zero. */
export function stopGradient(x: Value): Value {
  return bind1(stopGradientP, [x], {});
}

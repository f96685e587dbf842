/**
 * @file Elementwise kernels: unary, binary, select, cast, bitcast. Each op is a "row" function (n
 * elements, strided inputs, contiguous output) driven by `forEachRow`, so contiguous inputs run as one
 * flat loop and views (broadcast, transposed, reversed) need no copies. Read buffer.ts first.
 *
 * Arithmetic is done in JS doubles and rounded by the store: float32 results are float64 results
 * rounded once, int32 / uint32 results wrap mod 2^32 because typed-array stores convert with ToInt32 /
 * ToUint32 (products use Math.imul, which is exact mod 2^32).
 *
 * Integer corner cases, chosen to be total and deterministic: x / 0 = 0 and x % 0 = 0 (XLA gives -1 /
 * x instead); pow with a negative exponent is 0 except for bases ±1; shift amounts are read as unsigned
 * and amounts >= 32 give 0 (shl, logical shr) or the sign fill (arithmetic shr of int32).
 * On bool, add = or and mul = and (as numpy); sub, div, rem, pow, atan2 and shifts are DTypeErrors.
 */
import { isFloat, isInt, shapeStr, type DType } from "../../../autodiff/aval.js";
import { DTypeError, ShapeError } from "../../../autodiff/errors.js";
import { COMPARISON_OPS, type AnyTypedArray, type BinaryOp, type OutType, type UnaryOp } from "../kernel.js";
import {
  allocateUninit,
  contiguousData,
  contiguousStrides,
  CpuBuffer,
  expectShape,
  forEachRow,
} from "./buffer.js";
import { erf, erfInv, logistic, powFloat, powInt, roundHalfEven, signFloat } from "./math.js";

type Arr = AnyTypedArray;

/** One output row from one strided input row. */
type Row1 = (n: number, o: Arr, io: number, a: Arr, ia: number, sa: number) => void;
/** One output row from two strided input rows. */
type Row2 = (n: number, o: Arr, io: number, a: Arr, ia: number, sa: number, b: Arr, ib: number, sb: number) => void;

/** Runs a unary row kernel over x into a fresh buffer of `dtype`. */
function map1(x: CpuBuffer, dtype: DType, row: Row1): CpuBuffer {
  const o = allocateUninit(dtype, x.size);
  const a = x.data;
  if (x.contiguous) {
    row(x.size, o, 0, a, x.offset, 1);
  } else {
    forEachRow(x.shape, [contiguousStrides(x.shape), x.strides], [0, x.offset], (n, offs, steps) =>
      row(n, o, offs[0]!, a, offs[1]!, steps[1]!),
    );
  }
  return new CpuBuffer(o, dtype, x.shape);
}

/** Runs a binary row kernel over x, y (same shape) into a fresh buffer of `dtype`. */
function map2(x: CpuBuffer, y: CpuBuffer, dtype: DType, row: Row2): CpuBuffer {
  const o = allocateUninit(dtype, x.size);
  const a = x.data;
  const b = y.data;
  if (x.contiguous && y.contiguous) {
    row(x.size, o, 0, a, x.offset, 1, b, y.offset, 1);
  } else {
    forEachRow(
      x.shape,
      [contiguousStrides(x.shape), x.strides, y.strides],
      [0, x.offset, y.offset],
      (n, offs, steps) => row(n, o, offs[0]!, a, offs[1]!, steps[1]!, b, offs[2]!, steps[2]!),
    );
  }
  return new CpuBuffer(o, dtype, x.shape);
}

/** A row kernel from a scalar function (one indirect call per element; for rarely used int ops). */
function rowOf2(f: (x: number, y: number) => number): Row2 {
  return (n, o, io, a, ia, sa, b, ib, sb) => {
    for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = f(a[ia]!, b[ib]!);
  };
}

// One loop per op rather than one loop calling a function argument: a shared loop's call site goes
// megamorphic once several ops have run through it, which halves the throughput of cheap ops.
const copyRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = a[ia]!;
};
const negRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = -a[ia]!;
};
const absRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.abs(a[ia]!);
};
const expRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.exp(a[ia]!);
};
const logRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.log(a[ia]!);
};
const log1pRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.log1p(a[ia]!);
};
const expm1Row: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.expm1(a[ia]!);
};
const sqrtRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.sqrt(a[ia]!);
};
const rsqrtRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = 1 / Math.sqrt(a[ia]!);
};
const sinRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.sin(a[ia]!);
};
const cosRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.cos(a[ia]!);
};
const tanRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.tan(a[ia]!);
};
const tanhRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.tanh(a[ia]!);
};
const asinRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.asin(a[ia]!);
};
const acosRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.acos(a[ia]!);
};
const atanRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.atan(a[ia]!);
};
const sinhRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.sinh(a[ia]!);
};
const coshRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.cosh(a[ia]!);
};
const asinhRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.asinh(a[ia]!);
};
const acoshRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.acosh(a[ia]!);
};
const atanhRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.atanh(a[ia]!);
};
const signRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = signFloat(a[ia]!);
};
const floorRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.floor(a[ia]!);
};
const ceilRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.ceil(a[ia]!);
};
const roundRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = roundHalfEven(a[ia]!);
};
const erfRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = erf(a[ia]!);
};
const erfInvRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = erfInv(a[ia]!);
};
const logisticRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = logistic(a[ia]!);
};
const isFiniteRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = +Number.isFinite(a[ia]!);
};
const onesRow: Row1 = (n, o, io) => {
  o.fill(1, io, io + n);
};
const intSignRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = Math.sign(a[ia]!);
};
const bitNotRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = ~a[ia]!;
};
const boolNotRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = 1 - a[ia]!;
};

function unsupported(op: string, dtype: DType): never {
  throw new DTypeError(`${op}: a dtype the op is defined on, got ${dtype}`);
}

/** The row kernel for a float unary op. */
function floatUnaryRow(op: UnaryOp): Row1 {
  switch (op) {
    case "neg":
      return negRow;
    case "abs":
      return absRow;
    case "exp":
      return expRow;
    case "log":
      return logRow;
    case "log1p":
      return log1pRow;
    case "expm1":
      return expm1Row;
    case "sqrt":
      return sqrtRow;
    case "rsqrt":
      return rsqrtRow;
    case "sin":
      return sinRow;
    case "cos":
      return cosRow;
    case "tan":
      return tanRow;
    case "tanh":
      return tanhRow;
    case "asin":
      return asinRow;
    case "acos":
      return acosRow;
    case "atan":
      return atanRow;
    case "sinh":
      return sinhRow;
    case "cosh":
      return coshRow;
    case "asinh":
      return asinhRow;
    case "acosh":
      return acoshRow;
    case "atanh":
      return atanhRow;
    case "sign":
      return signRow;
    case "floor":
      return floorRow;
    case "ceil":
      return ceilRow;
    case "round":
      return roundRow;
    case "erf":
      return erfRow;
    case "erf_inv":
      return erfInvRow;
    case "logistic":
      return logisticRow;
    case "is_finite":
      return isFiniteRow;
    case "not":
      return unsupported(op, "float32");
    default:
      throw new DTypeError(`unary: a known op, got ${String(op satisfies never)}`);
  }
}

/** Elementwise unary op; `out` gives the result dtype (bool for is_finite, else x's dtype). */
export function unary(op: UnaryOp, x: CpuBuffer, out: OutType): CpuBuffer {
  expectShape(op, "an output shape equal to the operand's", x.shape, out.shape);
  const outDType: DType = op === "is_finite" ? "bool" : x.dtype;
  if (out.dtype !== outDType) {
    throw new DTypeError(`${op}: output dtype ${outDType} for a ${x.dtype} operand, got ${out.dtype}`);
  }
  const dt = x.dtype;
  if (isFloat(dt)) return map1(x, outDType, floatUnaryRow(op));
  if (op === "is_finite") return map1(x, "bool", onesRow);
  if (dt === "bool") {
    if (op === "not") return map1(x, dt, boolNotRow);
    return unsupported(op, dt);
  }
  // int32 / uint32: the store wraps (-(-2^31) and |-2^31| are -2^31, as in C).
  switch (op) {
    case "neg":
      return map1(x, dt, negRow);
    case "abs":
      return map1(x, dt, dt === "uint32" ? copyRow : absRow);
    case "sign":
      return map1(x, dt, intSignRow);
    case "floor":
    case "ceil":
    case "round":
      return map1(x, dt, copyRow);
    case "not":
      return map1(x, dt, bitNotRow);
    default:
      return unsupported(op, dt);
  }
}

// ---- binary ----

const addRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = a[ia]! + b[ib]!;
};
const subRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = a[ia]! - b[ib]!;
};
const mulRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = a[ia]! * b[ib]!;
};
const imulRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = Math.imul(a[ia]!, b[ib]!);
};
const divRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = a[ia]! / b[ib]!;
};
const maxRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = Math.max(a[ia]!, b[ib]!);
};
const minRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = Math.min(a[ia]!, b[ib]!);
};
const andRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = a[ia]! & b[ib]!;
};
const orRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = a[ia]! | b[ib]!;
};
const xorRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = a[ia]! ^ b[ib]!;
};
const eqRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = +(a[ia]! === b[ib]!);
};
const neRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = +(a[ia]! !== b[ib]!);
};
const ltRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = +(a[ia]! < b[ib]!);
};
const leRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = +(a[ia]! <= b[ib]!);
};
const gtRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = +(a[ia]! > b[ib]!);
};
const geRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = +(a[ia]! >= b[ib]!);
};
const remRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = a[ia]! % b[ib]!;
};
const powRow: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = powFloat(a[ia]!, b[ib]!);
};
const atan2Row: Row2 = (n, o, io, a, ia, sa, b, ib, sb) => {
  for (let i = 0; i < n; i++, ia += sa, ib += sb) o[io + i] = Math.atan2(a[ia]!, b[ib]!);
};

/** Truncating int32 division; x / 0 = 0. Exact: |a/b| < 2^31 leaves no rounding across an integer. */
const divInt32 = (a: number, b: number): number => (b === 0 ? 0 : (a / b) | 0);
const divUint32 = (a: number, b: number): number => (b === 0 ? 0 : Math.trunc(a / b));
const remInt = (a: number, b: number): number => (b === 0 ? 0 : a % b);
const shlInt = (a: number, b: number): number => (b >>> 0 >= 32 ? 0 : a << b);
const shrInt32 = (a: number, b: number): number => (b >>> 0 >= 32 ? a >> 31 : a >> b);
const shrUint32 = (a: number, b: number): number => (b >>> 0 >= 32 ? 0 : a >>> b);

/** The row kernel for `op` on operands of dtype `dt`. */
function binaryRow(op: BinaryOp, dt: DType): Row2 {
  const float = isFloat(dt);
  const bool = dt === "bool";
  switch (op) {
    case "add":
      return bool ? orRow : addRow;
    case "sub":
      return bool ? unsupported(op, dt) : subRow;
    case "mul":
      return float ? mulRow : bool ? andRow : imulRow;
    case "div":
      return float ? divRow : dt === "int32" ? rowOf2(divInt32) : bool ? unsupported(op, dt) : rowOf2(divUint32);
    case "rem":
      return float ? remRow : bool ? unsupported(op, dt) : rowOf2(remInt);
    case "pow":
      return float ? powRow : bool ? unsupported(op, dt) : rowOf2(powInt);
    case "max":
      return maxRow;
    case "min":
      return minRow;
    case "atan2":
      return float ? atan2Row : unsupported(op, dt);
    case "and":
      return float ? unsupported(op, dt) : andRow;
    case "or":
      return float ? unsupported(op, dt) : orRow;
    case "xor":
      return float ? unsupported(op, dt) : xorRow;
    case "shl":
      return isInt(dt) ? rowOf2(shlInt) : unsupported(op, dt);
    case "shr":
      return dt === "int32" ? rowOf2(shrInt32) : dt === "uint32" ? rowOf2(shrUint32) : unsupported(op, dt);
    case "eq":
      return eqRow;
    case "ne":
      return neRow;
    case "lt":
      return ltRow;
    case "le":
      return leRow;
    case "gt":
      return gtRow;
    case "ge":
      return geRow;
    default:
      throw new DTypeError(`binary: a known op, got ${String(op satisfies never)}`);
  }
}

/** Elementwise binary op on operands of identical shape and dtype. */
export function binary(op: BinaryOp, x: CpuBuffer, y: CpuBuffer, out: OutType): CpuBuffer {
  if (x.dtype !== y.dtype) {
    throw new DTypeError(`${op}: operands of one dtype, got ${x.dtype} and ${y.dtype}`);
  }
  if (x.shape.length !== y.shape.length || x.shape.some((d, i) => d !== y.shape[i])) {
    throw new ShapeError(
      `${op}: operands of identical shape (broadcast explicitly first), ` +
        `got ${shapeStr(x.shape)} and ${shapeStr(y.shape)}`,
    );
  }
  expectShape(op, "an output shape equal to the operands'", x.shape, out.shape);
  const outDType: DType = COMPARISON_OPS.has(op) ? "bool" : x.dtype;
  if (out.dtype !== outDType) {
    throw new DTypeError(`${op}: output dtype ${outDType} for ${x.dtype} operands, got ${out.dtype}`);
  }
  return map2(x, y, outDType, binaryRow(op, x.dtype));
}

/** Elementwise `pred ? onTrue : onFalse`. */
export function select(pred: CpuBuffer, onTrue: CpuBuffer, onFalse: CpuBuffer): CpuBuffer {
  if (pred.dtype !== "bool") throw new DTypeError(`select: a bool predicate, got ${pred.dtype}`);
  if (onTrue.dtype !== onFalse.dtype) {
    throw new DTypeError(`select: branches of one dtype, got ${onTrue.dtype} and ${onFalse.dtype}`);
  }
  expectShape("select", "a true branch of the predicate's shape", pred.shape, onTrue.shape);
  expectShape("select", "a false branch of the predicate's shape", pred.shape, onFalse.shape);
  const o = allocateUninit(onTrue.dtype, pred.size);
  const p = pred.data;
  const t = onTrue.data;
  const f = onFalse.data;
  forEachRow(
    pred.shape,
    [contiguousStrides(pred.shape), pred.strides, onTrue.strides, onFalse.strides],
    [0, pred.offset, onTrue.offset, onFalse.offset],
    (n, offs, steps) => {
      let io = offs[0]!;
      let ip = offs[1]!;
      let it = offs[2]!;
      let jf = offs[3]!;
      const sp = steps[1]!;
      const st = steps[2]!;
      const sf = steps[3]!;
      for (let i = 0; i < n; i++, ip += sp, it += st, jf += sf) o[io++] = p[ip] !== 0 ? t[it]! : f[jf]!;
    },
  );
  return new CpuBuffer(o, onTrue.dtype, pred.shape);
}

// ---- cast / bitcast ----

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;
const UINT32_MAX = 4294967295;

/** float -> int32: truncate toward zero, saturate, NaN -> 0. */
const floatToInt32Row: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) {
    const v = a[ia]!;
    o[io + i] = v !== v ? 0 : v <= INT32_MIN ? INT32_MIN : v >= INT32_MAX ? INT32_MAX : Math.trunc(v);
  }
};
/** float -> uint32: truncate toward zero, saturate (negatives -> 0), NaN -> 0. */
const floatToUint32Row: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) {
    const v = a[ia]!;
    o[io + i] = v !== v || v <= 0 ? 0 : v >= UINT32_MAX ? UINT32_MAX : Math.trunc(v);
  }
};
const toBoolRow: Row1 = (n, o, io, a, ia, sa) => {
  for (let i = 0; i < n; i++, ia += sa) o[io + i] = +(a[ia] !== 0);
};

/**
 * Value conversion. float -> int truncates toward zero and saturates (NaN -> 0, negatives -> 0 for
 * uint32); to bool is `!= 0` (NaN -> true); int32 <-> uint32 wraps (C static_cast); bool -> 0 / 1.
 */
export function cast(x: CpuBuffer, dtype: DType): CpuBuffer {
  const from = x.dtype;
  let row: Row1;
  if (dtype === "bool") row = toBoolRow;
  else if (isFloat(from) && dtype === "int32") row = floatToInt32Row;
  else if (isFloat(from) && dtype === "uint32") row = floatToUint32Row;
  else row = copyRow; // to float (rounded by the store), int <-> int (wraps), bool -> number
  return map1(x, dtype, row);
}

/** Reinterprets the bits of same-width dtypes (float32 / int32 / uint32); always a fresh buffer. */
export function bitcast(x: CpuBuffer, dtype: DType): CpuBuffer {
  const four = (d: DType): boolean => d === "float32" || d === "int32" || d === "uint32";
  if (x.dtype !== dtype && !(four(x.dtype) && four(dtype))) {
    throw new DTypeError(`bitcast: dtypes of one width (float32, int32, uint32), got ${x.dtype} to ${dtype}`);
  }
  // Copy through an integer view of the same storage so NaN payloads survive strided copies.
  const data0 = x.data;
  const asInt =
    data0 instanceof Float32Array || data0 instanceof Uint32Array
      ? new Int32Array(data0.buffer, data0.byteOffset, data0.length)
      : data0;
  const intType = asInt === data0 ? x.dtype : "int32";
  const src = contiguousData(new CpuBuffer(asInt, intType, x.shape, x.strides, x.offset, false));
  const bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength).slice();
  let data: AnyTypedArray;
  switch (dtype) {
    case "float32":
      data = new Float32Array(bytes.buffer);
      break;
    case "int32":
      data = new Int32Array(bytes.buffer);
      break;
    case "uint32":
      data = new Uint32Array(bytes.buffer);
      break;
    case "float64":
      data = new Float64Array(bytes.buffer);
      break;
    case "bool":
      data = bytes;
      break;
    default:
      throw new DTypeError(`bitcast: a known dtype, got ${String(dtype satisfies never)}`);
  }
  return new CpuBuffer(data, dtype, x.shape);
}

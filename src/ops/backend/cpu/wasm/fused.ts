/**
 * @file The CPU target of fused elementwise kernels: `compileScalarProgram(program)` turns a
 * `ScalarProgram` (src/ops/compile/scalar-program.ts: an SSA body evaluated at every index of an
 * iteration shape) into a function over strided CPU inputs that returns contiguous outputs.
 *
 * Two code generators, one semantics (that of the eager kernels in ../elementwise.ts and ../math.ts):
 * - JavaScript (`new Function`): every program, every dtype, bit-identical to running the ops one by
 *   one on the CPU backend (each value is rounded to its dtype after every node, as the eager stores
 *   do). It walks any layout through `forEachRow` (so broadcast, transposed and reversed inputs need
 *   no copies) and serves small sizes, float64 programs and ops without a SIMD form.
 * - WebAssembly SIMD: programs whose values are all float32 / int32 / uint32 / bool and whose ops all
 *   have a lane form (4 lanes), and float64 programs of IEEE-exact ops (add, sub, mul, div, min, max,
 *   neg, abs, sqrt, floor, ceil, round, comparisons feeding selects) on f64x2 lanes, in float64. Inputs are gathered chunk by chunk into the runtime's memory (a
 *   memcpy per row for contiguous rows, a fill for broadcast rows, a scalar input written once), the
 *   kernel runs one pass over the chunk with no intermediate arrays, and outputs are copied out.
 *   Arithmetic, comparisons, casts, select and rsqrt (through float64) give the same bits as the
 *   eager kernels; exp, log, tanh, logistic, sin, cos, erf, expm1 and log1p are within a few float32 ulps
 *   (./simd-math.ts).
 *
 * Compiled kernels are cached by `scalarProgramKey` (shape-independent): one kernel serves every shape
 * and layout. Inputs may be index views (`data: null`, the compiler's iota leaves) and outputs may go
 * to given storage (a static buffer plan), see `StridedView` and `FusedKernel`. Read
 * `compileScalarProgram`, then `jsRowSource` and `emitSimdKernel`.
 *
 * Known difference: the JavaScript path carries float32 values as doubles, so a signalling-NaN
 * payload produced by a bitcast to float32 comes back quieted by a later bitcast to int (the eager
 * kernels read such a value straight from storage); the Wasm path keeps the bits.
 */
import { isFloat, isInt, shapeSize, shapeStr, type DType, type Shape } from "../../../../autodiff/aval.js";
import { DTypeError, ShapeError } from "../../../../autodiff/errors.js";
import { scalarProgramKey, type ScalarNode, type ScalarProgram } from "../../../compile/scalar-program.js";
import { COMPARISON_OPS, type AnyTypedArray, type BinaryOp, type UnaryOp } from "../../kernel.js";
import { allocateUninit, contiguousStrides, CpuBuffer, dtypeOfArray, forEachRow } from "../buffer.js";
import { erf, erfInv, logistic, powFloat, powInt, roundHalfEven, signFloat } from "../math.js";
import { Code, ModuleBuilder, type Local } from "./emitter.js";
import { cpuWasmOptions } from "./gemm.js";
import { getRuntime, type WasmRuntime } from "./pool.js";
import { residentAddress } from "./storage.js";
import { erfF32, expF32, expm1F32, log1pF32, logF32, logisticF32, tanhF32, trigF32 } from "./simd-math.js";
import { wasmApi, type WasmModule } from "./wasm-api.js";

/**
 * One input of a fused kernel: storage, strides over the iteration shape (0: broadcast), offset. With
 * `data: null` it is an index view: the value at a position is the element offset itself,
 * `offset + Σ index[d]·strides[d]`, converted to the input's dtype (the jit compiler's iota leaves;
 * nothing is materialised).
 */
export interface StridedView {
  readonly data: AnyTypedArray | null;
  readonly strides: readonly number[];
  readonly offset: number;
}

/**
 * A compiled fused kernel: runs the program over `shape` (default: the program's) on `inputs` (one per
 * program input, CpuBuffers qualify) and returns one contiguous CpuBuffer per program output: fresh
 * storage, or (for a compiler's static buffer plan) the typed arrays given in `into`, one per output,
 * of the output's storage type and at least the shape's size; the returned buffers then view them
 * (not owned). An `into` array may be the storage of an input only when that input is contiguous from
 * offset 0 (each element is read before the same position is written; any other aliasing is wrong).
 */
export type FusedKernel = (inputs: readonly StridedView[], shape?: Shape, into?: readonly AnyTypedArray[]) => CpuBuffer[];

/** When the Wasm path runs (tests force either path). */
export interface FusedOptions {
  /** Use the Wasm SIMD kernels where the program allows. */
  wasm: boolean;
  /** Fewer elements than this run on the JavaScript kernel. */
  wasmMinSize: number;
  /** Run the Wasm kernel in place on resident operands (storage.ts) when they all are (else staged). */
  direct: boolean;
  /** In-place kernels over at least this many vectors run on all threads (map jobs of pool.ts). */
  parallelMinVectors: number;
}

export const fusedOptions: FusedOptions = {
  wasm: typeof process === "undefined" || process.env.WEBGRAD_CPU_WASM !== "0",
  wasmMinSize: 1024,
  direct: true,
  parallelMinVectors: 16384,
};

/**
 * Kernel runs per path since start (a statistic; tests check which path ran): `wasm` and `js` count
 * kernel calls, `direct` the Wasm calls that ran in place on resident operands (not staged), and
 * `parallel` those of them that ran on several threads.
 */
export const fusedStats = { wasm: 0, js: 0, direct: 0, parallel: 0, wasmBuildFailures: 0 };

/** Updates `fusedOptions`. */
export function configureFused(options: Partial<FusedOptions>): void {
  Object.assign(fusedOptions, options);
}

// ---------------------------------------------------------------------------------------------------
// Validation (the same dtype rules as the eager kernels, checked once at compile time)

function fail(op: string, dtype: DType): never {
  throw new DTypeError(`${op}: a dtype the op is defined on, got ${dtype}`);
}

const FOUR_BYTES = new Set<DType>(["float32", "int32", "uint32"]);

/** Throws a named error for the first ill-formed node (operands, dtypes). */
function validate(p: ScalarProgram): void {
  const n = p.nodes;
  const dt = (i: number, at: number): DType => {
    if (!Number.isInteger(i) || i < 0 || i >= at) {
      throw new ShapeError(`fused kernel: node operands that index earlier nodes, got ${i} at node ${at}`);
    }
    return n[i]!.dtype;
  };
  n.forEach((x, at) => {
    switch (x.op) {
      case "load": {
        const inp = p.inputs[x.input];
        if (inp === undefined) throw new ShapeError(`fused kernel: a load of an input in [0, ${p.inputs.length}), got ${x.input}`);
        if (inp.dtype !== x.dtype) throw new DTypeError(`fused kernel: load of input ${x.input} as its dtype ${inp.dtype}, got ${x.dtype}`);
        return;
      }
      case "const":
        return;
      case "iota":
        if (!Number.isInteger(x.dim) || x.dim < 0 || x.dim >= p.shape.length) {
          throw new ShapeError(`iota: a dim in [0, ${p.shape.length}), got ${x.dim} for ${shapeStr(p.shape)}`);
        }
        return;
      case "unary": {
        const a = dt(x.x, at);
        const want: DType = x.fn === "is_finite" ? "bool" : a;
        if (x.dtype !== want) throw new DTypeError(`${x.fn}: output dtype ${want} for a ${a} operand, got ${x.dtype}`);
        jsUnary(x.fn, a, "v"); // throws for unsupported dtypes
        return;
      }
      case "binary": {
        const a = dt(x.x, at);
        const b = dt(x.y, at);
        if (a !== b) throw new DTypeError(`${x.fn}: operands of one dtype, got ${a} and ${b}`);
        const want: DType = COMPARISON_OPS.has(x.fn) ? "bool" : a;
        if (x.dtype !== want) throw new DTypeError(`${x.fn}: output dtype ${want} for ${a} operands, got ${x.dtype}`);
        jsBinary(x.fn, a, "a", "b");
        return;
      }
      case "select": {
        if (dt(x.pred, at) !== "bool") throw new DTypeError(`select: a bool predicate, got ${dt(x.pred, at)}`);
        const t = dt(x.onTrue, at);
        const f = dt(x.onFalse, at);
        if (t !== f || t !== x.dtype) throw new DTypeError(`select: branches of one dtype ${x.dtype}, got ${t} and ${f}`);
        return;
      }
      case "cast":
        dt(x.x, at);
        return;
      case "bitcast": {
        const a = dt(x.x, at);
        if (a !== x.dtype && !(FOUR_BYTES.has(a) && FOUR_BYTES.has(x.dtype))) {
          throw new DTypeError(`bitcast: dtypes of one width (float32, int32, uint32), got ${a} to ${x.dtype}`);
        }
        return;
      }
      default:
        throw new DTypeError(`fused kernel: a known node op, got ${String((x satisfies never as ScalarNode).op)}`);
    }
  });
  for (const o of p.outputs) {
    if (!Number.isInteger(o) || o < 0 || o >= n.length) {
      throw new ShapeError(`fused kernel: outputs that index nodes in [0, ${n.length}), got ${o}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// JavaScript code generation

/** `expr` rounded / wrapped to `dtype` as a typed-array store of that dtype would. */
function wrap(dtype: DType, expr: string): string {
  switch (dtype) {
    case "float32":
      return `Math.fround(${expr})`;
    case "int32":
      return `((${expr}) | 0)`;
    case "uint32":
      return `((${expr}) >>> 0)`;
    default:
      return `(${expr})`;
  }
}

function literal(v: number): string {
  if (Object.is(v, -0)) return "-0";
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "Infinity";
  if (v === -Infinity) return "-Infinity";
  return String(v);
}

/** The JS expression of unary `op` on a value `x` of dtype `dt` (already wrapped to the result dtype). */
function jsUnary(op: UnaryOp, dt: DType, x: string): string {
  if (isFloat(dt)) {
    const m = (f: string): string => wrap(dt, `${f}(${x})`);
    switch (op) {
      case "neg":
        return wrap(dt, `-${x}`);
      case "rsqrt":
        return wrap(dt, `1 / Math.sqrt(${x})`);
      case "sign":
        return m("F.signFloat");
      case "round":
        return m("F.roundHalfEven");
      case "erf":
        return m("F.erf");
      case "erf_inv":
        return m("F.erfInv");
      case "logistic":
        return m("F.logistic");
      case "is_finite":
        return `+Number.isFinite(${x})`;
      case "not":
        return fail(op, dt);
      case "abs": case "exp": case "log": case "log1p": case "expm1": case "sqrt": case "sin": case "cos":
      case "tan": case "tanh": case "asin": case "acos": case "atan": case "sinh": case "cosh": case "asinh":
      case "acosh": case "atanh": case "floor": case "ceil":
        return m(`Math.${op}`);
      default:
        throw new DTypeError(`unary: a known op, got ${String(op satisfies never)}`);
    }
  }
  if (op === "is_finite") return "1";
  if (dt === "bool") return op === "not" ? `(1 - ${x})` : fail(op, dt);
  switch (op) {
    case "neg":
      return wrap(dt, `-${x}`);
    case "abs":
      return dt === "uint32" ? x : wrap(dt, `Math.abs(${x})`);
    case "sign":
      return wrap(dt, `Math.sign(${x})`);
    case "floor":
    case "ceil":
    case "round":
      return x;
    case "not":
      return wrap(dt, `~${x}`);
    default:
      return fail(op, dt);
  }
}

/** The JS expression of binary `op` on values `a`, `b` of dtype `dt`. */
function jsBinary(op: BinaryOp, dt: DType, a: string, b: string): string {
  const float = isFloat(dt);
  const bool = dt === "bool";
  const w = (e: string): string => wrap(dt, e);
  switch (op) {
    case "add":
      return bool ? `(${a} | ${b})` : w(`${a} + ${b}`);
    case "sub":
      return bool ? fail(op, dt) : w(`${a} - ${b}`);
    case "mul":
      return float ? w(`${a} * ${b}`) : bool ? `(${a} & ${b})` : w(`Math.imul(${a}, ${b})`);
    case "div":
      if (float) return w(`${a} / ${b}`);
      return bool ? fail(op, dt) : w(`F.${dt === "int32" ? "divInt32" : "divUint32"}(${a}, ${b})`);
    case "rem":
      return float ? w(`${a} % ${b}`) : bool ? fail(op, dt) : w(`F.remInt(${a}, ${b})`);
    case "pow":
      return float ? w(`F.powFloat(${a}, ${b})`) : bool ? fail(op, dt) : w(`F.powInt(${a}, ${b})`);
    case "max":
      return w(`Math.max(${a}, ${b})`);
    case "min":
      return w(`Math.min(${a}, ${b})`);
    case "atan2":
      return float ? w(`Math.atan2(${a}, ${b})`) : fail(op, dt);
    case "and":
      return float ? fail(op, dt) : w(`${a} & ${b}`);
    case "or":
      return float ? fail(op, dt) : w(`${a} | ${b}`);
    case "xor":
      return float ? fail(op, dt) : w(`${a} ^ ${b}`);
    case "shl":
      return isInt(dt) ? w(`F.shlInt(${a}, ${b})`) : fail(op, dt);
    case "shr":
      return dt === "int32" ? w(`F.shrInt32(${a}, ${b})`) : dt === "uint32" ? w(`F.shrUint32(${a}, ${b})`) : fail(op, dt);
    case "eq":
      return `+(${a} === ${b})`;
    case "ne":
      return `+(${a} !== ${b})`;
    case "lt":
      return `+(${a} < ${b})`;
    case "le":
      return `+(${a} <= ${b})`;
    case "gt":
      return `+(${a} > ${b})`;
    case "ge":
      return `+(${a} >= ${b})`;
    default:
      throw new DTypeError(`binary: a known op, got ${String(op satisfies never)}`);
  }
}

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;
const UINT32_MAX = 4294967295;
const scratch = new ArrayBuffer(4);

/** Scalar helpers the generated code calls (the eager kernels' definitions). */
const HELPERS = {
  erf, erfInv, logistic, powFloat, powInt, roundHalfEven, signFloat,
  divInt32: (a: number, b: number): number => (b === 0 ? 0 : (a / b) | 0),
  divUint32: (a: number, b: number): number => (b === 0 ? 0 : Math.trunc(a / b)),
  remInt: (a: number, b: number): number => (b === 0 ? 0 : a % b),
  shlInt: (a: number, b: number): number => (b >>> 0 >= 32 ? 0 : a << b),
  shrInt32: (a: number, b: number): number => (b >>> 0 >= 32 ? a >> 31 : a >> b),
  shrUint32: (a: number, b: number): number => (b >>> 0 >= 32 ? 0 : a >>> b),
  // `| 0`: an int32 has no -0 (Math.trunc(-0.5) is -0, which a later cast to float would keep).
  f2i: (v: number): number => (v !== v ? 0 : v <= INT32_MIN ? INT32_MIN : v >= INT32_MAX ? INT32_MAX : Math.trunc(v) | 0),
  f2u: (v: number): number => (v !== v || v <= 0 ? 0 : v >= UINT32_MAX ? UINT32_MAX : Math.trunc(v)),
  f32: new Float32Array(scratch),
  i32: new Int32Array(scratch),
  u32: new Uint32Array(scratch),
};

/** The JS expression of node `x` (operands named v<i>). */
function jsNode(x: ScalarNode, nodes: readonly ScalarNode[], load: (input: number) => string): string {
  const v = (i: number): string => `v${i}`;
  switch (x.op) {
    case "load":
      return load(x.input);
    case "const":
      return literal(x.dtype === "float32" ? Math.fround(x.value) : x.value);
    case "iota":
      throw new Error("fused kernel: iota is rewritten to a load before code generation");
    case "unary":
      return jsUnary(x.fn, nodes[x.x]!.dtype, v(x.x));
    case "binary":
      return jsBinary(x.fn, nodes[x.x]!.dtype, v(x.x), v(x.y));
    case "select":
      return `(${v(x.pred)} !== 0 ? ${v(x.onTrue)} : ${v(x.onFalse)})`;
    case "cast": {
      const from = nodes[x.x]!.dtype;
      if (x.dtype === "bool") return `+(${v(x.x)} !== 0)`;
      if (isFloat(from) && x.dtype === "int32") return `F.f2i(${v(x.x)})`;
      if (isFloat(from) && x.dtype === "uint32") return `F.f2u(${v(x.x)})`;
      return wrap(x.dtype, v(x.x));
    }
    case "bitcast": {
      const from = nodes[x.x]!.dtype;
      if (from === x.dtype) return v(x.x);
      const view = (d: DType): string => (d === "float32" ? "F.f32" : d === "int32" ? "F.i32" : "F.u32");
      return `(${view(from)}[0] = ${v(x.x)}, ${view(x.dtype)}[0])`;
    }
    default:
      throw new DTypeError(`fused kernel: a known node op, got ${String((x satisfies never as ScalarNode).op)}`);
  }
}

/** Row function `(n, offs, steps, D, O)`: operand 0 is the (contiguous) output index, then the inputs. */
type JsRow = (n: number, offs: Int32Array, steps: Int32Array, D: readonly AnyTypedArray[], O: AnyTypedArray[]) => void;

/** The row function's source; inputs in `index` are index views (the value is the offset itself). */
function jsRowSource(nodes: readonly ScalarNode[], nInputs: number, outputs: readonly number[], index: ReadonlySet<number>): string {
  const lines: string[] = [];
  for (let k = 0; k < nInputs; k++) lines.push(`const d${k} = D[${k}]; let i${k} = offs[${k + 1}]; const s${k} = steps[${k + 1}];`);
  outputs.forEach((_, j) => lines.push(`const o${j} = O[${j}];`));
  lines.push("let q = offs[0];");
  lines.push("for (let e = 0; e < n; e++, q++) {");
  const load = (x: ScalarNode & { op: "load" }): string =>
    index.has(x.input) ? (x.dtype === "bool" ? `+(i${x.input} !== 0)` : wrap(x.dtype, `i${x.input}`)) : `d${x.input}[i${x.input}]`;
  nodes.forEach((x, i) => lines.push(`  const v${i} = ${x.op === "load" ? load(x) : jsNode(x, nodes, () => "")};`));
  outputs.forEach((o, j) => lines.push(`  o${j}[q] = v${o};`));
  for (let k = 0; k < nInputs; k++) lines.push(`  i${k} += s${k};`);
  lines.push("}");
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------------
// Wasm SIMD code generation (4 lanes of 32 bits; bool values are lane masks 0 / -1)

type SimdName = Parameters<Code["simd"]>[0];

const F32_UNARY: Partial<Record<UnaryOp, SimdName>> = {
  neg: "f32x4.neg", abs: "f32x4.abs", sqrt: "f32x4.sqrt", floor: "f32x4.floor", ceil: "f32x4.ceil",
  round: "f32x4.nearest",
};
const F32_BINARY: Partial<Record<BinaryOp, SimdName>> = {
  add: "f32x4.add", sub: "f32x4.sub", mul: "f32x4.mul", div: "f32x4.div", max: "f32x4.max", min: "f32x4.min",
  eq: "f32x4.eq", ne: "f32x4.ne", lt: "f32x4.lt", le: "f32x4.le", gt: "f32x4.gt", ge: "f32x4.ge",
};
const F32_SPECIAL = new Set<UnaryOp>([
  "exp", "log", "tanh", "logistic", "sin", "cos", "erf", "expm1", "log1p", "rsqrt", "sign", "is_finite",
]);
const INT_BINARY: Partial<Record<BinaryOp, SimdName>> = {
  add: "i32x4.add", sub: "i32x4.sub", mul: "i32x4.mul", and: "v128.and", or: "v128.or", xor: "v128.xor",
  eq: "i32x4.eq", ne: "i32x4.ne",
};
const I32_BINARY: Partial<Record<BinaryOp, SimdName>> = {
  ...INT_BINARY, max: "i32x4.max_s", min: "i32x4.min_s", lt: "i32x4.lt_s", le: "i32x4.le_s", gt: "i32x4.gt_s", ge: "i32x4.ge_s",
};
const U32_BINARY: Partial<Record<BinaryOp, SimdName>> = {
  ...INT_BINARY, max: "i32x4.max_u", min: "i32x4.min_u", lt: "i32x4.lt_u", le: "i32x4.le_u", gt: "i32x4.gt_u", ge: "i32x4.ge_u",
};
const BOOL_BINARY = new Set<BinaryOp>(["add", "mul", "max", "min", "and", "or", "xor", "eq", "ne", "lt", "le", "gt", "ge"]);
const LANE4 = new Set<DType>(["float32", "int32", "uint32", "bool"]);
const F64_UNARY: Partial<Record<UnaryOp, SimdName>> = {
  neg: "f64x2.neg", abs: "f64x2.abs", sqrt: "f64x2.sqrt", floor: "f64x2.floor", ceil: "f64x2.ceil", round: "f64x2.nearest",
};
const F64_BINARY: Partial<Record<BinaryOp, SimdName>> = {
  add: "f64x2.add", sub: "f64x2.sub", mul: "f64x2.mul", div: "f64x2.div", max: "f64x2.max", min: "f64x2.min",
  eq: "f64x2.eq", ne: "f64x2.ne", lt: "f64x2.lt", le: "f64x2.le", gt: "f64x2.gt", ge: "f64x2.ge",
};

/**
 * Whether a float64 program has a 2-lane (f64x2) SIMD form: float64 values under IEEE-exact ops, bool
 * values only as comparison masks consumed inside the kernel (no bool input, output or cast).
 */
function simdSupportedF64(nodes: readonly ScalarNode[], outputs: readonly number[]): boolean {
  if (!nodes.some((x) => x.dtype === "float64")) return false;
  if (outputs.some((o) => nodes[o]!.dtype !== "float64")) return false;
  return nodes.every((x) => {
    if (x.dtype !== "float64" && x.dtype !== "bool") return false;
    switch (x.op) {
      case "load":
        return x.dtype === "float64";
      case "const":
      case "select":
        return true;
      case "unary":
        return nodes[x.x]!.dtype === "float64" ? F64_UNARY[x.fn] !== undefined : x.fn === "not";
      case "binary":
        return nodes[x.x]!.dtype === "float64" ? F64_BINARY[x.fn] !== undefined : BOOL_BINARY.has(x.fn);
      default:
        return false;
    }
  });
}

/** Whether every node has a 4-lane SIMD form. */
function simdSupported(nodes: readonly ScalarNode[]): boolean {
  return nodes.every((x) => {
    if (!LANE4.has(x.dtype)) return false;
    switch (x.op) {
      case "load":
      case "const":
      case "iota":
      case "select":
        return true;
      case "unary": {
        const dt = nodes[x.x]!.dtype;
        if (dt === "float32") return F32_UNARY[x.fn] !== undefined || F32_SPECIAL.has(x.fn);
        if (dt === "bool") return x.fn === "not" || x.fn === "is_finite";
        return ["neg", "abs", "sign", "floor", "ceil", "round", "not", "is_finite"].includes(x.fn);
      }
      case "binary": {
        const dt = nodes[x.x]!.dtype;
        if (dt === "float32") return F32_BINARY[x.fn] !== undefined;
        if (dt === "bool") return BOOL_BINARY.has(x.fn);
        return (dt === "int32" ? I32_BINARY : U32_BINARY)[x.fn] !== undefined;
      }
      case "cast":
      case "bitcast":
        return LANE4.has(nodes[x.x]!.dtype);
      default:
        return false;
    }
  });
}

/**
 * `kernel(nvec, ptr0, step0, ..., out0, ...)`: `nvec` vectors of 4 elements; input k is read at
 * ptr_k, advancing step_k bytes a vector (16, or 0 for a scalar written 4 times); outputs are written
 * contiguously. Bool inputs and outputs are stored as 32-bit 0 / 1 in the memory.
 */
function emitSimdKernel(c: Code, nodes: readonly ScalarNode[], nInputs: number, outputs: readonly number[], slow: { sin: number; cos: number }): void {
  const nvec = c.params[0]!;
  const ptr = (k: number): Local => c.params[1 + 2 * k]!;
  const step = (k: number): Local => c.params[2 + 2 * k]!;
  const out = (j: number): Local => c.params[1 + 2 * nInputs + j]!;
  const val: Local[] = nodes.map(() => c.local("v128"));
  const i4 = (v: number): void => void c.v128I32([v, v, v, v]);
  // Constants before the loop.
  nodes.forEach((x, i) => {
    if (x.op !== "const") return;
    if (x.dtype === "float64") c.f64x2Const(x.value);
    else if (x.dtype === "float32") c.f32x4Const(x.value);
    else if (x.dtype === "bool") i4(x.value !== 0 ? -1 : 0);
    else i4(x.value | 0);
    c.set(val[i]!);
  });
  c.block().loop();
  c.get(nvec).op("i32.eqz").brIf(1);
  nodes.forEach((x, i) => {
    const get = (j: number): void => void c.get(val[j]!);
    switch (x.op) {
      case "const":
        return;
      case "iota":
        throw new Error("fused kernel: iota is rewritten to a load before code generation");
      case "load":
        c.get(ptr(x.input)).simdMem("v128.load", 0);
        if (x.dtype === "bool") c.simd("i32x4.neg");
        break;
      case "unary": {
        const dt = nodes[x.x]!.dtype;
        const a = val[x.x]!;
        if (dt === "float64") {
          c.get(a).simd(F64_UNARY[x.fn]!);
          break;
        }
        if (dt === "float32") {
          const simple = F32_UNARY[x.fn];
          if (simple !== undefined) {
            c.get(a).simd(simple);
            break;
          }
          switch (x.fn) {
            case "exp":
              expF32(c, a);
              break;
            case "log":
              logF32(c, a);
              break;
            case "tanh":
              tanhF32(c, a);
              break;
            case "logistic":
              logisticF32(c, a);
              break;
            case "erf":
              erfF32(c, a);
              break;
            case "expm1":
              expm1F32(c, a);
              break;
            case "log1p":
              log1pF32(c, a);
              break;
            case "sin":
              trigF32(c, a, false, slow.sin);
              break;
            case "cos":
              trigF32(c, a, true, slow.cos);
              break;
            case "rsqrt": {
              // 1 / sqrt in float64 per half, rounded once to float32 (as the eager kernel).
              const lo = c.local("v128");
              c.f64x2Const(1).get(a).simd("f64x2.promote_low_f32x4").simd("f64x2.sqrt").simd("f64x2.div");
              c.simd("f32x4.demote_f64x2_zero").set(lo);
              c.f64x2Const(1).get(a).get(a).shuffle32([2, 3, 0, 1]).simd("f64x2.promote_low_f32x4").simd("f64x2.sqrt");
              c.simd("f64x2.div").simd("f32x4.demote_f64x2_zero");
              c.set(val[i]!).get(lo).get(val[i]!).shuffle32([0, 1, 4, 5]);
              break;
            }
            case "sign": {
              // x > 0 ? 1 : x < 0 ? -1 : x (keeps ±0 and NaN).
              c.f32x4Const(1);
              c.f32x4Const(-1).get(a).get(a).f32x4Const(0).simd("f32x4.lt").simd("v128.bitselect");
              c.get(a).f32x4Const(0).simd("f32x4.gt").simd("v128.bitselect");
              break;
            }
            case "is_finite":
              c.get(a).simd("f32x4.abs").f32x4Const(Infinity).simd("f32x4.lt");
              break;
            default:
              throw new Error(`fused kernel: no SIMD form of ${x.fn}`);
          }
          break;
        }
        if (dt === "bool") {
          if (x.fn === "not") c.get(a).simd("v128.not");
          else i4(-1); // is_finite
          break;
        }
        switch (x.fn) {
          case "neg":
            c.get(a).simd("i32x4.neg");
            break;
          case "abs":
            c.get(a);
            if (dt === "int32") c.simd("i32x4.abs");
            break;
          case "sign":
            if (dt === "int32") {
              // (x < 0 mask) - (x > 0 mask): -1, 0 or 1.
              c.get(a).v128Zero().simd("i32x4.lt_s").get(a).v128Zero().simd("i32x4.gt_s").simd("i32x4.sub");
            } else {
              c.v128Zero().get(a).v128Zero().simd("i32x4.ne").simd("i32x4.sub");
            }
            break;
          case "floor":
          case "ceil":
          case "round":
            c.get(a);
            break;
          case "not":
            c.get(a).simd("v128.not");
            break;
          case "is_finite":
            i4(-1);
            break;
          default:
            throw new Error(`fused kernel: no SIMD form of ${x.fn} on ${dt}`);
        }
        break;
      }
      case "binary": {
        const dt = nodes[x.x]!.dtype;
        if (dt === "bool") {
          const a = (): void => get(x.x);
          const b = (): void => get(x.y);
          switch (x.fn) {
            case "add": case "max": case "or":
              a(); b(); c.simd("v128.or");
              break;
            case "mul": case "min": case "and":
              a(); b(); c.simd("v128.and");
              break;
            case "xor": case "ne":
              a(); b(); c.simd("v128.xor");
              break;
            case "eq":
              a(); b(); c.simd("v128.xor").simd("v128.not");
              break;
            case "lt": // !a & b
              b(); a(); c.simd("v128.andnot");
              break;
            case "gt": // a & !b
              a(); b(); c.simd("v128.andnot");
              break;
            case "le": // !(a & !b)
              a(); b(); c.simd("v128.andnot").simd("v128.not");
              break;
            case "ge":
              b(); a(); c.simd("v128.andnot").simd("v128.not");
              break;
            default:
              throw new Error(`fused kernel: no SIMD form of ${x.fn} on bool`);
          }
          break;
        }
        const table = dt === "float64" ? F64_BINARY : dt === "float32" ? F32_BINARY : dt === "int32" ? I32_BINARY : U32_BINARY;
        get(x.x);
        get(x.y);
        c.simd(table[x.fn]!);
        break;
      }
      case "select":
        get(x.onTrue);
        get(x.onFalse);
        get(x.pred);
        c.simd("v128.bitselect");
        break;
      case "cast": {
        const from = nodes[x.x]!.dtype;
        const to = x.dtype;
        get(x.x);
        if (from === to) break;
        if (to === "bool") {
          if (from === "float32") c.v128Zero().simd("f32x4.ne");
          else c.v128Zero().simd("i32x4.ne");
        } else if (from === "bool") {
          if (to === "float32") c.f32x4Const(1).simd("v128.and");
          else c.simd("i32x4.neg");
        } else if (from === "float32") {
          c.simd(to === "int32" ? "i32x4.trunc_sat_f32x4_s" : "i32x4.trunc_sat_f32x4_u");
        } else if (to === "float32") {
          c.simd(from === "int32" ? "f32x4.convert_i32x4_s" : "f32x4.convert_i32x4_u");
        }
        // int32 <-> uint32: the same bits.
        break;
      }
      case "bitcast":
        get(x.x);
        break;
      default:
        throw new Error("fused kernel: unknown node");
    }
    c.set(val[i]!);
  });
  outputs.forEach((o, j) => {
    c.get(out(j)).get(val[o]!);
    if (nodes[o]!.dtype === "bool") c.simd("i32x4.neg");
    c.simdMem("v128.store", 0);
  });
  for (let k = 0; k < nInputs; k++) c.addLocal(ptr(k), step(k));
  outputs.forEach((_, j) => c.addTo(out(j), 16));
  c.get(nvec).i32(1).op("i32.sub").set(nvec);
  c.br(0).end().end();
}

type SimdFn = (...args: number[]) => void;

/** A built SIMD kernel: the main thread's function and the module (for the workers, see `runDirect`). */
interface SimdKernel {
  readonly fn: SimdFn;
  readonly module: WasmModule;
  /** Its id with the runtime's map jobs (registered on first parallel use). */
  id: number;
}

function buildSimd(nodes: readonly ScalarNode[], nInputs: number, outputs: readonly number[]): SimdKernel | null {
  const rt = getRuntime();
  const wa = wasmApi;
  if (rt === null || wa === undefined) return null;
  try {
    const m = new ModuleBuilder();
    const sin = m.importFunction("m", "sin", ["f64"], ["f64"]);
    const cos = m.importFunction("m", "cos", ["f64"], ["f64"]);
    m.importMemory({ module: "env", field: "memory", initial: 2, maximum: rt.maximumPages, shared: rt.shared });
    const f = m.declare(new Array(1 + 2 * nInputs + outputs.length).fill("i32"));
    emitSimdKernel(m.code(f), nodes, nInputs, outputs, { sin, cos });
    m.export("kernel", f);
    const bytes = m.build();
    if (!wa.validate(bytes)) {
      fusedStats.wasmBuildFailures++;
      return null;
    }
    const module = new wa.Module(bytes);
    const inst = new wa.Instance(module, { env: { memory: rt.memory }, m: { sin: Math.sin, cos: Math.cos } });
    return { fn: inst.exports["kernel"] as SimdFn, module, id: -1 };
  } catch {
    fusedStats.wasmBuildFailures++;
    return null;
  }
}

// ---------------------------------------------------------------------------------------------------
// The compiled kernel

/** Elements per chunk of the Wasm path (16 KiB per operand: all operands stay in L1 / L2). */
const CHUNK = 4096;

interface Compiled {
  /** Nodes with iota rewritten as loads of extra inputs (index views, after the program's own). */
  readonly nodes: readonly ScalarNode[];
  /** Per extra input: the iota's dim and dtype. */
  readonly iotas: readonly { dim: number; dtype: DType }[];
  readonly outputs: readonly number[];
  /** JS row functions by the set of inputs that are index views (as a bit-mask string). */
  readonly jsRows: Map<string, JsRow>;
  /** The SIMD kernel, built on first use (null: not SIMD-able or Wasm unavailable). */
  simd: SimdKernel | null | undefined;
  /** Elements per vector of the SIMD kernel: 4 (32-bit lanes) or 2 (float64 programs). */
  readonly lanes: 4 | 2;
}

const cache = new Map<string, Compiled>();

function compile(p: ScalarProgram): Compiled {
  validate(p);
  const iotas: { dim: number; dtype: DType }[] = [];
  const nodes = p.nodes.map((x): ScalarNode => {
    if (x.op !== "iota") return x;
    iotas.push({ dim: x.dim, dtype: x.dtype });
    return { op: "load", input: p.inputs.length + iotas.length - 1, dtype: x.dtype };
  });
  const lanes = simdSupportedF64(nodes, p.outputs) ? 2 : 4;
  return { nodes, iotas, outputs: p.outputs, jsRows: new Map(), lanes, simd: lanes === 2 || simdSupported(nodes) ? undefined : null };
}

/** The JS row function of `k` for the given index-view inputs (generated on first use). */
function jsRowFor(k: Compiled, nInputs: number, index: ReadonlySet<number>): JsRow {
  const key = [...index].join(",");
  let row = k.jsRows.get(key);
  if (row === undefined) {
    const src = jsRowSource(k.nodes, nInputs, k.outputs, index);
    row = new Function("F", `return function fusedRow(n, offs, steps, D, O) {\n${src}\n};`)(HELPERS) as JsRow;
    k.jsRows.set(key, row);
  }
  return row;
}

/** Heap views of the memory's current buffer (remade after a grow: the buffer object changes). */
let heapBuffer: ArrayBuffer | SharedArrayBuffer | null = null;
const heapViews = new Map<DType, AnyTypedArray>();

/** A heap view of the runtime memory for `dtype`'s element type (bool goes through int32). */
function heapFor(buf: ArrayBuffer | SharedArrayBuffer, dtype: DType): AnyTypedArray {
  if (buf !== heapBuffer) {
    heapBuffer = buf;
    heapViews.clear();
  }
  let v = heapViews.get(dtype);
  if (v === undefined) {
    v = makeHeap(buf, dtype);
    heapViews.set(dtype, v);
  }
  return v;
}

function makeHeap(buf: ArrayBuffer | SharedArrayBuffer, dtype: DType): AnyTypedArray {
  switch (dtype) {
    case "float64":
      return new Float64Array(buf);
    case "float32":
      return new Float32Array(buf);
    case "uint32":
      return new Uint32Array(buf);
    default:
      return new Int32Array(buf);
  }
}

/** The value of an index view at element offset `o`, as stored for `dtype` in the memory. */
function indexValue(o: number, dtype: DType): number {
  return dtype === "bool" ? +(o !== 0) : o;
}

/**
 * Runs the SIMD kernel where its operands are, when they all allow it: every output and every input
 * that is not one value everywhere lives in the Wasm memory (resident storage, storage.ts), in C order
 * over `shape`, with the element width of the kernel's lanes. The whole vectors run in one call; the
 * rest (fewer than `lanes` elements, which a vector would overrun) goes through the staging path.
 * Returns false (nothing done) when some operand does not allow it.
 */
function runDirect(
  k: SimdKernel, lanes: number, shape: Shape, views: readonly StridedView[], dtypes: readonly DType[], outs: readonly AnyTypedArray[],
  outDTypes: readonly DType[], scalar: readonly boolean[],
): boolean {
  const eb = 16 / lanes;
  const size = shapeSize(shape);
  if (size < lanes) return false;
  const cStrides = contiguousStrides(shape);
  const inAddr: number[] = [];
  /** Per input: the byte address of its storage's element 0 (-1: a scalar, or copied in row mode). */
  const storageAt: number[] = [];
  let allCOrder = true;
  for (let k = 0; k < views.length; k++) {
    if (scalar[k]) {
      inAddr.push(-1);
      storageAt.push(-1);
      continue;
    }
    const v = views[k]!;
    const d = v.data;
    // Index views (iota) are staged: writing their values per row measured slower than staging
    // (a 74-op PaLM backward kernel with three of them: 23-31 ms staged, 34-37 ms by rows).
    if (dtypes[k] === "bool" || d === null) return false;
    if (d.BYTES_PER_ELEMENT !== eb || dtypeOfArray(d) !== dtypes[k]) return false;
    const at = residentAddress(d);
    if (at < 0) {
      // Small ordinary storage (below the resident threshold) is copied into scratch (row mode).
      if (d.byteLength > STAGE_MAX_BYTES) return false;
      allCOrder = false;
      inAddr.push(-1);
      storageAt.push(-1);
      continue;
    }
    if (!shape.every((n, i) => n === 1 || v.strides[i] === cStrides[i])) allCOrder = false;
    inAddr.push(at + v.offset * eb);
    storageAt.push(at);
  }
  const outAddr: number[] = [];
  for (let j = 0; j < outs.length; j++) {
    const o = outs[j]!;
    if (outDTypes[j] === "bool" || o.BYTES_PER_ELEMENT !== eb) return false;
    const at = residentAddress(o);
    if (at < 0) return false;
    // An output written over an input it would read later at another position (the vectors are read
    // and written in one pass) must be staged; the same position (an in-place update) is fine. In row
    // mode any overlap with an input's storage is staged.
    const bytes = size * eb;
    const overlaps = (a: number, span: number): boolean => a < at + bytes && at < a + span;
    for (let k = 0; k < views.length; k++) {
      if (scalar[k] || storageAt[k]! < 0) continue;
      if (allCOrder ? inAddr[k] !== at && overlaps(inAddr[k]!, bytes) : overlaps(storageAt[k]!, views[k]!.data!.byteLength)) return false;
    }
    outAddr.push(at);
  }
  const rt = getRuntime()!;
  if (!allCOrder) return runRows(rt, k, lanes, shape, views, dtypes, scalar, storageAt, outAddr);
  const nScalar = scalar.filter((x) => x).length;
  const base = nScalar > 0 ? rt.scratch(16 * nScalar) : 0;
  if (base < 0) return false;
  const buf = rt.memory.buffer;
  const args: number[] = [Math.floor(size / lanes)];
  let slot = 0;
  for (let k = 0; k < views.length; k++) {
    if (!scalar[k]) {
      args.push(inAddr[k]!, 16);
      continue;
    }
    const v = views[k]!;
    const at = base + 16 * slot++;
    heapFor(buf, dtypes[k]!).fill(v.data === null ? indexValue(v.offset, dtypes[k]!) : v.data[v.offset]!, at / eb, at / eb + lanes);
    args.push(at, 0);
  }
  args.push(...outAddr);
  if (!runVectors(rt, k, args, views.length, outs.length)) return false;
  fusedStats.direct++;
  const done = args[0]! * lanes;
  if (done === size) return true;
  // The tail, flattened: every operand is C-ordered (or one value), so element i is at offset + i.
  const tail = size - done;
  const tailViews = views.map((v, k) => ({ data: v.data, strides: [scalar[k] ? 0 : 1], offset: scalar[k] ? v.offset : v.offset + done }));
  const tailOuts = outs.map((o) => o.subarray(done));
  return runSimd(k, lanes, [tail], tailViews, dtypes, tailOuts, outDTypes);
}

/** Ordinary (not resident) input storage up to this size is copied into scratch for row mode. */
const STAGE_MAX_BYTES = 256 * 1024;

/**
 * `runDirect` for inputs read through broadcasts or other strided views: one kernel call per
 * innermost row (after `forEachRow` merges what it can), when in every row each input is contiguous
 * (step 1) or one value (step 0, splatted into a scratch slot per row) and rows are whole vectors.
 * That holds for the bias of a matmul epilogue ([rows, n] + [n]) and most broadcasting elementwise
 * ops. Small ordinary inputs (a [seq, dim] table) are copied to scratch once. Returns false, having
 * written nothing, when the first row shows it does not hold.
 */
function runRows(
  rt: WasmRuntime, k: SimdKernel, lanes: number, shape: Shape, views: readonly StridedView[], dtypes: readonly DType[],
  scalar: readonly boolean[], storageAt: readonly number[], outAddr: readonly number[],
): boolean {
  const eb = 16 / lanes;
  const nIn = views.length;
  const value = (j: number, o: number): number => {
    const d = views[j]!.data;
    return d === null ? indexValue(o, dtypes[j]!) : d[o]!; // an index view is only ever a scalar here
  };
  const args: number[] = [0];
  for (let j = 0; j < nIn; j++) args.push(0, 0);
  for (const a of outAddr) args.push(a);
  const strides = [contiguousStrides(shape), ...views.map((v) => v.strides)];
  const offsets = [0, ...views.map((v) => v.offset)];
  let state = 0; // 0: unchecked, 1: rows run, -1: not applicable
  let base = 0;
  let heaps: AnyTypedArray[] = [];
  /** Scratch: a 16-byte splat slot per input, then copies of small ordinary inputs. */
  /** Where small ordinary inputs were copied (their storage's element 0). */
  const stagedAt: number[] = [];
  const splat = (j: number, v: number): number => {
    const at = base + 16 * j;
    heaps[j]!.fill(v, at / eb, at / eb + lanes);
    return at;
  };
  forEachRow(shape, strides, offsets, (n, offs, steps) => {
    if (state === 0) {
      let ok = n % lanes === 0 && steps[0] === 1;
      for (let j = 0; ok && j < nIn; j++) ok = scalar[j]! || steps[j + 1] === 1 || steps[j + 1] === 0;
      let bytes = 16 * nIn;
      const staged: [number, number][] = []; // [input, byte offset in scratch]
      for (let j = 0; j < nIn; j++) {
        if (!scalar[j] && storageAt[j]! < 0) {
          staged.push([j, bytes]);
          bytes += Math.ceil(views[j]!.data!.byteLength / 16) * 16;
        }
      }
      base = ok ? rt.scratch(bytes) : -1;
      state = base >= 0 ? 1 : -1;
      if (state < 0) return;
      const buf = rt.memory.buffer;
      heaps = dtypes.map((d) => heapFor(buf, d));
      for (const [j, off] of staged) {
        heaps[j]!.set(views[j]!.data! as never, (base + off) / eb);
        stagedAt[j] = base + off;
      }
      // Values read everywhere: splatted once.
      for (let j = 0; j < nIn; j++) if (scalar[j]) args[1 + 2 * j] = splat(j, value(j, views[j]!.offset));
    }
    if (state < 0) return;
    args[0] = n / lanes;
    for (let j = 0; j < nIn; j++) {
      if (scalar[j]) continue;
      const o = offs[j + 1]!;
      if (steps[j + 1] === 0) {
        args[1 + 2 * j] = splat(j, value(j, o));
        args[2 + 2 * j] = 0;
      } else {
        args[1 + 2 * j] = (storageAt[j]! >= 0 ? storageAt[j]! : stagedAt[j]!) + o * eb;
        args[2 + 2 * j] = 16;
      }
    }
    for (let q = 0; q < outAddr.length; q++) args[1 + 2 * nIn + q] = outAddr[q]! + offs[0]! * eb;
    k.fn(...args);
  });
  if (state > 0) fusedStats.direct++;
  return state > 0;
}

/**
 * Runs `k` with `args` (n vectors, then the operands' addresses as the kernel takes them) on the
 * calling thread or, when there are enough vectors to share and the operands fit a map job, on all
 * threads, each task a slice of the vectors. False when a task failed.
 */
function runVectors(rt: WasmRuntime, k: SimdKernel, args: number[], nIn: number, nOut: number): boolean {
  const nvec = args[0]!;
  const parallel = nvec >= fusedOptions.parallelMinVectors && rt.shared && rt.threads > 1 && rt.mapFits(nIn, nOut);
  // As for products (gemm.ts): paused while workers keep the main thread waiting, unless turned off.
  const threads = !parallel ? 1 : cpuWasmOptions.adaptiveThreads ? rt.threadsFor(rt.threads) : rt.threads;
  if (threads === 1) {
    k.fn(...args);
    return true;
  }
  rt.startWorkers();
  if (k.id < 0) k.id = rt.registerMapKernel(k.module, k.fn);
  const inputs: [number, number][] = [];
  for (let i = 0; i < nIn; i++) inputs.push([args[1 + 2 * i]!, args[2 + 2 * i]!]);
  const outputs = args.slice(1 + 2 * nIn);
  // About four tasks per thread, for balance when a core is busy with something else.
  const per = Math.max(fusedOptions.parallelMinVectors >> 2, Math.ceil(nvec / (4 * threads)));
  fusedStats.parallel++;
  return rt.runMap(k.id, nvec, per, inputs, outputs, threads, cpuWasmOptions.mainTakesPart);
}

/** Runs the SIMD kernel over `shape` in chunks; false when the memory could not be grown. */
function runSimd(
  k: SimdKernel, lanes: number, shape: Shape, views: readonly StridedView[], dtypes: readonly DType[], outs: readonly AnyTypedArray[],
  outDTypes: readonly DType[],
): boolean {
  const rt = getRuntime()!;
  const nIn = views.length;
  const eb = 16 / lanes; // bytes per element in the memory
  const slot = CHUNK * eb;
  const base = rt.scratch((nIn + outs.length) * slot);
  if (base < 0) return false;
  const buf = rt.memory.buffer;
  const inHeap = dtypes.map((d) => heapFor(buf, d));
  const outHeap = outDTypes.map((d) => heapFor(buf, d));
  const inAt = views.map((_, k) => (base + k * slot) / eb);
  const outAt = outs.map((_, j) => (base + (nIn + j) * slot) / eb);
  // Inputs that are one value everywhere: written once per lane, read with step 0.
  const scalar = views.map((v) => shape.every((n, d) => n === 1 || v.strides[d] === 0));
  if (fusedOptions.direct && runDirect(k, lanes, shape, views, dtypes, outs, outDTypes, scalar)) return true;
  const args: number[] = [0];
  for (let k = 0; k < nIn; k++) {
    args.push(inAt[k]! * eb, scalar[k] ? 0 : 16);
    const v = views[k]!;
    if (scalar[k]) inHeap[k]!.fill(v.data === null ? indexValue(v.offset, dtypes[k]!) : v.data[v.offset]!, inAt[k]!, inAt[k]! + lanes);
  }
  for (let j = 0; j < outs.length; j++) args.push(outAt[j]! * eb);
  let fill = 0;
  let outPos = 0;
  const flush = (): void => {
    args[0] = Math.ceil(fill / lanes);
    k.fn(...args);
    for (let j = 0; j < outs.length; j++) {
      outs[j]!.set(outHeap[j]!.subarray(outAt[j]!, outAt[j]! + fill) as never, outPos);
    }
    outPos += fill;
    fill = 0;
  };
  const strides = [contiguousStrides(shape), ...views.map((v) => v.strides)];
  const offsets = [0, ...views.map((v) => v.offset)];
  const copy = views.map((v, k) => copierFor(v.data, inHeap[k]!)); // looked up once, not per row
  forEachRow(shape, strides, offsets, (n, offs, steps) => {
    let done = 0;
    while (done < n) {
      const take = Math.min(n - done, CHUNK - fill);
      for (let k = 0; k < nIn; k++) {
        if (scalar[k]) continue;
        const src = views[k]!.data;
        const h = inHeap[k]!;
        const s = steps[k + 1]!;
        let a = offs[k + 1]! + done * s;
        const dst = inAt[k]! + fill;
        if (src === null) {
          // An index view: the offsets themselves (bool: offset != 0, as 0 / 1).
          if (dtypes[k] === "bool") for (let i = 0; i < take; i++, a += s) h[dst + i] = +(a !== 0);
          else copy[k]!(h, dst, null, a, s, take);
        } else if (s === 1) {
          // Fused pad / concatenate read their operands at shifted positions, partly outside the
          // operand (those lanes are discarded by a select): copy only the part that exists.
          // (`subarray` would count a negative start from the end.)
          const lo = Math.max(a, 0);
          const hi = Math.min(a + take, src.length);
          // Short runs by a loop: a subarray per row (an allocation) costs more than the copy.
          if (hi - lo >= SHORT_RUN) h.set(src.subarray(lo, hi) as never, dst + (lo - a));
          else if (hi > lo) copy[k]!(h, dst + (lo - a), src, lo, 1, hi - lo);
        }
        else if (s === 0) h.fill(src[a]!, dst, dst + take);
        else copy[k]!(h, dst, src, a, s, take);
      }
      fill += take;
      done += take;
      if (fill === CHUNK) flush();
    }
  });
  if (fill > 0) flush();
  return true;
}

/** Staged rows shorter than this are copied element by element (see `runSimd`). */
const SHORT_RUN = 64;

/** Copies `take` elements of `src` from `a` by `s` into `h` from `dst` (src null: the offsets themselves). */
type Copier = (h: AnyTypedArray, dst: number, src: AnyTypedArray | null, a: number, s: number, take: number) => void;
const copiers = new Map<string, Copier>();

/**
 * The element-by-element copy for these array types. Each pair gets its own function (made with
 * `new Function`, so V8 keeps separate type feedback): one loop shared by every type pair had
 * megamorphic element accesses, and staging took a fifth of the main job's time at about 20 ns per
 * element.
 */
function copierFor(src: AnyTypedArray | null, h: AnyTypedArray): Copier {
  const key = `${src === null ? "index" : src.constructor.name}>${h.constructor.name}`;
  let c = copiers.get(key);
  if (c === undefined) {
    const read = src === null ? "a" : "src[a]";
    c = new Function(`return function copy_${key.replace(">", "_")}(h, dst, src, a, s, take) {\n  for (let i = 0; i < take; i++, a += s) h[dst + i] = ${read};\n};`)() as Copier;
    copiers.set(key, c);
  }
  return c;
}

/**
 * Compiles (or finds in the cache) the CPU kernel of `program`. Throws a DTypeError / ShapeError for
 * an ill-formed program (an op on a dtype it is not defined on, operands out of order, ...), as the
 * eager kernels would when run one by one.
 */
export function compileScalarProgram(program: ScalarProgram): FusedKernel {
  const key = scalarProgramKey(program);
  let k = cache.get(key);
  if (k === undefined) {
    k = compile(program);
    cache.set(key, k);
  }
  const compiled = k;
  const p = program;
  return (inputs, shape = p.shape, into) => {
    const rank = shape.length;
    if (inputs.length !== p.inputs.length) {
      throw new ShapeError(`fused kernel: ${p.inputs.length} inputs, got ${inputs.length}`);
    }
    inputs.forEach((x, i) => {
      const d = x.data === null ? p.inputs[i]!.dtype : dtypeOfArray(x.data);
      if (d !== p.inputs[i]!.dtype) throw new DTypeError(`fused kernel: input ${i} of dtype ${p.inputs[i]!.dtype}, got ${d}`);
      if (x.strides.length !== rank) {
        throw new ShapeError(`fused kernel: input ${i} strides for rank ${rank} (${shapeStr(shape)}), got [${x.strides.join(", ")}]`);
      }
    });
    for (const { dim } of compiled.iotas) {
      if (dim >= rank) throw new ShapeError(`iota: a dim in [0, ${rank}), got ${dim} for ${shapeStr(shape)}`);
    }
    const size = shapeSize(shape);
    const outDTypes = p.outputs.map((o) => p.nodes[o]!.dtype);
    if (into !== undefined) {
      if (into.length !== p.outputs.length) throw new ShapeError(`fused kernel: ${p.outputs.length} output arrays, got ${into.length}`);
      into.forEach((o, j) => {
        const d = dtypeOfArray(o);
        if (d !== outDTypes[j] || o.length < size) {
          throw new ShapeError(`fused kernel: output ${j} storage of ${outDTypes[j]} for ${size} elements, got ${d} of ${o.length}`);
        }
      });
    }
    const outs = into !== undefined ? [...into] : outDTypes.map((d) => allocateUninit(d, size));
    if (size > 0) {
      const views: StridedView[] = [...inputs];
      const dtypes: DType[] = p.inputs.map((x) => x.dtype);
      for (const { dim, dtype } of compiled.iotas) {
        views.push({ data: null, strides: shape.map((_, d) => (d === dim ? 1 : 0)), offset: 0 });
        dtypes.push(dtype);
      }
      let done = false;
      if (fusedOptions.wasm && size >= fusedOptions.wasmMinSize && compiled.simd !== null) {
        if (compiled.simd === undefined) compiled.simd = buildSimd(compiled.nodes, views.length, p.outputs);
        if (compiled.simd !== null) done = runSimd(compiled.simd, compiled.lanes, shape, views, dtypes, outs, outDTypes);
      }
      if (done) fusedStats.wasm++;
      else {
        fusedStats.js++;
        const index = new Set<number>();
        views.forEach((v, k) => v.data === null && index.add(k));
        const row = jsRowFor(compiled, views.length, index);
        const data = views.map((v) => v.data) as AnyTypedArray[];
        forEachRow(shape, [contiguousStrides(shape), ...views.map((v) => v.strides)], [0, ...views.map((v) => v.offset)], (n, offs, steps) =>
          row(n, offs, steps, data, outs),
        );
      }
    }
    return outs.map((o, j) => new CpuBuffer(o, outDTypes[j]!, shape, contiguousStrides(shape), 0, into === undefined));
  };
}

/**
 * @file Eager float32 elementwise ops on the Wasm SIMD path: a large unary or binary op runs as a
 * one-node fused kernel (fused.ts), with no change of semantics except the documented few-ulp
 * approximations of exp, log, tanh, logistic, sin, cos, erf, expm1 and log1p (simd-math.ts). Everything else (small
 * arrays, other dtypes, ops without a SIMD form) returns null and the caller runs the TypeScript
 * kernel of ../elementwise.ts, which stays the reference.
 *
 * Measured on the 2-core bench machine at 256 x 512 (the MLP's activations): add 447 -> 159 µs,
 * tanh 1228 -> 353 µs (64 Ki elements); below the thresholds the copies through the Wasm memory eat
 * the gain.
 */
import type { DType } from "../../../../autodiff/aval.js";
import type { ScalarNode } from "../../../compile/scalar-program.js";
import { COMPARISON_OPS, type BinaryOp, type OutType, type ReduceOp, type UnaryOp } from "../../kernel.js";
import { CpuBuffer } from "../buffer.js";
import { compileScalarProgram, fusedOptions, type FusedKernel } from "./fused.js";
import { cpuWasmOptions } from "./gemm.js";
import { WASM_REDUCE_MIN, wasmReduceF32 } from "./reduce.js";

/**
 * Smallest array (elements) that eager ops send to the Wasm kernels, and (lower) for the
 * transcendental functions, where the SIMD kernel saves more per element. Measured crossovers (median
 * of interleaved runs, copies included): add 4 Ki elements 11 vs 11 µs, 8 Ki 11 vs 21-36 µs; tanh
 * 1 Ki 15 vs 18 µs, 4 Ki 30 vs 69 µs.
 */
export const EAGER_WASM_MIN = 8192;
export const EAGER_WASM_MIN_TRANSCENDENTAL = 2048;
const TRANSCENDENTAL = new Set<UnaryOp>(["exp", "log", "tanh", "logistic", "sin", "cos", "erf", "expm1", "log1p"]);

const UNARY = new Set<UnaryOp>([
  "neg", "abs", "sqrt", "rsqrt", "floor", "ceil", "round", "sign", "exp", "log", "tanh", "logistic", "sin", "cos",
  "erf", "expm1", "log1p",
]);
const BINARY = new Set<BinaryOp>(["add", "sub", "mul", "div", "max", "min", "eq", "ne", "lt", "le", "gt", "ge"]);

const unaryKernels = new Map<UnaryOp, FusedKernel>();
const binaryKernels = new Map<BinaryOp, FusedKernel>();
const F32: DType = "float32";

/** Whether the eager Wasm paths are on (`configureCpuWasm({ enabled })` and `configureFused({ wasm })`). */
const on = (): boolean => fusedOptions.wasm && cpuWasmOptions.enabled;

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** `op(x)` on the Wasm path, or null when the caller should use the TypeScript kernel. */
export function eagerUnaryFast(op: UnaryOp, x: CpuBuffer, out: OutType): CpuBuffer | null {
  if (!on() || x.dtype !== F32 || out.dtype !== F32 || !UNARY.has(op)) return null;
  if (x.size < (TRANSCENDENTAL.has(op) ? EAGER_WASM_MIN_TRANSCENDENTAL : EAGER_WASM_MIN)) return null;
  if (!sameShape(x.shape, out.shape)) return null;
  let k = unaryKernels.get(op);
  if (k === undefined) {
    const nodes: ScalarNode[] = [
      { op: "load", input: 0, dtype: F32 },
      { op: "unary", fn: op, x: 0, dtype: F32 },
    ];
    k = compileScalarProgram({ shape: [], inputs: [{ dtype: F32 }], nodes, outputs: [1] });
    unaryKernels.set(op, k);
  }
  return k([x], x.shape)[0]!;
}

/** `op(x, y)` on the Wasm path, or null when the caller should use the TypeScript kernel. */
export function eagerBinaryFast(op: BinaryOp, x: CpuBuffer, y: CpuBuffer, out: OutType): CpuBuffer | null {
  if (!on() || x.dtype !== F32 || y.dtype !== F32 || x.size < EAGER_WASM_MIN || !BINARY.has(op)) return null;
  const outDType: DType = COMPARISON_OPS.has(op) ? "bool" : F32;
  if (out.dtype !== outDType || !sameShape(x.shape, y.shape) || !sameShape(x.shape, out.shape)) return null;
  let k = binaryKernels.get(op);
  if (k === undefined) {
    const nodes: ScalarNode[] = [
      { op: "load", input: 0, dtype: F32 },
      { op: "load", input: 1, dtype: F32 },
      { op: "binary", fn: op, x: 0, y: 1, dtype: outDType },
    ];
    k = compileScalarProgram({ shape: [], inputs: [{ dtype: F32 }, { dtype: F32 }], nodes, outputs: [2] });
    binaryKernels.set(op, k);
  }
  return k([x, y], x.shape)[0]!;
}

/**
 * `op` over `axes` on the Wasm path when x is a contiguous float32 array of at least WASM_REDUCE_MIN
 * elements reduced over its trailing or its leading axes (sum, max, min); else null.
 */
export function eagerReduceFast(op: ReduceOp, x: CpuBuffer, axes: readonly number[], out: OutType): CpuBuffer | null {
  if (!on() || op === "prod" || x.dtype !== F32 || out.dtype !== F32 || !x.contiguous || x.size < WASM_REDUCE_MIN) return null;
  const nd = x.ndim;
  const k = axes.length;
  if (k === 0 || axes.some((a, i) => a !== axes[0]! + i)) return null; // one block of axes, sorted
  const kept = x.shape.filter((_, d) => !axes.includes(d));
  if (!sameShape(kept, out.shape)) return null;
  let outer = 1;
  for (const d of kept) outer *= d;
  const len = x.size / outer;
  const data = x.data as Float32Array;
  let r: Float32Array | null = null;
  if (axes[k - 1] === nd - 1) r = wasmReduceF32(op, data, "rows", outer, len, x.offset);
  else if (axes[0] === 0) r = wasmReduceF32(op, data, "cols", outer, len, x.offset);
  return r === null ? null : new CpuBuffer(r, F32, out.shape);
}

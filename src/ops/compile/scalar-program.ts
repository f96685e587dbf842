/**
 * @file The body of a fused elementwise kernel, shared by every backend's code generator: a small SSA
 * program over scalars, evaluated once per element of the kernel's iteration shape. The jit compiler's
 * fusion pass builds these from chains of kernel ops (src/ops/backend/kernel.ts); the WebGPU backend
 * renders them as WGSL, the CPU backend as Wasm (SIMD where every operand is contiguous).
 *
 * Semantics of every op are exactly those of the kernel op of the same name (kernel.ts), so a fused
 * kernel must give the same bits as running its ops one by one on the same backend, except where a
 * backend documents otherwise (e.g. fused multiply-add contraction).
 */
import type { DType, Shape } from "../../autodiff/aval.js";
import type { BinaryOp, UnaryOp } from "../backend/kernel.js";

/** One instruction. `dtype` is the instruction's result type; operands are indices of earlier nodes. */
export type ScalarNode =
  /** The element of input `input` at the current position (inputs are read through a strided view). */
  | { readonly op: "load"; readonly input: number; readonly dtype: DType }
  /** A constant, already representable in `dtype`. */
  | { readonly op: "const"; readonly value: number; readonly dtype: DType }
  /** The current position's index along `dim` of the iteration shape. */
  | { readonly op: "iota"; readonly dim: number; readonly dtype: DType }
  | { readonly op: "unary"; readonly fn: UnaryOp; readonly x: number; readonly dtype: DType }
  | { readonly op: "binary"; readonly fn: BinaryOp; readonly x: number; readonly y: number; readonly dtype: DType }
  /** `pred ? onTrue : onFalse`, pred a bool node. */
  | { readonly op: "select"; readonly pred: number; readonly onTrue: number; readonly onFalse: number; readonly dtype: DType }
  | { readonly op: "cast"; readonly x: number; readonly dtype: DType }
  | { readonly op: "bitcast"; readonly x: number; readonly dtype: DType };

/**
 * A fused elementwise computation: `nodes` in topological order, evaluated at every index of `shape`;
 * each entry of `outputs` names the node whose value is stored (contiguously, C order) in that output.
 * Inputs are declared by dtype only: their layout (strides over `shape`, zero for broadcast axes,
 * negative for reversed ones, and an element offset) is given when the kernel runs, so one compiled
 * kernel serves every layout of the same rank.
 */
export interface ScalarProgram {
  readonly shape: Shape;
  readonly inputs: readonly { readonly dtype: DType }[];
  readonly nodes: readonly ScalarNode[];
  readonly outputs: readonly number[];
}

/** A stable text key of a program's semantics (not of its shape), for kernel caches. */
export function scalarProgramKey(p: Omit<ScalarProgram, "shape"> & { readonly shape?: Shape }): string {
  const n = p.nodes
    .map((x) => {
      switch (x.op) {
        case "load":
          return `l${x.input}:${x.dtype}`;
        case "const":
          return `c${Object.is(x.value, -0) ? "-0" : String(x.value)}:${x.dtype}`;
        case "iota":
          return `i${x.dim}:${x.dtype}`;
        case "unary":
          return `${x.fn}(${x.x}):${x.dtype}`;
        case "binary":
          return `${x.fn}(${x.x},${x.y}):${x.dtype}`;
        case "select":
          return `sel(${x.pred},${x.onTrue},${x.onFalse}):${x.dtype}`;
        case "cast":
          return `cast(${x.x}):${x.dtype}`;
        case "bitcast":
          return `bitcast(${x.x}):${x.dtype}`;
        default:
          return x satisfies never;
      }
    })
    .join(";");
  return `in[${p.inputs.map((i) => i.dtype).join(",")}]{${n}}out[${p.outputs.join(",")}]`;
}

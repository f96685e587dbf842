/**
 * @file The closed set of kernel ops that every primitive lowers to, and the interfaces a backend
 * implements. Primitives never talk to a device directly: each primitive's `lower` rule calls these
 * builder methods. In eager mode the builder is the backend itself (it runs, or for lazy devices
 * encodes, the op); under a compiler (jit) the builder records a kernel graph instead.
 *
 * A backend renders these ops through an exhaustive `switch` on the op names, so adding an op name here
 * fails compilation everywhere it is not handled.
 *
 * Conventions for every method:
 * - Inputs already have the shapes the op needs: elementwise ops get operands of identical shape
 *   (broadcasting is an explicit `broadcastInDim`, which backends implement as a strided view).
 * - `out` (where present) is the exact output aval (shape + dtype); backends never re-derive it.
 * - Ops never modify or free their inputs, and always return new handles (a view is a new handle
 *   sharing storage), never one of their inputs.
 */
import type { DType, Shape } from "../../autodiff/aval.js";

export type UnaryOp =
  | "neg"
  | "exp"
  | "log"
  | "log1p"
  | "expm1"
  | "sqrt"
  | "rsqrt"
  | "sin"
  | "cos"
  | "tan"
  | "tanh"
  | "asin"
  | "acos"
  | "atan"
  | "sinh"
  | "cosh"
  | "asinh"
  | "acosh"
  | "atanh"
  | "abs"
  | "sign"
  | "floor"
  | "ceil"
  | "round" // half to even, as JAX's round with ROUND_TO_NEAREST_EVEN / numpy's round
  | "erf"
  | "erf_inv"
  | "logistic" // 1 / (1 + exp(-x)), computed without overflow
  | "is_finite" // output bool
  | "not"; // logical not for bool, bitwise not for ints

export const UNARY_OPS: readonly UnaryOp[] = [
  "neg", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos", "tan", "tanh", "asin", "acos",
  "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "abs", "sign", "floor", "ceil", "round", "erf",
  "erf_inv", "logistic", "is_finite", "not",
];

export type BinaryOp =
  | "add"
  | "sub"
  | "mul"
  | "div" // integer division truncates toward zero for ints (C / JAX lax.div semantics)
  | "rem" // sign of the dividend (C fmod / lax.rem)
  | "pow"
  | "max" // NaN-propagating for floats
  | "min"
  | "atan2"
  | "and" // logical for bool, bitwise for ints
  | "or"
  | "xor"
  | "shl" // shift left (ints), shifts >= 32 give 0
  | "shr" // logical shift right for uint32, arithmetic for int32
  | "eq" // comparisons output bool
  | "ne"
  | "lt"
  | "le"
  | "gt"
  | "ge";

export const BINARY_OPS: readonly BinaryOp[] = [
  "add", "sub", "mul", "div", "rem", "pow", "max", "min", "atan2", "and", "or", "xor", "shl", "shr",
  "eq", "ne", "lt", "le", "gt", "ge",
];

export const COMPARISON_OPS: ReadonlySet<BinaryOp> = new Set(["eq", "ne", "lt", "le", "gt", "ge"]);

/** Reductions. For bool inputs, "max" is any and "min" is all. Float max/min propagate NaN. */
export type ReduceOp = "sum" | "prod" | "max" | "min";

/** Arg reductions: the first index of the max / min (NaN counts as the extreme, as numpy). */
export type ArgReduceOp = "argmax" | "argmin";

/** Cumulative ops along one axis. */
export type CumulativeOp = "sum" | "prod" | "max" | "min";

/** XLA's DotDimensionNumbers, as JAX's lax.dot_general takes them. */
export interface DotDims {
  /** [lhsContracting, rhsContracting] axis lists, same length, pairwise equal sizes. */
  readonly contracting: readonly [readonly number[], readonly number[]];
  /** [lhsBatch, rhsBatch] axis lists. Output: batch dims, then lhs free dims, then rhs free dims. */
  readonly batch: readonly [readonly number[], readonly number[]];
}

/** Element storage per dtype. bool is stored as one byte per element (0 or 1). */
export type TypedArrayFor<D extends DType> = D extends "float32"
  ? Float32Array
  : D extends "float64"
    ? Float64Array
    : D extends "int32"
      ? Int32Array
      : D extends "uint32"
        ? Uint32Array
        : Uint8Array;

export type AnyTypedArray = Float32Array | Float64Array | Int32Array | Uint32Array | Uint8Array;

/** What an op needs to know of its output. */
export interface OutType {
  readonly shape: Shape;
  readonly dtype: DType;
}

/**
 * A kernel-op builder over handles of type H. Every handle has a known shape and dtype (`typeOf`).
 * Eager backends execute (or enqueue) each call and return a device buffer; a compiler returns a node.
 */
export interface KernelBuilder<H> {
  typeOf(x: H): OutType;

  /** A constant filled with `value` (already representable in `dtype`). */
  full(out: OutType, value: number): H;
  /** A constant from host data (C order, length = size of shape). */
  constant(data: AnyTypedArray, out: OutType): H;
  /** Indices 0..n-1 along `dim`, broadcast over the other dims. */
  iota(out: OutType, dim: number): H;

  unary(op: UnaryOp, x: H, out: OutType): H;
  binary(op: BinaryOp, x: H, y: H, out: OutType): H;
  /** Elementwise `pred ? onTrue : onFalse`; pred is bool, all three the same shape. */
  select(pred: H, onTrue: H, onFalse: H): H;
  /** Value conversion (float -> int truncates toward zero and saturates; to bool is `!= 0`). */
  cast(x: H, dtype: DType): H;
  /** Reinterpret bits between same-width dtypes (float32 <-> int32 / uint32). */
  bitcast(x: H, dtype: DType): H;

  /** Reduce over `axes` (sorted, unique), which are removed from the shape. */
  reduce(op: ReduceOp, x: H, axes: readonly number[], out: OutType): H;
  /** Index (int32) of the max / min along `axis`, which is removed. */
  argReduce(op: ArgReduceOp, x: H, axis: number, out: OutType): H;
  /** Inclusive scan along `axis`; `reverse` scans from the end. */
  cumulative(op: CumulativeOp, x: H, axis: number, reverse: boolean): H;

  /** Generalised batched matrix product; operands have the same dtype as `out`. */
  dotGeneral(x: H, y: H, dims: DotDims, out: OutType): H;

  // Structural ops. Backends should make these views (no copy) where they can.
  reshape(x: H, shape: Shape): H;
  transpose(x: H, perm: readonly number[]): H;
  /** numpy-style broadcast: operand dim i maps to output dim `dims[i]` (size equal, or 1). */
  broadcastInDim(x: H, shape: Shape, dims: readonly number[]): H;
  slice(x: H, starts: readonly number[], limits: readonly number[], strides: readonly number[]): H;
  reverse(x: H, axes: readonly number[]): H;
  /** Pads with `value`; `lo`/`hi` may be negative (cropping); `interior` inserts between elements. */
  pad(x: H, value: number, lo: readonly number[], hi: readonly number[], interior: readonly number[]): H;
  concatenate(xs: readonly H[], axis: number): H;

  /**
   * out[b..., pre..., i..., post...] = x[b..., pre..., idx[b..., i...], post...] where the first
   * `batchDims` dims of x and idx are shared batch dims and `axis` (>= batchDims) is the gathered axis
   * of x. Out-of-range indices are clamped (as JAX's default gather mode for take).
   */
  gather(x: H, idx: H, axis: number, batchDims: number, out: OutType): H;
  /**
   * The transpose of `gather`: returns a copy of `operand` with `updates` added at the gathered
   * positions (duplicates accumulate, in index order, so results are deterministic). Out-of-range
   * indices are clamped, as in gather.
   */
  scatterAdd(operand: H, idx: H, updates: H, axis: number, batchDims: number): H;
  /** Slice of static `sizes` starting at scalar int32 `starts` (clamped so the slice fits). */
  dynamicSlice(x: H, starts: readonly H[], sizes: readonly number[]): H;
  /** Copy of x with `update` written at scalar int32 `starts` (clamped so it fits). */
  dynamicUpdateSlice(x: H, update: H, starts: readonly H[]): H;

  /**
   * Stable sort along `axis` (the last axis after the caller moves it) of several same-shape operands,
   * ordered by the first `numKeys` operands lexicographically; the rest are permuted alongside.
   * NaNs sort to the end, as numpy.
   */
  sort(xs: readonly H[], axis: number, numKeys: number): H[];

  /** Threefry-2x32 block cipher (20 rounds) on uint32 arrays of one shape, as JAX's threefry2x32_p. */
  threefry2x32(k0: H, k1: H, x0: H, x1: H): [H, H];
}

/** A device buffer API on top of the builder: host transfers and lifetime. */
export interface Backend<B> extends KernelBuilder<B> {
  readonly kind: "cpu" | "webgpu";
  /** Copy host data into a new device buffer (C order). */
  fromHost(data: AnyTypedArray, out: OutType): B;
  /** Read back in C order. Waits for pending work on lazy devices. */
  read(x: B): Promise<AnyTypedArray>;
  /** Synchronous read where the device allows it (CPU); undefined where it cannot (WebGPU). */
  readSync?(x: B): AnyTypedArray;
  /** Bytes held by this buffer (0 for views sharing storage). */
  bytesOf(x: B): number;
  /** Release the buffer's storage (idempotent). */
  release(x: B): void;
}

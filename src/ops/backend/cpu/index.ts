/**
 * @file The CPU backend: `CpuBackend` implements `Backend<CpuBuffer>` (see ../kernel.ts for the op
 * contract) by delegating to the kernel modules of this folder. Read buffer.ts first for the buffer
 * layout and strided iteration, then the module of the op at hand:
 * elementwise.ts (unary, binary, select, cast, bitcast), reduce.ts (reduce, argReduce, cumulative),
 * matmul.ts (dotGeneral), structural.ts (views, pad, concatenate), indexing.ts (gather, scatterAdd,
 * dynamic slices), sort.ts, threefry.ts, math.ts (erf, erf_inv and other scalar functions).
 *
 * Large float32 unary and binary ops run as one-node fused Wasm SIMD kernels, and large float32
 * sum / max / min over leading or trailing axes on Wasm SIMD reductions (wasm/eager.ts); the
 * TypeScript kernels stay the reference and serve everything else.
 *
 * Everything is synchronous; `read` resolves immediately. Outputs of compute ops are fresh contiguous
 * buffers; reshape / transpose / broadcastInDim / slice / reverse return views sharing storage.
 */
import { shapeSize, shapeStr, type DType, type Shape } from "../../../autodiff/aval.js";
import { ShapeError } from "../../../autodiff/errors.js";
import type {
  AnyTypedArray,
  ArgReduceOp,
  Backend,
  BinaryOp,
  CumulativeOp,
  DotDims,
  OutType,
  ReduceOp,
  UnaryOp,
} from "../kernel.js";
import { allocateUninit, checkShape, copyOut, CpuBuffer, dtypeOfArray } from "./buffer.js";
import { binary, bitcast, cast, select, unary } from "./elementwise.js";
import { dynamicSlice, dynamicUpdateSlice, gather, scatterAdd } from "./indexing.js";
import { dotGeneral } from "./matmul.js";
import { argReduce, cumulative, reduce } from "./reduce.js";
import { sort } from "./sort.js";
import {
  broadcastInDim,
  concatenate,
  pad,
  reshape,
  reverse,
  slice,
  transpose,
} from "./structural.js";
import { threefry2x32 } from "./threefry.js";
import { eagerBinaryFast, eagerReduceFast, eagerUnaryFast } from "./wasm/eager.js";

export { CpuBuffer } from "./buffer.js";
export { erf, erfc, erfInv } from "./math.js";

/**
 * Host data as storage for `out.dtype`: always a copy. When the array type differs it is converted as
 * typed arrays convert (to float: by value; to int: truncated and wrapped; to bool: `!= 0`).
 */
function hostToStorage(op: string, data: AnyTypedArray, out: OutType): AnyTypedArray {
  checkShape(op, out.shape);
  const size = shapeSize(out.shape);
  if (data.length !== size) {
    throw new ShapeError(`${op}: ${size} elements for shape ${shapeStr(out.shape)}, got ${data.length}`);
  }
  const storage = allocateUninit(out.dtype, size);
  if (dtypeOfArray(data) === out.dtype) {
    storage.set(data as never);
    return storage;
  }
  if (out.dtype === "bool") for (let i = 0; i < size; i++) storage[i] = data[i] !== 0 ? 1 : 0;
  else storage.set(data as never);
  return storage;
}

/** The CPU backend (synchronous, single-threaded, float64-capable). */
export class CpuBackend implements Backend<CpuBuffer> {
  readonly kind = "cpu" as const;

  typeOf(x: CpuBuffer): OutType {
    return { shape: x.shape, dtype: x.dtype };
  }

  // ---- host transfer and lifetime ----

  fromHost(data: AnyTypedArray, out: OutType): CpuBuffer {
    return new CpuBuffer(hostToStorage("fromHost", data, out), out.dtype, out.shape);
  }

  read(x: CpuBuffer): Promise<AnyTypedArray> {
    try {
      return Promise.resolve(copyOut(x));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** A fresh C-order copy (never the internal storage). */
  readSync(x: CpuBuffer): AnyTypedArray {
    return copyOut(x);
  }

  bytesOf(x: CpuBuffer): number {
    return x.owned && !x.released ? x.data.byteLength : 0;
  }

  release(x: CpuBuffer): void {
    x.release();
  }

  // ---- constants ----

  full(out: OutType, value: number): CpuBuffer {
    checkShape("full", out.shape);
    const x = CpuBuffer.zeros(out);
    // -0 too: `value !== 0` is false for it, but a float -0 must keep its sign.
    if (value !== 0 || Object.is(value, -0)) x.data.fill(out.dtype === "bool" ? (value !== 0 ? 1 : 0) : value);
    return x;
  }

  constant(data: AnyTypedArray, out: OutType): CpuBuffer {
    return new CpuBuffer(hostToStorage("constant", data, out), out.dtype, out.shape);
  }

  iota(out: OutType, dim: number): CpuBuffer {
    checkShape("iota", out.shape);
    const shape = out.shape;
    if (!Number.isInteger(dim) || dim < 0 || dim >= shape.length) {
      throw new ShapeError(`iota: a dim in [0, ${shape.length}), got ${dim} for ${shapeStr(shape)}`);
    }
    const x = CpuBuffer.zeros(out);
    const d = x.data;
    const len = shape[dim]!;
    let inner = 1;
    for (let i = dim + 1; i < shape.length; i++) inner *= shape[i]!;
    const block = len * inner;
    for (let base = 0; base < d.length; base += block) {
      for (let k = 0; k < len; k++) d.fill(k, base + k * inner, base + (k + 1) * inner);
    }
    return x;
  }

  // ---- elementwise ----

  unary(op: UnaryOp, x: CpuBuffer, out: OutType): CpuBuffer {
    return eagerUnaryFast(op, x, out) ?? unary(op, x, out);
  }

  binary(op: BinaryOp, x: CpuBuffer, y: CpuBuffer, out: OutType): CpuBuffer {
    return eagerBinaryFast(op, x, y, out) ?? binary(op, x, y, out);
  }

  select(pred: CpuBuffer, onTrue: CpuBuffer, onFalse: CpuBuffer): CpuBuffer {
    return select(pred, onTrue, onFalse);
  }

  cast(x: CpuBuffer, dtype: DType): CpuBuffer {
    return cast(x, dtype);
  }

  bitcast(x: CpuBuffer, dtype: DType): CpuBuffer {
    return bitcast(x, dtype);
  }

  // ---- reductions ----

  reduce(op: ReduceOp, x: CpuBuffer, axes: readonly number[], out: OutType): CpuBuffer {
    return eagerReduceFast(op, x, axes, out) ?? reduce(op, x, axes, out);
  }

  argReduce(op: ArgReduceOp, x: CpuBuffer, axis: number, out: OutType): CpuBuffer {
    return argReduce(op, x, axis, out);
  }

  cumulative(op: CumulativeOp, x: CpuBuffer, axis: number, reverse: boolean): CpuBuffer {
    return cumulative(op, x, axis, reverse);
  }

  dotGeneral(x: CpuBuffer, y: CpuBuffer, dims: DotDims, out: OutType): CpuBuffer {
    return dotGeneral(x, y, dims, out);
  }

  // ---- structural ----

  reshape(x: CpuBuffer, shape: Shape): CpuBuffer {
    return reshape(x, shape);
  }

  transpose(x: CpuBuffer, perm: readonly number[]): CpuBuffer {
    return transpose(x, perm);
  }

  broadcastInDim(x: CpuBuffer, shape: Shape, dims: readonly number[]): CpuBuffer {
    return broadcastInDim(x, shape, dims);
  }

  slice(x: CpuBuffer, starts: readonly number[], limits: readonly number[], strides: readonly number[]): CpuBuffer {
    return slice(x, starts, limits, strides);
  }

  reverse(x: CpuBuffer, axes: readonly number[]): CpuBuffer {
    return reverse(x, axes);
  }

  pad(
    x: CpuBuffer,
    value: number,
    lo: readonly number[],
    hi: readonly number[],
    interior: readonly number[],
  ): CpuBuffer {
    return pad(x, value, lo, hi, interior);
  }

  concatenate(xs: readonly CpuBuffer[], axis: number): CpuBuffer {
    return concatenate(xs, axis);
  }

  // ---- indexing ----

  gather(x: CpuBuffer, idx: CpuBuffer, axis: number, batchDims: number, out: OutType): CpuBuffer {
    return gather(x, idx, axis, batchDims, out);
  }

  scatterAdd(operand: CpuBuffer, idx: CpuBuffer, updates: CpuBuffer, axis: number, batchDims: number): CpuBuffer {
    return scatterAdd(operand, idx, updates, axis, batchDims);
  }

  dynamicSlice(x: CpuBuffer, starts: readonly CpuBuffer[], sizes: readonly number[]): CpuBuffer {
    return dynamicSlice(x, starts, sizes);
  }

  dynamicUpdateSlice(x: CpuBuffer, update: CpuBuffer, starts: readonly CpuBuffer[]): CpuBuffer {
    return dynamicUpdateSlice(x, update, starts);
  }

  sort(xs: readonly CpuBuffer[], axis: number, numKeys: number): CpuBuffer[] {
    return sort(xs, axis, numKeys);
  }

  threefry2x32(k0: CpuBuffer, k1: CpuBuffer, x0: CpuBuffer, x1: CpuBuffer): [CpuBuffer, CpuBuffer] {
    return threefry2x32(k0, k1, x0, x1);
  }
}

/** The shared CPU backend instance. */
export const cpuBackend = new CpuBackend();

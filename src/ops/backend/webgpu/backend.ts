/// <reference types="@webgpu/types" />
/**
 * @file `WebGpuBackend implements Backend<GpuHandle>`: the kernel-op contract of ../kernel.ts on a
 * WebGPU device, with the CPU backend's semantics (../cpu/ is the reference). Read runtime.ts for
 * batching, pooling and faults, handle.ts for the buffer type, then kernels/*.ts per op.
 *
 * - Operations are lazy: each encodes dispatches and returns a handle at once; `read` is the only wait.
 * - reshape (when the layout allows), transpose, broadcastInDim, slice and reverse are views sharing
 *   storage (reference counted); every other op writes a fresh contiguous buffer.
 * - Argument checks mirror the CPU backend's, with the same messages, so a program fails the same way
 *   on either device. The view ops reuse the CPU's own layout functions on a data-less CpuBuffer.
 * - float64 is a DTypeError naming the device; bool is stored as u32.
 */
import { isInt, shapeSize, shapeStr, type DType, type Shape } from "../../../autodiff/aval.js";
import { BackendError, DTypeError, ShapeError } from "../../../autodiff/errors.js";
import { checkAxes, checkShape, contiguousStrides, CpuBuffer, expectDType, expectShape } from "../cpu/buffer.js";
import * as cpuLayout from "../cpu/structural.js";
import { checkGatherArgs, padShape, reshapeStrides } from "../strides.js";
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
import { COMPARISON_OPS } from "../kernel.js";
import { bitsOf, GpuHandle, GpuStorage, wgslType } from "./handle.js";
import { gather, gatherLayout, scatterAdd, type GatherLayout } from "./kernels/indexing.js";
import {
  copyInto,
  dynamicSliceKernel,
  dynamicStarts,
  fill,
  iota,
  materialize,
  runMap,
  threefryBody,
} from "./kernels/map.js";
import { dotGeneral } from "./kernels/matmul.js";
import { argReduce, cumulative, reduce } from "./kernels/reduce.js";
import { newHandle, releaseTemp } from "./kernels/common.js";
import { sort } from "./kernels/sort.js";
import type { Kernel, Runtime, RuntimeStats } from "./runtime.js";
import { castExpr, unaryExpr, binaryExpr } from "./wgsl.js";

export { GpuHandle } from "./handle.js";

/** Storage for the data-less CpuBuffers the view ops compute layouts on. */
const NO_DATA = new Uint8Array(0);


/** The WebGPU backend of one device. */
export class WebGpuBackend implements Backend<GpuHandle> {
  readonly kind = "webgpu" as const;

  /** Safety net: storage of handles dropped without release (kernel intermediates) is reclaimed. */
  private readonly orphans = new FinalizationRegistry<GpuStorage>((s) => this.unref(s));

  constructor(
    readonly rt: Runtime,
    readonly deviceId: string,
  ) {}

  // ---- handles ----

  /** Registers a handle this backend hands out (fresh storage or a view) with the safety net. */
  private fresh(h: GpuHandle): GpuHandle {
    this.orphans.register(h, h.storage, h);
    return h;
  }

  private view(x: GpuHandle, shape: Shape, strides: readonly number[], offset: number): GpuHandle {
    x.storage.refs++;
    return this.fresh(new GpuHandle(x.storage, x.dtype, shape, strides, offset, false));
  }

  private unref(s: GpuStorage): void {
    if (--s.refs > 0 || s.buffer === null) return;
    this.rt.release(s.buffer);
    s.buffer = null;
  }

  /** Checks the device is usable and x is live. */
  private live(op: string, ...xs: readonly GpuHandle[]): void {
    this.rt.check();
    for (const x of xs) {
      if (x.released || x.storage.buffer === null) {
        throw new BackendError(`${op}: a live ${this.deviceId} buffer, got a released ${x.dtype}${shapeStr(x.shape)}`);
      }
    }
  }

  /** DTypeError for dtypes WGSL cannot store (float64), naming the device. */
  private supported(op: string, dtype: DType): void {
    if (dtype === "float64") {
      throw new DTypeError(
        `${op}: float64 is not supported on ${this.deviceId}\nTip: use float32, or run float64 code on the CPU device`,
      );
    }
    wgslType(dtype);
  }

  /** A data-less CpuBuffer with x's layout, for the CPU's layout functions. */
  private layout(x: GpuHandle): CpuBuffer {
    return new CpuBuffer(NO_DATA, x.dtype, x.shape, x.strides, x.offset, false);
  }

  private fromLayout(x: GpuHandle, c: CpuBuffer): GpuHandle {
    return this.view(x, c.shape, c.strides, c.offset);
  }

  // ---- Backend ----

  typeOf(x: GpuHandle): OutType {
    return { shape: x.shape, dtype: x.dtype };
  }

  fromHost(data: AnyTypedArray, out: OutType): GpuHandle {
    return this.upload("fromHost", data, out);
  }

  constant(data: AnyTypedArray, out: OutType): GpuHandle {
    return this.upload("constant", data, out);
  }

  private upload(op: string, data: AnyTypedArray, out: OutType): GpuHandle {
    this.rt.check();
    checkShape(op, out.shape);
    this.supported(op, out.dtype);
    const size = shapeSize(out.shape);
    if (data.length !== size) {
      throw new ShapeError(`${op}: ${size} elements for shape ${shapeStr(out.shape)}, got ${data.length}`);
    }
    const bytes = size * 4;
    const buffer = this.rt.alloc(op, bytes, true);
    const h = this.fresh(new GpuHandle(new GpuStorage(buffer, bytes), out.dtype, out.shape));
    if (size > 0) this.rt.upload(buffer, storageWords(data, out.dtype));
    return h;
  }

  async read(x: GpuHandle): Promise<AnyTypedArray> {
    this.live("read", x);
    let src = x;
    if (!x.contiguous) src = materialize(this.rt, x);
    try {
      const bytes = await this.rt.read(src.buffer, src.offset * 4, x.size * 4);
      switch (x.dtype) {
        case "float32":
          return new Float32Array(bytes);
        case "int32":
          return new Int32Array(bytes);
        case "uint32":
          return new Uint32Array(bytes);
        case "bool":
          return Uint8Array.from(new Uint32Array(bytes), (v) => (v !== 0 ? 1 : 0));
        default:
          throw new DTypeError(`read: a dtype of ${this.deviceId}, got ${x.dtype}`);
      }
    } finally {
      if (src !== x) releaseTemp(this.rt, src);
    }
  }

  bytesOf(x: GpuHandle): number {
    return x.owned && !x.released ? x.storage.bytes : 0;
  }

  release(x: GpuHandle): void {
    if (x.released) return;
    x.released = true;
    this.orphans.unregister(x);
    this.unref(x.storage);
  }

  // ---- constants ----

  full(out: OutType, value: number): GpuHandle {
    this.rt.check();
    checkShape("full", out.shape);
    this.supported("full", out.dtype);
    return this.fresh(fill(this.rt, out.dtype, out.shape, bitsOf(value, out.dtype)));
  }

  iota(out: OutType, dim: number): GpuHandle {
    this.rt.check();
    checkShape("iota", out.shape);
    this.supported("iota", out.dtype);
    if (!Number.isInteger(dim) || dim < 0 || dim >= out.shape.length) {
      throw new ShapeError(`iota: a dim in [0, ${out.shape.length}), got ${dim} for ${shapeStr(out.shape)}`);
    }
    return this.fresh(iota(this.rt, out.dtype, out.shape, dim));
  }

  // ---- elementwise ----

  unary(op: UnaryOp, x: GpuHandle, out: OutType): GpuHandle {
    this.live(op, x);
    expectShape(op, "an output shape equal to the operand's", x.shape, out.shape);
    const outDType: DType = op === "is_finite" ? "bool" : x.dtype;
    if (out.dtype !== outDType) {
      throw new DTypeError(`${op}: output dtype ${outDType} for a ${x.dtype} operand, got ${out.dtype}`);
    }
    const e = unaryExpr(op, x.dtype, "v"); // throws DTypeError for ops undefined on the dtype
    return this.fresh(
      runMap(this.rt, `u_${op}`, [x], [outDType], x.shape, ([v]) => ({ outs: [unaryExpr(op, x.dtype, v!).code], helpers: e.helpers }))[0]!,
    );
  }

  binary(op: BinaryOp, x: GpuHandle, y: GpuHandle, out: OutType): GpuHandle {
    this.live(op, x, y);
    if (x.dtype !== y.dtype) throw new DTypeError(`${op}: operands of one dtype, got ${x.dtype} and ${y.dtype}`);
    if (x.ndim !== y.ndim || x.shape.some((d, i) => d !== y.shape[i])) {
      throw new ShapeError(
        `${op}: operands of identical shape (broadcast explicitly first), got ${shapeStr(x.shape)} and ${shapeStr(y.shape)}`,
      );
    }
    expectShape(op, "an output shape equal to the operands'", x.shape, out.shape);
    const outDType: DType = COMPARISON_OPS.has(op) ? "bool" : x.dtype;
    if (out.dtype !== outDType) {
      throw new DTypeError(`${op}: output dtype ${outDType} for ${x.dtype} operands, got ${out.dtype}`);
    }
    const e = binaryExpr(op, x.dtype, "a", "b");
    return this.fresh(
      runMap(this.rt, `b_${op}`, [x, y], [outDType], x.shape, ([a, b]) => ({
        outs: [binaryExpr(op, x.dtype, a!, b!).code],
        helpers: e.helpers,
      }))[0]!,
    );
  }

  select(pred: GpuHandle, onTrue: GpuHandle, onFalse: GpuHandle): GpuHandle {
    this.live("select", pred, onTrue, onFalse);
    if (pred.dtype !== "bool") throw new DTypeError(`select: a bool predicate, got ${pred.dtype}`);
    if (onTrue.dtype !== onFalse.dtype) {
      throw new DTypeError(`select: branches of one dtype, got ${onTrue.dtype} and ${onFalse.dtype}`);
    }
    expectShape("select", "a true branch of the predicate's shape", pred.shape, onTrue.shape);
    expectShape("select", "a false branch of the predicate's shape", pred.shape, onFalse.shape);
    return this.fresh(
      runMap(this.rt, "select", [pred, onTrue, onFalse], [onTrue.dtype], pred.shape, ([p, t, f]) => ({
        outs: [`select(${f}, ${t}, ${p} != 0u)`],
      }))[0]!,
    );
  }

  cast(x: GpuHandle, dtype: DType): GpuHandle {
    this.live("convert_element_type", x);
    this.supported("convert_element_type", dtype);
    const e = castExpr(x.dtype, dtype, "v");
    return this.fresh(
      runMap(this.rt, `cast`, [x], [dtype], x.shape, ([v]) => ({ outs: [castExpr(x.dtype, dtype, v!).code], helpers: e.helpers }))[0]!,
    );
  }

  bitcast(x: GpuHandle, dtype: DType): GpuHandle {
    this.live("bitcast_convert_type", x);
    const four = (d: DType): boolean => d === "float32" || d === "int32" || d === "uint32";
    if (x.dtype !== dtype && !(four(x.dtype) && four(dtype))) {
      throw new DTypeError(`bitcast: dtypes of one width (float32, int32, uint32), got ${x.dtype} to ${dtype}`);
    }
    const t = wgslType(dtype);
    return this.fresh(runMap(this.rt, "bitcast", [x], [dtype], x.shape, ([v]) => ({ outs: [`bitcast<${t}>(${v})`] }))[0]!);
  }

  // ---- reductions ----

  reduce(op: ReduceOp, x: GpuHandle, axes: readonly number[], out: OutType): GpuHandle {
    const name = `reduce_${op}`;
    this.live(name, x);
    checkAxes(name, axes, x.ndim);
    const kept = x.shape.filter((_, d) => !axes.includes(d));
    expectShape(name, "an output shape with the reduced axes removed", kept, out.shape);
    expectDType(name, "an output dtype equal to the operand's", x.dtype, out.dtype);
    return this.fresh(reduce(this.rt, op, x, axes));
  }

  argReduce(op: ArgReduceOp, x: GpuHandle, axis: number, out: OutType): GpuHandle {
    this.live(op, x);
    checkAxes(op, [axis], x.ndim);
    const outShape = x.shape.filter((_, d) => d !== axis);
    expectShape(op, "an output shape with the axis removed", outShape, out.shape);
    expectDType(op, "output dtype", "int32", out.dtype);
    if (x.shape[axis] === 0 && shapeSize(outShape) > 0) {
      throw new ShapeError(`${op}: a non-empty axis ${axis}, got shape [${x.shape.join(", ")}]`);
    }
    return this.fresh(argReduce(this.rt, op, x, axis));
  }

  cumulative(op: CumulativeOp, x: GpuHandle, axis: number, reverse: boolean): GpuHandle {
    this.live(`cum${op}`, x);
    checkAxes(`cum${op}`, [axis], x.ndim);
    return this.fresh(cumulative(this.rt, op, x, axis, reverse));
  }

  dotGeneral(x: GpuHandle, y: GpuHandle, dims: DotDims, out: OutType): GpuHandle {
    this.live("dot_general", x, y);
    if (x.dtype !== y.dtype) throw new DTypeError(`dot_general: operands of one dtype, got ${x.dtype} and ${y.dtype}`);
    expectDType("dot_general", "an output dtype equal to the operands'", x.dtype, out.dtype);
    if (x.dtype === "bool") throw new DTypeError("dot_general: numeric operands, got bool");
    const [lc, rc] = dims.contracting;
    const [lb, rb] = dims.batch;
    const fail = (what: string): never => {
      throw new ShapeError(
        `dot_general: ${what}, got lhs ${shapeStr(x.shape)}, rhs ${shapeStr(y.shape)}, ` +
          `contracting [[${lc.join(", ")}], [${rc.join(", ")}]], batch [[${lb.join(", ")}], [${rb.join(", ")}]]`,
      );
    };
    if (lc.length !== rc.length) fail("contracting axis lists of equal length");
    if (lb.length !== rb.length) fail("batch axis lists of equal length");
    const valid = (axes: readonly number[], ndim: number): boolean =>
      axes.every((a) => Number.isInteger(a) && a >= 0 && a < ndim) && new Set(axes).size === axes.length;
    if (!valid([...lc, ...lb], x.ndim) || !valid([...rc, ...rb], y.ndim)) fail("distinct in-range batch and contracting axes");
    lc.forEach((a, i) => x.shape[a] !== y.shape[rc[i]!] && fail("equal contracting sizes"));
    lb.forEach((a, i) => x.shape[a] !== y.shape[rb[i]!] && fail("equal batch sizes"));
    const lFree = x.shape.map((_, d) => d).filter((d) => !lc.includes(d) && !lb.includes(d));
    const rFree = y.shape.map((_, d) => d).filter((d) => !rc.includes(d) && !rb.includes(d));
    const outShape = [...lb.map((a) => x.shape[a]!), ...lFree.map((a) => x.shape[a]!), ...rFree.map((a) => y.shape[a]!)];
    expectShape("dot_general", "output shape", outShape, out.shape);
    return this.fresh(dotGeneral(this.rt, x, y, lb, rb, lc, rc, outShape));
  }

  // ---- structural ----

  reshape(x: GpuHandle, shape: Shape): GpuHandle {
    this.live("reshape", x);
    checkShape("reshape", shape);
    if (shapeSize(shape) !== x.size) {
      throw new ShapeError(
        `reshape: a shape with ${x.size} elements, got ${shapeStr(shape)} (${shapeSize(shape)}) for ${shapeStr(x.shape)}`,
      );
    }
    const strides = x.contiguous ? contiguousStrides(shape) : reshapeStrides(x.shape, x.strides, shape);
    if (strides !== null) return this.view(x, shape, strides, x.offset);
    const m = materialize(this.rt, x);
    return this.fresh(new GpuHandle(m.storage, m.dtype, shape));
  }

  transpose(x: GpuHandle, perm: readonly number[]): GpuHandle {
    this.live("transpose", x);
    return this.fromLayout(x, cpuLayout.transpose(this.layout(x), perm));
  }

  broadcastInDim(x: GpuHandle, shape: Shape, dims: readonly number[]): GpuHandle {
    this.live("broadcast_in_dim", x);
    return this.fromLayout(x, cpuLayout.broadcastInDim(this.layout(x), shape, dims));
  }

  slice(x: GpuHandle, starts: readonly number[], limits: readonly number[], strides: readonly number[]): GpuHandle {
    this.live("slice", x);
    return this.fromLayout(x, cpuLayout.slice(this.layout(x), starts, limits, strides));
  }

  reverse(x: GpuHandle, axes: readonly number[]): GpuHandle {
    this.live("rev", x);
    return this.fromLayout(x, cpuLayout.reverse(this.layout(x), axes));
  }

  pad(x: GpuHandle, value: number, lo: readonly number[], hi: readonly number[], interior: readonly number[]): GpuHandle {
    this.live("pad", x);
    const nd = x.ndim;
    const outShape = padShape(x.shape, lo, hi, interior);
    const out = fill(this.rt, x.dtype, outShape, bitsOf(value, x.dtype));
    // Input index i lands at lo + i·(interior + 1); copy the input window that lands inside the output.
    const outStrides = contiguousStrides(outShape);
    const starts: number[] = [];
    const limits: number[] = [];
    const dstStrides: number[] = [];
    let dstOffset = 0;
    for (let d = 0; d < nd; d++) {
      const step = interior[d]! + 1;
      const l = lo[d]!;
      const first = l >= 0 ? 0 : Math.ceil(-l / step);
      const last = outShape[d]! === 0 ? -1 : Math.floor((outShape[d]! - 1 - l) / step);
      const limit = Math.min(x.shape[d]!, last + 1);
      if (limit <= first) return this.fresh(out);
      starts.push(first);
      limits.push(limit);
      dstStrides.push(outStrides[d]! * step);
      dstOffset += (l + first * step) * outStrides[d]!;
    }
    const w = cpuLayout.slice(this.layout(x), starts, limits, new Array<number>(nd).fill(1));
    const window = new GpuHandle(x.storage, x.dtype, w.shape, w.strides, w.offset, false);
    copyInto(this.rt, out, dstOffset, dstStrides, window);
    return this.fresh(out);
  }

  concatenate(xs: readonly GpuHandle[], axis: number): GpuHandle {
    if (xs.length === 0) throw new ShapeError("concatenate: at least one operand, got 0");
    this.live("concatenate", ...xs);
    const first = xs[0]!;
    checkAxes("concatenate", [axis], first.ndim);
    let total = 0;
    for (const x of xs) {
      if (x.dtype !== first.dtype) throw new DTypeError(`concatenate: operands of one dtype, got ${first.dtype} and ${x.dtype}`);
      const same = x.ndim === first.ndim && x.shape.every((n, d) => d === axis || n === first.shape[d]);
      if (!same) {
        throw new ShapeError(
          `concatenate: shapes equal except on axis ${axis}, got ${shapeStr(first.shape)} and ${shapeStr(x.shape)}`,
        );
      }
      total += x.shape[axis]!;
    }
    const outShape = first.shape.map((n, d) => (d === axis ? total : n));
    // Every element is written by one of the copies.
    const out = newHandle(this.rt, "concatenate", first.dtype, outShape, shapeSize(outShape));
    const strides = contiguousStrides(outShape);
    let at = 0;
    for (const x of xs) {
      copyInto(this.rt, out, at * strides[axis]!, strides, x);
      at += x.shape[axis]!;
    }
    return this.fresh(out);
  }

  // ---- indexing ----

  private gatherLayout(op: string, x: GpuHandle, idx: GpuHandle, axis: number, batchDims: number): GatherLayout {
    checkGatherArgs(op, x.shape, idx.shape, idx.dtype, axis, batchDims);
    return gatherLayout(x.shape, idx.shape, axis, batchDims);
  }


  gather(x: GpuHandle, idx: GpuHandle, axis: number, batchDims: number, out: OutType): GpuHandle {
    this.live("gather", x, idx);
    const L = this.gatherLayout("gather", x, idx, axis, batchDims);
    expectShape("gather", "output shape", L.gathered, out.shape);
    expectDType("gather", "an output dtype equal to the operand's", x.dtype, out.dtype);
    if (shapeSize(L.gathered) > 0 && L.len === 0) {
      throw new ShapeError(`gather: a non-empty axis ${axis}, got operand ${shapeStr(x.shape)}`);
    }
    return this.fresh(gather(this.rt, x, idx, L));
  }

  scatterAdd(operand: GpuHandle, idx: GpuHandle, updates: GpuHandle, axis: number, batchDims: number): GpuHandle {
    this.live("scatter_add", operand, idx, updates);
    const L = this.gatherLayout("scatter_add", operand, idx, axis, batchDims);
    expectShape("scatter_add", "updates of shape", L.gathered, updates.shape);
    expectDType("scatter_add", "updates of the operand's dtype", operand.dtype, updates.dtype);
    if (updates.size > 0 && L.len === 0) {
      throw new ShapeError(`scatter_add: a non-empty axis ${axis}, got operand ${shapeStr(operand.shape)}`);
    }
    return this.fresh(scatterAdd(this.rt, operand, idx, updates, L));
  }

  /** Validates dynamic starts against `shape` / `sizes` (as the CPU's clampedStarts). */
  private checkStarts(op: string, shape: Shape, starts: readonly GpuHandle[], sizes: Shape): void {
    if (starts.length !== shape.length || sizes.length !== shape.length) {
      throw new ShapeError(
        `${op}: one start and size per dim of ${shapeStr(shape)}, got ${starts.length} starts and sizes ${shapeStr(sizes)}`,
      );
    }
    shape.forEach((n, d) => {
      const size = sizes[d]!;
      if (!Number.isInteger(size) || size < 0 || size > n) {
        throw new ShapeError(`${op}: window sizes within the operand, got ${shapeStr(sizes)} for ${shapeStr(shape)}`);
      }
      const s = starts[d]!;
      if (s.size !== 1) throw new ShapeError(`${op}: scalar start indices, got shape ${shapeStr(s.shape)}`);
      if (!isInt(s.dtype)) throw new DTypeError(`${op}: int32 start indices, got ${s.dtype}`);
    });
  }

  dynamicSlice(x: GpuHandle, starts: readonly GpuHandle[], sizes: readonly number[]): GpuHandle {
    this.live("dynamic_slice", x, ...starts);
    this.checkStarts("dynamic_slice", x.shape, starts, sizes);
    const s = dynamicStarts(this.rt, starts);
    const out = dynamicSliceKernel(this.rt, x, s, starts.map((h) => h.dtype === "uint32"), sizes);
    releaseTemp(this.rt, s);
    return this.fresh(out);
  }

  dynamicUpdateSlice(x: GpuHandle, update: GpuHandle, starts: readonly GpuHandle[]): GpuHandle {
    this.live("dynamic_update_slice", x, update, ...starts);
    expectDType("dynamic_update_slice", "an update of the operand's dtype", x.dtype, update.dtype);
    if (update.ndim !== x.ndim) {
      throw new ShapeError(
        `dynamic_update_slice: an update of the operand's rank, got ${shapeStr(update.shape)} for ${shapeStr(x.shape)}`,
      );
    }
    this.checkStarts("dynamic_update_slice", x.shape, starts, update.shape);
    const strides = contiguousStrides(x.shape);
    const out = materialize(this.rt, x);
    if (update.size > 0) {
      const s = dynamicStarts(this.rt, starts);
      copyInto(this.rt, out, 0, strides, update, {
        starts: s.buffer,
        limits: x.shape.map((n, d) => n - update.shape[d]!),
        unsigned: starts.map((h) => h.dtype === "uint32"),
        strides,
      });
      releaseTemp(this.rt, s);
    }
    return this.fresh(out);
  }

  sort(xs: readonly GpuHandle[], axis: number, numKeys: number): GpuHandle[] {
    if (xs.length === 0) throw new ShapeError("sort: at least one operand, got 0");
    this.live("sort", ...xs);
    const shape = xs[0]!.shape;
    for (const x of xs) {
      if (x.ndim !== shape.length || x.shape.some((n, d) => n !== shape[d])) {
        throw new ShapeError(`sort: operands of one shape, got ${shapeStr(shape)} and ${shapeStr(x.shape)}`);
      }
    }
    if (!Number.isInteger(numKeys) || numKeys < 1 || numKeys > xs.length) {
      throw new ShapeError(`sort: 1 <= numKeys <= ${xs.length} operands, got ${numKeys}`);
    }
    checkAxes("sort", [axis], shape.length);
    return sort(this.rt, xs, axis, numKeys).map((h) => this.fresh(h));
  }

  threefry2x32(k0: GpuHandle, k1: GpuHandle, x0: GpuHandle, x1: GpuHandle): [GpuHandle, GpuHandle] {
    this.live("threefry2x32", k0, k1, x0, x1);
    const shape = k0.shape;
    for (const v of [k0, k1, x0, x1]) {
      if (v.dtype !== "uint32") throw new DTypeError(`threefry2x32: uint32 operands, got ${v.dtype}`);
      if (v.ndim !== shape.length || v.shape.some((n, d) => n !== shape[d])) {
        throw new ShapeError(`threefry2x32: operands of one shape, got ${shapeStr(shape)} and ${shapeStr(v.shape)}`);
      }
    }
    const [a, b] = runMap(this.rt, "threefry2x32", [k0, k1, x0, x1], ["uint32", "uint32"], shape, threefryBody);
    return [this.fresh(a!), this.fresh(b!)];
  }

  // ---- beyond the Backend contract ----

  /** Submits pending work and waits until the device finished it (benchmarks). */
  sync(): Promise<void> {
    return this.rt.sync();
  }

  /** GPU buffer and pipeline counters (tests, benchmarks). */
  stats(): RuntimeStats {
    return this.rt.stats();
  }

  /** Compiles a WGSL compute shader (entry point `main`); an error surfaces on the next read / op. */
  compileForTest(kernel: Kernel): void {
    this.rt.compile(kernel);
  }

  /** Destroys the GPUDevice: its arrays become unusable and every later operation throws. */
  destroy(): void {
    this.rt.destroy();
  }
}

/** Host data as 4-byte words of `dtype` (converted by value where the array type differs). */
function storageWords(data: AnyTypedArray, dtype: DType): Float32Array | Int32Array | Uint32Array {
  switch (dtype) {
    case "float32":
      return data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>);
    case "int32":
      return data instanceof Int32Array ? data : Int32Array.from(data as ArrayLike<number>);
    case "uint32":
      return data instanceof Uint32Array ? data : Uint32Array.from(data as ArrayLike<number>);
    case "bool":
      return Uint32Array.from(data as ArrayLike<number>, (v) => (v !== 0 ? 1 : 0));
    default:
      throw new DTypeError(`fromHost: a dtype of WebGPU, got ${dtype}`);
  }
}

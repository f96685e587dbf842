/**
 * @file Index-driven ops: gather / scatterAdd (one gathered axis with leading batch dims, indices
 * clamped), dynamicSlice / dynamicUpdateSlice (scalar start buffers, clamped like XLA so the window
 * fits). Operands may be any view; offset tables (`offsetsOf`) turn multi-dim index groups into flat
 * offsets so the inner loops are plain.
 */
import { checkGatherArgs } from "../strides.js";
import { isInt, shapeSize, shapeStr, type Shape } from "../../../autodiff/aval.js";
import { DTypeError, ShapeError } from "../../../autodiff/errors.js";
import type { OutType } from "../kernel.js";
import {
  allocate,
  contiguousData,
  contiguousStrides,
  copyStrided,
  CpuBuffer,
  expectDType,
  expectShape,
  materialize,
  mergedStride,
  offsetsOf,
} from "./buffer.js";
import { slice } from "./structural.js";

/** x = [batch..., pre..., len, post...], idx = [batch..., ind...]. */
interface GatherLayout {
  readonly batch: Shape;
  readonly pre: Shape;
  readonly len: number;
  readonly post: Shape;
  readonly ind: Shape;
  /** [batch..., pre..., ind..., post...]: gather's output, scatterAdd's updates. */
  readonly gathered: Shape;
}

function gatherLayout(op: string, x: CpuBuffer, idx: CpuBuffer, axis: number, batchDims: number): GatherLayout {
  const xs = x.shape;
  const is = idx.shape;
  checkGatherArgs(op, xs, is, idx.dtype, axis, batchDims);
  const batch = xs.slice(0, batchDims);
  const pre = xs.slice(batchDims, axis);
  const post = xs.slice(axis + 1);
  const ind = is.slice(batchDims);
  return { batch, pre, len: xs[axis]!, post, ind, gathered: [...batch, ...pre, ...ind, ...post] };
}

/** Clamps a raw index into [0, len - 1]. */
const clampIndex = (raw: number, len: number): number => (raw < 0 ? 0 : raw >= len ? len - 1 : raw);

/** out[b..., pre..., i..., post...] = x[b..., pre..., clamp(idx[b..., i...]), post...]. */
export function gather(
  x: CpuBuffer,
  idx: CpuBuffer,
  axis: number,
  batchDims: number,
  out: OutType,
): CpuBuffer {
  const L = gatherLayout("gather", x, idx, axis, batchDims);
  expectShape("gather", "output shape", L.gathered, out.shape);
  expectDType("gather", "an output dtype equal to the operand's", x.dtype, out.dtype);
  const size = shapeSize(L.gathered);
  const r = allocate(x.dtype, size);
  const result = new CpuBuffer(r, x.dtype, L.gathered);
  if (size === 0) return result;
  if (L.len === 0) throw new ShapeError(`gather: a non-empty axis ${axis}, got operand ${shapeStr(x.shape)}`);
  const xd = x.data;
  const id = contiguousData(idx);
  const iSize = shapeSize(L.ind);
  const postSize = shapeSize(L.post);
  const bOff = offsetsOf(L.batch, x.strides.slice(0, batchDims), x.offset);
  const pOff = offsetsOf(L.pre, x.strides.slice(batchDims, axis));
  const sA = x.strides[axis]!;
  const postStrides = x.strides.slice(axis + 1);
  const ps = mergedStride(L.post, postStrides);
  const postOff = ps === null ? offsetsOf(L.post, postStrides) : null;
  const bulk = ps === 1 && postSize >= 32 && r.constructor === xd.constructor;
  let o = 0;
  for (let b = 0; b < bOff.length; b++) {
    for (let p = 0; p < pOff.length; p++) {
      const rowBase = bOff[b]! + pOff[p]!;
      for (let i = 0; i < iSize; i++) {
        const base = rowBase + clampIndex(id[b * iSize + i]!, L.len) * sA;
        if (bulk) {
          r.set(xd.subarray(base, base + postSize) as never, o);
          o += postSize;
        } else if (postOff !== null) {
          for (let q = 0; q < postSize; q++) r[o++] = xd[base + postOff[q]!]!;
        } else {
          for (let q = 0, k = base; q < postSize; q++, k += ps!) r[o++] = xd[k]!;
        }
      }
    }
  }
  return result;
}

/**
 * The transpose of gather: a copy of `operand` with `updates` added at the gathered positions.
 * Duplicates accumulate in index order (b, pre, i, post in C order), so results are deterministic.
 */
export function scatterAdd(
  operand: CpuBuffer,
  idx: CpuBuffer,
  updates: CpuBuffer,
  axis: number,
  batchDims: number,
): CpuBuffer {
  const L = gatherLayout("scatter_add", operand, idx, axis, batchDims);
  expectShape("scatter_add", "updates of shape", L.gathered, updates.shape);
  expectDType("scatter_add", "updates of the operand's dtype", operand.dtype, updates.dtype);
  const out = materialize(operand);
  if (updates.size === 0) return out;
  if (L.len === 0) {
    throw new ShapeError(`scatter_add: a non-empty axis ${axis}, got operand ${shapeStr(operand.shape)}`);
  }
  const od = out.data;
  const ud = contiguousData(updates);
  const id = contiguousData(idx);
  const strides = contiguousStrides(operand.shape);
  const iSize = shapeSize(L.ind);
  const postSize = shapeSize(L.post);
  const bOff = offsetsOf(L.batch, strides.slice(0, batchDims));
  const pOff = offsetsOf(L.pre, strides.slice(batchDims, axis));
  const sA = strides[axis]!;
  const bool = operand.dtype === "bool";
  let t = 0;
  for (let b = 0; b < bOff.length; b++) {
    for (let p = 0; p < pOff.length; p++) {
      const rowBase = bOff[b]! + pOff[p]!;
      for (let i = 0; i < iSize; i++) {
        const base = rowBase + clampIndex(id[b * iSize + i]!, L.len) * sA;
        if (bool) for (let q = 0; q < postSize; q++) od[base + q] |= ud[t++]!;
        else for (let q = 0; q < postSize; q++) od[base + q] += ud[t++]!;
      }
    }
  }
  return out;
}

/** The value of a scalar integer start buffer. */
function readStart(op: string, s: CpuBuffer): number {
  if (s.size !== 1) throw new ShapeError(`${op}: scalar start indices, got shape ${shapeStr(s.shape)}`);
  if (!isInt(s.dtype)) throw new DTypeError(`${op}: int32 start indices, got ${s.dtype}`);
  return s.data[s.offset]!;
}

/** Clamped starts, so that a window of `sizes` at them fits in `shape` (as XLA). */
function clampedStarts(op: string, shape: Shape, starts: readonly CpuBuffer[], sizes: Shape): number[] {
  if (starts.length !== shape.length || sizes.length !== shape.length) {
    throw new ShapeError(
      `${op}: one start and size per dim of ${shapeStr(shape)}, ` +
        `got ${starts.length} starts and sizes ${shapeStr(sizes)}`,
    );
  }
  return shape.map((n, d) => {
    const size = sizes[d]!;
    if (!Number.isInteger(size) || size < 0 || size > n) {
      throw new ShapeError(`${op}: window sizes within the operand, got ${shapeStr(sizes)} for ${shapeStr(shape)}`);
    }
    return Math.min(Math.max(readStart(op, starts[d]!), 0), n - size);
  });
}

/** A fresh copy of the window of static `sizes` at clamped dynamic `starts`. */
export function dynamicSlice(x: CpuBuffer, starts: readonly CpuBuffer[], sizes: readonly number[]): CpuBuffer {
  const st = clampedStarts("dynamic_slice", x.shape, starts, sizes);
  const limits = st.map((s, d) => s + sizes[d]!);
  return materialize(slice(x, st, limits, new Array<number>(x.ndim).fill(1)));
}

/** A copy of x with `update` written at clamped dynamic `starts`. */
export function dynamicUpdateSlice(x: CpuBuffer, update: CpuBuffer, starts: readonly CpuBuffer[]): CpuBuffer {
  expectDType("dynamic_update_slice", "an update of the operand's dtype", x.dtype, update.dtype);
  if (update.ndim !== x.ndim) {
    throw new ShapeError(
      `dynamic_update_slice: an update of the operand's rank, got ${shapeStr(update.shape)} for ${shapeStr(x.shape)}`,
    );
  }
  const st = clampedStarts("dynamic_update_slice", x.shape, starts, update.shape);
  const out = materialize(x);
  const strides = contiguousStrides(x.shape);
  let at = 0;
  for (let d = 0; d < st.length; d++) at += st[d]! * strides[d]!;
  copyStrided(out.data, at, strides, update);
  return out;
}

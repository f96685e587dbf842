/**
 * @file Structural ops. reshape (when the layout allows), transpose, broadcastInDim, slice and reverse
 * are O(1) views: they only rewrite shape, strides and offset. pad and concatenate allocate the output
 * and copy each input into a strided window of it with `copyStrided`.
 */
import { shapeSize, shapeStr, type Shape } from "../../../autodiff/aval.js";
import { DTypeError, ShapeError } from "../../../autodiff/errors.js";
import { checkAxes, checkShape, contiguousStrides, copyOut, copyStrided, CpuBuffer } from "./buffer.js";
import { padShape, reshapeStrides } from "../strides.js";


/** Reshape (C order): a view when the layout allows, otherwise a contiguous copy. */
export function reshape(x: CpuBuffer, shape: Shape): CpuBuffer {
  checkShape("reshape", shape);
  if (shapeSize(shape) !== x.size) {
    throw new ShapeError(
      `reshape: a shape with ${x.size} elements, got ${shapeStr(shape)} (${shapeSize(shape)}) for ${shapeStr(x.shape)}`,
    );
  }
  const strides = x.contiguous ? contiguousStrides(shape) : reshapeStrides(x.shape, x.strides, shape);
  if (strides !== null) return x.view(shape, strides, x.offset);
  return new CpuBuffer(copyOut(x), x.dtype, shape);
}

/** Permutes dims: out dim i is x dim perm[i]. A view. */
export function transpose(x: CpuBuffer, perm: readonly number[]): CpuBuffer {
  if (perm.length !== x.ndim) {
    throw new ShapeError(`transpose: a permutation of ${x.ndim} axes, got [${perm.join(", ")}]`);
  }
  checkAxes("transpose", perm, x.ndim, false);
  return x.view(
    perm.map((p) => x.shape[p]!),
    perm.map((p) => x.strides[p]!),
    x.offset,
  );
}

/** numpy-style broadcast: x dim i becomes out dim dims[i] (equal size, or 1 -> stride 0). A view. */
export function broadcastInDim(x: CpuBuffer, shape: Shape, dims: readonly number[]): CpuBuffer {
  checkShape("broadcast_in_dim", shape);
  if (dims.length !== x.ndim) {
    throw new ShapeError(`broadcast_in_dim: ${x.ndim} target dims, got [${dims.join(", ")}]`);
  }
  checkAxes("broadcast_in_dim", dims, shape.length, false);
  const strides = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < dims.length; i++) {
    const n = x.shape[i]!;
    const target = shape[dims[i]!]!;
    if (n === target) strides[dims[i]!] = x.strides[i]!;
    else if (n !== 1) {
      throw new ShapeError(
        `broadcast_in_dim: operand dim ${i} of size 1 or ${target}, got ${shapeStr(x.shape)} to ${shapeStr(shape)}`,
      );
    }
  }
  return x.view(shape, strides, x.offset);
}

/** Strided slice [starts, limits) with steps `strides` (>= 1). A view. */
export function slice(
  x: CpuBuffer,
  starts: readonly number[],
  limits: readonly number[],
  strides: readonly number[],
): CpuBuffer {
  const nd = x.ndim;
  if (starts.length !== nd || limits.length !== nd || strides.length !== nd) {
    throw new ShapeError(
      `slice: ${nd} starts, limits and strides, got ${starts.length}, ${limits.length} and ${strides.length}`,
    );
  }
  const shape: number[] = [];
  const st: number[] = [];
  let offset = x.offset;
  for (let d = 0; d < nd; d++) {
    const s = starts[d]!;
    const l = limits[d]!;
    const k = strides[d]!;
    const ok = Number.isInteger(s) && Number.isInteger(l) && Number.isInteger(k);
    if (!ok || s < 0 || s > l || l > x.shape[d]! || k < 1) {
      throw new ShapeError(
        `slice: 0 <= start <= limit <= size and stride >= 1 on every dim, got start ${s}, limit ${l}, ` +
          `stride ${k} on dim ${d} of ${shapeStr(x.shape)}`,
      );
    }
    const n = Math.ceil((l - s) / k);
    shape.push(n);
    st.push(x.strides[d]! * k);
    if (n > 0) offset += s * x.strides[d]!;
  }
  return x.view(shape, st, offset);
}

/** Reverses `axes`. A view with negated strides. */
export function reverse(x: CpuBuffer, axes: readonly number[]): CpuBuffer {
  checkAxes("rev", axes, x.ndim, false);
  const strides = [...x.strides];
  let offset = x.offset;
  for (const a of axes) {
    const n = x.shape[a]!;
    if (n > 0) offset += (n - 1) * strides[a]!;
    strides[a] = -strides[a]!;
  }
  return x.view(x.shape, strides, offset);
}

/** Pads with `value`: lo / hi may be negative (cropping); `interior` inserts between elements. */
export function pad(
  x: CpuBuffer,
  value: number,
  lo: readonly number[],
  hi: readonly number[],
  interior: readonly number[],
): CpuBuffer {
  const nd = x.ndim;
  const outShape = padShape(x.shape, lo, hi, interior);
  const out = CpuBuffer.zeros({ shape: outShape, dtype: x.dtype });
  const od = out.data;
  if (value !== 0) od.fill(value);
  const outStrides = contiguousStrides(outShape);
  // Input index i lands at lo + i·(interior + 1); copy the input window that lands inside the output.
  const srcStart: number[] = [];
  const srcLimit: number[] = [];
  const dstStrides: number[] = [];
  let dstOffset = 0;
  for (let d = 0; d < nd; d++) {
    const step = interior[d]! + 1;
    const l = lo[d]!;
    const first = l >= 0 ? 0 : Math.ceil(-l / step);
    const last = outShape[d]! === 0 ? -1 : Math.floor((outShape[d]! - 1 - l) / step); // inclusive
    const limit = Math.min(x.shape[d]!, last + 1);
    if (limit <= first) return out;
    srcStart.push(first);
    srcLimit.push(limit);
    dstStrides.push(outStrides[d]! * step);
    dstOffset += (l + first * step) * outStrides[d]!;
  }
  const window = slice(x, srcStart, srcLimit, new Array<number>(nd).fill(1));
  copyStrided(od, dstOffset, dstStrides, window);
  return out;
}

/** Joins same-dtype operands along `axis` (all other dims equal). */
export function concatenate(xs: readonly CpuBuffer[], axis: number): CpuBuffer {
  if (xs.length === 0) throw new ShapeError("concatenate: at least one operand, got 0");
  const first = xs[0]!;
  checkAxes("concatenate", [axis], first.ndim);
  let total = 0;
  for (const x of xs) {
    if (x.dtype !== first.dtype) {
      throw new DTypeError(`concatenate: operands of one dtype, got ${first.dtype} and ${x.dtype}`);
    }
    const same = x.ndim === first.ndim && x.shape.every((n, d) => d === axis || n === first.shape[d]);
    if (!same) {
      throw new ShapeError(
        `concatenate: shapes equal except on axis ${axis}, got ${shapeStr(first.shape)} and ${shapeStr(x.shape)}`,
      );
    }
    total += x.shape[axis]!;
  }
  const outShape = first.shape.map((n, d) => (d === axis ? total : n));
  const out = CpuBuffer.zeros({ shape: outShape, dtype: first.dtype });
  const strides = contiguousStrides(outShape);
  let at = 0;
  for (const x of xs) {
    copyStrided(out.data, at * strides[axis]!, strides, x);
    at += x.shape[axis]!;
  }
  return out;
}

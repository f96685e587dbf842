/**
 * @file Shape and stride arithmetic shared by the backends (both describe arrays as shape + strides +
 * offset), and the argument checks they share.
 */
import { isInt, shapeStr, type DType, type Shape } from "../../autodiff/aval.js";
import { DTypeError, ShapeError } from "../../autodiff/errors.js";

/** C-order (row-major) strides in elements. */
export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    strides[d] = s;
    s *= shape[d]!;
  }
  return strides;
}

/**
 * Strides that present (oldShape, oldStrides) as newShape without moving data, or null when the reshape
 * needs a copy. The algorithm of numpy's `_attempt_nocopy_reshape`: match runs of old and new dims with
 * equal products; each old run must be contiguous in itself, and its stride is spread over the new run.
 */
export function reshapeStrides(oldShape: Shape, oldStrides: readonly number[], newShape: Shape): number[] | null {
  const od: number[] = [];
  const os: number[] = [];
  for (let d = 0; d < oldShape.length; d++) {
    if (oldShape[d] !== 1) {
      od.push(oldShape[d]!);
      os.push(oldStrides[d]!);
    }
  }
  if (od.includes(0)) return contiguousStrides(newShape);
  const ns = new Array<number>(newShape.length).fill(0);
  let oi = 0;
  let oj = 1;
  let ni = 0;
  let nj = 1;
  while (ni < newShape.length && oi < od.length) {
    let np = newShape[ni]!;
    let op = od[oi]!;
    while (np !== op) {
      if (np < op) np *= newShape[nj++]!;
      else op *= od[oj++]!;
    }
    for (let ok = oi; ok < oj - 1; ok++) if (os[ok] !== od[ok + 1]! * os[ok + 1]!) return null;
    ns[nj - 1] = os[oj - 1]!;
    for (let nk = nj - 1; nk > ni; nk--) ns[nk - 1] = ns[nk]! * newShape[nk]!;
    ni = nj++;
    oi = oj++;
  }
  // Trailing size-1 dims: any stride works.
  for (let nk = ni; nk < newShape.length; nk++) ns[nk] = 1;
  return ns;
}

/** Validates gather / scatterAdd's axis and batch dims against the operand and index shapes. */
export function checkGatherArgs(op: string, xs: Shape, is: Shape, idxDtype: DType, axis: number, batchDims: number): void {
  const ok =
    Number.isInteger(batchDims) &&
    Number.isInteger(axis) &&
    batchDims >= 0 &&
    axis >= batchDims &&
    axis < xs.length &&
    batchDims <= is.length;
  if (!ok) {
    throw new ShapeError(
      `${op}: 0 <= batchDims <= axis < operand rank and batchDims <= index rank, got axis ${axis}, ` +
        `batchDims ${batchDims} for operand ${shapeStr(xs)} and indices ${shapeStr(is)}`,
    );
  }
  for (let d = 0; d < batchDims; d++) {
    if (xs[d] !== is[d]) {
      throw new ShapeError(
        `${op}: equal leading ${batchDims} batch dims, got operand ${shapeStr(xs)} and indices ${shapeStr(is)}`,
      );
    }
  }
  if (!isInt(idxDtype)) throw new DTypeError(`${op}: int32 or uint32 indices, got ${idxDtype}`);
}

/** pad's output shape, validating the widths (negative lo/hi crop; interior inserts between elements). */
export function padShape(shape: Shape, lo: readonly number[], hi: readonly number[], interior: readonly number[]): number[] {
  const nd = shape.length;
  if (lo.length !== nd || hi.length !== nd || interior.length !== nd) {
    throw new ShapeError(
      `pad: ${nd} lo, hi and interior widths, got ${lo.length}, ${hi.length} and ${interior.length}`,
    );
  }
  const outShape: number[] = [];
  for (let d = 0; d < nd; d++) {
    const n = shape[d]!;
    const gap = interior[d]!;
    if (!Number.isInteger(gap) || gap < 0 || !Number.isInteger(lo[d]) || !Number.isInteger(hi[d])) {
      throw new ShapeError(`pad: integer widths with interior >= 0, got lo ${lo[d]}, hi ${hi[d]}, interior ${gap}`);
    }
    const size = lo[d]! + hi[d]! + n + Math.max(n - 1, 0) * gap;
    if (size < 0) {
      throw new ShapeError(
        `pad: a non-negative output size on dim ${d}, ` +
          `got ${size} from lo ${lo[d]}, hi ${hi[d]} on ${shapeStr(shape)}`,
      );
    }
    outShape.push(size);
  }
  return outShape;
}

/**
 * The single stride that walks a group of dims in C order, or null when the group is not expressible
 * as one stride (size-1 dims are ignored; a group of size <= 1 has stride 0).
 */
export function mergedStride(shape: Shape, strides: readonly number[]): number | null {
  let stride: number | null = null;
  let span = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    const n = shape[d]!;
    if (n === 1) continue;
    if (n === 0) return 0;
    if (stride === null) stride = strides[d]!;
    else if (strides[d] !== stride * span) return null;
    span *= n;
  }
  return stride ?? 0;
}

/**
 * @file Stable multi-operand sort along any axis: the first `numKeys` operands are keys, compared
 * lexicographically (NaN after everything, -0 equal to 0, as numpy); the rest are permuted alongside.
 * Each line along the axis is sorted through an index permutation with a bottom-up merge sort, so
 * stability does not depend on the engine's Array.prototype.sort.
 */
import { shapeStr } from "../../../autodiff/aval.js";
import { ShapeError } from "../../../autodiff/errors.js";
import { allocate, checkAxes, contiguousStrides, CpuBuffer, offsetsOf } from "./buffer.js";

/** Total order on numbers with NaN last and -0 == 0. */
function compareNum(a: number, b: number): number {
  if (a < b) return -1;
  if (a > b) return 1;
  if (a === b) return 0;
  const an = a !== a;
  const bn = b !== b;
  return an === bn ? 0 : an ? 1 : -1;
}

const RUN = 16;

/** Stable sort of `perm` (length n) by `cmp` on its entries, using `tmp` (length >= n) as scratch. */
function mergeSort(perm: Int32Array, tmp: Int32Array, n: number, cmp: (i: number, j: number) => number): void {
  // Insertion-sort runs of RUN, then merge runs pairwise, ping-ponging between perm and tmp.
  for (let lo = 0; lo < n; lo += RUN) {
    const hi = Math.min(lo + RUN, n);
    for (let i = lo + 1; i < hi; i++) {
      const v = perm[i]!;
      let j = i - 1;
      while (j >= lo && cmp(perm[j]!, v) > 0) {
        perm[j + 1] = perm[j]!;
        j--;
      }
      perm[j + 1] = v;
    }
  }
  let src = perm;
  let dst = tmp;
  for (let width = RUN; width < n; width *= 2) {
    for (let lo = 0; lo < n; lo += 2 * width) {
      const mid = Math.min(lo + width, n);
      const hi = Math.min(lo + 2 * width, n);
      let i = lo;
      let j = mid;
      let k = lo;
      while (i < mid && j < hi) dst[k++] = cmp(src[j]!, src[i]!) < 0 ? src[j++]! : src[i++]!;
      while (i < mid) dst[k++] = src[i++]!;
      while (j < hi) dst[k++] = src[j++]!;
    }
    const t = src;
    src = dst;
    dst = t;
  }
  if (src !== perm) perm.set(src.subarray(0, n));
}

/** Sorts same-shape operands along `axis` by their first `numKeys` operands. */
export function sort(xs: readonly CpuBuffer[], axis: number, numKeys: number): CpuBuffer[] {
  if (xs.length === 0) throw new ShapeError("sort: at least one operand, got 0");
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
  const outs = xs.map((x) => allocate(x.dtype, x.size));
  const result = xs.map((x, k) => new CpuBuffer(outs[k]!, x.dtype, shape));
  const len = shape[axis]!;
  if (xs[0]!.size === 0) return result;

  const outerShape = shape.filter((_, d) => d !== axis);
  const outStrides = contiguousStrides(shape);
  const outLines = offsetsOf(outerShape, outStrides.filter((_, d) => d !== axis));
  const outStep = outStrides[axis]!;
  const lines = xs.map((x) => offsetsOf(outerShape, x.strides.filter((_, d) => d !== axis), x.offset));
  const steps = xs.map((x) => x.strides[axis]!);
  const datas = xs.map((x) => x.data);

  const keys = Array.from({ length: numKeys }, () => new Float64Array(len));
  const k0 = keys[0]!;
  const cmp =
    numKeys === 1
      ? (i: number, j: number): number => compareNum(k0[i]!, k0[j]!)
      : (i: number, j: number): number => {
          for (let k = 0; k < numKeys; k++) {
            const c = compareNum(keys[k]![i]!, keys[k]![j]!);
            if (c !== 0) return c;
          }
          return 0;
        };
  const perm = new Int32Array(len);
  const tmp = new Int32Array(len);
  for (let l = 0; l < outLines.length; l++) {
    for (let k = 0; k < numKeys; k++) {
      const src = datas[k]!;
      const key = keys[k]!;
      const s = steps[k]!;
      for (let i = 0, at = lines[k]![l]!; i < len; i++, at += s) key[i] = src[at]!;
    }
    for (let i = 0; i < len; i++) perm[i] = i;
    mergeSort(perm, tmp, len, cmp);
    const base = outLines[l]!;
    for (let k = 0; k < xs.length; k++) {
      const src = datas[k]!;
      const dst = outs[k]!;
      const from = lines[k]![l]!;
      const s = steps[k]!;
      for (let j = 0; j < len; j++) dst[base + j * outStep] = src[from + perm[j]! * s]!;
    }
  }
  return result;
}

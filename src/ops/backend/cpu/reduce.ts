/**
 * @file Reductions (sum / prod / max / min over any axes), arg reductions and inclusive scans.
 *
 * `reduce` walks the input once in its C order with `forEachRow`, against an accumulator that has
 * stride 0 on the reduced axes: a row along a reduced axis folds into one scalar, a row along a kept
 * axis folds elementwise into a run of accumulators, so both `sum(x, 0)` and `sum(x, -1)` read memory
 * in order. Float sums accumulate in doubles (float64 additionally with Neumaier compensation); int
 * sums and products wrap.
 *
 * Identities for empty reductions: sum 0, prod 1, max -Inf / INT32_MIN / 0 (uint32) / false,
 * min +Inf / INT32_MAX / UINT32_MAX / true. On bool, sum and max are "any", prod and min are "all".
 */
import { isFloat, shapeSize, type DType } from "../../../autodiff/aval.js";
import { ShapeError } from "../../../autodiff/errors.js";
import type { AnyTypedArray, ArgReduceOp, CumulativeOp, OutType, ReduceOp } from "../kernel.js";
import {
  allocate,
  checkAxes,
  contiguousStrides,
  copyStrided,
  CpuBuffer,
  expectDType,
  expectShape,
  forEachRow,
} from "./buffer.js";

type Arr = AnyTypedArray;
/** Folds n strided elements of x into the single accumulator acc[j]. */
type ScalarFold = (n: number, acc: Arr, j: number, x: Arr, ix: number, sx: number) => void;
/** Folds n strided elements of x into n accumulators acc[j], acc[j + sj], ... */
type VectorFold = (n: number, acc: Arr, j: number, sj: number, x: Arr, ix: number, sx: number) => void;

interface Folder {
  readonly init: number;
  readonly scalar: ScalarFold;
  readonly vector: VectorFold;
}

const sumFloat: Folder = {
  init: 0,
  scalar: (n, acc, j, x, ix, sx) => {
    let s = acc[j]!;
    for (let i = 0; i < n; i++, ix += sx) s += x[ix]!;
    acc[j] = s;
  },
  vector: (n, acc, j, sj, x, ix, sx) => {
    for (let i = 0; i < n; i++, ix += sx, j += sj) acc[j] += x[ix]!;
  },
};

const sumInt: Folder = {
  init: 0,
  scalar: (n, acc, j, x, ix, sx) => {
    let s = acc[j]!;
    for (let i = 0; i < n; i++, ix += sx) s = (s + x[ix]!) | 0;
    acc[j] = s; // the store re-wraps for uint32
  },
  vector: sumFloat.vector, // the typed-array store wraps
};

const prodFloat: Folder = {
  init: 1,
  scalar: (n, acc, j, x, ix, sx) => {
    let s = acc[j]!;
    for (let i = 0; i < n; i++, ix += sx) s *= x[ix]!;
    acc[j] = s;
  },
  vector: (n, acc, j, sj, x, ix, sx) => {
    for (let i = 0; i < n; i++, ix += sx, j += sj) acc[j] *= x[ix]!;
  },
};

const prodInt: Folder = {
  init: 1,
  scalar: (n, acc, j, x, ix, sx) => {
    let s = acc[j]!;
    for (let i = 0; i < n; i++, ix += sx) s = Math.imul(s, x[ix]!);
    acc[j] = s;
  },
  vector: (n, acc, j, sj, x, ix, sx) => {
    for (let i = 0; i < n; i++, ix += sx, j += sj) acc[j] = Math.imul(acc[j]!, x[ix]!);
  },
};

function maxFolder(init: number): Folder {
  return {
    init,
    scalar: (n, acc, j, x, ix, sx) => {
      let s = acc[j]!;
      for (let i = 0; i < n; i++, ix += sx) s = Math.max(s, x[ix]!);
      acc[j] = s;
    },
    vector: (n, acc, j, sj, x, ix, sx) => {
      for (let i = 0; i < n; i++, ix += sx, j += sj) acc[j] = Math.max(acc[j]!, x[ix]!);
    },
  };
}

function minFolder(init: number): Folder {
  return {
    init,
    scalar: (n, acc, j, x, ix, sx) => {
      let s = acc[j]!;
      for (let i = 0; i < n; i++, ix += sx) s = Math.min(s, x[ix]!);
      acc[j] = s;
    },
    vector: (n, acc, j, sj, x, ix, sx) => {
      for (let i = 0; i < n; i++, ix += sx, j += sj) acc[j] = Math.min(acc[j]!, x[ix]!);
    },
  };
}

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;
const UINT32_MAX = 4294967295;

function folderFor(op: ReduceOp, dt: DType): Folder {
  const float = isFloat(dt);
  const bool = dt === "bool";
  switch (op) {
    case "sum":
      return bool ? maxFolder(0) : float ? sumFloat : sumInt;
    case "prod":
      return bool ? minFolder(1) : float ? prodFloat : prodInt;
    case "max":
      return maxFolder(float ? -Infinity : dt === "int32" ? INT32_MIN : 0);
    case "min":
      return minFolder(float ? Infinity : dt === "int32" ? INT32_MAX : dt === "uint32" ? UINT32_MAX : 1);
    default:
      throw new ShapeError(`reduce: a known op, got ${String(op satisfies never)}`);
  }
}

/** Reduces `axes` (sorted, unique) of x away. */
export function reduce(op: ReduceOp, x: CpuBuffer, axes: readonly number[], out: OutType): CpuBuffer {
  const name = `reduce_${op}`;
  checkAxes(name, axes, x.ndim);
  const reduced = new Set(axes);
  const keptShape = x.shape.filter((_, d) => !reduced.has(d));
  expectShape(name, "an output shape with the reduced axes removed", keptShape, out.shape);
  expectDType(name, "an output dtype equal to the operand's", x.dtype, out.dtype);
  const dt = x.dtype;
  const outSize = shapeSize(keptShape);
  const keptStrides = contiguousStrides(keptShape);
  const accStrides: number[] = [];
  for (let d = 0, k = 0; d < x.ndim; d++) accStrides.push(reduced.has(d) ? 0 : keptStrides[k++]!);
  const xd = x.data;

  if (op === "sum" && dt === "float64") {
    return new CpuBuffer(compensatedSum(x, accStrides, outSize), dt, keptShape);
  }
  const folder = folderFor(op, dt);
  const acc = isFloat(dt) ? new Float64Array(outSize) : allocate(dt, outSize);
  acc.fill(folder.init);
  forEachRow(x.shape, [accStrides, x.strides], [0, x.offset], (n, offs, steps) => {
    if (steps[0] === 0) folder.scalar(n, acc, offs[0]!, xd, offs[1]!, steps[1]!);
    else folder.vector(n, acc, offs[0]!, steps[0]!, xd, offs[1]!, steps[1]!);
  });
  return new CpuBuffer(dt === "float32" ? new Float32Array(acc) : acc, dt, keptShape);
}

/** float64 sum with Neumaier's compensation (error independent of the number of terms). */
function compensatedSum(x: CpuBuffer, accStrides: readonly number[], outSize: number): Float64Array {
  const sum = new Float64Array(outSize);
  const comp = new Float64Array(outSize);
  const xd = x.data;
  forEachRow(x.shape, [accStrides, x.strides], [0, x.offset], (n, offs, steps) => {
    let j = offs[0]!;
    let ix = offs[1]!;
    const sj = steps[0]!;
    const sx = steps[1]!;
    if (sj === 0) {
      let s = sum[j]!;
      let c = comp[j]!;
      for (let i = 0; i < n; i++, ix += sx) {
        const v = xd[ix]!;
        const t = s + v;
        c += Math.abs(s) >= Math.abs(v) ? s - t + v : v - t + s;
        s = t;
      }
      sum[j] = s;
      comp[j] = c;
    } else {
      for (let i = 0; i < n; i++, ix += sx, j += sj) {
        const v = xd[ix]!;
        const s = sum[j]!;
        const t = s + v;
        comp[j] += Math.abs(s) >= Math.abs(v) ? s - t + v : v - t + s;
        sum[j] = t;
      }
    }
  });
  // Infinite sums make the compensation NaN; keep the plain sum there.
  for (let j = 0; j < outSize; j++) {
    const s = sum[j]!;
    if (Number.isFinite(s)) sum[j] = s + comp[j]!;
  }
  return sum;
}

/** argmax: first index of the max; the first NaN wins. */
function scanArgMax(x: Arr, ix: number, s: number, len: number): number {
  let best = x[ix]!;
  if (best !== best) return 0;
  let bi = 0;
  for (let k = 1; k < len; k++) {
    const v = x[(ix += s)]!;
    if (v > best) {
      best = v;
      bi = k;
    } else if (v !== v) return k;
  }
  return bi;
}

function scanArgMin(x: Arr, ix: number, s: number, len: number): number {
  let best = x[ix]!;
  if (best !== best) return 0;
  let bi = 0;
  for (let k = 1; k < len; k++) {
    const v = x[(ix += s)]!;
    if (v < best) {
      best = v;
      bi = k;
    } else if (v !== v) return k;
  }
  return bi;
}

/** Index (int32) of the first max / min along `axis`, which is removed. NaN counts as the extreme. */
export function argReduce(op: ArgReduceOp, x: CpuBuffer, axis: number, out: OutType): CpuBuffer {
  checkAxes(op, [axis], x.ndim);
  const len = x.shape[axis]!;
  const outShape = x.shape.filter((_, d) => d !== axis);
  expectShape(op, "an output shape with the axis removed", outShape, out.shape);
  expectDType(op, "output dtype", "int32", out.dtype);
  const outSize = shapeSize(outShape);
  const res = new Int32Array(outSize);
  if (outSize === 0) return new CpuBuffer(res, "int32", outShape);
  if (len === 0) throw new ShapeError(`${op}: a non-empty axis ${axis}, got shape [${x.shape.join(", ")}]`);
  const xd = x.data;
  const sAxis = x.strides[axis]!;
  const outerStrides = x.strides.filter((_, d) => d !== axis);
  const resStrides = contiguousStrides(outShape);
  const isMax = op === "argmax";
  if (axis === x.ndim - 1 || len >= outSize) {
    // One scan along the axis per output element.
    const scan = isMax ? scanArgMax : scanArgMin;
    forEachRow(outShape, [resStrides, outerStrides], [0, x.offset], (n, offs, steps) => {
      const io = offs[0]!;
      let ix = offs[1]!;
      const sx = steps[1]!;
      for (let i = 0; i < n; i++, ix += sx) res[io + i] = scan(xd, ix, sAxis, len);
    });
  } else {
    // Many short scans: sweep slice k = 0, 1, ... of the axis, updating running bests row by row.
    const best = new Float64Array(outSize);
    copyStrided(best, 0, resStrides, x.view(outShape, outerStrides, x.offset));
    for (let k = 1; k < len; k++) {
      forEachRow(outShape, [resStrides, outerStrides], [0, x.offset + k * sAxis], (n, offs, steps) => {
        let j = offs[0]!;
        let ix = offs[1]!;
        const sx = steps[1]!;
        for (let i = 0; i < n; i++, ix += sx, j++) {
          const v = xd[ix]!;
          const b = best[j]!;
          if (b === b && (v !== v || (isMax ? v > b : v < b))) {
            best[j] = v;
            res[j] = k;
          }
        }
      });
    }
  }
  return new CpuBuffer(res, "int32", outShape);
}

function combiner(op: CumulativeOp, dt: DType): (acc: number, v: number) => number {
  const float = isFloat(dt);
  const bool = dt === "bool";
  switch (op) {
    case "sum":
      return bool ? (a, v) => a | v : (a, v) => a + v; // int stores wrap
    case "prod":
      return bool ? (a, v) => a & v : float ? (a, v) => a * v : Math.imul;
    case "max":
      return Math.max;
    case "min":
      return Math.min;
    default:
      throw new ShapeError(`cumulative: a known op, got ${String(op satisfies never)}`);
  }
}

/** Inclusive scan along `axis` (from the end when `reverse`). float32 scans accumulate in doubles. */
export function cumulative(op: CumulativeOp, x: CpuBuffer, axis: number, reverse: boolean): CpuBuffer {
  checkAxes(`cum${op}`, [axis], x.ndim);
  const dt = x.dtype;
  const work: Arr = dt === "float32" ? new Float64Array(x.size) : allocate(dt, x.size);
  copyStrided(work, 0, contiguousStrides(x.shape), x);
  const len = x.shape[axis]!;
  let inner = 1;
  for (let d = axis + 1; d < x.ndim; d++) inner *= x.shape[d]!;
  const outer = len * inner === 0 ? 0 : x.size / (len * inner);
  const f = combiner(op, dt);
  const first = reverse ? len - 1 : 0;
  const dir = reverse ? -1 : 1;
  for (let o = 0; o < outer && len > 1; o++) {
    const base = o * len * inner;
    for (let k = 1; k < len; k++) {
      const p = base + (first + dir * k) * inner;
      const q = p - dir * inner;
      for (let i = 0; i < inner; i++) work[p + i] = f(work[q + i]!, work[p + i]!);
    }
  }
  return new CpuBuffer(dt === "float32" ? new Float32Array(work) : work, dt, x.shape);
}

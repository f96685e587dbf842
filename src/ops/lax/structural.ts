/**
 * @file Structural primitives: reshape, transpose, broadcast_in_dim, slice, rev, pad, concatenate,
 * iota. All are linear; backends implement most as views.
 */
import { DType, Shape, ShapedArray, shapeSize, shapeStr } from "../../autodiff/aval.js";
import { bind1, MaybeZero, nonlinear, UndefinedPrimal, Value } from "../../autodiff/core.js";
import { DTypeError, ShapeError } from "../../autodiff/errors.js";
import { definePrimitive, OpsPrimitive } from "../primitive.js";
import { full } from "./elementwise.js";
import { reduceSum } from "./reduce.js";
import { checkAxes, invertPerm, moveTo0, range } from "./util.js";

const avalOf = (a: Value | UndefinedPrimal): ShapedArray => a.aval;

// ---------------------------------------------------------------------------------------------------
// reshape

interface ReshapeParams {
  readonly newSizes: Shape;
}

export const reshapeP: OpsPrimitive<ReshapeParams> = definePrimitive<ReshapeParams>({
  name: "reshape",
  abstractEval: ([x], p) => {
    if (p.newSizes.some((d) => !Number.isInteger(d) || d < 0) || shapeSize(p.newSizes) !== x!.size) {
      throw new ShapeError(`reshape: cannot reshape ${x!.str()} (size ${x!.size}) into shape ${shapeStr(p.newSizes)}`);
    }
    return [new ShapedArray(p.newSizes, x!.dtype, x!.weakType)];
  },
  jvp: ([x], [t], p) => [[bind1(reshapeP, [x!], p)], [t ? bind1(reshapeP, [t], p) : null]],
  transpose: ([ct], [x]) => [ct === null ? null : reshape(ct!, avalOf(x!).shape)],
  vmap: ([x], [d], p, size) => [[bind1(reshapeP, [moveTo0(x!, d!, size)], { newSizes: [size, ...p.newSizes] })], [0]],
  lower: (b, [x], p) => [b.reshape(x!, p.newSizes)],
  printParams: (p) => `new_sizes=(${p.newSizes.join(", ")}${p.newSizes.length === 1 ? "," : ""})`,
});

export function reshape(x: Value, shape: Shape): Value {
  const s = x.aval.shape;
  if (s.length === shape.length && s.every((d, i) => d === shape[i])) return x;
  return bind1(reshapeP, [x], { newSizes: [...shape] });
}

// ---------------------------------------------------------------------------------------------------
// transpose

interface TransposeParams {
  readonly permutation: readonly number[];
}

export const transposeP: OpsPrimitive<TransposeParams> = definePrimitive<TransposeParams>({
  name: "transpose",
  abstractEval: ([x], p) => {
    if (p.permutation.length !== x!.ndim) {
      throw new ShapeError(`transpose: permutation (${p.permutation}) must have one entry per axis of ${x!.str()}`);
    }
    checkAxes("transpose", p.permutation, x!.ndim);
    return [new ShapedArray(p.permutation.map((i) => x!.shape[i]!), x!.dtype, x!.weakType)];
  },
  jvp: ([x], [t], p) => [[bind1(transposeP, [x!], p)], [t ? bind1(transposeP, [t], p) : null]],
  transpose: ([ct], _x, p) => [ct === null ? null : transpose(ct!, invertPerm(p.permutation))],
  vmap: ([x], [d], p, size) => [
    [bind1(transposeP, [moveTo0(x!, d!, size)], { permutation: [0, ...p.permutation.map((i) => i + 1)] })],
    [0],
  ],
  lower: (b, [x], p) => [b.transpose(x!, p.permutation)],
  printParams: (p) => `permutation=(${p.permutation.join(", ")}${p.permutation.length === 1 ? "," : ""})`,
});

export function transpose(x: Value, perm: readonly number[]): Value {
  if (perm.every((p, i) => p === i) && perm.length === x.aval.ndim) return x;
  return bind1(transposeP, [x], { permutation: [...perm] });
}

// ---------------------------------------------------------------------------------------------------
// broadcast_in_dim

interface BroadcastParams {
  readonly shape: Shape;
  readonly broadcastDimensions: readonly number[];
}

export const broadcastInDimP: OpsPrimitive<BroadcastParams> = definePrimitive<BroadcastParams>({
  name: "broadcast_in_dim",
  abstractEval: ([x], p) => {
    const dims = p.broadcastDimensions;
    const ok =
      dims.length === x!.ndim &&
      dims.every((d, i) => Number.isInteger(d) && d >= 0 && d < p.shape.length && (i === 0 || d > dims[i - 1]!)) &&
      dims.every((d, i) => x!.shape[i] === 1 || x!.shape[i] === p.shape[d]);
    if (!ok) {
      throw new ShapeError(
        `broadcast_in_dim: cannot broadcast ${x!.str()} to shape ${shapeStr(p.shape)} with dimensions (${dims})`,
      );
    }
    return [new ShapedArray(p.shape, x!.dtype, x!.weakType)];
  },
  jvp: ([x], [t], p) => [[bind1(broadcastInDimP, [x!], p)], [t ? bind1(broadcastInDimP, [t], p) : null]],
  transpose: ([ct], [x], p) => {
    if (ct === null) return [null];
    const xs = avalOf(x!).shape;
    const dims = p.broadcastDimensions;
    // Sum over new axes and over axes where the operand had size 1 but the output does not.
    const newAxes = range(p.shape.length).filter((i) => !dims.includes(i));
    const expanded = dims.filter((d, i) => xs[i] === 1 && p.shape[d] !== 1);
    const axes = [...newAxes, ...expanded].sort((a, b) => a - b);
    return [reshape(reduceSum(ct!, axes), xs)];
  },
  vmap: ([x], [d], p, size) => [
    [
      bind1(broadcastInDimP, [moveTo0(x!, d!, size)], {
        shape: [size, ...p.shape],
        broadcastDimensions: [0, ...p.broadcastDimensions.map((i) => i + 1)],
      }),
    ],
    [0],
  ],
  lower: (b, [x], p) => [b.broadcastInDim(x!, p.shape, p.broadcastDimensions)],
  printParams: (p) =>
    `broadcast_dimensions=(${p.broadcastDimensions.join(", ")}${p.broadcastDimensions.length === 1 ? "," : ""}) shape=(${p.shape.join(", ")}${p.shape.length === 1 ? "," : ""})`,
});

export function broadcastInDim(x: Value, shape: Shape, dims: readonly number[]): Value {
  const s = x.aval.shape;
  if (s.length === shape.length && s.every((d, i) => d === shape[i]) && dims.every((d, i) => d === i)) return x;
  return bind1(broadcastInDimP, [x], { shape: [...shape], broadcastDimensions: [...dims] });
}

// ---------------------------------------------------------------------------------------------------
// slice

interface SliceParams {
  readonly startIndices: readonly number[];
  readonly limitIndices: readonly number[];
  readonly strides: readonly number[];
}

export const sliceP: OpsPrimitive<SliceParams> = definePrimitive<SliceParams>({
  name: "slice",
  abstractEval: ([x], p) => {
    const n = x!.ndim;
    if (p.startIndices.length !== n || p.limitIndices.length !== n || p.strides.length !== n) {
      throw new ShapeError(`slice: needs start, limit and stride per axis of ${x!.str()}`);
    }
    const shape = x!.shape.map((d, i) => {
      const s = p.startIndices[i]!;
      const l = p.limitIndices[i]!;
      const st = p.strides[i]!;
      if (!(Number.isInteger(s) && Number.isInteger(l) && st >= 1 && 0 <= s && s <= l && l <= d)) {
        throw new ShapeError(`slice: invalid range [${s}:${l}:${st}] for axis ${i} of size ${d} in ${x!.str()}`);
      }
      return Math.ceil((l - s) / st);
    });
    return [new ShapedArray(shape, x!.dtype, x!.weakType)];
  },
  jvp: ([x], [t], p) => [[bind1(sliceP, [x!], p)], [t ? bind1(sliceP, [t], p) : null]],
  transpose: ([ct], [x], p) => {
    if (ct === null) return [null];
    const xs = avalOf(x!).shape;
    const out = ct!.aval.shape;
    const lo = p.startIndices;
    const interior = p.strides.map((s) => s - 1);
    // The padded result must have x's shape: hi = size - (start + (n-1)*stride + 1).
    const hi = xs.map((d, i) => (out[i] === 0 ? d - lo[i]! : d - (lo[i]! + (out[i]! - 1) * p.strides[i]! + 1)));
    return [pad(ct!, 0, lo, hi, interior)];
  },
  vmap: ([x], [d], p, size) => [
    [
      bind1(sliceP, [moveTo0(x!, d!, size)], {
        startIndices: [0, ...p.startIndices],
        limitIndices: [size, ...p.limitIndices],
        strides: [1, ...p.strides],
      }),
    ],
    [0],
  ],
  lower: (b, [x], p) => [b.slice(x!, p.startIndices, p.limitIndices, p.strides)],
  printParams: (p) =>
    `start_indices=(${p.startIndices.join(", ")}) limit_indices=(${p.limitIndices.join(", ")}) strides=(${p.strides.join(", ")})`,
});

export function slice(x: Value, starts: readonly number[], limits: readonly number[], strides?: readonly number[]): Value {
  const st = strides ?? starts.map(() => 1);
  const s = x.aval.shape;
  if (starts.every((v) => v === 0) && limits.every((l, i) => l === s[i]) && st.every((v) => v === 1) && starts.length === s.length) {
    return x;
  }
  return bind1(sliceP, [x], { startIndices: [...starts], limitIndices: [...limits], strides: [...st] });
}

/** Slice of one axis [start, limit). */
export function sliceInDim(x: Value, start: number, limit: number, axis: number, stride = 1): Value {
  const s = x.aval.shape;
  const starts = s.map((_, i) => (i === axis ? start : 0));
  const limits = s.map((d, i) => (i === axis ? limit : d));
  const strides = s.map((_, i) => (i === axis ? stride : 1));
  return slice(x, starts, limits, strides);
}

// ---------------------------------------------------------------------------------------------------
// rev

interface RevParams {
  readonly dimensions: readonly number[];
}

export const revP: OpsPrimitive<RevParams> = definePrimitive<RevParams>({
  name: "rev",
  abstractEval: ([x], p) => {
    checkAxes("rev", p.dimensions, x!.ndim);
    return [x!];
  },
  jvp: ([x], [t], p) => [[bind1(revP, [x!], p)], [t ? bind1(revP, [t], p) : null]],
  transpose: ([ct], _x, p) => [ct === null ? null : bind1(revP, [ct!], p)],
  vmap: ([x], [d], p, size) => [
    [bind1(revP, [moveTo0(x!, d!, size)], { dimensions: p.dimensions.map((i) => i + 1) })],
    [0],
  ],
  lower: (b, [x], p) => [b.reverse(x!, p.dimensions)],
  printParams: (p) => `dimensions=(${p.dimensions.join(", ")}${p.dimensions.length === 1 ? "," : ""})`,
});

export function rev(x: Value, axes: readonly number[]): Value {
  return axes.length === 0 ? x : bind1(revP, [x], { dimensions: [...axes].sort((a, b) => a - b) });
}

// ---------------------------------------------------------------------------------------------------
// pad (value is a static number)

interface PadParams {
  readonly value: number;
  readonly lo: readonly number[];
  readonly hi: readonly number[];
  readonly interior: readonly number[];
}

export const padP: OpsPrimitive<PadParams> = definePrimitive<PadParams>({
  name: "pad",
  abstractEval: ([x], p) => {
    const n = x!.ndim;
    if (p.lo.length !== n || p.hi.length !== n || p.interior.length !== n) {
      throw new ShapeError(`pad: needs (lo, hi, interior) per axis of ${x!.str()}`);
    }
    const shape = x!.shape.map((d, i) => {
      const interior = p.interior[i]!;
      if (!Number.isInteger(interior) || interior < 0) throw new ShapeError(`pad: interior padding must be >= 0, got ${interior}`);
      const core = d === 0 ? 0 : d + (d - 1) * interior;
      const out = p.lo[i]! + core + p.hi[i]!;
      if (out < 0) throw new ShapeError(`pad: negative padding removes more than axis ${i} of ${x!.str()} holds`);
      return out;
    });
    return [new ShapedArray(shape, x!.dtype, x!.weakType)];
  },
  jvp: ([x], [t], p) => [[bind1(padP, [x!], p)], [t ? bind1(padP, [t], { ...p, value: 0 }) : null]],
  transpose: ([ct], [x], p) => {
    if (ct === null) return [null];
    const xs = avalOf(x!).shape;
    // Undo negative padding by padding with zeros, then take every (interior+1)-th element.
    const unpadded = pad(ct!, 0, p.lo.map((l) => Math.max(-l, 0)), p.hi.map((h) => Math.max(-h, 0)), p.lo.map(() => 0));
    const starts = p.lo.map((l) => Math.max(l, 0));
    const strides = p.interior.map((i) => i + 1);
    const limits = xs.map((d, i) => (d === 0 ? starts[i]! : starts[i]! + (d - 1) * strides[i]! + 1));
    return [slice(unpadded, starts, limits, strides)];
  },
  vmap: ([x], [d], p, size) => [
    [bind1(padP, [moveTo0(x!, d!, size)], { value: p.value, lo: [0, ...p.lo], hi: [0, ...p.hi], interior: [0, ...p.interior] })],
    [0],
  ],
  lower: (b, [x], p) => [b.pad(x!, p.value, p.lo, p.hi, p.interior)],
  printParams: (p) => `padding_config=(${p.lo.map((l, i) => `(${l}, ${p.hi[i]}, ${p.interior[i]})`).join(", ")}) value=${p.value}`,
});

export function pad(x: Value, value: number, lo: readonly number[], hi: readonly number[], interior?: readonly number[]): Value {
  const int = interior ?? lo.map(() => 0);
  if (lo.every((v) => v === 0) && hi.every((v) => v === 0) && int.every((v) => v === 0)) return x;
  return bind1(padP, [x], { value, lo: [...lo], hi: [...hi], interior: [...int] });
}

// ---------------------------------------------------------------------------------------------------
// concatenate

interface ConcatParams {
  readonly dimension: number;
}

export const concatenateP: OpsPrimitive<ConcatParams> = definePrimitive<ConcatParams>({
  name: "concatenate",
  abstractEval: (avals, p) => {
    if (avals.length === 0) throw new ShapeError("concatenate: needs at least one array");
    const a0 = avals[0]!;
    const d = p.dimension;
    if (!Number.isInteger(d) || d < 0 || d >= a0.ndim) {
      throw new ShapeError(`concatenate: axis ${d} is out of bounds for arrays of rank ${a0.ndim}`);
    }
    let total = 0;
    for (const a of avals) {
      if (a.ndim !== a0.ndim || a.shape.some((s, i) => i !== d && s !== a0.shape[i])) {
        throw new ShapeError(
          `concatenate: arrays must match except on axis ${d}, got ${avals.map((x) => x.str()).join(", ")}`,
        );
      }
      if (a.dtype !== a0.dtype) {
        throw new DTypeError(`concatenate: arrays must share a dtype, got ${avals.map((x) => x.dtype).join(", ")}`);
      }
      total += a.shape[d]!;
    }
    return [new ShapedArray(a0.shape.map((s, i) => (i === d ? total : s)), a0.dtype, avals.every((a) => a.weakType))];
  },
  jvp: (xs, ts, p) => {
    const out = bind1(concatenateP, xs, p);
    if (ts.every((t) => t === null)) return [[out], [null]];
    const full = ts.map((t, i) => t ?? zerosOf(xs[i]!.aval));
    return [[out], [bind1(concatenateP, full, p)]];
  },
  transpose: ([ct], xs, p) => {
    if (ct === null) return xs.map(() => null);
    let off = 0;
    return xs.map((x) => {
      const n = avalOf(x).shape[p.dimension]!;
      const piece: MaybeZero = x instanceof UndefinedPrimal ? sliceInDim(ct!, off, off + n, p.dimension) : null;
      off += n;
      return piece;
    });
  },
  vmap: (xs, dims, p, size) => [[bind1(concatenateP, xs.map((x, i) => moveTo0(x, dims[i]!, size)), { dimension: p.dimension + 1 })], [0]],
  lower: (b, xs, p) => [b.concatenate(xs, p.dimension)],
  printParams: (p) => `dimension=${p.dimension}`,
});

function zerosOf(a: ShapedArray): Value {
  return full(a.shape, 0, a.dtype);
}

export function concatenate(xs: readonly Value[], axis: number): Value {
  if (xs.length === 1) return xs[0]!;
  return bind1(concatenateP, xs, { dimension: axis });
}

// ---------------------------------------------------------------------------------------------------
// iota

interface IotaParams {
  readonly dtype: DType;
  readonly shape: Shape;
  readonly dimension: number;
}

export const iotaP: OpsPrimitive<IotaParams> = definePrimitive<IotaParams>({
  name: "iota",
  abstractEval: (_a, p) => {
    if (p.dimension < 0 || p.dimension >= p.shape.length) {
      throw new ShapeError(`iota: dimension ${p.dimension} is out of bounds for shape ${shapeStr(p.shape)}`);
    }
    return [new ShapedArray(p.shape, p.dtype)];
  },
  jvp: (_x, _t, p) => [[bind1(iotaP, [], p)], [null]],
  transpose: nonlinear,
  vmap: () => {
    throw new ShapeError("iota: has no operands to batch (webgrad bug)");
  },
  lower: (b, _x, p) => [b.iota({ shape: p.shape, dtype: p.dtype }, p.dimension)],
  printParams: (p) => `dtype=${p.dtype} shape=(${p.shape.join(", ")}${p.shape.length === 1 ? "," : ""}) dimension=${p.dimension}`,
});

/** 0, 1, ... along `dimension` of `shape`. */
export function iota(dtype: DType, shape: Shape, dimension = 0): Value {
  return bind1(iotaP, [], { dtype, shape: [...shape], dimension });
}

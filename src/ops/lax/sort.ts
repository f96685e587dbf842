/**
 * @file sort: a stable multi-operand sort along one axis (by the first `numKeys` operands), from which
 * np.sort, argsort and topK are built. Its derivative permutes the tangents like the values.
 */
import { ShapedArray, shapeEq } from "../../autodiff/aval.js";
import { bind, nonlinear, Value } from "../../autodiff/core.js";
import { ShapeError } from "../../autodiff/errors.js";
import { definePrimitive, OpsPrimitive } from "../primitive.js";
import { takeAlongLastAxis } from "./indexing.js";
import { iota, transpose } from "./structural.js";
import { checkAxes, invertPerm, moveTo0, range } from "./util.js";

interface SortParams {
  readonly dimension: number;
  readonly numKeys: number;
}

/** Gathers `t` along `axis` with an index array of the same shape (take_along_axis). */
export function takeAlongAxisSameShape(t: Value, idx: Value, axis: number): Value {
  const n = t.aval.ndim;
  const perm = [...range(n).filter((i) => i !== axis), axis];
  return transpose(takeAlongLastAxis(transpose(t, perm), transpose(idx, perm)), invertPerm(perm));
}

export const sortP: OpsPrimitive<SortParams> = definePrimitive<SortParams>({
  name: "sort",
  abstractEval: (avals, p) => {
    if (avals.length === 0) throw new ShapeError("sort: needs at least one operand");
    const a0 = avals[0]!;
    if (avals.some((a) => !shapeEq(a.shape, a0.shape))) {
      throw new ShapeError(`sort: operands must share a shape, got ${avals.map((a) => a.str()).join(", ")}`);
    }
    checkAxes("sort", [p.dimension], a0.ndim);
    if (!(p.numKeys >= 1 && p.numKeys <= avals.length)) throw new ShapeError(`sort: numKeys ${p.numKeys} out of range`);
    return avals.map((a) => new ShapedArray(a.shape, a.dtype, a.weakType));
  },
  jvp: (xs, ts, p) => {
    const shape = xs[0]!.aval.shape;
    const outs = bind(sortP, [...xs, iota("int32", shape, p.dimension)], p);
    const perm = outs[outs.length - 1]!;
    return [outs.slice(0, xs.length), ts.map((t) => (t === null ? null : takeAlongAxisSameShape(t, perm, p.dimension)))];
  },
  transpose: nonlinear,
  vmap: (xs, dims, p, size) => {
    const outs = bind(sortP, xs.map((x, i) => moveTo0(x, dims[i]!, size)), { ...p, dimension: p.dimension + 1 });
    return [outs, outs.map(() => 0)];
  },
  lower: (b, xs, p) => b.sort(xs, p.dimension, p.numKeys),
  printParams: (p) => `dimension=${p.dimension} num_keys=${p.numKeys} is_stable=True`,
});

/** Sorts `operands` along `dimension` by the first `numKeys` of them (stable). */
export function sort(operands: readonly Value[], dimension: number, numKeys = 1): Value[] {
  return bind(sortP, operands, { dimension, numKeys });
}

/**
 * @file Reductions (reduce_sum / max / min / prod, argmax / argmin) and cumulative ops
 * (cumsum / cumprod / cummax / cummin) over static axes.
 */
import { DType, ShapedArray } from "../../autodiff/aval.js";
import { bind1, nonlinear, UndefinedPrimal, Value } from "../../autodiff/core.js";
import { ShapeError } from "../../autodiff/errors.js";
import { ArgReduceOp, CumulativeOp, ReduceOp } from "../backend/kernel.js";
import { definePrimitive, OpsPrimitive } from "../primitive.js";
import { andP, convert, div, eq, fullLike, leP, mul, select } from "./elementwise.js";
import { broadcastInDim, iota, reshape, rev, transpose } from "./structural.js";
import { takeAlongLastAxis } from "./indexing.js";
import { checkAxes, checkDtypeClass, invertPerm, moveTo0, range } from "./util.js";

interface ReduceParams {
  readonly axes: readonly number[];
}

function reducedShape(shape: readonly number[], axes: readonly number[]): number[] {
  return shape.filter((_, i) => !axes.includes(i));
}

/** Broadcasts a reduced value back to the full shape (kept axes map in order). */
function unreduce(y: Value, shape: readonly number[], axes: readonly number[]): Value {
  const kept = range(shape.length).filter((i) => !axes.includes(i));
  return broadcastInDim(y, shape, kept);
}

function reducePrim(name: string, op: ReduceOp, jvp: (x: Value, y: Value, t: Value, axes: readonly number[]) => Value): OpsPrimitive<ReduceParams> {
  const p: OpsPrimitive<ReduceParams> = definePrimitive<ReduceParams>({
    name,
    abstractEval: ([x], pr) => {
      checkAxes(name, pr.axes, x!.ndim);
      if (op !== "max" && op !== "min") checkDtypeClass(name, x!.dtype, op === "sum" || op === "prod" ? "any" : "any");
      const dtype: DType = (op === "sum" || op === "prod") && x!.dtype === "bool" ? "int32" : x!.dtype;
      return [new ShapedArray(reducedShape(x!.shape, pr.axes), dtype, x!.weakType)];
    },
    jvp: ([x], [t], pr) => {
      const y = bind1(p, [x!], pr);
      return [[y], [t ? jvp(x!, y, t, pr.axes) : null]];
    },
    transpose:
      op === "sum"
        ? ([ct], [x], pr) => [ct === null ? null : unreduce(ct!, (x as UndefinedPrimal).aval.shape, pr.axes)]
        : nonlinear,
    vmap: ([x], [d], pr, size) => [[bind1(p, [moveTo0(x!, d!, size)], { axes: pr.axes.map((a) => a + 1) })], [0]],
    lower: (b, [x], pr, [a], [out]) => {
      const xin = a!.dtype === "bool" && (op === "sum" || op === "prod") ? b.cast(x!, "int32") : x!;
      return [b.reduce(op, xin, pr.axes, out!)];
    },
    printParams: (pr) => `axes=(${pr.axes.join(", ")}${pr.axes.length === 1 ? "," : ""})`,
  });
  return p;
}

/** The derivative of max/min: the tangent at the extreme locations, shared equally between ties. */
function extremeJvp(x: Value, y: Value, t: Value, axes: readonly number[]): Value {
  const shape = x.aval.shape;
  const loc = convert(eq(x, unreduce(y, shape, axes)), x.aval.dtype);
  const counts = reduceSum(loc, axes);
  return div(reduceSum(mul(t, loc), axes), counts);
}

/**
 * d prod(x) = Σ_j t_j · Π_{k≠j} x_k, computed without dividing by x (so zeros are handled): move the
 * reduced axes last and flatten them to n, then form the n×n matrix with x_j replaced by 1 on row j.
 */
function prodJvp(x: Value, _y: Value, t: Value, axes: readonly number[]): Value {
  const shape = x.aval.shape;
  const kept = range(shape.length).filter((i) => !axes.includes(i));
  const perm = [...kept, ...axes];
  const keptShape = kept.map((i) => shape[i]!);
  const n = axes.reduce((m, a) => m * shape[a]!, 1);
  const xf = reshape(transpose(x, perm), [...keptShape, n]); // [..., n]
  const tf = reshape(transpose(t, perm), [...keptShape, n]); // [..., n]
  const r = keptShape.length;
  const rows = broadcastInDim(xf, [...keptShape, n, n], [...range(r), r + 1]); // [..., j, k] = x_k
  const diag = eq(iota("int32", [n, n], 0), iota("int32", [n, n], 1)); // [j, k]
  const diagB = broadcastInDim(diag, [...keptShape, n, n], [r, r + 1]);
  const others = reduceProd(select(diagB, fullLike(rows, 1), rows), [r + 1]); // [..., j] = Π_{k≠j} x_k
  return reduceSum(mul(tf, others), [r]);
}

export const reduceSumP = reducePrim("reduce_sum", "sum", (_x, _y, t, axes) => reduceSum(t, axes));
export const reduceMaxP = reducePrim("reduce_max", "max", extremeJvp);
export const reduceMinP = reducePrim("reduce_min", "min", extremeJvp);
export const reduceProdP = reducePrim("reduce_prod", "prod", prodJvp);

const normAxes = (axes: readonly number[]) => [...axes].sort((a, b) => a - b);

export function reduceSum(x: Value, axes: readonly number[]): Value {
  return axes.length === 0 && x.aval.dtype !== "bool" ? x : bind1(reduceSumP, [x], { axes: normAxes(axes) });
}
export function reduceMax(x: Value, axes: readonly number[]): Value {
  return axes.length === 0 ? x : bind1(reduceMaxP, [x], { axes: normAxes(axes) });
}
export function reduceMin(x: Value, axes: readonly number[]): Value {
  return axes.length === 0 ? x : bind1(reduceMinP, [x], { axes: normAxes(axes) });
}
export function reduceProd(x: Value, axes: readonly number[]): Value {
  return axes.length === 0 && x.aval.dtype !== "bool" ? x : bind1(reduceProdP, [x], { axes: normAxes(axes) });
}

// ---------------------------------------------------------------------------------------------------
// argmax / argmin

interface ArgParams {
  readonly axis: number;
  readonly indexDtype: DType;
}

function argPrim(name: string, op: ArgReduceOp): OpsPrimitive<ArgParams> {
  const p: OpsPrimitive<ArgParams> = definePrimitive<ArgParams>({
    name,
    abstractEval: ([x], pr) => {
      checkAxes(name, [pr.axis], x!.ndim);
      if (x!.shape[pr.axis] === 0) throw new ShapeError(`${name}: axis ${pr.axis} of ${x!.str()} is empty`);
      return [new ShapedArray(reducedShape(x!.shape, [pr.axis]), pr.indexDtype)];
    },
    jvp: ([x], _t, pr) => [[bind1(p, [x!], pr)], [null]],
    transpose: nonlinear,
    vmap: ([x], [d], pr, size) => [[bind1(p, [moveTo0(x!, d!, size)], { ...pr, axis: pr.axis + 1 })], [0]],
    lower: (b, [x], pr, _a, [out]) => [b.argReduce(op, x!, pr.axis, out!)],
    printParams: (pr) => `axes=(${pr.axis},) index_dtype=${pr.indexDtype}`,
  });
  return p;
}

export const argmaxP = argPrim("argmax", "argmax");
export const argminP = argPrim("argmin", "argmin");
export const argmax = (x: Value, axis: number): Value => bind1(argmaxP, [x], { axis, indexDtype: "int32" });
export const argmin = (x: Value, axis: number): Value => bind1(argminP, [x], { axis, indexDtype: "int32" });

// ---------------------------------------------------------------------------------------------------
// Cumulative ops

interface CumParams {
  readonly axis: number;
  readonly reverse: boolean;
}

/** Moves `axis` last; returns the moved value and the permutation to undo it. */
function axisLast(x: Value, axis: number): [Value, number[]] {
  const n = x.aval.ndim;
  const perm = [...range(n).filter((i) => i !== axis), axis];
  return [transpose(x, perm), invertPerm(perm)];
}

/**
 * dy_k = Σ_{j≤k} t_j · ∂y_k/∂x_j for cumprod, with ∂y_k/∂x_j = Π_{i≤k, i≠j} x_i (no division, so
 * zeros are fine): the cumprod along k of x with x_j replaced by 1, for every j (an n×n matrix).
 */
function cumprodJvp(x: Value, _y: Value, t: Value, p: CumParams): Value {
  const [xl, undo] = axisLast(p.reverse ? rev(x, [p.axis]) : x, p.axis);
  const [tl] = axisLast(p.reverse ? rev(t, [p.axis]) : t, p.axis);
  const shape = xl.aval.shape;
  const r = shape.length - 1;
  const n = shape[r]!;
  const lead = shape.slice(0, r);
  const m = broadcastInDim(xl, [...lead, n, n], [...range(r), r + 1]); // [..., j, k] = x_k
  const diag = broadcastInDim(eq(iota("int32", [n, n], 0), iota("int32", [n, n], 1)), [...lead, n, n], [r, r + 1]);
  const partial = cumprod(select(diag, fullLike(m, 1), m), r + 1, false); // [..., j, k]
  const causal = broadcastInDim(
    convert(bind1(leP, [iota("int32", [n, n], 0), iota("int32", [n, n], 1)], {}), x.aval.dtype),
    [...lead, n, n],
    [r, r + 1],
  ); // j <= k
  const tb = broadcastInDim(tl, [...lead, n, n], [...range(r), r]); // [..., j, k] = t_j
  const dy = reduceSum(mul(mul(tb, causal), partial), [r]); // [..., k]
  const out = transpose(dy, undo);
  return p.reverse ? rev(out, [p.axis]) : out;
}

/** cummax/cummin: the tangent of the (first) element that attains the running extreme. */
function cumExtremeJvp(x: Value, y: Value, t: Value, p: CumParams): Value {
  if (x.aval.shape[p.axis] === 0) return t; // nothing to select from an empty axis
  const [xl, undo] = axisLast(p.reverse ? rev(x, [p.axis]) : x, p.axis);
  const [yl] = axisLast(p.reverse ? rev(y, [p.axis]) : y, p.axis);
  const [tl] = axisLast(p.reverse ? rev(t, [p.axis]) : t, p.axis);
  const shape = xl.aval.shape;
  const r = shape.length - 1;
  const n = shape[r]!;
  const lead = shape.slice(0, r);
  const xj = broadcastInDim(xl, [...lead, n, n], [...range(r), r + 1]); // [..., k, j] = x_j
  const yk = broadcastInDim(yl, [...lead, n, n], [...range(r), r]); // [..., k, j] = y_k
  const causal = broadcastInDim(bind1(leP, [iota("int32", [n, n], 1), iota("int32", [n, n], 0)], {}), [...lead, n, n], [r, r + 1]);
  const hit = bind1(andP, [eq(xj, yk), causal], {});
  const first = argmax(hit, r + 1); // [..., k]
  const dy = takeAlongLastAxis(tl, first);
  const out = transpose(dy, undo);
  return p.reverse ? rev(out, [p.axis]) : out;
}


function cumPrim(name: string, op: CumulativeOp, jvp: (x: Value, y: Value, t: Value, p: CumParams) => Value): OpsPrimitive<CumParams> {
  const p: OpsPrimitive<CumParams> = definePrimitive<CumParams>({
    name,
    abstractEval: ([x], pr) => {
      checkAxes(name, [pr.axis], x!.ndim);
      const dtype: DType = x!.dtype === "bool" && (op === "sum" || op === "prod") ? "int32" : x!.dtype;
      return [new ShapedArray(x!.shape, dtype, x!.weakType)];
    },
    jvp: ([x], [t], pr) => {
      const y = bind1(p, [x!], pr);
      return [[y], [t ? jvp(x!, y, t, pr) : null]];
    },
    transpose: op === "sum" ? ([ct], _x, pr) => [ct === null ? null : cumsum(ct!, pr.axis, !pr.reverse)] : nonlinear,
    vmap: ([x], [d], pr, size) => [[bind1(p, [moveTo0(x!, d!, size)], { ...pr, axis: pr.axis + 1 })], [0]],
    lower: (b, [x], pr, [a]) => {
      const xin = a!.dtype === "bool" && (op === "sum" || op === "prod") ? b.cast(x!, "int32") : x!;
      return [b.cumulative(op, xin, pr.axis, pr.reverse)];
    },
    printParams: (pr) => `axis=${pr.axis} reverse=${pr.reverse ? "True" : "False"}`,
  });
  return p;
}

export const cumsumP = cumPrim("cumsum", "sum", (_x, _y, t, pr) => cumsum(t, pr.axis, pr.reverse));
export const cumprodP = cumPrim("cumprod", "prod", cumprodJvp);
export const cummaxP = cumPrim("cummax", "max", cumExtremeJvp);
export const cumminP = cumPrim("cummin", "min", cumExtremeJvp);

export const cumsum = (x: Value, axis: number, reverse = false): Value => bind1(cumsumP, [x], { axis, reverse });
export const cumprod = (x: Value, axis: number, reverse = false): Value => bind1(cumprodP, [x], { axis, reverse });
export const cummax = (x: Value, axis: number, reverse = false): Value => bind1(cummaxP, [x], { axis, reverse });
export const cummin = (x: Value, axis: number, reverse = false): Value => bind1(cumminP, [x], { axis, reverse });

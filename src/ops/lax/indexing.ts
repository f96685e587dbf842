/**
 * @file Indexing primitives: gather (a batched `take`) and its transpose scatter_add, dynamic_slice and
 * dynamic_update_slice (slices at traced offsets: KV caches, scan bodies).
 */
import { isInt, ShapedArray, shapeEq, shapeStr } from "../../autodiff/aval.js";
import { bind1, UndefinedPrimal, Value } from "../../autodiff/core.js";
import { DTypeError, ShapeError } from "../../autodiff/errors.js";
import { scalar } from "../array.js";
import { definePrimitive, OpsPrimitive } from "../primitive.js";
import { add, and, convert, full, ge, lt, max, min, select, sub, zerosLike } from "./elementwise.js";
import { broadcastInDim, iota } from "./structural.js";
import { moveTo0 } from "./util.js";

// ---------------------------------------------------------------------------------------------------
// gather / scatter_add

interface GatherParams {
  readonly axis: number;
  readonly batchDims: number;
}

function gatherShape(name: string, x: ShapedArray, idx: ShapedArray, p: GatherParams): number[] {
  const { axis, batchDims: nb } = p;
  if (!isInt(idx.dtype)) throw new DTypeError(`${name}: indices must be integers, got ${idx.dtype}`);
  if (!(Number.isInteger(axis) && axis >= nb && axis < x.ndim) || nb > idx.ndim) {
    throw new ShapeError(`${name}: axis ${axis} with ${nb} batch dims is invalid for operand ${x.str()} and indices ${idx.str()}`);
  }
  for (let i = 0; i < nb; i++) {
    if (x.shape[i] !== idx.shape[i]) {
      throw new ShapeError(`${name}: batch dims of operand ${x.str()} and indices ${idx.str()} must match`);
    }
  }
  if (x.shape[axis] === 0 && idx.size > 0) throw new ShapeError(`${name}: cannot index into empty axis ${axis} of ${x.str()}`);
  return [...x.shape.slice(0, axis), ...idx.shape.slice(nb), ...x.shape.slice(axis + 1)];
}

export const gatherP: OpsPrimitive<GatherParams> = definePrimitive<GatherParams>({
  name: "gather",
  abstractEval: ([x, idx], p) => [new ShapedArray(gatherShape("gather", x!, idx!, p), x!.dtype, x!.weakType)],
  jvp: ([x, idx], [t], p) => [[bind1(gatherP, [x!, idx!], p)], [t ? bind1(gatherP, [t, idx!], p) : null]],
  transpose: ([ct], [x, idx], p) => {
    if (ct === null) return [null, null];
    if (idx instanceof UndefinedPrimal) throw new DTypeError("gather: indices cannot be linear (webgrad bug)");
    const a = (x as UndefinedPrimal).aval;
    return [scatterAdd(full(a.shape, 0, a.dtype), idx as Value, ct!, p.axis, p.batchDims), null];
  },
  vmap: ([x, idx], [dx, di], p, size) => [
    [bind1(gatherP, [moveTo0(x!, dx!, size), moveTo0(idx!, di!, size)], { axis: p.axis + 1, batchDims: p.batchDims + 1 })],
    [0],
  ],
  lower: (b, [x, idx], p, _a, [out]) => [b.gather(x!, idx!, p.axis, p.batchDims, out!)],
  printParams: (p) => `axis=${p.axis} batch_dims=${p.batchDims}`,
});

export const scatterAddP: OpsPrimitive<GatherParams> = definePrimitive<GatherParams>({
  name: "scatter_add",
  abstractEval: ([x, idx, upd], p) => {
    const want = gatherShape("scatter_add", x!, idx!, p);
    if (!shapeEq(want, upd!.shape)) {
      throw new ShapeError(`scatter_add: updates must have shape ${shapeStr(want)}, got ${upd!.str()}`);
    }
    if (upd!.dtype !== x!.dtype) throw new DTypeError(`scatter_add: updates dtype ${upd!.dtype} differs from operand ${x!.dtype}`);
    return [x!];
  },
  jvp: ([x, idx, upd], [tx, , tu], p) => {
    const out = bind1(scatterAddP, [x!, idx!, upd!], p);
    if (!tx && !tu) return [[out], [null]];
    return [[out], [bind1(scatterAddP, [tx ?? zerosLike(x!), idx!, tu ?? zerosLike(upd!)], p)]];
  },
  transpose: ([ct], [x, idx, upd], p) => {
    if (ct === null) return [null, null, null];
    return [
      x instanceof UndefinedPrimal ? ct! : null,
      null,
      upd instanceof UndefinedPrimal ? bind1(gatherP, [ct!, idx as Value], p) : null,
    ];
  },
  vmap: ([x, idx, upd], [dx, di, du], p, size) => [
    [
      bind1(scatterAddP, [moveTo0(x!, dx!, size), moveTo0(idx!, di!, size), moveTo0(upd!, du!, size)], {
        axis: p.axis + 1,
        batchDims: p.batchDims + 1,
      }),
    ],
    [0],
  ],
  lower: (b, [x, idx, upd], p) => [b.scatterAdd(x!, idx!, upd!, p.axis, p.batchDims)],
  printParams: (p) => `axis=${p.axis} batch_dims=${p.batchDims}`,
});

/** out[b, pre, i, post] = x[b, pre, idx[b, i], post] with `batchDims` shared leading dims. */
export function gather(x: Value, idx: Value, axis: number, batchDims = 0): Value {
  return bind1(gatherP, [x, idx], { axis, batchDims });
}

export function scatterAdd(x: Value, idx: Value, updates: Value, axis: number, batchDims = 0): Value {
  return bind1(scatterAddP, [x, idx, updates], { axis, batchDims });
}

/** x[..., idx[..., j]] along the last axis, leading dims shared. */
export function takeAlongLastAxis(x: Value, idx: Value): Value {
  const r = x.aval.ndim - 1;
  return gather(x, idx, r, r);
}

// ---------------------------------------------------------------------------------------------------
// dynamic_slice / dynamic_update_slice

interface DynSliceParams {
  readonly sliceSizes: readonly number[];
}

function checkStarts(name: string, x: ShapedArray, starts: readonly ShapedArray[]): void {
  if (starts.length !== x.ndim) throw new ShapeError(`${name}: needs one start index per axis of ${x.str()}, got ${starts.length}`);
  for (const s of starts) {
    if (s.ndim !== 0 || !isInt(s.dtype)) throw new DTypeError(`${name}: start indices must be integer scalars, got ${s.str()}`);
  }
}

/** Clamps a start index so that a window of `size` fits in `dim`, as XLA does. */
function clampStart(s: Value, dim: number, size: number): Value {
  const shape = s.aval.shape; // [] for a plain start, [B] for a batched one
  const hi = Math.max(dim - size, 0);
  // Clamp unsigned starts in their own domain first, so huge uint32 values clamp high (as XLA does).
  const su = s.aval.dtype === "uint32" ? min(s, full(shape, hi, "uint32")) : s;
  const si = convert(su, "int32");
  return max(full(shape, 0, "int32"), min(si, full(shape, hi, "int32")));
}

/** For batched starts: per-axis gathers with indices s + iota(size) (clamped). */
function batchedDynamicSlice(x0: Value, starts0: readonly Value[], sizes: readonly number[], size: number): Value {
  let out = x0; // [B, ...]
  const shape = x0.aval.shape.slice(1);
  starts0.forEach((s, d) => {
    const sc = clampStart(s, shape[d]!, sizes[d]!); // [B]
    const idx = add(broadcastInDim(sc, [size, sizes[d]!], [0]), broadcastInDim(iota("int32", [sizes[d]!]), [size, sizes[d]!], [1]));
    out = gather(out, idx, d + 1, 1);
  });
  return out;
}

export const dynamicSliceP: OpsPrimitive<DynSliceParams> = definePrimitive<DynSliceParams>({
  name: "dynamic_slice",
  abstractEval: ([x, ...starts], p) => {
    checkStarts("dynamic_slice", x!, starts);
    if (p.sliceSizes.length !== x!.ndim || p.sliceSizes.some((s, i) => s < 0 || s > x!.shape[i]!)) {
      throw new ShapeError(`dynamic_slice: slice sizes (${p.sliceSizes}) must fit in ${x!.str()}`);
    }
    return [new ShapedArray(p.sliceSizes, x!.dtype, x!.weakType)];
  },
  jvp: ([x, ...starts], [t], p) => [
    [bind1(dynamicSliceP, [x!, ...starts], p)],
    [t ? bind1(dynamicSliceP, [t, ...starts], p) : null],
  ],
  transpose: ([ct], [x, ...starts]) => {
    if (ct === null) return [null, ...starts.map(() => null)];
    const a = (x as UndefinedPrimal).aval;
    return [dynamicUpdateSlice(full(a.shape, 0, a.dtype), ct!, starts as Value[]), ...starts.map(() => null)];
  },
  vmap: ([x, ...starts], [dx, ...ds], p, size) => {
    if (ds.every((d) => d === null)) {
      const zero = scalar(0, "int32", false);
      return [[bind1(dynamicSliceP, [moveTo0(x!, dx!, size), zero, ...starts], { sliceSizes: [size, ...p.sliceSizes] })], [0]];
    }
    const s0 = starts.map((s, i) => moveTo0(s, ds[i]!, size));
    return [[batchedDynamicSlice(moveTo0(x!, dx!, size), s0, p.sliceSizes, size)], [0]];
  },
  lower: (b, [x, ...starts], p) => [b.dynamicSlice(x!, starts, p.sliceSizes)],
  printParams: (p) => `slice_sizes=(${p.sliceSizes.join(", ")}${p.sliceSizes.length === 1 ? "," : ""})`,
});

export const dynamicUpdateSliceP: OpsPrimitive<{}> = definePrimitive<{}>({
  name: "dynamic_update_slice",
  abstractEval: ([x, upd, ...starts]) => {
    checkStarts("dynamic_update_slice", x!, starts);
    if (upd!.ndim !== x!.ndim || upd!.shape.some((s, i) => s > x!.shape[i]!)) {
      throw new ShapeError(`dynamic_update_slice: update ${upd!.str()} must fit in operand ${x!.str()}`);
    }
    if (upd!.dtype !== x!.dtype) throw new DTypeError(`dynamic_update_slice: update dtype ${upd!.dtype} differs from ${x!.dtype}`);
    return [x!];
  },
  jvp: ([x, upd, ...starts], [tx, tu]) => {
    const out = bind1(dynamicUpdateSliceP, [x!, upd!, ...starts], {});
    if (!tx && !tu) return [[out], [null]];
    return [[out], [bind1(dynamicUpdateSliceP, [tx ?? zerosLike(x!), tu ?? zerosLike(upd!), ...starts], {})]];
  },
  transpose: ([ct], [x, upd, ...starts]) => {
    const nulls = starts.map(() => null);
    if (ct === null) return [null, null, ...nulls];
    const ua = upd!.aval;
    const s = starts as Value[];
    return [
      x instanceof UndefinedPrimal ? dynamicUpdateSlice(ct!, full(ua.shape, 0, ua.dtype), s) : null,
      upd instanceof UndefinedPrimal ? dynamicSlice(ct!, s, ua.shape) : null,
      ...nulls,
    ];
  },
  vmap: ([x, upd, ...starts], [dx, du, ...ds], _p, size) => {
    const x0 = moveTo0(x!, dx!, size);
    const u0 = moveTo0(upd!, du!, size);
    if (ds.every((d) => d === null)) {
      return [[bind1(dynamicUpdateSliceP, [x0, u0, scalar(0, "int32", false), ...starts], {})], [0]];
    }
    if (u0.aval.size === 0) return [[x0], [0]]; // an empty update changes nothing
    // Batched offsets: place the update with per-axis gathers and a mask, then select.
    const shape = x0.aval.shape.slice(1);
    const full0 = x0.aval.shape;
    let placed = u0;
    let mask: Value | null = null;
    starts.forEach((s, d) => {
      const n = shape[d]!;
      const k = u0.aval.shape[d + 1]!;
      const sc = broadcastInDim(clampStart(moveTo0(s, ds[d]!, size), n, k), [size, n], [0]); // [B, n]
      const pos = broadcastInDim(iota("int32", [n]), [size, n], [1]); // [B, n]
      const rel = sub(pos, sc);
      const idx = max(full([size, n], 0, "int32"), min(rel, full([size, n], Math.max(k - 1, 0), "int32")));
      placed = gather(placed, idx, d + 1, 1);
      const inside = and(ge(rel, full([size, n], 0, "int32")), lt(rel, full([size, n], k, "int32")));
      const m = broadcastInDim(inside, full0, [0, d + 1]);
      mask = mask === null ? m : and(mask, m);
    });
    return [[select(mask!, placed, x0)], [0]];
  },
  lower: (b, [x, upd, ...starts]) => [b.dynamicUpdateSlice(x!, upd!, starts)],
});

export function dynamicSlice(x: Value, starts: readonly Value[], sizes: readonly number[]): Value {
  return bind1(dynamicSliceP, [x, ...starts], { sliceSizes: [...sizes] });
}

export function dynamicUpdateSlice(x: Value, update: Value, starts: readonly Value[]): Value {
  return bind1(dynamicUpdateSliceP, [x, update, ...starts], {});
}

/**
 * @file Shared helpers for primitive stanzas: shape/dtype checks for abstract evaluation, and the
 * batching helpers most vmap rules are made of.
 */
import { DType, isFloat, isInt, Shape, ShapedArray, shapeEq, shapeStr } from "../../autodiff/aval.js";
import { Value } from "../../autodiff/core.js";
import { DTypeError, ShapeError } from "../../autodiff/errors.js";
import type { BDim } from "../../autodiff/vmap.js";
import { broadcastInDim, transpose } from "./structural.js";

/** Every input must have one shape and one dtype; returns that shape and whether all are weak. */
export function sameShapeDtype(name: string, avals: readonly ShapedArray[]): { shape: Shape; dtype: DType; weak: boolean } {
  const a0 = avals[0]!;
  for (const a of avals.slice(1)) {
    if (!shapeEq(a.shape, a0.shape)) {
      throw new ShapeError(`${name}: operands must have equal shapes, got ${avals.map((x) => shapeStr(x.shape)).join(" and ")}` +
        `\nTip: np.${name} broadcasts; lax.${name} does not`);
    }
    if (a.dtype !== a0.dtype) {
      throw new DTypeError(`${name}: operands must have equal dtypes, got ${avals.map((x) => x.dtype).join(" and ")}`);
    }
  }
  return { shape: a0.shape, dtype: a0.dtype, weak: avals.every((a) => a.weakType) };
}

export type DTypeClass = "float" | "int" | "bool" | "intOrBool" | "number" | "any";

export function checkDtypeClass(name: string, dtype: DType, cls: DTypeClass): void {
  const ok =
    cls === "any" ||
    (cls === "float" && isFloat(dtype)) ||
    (cls === "int" && isInt(dtype)) ||
    (cls === "bool" && dtype === "bool") ||
    (cls === "intOrBool" && (isInt(dtype) || dtype === "bool")) ||
    (cls === "number" && dtype !== "bool");
  if (!ok) {
    const want = { float: "a float", int: "an integer", bool: "a bool", intOrBool: "an integer or bool", number: "a numeric", any: "any" }[cls];
    throw new DTypeError(`${name}: expects ${want} array, got ${dtype}`);
  }
}

export function checkAxes(name: string, axes: readonly number[], ndim: number): void {
  const seen = new Set<number>();
  for (const a of axes) {
    if (!Number.isInteger(a) || a < 0 || a >= ndim) {
      throw new ShapeError(`${name}: axis ${a} is out of bounds for an array of rank ${ndim}`);
    }
    if (seen.has(a)) throw new ShapeError(`${name}: repeated axis ${a}`);
    seen.add(a);
  }
}

/** Moves batch axis `d` to 0; an unbatched value is broadcast to a new leading axis of `size`. */
export function moveTo0(x: Value, d: BDim, size: number): Value {
  if (d === null) {
    const s = x.aval.shape;
    return broadcastInDim(x, [size, ...s], s.map((_, i) => i + 1));
  }
  if (d === 0) return x;
  const perm = [d, ...x.aval.shape.map((_, i) => i).filter((i) => i !== d)];
  return transpose(x, perm);
}

/** Moves a batched value's batch axis to 0 (unbatched stays as is). */
export function bdimTo0(x: Value, d: BDim): Value {
  return d === null || d === 0 ? x : moveTo0(x, d, 0);
}

/** Inverse of a permutation. */
export function invertPerm(perm: readonly number[]): number[] {
  const inv = new globalThis.Array<number>(perm.length);
  perm.forEach((p, i) => (inv[p] = i));
  return inv;
}

export function range(n: number, start = 0): number[] {
  return globalThis.Array.from({ length: n }, (_, i) => i + start);
}

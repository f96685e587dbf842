/**
 * @file Dtype rules: JAX's type-promotion lattice (with weak types for JS numbers), and host storage
 * per dtype. webgrad has no 64-bit integers, so where JAX's lattice reaches int64 (int32 with uint32)
 * the result is int32, which is what JAX itself gives with 64-bit types disabled.
 * Reference: https://jax.readthedocs.io/en/latest/type_promotion.html
 */
import { DType, isFloat, ShapedArray } from "../autodiff/aval.js";
import { DTypeError } from "../autodiff/errors.js";
import type { AnyTypedArray } from "./backend/kernel.js";

/** Lattice nodes: the dtypes plus the weak categories of JS ints (`i*`) and JS floats (`f*`). */
type Node = DType | "i*" | "f*";

/** Direct successors in JAX's lattice, restricted to our dtypes (int64/uint64 collapse to int32). */
const UP: Record<Node, Node[]> = {
  bool: ["i*"],
  "i*": ["uint32", "int32"],
  uint32: ["int32"], // JAX: uint32 -> int64 (-> int32 without x64)
  int32: ["f*"], // JAX: int32 -> int64 -> f*
  "f*": ["float32"],
  float32: ["float64"],
  float64: [],
};

function ancestors(n: Node): Set<Node> {
  const seen = new Set<Node>([n]);
  const stack = [n];
  while (stack.length) {
    for (const m of UP[stack.pop()!]) {
      if (!seen.has(m)) {
        seen.add(m);
        stack.push(m);
      }
    }
  }
  return seen;
}

const ORDER: Node[] = ["bool", "i*", "uint32", "int32", "f*", "float32", "float64"];
const ANCESTORS = new Map(ORDER.map((n) => [n, ancestors(n)] as const));

/** The least upper bound of two lattice nodes. */
function join(a: Node, b: Node): Node {
  const aa = ANCESTORS.get(a)!;
  const bb = ANCESTORS.get(b)!;
  // The lattice is a chain above int32, so the first common ancestor in ORDER is the join.
  for (const n of ORDER) if (aa.has(n) && bb.has(n)) return n;
  return "float64";
}

function nodeOf(dtype: DType, weak: boolean): Node {
  if (!weak) return dtype;
  if (dtype === "bool") return "bool";
  return isFloat(dtype) ? "f*" : "i*";
}

/** The (dtype, weakness) a lattice node stands for: weak categories become weak int32 / float32. */
function typeOfNode(n: Node): { dtype: DType; weakType: boolean } {
  if (n === "i*") return { dtype: "int32", weakType: true };
  // A weak float keeps float64 if one of the weak operands was float64 (e.g. a weak f64 literal).
  if (n === "f*") return { dtype: "float32", weakType: true };
  return { dtype: n, weakType: false };
}

/** Result dtype and weakness of combining values of these (dtype, weak) types, as jnp.result_type. */
export function resultType(types: readonly { dtype: DType; weakType: boolean }[]): { dtype: DType; weakType: boolean } {
  if (types.length === 0) return { dtype: "float32", weakType: true };
  let n = nodeOf(types[0]!.dtype, types[0]!.weakType);
  for (let i = 1; i < types.length; i++) n = join(n, nodeOf(types[i]!.dtype, types[i]!.weakType));
  return typeOfNode(n);
}

/** A promotion result shared between calls (frozen: callers must not change it). */
export type PromotedType = Readonly<{ dtype: DType; weakType: boolean }>;

// resultType of two operands, tabulated once so the eager path of every binary np function pays an
// index computation instead of lattice walks and allocations: [type a][type b], a type being
// 2 · dtypeIndex(dtype) + weak.
const TYPE_DTYPES: readonly DType[] = ["bool", "int32", "uint32", "float32", "float64"];
/** Index of a dtype in TYPE_DTYPES (and in per-dtype tables elsewhere, e.g. the scalar cache). */
export function dtypeIndex(dtype: DType): number {
  switch (dtype) {
    case "bool":
      return 0;
    case "int32":
      return 1;
    case "uint32":
      return 2;
    case "float32":
      return 3;
    case "float64":
      return 4;
    default:
      checkDType("dtypeIndex", dtype); // throws: not a DType
      return -1;
  }
}
const typeIndex = (dtype: DType, weak: boolean): number => 2 * dtypeIndex(dtype) + (weak ? 1 : 0);
const PAIR_TABLE: PromotedType[][] = TYPE_DTYPES.flatMap((da) =>
  [false, true].map((wa) =>
    TYPE_DTYPES.flatMap((db) => [false, true].map((wb) => Object.freeze(typeOfNode(join(nodeOf(da, wa), nodeOf(db, wb)))))),
  ),
);

/** `resultType([a, b])` without allocating (the result object is shared and frozen). */
export function promoteTypes(a: DType, aWeak: boolean, b: DType, bWeak: boolean): PromotedType {
  return PAIR_TABLE[typeIndex(a, aWeak)]![typeIndex(b, bWeak)]!;
}

/** Result of promoting avals (for np functions). */
export function promoteAvals(avals: readonly ShapedArray[]): { dtype: DType; weakType: boolean } {
  return resultType(avals.map((a) => ({ dtype: a.dtype, weakType: a.weakType })));
}

/** The dtype a float operation produces from this dtype (ints and bool become float32). */
export function toFloat(d: DType): DType {
  return isFloat(d) ? d : "float32";
}

export function newTypedArray(dtype: DType, n: number): AnyTypedArray {
  switch (dtype) {
    case "float32":
      return new Float32Array(n);
    case "float64":
      return new Float64Array(n);
    case "int32":
      return new Int32Array(n);
    case "uint32":
      return new Uint32Array(n);
    case "bool":
      return new Uint8Array(n);
  }
}

/** The dtype stored in a typed array (Uint8Array is read as bool). */
export function dtypeOfTypedArray(a: AnyTypedArray): DType {
  if (a instanceof Float32Array) return "float32";
  if (a instanceof Float64Array) return "float64";
  if (a instanceof Int32Array) return "int32";
  if (a instanceof Uint32Array) return "uint32";
  return "bool";
}

/** Converts a JS number to the value a dtype stores (ints wrap like C casts from double; NaN -> 0). */
export function castScalar(x: number | boolean, dtype: DType): number {
  const v = typeof x === "boolean" ? (x ? 1 : 0) : x;
  switch (dtype) {
    case "float32":
      return Math.fround(v);
    case "float64":
      return v;
    case "int32":
      return Number.isFinite(v) ? Math.max(-2147483648, Math.min(2147483647, Math.trunc(v))) : Number.isNaN(v) ? 0 : v > 0 ? 2147483647 : -2147483648;
    case "uint32":
      return Number.isFinite(v) ? Math.max(0, Math.min(4294967295, Math.trunc(v))) : Number.isNaN(v) ? 0 : v > 0 ? 4294967295 : 0;
    case "bool":
      return v !== 0 ? 1 : 0;
  }
}

export function checkDType(what: string, d: unknown): DType {
  if (d === "float32" || d === "float64" || d === "int32" || d === "uint32" || d === "bool") return d;
  throw new DTypeError(`${what}: unknown dtype ${JSON.stringify(d)}; expected one of float32, float64, int32, uint32, bool`);
}

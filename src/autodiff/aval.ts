/**
 * @file Abstract values (avals): the shape + dtype (+ weak type) of an array, which is all that tracing
 * sees. `ShapedArray` is JAX's name. Dtype promotion lives in ops/dtype.ts; this file only names dtypes.
 */

/** Element types. float64 is for gradient verification on the CPU backend. */
export type DType = "float32" | "float64" | "int32" | "uint32" | "bool";

export const DTYPES: readonly DType[] = ["bool", "int32", "uint32", "float32", "float64"];

export type Shape = readonly number[];

/** Short names used when printing jaxprs, as JAX does (`f32[3,4]`). */
export const DTYPE_SHORT: Record<DType, string> = {
  float32: "f32",
  float64: "f64",
  int32: "i32",
  uint32: "u32",
  bool: "bool",
};

export const isFloat = (d: DType): boolean => d === "float32" || d === "float64";
export const isInt = (d: DType): boolean => d === "int32" || d === "uint32";

/** Bytes per element as stored (bool is one byte). */
export const itemSize = (d: DType): number => (d === "float64" ? 8 : d === "bool" ? 1 : 4);

// Indexed loops rather than for-of / every: these run several times per eager op, and V8 did not
// always remove the iterator (measured 168 bytes allocated per for-of call on a 2-element shape).
export const shapeSize = (shape: Shape): number => {
  let n = 1;
  for (let i = 0; i < shape.length; i++) n *= shape[i]!;
  return n;
};

export const shapeEq = (a: Shape, b: Shape): boolean => {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
};

export const shapeStr = (s: Shape): string => `[${s.join(", ")}]`;

/**
 * The abstract value of an array: shape, dtype and whether the dtype is weak (came from a JS number,
 * so it yields to the other operand's dtype in promotion, as Python scalars do in JAX).
 */
export class ShapedArray {
  readonly shape: Shape;
  /** Number of elements (computed once: `x.size` is read on every op). */
  readonly size: number;
  constructor(
    shape: Shape,
    readonly dtype: DType,
    readonly weakType: boolean = false,
  ) {
    // A frozen shape (another aval's, typically: most ops keep their operand's shape) can be shared as
    // is, since nobody can change it; anything else is copied so callers may reuse their array.
    this.shape = Object.isFrozen(shape) && Array.isArray(shape) ? shape : Object.freeze([...shape]);
    this.size = shapeSize(this.shape);
  }
  get ndim(): number {
    return this.shape.length;
  }
  /** `f32[3,4]`, with a `~` suffix on weak types as JAX's `weak_type` printing does not; we keep it short. */
  str(): string {
    return `${DTYPE_SHORT[this.dtype]}[${this.shape.join(",")}]`;
  }
  equals(o: ShapedArray): boolean {
    return this.dtype === o.dtype && shapeEq(this.shape, o.shape) && this.weakType === o.weakType;
  }
  /** Same shape and dtype (weakness ignored): what tangents and cotangents must match. */
  sameType(o: ShapedArray): boolean {
    return this.dtype === o.dtype && shapeEq(this.shape, o.shape);
  }
  withWeak(weak: boolean): ShapedArray {
    return weak === this.weakType ? this : new ShapedArray(this.shape, this.dtype, weak);
  }
  toString(): string {
    return this.str();
  }
}

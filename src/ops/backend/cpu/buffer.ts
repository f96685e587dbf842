/**
 * @file `CpuBuffer` (a typed array plus shape, strides and offset) and the strided-iteration helpers that
 * every CPU kernel is written on. Read this file first: kernels accept any view (transposed, broadcast
 * with stride 0, reversed with negative strides, sliced) and write fresh C-order outputs.
 *
 * The one iteration primitive is `forEachRow`: it drops size-1 dims, merges dims that are contiguous in
 * every operand (so a contiguous op is a single call over all elements), then walks the remaining outer
 * dims with a carried multi-index and hands each innermost row (length, per-operand start offsets,
 * per-operand steps) to a callback whose inner loop is a plain strided `for`.
 */
import { shapeSize, shapeStr, type DType, type Shape } from "../../../autodiff/aval.js";
import { BackendError, DTypeError, ShapeError } from "../../../autodiff/errors.js";
import type { AnyTypedArray, OutType } from "../kernel.js";
import { allocateResident, disownStorage, releaseStorage, retainStorage } from "./wasm/storage.js";
export { mergedStride } from "../strides.js";

const ARRAY_TYPES = {
  float32: Float32Array,
  float64: Float64Array,
  int32: Int32Array,
  uint32: Uint32Array,
  bool: Uint8Array,
} as const;

/**
 * A fresh zero-filled typed array for `dtype` (bool is one byte per element). Large ones live in the
 * Wasm runtime's memory when it allows (wasm/storage.ts), where the Wasm kernels use them in place.
 */
export function allocate(dtype: DType, size: number): AnyTypedArray {
  return allocateResident(arrayType(dtype), size, true) ?? allocateOrdinary(dtype, size);
}

/**
 * As `allocate`, for a caller that writes every element before anything reads one: resident storage
 * is handed out uncleared (it may hold an earlier array's values).
 */
export function allocateUninit(dtype: DType, size: number): AnyTypedArray {
  return allocateResident(arrayType(dtype), size, false) ?? allocateOrdinary(dtype, size);
}

function arrayType(dtype: DType): (typeof ARRAY_TYPES)[keyof typeof ARRAY_TYPES] {
  const t = ARRAY_TYPES[dtype];
  if (t === undefined) throw new DTypeError(`cpu: a known dtype, got ${String(dtype)}`);
  return t;
}

/** A fresh zero-filled ordinary (JS-heap) typed array: for scratch that kernels hold privately. */
export function allocateOrdinary(dtype: DType, size: number): AnyTypedArray {
  switch (dtype) {
    case "float32":
      return new Float32Array(size);
    case "float64":
      return new Float64Array(size);
    case "int32":
      return new Int32Array(size);
    case "uint32":
      return new Uint32Array(size);
    case "bool":
      return new Uint8Array(size);
    default:
      throw new DTypeError(`cpu: a known dtype, got ${String(dtype satisfies never)}`);
  }
}

/** The dtype a typed array stores natively (Uint8Array is bool). */
export function dtypeOfArray(data: AnyTypedArray): DType {
  if (data instanceof Float32Array) return "float32";
  if (data instanceof Float64Array) return "float64";
  if (data instanceof Int32Array) return "int32";
  if (data instanceof Uint32Array) return "uint32";
  return "bool";
}

export { contiguousStrides } from "../strides.js";
import { contiguousStrides } from "../strides.js";

/** Whether `strides` lay `shape` out in C order with no gaps (size-1 dims may have any stride). */
export function isContiguous(shape: Shape, strides: readonly number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    const n = shape[d]!;
    if (n === 0) return true;
    if (n === 1) continue;
    if (strides[d] !== expected) return false;
    expected *= n;
  }
  return true;
}

/**
 * An array on the CPU: `data[offset + Σ index[d] * strides[d]]` is the element at `index`. Owned buffers
 * hold storage created for them (fresh, contiguous, offset 0); views share another buffer's storage.
 */
export class CpuBuffer {
  #data: AnyTypedArray | null;
  readonly dtype: DType;
  readonly shape: Shape;
  readonly strides: readonly number[];
  readonly offset: number;
  readonly size: number;
  /** True when this buffer owns its storage (it was allocated for it), false for views. */
  readonly owned: boolean;
  /** True when the elements are laid out in C order from `offset` with no gaps. */
  readonly contiguous: boolean;
  /** Whether this buffer holds a counted reference to its storage (owned buffers and views). */
  #counted: boolean;

  constructor(
    data: AnyTypedArray,
    dtype: DType,
    shape: Shape,
    strides: readonly number[] = contiguousStrides(shape),
    offset = 0,
    owned = true,
    counted = owned,
  ) {
    this.#data = data;
    this.#counted = counted;
    if (counted) retainStorage(data);
    this.dtype = dtype;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze([...strides]);
    this.offset = offset;
    this.size = shapeSize(shape);
    this.owned = owned;
    this.contiguous = isContiguous(shape, strides);
  }

  /** A fresh zero-filled contiguous buffer. */
  static zeros(out: OutType): CpuBuffer {
    return new CpuBuffer(allocate(out.dtype, shapeSize(out.shape)), out.dtype, out.shape);
  }

  /** The storage (shared with views). Throws once released. */
  get data(): AnyTypedArray {
    const d = this.#data;
    if (d === null) {
      throw new BackendError(
        `cpu: a live buffer, got one of ${this.dtype}${shapeStr(this.shape)} used after release`,
      );
    }
    return d;
  }

  get released(): boolean {
    return this.#data === null;
  }

  get ndim(): number {
    return this.shape.length;
  }

  /**
   * Drops the reference to the storage (idempotent). Views made earlier keep their own reference;
   * resident storage goes back to the arena with the last counted reference (wasm/storage.ts).
   */
  release(): void {
    const d = this.#data;
    this.#data = null;
    if (d !== null && this.#counted) releaseStorage(d);
  }

  /**
   * The storage of a buffer its caller just made and will not use again (a kernel's fresh result that
   * the jit keeps raw for the rest of a call): this buffer is released, and its counted reference
   * given up without returning resident storage to the arena, so that the array the storage is
   * wrapped in next decides when it is freed.
   */
  takeStorage(): AnyTypedArray {
    const d = this.data;
    this.#data = null;
    if (this.#counted) disownStorage(d);
    return d;
  }

  /** A view onto the same storage (which is then marked shared: see `isStorageShared`). */
  view(shape: Shape, strides: readonly number[], offset: number): CpuBuffer {
    const data = this.data;
    sharedStorage.add(data);
    return new CpuBuffer(data, this.dtype, shape, strides, offset, false, true);
  }
}

/** Storage that some view shares (reshape, transpose, slice, ... return views onto their operand's). */
const sharedStorage = new WeakSet<AnyTypedArray>();

/**
 * Whether a view was ever made onto this storage. Storage that may be shared must never be written in
 * place (e.g. by jit's buffer donation): the view may belong to another live array.
 */
export function isStorageShared(data: AnyTypedArray): boolean {
  return sharedStorage.has(data);
}

/**
 * Per-row callback of `forEachRow`: `n` elements, operand `k` starting at `offs[k]` and advancing by
 * `steps[k]`. The arrays are reused between calls and must not be modified.
 */
export type RowFn = (n: number, offs: Int32Array, steps: Int32Array) => void;

/**
 * Walks `shape` in C order for several operands at once (each with its own strides and start offset),
 * calling `row` once per innermost row after dropping size-1 dims and merging dims that are contiguous
 * in every operand. Nothing is called when the shape has a zero dim; a scalar is one row of length 1.
 */
export function forEachRow(
  shape: Shape,
  strides: readonly (readonly number[])[],
  offsets: readonly number[],
  row: RowFn,
): void {
  const k = strides.length;
  const dims: number[] = [];
  const st: number[][] = [];
  for (let o = 0; o < k; o++) st.push([]);
  for (let d = 0; d < shape.length; d++) {
    const n = shape[d]!;
    if (n === 0) return;
    if (n === 1) continue;
    const last = dims.length - 1;
    let merge = last >= 0;
    for (let o = 0; merge && o < k; o++) merge = st[o]![last] === strides[o]![d]! * n;
    if (merge) {
      dims[last]! *= n;
      for (let o = 0; o < k; o++) st[o]![last] = strides[o]![d]!;
    } else {
      dims.push(n);
      for (let o = 0; o < k; o++) st[o]!.push(strides[o]![d]!);
    }
  }
  const offs = Int32Array.from(offsets);
  const steps = new Int32Array(k);
  const nd = dims.length;
  if (nd === 0) {
    row(1, offs, steps);
    return;
  }
  for (let o = 0; o < k; o++) steps[o] = st[o]![nd - 1]!;
  const inner = dims[nd - 1]!;
  if (nd === 1) {
    row(inner, offs, steps);
    return;
  }
  let outer = 1;
  for (let d = 0; d < nd - 1; d++) outer *= dims[d]!;
  const counter = new Int32Array(nd - 1);
  for (let it = 0; it < outer; it++) {
    row(inner, offs, steps);
    // Advance the carried multi-index: bump the innermost outer dim, wrapping into the next ones.
    for (let d = nd - 2; d >= 0; d--) {
      for (let o = 0; o < k; o++) offs[o]! += st[o]![d]!;
      if (++counter[d]! < dims[d]!) break;
      counter[d] = 0;
      const n = dims[d]!;
      for (let o = 0; o < k; o++) offs[o]! -= st[o]![d]! * n;
    }
  }
}

/** Element offsets of every position of a (shape, strides, base) view, in C order. */
export function offsetsOf(shape: Shape, strides: readonly number[], base = 0): Int32Array {
  const table = new Int32Array(shapeSize(shape));
  let p = 0;
  forEachRow(shape, [strides], [base], (n, offs, steps) => {
    let o = offs[0]!;
    const s = steps[0]!;
    for (let i = 0; i < n; i++, o += s) table[p++] = o;
  });
  return table;
}


/**
 * Copies the elements of `src` (any view) into `dst` at `dstOffset` with `dstStrides` (indexed by the
 * same shape). Values are stored with the typed array's own conversion, so pass a `dst` of src's dtype
 * unless a modular integer conversion is wanted.
 */
export function copyStrided(
  dst: AnyTypedArray,
  dstOffset: number,
  dstStrides: readonly number[],
  src: CpuBuffer,
): void {
  const s = src.data;
  forEachRow(src.shape, [dstStrides, src.strides], [dstOffset, src.offset], (n, offs, steps) => {
    let io = offs[0]!;
    let ia = offs[1]!;
    const so = steps[0]!;
    const sa = steps[1]!;
    if (so === 1 && sa === 1 && n > 64 && dst.constructor === s.constructor) {
      dst.set(s.subarray(ia, ia + n) as never, io);
      return;
    }
    for (let i = 0; i < n; i++, io += so, ia += sa) dst[io] = s[ia]!;
  });
}

/**
 * The elements of `x` in C order as a typed array of x's storage type. Aliases x's storage when x is
 * contiguous (no copy), so callers must treat the result as read-only; use `copyOut` for a fresh copy.
 */
export function contiguousData(x: CpuBuffer): AnyTypedArray {
  const data = x.data;
  if (x.contiguous) {
    if (x.offset === 0 && data.length === x.size) return data;
    return data.subarray(x.offset, x.offset + x.size);
  }
  return copyOut(x);
}

/** A fresh C-order copy of the elements of `x` (never x's storage, never resident). */
export function copyOut(x: CpuBuffer): AnyTypedArray {
  const data = x.data;
  // Ordinary storage either way (`slice` of a view of shared memory makes an ordinary array): host
  // code gets arrays of its own, never views of the Wasm memory.
  if (x.contiguous) return data.slice(x.offset, x.offset + x.size);
  const out = allocateOrdinary(x.dtype, x.size);
  copyStrided(out, 0, contiguousStrides(x.shape), x);
  return out;
}

/** A fresh contiguous buffer holding x's elements. */
export function materialize(x: CpuBuffer): CpuBuffer {
  return new CpuBuffer(copyOut(x), x.dtype, x.shape);
}

/** Throws a ShapeError unless `actual` equals `expected`. */
export function expectShape(op: string, what: string, expected: Shape, actual: Shape): void {
  if (expected.length !== actual.length || expected.some((d, i) => d !== actual[i])) {
    throw new ShapeError(`${op}: ${what} ${shapeStr(expected)}, got ${shapeStr(actual)}`);
  }
}

/** Throws a DTypeError unless `actual` equals `expected`. */
export function expectDType(op: string, what: string, expected: DType, actual: DType): void {
  if (expected !== actual) throw new DTypeError(`${op}: ${what} ${expected}, got ${actual}`);
}

/** Throws a ShapeError unless `axes` are sorted, unique and within [0, ndim). */
export function checkAxes(op: string, axes: readonly number[], ndim: number, sorted = true): void {
  const seen = new Set<number>();
  for (let i = 0; i < axes.length; i++) {
    const a = axes[i]!;
    const bad =
      !Number.isInteger(a) || a < 0 || a >= ndim || seen.has(a) || (sorted && i > 0 && a <= axes[i - 1]!);
    if (bad) {
      throw new ShapeError(
        `${op}: ${sorted ? "sorted, " : ""}unique axes in [0, ${ndim}), got [${axes.join(", ")}]`,
      );
    }
    seen.add(a);
  }
}

/** Throws a ShapeError unless `shape` is a list of non-negative integers. */
export function checkShape(op: string, shape: Shape): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new ShapeError(`${op}: a shape of non-negative integers, got ${shapeStr(shape)}`);
    }
  }
}

/// <reference types="@webgpu/types" />
/**
 * @file `GpuHandle`, the WebGPU backend's buffer type: a reference-counted `GpuStorage` (one GPUBuffer)
 * plus shape, strides and offset in elements, like the CPU's CpuBuffer. reshape / transpose /
 * broadcastInDim / slice / reverse return new handles on the same storage; the storage goes back to the
 * pool when its last handle is released. Every dtype is 4 bytes on the GPU (bool is stored as u32).
 *
 * Also the layout helpers every kernel uses: `collapse` (drop size-1 dims, merge dims contiguous in all
 * operands, as the CPU's forEachRow does) and the WGSL type of each dtype.
 */
import { shapeSize, type DType, type Shape } from "../../../autodiff/aval.js";
import { BackendError, DTypeError } from "../../../autodiff/errors.js";
import { contiguousStrides, isContiguous } from "../cpu/buffer.js";

/** A GPU buffer shared by the handles viewing it. */
export class GpuStorage {
  refs = 1;
  constructor(
    /** null once returned to the pool. */
    public buffer: GPUBuffer | null,
    /** Bytes the storage was allocated for (elements · 4), as memoryStats reports them. */
    readonly bytes: number,
  ) {}
}

/** An array on the GPU: element `index` lives at `offset + Σ index[d]·strides[d]` of the storage. */
export class GpuHandle {
  readonly size: number;
  readonly contiguous: boolean;
  released = false;
  constructor(
    readonly storage: GpuStorage,
    readonly dtype: DType,
    readonly shape: Shape,
    readonly strides: readonly number[] = contiguousStrides(shape),
    readonly offset = 0,
    /** True for the handle the storage was allocated for; views are false. */
    readonly owned = true,
  ) {
    this.size = shapeSize(shape);
    this.contiguous = isContiguous(shape, strides);
  }

  get ndim(): number {
    return this.shape.length;
  }

  /** The GPUBuffer; throws once this handle was released. */
  get buffer(): GPUBuffer {
    const b = this.storage.buffer;
    if (this.released || b === null) {
      throw new BackendError(`webgpu: a live buffer, got one of ${this.dtype}[${this.shape.join(", ")}] used after release`);
    }
    return b;
  }

}

/** The WGSL scalar type storing `dtype`. */
export function wgslType(dtype: DType): "f32" | "i32" | "u32" {
  switch (dtype) {
    case "float32":
      return "f32";
    case "int32":
      return "i32";
    case "uint32":
    case "bool":
      return "u32";
    case "float64":
      throw new DTypeError("webgpu: float32, int32, uint32 or bool (WGSL has no f64), got float64");
    default:
      throw new DTypeError(`webgpu: a known dtype, got ${String(dtype satisfies never)}`);
  }
}

/** A shape and per-operand strides after `collapse`. */
export interface Collapsed {
  readonly shape: number[];
  readonly strides: number[][];
}

/**
 * Drops size-1 dims and merges each dim into its outer neighbour when it is contiguous with it in every
 * operand. The result has rank >= 1 (a scalar or an all-ones shape becomes [1] with stride 0).
 */
export function collapse(shape: Shape, strides: readonly (readonly number[])[]): Collapsed {
  const k = strides.length;
  const dims: number[] = [];
  const st: number[][] = Array.from({ length: k }, () => []);
  for (let d = 0; d < shape.length; d++) {
    const n = shape[d]!;
    if (n === 1) continue;
    const last = dims.length - 1;
    let merge = last >= 0 && n !== 0;
    for (let o = 0; merge && o < k; o++) merge = st[o]![last] === strides[o]![d]! * n;
    if (merge) {
      dims[last]! *= n;
      for (let o = 0; o < k; o++) st[o]![last] = strides[o]![d]!;
    } else {
      dims.push(n);
      for (let o = 0; o < k; o++) st[o]!.push(strides[o]![d]!);
    }
  }
  if (dims.length === 0) return { shape: [1], strides: st.map(() => [0]) };
  return { shape: dims, strides: st };
}

/** 32-bit patterns of a JS number stored as `dtype` (f32 bits for floats, wrapped ints otherwise). */
export function bitsOf(value: number, dtype: DType): number {
  switch (dtype) {
    case "float32": {
      f32Scratch[0] = value;
      return u32Scratch[0]!;
    }
    case "bool":
      return value !== 0 ? 1 : 0;
    default:
      return value >>> 0;
  }
}
const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

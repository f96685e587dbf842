/**
 * @file The Threefry-2x32 block cipher with 20 rounds, bit-exact with JAX's `threefry2x32_p`
 * (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011,
 * https://doi.org/10.1145/2063384.2063405). Rotations [13, 15, 26, 6] / [17, 29, 16, 24] alternate
 * every 4 rounds; after each group the key schedule (k0, k1, k0 ^ k1 ^ 0x1BD11BDA) is injected with a
 * round counter. All arithmetic is int32 (`| 0`) and the Uint32Array store makes it unsigned. The 20
 * rounds are written out: a loop over a rotation table runs several times slower in V8.
 */
import { shapeStr } from "../../../autodiff/aval.js";
import { DTypeError, ShapeError } from "../../../autodiff/errors.js";
import type { AnyTypedArray } from "../kernel.js";
import { contiguousStrides, CpuBuffer, forEachRow } from "./buffer.js";

/**
 * Encrypts one row: output element io + i from key / counter elements at strided offsets. A top-level
 * function (not a closure) so every array and index is a parameter V8 can keep in registers.
 */
function threefryRow(
  n: number, w0: Int32Array, w1: Int32Array, io: number,
  a0: Int32Array, i0: number, s0: number, a1: Int32Array, i1: number, s1: number,
  b0: Int32Array, j0: number, t0: number, b1: Int32Array, j1: number, t1: number,
): void {
  for (let i = 0; i < n; i++, io++, i0 += s0, i1 += s1, j0 += t0, j1 += t1) {
    const ks0 = a0[i0]!;
    const ks1 = a1[i1]!;
    const ks2 = ks0 ^ ks1 ^ 0x1bd11bda;
    let v0 = (b0[j0]! + ks0) | 0;
    let v1 = (b1[j1]! + ks1) | 0;
    // rounds 1-4, then key injection 1
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 13) | (v1 >>> 19)) ^ v0;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 15) | (v1 >>> 17)) ^ v0;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 26) | (v1 >>> 6)) ^ v0;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 6) | (v1 >>> 26)) ^ v0;
    v0 = (v0 + ks1) | 0;
    v1 = (v1 + ks2 + 1) | 0;
    // rounds 5-8, then key injection 2
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 17) | (v1 >>> 15)) ^ v0;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 29) | (v1 >>> 3)) ^ v0;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 16) | (v1 >>> 16)) ^ v0;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 24) | (v1 >>> 8)) ^ v0;
    v0 = (v0 + ks2) | 0;
    v1 = (v1 + ks0 + 2) | 0;
    // rounds 9-12, then key injection 3
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 13) | (v1 >>> 19)) ^ v0;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 15) | (v1 >>> 17)) ^ v0;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 26) | (v1 >>> 6)) ^ v0;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 6) | (v1 >>> 26)) ^ v0;
    v0 = (v0 + ks0) | 0;
    v1 = (v1 + ks1 + 3) | 0;
    // rounds 13-16, then key injection 4
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 17) | (v1 >>> 15)) ^ v0;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 29) | (v1 >>> 3)) ^ v0;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 16) | (v1 >>> 16)) ^ v0;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 24) | (v1 >>> 8)) ^ v0;
    v0 = (v0 + ks1) | 0;
    v1 = (v1 + ks2 + 4) | 0;
    // rounds 17-20, then key injection 5
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 13) | (v1 >>> 19)) ^ v0;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 15) | (v1 >>> 17)) ^ v0;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 26) | (v1 >>> 6)) ^ v0;
    v0 = (v0 + v1) | 0;
    v1 = ((v1 << 6) | (v1 >>> 26)) ^ v0;
    v0 = (v0 + ks2) | 0;
    v1 = (v1 + ks0 + 5) | 0;
    w0[io] = v0;
    w1[io] = v1;
  }
}

/** Encrypts counters (x0, x1) under keys (k0, k1), elementwise over one shape; inputs may be views. */
export function threefry2x32(k0: CpuBuffer, k1: CpuBuffer, x0: CpuBuffer, x1: CpuBuffer): [CpuBuffer, CpuBuffer] {
  const shape = k0.shape;
  for (const v of [k0, k1, x0, x1]) {
    if (v.dtype !== "uint32") throw new DTypeError(`threefry2x32: uint32 operands, got ${v.dtype}`);
    if (v.ndim !== shape.length || v.shape.some((n, d) => n !== shape[d])) {
      throw new ShapeError(`threefry2x32: operands of one shape, got ${shapeStr(shape)} and ${shapeStr(v.shape)}`);
    }
  }
  const o0 = new Uint32Array(k0.size);
  const o1 = new Uint32Array(k0.size);
  // Int32Array views of the same bits: V8 keeps int32 loads / stores in registers, while uint32
  // values >= 2^31 would be boxed as doubles.
  const bits = (d: AnyTypedArray): Int32Array => new Int32Array(d.buffer, d.byteOffset, d.length);
  const [a0, a1, b0, b1] = [bits(k0.data), bits(k1.data), bits(x0.data), bits(x1.data)];
  const [w0, w1] = [bits(o0), bits(o1)];
  forEachRow(
    shape,
    [contiguousStrides(shape), k0.strides, k1.strides, x0.strides, x1.strides],
    [0, k0.offset, k1.offset, x0.offset, x1.offset],
    (n, offs, steps) =>
      threefryRow(
        n, w0, w1, offs[0]!,
        a0, offs[1]!, steps[1]!, a1, offs[2]!, steps[2]!,
        b0, offs[3]!, steps[3]!, b1, offs[4]!, steps[4]!,
      ),
  );
  return [new CpuBuffer(o0, "uint32", shape), new CpuBuffer(o1, "uint32", shape)];
}

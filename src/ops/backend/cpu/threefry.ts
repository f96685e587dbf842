/**
 * @file The Threefry-2x32 block cipher with 20 rounds, bit-exact with JAX's `threefry2x32_p`
 * (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011,
 * https://doi.org/10.1145/2063384.2063405). Rotations [13, 15, 26, 6] / [17, 29, 16, 24] alternate
 * every 4 rounds; after each group the key schedule (k0, k1, k0 ^ k1 ^ 0x1BD11BDA) is injected with a
 * round counter. All arithmetic is int32 (`| 0`) and the Uint32Array store makes it unsigned.
 */
import { shapeStr } from "../../../autodiff/aval.js";
import { DTypeError, ShapeError } from "../../../autodiff/errors.js";
import { contiguousStrides, CpuBuffer, forEachRow } from "./buffer.js";

const ROTATIONS = [13, 15, 26, 6, 17, 29, 16, 24] as const;

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
  const [a0, a1, b0, b1] = [k0.data, k1.data, x0.data, x1.data];
  const ks = new Int32Array(3);
  forEachRow(
    shape,
    [contiguousStrides(shape), k0.strides, k1.strides, x0.strides, x1.strides],
    [0, k0.offset, k1.offset, x0.offset, x1.offset],
    (n, offs, steps) => {
      let io = offs[0]!;
      let i0 = offs[1]!;
      let i1 = offs[2]!;
      let j0 = offs[3]!;
      let j1 = offs[4]!;
      const s0 = steps[1]!;
      const s1 = steps[2]!;
      const t0 = steps[3]!;
      const t1 = steps[4]!;
      for (let i = 0; i < n; i++, io++, i0 += s0, i1 += s1, j0 += t0, j1 += t1) {
        ks[0] = a0[i0]!;
        ks[1] = a1[i1]!;
        ks[2] = ks[0]! ^ ks[1]! ^ 0x1bd11bda;
        let v0 = (b0[j0]! + ks[0]!) | 0;
        let v1 = (b1[j1]! + ks[1]!) | 0;
        for (let g = 0; g < 5; g++) {
          const r = (g & 1) * 4;
          for (let q = r; q < r + 4; q++) {
            const rot = ROTATIONS[q]!;
            v0 = (v0 + v1) | 0;
            v1 = ((v1 << rot) | (v1 >>> (32 - rot))) ^ v0;
          }
          v0 = (v0 + ks[(g + 1) % 3]!) | 0;
          v1 = (v1 + ks[(g + 2) % 3]! + g + 1) | 0;
        }
        o0[io] = v0;
        o1[io] = v1;
      }
    },
  );
  return [new CpuBuffer(o0, "uint32", shape), new CpuBuffer(o1, "uint32", shape)];
}

/**
 * @file dot_general: batched matrix products with arbitrary batch / contracting dims.
 *
 * Both operands are first canonicalised to strided [batch, M, K] and [batch, K, N] descriptions: each
 * group of dims (batch, free, contracting) is merged into one stride when the layout allows, which
 * covers contiguous, transposed and broadcast operands without a copy; only layouts that cannot be
 * merged are materialised (transposed copy). Floats then run a GotoBLAS-style kernel (K. Goto and
 * R. van de Geijn, "Anatomy of high-performance matrix multiplication", ACM TOMS 2008,
 * https://doi.org/10.1145/1356052.1356053): B is packed into KC x 4 column panels, A into MC x KC
 * blocks of 4-row panels (both as Float64Array, so the micro-kernel sees one array type and float32
 * inputs are widened once), and a 4 x 4 register tile accumulates 16 doubles per k step. C accumulates
 * in a Float64Array, so float32 products are summed in double across all of K and rounded once.
 * Small or skinny products (M or N below the tile, or few flops) skip packing (`gemmSmall`).
 * Integer products wrap (Math.imul) and use a plain i-k-j loop.
 *
 * Large float products go to the WebAssembly SIMD kernels on all cores (./wasm/, `wasmGemm`) instead:
 * float32 there accumulates in float32 (error within K·2⁻²⁴·Σ|a||b| of the exact sum, as any float32
 * BLAS), float64 in float64. The TypeScript kernel stays the reference (`dotGeneralReference`) and the
 * fallback where Wasm is unavailable.
 */
import { shapeSize, shapeStr, type Shape } from "../../../autodiff/aval.js";
import { DTypeError, ShapeError } from "../../../autodiff/errors.js";
import type { AnyTypedArray, DotDims, OutType } from "../kernel.js";
import { CpuBuffer, expectDType, expectShape, materialize, mergedStride } from "./buffer.js";
import { transpose } from "./structural.js";
import { cpuWasmOptions, wasmGemm, type GemmOperand } from "./wasm/index.js";

/** Register tile (rows x cols), and cache blocking of K, M (A block in L2) and N (B block). */
const MR = 4;
const NR = 4;
const KC = 256;
const MC = 64;
const NC = 2048;
/** Below this many multiply-adds (or with M or N below the tile) the packing overhead is not worth it. */
const PACKED_MIN_FLOPS = 16 * 1024;

/** A strided [batch, rows, cols] view of an operand. */
interface Matrix {
  readonly data: AnyTypedArray;
  readonly offset: number;
  readonly sBatch: number;
  readonly sRow: number;
  readonly sCol: number;
}

/** Describes x as [batch, rows, cols] over the given axis groups, copying only when unavoidable. */
function canonical(x: CpuBuffer, batch: readonly number[], rows: readonly number[], cols: readonly number[]): Matrix {
  const group = (axes: readonly number[]): number | null =>
    mergedStride(
      axes.map((a) => x.shape[a]!),
      axes.map((a) => x.strides[a]!),
    );
  const sBatch = group(batch);
  const sRow = group(rows);
  const sCol = group(cols);
  if (sBatch !== null && sRow !== null && sCol !== null) {
    return { data: x.data, offset: x.offset, sBatch, sRow, sCol };
  }
  const t = materialize(transpose(x, [...batch, ...rows, ...cols]));
  const nRows = shapeSize(rows.map((a) => x.shape[a]!));
  const nCols = shapeSize(cols.map((a) => x.shape[a]!));
  return { data: t.data, offset: 0, sBatch: nRows * nCols, sRow: nCols, sCol: 1 };
}

function checkDims(x: CpuBuffer, y: CpuBuffer, dims: DotDims): void {
  const [lc, rc] = dims.contracting;
  const [lb, rb] = dims.batch;
  const fail = (what: string): never => {
    throw new ShapeError(
      `dot_general: ${what}, got lhs ${shapeStr(x.shape)}, rhs ${shapeStr(y.shape)}, ` +
        `contracting [[${lc.join(", ")}], [${rc.join(", ")}]], batch [[${lb.join(", ")}], [${rb.join(", ")}]]`,
    );
  };
  if (lc.length !== rc.length) fail("contracting axis lists of equal length");
  if (lb.length !== rb.length) fail("batch axis lists of equal length");
  const valid = (axes: readonly number[], ndim: number): boolean =>
    axes.every((a) => Number.isInteger(a) && a >= 0 && a < ndim) && new Set(axes).size === axes.length;
  if (!valid([...lc, ...lb], x.ndim) || !valid([...rc, ...rb], y.ndim)) {
    fail("distinct in-range batch and contracting axes");
  }
  for (let i = 0; i < lc.length; i++) if (x.shape[lc[i]!] !== y.shape[rc[i]!]) fail("equal contracting sizes");
  for (let i = 0; i < lb.length; i++) if (x.shape[lb[i]!] !== y.shape[rb[i]!]) fail("equal batch sizes");
}

/** Generalised batched matrix product (see DotDims); output is [batch, lhs free, rhs free]. */
export function dotGeneral(x: CpuBuffer, y: CpuBuffer, dims: DotDims, out: OutType): CpuBuffer {
  return dotGeneralImpl(x, y, dims, out, true);
}

/** `dotGeneral` on the TypeScript kernels only (the reference the fast path is tested against). */
export function dotGeneralReference(x: CpuBuffer, y: CpuBuffer, dims: DotDims, out: OutType): CpuBuffer {
  return dotGeneralImpl(x, y, dims, out, false);
}

function dotGeneralImpl(x: CpuBuffer, y: CpuBuffer, dims: DotDims, out: OutType, fast: boolean): CpuBuffer {
  if (x.dtype !== y.dtype) throw new DTypeError(`dot_general: operands of one dtype, got ${x.dtype} and ${y.dtype}`);
  expectDType("dot_general", "an output dtype equal to the operands'", x.dtype, out.dtype);
  if (x.dtype === "bool") throw new DTypeError("dot_general: numeric operands, got bool");
  checkDims(x, y, dims);
  const [lc, rc] = dims.contracting;
  const [lb, rb] = dims.batch;
  const lFree = x.shape.map((_, d) => d).filter((d) => !lc.includes(d) && !lb.includes(d));
  const rFree = y.shape.map((_, d) => d).filter((d) => !rc.includes(d) && !rb.includes(d));
  const sizes = (s: Shape, axes: readonly number[]): number[] => axes.map((a) => s[a]!);
  const outShape: Shape = [...sizes(x.shape, lb), ...sizes(x.shape, lFree), ...sizes(y.shape, rFree)];
  expectShape("dot_general", "output shape", outShape, out.shape);
  const nb = shapeSize(sizes(x.shape, lb));
  const m = shapeSize(sizes(x.shape, lFree));
  const n = shapeSize(sizes(y.shape, rFree));
  const k = shapeSize(sizes(x.shape, lc));
  const size = nb * m * n;
  if (size === 0 || k === 0) return CpuBuffer.zeros({ shape: outShape, dtype: x.dtype });

  const a = canonical(x, lb, lFree, lc); // [batch, M, K]
  const b = canonical(y, rb, rc, rFree); // [batch, K, N]
  if (x.dtype === "int32" || x.dtype === "uint32") {
    const c = new Int32Array(size);
    for (let i = 0; i < nb; i++) {
      gemmInt(m, n, k, a, a.offset + i * a.sBatch, b, b.offset + i * b.sBatch, c, i * m * n);
    }
    const data = x.dtype === "int32" ? c : new Uint32Array(c.buffer);
    return new CpuBuffer(data, x.dtype, outShape);
  }
  const dtype = x.dtype;
  if (fast && (dtype === "float32" || dtype === "float64") && cpuWasmOptions.enabled && nb * m * n * k >= cpuWasmOptions.minMacs) {
    // Float dtypes are stored as Float32Array / Float64Array, the operand type wasmGemm takes.
    const r = wasmGemm(dtype, nb, m, n, k, a as GemmOperand, b as GemmOperand);
    if (r !== null) return new CpuBuffer(r, dtype, outShape);
  }
  const c = new Float64Array(size);
  const packed = m >= MR && n >= NR && m * n * k >= PACKED_MIN_FLOPS;
  for (let i = 0; i < nb; i++) {
    const ao = a.offset + i * a.sBatch;
    const bo = b.offset + i * b.sBatch;
    if (packed) gemmPacked(m, n, k, a, ao, b, bo, c, i * m * n);
    else gemmSmall(m, n, k, a, ao, b, bo, c, i * m * n);
  }
  return new CpuBuffer(x.dtype === "float32" ? new Float32Array(c) : c, x.dtype, outShape);
}

/**
 * C[co + i·N + j] += Σ_k A[i, k]·B[k, j] without packing, for small or skinny products. Thin outputs
 * (N < 4) are dot products along K; otherwise B is streamed once, four rows of K at a time, each
 * update of a C row adding four products (a quarter of the C loads / stores of a plain i-k-j loop).
 */
function gemmSmall(
  M: number, N: number, K: number, A: Matrix, ao: number, B: Matrix, bo: number, c: Float64Array, co: number,
): void {
  const a = A.data;
  const b = B.data;
  const { sRow: ars, sCol: acs } = A;
  const { sRow: brs, sCol: bcs } = B;
  if (N < NR) {
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0, ai = ao + i * ars, bi = bo + j * bcs; k < K; k++, ai += acs, bi += brs) s += a[ai]! * b[bi]!;
        c[co + i * N + j] += s;
      }
    }
    return;
  }
  let k = 0;
  for (; k + 4 <= K; k += 4) {
    const b0 = bo + k * brs;
    for (let i = 0; i < M; i++) {
      const ai = ao + i * ars + k * acs;
      const a0 = a[ai]!;
      const a1 = a[ai + acs]!;
      const a2 = a[ai + 2 * acs]!;
      const a3 = a[ai + 3 * acs]!;
      const ci = co + i * N;
      for (let j = 0, p = b0; j < N; j++, p += bcs) {
        c[ci + j] += a0 * b[p]! + a1 * b[p + brs]! + a2 * b[p + 2 * brs]! + a3 * b[p + 3 * brs]!;
      }
    }
  }
  for (; k < K; k++) {
    for (let i = 0; i < M; i++) {
      const av = a[ao + i * ars + k * acs]!;
      const ci = co + i * N;
      for (let j = 0, p = bo + k * brs; j < N; j++, p += bcs) c[ci + j] += av * b[p]!;
    }
  }
}

/** Wrapping integer product (int32 arithmetic; uint32 shares the bit patterns). */
function gemmInt(
  M: number, N: number, K: number, A: Matrix, ao: number, B: Matrix, bo: number, c: Int32Array, co: number,
): void {
  const a = A.data;
  const b = B.data;
  for (let i = 0; i < M; i++) {
    const ci = co + i * N;
    for (let k = 0; k < K; k++) {
      const av = a[ao + i * A.sRow + k * A.sCol]! | 0;
      for (let j = 0, bi = bo + k * B.sRow; j < N; j++, bi += B.sCol) c[ci + j] = c[ci + j]! + Math.imul(av, b[bi]!);
    }
  }
}

// Packing buffers, grown on demand and reused across calls (kernels run one at a time).
let aPack = new Float64Array(MC * KC);
let bPack = new Float64Array(KC * NR * 64);
const edgeTile = new Float64Array(MR * NR);

/** Packs an mc x kc block of A (at `base`) into 4-row panels: panel p holds [k][i] for rows 4p..4p+3. */
function packA(
  a: AnyTypedArray, base: number, rs: number, cs: number, mc: number, kc: number, dst: Float64Array,
): void {
  for (let ir = 0; ir < mc; ir += MR) {
    let p = ir * kc;
    const mr = Math.min(MR, mc - ir);
    if (mr === MR) {
      let r0 = base + ir * rs;
      let r1 = r0 + rs;
      let r2 = r1 + rs;
      let r3 = r2 + rs;
      for (let k = 0; k < kc; k++, p += MR, r0 += cs, r1 += cs, r2 += cs, r3 += cs) {
        dst[p] = a[r0]!;
        dst[p + 1] = a[r1]!;
        dst[p + 2] = a[r2]!;
        dst[p + 3] = a[r3]!;
      }
    } else {
      for (let k = 0; k < kc; k++) {
        for (let i = 0; i < MR; i++) dst[p++] = i < mr ? a[base + (ir + i) * rs + k * cs]! : 0;
      }
    }
  }
}

/** Packs a kc x nc block of B (at `base`) into 4-column panels: panel p holds [k][j] for cols 4p..4p+3. */
function packB(
  b: AnyTypedArray, base: number, rs: number, cs: number, kc: number, nc: number, dst: Float64Array,
): void {
  for (let jr = 0; jr < nc; jr += NR) {
    let p = jr * kc;
    const nr = Math.min(NR, nc - jr);
    if (nr === NR) {
      for (let k = 0, q = base + jr * cs; k < kc; k++, p += NR, q += rs) {
        dst[p] = b[q]!;
        dst[p + 1] = b[q + cs]!;
        dst[p + 2] = b[q + 2 * cs]!;
        dst[p + 3] = b[q + 3 * cs]!;
      }
    } else {
      for (let k = 0; k < kc; k++) {
        for (let j = 0; j < NR; j++) dst[p++] = j < nr ? b[base + k * rs + (jr + j) * cs]! : 0;
      }
    }
  }
}

/**
 * The 4 x 4 register tile: C[cOff + i·ldc + j] += Σ_k Ap[ai + 4k + i]·Bp[bi + 4k + j]. All three arrays
 * are Float64Array so V8 compiles one monomorphic loop with the 16 sums in registers / stack slots.
 */
function micro4x4(
  kc: number, ap: Float64Array, ai: number, bp: Float64Array, bi: number, c: Float64Array, cOff: number, ldc: number,
): void {
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
  let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
  let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  // Column by column of the B row: keeps 4 A values and 1 B value live besides the 16 sums.
  for (const end = ai + kc * MR; ai < end; ai += MR, bi += NR) {
    const a0 = ap[ai]!;
    const a1 = ap[ai + 1]!;
    const a2 = ap[ai + 2]!;
    const a3 = ap[ai + 3]!;
    let b = bp[bi]!;
    c00 += a0 * b; c10 += a1 * b; c20 += a2 * b; c30 += a3 * b;
    b = bp[bi + 1]!;
    c01 += a0 * b; c11 += a1 * b; c21 += a2 * b; c31 += a3 * b;
    b = bp[bi + 2]!;
    c02 += a0 * b; c12 += a1 * b; c22 += a2 * b; c32 += a3 * b;
    b = bp[bi + 3]!;
    c03 += a0 * b; c13 += a1 * b; c23 += a2 * b; c33 += a3 * b;
  }
  let r = cOff;
  c[r] += c00; c[r + 1] += c01; c[r + 2] += c02; c[r + 3] += c03;
  r += ldc;
  c[r] += c10; c[r + 1] += c11; c[r + 2] += c12; c[r + 3] += c13;
  r += ldc;
  c[r] += c20; c[r + 1] += c21; c[r + 2] += c22; c[r + 3] += c23;
  r += ldc;
  c[r] += c30; c[r + 1] += c31; c[r + 2] += c32; c[r + 3] += c33;
}

/** C[co + i·N + j] += (A·B)[i, j] with packing and 4 x 4 register tiles. */
function gemmPacked(
  M: number, N: number, K: number, A: Matrix, ao: number, B: Matrix, bo: number, c: Float64Array, co: number,
): void {
  const ldc = N;
  const ncMax = Math.min(NC, Math.ceil(N / NR) * NR);
  if (bPack.length < KC * ncMax) bPack = new Float64Array(KC * ncMax);
  if (aPack.length < MC * KC) aPack = new Float64Array(MC * KC);
  const ap = aPack;
  const bp = bPack;
  for (let jc = 0; jc < N; jc += NC) {
    const nc = Math.min(NC, N - jc);
    for (let pc = 0; pc < K; pc += KC) {
      const kc = Math.min(KC, K - pc);
      packB(B.data, bo + pc * B.sRow + jc * B.sCol, B.sRow, B.sCol, kc, nc, bp);
      for (let ic = 0; ic < M; ic += MC) {
        const mc = Math.min(MC, M - ic);
        packA(A.data, ao + ic * A.sRow + pc * A.sCol, A.sRow, A.sCol, mc, kc, ap);
        for (let jr = 0; jr < nc; jr += NR) {
          const nr = Math.min(NR, nc - jr);
          for (let ir = 0; ir < mc; ir += MR) {
            const mr = Math.min(MR, mc - ir);
            const cOff = co + (ic + ir) * ldc + jc + jr;
            if (mr === MR && nr === NR) {
              micro4x4(kc, ap, ir * kc, bp, jr * kc, c, cOff, ldc);
            } else {
              edgeTile.fill(0);
              micro4x4(kc, ap, ir * kc, bp, jr * kc, edgeTile, 0, NR);
              for (let i = 0; i < mr; i++) {
                for (let j = 0; j < nr; j++) c[cOff + i * ldc + j] += edgeTile[i * NR + j]!;
              }
            }
          }
        }
      }
    }
  }
}

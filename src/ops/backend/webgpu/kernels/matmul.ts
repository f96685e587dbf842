/**
 * @file dot_general on the GPU. Operands are described as strided [batch, M, K] and [batch, K, N]
 * (each group of dims merged into one stride when the layout allows, as ../../cpu/matmul.ts does), then
 * one of two kernels runs, each invocation computing a register tile of C:
 * - "nn" (4 x 8): A rows contiguous in K and B rows contiguous in N, loaded as vec4 (4 A loads and
 *   8 B loads feed 128 multiply-adds);
 * - "gen" (4 x 4): any strides, scalar loads (small products, integers).
 * A large float product whose operands are not in that layout (x @ w.T and x.T @ g of a backward
 * pass) first copies them into it: an O(n²) copy against O(n³) work. A dot-product kernel for
 * K-contiguous B was measured 2-3x slower on lavapipe than copy + "nn" (16 vec4 accumulators spill). Workgroup memory is deliberately not used: on lavapipe (llvmpipe) register
 * tiles with vec4 loads were measured fastest and workgroup tiling with barriers slower; on discrete
 * GPUs a workgroup-tiled variant would be the next step (tune per adapter, see DESIGN.md).
 * Float products accumulate in f32 (the CPU accumulates in f64): error ~ K·eps·Σ|a||b|.
 */
import { shapeSize, type DType } from "../../../../autodiff/aval.js";
import { mergedStride } from "../../strides.js";
import { GpuHandle, wgslType } from "../handle.js";
import type { Runtime } from "../runtime.js";
import { bindings, newHandle, Params, releaseTemp } from "./common.js";
import { copyInto } from "./map.js";

/** A strided [batch, rows, cols] description of an operand. */
interface Mat {
  readonly h: GpuHandle;
  readonly offset: number;
  readonly sBatch: number;
  readonly sRow: number;
  readonly sCol: number;
  /** True when `h` is a temporary copy made here. */
  readonly temp: boolean;
}

/** Tile side and workgroup shape. */
const T = 4;
const WGX = 32;
const WGY = 2;
/** Below this many multiply-adds operands are never copied into vec4 layouts. */
const COPY_MIN_FLOPS = 64 * 64 * 64;

function describe(x: GpuHandle, batch: readonly number[], rows: readonly number[], cols: readonly number[]): Mat | null {
  const g = (axes: readonly number[]) =>
    mergedStride(
      axes.map((a) => x.shape[a]!),
      axes.map((a) => x.strides[a]!),
    );
  const sBatch = g(batch);
  const sRow = g(rows);
  const sCol = g(cols);
  if (sBatch === null || sRow === null || sCol === null) return null;
  return { h: x, offset: x.offset, sBatch, sRow, sCol, temp: false };
}

/**
 * A copy of x's [batch, rows, cols] groups with cols contiguous and a row stride padded to a multiple of
 * 4 (so vec4 loads are aligned).
 */
function packed(rt: Runtime, x: GpuHandle, batch: readonly number[], rows: readonly number[], cols: readonly number[]): Mat {
  const nb = shapeSize(batch.map((a) => x.shape[a]!));
  const nr = shapeSize(rows.map((a) => x.shape[a]!));
  const nc = shapeSize(cols.map((a) => x.shape[a]!));
  const ld = Math.ceil(nc / 4) * 4;
  const perm = [...batch, ...rows, ...cols];
  const view = new GpuHandle(x.storage, x.dtype, perm.map((a) => x.shape[a]!), perm.map((a) => x.strides[a]!), x.offset, false);
  const h = newHandle(rt, "dot_general", x.dtype, [nb, nr, ld], nb * nr * ld);
  // Destination strides of the permuted view's dims: each group row-major from its base stride.
  const dst: number[] = [];
  for (const [axes, base] of [[batch, ld * nr], [rows, ld], [cols, 1]] as const) {
    const st: number[] = [];
    let stride = base;
    for (let i = axes.length - 1; i >= 0; i--) {
      st[i] = stride;
      stride *= x.shape[axes[i]!]!;
    }
    dst.push(...st);
  }
  copyInto(rt, h, 0, dst, view);
  return { h, offset: 0, sBatch: ld * nr, sRow: ld, sCol: 1, temp: true };
}

const aligned = (...v: number[]): boolean => v.every((x) => x % 4 === 0);

/** out = dot_general(x, y) for validated dims (see ../../cpu/matmul.ts for the checks). */
export function dotGeneral(
  rt: Runtime,
  x: GpuHandle,
  y: GpuHandle,
  lb: readonly number[],
  rb: readonly number[],
  lc: readonly number[],
  rc: readonly number[],
  outShape: readonly number[],
): GpuHandle {
  const lFree = x.shape.map((_, d) => d).filter((d) => !lc.includes(d) && !lb.includes(d));
  const rFree = y.shape.map((_, d) => d).filter((d) => !rc.includes(d) && !rb.includes(d));
  const nb = shapeSize(lb.map((a) => x.shape[a]!));
  const M = shapeSize(lFree.map((a) => x.shape[a]!));
  const N = shapeSize(rFree.map((a) => y.shape[a]!));
  const K = shapeSize(lc.map((a) => x.shape[a]!));
  const out = newHandle(rt, "dot_general", x.dtype, outShape, nb * M * N);
  if (nb * M * N === 0) return out;
  if (K === 0) {
    rt.clear(out.buffer, 0, nb * M * N * 4);
    return out;
  }
  const float = x.dtype === "float32";
  let a = describe(x, lb, lFree, lc);
  let b = describe(y, rb, rc, rFree);
  // vec4 rows: contiguous along the row and 4-aligned at every row start.
  const vecRows = (m: Mat | null): m is Mat => m !== null && m.sCol === 1 && aligned(m.offset, m.sRow, m.sBatch);
  let variant: "nn" | "gen" = "gen";
  if (float && vecRows(a) && vecRows(b)) variant = "nn";
  else if (float && M * N * K >= COPY_MIN_FLOPS && M >= T && N >= T) {
    if (!vecRows(a)) a = packed(rt, x, lb, lFree, lc);
    if (!vecRows(b)) b = packed(rt, y, rb, rc, rFree);
    variant = "nn";
  }
  a ??= packed(rt, x, lb, lFree, lc);
  b ??= packed(rt, y, rb, rc, rFree);
  // vec4 loads past column N (or past the last row) read padding or neighbouring elements, never
  // stored: the kernel masks what it writes.
  gemm(rt, variant, x.dtype, a, b, out, nb, M, N, K);
  if (a.temp) releaseTemp(rt, a.h);
  if (b.temp) releaseTemp(rt, b.h);
  return out;
}

function gemm(
  rt: Runtime,
  variant: "nn" | "gen",
  dtype: DType,
  a: Mat,
  b: Mat,
  out: GpuHandle,
  nb: number,
  M: number,
  N: number,
  K: number,
): void {
  const t = wgslType(dtype);
  const gx = Math.ceil(N / (variant === "nn" ? 2 * T : T) / WGX);
  const max = rt.limits.maxComputeWorkgroupsPerDimension;
  // Rows and batches beyond one dispatch's grid limits go to further dispatches.
  const rowsPerDispatch = max * T * WGY;
  for (let b0 = 0; b0 < nb; b0 += max) {
    for (let i0 = 0; i0 < M; i0 += rowsPerDispatch) {
      const p = new Params();
      p.push(M, N, K, b0, i0);
      p.push(a.offset, a.sBatch, a.sRow, a.sCol);
      p.push(b.offset, b.sBatch, b.sRow, b.sCol);
      rt.dispatch(
        { key: `gemm:${variant}:${t}`, source: () => gemmSource(variant, t) },
        p.words,
        [a.h.buffer, b.h.buffer, out.buffer],
        [gx, Math.ceil(Math.min(rowsPerDispatch, M - i0) / T / WGY), Math.min(max, nb - b0)],
      );
    }
  }
}

/**
 * The accumulation loop of the register-tiled product (shared with the jit compiler's fused dot with
 * an epilogue, ../compile/codegen.ts). It expects `M, N, K`, the tile origin `i0, j0`, the operand
 * bases and strides `bB, bR, bC, aC` and the clamped row offsets `r0..r3` to be defined, and defines
 * `cs`: the 4 (gen) or 8 (nn: two column groups) vec4 accumulators, row r of column group g at r + 4g.
 */
export function gemmTileBody(variant: "nn" | "gen", t: string): string {
  const zero = t === "f32" ? "0.0" : `${t}(0)`;
  let body: string;
  if (variant === "nn") {
    // 4 rows x 8 columns: two vec4 column groups share each A load.
    body = `
  var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0); var c2 = vec4<f32>(0.0); var c3 = vec4<f32>(0.0);
  var d0 = vec4<f32>(0.0); var d1 = vec4<f32>(0.0); var d2 = vec4<f32>(0.0); var d3 = vec4<f32>(0.0);
  let K4 = K & ~3u;
  var bk = (bB + j0) >> 2u;
  let bR4 = bR >> 2u;
  for (var k = 0u; k < K4; k += 4u) {
    let a0 = A[(r0 + k) >> 2u]; let a1 = A[(r1 + k) >> 2u]; let a2 = A[(r2 + k) >> 2u]; let a3 = A[(r3 + k) >> 2u];
    for (var q = 0u; q < 4u; q++) {
      let b = B[bk]; let e = B[bk + 1u];
      c0 += a0[q] * b; c1 += a1[q] * b; c2 += a2[q] * b; c3 += a3[q] * b;
      d0 += a0[q] * e; d1 += a1[q] * e; d2 += a2[q] * e; d3 += a3[q] * e;
      bk += bR4;
    }
  }
  for (var k = K4; k < K; k++) {
    let q = (r0 + k) & 3u;
    let b = B[bk]; let e = B[bk + 1u];
    let x0 = A[(r0 + k) >> 2u][q]; let x1 = A[(r1 + k) >> 2u][q]; let x2 = A[(r2 + k) >> 2u][q]; let x3 = A[(r3 + k) >> 2u][q];
    c0 += x0 * b; c1 += x1 * b; c2 += x2 * b; c3 += x3 * b;
    d0 += x0 * e; d1 += x1 * e; d2 += x2 * e; d3 += x3 * e;
    bk += bR4;
  }
  let cs = array<vec4<f32>, 8>(c0, c1, c2, c3, d0, d1, d2, d3);`;
  } else {
    body = `
  let jj0 = bB + min(j0, N - 1u) * bC; let jj1 = bB + min(j0 + 1u, N - 1u) * bC;
  let jj2 = bB + min(j0 + 2u, N - 1u) * bC; let jj3 = bB + min(j0 + 3u, N - 1u) * bC;
  var c0 = vec4<${t}>(${zero}); var c1 = vec4<${t}>(${zero}); var c2 = vec4<${t}>(${zero}); var c3 = vec4<${t}>(${zero});
  for (var k = 0u; k < K; k++) {
    let kb = k * bR;
    let b = vec4<${t}>(B[jj0 + kb], B[jj1 + kb], B[jj2 + kb], B[jj3 + kb]);
    let ka = k * aC;
    c0 += A[r0 + ka] * b; c1 += A[r1 + ka] * b; c2 += A[r2 + ka] * b; c3 += A[r3 + ka] * b;
  }
  let cs = array<vec4<${t}>, 4>(c0, c1, c2, c3);`;
  }
  return body;
}

/** Params: M N K batch0 row0 | aOff aB aR aC | bOff bB bR bC (strides in elements). */
function gemmSource(variant: "nn" | "gen", t: string): string {
  const vec = variant !== "gen";
  const head = [
    bindings([
      { name: "A", type: vec ? "vec4<f32>" : t },
      { name: "B", type: vec ? "vec4<f32>" : t },
      { name: "C", type: t, write: true },
    ]),
  ];
  const prologue = `@compute @workgroup_size(${WGX}, ${WGY})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let M = P[0]; let N = P[1]; let K = P[2];
  let bz = gid.z + P[3];
  let i0 = P[4] + gid.y * ${T}u;
  let j0 = gid.x * ${variant === "nn" ? 2 * T : T}u;
  if (i0 >= M || j0 >= N) { return; }
  let aB = P[5] + bz * P[6]; let aR = P[7]; let aC = P[8];
  let bB = P[9] + bz * P[10]; let bR = P[11]; let bC = P[12];
  // Rows / columns past the edge are clamped for loading; their results are not stored.
  let r0 = aB + min(i0, M - 1u) * aR; let r1 = aB + min(i0 + 1u, M - 1u) * aR;
  let r2 = aB + min(i0 + 2u, M - 1u) * aR; let r3 = aB + min(i0 + 3u, M - 1u) * aR;`;
  const body = gemmTileBody(variant, t);
  const groups = variant === "nn" ? 2 : 1;
  const store = `
  let cb = bz * M * N;
  for (var g = 0u; g < ${groups}u; g++) {
    let jg = j0 + 4u * g;
    for (var r = 0u; r < 4u; r++) {
      let i = i0 + r;
      if (i < M && jg < N) {
        let row = cb + i * N + jg;
        let v = cs[r + 4u * g];
        C[row] = v.x;
        if (jg + 1u < N) { C[row + 1u] = v.y; }
        if (jg + 2u < N) { C[row + 2u] = v.z; }
        if (jg + 3u < N) { C[row + 3u] = v.w; }
      }
    }
  }
}`;
  return [...head, prologue, body, store].join("\n");
}

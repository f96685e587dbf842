/**
 * @file Float32 reductions (sum, max, min) on Wasm SIMD for the two layouts that matter: a contiguous
 * array reduced over its trailing axes ("rows": softmax, losses, layer norm statistics) or over its
 * leading axes ("columns": bias gradients, batch means). Anything else returns null and the caller
 * runs the TypeScript kernel of ../reduce.ts, which stays the reference.
 *
 * Semantics against the reference (which folds in float64 and rounds once):
 * - columns sum: per column, the same sequential float64 fold in the same order: bit-identical;
 * - rows sum: four float64 partial sums per row (two f64x2 accumulators), combined at the end: the
 *   same float64 accuracy in another order, so the float32 result can differ from the reference's
 *   by one rounding (tested within 1 ulp plus n·2⁻⁵²·Σ|x|);
 * - max / min: order-independent and NaN-propagating with -0 < +0, as Math.max / Math.min:
 *   bit-identical.
 * Resident storage (storage.ts) is reduced in place; other data is copied into the runtime's memory a
 * block of rows at a time (about 64 KiB), so each block is reduced from cache.
 */
import { Code, ModuleBuilder, type Local } from "./emitter.js";
import { getRuntime } from "./pool.js";
import { residentAddress } from "./storage.js";
import { wasmApi } from "./wasm-api.js";

export type WasmReduceOp = "sum" | "max" | "min";

/** Smallest input (elements) sent to these kernels. */
export const WASM_REDUCE_MIN = 16384;
/** Reductions run on these kernels (a statistic; tests check the path ran). */
export const wasmReduceStats = { runs: 0 };
/** Elements per block copied in at once. */
const BLOCK = 16384;

type RowsFn = (x: number, rows: number, len: number, out: number) => void;
type ColsFn = (x: number, rows: number, cols: number, acc: number) => void;
interface Kernels {
  rows: Record<WasmReduceOp, RowsFn>;
  cols: Record<WasmReduceOp, ColsFn>;
}
let kernels: Kernels | null | undefined;

/** rows_<op>(x, rows, len, out): out[r] (float32) = op over x[r·len .. r·len + len). */
function emitRows(c: Code, op: WasmReduceOp): void {
  const [x, rows, len, out] = c.params as [Local, Local, Local, Local];
  const k = c.local("i32");
  const a0 = c.local("v128");
  const a1 = c.local("v128");
  const v = c.local("v128");
  const sum = op === "sum";
  const s = c.local(sum ? "f64" : "f32");
  c.countDown(rows, () => {
    // Vector part: len >> 2 vectors.
    if (sum) {
      c.v128Zero().set(a0).v128Zero().set(a1);
    } else {
      c.f32x4Const(op === "max" ? -Infinity : Infinity).set(a0);
      c.get(a0).set(a1);
    }
    // Sum: one vector per step (4 elements, two f64x2 accumulators); max / min: two vectors per step
    // into two accumulators (f32x4.max is several instructions on x86: independent chains overlap).
    c.get(len).i32(sum ? 2 : 3).op("i32.shr_u").set(k);
    c.countDown(k, () => {
      if (sum) {
        c.get(x).simdMem("v128.load", 0).set(v);
        c.get(a0).get(v).simd("f64x2.promote_low_f32x4").simd("f64x2.add").set(a0);
        c.get(a1).get(v).get(v).shuffle32([2, 3, 0, 1]).simd("f64x2.promote_low_f32x4").simd("f64x2.add").set(a1);
        c.addTo(x, 16);
      } else {
        const m = op === "max" ? "f32x4.max" : "f32x4.min";
        c.get(a0).get(x).simdMem("v128.load", 0).simd(m).set(a0);
        c.get(a1).get(x).simdMem("v128.load", 16).simd(m).set(a1);
        c.addTo(x, 32);
      }
    });
    // Horizontal combine.
    if (sum) {
      c.get(a0).get(a1).simd("f64x2.add").set(a0);
      c.get(a0).lane64("f64x2.extract_lane", 0).get(a0).lane64("f64x2.extract_lane", 1).op("f64.add").set(s);
    } else {
      const m = op === "max" ? "f32x4.max" : "f32x4.min";
      c.get(a0).get(a1).simd(m).set(a0);
      c.get(a0).get(a0).get(a0).shuffle32([2, 3, 0, 1]).simd(m).set(a0);
      c.get(a0).get(a0).get(a0).shuffle32([1, 0, 3, 2]).simd(m).set(a0);
      c.get(a0).lane("f32x4.extract_lane", 0).set(s);
    }
    // Scalar tail: len & 3 (sum) or len & 7 (max / min) elements.
    c.get(len).i32(sum ? 3 : 7).op("i32.and").set(k);
    c.countDown(k, () => {
      if (sum) c.get(s).get(x).mem("f32.load", 0).op("f64.promote_f32").op("f64.add").set(s);
      else c.get(s).get(x).mem("f32.load", 0).op(op === "max" ? "f32.max" : "f32.min").set(s);
      c.addTo(x, 4);
    });
    c.get(out).get(s);
    if (sum) c.op("f32.demote_f64");
    c.mem("f32.store", 0);
    c.addTo(out, 4);
  });
}

/**
 * cols_<op>(x, rows, cols, acc): folds `rows` rows of `cols` float32 into the accumulators at acc
 * (float64 for sum, float32 for max / min; ceil(cols / 4) · 4 of them, initialised by the caller).
 * Rows are read in whole vectors, so up to 3 elements past the last row are read (never used).
 */
function emitCols(c: Code, op: WasmReduceOp): void {
  const [x, rows, cols, acc] = c.params as [Local, Local, Local, Local];
  const k = c.local("i32");
  const p = c.local("i32");
  const q = c.local("i32");
  const v = c.local("v128");
  c.countDown(rows, () => {
    c.get(x).set(p).get(acc).set(q);
    c.get(cols).i32(3).op("i32.add").i32(2).op("i32.shr_u").set(k);
    c.countDown(k, () => {
      c.get(p).simdMem("v128.load", 0).set(v);
      if (op === "sum") {
        c.get(q).get(q).simdMem("v128.load", 0).get(v).simd("f64x2.promote_low_f32x4").simd("f64x2.add").simdMem("v128.store", 0);
        c.get(q).get(q).simdMem("v128.load", 16).get(v).get(v).shuffle32([2, 3, 0, 1]).simd("f64x2.promote_low_f32x4").simd("f64x2.add");
        c.simdMem("v128.store", 16);
        c.addTo(q, 32);
      } else {
        c.get(q).get(q).simdMem("v128.load", 0).get(v).simd(op === "max" ? "f32x4.max" : "f32x4.min").simdMem("v128.store", 0);
        c.addTo(q, 16);
      }
      c.addTo(p, 16);
    });
    // Next row: x += cols · 4.
    c.get(x).get(cols).i32(2).op("i32.shl").op("i32.add").set(x);
  });
}

function getKernels(): Kernels | null {
  if (kernels !== undefined) return kernels;
  kernels = null;
  const rt = getRuntime();
  const wa = wasmApi;
  if (rt === null || wa === undefined) return null;
  try {
    const m = new ModuleBuilder().importMemory({
      module: "env", field: "memory", initial: 2, maximum: rt.maximumPages, shared: rt.shared,
    });
    for (const op of ["sum", "max", "min"] as const) {
      const r = m.declare(["i32", "i32", "i32", "i32"]);
      emitRows(m.code(r), op);
      m.export(`rows_${op}`, r);
      const c = m.declare(["i32", "i32", "i32", "i32"]);
      emitCols(m.code(c), op);
      m.export(`cols_${op}`, c);
    }
    const bytes = m.build();
    if (!wa.validate(bytes)) return null;
    const ex = new wa.Instance(new wa.Module(bytes), { env: { memory: rt.memory } }).exports as Record<string, never>;
    kernels = {
      rows: { sum: ex["rows_sum"], max: ex["rows_max"], min: ex["rows_min"] },
      cols: { sum: ex["cols_sum"], max: ex["cols_max"], min: ex["cols_min"] },
    };
  } catch {
    kernels = null;
  }
  return kernels;
}

/**
 * `op` over the elements of contiguous float32 `data` from element `offset`, viewed as [outer, len] (mode "rows": reduce
 * len, one result per row) or [len, outer] (mode "cols": reduce len, one result per column). Returns
 * the float32 results, or null when the Wasm path is unavailable (the caller keeps its kernel).
 */
export function wasmReduceF32(
  op: WasmReduceOp, data: Float32Array, mode: "rows" | "cols", outer: number, len: number, offset = 0,
): Float32Array | null {
  const ks = getKernels();
  const rt = getRuntime();
  if (ks === null || rt === null) return null;
  const out = new Float32Array(outer);
  wasmReduceStats.runs++;
  if (outer === 0) return out;
  // Resident storage (storage.ts) is reduced where it is; anything else is copied in block by block.
  const at = residentAddress(data);
  const xResident = at < 0 ? -1 : at + offset * 4;
  if (mode === "rows") {
    if (len === 0) {
      if (op !== "sum") out.fill(op === "max" ? -Infinity : Infinity);
      return out;
    }
    const rowsPerBlock = Math.max(1, Math.floor(BLOCK / len));
    const outBytes = Math.ceil((outer * 4) / 64) * 64;
    const base = rt.scratch(outBytes + (xResident < 0 ? rowsPerBlock * len * 4 + 16 : 0));
    if (base < 0) return null;
    const outAddr = base;
    const xAddr = base + outBytes;
    const heap = new Float32Array(rt.memory.buffer);
    if (xResident >= 0) ks.rows[op](xResident, outer, len, outAddr);
    else {
      for (let r = 0; r < outer; r += rowsPerBlock) {
        const n = Math.min(rowsPerBlock, outer - r);
        heap.set(data.subarray(offset + r * len, offset + (r + n) * len), xAddr / 4);
        ks.rows[op](xAddr, n, len, outAddr + r * 4);
      }
    }
    out.set(heap.subarray(outAddr / 4, outAddr / 4 + outer));
    return out;
  }
  // Columns: accumulators (float64 for sum), then blocks of rows.
  const cols = outer;
  const padded = Math.ceil(cols / 4) * 4;
  const accBytes = padded * (op === "sum" ? 8 : 4);
  const rowsPerBlock = Math.max(1, Math.floor(BLOCK / cols));
  const accSpan = Math.ceil(accBytes / 64) * 64;
  const base = rt.scratch(accSpan + (xResident < 0 ? rowsPerBlock * cols * 4 + 16 : 0));
  if (base < 0) return null;
  const accAddr = base;
  const xAddr = base + accSpan;
  const buf = rt.memory.buffer;
  const heap = new Float32Array(buf);
  if (op === "sum") new Float64Array(buf, accAddr, padded).fill(0);
  else heap.fill(op === "max" ? -Infinity : Infinity, accAddr / 4, accAddr / 4 + padded);
  if (xResident >= 0) ks.cols[op](xResident, len, cols, accAddr);
  else {
    for (let r = 0; r < len; r += rowsPerBlock) {
      const n = Math.min(rowsPerBlock, len - r);
      heap.set(data.subarray(offset + r * cols, offset + (r + n) * cols), xAddr / 4);
      ks.cols[op](xAddr, n, cols, accAddr);
    }
  }
  if (op === "sum") out.set(new Float64Array(buf, accAddr, cols)); // rounded once, as the reference
  else out.set(heap.subarray(accAddr / 4, accAddr / 4 + cols));
  return out;
}

/**
 * @file `wasmGemm`: a batched float32 / float64 matrix product C[b] = A[b]·B[b] on the Wasm SIMD
 * kernels, on all threads of the pool for large products. Operands are strided [batch, rows, cols]
 * views (any strides, including 0 for broadcast and negative for reversed). An operand whose storage is
 * resident (storage.ts: it lives in the Wasm memory) is read in place; any other is copied into the
 * Wasm memory as the span of storage it covers (a memcpy for contiguous and transposed views) or, when
 * that span is sparse, gathered into C order. The output (resident when the arena has room) is written
 * in place when its rows are whole register tiles, else computed into a tile-padded C region and
 * copied out.
 *
 * Work split (tasks claimed dynamically by the main thread and the workers, see `split`): pack tasks
 * first pack all of B (once per batch entry, or once when B is broadcast over the batch) into NR-column
 * slivers; then compute tasks, each an MC-row block of A (packed by the task) against a column chunk
 * of the packed B, for a group of batch entries.
 */
import { allocateUninit } from "../buffer.js";
import { MAX_TASKS, type Job } from "./job-runner.js";
import { F32_BLOCKING, F64_BLOCKING, getRuntime, type Blocking } from "./pool.js";
import { residentAddress } from "./storage.js";

/** A strided [batch, rows, cols] view of float storage. */
export interface GemmOperand {
  readonly data: Float32Array | Float64Array;
  readonly offset: number;
  readonly sBatch: number;
  readonly sRow: number;
  readonly sCol: number;
}

/** When the fast path is used (see `configureCpuWasm`). */
export interface CpuWasmOptions {
  /** Use the Wasm kernels at all. */
  enabled: boolean;
  /** Products with fewer multiply-adds (nb·m·n·k) stay on the TypeScript kernel. */
  minMacs: number;
  /** Products with fewer multiply-adds run on one thread. */
  parallelMinMacs: number;
  /** Compute tasks per thread of a parallel product (finer: better balance, more task overhead). */
  tasksPerThread: number;
  /** Whether the main thread runs tasks of parallel products too (false: workers only; for tests). */
  mainTakesPart: boolean;
  /**
   * Whether parallel jobs (products, and fused.ts's elementwise map jobs) fall back to one thread for
   * a while when workers keep the main thread waiting (an oversubscribed machine; see
   * `WasmRuntime.threadsFor`). Off: always `threads`.
   */
  adaptiveThreads: boolean;
}

/**
 * Crossovers measured on the 2-core bench machine (best of repeated runs): the Wasm kernel beats the
 * TypeScript one from ~16³ multiply-adds (8³: 6.5 vs 4.7 µs; 16³: 5.2 vs 7.8 µs; 64³: 20 vs 133 µs);
 * a second thread pays off from ~128³ (96³: no gain; 128³: 37 → 52 GFLOP/s best).
 */
export const cpuWasmOptions: CpuWasmOptions = {
  enabled: typeof process === "undefined" || process.env.WEBGRAD_CPU_WASM !== "0",
  minMacs: 4096,
  parallelMinMacs: 1 << 20,
  tasksPerThread: 4,
  mainTakesPart: true,
  adaptiveThreads: true,
};

/** Updates `cpuWasmOptions` (tests force the fast path on tiny shapes with `minMacs: 0`). */
export function configureCpuWasm(options: Partial<CpuWasmOptions>): void {
  Object.assign(cpuWasmOptions, options);
}

const align64 = (n: number): number => Math.ceil(n / 64) * 64;

/** Rows of a compute task's block, at least (when rows are cut finer than MC). */
const MIN_ROWS = 16;
/** Columns of a compute task's chunk, at least. */
const MIN_CHUNK = 64;
/** Compute tasks of one job, at most. */
const MAX_COMPUTE = 1024;

interface Placed {
  base: number;
  sBatch: number;
  sRow: number;
  sCol: number;
}

/** How operand `x` ([nb, rows, cols]) will be copied: its storage span from `lo`, or gathered dense. */
interface Plan {
  lo: number;
  span: number;
  dense: boolean;
}

function plan(x: GemmOperand, nb: number, rows: number, cols: number): Plan {
  let lo = x.offset;
  let hi = x.offset;
  for (const [s, n] of [[x.sBatch, nb], [x.sRow, rows], [x.sCol, cols]] as const) {
    if (n > 1) {
      if (s < 0) lo += s * (n - 1);
      else hi += s * (n - 1);
    }
  }
  const span = hi - lo + 1;
  const count = nb * rows * cols;
  return span <= 2 * count + 1024 ? { lo, span, dense: false } : { lo: 0, span: count, dense: true };
}

/** Where element (0, 0, 0) of `x` lands when copied to byte `addr` as planned, and its strides there. */
function placement(x: GemmOperand, rows: number, cols: number, addr: number, eb: number, p: Plan): Placed {
  if (!p.dense) return { base: addr + (x.offset - p.lo) * eb, sBatch: x.sBatch, sRow: x.sRow, sCol: x.sCol };
  return { base: addr, sBatch: rows * cols, sRow: cols, sCol: 1 };
}

/** Copies `x` into the memory at byte `addr` as planned. */
function copyIn(heap: Float32Array | Float64Array, x: GemmOperand, nb: number, rows: number, cols: number, addr: number, p: Plan): void {
  const at = addr / heap.BYTES_PER_ELEMENT;
  if (!p.dense) {
    heap.set(x.data.subarray(p.lo, p.lo + p.span), at);
    return;
  }
  // Sparse view (e.g. a strided slice of a much larger array): gather into C order.
  const d = x.data;
  let o = at;
  for (let b = 0; b < nb; b++) {
    for (let i = 0; i < rows; i++) {
      let q = x.offset + b * x.sBatch + i * x.sRow;
      for (let j = 0; j < cols; j++, q += x.sCol) heap[o++] = d[q]!;
    }
  }
}

/** Task decomposition of a job (see JOB_FIELDS in job-runner.ts). */
type Split = Pick<
  Job,
  "mc" | "bpt" | "icBlocks" | "nChunks" | "chunkN" | "nCompute" | "kBlocks" | "packGroups" | "packPieces" | "pieceN" | "nPack"
>;

/**
 * Cuts a product into tasks: about `tasksPerThread` compute tasks per thread (claimed dynamically,
 * so a core slowed by other load takes fewer). Row blocks come first (MC rows, shrunk down to MIN_ROWS
 * when there are too few): they share the packed B and pack disjoint parts of A. Only when rows run
 * out are columns cut into chunks (at least MIN_CHUNK wide; each chunk re-packs its A block). Many
 * batch entries go in groups. B is packed once, by about `2·threads` pack tasks.
 */
function split(nb: number, m: number, n: number, k: number, threads: number, bl: Blocking, bShared: boolean): Split {
  const want = threads === 1 ? 1 : Math.max(1, Math.round(cpuWasmOptions.tasksPerThread)) * threads;
  let mc = bl.mc;
  if (nb * Math.ceil(m / mc) < want) {
    const rows = Math.ceil(m / Math.ceil(want / nb));
    mc = Math.min(bl.mc, Math.max(MIN_ROWS, Math.ceil(rows / bl.mr) * bl.mr));
  }
  const icBlocks = Math.ceil(m / mc);
  const kBlocks = Math.ceil(k / bl.kc);
  let bpt = 1;
  let nChunks = 1;
  if (nb * icBlocks >= want) {
    // Enough row blocks: group batch entries, at most MAX_COMPUTE compute tasks.
    const groups = Math.max(1, Math.min(nb, Math.floor(MAX_COMPUTE / icBlocks), Math.ceil(want / icBlocks)));
    bpt = Math.ceil(nb / groups);
  } else {
    nChunks = Math.max(1, Math.min(Math.ceil(want / (nb * icBlocks)), Math.floor(n / MIN_CHUNK)));
  }
  const chunkN = Math.ceil(Math.ceil(n / nChunks) / bl.nr) * bl.nr;
  nChunks = Math.ceil(n / chunkN);
  const groups = Math.ceil(nb / bpt);
  const nCompute = groups * icBlocks * nChunks;
  const packGroups = bShared ? 1 : groups;
  const packWant = threads === 1 ? 1 : 2 * threads;
  const packPieces = Math.max(1, Math.min(Math.ceil(packWant / (packGroups * kBlocks)), Math.ceil(n / bl.nr)));
  const pieceN = Math.ceil(Math.ceil(n / packPieces) / bl.nr) * bl.nr;
  const nPack = packGroups * kBlocks * Math.ceil(n / pieceN);
  return {
    mc, bpt, icBlocks, nChunks, chunkN, nCompute, kBlocks, packGroups, packPieces: Math.ceil(n / pieceN), pieceN, nPack,
  };
}

/**
 * C = A·B for [nb, m, k] x [nb, k, n] float operands (both of `dtype`'s array type); the result is a
 * fresh contiguous [nb, m, n] array, or null when the fast path cannot run it (no Wasm SIMD, memory
 * limit, a failed task): the caller then uses the TypeScript kernel.
 */
export function wasmGemm(
  dtype: "float32" | "float64", nb: number, m: number, n: number, k: number, a: GemmOperand, b: GemmOperand,
): Float32Array | Float64Array | null {
  const rt = getRuntime();
  if (rt === null) return null;
  const f64 = dtype === "float64";
  const eb = f64 ? 8 : 4;
  const bl = f64 ? F64_BLOCKING : F32_BLOCKING;
  const size = nb * m * n;
  if (size === 0) return f64 ? new Float64Array(0) : new Float32Array(0);
  if (k === 0) return f64 ? new Float64Array(size) : new Float32Array(size);
  const macs = nb * m * n * k;
  const want = macs >= cpuWasmOptions.parallelMinMacs ? rt.threads : 1;
  if (want > 1) rt.startWorkers();
  const threads = cpuWasmOptions.adaptiveThreads && cpuWasmOptions.mainTakesPart ? rt.threadsFor(want) : want;

  const mp = Math.ceil(m / bl.mr) * bl.mr;
  const ldc = Math.ceil(n / bl.nr) * bl.nr;
  const bShared = nb > 1 && b.sBatch === 0;
  const s = split(nb, m, n, k, threads, bl, bShared);
  const planA = plan(a, nb, m, k);
  const planB = plan(b, nb, k, n);
  // Resident operands (storage.ts) are read where they are; the result is written straight into its
  // resident storage when its tile-padded layout is its own (whole MR x NR tiles), else copied out.
  const aAt = planA.dense ? -1 : residentAddress(a.data);
  const bAt = planB.dense ? -1 : residentAddress(b.data);
  const out = allocateUninit(dtype, size) as Float32Array | Float64Array;
  const outAt = mp === m && ldc === n ? residentAddress(out) : -1;
  const aBytes = aAt < 0 ? align64(planA.span * eb) : 0;
  const bBytes = bAt < 0 ? align64(planB.span * eb) : 0;
  const bpBatch = bShared ? 0 : k * ldc * eb;
  const bpBytes = align64((bShared ? 1 : nb) * k * ldc * eb);
  const cBatch = mp * ldc;
  const base = rt.scratch(aBytes + bBytes + bpBytes + (outAt < 0 ? nb * cBatch * eb : 0));
  if (base < 0) return null;
  const aAddr = base;
  const bAddr = aAddr + aBytes;
  const bpAddr = bAddr + bBytes;
  const cAddr = outAt < 0 ? bpAddr + bpBytes : outAt;
  const heap = f64 ? new Float64Array(rt.memory.buffer) : new Float32Array(rt.memory.buffer);
  const pa = aAt < 0 ? placement(a, m, k, aAddr, eb, planA) : residentPlacement(a, aAt, eb);
  const pb = bAt < 0 ? placement(b, k, n, bAddr, eb, planB) : residentPlacement(b, bAt, eb);
  if (bAt < 0) copyIn(heap, b, nb, k, n, bAddr, planB);
  const job: Job = {
    f64: f64 ? 1 : 0, m, n, k, nb,
    a: pa.base, aBatch: pa.sBatch, ars: pa.sRow, acs: pa.sCol,
    b: pb.base, bBatch: pb.sBatch, brs: pb.sRow, bcs: pb.sCol,
    c: cAddr, ldc, cBatch,
    kc: bl.kc, mr: bl.mr, nr: bl.nr,
    ...rt.packLayout,
    bp: bpAddr, bpBatch,
    ...s,
  };
  const prepare = (): void => {
    if (aAt < 0) copyIn(heap, a, nb, m, k, aAddr, planA);
  };
  if (!rt.run(job, s.nCompute + s.nPack, threads, prepare, cpuWasmOptions.mainTakesPart)) return null;
  if (outAt < 0) copyResult(heap, out, cAddr / eb, nb, m, n, mp, ldc);
  return out;
}

/** Where element (0, 0, 0) of resident `x` (its storage at byte `at`) is, and its strides. */
function residentPlacement(x: GemmOperand, at: number, eb: number): Placed {
  return { base: at + x.offset * eb, sBatch: x.sBatch, sRow: x.sRow, sCol: x.sCol };
}

/** Copies the tile-padded C at element `c0` of the heap into `out` (contiguous [nb, m, n]). */
function copyResult(
  heap: Float32Array | Float64Array, out: Float32Array | Float64Array, c0: number, nb: number, m: number, n: number,
  mp: number, ldc: number,
): void {
  if (ldc === n && (mp === m || nb === 1)) {
    out.set(heap.subarray(c0, c0 + nb * m * n));
    return;
  }
  let p = 0;
  for (let b = 0; b < nb; b++) {
    for (let i = 0; i < m; i++, p += n) {
      const q = c0 + (b * mp + i) * ldc;
      out.set(heap.subarray(q, q + n), p);
    }
  }
}

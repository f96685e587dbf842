/**
 * @file The hand-off protocol between the main thread and the GEMM workers, as JavaScript source that
 * both sides evaluate (the workers are `eval` workers, so they need source, not a module; the main
 * thread builds the same functions with `new Function`, so one text is the single definition).
 *
 * Control words (an Int32Array over the first bytes of the shared memory):
 * - `W` = generation << 12 | tasks remaining. The main thread writes a job's parameters, then
 *   publishes it by storing W (a new generation, all tasks remaining) and notifying. Any thread claims
 *   task `remaining - 1` by compare-exchange of W to W - 1. A claim can only succeed on the current job
 *   (the generation is part of the word), and the parameters stay fixed until every task is done, so
 *   parameters are read after a successful claim and are never torn.
 * - `DONE`: tasks finished; the thread finishing the last one notifies. The main thread waits on it.
 * - `QUIT`: set at shutdown; workers leave their loop.
 * - `FAILED`: set when a task threw (the main thread then recomputes with the TypeScript kernel).
 * - `NTASKS` and the job parameters from `P`; `PACKED` and `AREADY` order the phases within a job.
 * - `KIND`: what the job is: a product (KIND_GEMM, parameters `JOB_FIELDS`) or a map (KIND_MAP,
 *   parameters `MAP_FIELDS` then operand pairs): one elementwise kernel of fused.ts over a range of
 *   vectors, each task a slice of it. Workers get the map kernels' modules through a MessagePort
 *   (pool.ts posts each module before the first job that uses it), read synchronously with
 *   `receiveMessageOnPort` when a job names a kernel they have not instantiated yet.
 * Workers sleep in `Atomics.wait` on W after a short spin, so back-to-back products do not pay a
 * futex wake-up each.
 */

export const CTRL_W = 0;
export const CTRL_DONE = 1;
export const CTRL_QUIT = 2;
export const CTRL_FAILED = 3;
export const CTRL_NTASKS = 4;
/** Pack tasks finished (compute tasks wait for all of them). */
export const CTRL_PACKED = 5;
/** Tasks run by workers since the runtime started (a statistic). */
export const CTRL_WORKER_TASKS = 6;
/**
 * 1 once A is in the memory: the main thread publishes a job as soon as B is copied in, copies A while
 * the workers wake up and pack B, then sets this; compute tasks wait for it.
 */
export const CTRL_AREADY = 7;
/** Threads that may take part in the current job (tids below it); written before W is published. */
export const CTRL_THREADS = 8;
/** The job's kind: KIND_GEMM or KIND_MAP (written before W is published). */
export const CTRL_KIND = 9;
export const KIND_GEMM = 0;
export const KIND_MAP = 1;
/** First job-parameter word; the parameters are listed in `JOB_FIELDS` order. */
export const CTRL_P = 16;
export const CTRL_WORDS = 64;
/** At most this many tasks per job (12 bits of W). */
export const MAX_TASKS = 4095;
export const GEN_MASK = 0x7ffff;

/**
 * Job parameters, in control-word order. Element strides; byte addresses. A job is `nPack` pack tasks
 * (task indices from `nCompute` up: claimed first, since claims count down) that pack all of B once,
 * then `nCompute` compute tasks, each one MC-row block of A against one column chunk of B for one
 * group of batch entries.
 */
export const JOB_FIELDS = [
  "f64", // 1 for float64 kernels, 0 for float32
  "m", "n", "k", "nb",
  "a", "aBatch", "ars", "acs",
  "b", "bBatch", "brs", "bcs",
  "c", "ldc", "cBatch",
  "mc", "kc", "mr", "nr",
  "aPack0", "aPackStride", // per-thread packed-A block: aPack0 + tid * aPackStride
  "bp", "bpBatch", // packed B of batch entry i at bp + i * bpBatch (bpBatch 0: B shared by all entries)
  "bpt", // batch entries per group
  "icBlocks", "nChunks", "chunkN", "nCompute",
  "kBlocks", "packGroups", "packPieces", "pieceN", "nPack",
] as const;
export type JobField = (typeof JOB_FIELDS)[number];
export type Job = Record<JobField, number>;

/**
 * Map-job parameters: kernel `id`, `nvec` vectors in all, `per` vectors per task, `nIn` inputs and
 * `nOut` outputs; then per input a byte address and a byte step per vector (16, or 0 for a value
 * read everywhere), then per output a byte address (step 16). Task t runs vectors
 * [t·per, min(nvec, (t + 1)·per)).
 */
export const MAP_FIELDS = ["id", "nvec", "per", "nIn", "nOut"] as const;
/** Control words left for a map job's operands (2 per input, 1 per output). */
export const MAP_OPERAND_WORDS = 64 - 16 - MAP_FIELDS.length;

const field = (name: JobField): number => CTRL_P + JOB_FIELDS.indexOf(name);
const f = (name: JobField): string => `c[${field(name)}]`;

/**
 * `runJob(ctrl, ex, tid)`: claims and runs tasks of the current job until none remain; returns the
 * number of tasks it ran. `runTask` runs one task: a pack task packs columns [j0, j1) of one KC block
 * of B (for a group of batch entries) into its place in the packed B, laid out per batch entry as KC
 * blocks of kc x ldc, each a run of NR-column slivers; a compute task loops over the KC blocks,
 * packing its MC x kc block of A and running the Wasm macro kernel over its C block.
 */
export const RUNNER_SOURCE = `
function runMapTask(c, kernelFor, t) {
  const P = ${CTRL_P};
  const nvec = c[P + 1], per = c[P + 2], nIn = c[P + 3], nOut = c[P + 4];
  const v0 = t * per, n = Math.min(nvec, v0 + per) - v0;
  if (n <= 0) return;
  const fn = kernelFor(c[P]);
  const args = [n];
  for (let i = 0; i < nIn; i++) {
    const step = c[P + 6 + 2 * i];
    args.push(c[P + 5 + 2 * i] + v0 * step, step);
  }
  for (let j = 0; j < nOut; j++) args.push(c[P + 5 + 2 * nIn + j] + v0 * 16);
  fn(...args);
}
function runTask(c, ex, tid, t) {
  const f64 = ${f("f64")} === 1, eb = f64 ? 8 : 4;
  const M = ${f("m")}, N = ${f("n")}, K = ${f("k")}, nb = ${f("nb")}, bpt = ${f("bpt")};
  const KC = ${f("kc")}, NR = ${f("nr")}, ldc = ${f("ldc")};
  const bp = ${f("bp")}, bpBatch = ${f("bpBatch")}, nCompute = ${f("nCompute")};
  if (t >= nCompute) {
    let u = t - nCompute;
    const pieces = ${f("packPieces")}, kBlocks = ${f("kBlocks")};
    const piece = u % pieces; u = (u - piece) / pieces;
    const kb = u % kBlocks;
    const g = (u - kb) / kBlocks;
    const pc = kb * KC, kc = Math.min(KC, K - pc);
    const j0 = piece * ${f("pieceN")}, j1 = Math.min(N, j0 + ${f("pieceN")});
    if (j0 >= j1) return;
    const B = ${f("b")}, bB = ${f("bBatch")}, brs = ${f("brs")}, bcs = ${f("bcs")};
    const packB = f64 ? ex.packB64 : ex.packB32;
    const last = bpBatch === 0 ? 1 : Math.min(nb, (g + 1) * bpt);
    for (let bi = bpBatch === 0 ? 0 : g * bpt; bi < last; bi++) {
      packB(B + (bi * bB + pc * brs + j0 * bcs) * eb, brs, bcs, kc, j1 - j0, bp + bi * bpBatch + (pc * ldc + j0 * kc) * eb);
    }
    return;
  }
  while (Atomics.load(c, ${CTRL_PACKED}) < ${f("nPack")} || Atomics.load(c, ${CTRL_AREADY}) === 0) {
    if (Atomics.load(c, ${CTRL_FAILED}) !== 0) return;
  }
  const MC = ${f("mc")}, MR = ${f("mr")};
  const A = ${f("a")}, aB = ${f("aBatch")}, ars = ${f("ars")}, acs = ${f("acs")};
  const C = ${f("c")}, cB = ${f("cBatch")};
  const nChunks = ${f("nChunks")}, icBlocks = ${f("icBlocks")}, chunkN = ${f("chunkN")};
  const packA = f64 ? ex.packA64 : ex.packA32, macro = f64 ? ex.macro64 : ex.macro32;
  const aPack = ${f("aPack0")} + tid * ${f("aPackStride")};
  let u = t;
  const ch = u % nChunks; u = (u - ch) / nChunks;
  const ib = u % icBlocks;
  const g = (u - ib) / icBlocks;
  const m0 = ib * MC, mc = Math.min(MC, M - m0), tilesM = Math.ceil(mc / MR);
  const n0 = ch * chunkN, n1 = Math.min(N, n0 + chunkN), tilesN = Math.ceil((n1 - n0) / NR);
  if (mc <= 0 || n0 >= n1) return;
  const last = Math.min(nb, (g + 1) * bpt);
  for (let bi = g * bpt; bi < last; bi++) {
    const a0 = A + (bi * aB + m0 * ars) * eb, b0 = bp + bi * bpBatch;
    const c0 = C + (bi * cB + m0 * ldc + n0) * eb;
    for (let pc = 0; pc < K; pc += KC) {
      const kc = Math.min(KC, K - pc);
      packA(a0 + pc * acs * eb, ars, acs, mc, kc, aPack);
      macro(tilesM, tilesN, kc, aPack, b0 + (pc * ldc + n0 * kc) * eb, c0, ldc * eb, pc > 0 ? 1 : 0);
    }
  }
}
function runJob(c, ex, tid, kernelFor) {
  let ran = 0;
  for (;;) {
    const w = Atomics.load(c, ${CTRL_W});
    const remaining = w & ${MAX_TASKS};
    if (remaining === 0 || tid >= Atomics.load(c, ${CTRL_THREADS})) return ran;
    if (Atomics.compareExchange(c, ${CTRL_W}, w, w - 1) !== w) continue;
    // Read after the claim: a claim succeeds only on the published job, whose words are then fixed.
    const total = c[${CTRL_NTASKS}];
    const map = c[${CTRL_KIND}] === ${KIND_MAP};
    const t = remaining - 1;
    try {
      if (map) runMapTask(c, kernelFor, t);
      else runTask(c, ex, tid, t);
    } catch (e) {
      Atomics.store(c, ${CTRL_FAILED}, 1);
    }
    if (!map && t >= ${f("nCompute")}) Atomics.add(c, ${CTRL_PACKED}, 1);
    ran++;
    if (tid !== 0) Atomics.add(c, ${CTRL_WORKER_TASKS}, 1);
    if (Atomics.add(c, ${CTRL_DONE}, 1) + 1 === total) Atomics.notify(c, ${CTRL_DONE});
  }
}
`;

/** Source of the worker (an eval worker: CommonJS scope, `require` available). */
export function workerSource(spin: number): string {
  return `
"use strict";
const { workerData, receiveMessageOnPort } = require("node:worker_threads");
const { module, memory, tid, port } = workerData;
const ex = new WebAssembly.Instance(module, { env: { memory } }).exports;
const c = new Int32Array(memory.buffer, 0, ${CTRL_WORDS});
const kernels = new Map();
const mathImports = { sin: Math.sin, cos: Math.cos };
function kernelFor(id) {
  // The module was posted before the job was published: it is in the port's queue.
  for (let tries = 0; !kernels.has(id); tries++) {
    const m = receiveMessageOnPort(port);
    if (m === undefined) {
      if (tries > 1000000) throw new Error("map kernel " + id + " never arrived");
      continue;
    }
    const inst = new WebAssembly.Instance(m.message.module, { env: { memory }, m: mathImports });
    kernels.set(m.message.id, inst.exports.kernel);
  }
  return kernels.get(id);
}
${RUNNER_SOURCE}
for (;;) {
  if (Atomics.load(c, ${CTRL_QUIT}) !== 0) break;
  runJob(c, ex, tid, kernelFor);
  const w = Atomics.load(c, ${CTRL_W});
  if ((w & ${MAX_TASKS}) !== 0) continue;
  for (let i = 0; i < ${spin} && Atomics.load(c, ${CTRL_W}) === w; i++);
  if (Atomics.load(c, ${CTRL_QUIT}) !== 0) break;
  Atomics.wait(c, ${CTRL_W}, w);
}
`;
}

/** The runner's functions for the main thread. */
export function mainRunner(): {
  runJob: (c: Int32Array, ex: object, tid: number, kernelFor: (id: number) => unknown) => number;
} {
  return new Function(`${RUNNER_SOURCE}\nreturn { runJob };`)() as never;
}

/**
 * @file The Wasm runtime of the CPU fast path: one `WebAssembly.Memory` (shared when the engine allows,
 * backed by a SharedArrayBuffer), the generated GEMM module instantiated on the main thread, and a
 * persistent pool of `worker_threads` (started lazily, on the first product large enough to split)
 * that instantiate the same module on the same memory. Jobs are handed off through control words in
 * that memory (job-runner.ts); the main thread takes part in every job.
 *
 * Threads: `WEBGRAD_THREADS` (total, main thread included) caps the pool; the default is
 * `os.availableParallelism()`. Without shared memory everything runs on the main thread. Workers are
 * `unref`ed, so they never keep the process alive; `shutdownCpuWasmPool()` stops them explicitly.
 *
 * Memory layout (bytes): [0, 256) control words; [256, 512) zeros (pack padding reads them);
 * [512, 1024) fence scratch (never written in practice); from 64 KiB, one packed-A block per thread
 * (room for MAX_THREADS); after them the scratch reserve, where a job puts what it copies in and
 * its packed and padded blocks (`scratch`); from ARENA_START, the arena (arena.ts): CPU arrays that
 * live in this memory (storage.ts) and, when a job needs more than the reserve, a larger scratch
 * block. Untouched pages cost no physical memory. The memory grows with the arena and is never shrunk
 * (a Wasm memory cannot be); freed blocks are reused.
 *
 * On an oversubscribed machine (other processes busy on the cores) a worker can be descheduled while
 * it holds a task and the main thread then waits for it. The runtime notices (the share of job time
 * the main thread waits, as a moving average) and runs jobs on one thread for a while when it is large
 * (`threadsFor`, straggle.ts: a pause of 100 ms that doubles while the waits go on, up to 2 s).
 */
import { availableParallelism } from "node:os";
import { debuglog } from "node:util";
import { setFlagsFromString } from "node:v8";
import { MessageChannel, Worker, type MessagePort } from "node:worker_threads";
import { wasmApi, type WasmMemory, type WasmModule } from "./wasm-api.js";
import { Arena } from "./arena.js";
import { StraggleGuard } from "./straggle.js";
import { enableRelaxedSimd, gemmModuleBytes, type GemmExports, type TileShape } from "./gemm-kernels.js";
import {
  CTRL_AREADY, CTRL_DONE, CTRL_FAILED, CTRL_KIND, CTRL_NTASKS, CTRL_P, CTRL_PACKED, CTRL_QUIT, CTRL_THREADS, CTRL_W,
  CTRL_WORDS, GEN_MASK, JOB_FIELDS, KIND_GEMM, KIND_MAP, mainRunner, MAP_FIELDS, MAP_OPERAND_WORDS, MAX_TASKS,
  workerSource, type Job,
} from "./job-runner.js";

const debug = debuglog("webgrad");

/** Register tile and cache blocking of one element type (MC a multiple of MR). */
export interface Blocking extends TileShape {
  readonly mc: number;
  readonly kc: number;
}

/**
 * Tuned on a 2-core AMD EPYC (Zen 4) under Node 20 (bench/cpu-peers.ts): 2 x 16 tiles (8 v128
 * accumulators, 4 B vectors, 1 broadcast, 1 product: 14 of V8's 15 usable xmm registers), k unrolled 4
 * times; the A block (MC x KC) stays in L2, a B sliver (KC x NR) in L1, the packed B in L3. With the
 * fused multiply-add (relaxed SIMD) larger tiles would fit on paper (6 x 8: 12 accumulators, 2 B
 * vectors, 1 broadcast), but TurboFan hoists all broadcasts of a step and spills: 6 x 8, 5 x 8, 4 x 12,
 * 3 x 16 measured 20-30 GFLOP/s on one thread against 50 for 2 x 16 (fences after every row or two
 * did not help), and 4 x 8 or 3 x 12 gained nothing.
 */
export const F32_BLOCKING: Blocking = { mr: 2, nr: 16, unroll: 4, fenceRows: 0, mc: 128, kc: 256 };
export const F64_BLOCKING: Blocking = { mr: 2, nr: 8, unroll: 4, fenceRows: 0, mc: 128, kc: 128 };

const PAGE = 65536;
const ZERO_ADDR = 256;
const SCRATCH_ADDR = 512;
const PACK0 = PAGE;
/** 2 GiB: every byte address stays a non-negative int32. */
const MAX_PAGES = 32768;
/** Threads at most (the packed-A blocks of this many fit below the scratch reserve). */
export const MAX_THREADS = 64;
/** Bytes of scratch below the arena (a job needing more takes an arena block). */
const SCRATCH_RESERVE = 8 << 20;
/** Spin iterations of an idle worker before it sleeps (a few tens of microseconds). */
const WORKER_SPIN = 20000;
/** Spin iterations of the main thread before it sleeps waiting for workers. */
const MAIN_SPIN = 100000;

/** Bytes of one thread's packed-A block (the larger of the two element types, 64-byte aligned). */
const A_PACK_BYTES =
  Math.ceil(Math.max(F32_BLOCKING.mc * F32_BLOCKING.kc * 4, F64_BLOCKING.mc * F64_BLOCKING.kc * 8) / 64) * 64;

/** Where the scratch reserve starts and the arena begins. */
const SCRATCH0 = PACK0 + MAX_THREADS * A_PACK_BYTES;
const ARENA_START = SCRATCH0 + SCRATCH_RESERVE;

/** Thread count from `WEBGRAD_THREADS` (a positive integer), else the machine's parallelism. */
function defaultThreads(): number {
  const env = typeof process !== "undefined" ? process.env.WEBGRAD_THREADS : undefined;
  const n = env === undefined || env === "" ? NaN : Number(env);
  if (Number.isInteger(n) && n >= 1) return Math.min(n, MAX_THREADS);
  if (env !== undefined && env !== "") debug("WEBGRAD_THREADS=%s is not a positive integer; using all cores", env);
  try {
    return Math.min(MAX_THREADS, Math.max(1, availableParallelism()));
  } catch {
    return 1;
  }
}

/** The runtime: memory, main-thread instance, workers. */
export class WasmRuntime {
  readonly memory: WasmMemory;
  readonly shared: boolean;
  readonly module: WasmModule;
  readonly ex: GemmExports;
  /** The control words (re-made after a grow: an unshared memory's old buffer is detached by it). */
  ctrl: Int32Array;
  relaxed: boolean;
  /** Total threads for large products (main included). */
  threads: number;
  #workers: Worker[] = [];
  #gen = 0;
  #runJob: (c: Int32Array, ex: object, tid: number, kernelFor: (id: number) => unknown) => number;
  /** Each worker's end of its module channel (map kernels are posted there). */
  #ports: MessagePort[] = [];
  /** Registered map kernels: the module (for workers) and the main thread's instance's function. */
  #mapKernels: { module: WasmModule; fn: (...args: number[]) => void }[] = [];
  readonly #kernelFor = (id: number): unknown => this.#mapKernels[id]?.fn;
  #closed = false;
  /** Pauses parallel jobs while workers keep the main thread waiting (an oversubscribed machine). */
  readonly #straggle = new StraggleGuard();
  /** Blocks of the memory above the scratch reserve (CPU arrays, large scratch). */
  readonly arena: Arena;
  /** The arena block serving as scratch when a job needs more than the reserve (-1: none). */
  #bigScratch = -1;
  #bigScratchBytes = 0;

  constructor(threads: number) {
    const wa = wasmApi;
    if (wa === undefined) throw new Error("no WebAssembly in this engine");
    let memory: WasmMemory;
    let shared = typeof SharedArrayBuffer !== "undefined" && process.env.WEBGRAD_CPU_SHARED !== "0";
    try {
      memory = new wa.Memory({ initial: ARENA_START / PAGE, maximum: MAX_PAGES, shared });
      if (shared && !(memory.buffer instanceof SharedArrayBuffer)) shared = false;
    } catch {
      shared = false;
      memory = new wa.Memory({ initial: ARENA_START / PAGE, maximum: MAX_PAGES });
    }
    this.memory = memory;
    this.shared = shared;
    const build = (relaxed: boolean): Uint8Array =>
      gemmModuleBytes({
        f32: F32_BLOCKING,
        f64: F64_BLOCKING,
        relaxed,
        shared,
        zeroAddr: ZERO_ADDR,
        scratchAddr: SCRATCH_ADDR,
        initialPages: 2,
        maximumPages: MAX_PAGES,
      });
    // Relaxed SIMD (a fused multiply-add in the GEMM) unless WEBGRAD_RELAXED_SIMD=0, which keeps the
    // separate multiply and add: results then round the same on every machine.
    this.relaxed = process.env.WEBGRAD_RELAXED_SIMD !== "0" && enableRelaxedSimd(setFlagsFromString);
    let bytes = build(this.relaxed);
    if (this.relaxed && !wa.validate(bytes)) {
      debug("cpu wasm: the relaxed-SIMD GEMM module does not validate; using mul + add");
      this.relaxed = false;
      bytes = build(false);
    }
    if (!wa.validate(bytes)) throw new Error("the generated GEMM module does not validate");
    this.module = new wa.Module(bytes);
    this.ex = new wa.Instance(this.module, { env: { memory } }).exports as unknown as GemmExports;
    this.ctrl = new Int32Array(memory.buffer, 0, CTRL_WORDS);
    this.#runJob = mainRunner().runJob;
    this.threads = shared ? Math.min(MAX_THREADS, Math.max(1, threads)) : 1;
    this.arena = new Arena(ARENA_START, MAX_PAGES * PAGE, (end) => this.ensure(end));
  }

  /** The memory's maximum size in 64 KiB pages (other modules importing it must declare the same). */
  get maximumPages(): number {
    return MAX_PAGES;
  }

  get workerCount(): number {
    return this.#workers.length;
  }

  /** Where each thread's packed-A block is. */
  get packLayout(): { aPack0: number; aPackStride: number } {
    return { aPack0: PACK0, aPackStride: A_PACK_BYTES };
  }

  /**
   * The start of `bytes` bytes of scratch (64-byte aligned) for the current job, or -1 when the memory
   * cannot provide them. Valid until the next call; read `memory.buffer` after it (it may grow).
   */
  scratch(bytes: number): number {
    if (bytes <= SCRATCH_RESERVE) return SCRATCH0;
    if (this.#bigScratchBytes >= bytes) return this.#bigScratch;
    if (this.#bigScratch >= 0) this.arena.free(this.#bigScratch, this.#bigScratchBytes);
    // Some headroom, so that slowly growing jobs do not reallocate every time.
    const want = Math.ceil(bytes * 1.25);
    let at = this.arena.alloc(want);
    let got = want;
    if (at < 0) {
      at = this.arena.alloc(bytes);
      got = bytes;
    }
    this.#bigScratch = at;
    this.#bigScratchBytes = at < 0 ? 0 : got;
    return at;
  }

  /**
   * Threads to use for a job that could run on `threads`: 1 while parallel jobs are paused because
   * workers kept the main thread waiting (straggle.ts).
   */
  threadsFor(threads: number): number {
    return threads > 1 && this.#straggle.paused ? 1 : threads;
  }

  /** Whether parallel jobs are paused now, and how many pauses there were (statistics). */
  get straggle(): { paused: boolean; pauses: number } {
    return { paused: this.#straggle.paused, pauses: this.#straggle.pauses };
  }

  /** Grows the memory to at least `bytes`; false when that exceeds the maximum. */
  ensure(bytes: number): boolean {
    const have = this.memory.buffer.byteLength;
    if (bytes <= have) return true;
    const pages = Math.ceil((bytes - have) / PAGE);
    if (have / PAGE + pages > MAX_PAGES) return false;
    try {
      this.memory.grow(pages);
      this.ctrl = new Int32Array(this.memory.buffer, 0, CTRL_WORDS);
      return true;
    } catch {
      return false;
    }
  }

  /** Starts the workers (threads - 1 of them) if not running yet. */
  startWorkers(): void {
    if (this.#closed || !this.shared || this.#workers.length >= this.threads - 1) return;
    const src = workerSource(WORKER_SPIN);
    for (let tid = this.#workers.length + 1; tid < this.threads; tid++) {
      try {
        const { port1, port2 } = new MessageChannel();
        const w = new Worker(src, {
          eval: true,
          workerData: { module: this.module, memory: this.memory, tid, port: port2 },
          transferList: [port2 as never],
        });
        port1.unref();
        this.#mapKernels.forEach(({ module }, id) => port1.postMessage({ id, module }));
        this.#ports.push(port1);
        w.unref();
        w.on("error", (e) => debug("cpu wasm worker %d failed: %s", tid, String(e)));
        this.#workers.push(w);
      } catch (e) {
        debug("cpu wasm: could not start a worker (%s); continuing with %d threads", String(e), tid);
        this.threads = tid;
        break;
      }
    }
  }

  /**
   * Runs a product on `threads` threads (the main thread and workers 1..threads-1): writes its
   * parameters, publishes `tasks` tasks, runs `prepare` (copying A in while the workers start on B),
   * takes part, and waits for all tasks (with `mainTakesPart` false, a testing aid, the workers run
   * every task). Returns false when a task failed.
   */
  run(job: Job, tasks: number, threads: number, prepare: () => void, mainTakesPart = true): boolean {
    const c = this.ctrl;
    for (let i = 0; i < JOB_FIELDS.length; i++) c[CTRL_P + i] = job[JOB_FIELDS[i]!] | 0;
    return this.#execute(KIND_GEMM, tasks, threads, prepare, mainTakesPart, true);
  }

  /**
   * Registers a map kernel (an elementwise kernel of fused.ts: `kernel(n, in0, step0, ..., out0, ...)`
   * over n vectors) for `runMap`; returns its id. Workers get the module now or when they start.
   */
  registerMapKernel(module: WasmModule, fn: (...args: number[]) => void): number {
    const id = this.#mapKernels.length;
    this.#mapKernels.push({ module, fn });
    for (const port of this.#ports) port.postMessage({ id, module });
    return id;
  }

  /** Whether a map job can carry `nIn` inputs and `nOut` outputs. */
  mapFits(nIn: number, nOut: number): boolean {
    return 2 * nIn + nOut <= MAP_OPERAND_WORDS;
  }

  /**
   * Runs map kernel `id` over `nvec` vectors on `threads` threads, in tasks of `per` vectors: `inputs`
   * as [byte address, byte step per vector] pairs, `outputs` as byte addresses (step 16). Returns false
   * when a task failed (nothing is known about the outputs then). `mainTakesPart` as for `run`.
   */
  runMap(
    id: number, nvec: number, per: number, inputs: readonly (readonly [number, number])[], outputs: readonly number[],
    threads: number, mainTakesPart = true,
  ): boolean {
    if (!this.mapFits(inputs.length, outputs.length)) throw new RangeError(`cpu wasm: a map job with at most ${MAP_OPERAND_WORDS} operand words`);
    const c = this.ctrl;
    const P = CTRL_P;
    c[P] = id;
    c[P + 1] = nvec;
    c[P + 2] = per;
    c[P + 3] = inputs.length;
    c[P + 4] = outputs.length;
    let w = P + MAP_FIELDS.length;
    for (const [addr, step] of inputs) {
      c[w++] = addr;
      c[w++] = step;
    }
    for (const addr of outputs) c[w++] = addr;
    const tasks = Math.ceil(nvec / per);
    return this.#execute(KIND_MAP, tasks, threads, () => {}, mainTakesPart, false);
  }

  /** Publishes the job whose parameters are written, takes part, waits; see `run`. */
  #execute(kind: number, tasks: number, threads: number, prepare: () => void, mainTakesPart: boolean, adapt: boolean): boolean {
    if (tasks < 1 || tasks > MAX_TASKS) throw new RangeError(`cpu wasm: 1..${MAX_TASKS} tasks, got ${tasks}`);
    const c = this.ctrl;
    c[CTRL_KIND] = kind;
    c[CTRL_NTASKS] = tasks;
    Atomics.store(c, CTRL_DONE, 0);
    Atomics.store(c, CTRL_PACKED, 0);
    Atomics.store(c, CTRL_FAILED, 0);
    Atomics.store(c, CTRL_AREADY, 0);
    Atomics.store(c, CTRL_THREADS, threads);
    this.#gen = (this.#gen + 1) & GEN_MASK;
    Atomics.store(c, CTRL_W, (this.#gen << 12) | tasks);
    if (tasks > 1 && threads > 1 && this.#workers.length > 0) Atomics.notify(c, CTRL_W);
    // Workers may already be running tasks: whatever happens, finish the job before returning.
    let error: unknown = null;
    try {
      prepare();
    } catch (e) {
      error = e;
      Atomics.store(c, CTRL_FAILED, 1);
    }
    Atomics.store(c, CTRL_AREADY, 1);
    const t0 = performance.now();
    let ran = 0;
    if (mainTakesPart || threads < 2 || this.#workers.length === 0) ran = this.#runJob(c, this.ex, 0, this.#kernelFor);
    const t1 = performance.now();
    for (let i = 0; Atomics.load(c, CTRL_DONE) !== tasks; i++) {
      if (i > MAIN_SPIN) {
        const done = Atomics.load(c, CTRL_DONE);
        if (done !== tasks) Atomics.wait(c, CTRL_DONE, done, 50);
      }
    }
    if (adapt && threads > 1 && mainTakesPart && tasks > 1 && ran > 0) {
      const t2 = performance.now();
      const pause = this.#straggle.record(ran, t1 - t0, t2 - t1);
      if (pause > 0) {
        debug("cpu wasm: workers kept the main thread waiting (main ran %d of %d tasks in %s ms, then waited %s ms); one thread for %d ms", ran, tasks, (t1 - t0).toFixed(2), (t2 - t1).toFixed(2), pause);
      }
    }
    if (error !== null) throw error;
    return Atomics.load(c, CTRL_FAILED) === 0;
  }

  /** Stops the workers; the runtime stays usable single-threaded. */
  async shutdown(): Promise<void> {
    const c = this.ctrl;
    Atomics.store(c, CTRL_QUIT, 1);
    this.#gen = (this.#gen + 1) & GEN_MASK;
    Atomics.store(c, CTRL_W, this.#gen << 12);
    Atomics.notify(c, CTRL_W);
    const workers = this.#workers;
    this.#workers = [];
    for (const port of this.#ports) port.close();
    this.#ports = [];
    await Promise.all(workers.map((w) => w.terminate()));
    Atomics.store(c, CTRL_QUIT, 0);
  }
}

let runtime: WasmRuntime | null = null;
let failed = false;
let requestedThreads: number | undefined;

/** The runtime, created on first use; null when Wasm SIMD is unavailable (noted once under NODE_DEBUG=webgrad). */
export function getRuntime(): WasmRuntime | null {
  if (runtime !== null || failed) return runtime;
  try {
    runtime = new WasmRuntime(requestedThreads ?? defaultThreads());
  } catch (e) {
    failed = true;
    debug("cpu wasm fast path unavailable, using the TypeScript kernels: %s", String(e));
  }
  return runtime;
}

/**
 * Sets the thread count (main thread included) for large products; `undefined` restores the default
 * (`WEBGRAD_THREADS`, else all cores), clamped to MAX_THREADS (64). Running workers beyond the new
 * count are stopped.
 */
export async function setCpuThreads(threads: number | undefined): Promise<void> {
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1)) {
    throw new RangeError(`setCpuThreads: a positive integer, got ${threads}`);
  }
  requestedThreads = threads;
  const rt = runtime;
  if (rt === null) return;
  const want = rt.shared ? Math.min(MAX_THREADS, threads ?? defaultThreads()) : 1;
  if (rt.workerCount > want - 1) await rt.shutdown();
  rt.threads = want;
}

/** Stops the worker pool (it restarts lazily on the next large product). */
export async function shutdownCpuWasmPool(): Promise<void> {
  if (runtime !== null) await runtime.shutdown();
}

/**
 * @file The CPU backend's WebAssembly fast path (public surface). Read gemm.ts (the product and its
 * work split), then pool.ts (memory, workers, thread count), job-runner.ts (the hand-off protocol),
 * gemm-kernels.ts (the generated SIMD kernels) and emitter.ts (the binary encoder). fused.ts compiles
 * fused elementwise programs (the jit compiler's `ScalarProgram`s) to Wasm SIMD or JavaScript, with
 * simd-math.ts (float32 exp, log, tanh, logistic, sin, cos on f32x4); eager.ts sends large eager float32
 * unary / binary ops and reductions (reduce.ts) to them; elementwise.ts holds the older float32 binary
 * ops (kept for its tests).
 *
 * Environment: `WEBGRAD_THREADS` caps the threads (default: all cores), `WEBGRAD_CPU_WASM=0` turns
 * the fast path off, `WEBGRAD_CPU_SHARED=0` forces unshared memory (single-threaded),
 * `WEBGRAD_RELAXED_SIMD=0` keeps the GEMM off the fused multiply-add (gemm-kernels.ts), and
 * `NODE_DEBUG=webgrad` prints why the fast path is unavailable, if it is. storage.ts keeps large CPU
 * arrays in the runtime's memory (`WEBGRAD_CPU_ARENA_MB` caps it), arena.ts allocates its blocks.
 */
export { configureCpuWasm, cpuWasmOptions, wasmGemm, type CpuWasmOptions, type GemmOperand } from "./gemm.js";
export { setCpuThreads, shutdownCpuWasmPool } from "./pool.js";
export { wasmBinaryF32, WASM_BINARY_MIN, type WasmBinaryOp } from "./elementwise.js";
export {
  compileScalarProgram, configureFused, fusedOptions, fusedStats, type FusedKernel, type FusedOptions, type StridedView,
} from "./fused.js";
export { wasmReduceF32, WASM_REDUCE_MIN, type WasmReduceOp } from "./reduce.js";
import { CTRL_WORKER_TASKS } from "./job-runner.js";
import { getRuntime } from "./pool.js";
import { residentStats } from "./storage.js";

/** What the fast path runs on here (creates the runtime if needed; starts no workers). */
export function cpuWasmInfo(): {
  available: boolean;
  sharedMemory: boolean;
  relaxedSimd: boolean;
  threads: number;
  workersRunning: number;
  /** Tasks the workers have run since the runtime started (0: everything ran on the main thread). */
  workerTasks: number;
  /** Times parallel jobs paused because workers kept the main thread waiting (straggle.ts). */
  parallelPauses: number;
  /** Resident storage (storage.ts): counters, and the arena's live, peak and reserved bytes. */
  resident: typeof residentStats & { arenaUsed: number; arenaPeak: number; arenaReserved: number };
} {
  const rt = getRuntime();
  if (rt === null) {
    return {
      available: false, sharedMemory: false, relaxedSimd: false, threads: 1, workersRunning: 0, workerTasks: 0,
      parallelPauses: 0, resident: { ...residentStats, arenaUsed: 0, arenaPeak: 0, arenaReserved: 0 },
    };
  }
  const a = rt.arena.stats;
  return {
    available: true,
    sharedMemory: rt.shared,
    relaxedSimd: rt.relaxed,
    threads: rt.threads,
    workersRunning: rt.workerCount,
    workerTasks: Atomics.load(rt.ctrl, CTRL_WORKER_TASKS),
    parallelPauses: rt.straggle.pauses,
    resident: { ...residentStats, arenaUsed: a.used, arenaPeak: a.peak, arenaReserved: a.reserved },
  };
}

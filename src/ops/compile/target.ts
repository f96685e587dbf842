/**
 * @file The interface between the backend-neutral compiler (graph, fusion, memory plan) and a backend
 * that generates and runs the kernels. A target is registered per device kind (`registerJitTarget`);
 * arrays on a device kind without a target run through jit's interpreter. The WebGPU target lives in
 * src/ops/backend/webgpu/compile/target.ts; a CPU (Wasm) target plugs in the same way.
 */
import type { DType } from "../../autodiff/aval.js";
import type { Device } from "../array.js";
import type { FusionOptions, FusionPlan } from "./fusion.js";
import type { MemoryPlan } from "./memory-plan.js";

/** Counters of one compiled segment (tests, benchmarks, WEBGRAD_DEBUG). */
export interface SegmentStats {
  /** Kernels per call (generated kernels and backend-run ops). */
  readonly kernels: number;
  /** Device dispatches per call. */
  readonly dispatches: number;
  /** Bytes of the static intermediate buffers (the memory plan's peak). */
  readonly peakBytes: number;
  /** Σ bytes of all intermediates. */
  readonly intermediateBytes: number;
  readonly outputBytes: number;
}

/** One fused segment, ready to run on a device. Buffers are the backend's handles. */
export interface TargetSegment {
  readonly stats: SegmentStats;
  /** Generated source per kernel (WGSL, Wasm text, ...), for WEBGRAD_DEBUG. */
  readonly sources: readonly string[];
  /**
   * Runs the kernels on the inputs' buffers (any layout) and returns fresh output buffers, in the
   * graph's output order. `donated[i]`: input i's buffer may be reused for an output.
   */
  run(inputs: readonly unknown[], opts?: { readonly donated?: readonly boolean[] }): unknown[];
  /** Runs kernel by kernel, waiting for each: per-kernel milliseconds (optional). */
  profile?(inputs: readonly unknown[]): Promise<{ outputs: unknown[]; ms: number[] }>;
}

export interface JitTarget {
  /** The device kind it compiles for. */
  readonly kind: Device["kind"];
  /** Bytes per element of each dtype in device buffers (memory plan sizes). */
  bytesPerElement(dtype: DType): number;
  /** Fusion options for a device (its buffer-binding limits). */
  fusionOptions(device: Device): FusionOptions;
  /** Generates the kernels of a fused segment. `donated[i]`: whether graph input i may be donated. */
  prepare(device: Device, plan: FusionPlan, mem: MemoryPlan, donated: readonly boolean[]): TargetSegment;
  /** Runs `fn`, which issues a whole call's work, as one unit (WebGPU: one command buffer, one submit). */
  call<T>(device: Device, fn: () => T): T;
}

const targets = new Map<string, JitTarget>();

/** Registers (or replaces) the compiler target of a device kind. */
export function registerJitTarget(t: JitTarget): void {
  targets.set(t.kind, t);
}

export function jitTargetFor(device: Device): JitTarget | undefined {
  return targets.get(device.kind);
}

/**
 * @file The jit compiler: `installJitCompiler()` replaces jit's interpreter (src/autodiff/jit.ts) with
 * an executor that compiles each jitted jaxpr once per device and runs the compiled program.
 *
 * Pipeline: inline nested calls and split at higher-order equations (segments.ts) -> record kernel
 * graphs from the primitives' `lower` rules (graph.ts) -> fuse (fusion.ts) -> static memory plan
 * (memory-plan.ts) -> a backend target generates and runs the kernels. Graph, fusion and memory plan are
 * backend-neutral; targets are per backend (WebGPU: src/ops/backend/webgpu/compile/, CPU:
 * src/ops/backend/cpu/compile/). Arrays on a device without a target run through the interpreter.
 *
 * Control flow between segments: `scan` loops its compiled body (`runScan`: on a target that places
 * outputs, each step reads its xs slice in place and writes its ys into the stacked result), and
 * `whileLoop` runs a compiled predicate and body driven from the host (`runWhile`); anything else
 * runs through `bind`.
 *
 * Debugging: one environment variable. `WEBGRAD_DEBUG=1` prints, per compiled program, the jaxpr, the
 * kernel graph, the fused kernels (with the memory plan's peak) and the generated WGSL, and why a
 * program fell back to the interpreter; `WEBGRAD_DEBUG=2` also makes `profileJit(f, ...args)` print
 * per-kernel times (GPU timestamp queries in the call's one command buffer where the device has them,
 * else one submit per kernel timed on the host). `lastJitStats()` returns the counters of the last
 * compiled call.
 */
import { bind, bind1, Concrete, hooks, Value } from "../../autodiff/core.js";
import { interpretJaxpr, JitExecutor, JitParams, makeJaxpr, setJitExecutor } from "../../autodiff/jit.js";
import { hoistConsts } from "../../autodiff/call.js";
import { ArgumentError } from "../../autodiff/errors.js";
import * as tree from "../../autodiff/tree.js";
import { Atom, Jaxpr, JaxprEqn, Literal, printJaxpr, Var } from "../../autodiff/jaxpr.js";
import type { ScanParams } from "../control-flow/scan.js";
import type { WhileParams } from "../control-flow/while.js";
import { literalValues, readScalar } from "../control-flow/common.js";
import { ShapedArray, shapeSize, type DType } from "../../autodiff/aval.js";
import { concatenate, reshape, reshapeP, sliceInDim } from "../lax/structural.js";
import { Array, Device, getDefaultDevice, wrapBuffer } from "../array.js";
import { webGpuJitTarget } from "../backend/webgpu/compile/target.js";
import { jitTargetFor, registerJitTarget, type JitTarget, type SegmentStats, type TargetSegment } from "./target.js";
import { describePlan, planFusion, type FusionOptions, type FusionPlan } from "./fusion.js";
import { planMemory, type MemoryPlan } from "./memory-plan.js";
import { buildSegments, flattenJaxpr, type Segment } from "./segments.js";

export { planFusion, describePlan } from "./fusion.js";
export type { FusionPlan, FusionOptions, Kernel } from "./fusion.js";
export { planMemory } from "./memory-plan.js";
export type { MemoryPlan } from "./memory-plan.js";
export { Graph, GraphBuilder } from "./graph.js";
export { buildSegments, flattenJaxpr } from "./segments.js";
export { registerJitTarget, jitTargetFor } from "./target.js";
export type { JitTarget, TargetSegment, SegmentStats } from "./target.js";

/** Debug level from WEBGRAD_DEBUG (0 off, 1 plans and WGSL, 2 also per-kernel timings). */
export function debugLevel(): number {
  const v = typeof process !== "undefined" ? process.env?.WEBGRAD_DEBUG : undefined;
  if (!v || v === "0") return 0;
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? n : 1;
}

/** Counters of a compiled program (sum over its compiled segments). */
export interface JitProgramStats {
  /** Kernels per call (generated kernels and backend-run ops). */
  readonly kernels: number;
  /** GPU dispatches per call. */
  readonly dispatches: number;
  /** Equations run outside the compiled segments (higher-order primitives). */
  readonly boundEqns: number;
  /** Bytes of the static intermediate buffers (the memory plan's peak). */
  readonly peakBytes: number;
  /** Σ bytes of all intermediates (what op-by-op execution would allocate). */
  readonly intermediateBytes: number;
  readonly outputBytes: number;
  /** Generated WGSL per kernel. */
  readonly sources: readonly string[];
  /** Printable fused-kernel listing. */
  readonly plan: string;
  /**
   * Copies the compiled scans of the last call made (`lastJitStats()` only; 0 in a program's static
   * stats): xs slices that had to be materialised, ys moved into the stacked result after the step
   * (or concatenated at the end, on targets without output placement). 0 when every step read its xs
   * in place and wrote its ys straight into the stacked ys.
   */
  readonly scanCopies: number;
  /**
   * Outputs planned to take a donated input's buffer (`donateArgnums`): each written into the donated
   * buffer, in place or after the input's last read. A call still writes a fresh buffer when the
   * donated array turns out to be shared (a live view of it, or passed twice).
   */
  readonly donatedOutputs: number;
}

/** Where an output goes: `handle`'s storage at element `handle.offset + offset` (a target's handle). */
export interface OutputPlace {
  readonly handle: unknown;
  readonly offset: number;
}

/**
 * A target that places outputs (the WebGPU and CPU targets): segments prepared with `dynamicOffsets` read
 * inputs at any offset of their buffer and write outputs where `run`'s `outputs` say. Compiled scans
 * use it to read xs slices in place and write ys into the stacked result.
 */
interface PlacingTarget extends JitTarget {
  prepare(device: Device, plan: FusionPlan, mem: MemoryPlan, donated: readonly boolean[], opts?: { readonly dynamicOffsets?: boolean }): TargetSegment;
  /** A fresh uninitialised contiguous buffer. */
  allocate(device: Device, shape: readonly number[], dtype: DType): unknown;
  /** Copies `src` into `place` unless it is there already (then null); returns the handle there. */
  placeInto(device: Device, src: unknown, place: OutputPlace): unknown;
  /** A contiguous view of `shape` at `place` (a nested scan writes its stacked ys there). */
  viewAt(device: Device, place: OutputPlace, shape: readonly number[], dtype: DType): unknown;
}

function isPlacing(t: JitTarget): t is PlacingTarget {
  const p = t as Partial<PlacingTarget>;
  return typeof p.allocate === "function" && typeof p.placeInto === "function" && typeof p.viewAt === "function";
}

/** Run-time counters of the current top-level compiled call (see JitProgramStats.scanCopies). */
const counters = { scanCopies: 0, scanDepth: 0 };

/** A target's monotonic count of the copies it made (the WebGPU target's `copies`), or null. */
function targetCopies(t: JitTarget): number | null {
  const c = (t as { copies?: unknown }).copies;
  return typeof c === "number" ? c : null;
}

type CompiledSegment =
  | (Segment & { kind: "bind" })
  | (Segment & { kind: "graph"; exec: TargetSegment; desc: string; donations: number })
  /** A scan whose body is compiled: a loop of the body's kernels, all in the call's command buffer. */
  | { kind: "scan"; eqn: JaxprEqn; body: CompiledProgram }
  /** A while loop whose predicate and body are compiled programs, driven from the host. */
  | { kind: "while"; eqn: JaxprEqn; cond: CompiledProgram; body: CompiledProgram };

/** Options of `compile`. */
interface CompileOptions {
  /** Segments take run-time input offsets and output places (scan bodies on a placing target). */
  readonly dynamicOffsets?: boolean;
}

/** A jaxpr compiled for one device. */
export class CompiledProgram {
  readonly stats: JitProgramStats;
  constructor(
    readonly jaxpr: Jaxpr,
    readonly device: Device,
    readonly target: JitTarget,
    readonly segments: readonly CompiledSegment[],
    readonly literalInputs: ReadonlyMap<Var, Literal>,
    /** Compiled with dynamic offsets: `run` accepts output places. */
    readonly placing = false,
  ) {
    const graphs = segments.filter((s): s is CompiledSegment & { kind: "graph" } => s.kind === "graph");
    const scans = segments.filter((s): s is CompiledSegment & { kind: "scan" } => s.kind === "scan");
    const perScan = (f: (s: JitProgramStats) => number) =>
      scans.reduce((a, s) => a + f(s.body.stats) * (s.eqn.params as ScanParams).length, 0);
    const sum = (f: (s: SegmentStats) => number) => graphs.reduce((a, s) => a + f(s.exec.stats), 0);
    this.stats = {
      kernels: sum((s) => s.kernels) + perScan((s) => s.kernels),
      dispatches: sum((s) => s.dispatches) + perScan((s) => s.dispatches),
      boundEqns: segments.filter((s) => s.kind === "bind").length,
      peakBytes: sum((s) => s.peakBytes),
      intermediateBytes: sum((s) => s.intermediateBytes),
      outputBytes: sum((s) => s.outputBytes),
      sources: graphs.flatMap((s) => s.exec.sources),
      plan: graphs.map((s) => s.desc).join("\n--\n"),
      scanCopies: 0,
      donatedOutputs: graphs.reduce((a, s) => a + s.donations, 0),
    };
  }

  /**
   * Runs the program. `places` (programs compiled with dynamic offsets): result index -> where that
   * result must be written; those results are returned as views there.
   */
  run(args: readonly Concrete[], params: JitParams, places?: ReadonlyMap<number, OutputPlace>): Concrete[] {
    // Every kernel of the call (all segments, every scan iteration) goes into one command buffer.
    return this.target.call(this.device, () => this.runInner(args, params, places));
  }

  private runInner(args: readonly Concrete[], params: JitParams, places?: ReadonlyMap<number, OutputPlace>): Concrete[] {
    const dev = this.device;
    // Results with a place: their variable's producing segment writes them there.
    const placeOf = new Map<Var, OutputPlace>();
    if (places && this.placing) {
      for (const [k, pl] of places) {
        const a = this.jaxpr.outs[k];
        if (a instanceof Var && !placeOf.has(a)) placeOf.set(a, pl);
      }
    }
    const env = new Map<Var, Value>();
    const committed = args.some((a) => (a as Array).committed);
    const donatedArgs = new Set<unknown>();
    // Shared permanent constants (cached scalars) are never donated: other arrays are the same object.
    params.donated.forEach((d, i) => {
      const a = args[params.numConsts + i] as Array;
      if (d && !a.permanent) donatedArgs.add(a);
    });
    this.jaxpr.invars.forEach((v, i) => env.set(v, args[i]!));
    const read = (a: Atom): Value => (a instanceof Literal ? a.val : (env.get(a) ?? this.literalInputs.get(a)!.val));
    // Intermediate arrays made here are disposed after their last reader.
    const lastUse = new Map<Var, number>();
    this.segments.forEach((s, i) => {
      const ins = s.kind === "graph" ? s.inVars : s.eqn.inputs.filter((a): a is Var => a instanceof Var);
      for (const v of ins) lastUse.set(v, i);
    });
    const outVars = new Set(this.jaxpr.outs.filter((a): a is Var => a instanceof Var));
    const owned = new Set<Value>();
    this.segments.forEach((s, si) => {
      if (s.kind === "bind") {
        const ins = s.eqn.inputs.map(read);
        const outs = bind(s.eqn.prim, ins, s.eqn.params);
        s.eqn.outBinders.forEach((v, k) => {
          // An output that is an input object (a length-0 scan returns its init) gets an Array of its
          // own: the input may be an intermediate released at its last use, here.
          const o = ins.includes(outs[k]!) ? bind1(reshapeP, [outs[k]!], { newSizes: [...outs[k]!.aval.shape] }) : outs[k]!;
          env.set(v, o);
          if (o !== outs[k] && !args.includes(o as Concrete)) owned.add(o);
        });
      } else if (s.kind === "scan" || s.kind === "while") {
        const ins = s.eqn.inputs.map(read);
        // A scan whose ys have places (it is in a scan body, its ys are that body's ys) stacks them there.
        const ysPlaces =
          s.kind === "scan" && placeOf.size > 0 ? s.eqn.outBinders.slice((s.eqn.params as ScanParams).numCarry).map((v) => placeOf.get(v)) : undefined;
        const outs =
          s.kind === "scan" ? runScan(s.eqn.params as ScanParams, s.body, ins, ysPlaces) : runWhile(s.eqn.params as WhileParams, s.cond, s.body, ins);
        s.eqn.outBinders.forEach((v, k) => {
          env.set(v, outs[k]!);
          // Never own (and so release) an argument of the call, whatever runScan returned.
          if (!args.includes(outs[k] as Concrete)) owned.add(outs[k]!);
        });
      } else {
        const ins = s.inVars.map((v) => onDevice(read(v) as Array, dev));
        const handles = ins.map((a) => a.buffer);
        // A donated argument's buffer may be reused when nothing after this segment reads it.
        const donated = s.inVars.map(
          (v, k) => donatedArgs.has(ins[k]) && lastUse.get(v) === si && !outVars.has(v) && ins.indexOf(ins[k]!) === k,
        );
        const runOpts: { donated: boolean[]; outputs?: (OutputPlace | undefined)[] } = { donated };
        if (placeOf.size > 0) runOpts.outputs = s.outVars.map((v) => placeOf.get(v));
        const outs = s.exec.run(handles, runOpts);
        s.outVars.forEach((v, k) => {
          const out = wrapBuffer(outs[k]!, v.aval, dev);
          out.committed = committed;
          env.set(v, out);
          owned.add(out);
        });
      }
      for (const [v, last] of lastUse) {
        if (last !== si || outVars.has(v)) continue;
        const x = env.get(v);
        if (x !== undefined && owned.has(x)) {
          hooks().release(x);
          owned.delete(x);
        }
      }
    });
    const results = this.jaxpr.outs.map(read) as Concrete[];
    if (places) {
      const target = this.target;
      if (!isPlacing(target)) throw new ArgumentError("jit: output places on a target without placement (webgrad bug)");
      // Results not written in place (passed-through inputs, backend-run ops, a variable returned
      // twice) are copied there; the result is then the view there.
      for (const [k, pl] of places) {
        const y = onDevice(results[k] as Array, dev);
        const moved = target.placeInto(dev, y.buffer, pl);
        if (y !== results[k]) hooks().release(y);
        if (moved === null || moved === undefined) continue;
        const out = wrapBuffer(moved, (results[k] as Array).aval, dev);
        out.committed = committed;
        const old = results[k]!;
        results[k] = out;
        // The replaced array dies here unless it is an argument or another result.
        if (owned.has(old) && !results.includes(old)) hooks().release(old);
      }
    }
    return results;
  }
}

/** Per-kernel timings of one call (see `profileJit`). */
export interface JitProfile {
  /**
   * One entry per kernel run (a scan's body kernels once per step): its description (as
   * WEBGRAD_DEBUG prints it) and milliseconds.
   */
  readonly kernels: readonly { readonly kernel: string; readonly ms: number }[];
  /** Σ of the kernels' ms. */
  readonly totalMs: number;
  /**
   * "timestamps": GPU time per kernel from timestamp queries, the whole call in one command buffer;
   * "host": wall clock per kernel, one submit (and wait) each, so each includes a submit's latency.
   */
  readonly source: "timestamps" | "host";
  /** Host wall time of the profiled call (encoding, GPU work and reading the timestamps back). */
  readonly wallMs: number;
  /**
   * Timestamps only: the call had more compute passes than one query set holds (2048), and the
   * kernels after that read 0 ms. Profile fewer scan steps.
   */
  readonly truncated: boolean;
}

/** A target that times a whole call's kernels on the device (the WebGPU target, timestamp queries). */
interface ProfilingTarget extends JitTarget {
  profileCall<T>(
    device: Device,
    fn: () => T,
  ): Promise<{ result: T; kernels: { kernel: string; ms: number }[]; wallMs: number; truncated: boolean } | null>;
}

/**
 * Runs `f` compiled on the arguments' device and returns per-kernel times; the outputs are released.
 * For WEBGRAD_DEBUG=2 output and benchmarks. On a WebGPU device with the `timestamp-query` feature
 * (requested by initWebGpu when the adapter offers it; WEBGRAD_TIMESTAMPS=0 or
 * `rt.useTimestamps = false` turn it off) the call runs as usual, in one command buffer, and each
 * kernel's compute passes carry timestamp writes: GPU time per kernel, scan bodies once per step.
 * Otherwise each kernel is submitted and awaited on its own and timed on the host (scans and other
 * loops then run through the interpreter, untimed).
 */
export async function profileJit(f: (...args: any[]) => unknown, ...args: unknown[]): Promise<JitProfile> {
  const cj = makeJaxpr(f)(...args);
  const { jaxpr, consts } = hoistConsts(cj);
  const leaves = [...consts, ...tree.flatten(args)[0].map((x) => hooks().asValue(x, "profileJit"))] as Concrete[];
  const params = { name: "profile", donated: [], jaxpr, numConsts: consts.length } as JitParams;
  const program = compiledFor(jaxpr, callDevice(leaves), params);
  if (!program) throw new ArgumentError("profileJit: the arguments are not on a device the jit compiler targets (WebGPU)");
  // A normal call first: shader compilation is not part of the times.
  for (const o of program.run(leaves, params)) if (!leaves.includes(o)) hooks().release(o);
  const pt = program.target as Partial<ProfilingTarget>;
  const timed = pt.profileCall ? await pt.profileCall(program.device, () => program.run(leaves, params)) : null;
  if (timed) {
    for (const o of timed.result) if (!leaves.includes(o)) hooks().release(o);
    const prof: JitProfile = {
      kernels: timed.kernels,
      totalMs: timed.kernels.reduce((a, k) => a + k.ms, 0),
      source: "timestamps",
      wallMs: timed.wallMs,
      truncated: timed.truncated,
    };
    if (debugLevel() >= 2) printProfile(prof);
    return prof;
  }
  const t0 = performance.now();
  const env = new Map<Var, Value>();
  jaxpr.invars.forEach((v, i) => env.set(v, leaves[i]!));
  const read = (a: Atom): Value => (a instanceof Literal ? a.val : (env.get(a) ?? program.literalInputs.get(a)!.val));
  const kernels: { kernel: string; ms: number }[] = [];
  const made: Value[] = [];
  for (const s of program.segments) {
    if (s.kind !== "graph") {
      const outs = bind(s.eqn.prim, s.eqn.inputs.map(read), s.eqn.params);
      s.eqn.outBinders.forEach((v, k) => env.set(v, outs[k]!));
      continue;
    }
    const ins = s.inVars.map((v) => onDevice(read(v) as Array, program.device));
    if (!s.exec.profile) throw new ArgumentError(`profileJit: the ${program.device.kind} target has no profiler`);
    const { outputs, ms } = await s.exec.profile(ins.map((a) => a.buffer));
    const lines = s.desc.split("\n");
    ms.forEach((t, i) => kernels.push({ kernel: lines[i] ?? `k${i}`, ms: t }));
    s.outVars.forEach((v, k) => {
      const out = wrapBuffer(outputs[k]!, v.aval, program.device);
      env.set(v, out);
      made.push(out);
    });
  }
  for (const m of made) hooks().release(m);
  const prof: JitProfile = { kernels, totalMs: kernels.reduce((a, k) => a + k.ms, 0), source: "host", wallMs: performance.now() - t0, truncated: false };
  if (debugLevel() >= 2) printProfile(prof);
  return prof;
}

function printProfile(prof: JitProfile): void {
  const how = prof.source === "timestamps" ? "GPU timestamps, one command buffer" : "host wall clock, one submit each";
  console.log(
    `[webgrad jit] per-kernel times (ms, ${how}):\n${prof.kernels.map((k) => `  ${k.ms.toFixed(3).padStart(9)}  ${k.kernel}`).join("\n")}\n` +
      `  total ${prof.totalMs.toFixed(3)} ms (call ${prof.wallMs.toFixed(3)} ms)` +
      (prof.truncated ? "\n  (truncated: more passes than one timestamp query set holds; later kernels read 0)" : ""),
  );
}

/**
 * A scan with a compiled body: `length` iterations of the body's kernels, encoded back to back (no
 * read, no wait between iterations). On a placing target (WebGPU, the CPU) each step reads its xs slices in
 * place (views at the step's offset of the stacked xs) and writes its ys straight into the
 * preallocated stacked ys at the step's offset (reverse scans too): no per-step copy, no final
 * concatenation. On a target that does not place outputs the ys are concatenated at the end.
 */
function runScan(p: ScanParams, body: CompiledProgram, ins: readonly Value[], ysPlaces?: readonly (OutputPlace | undefined)[]): Value[] {
  const nc = p.numConsts;
  const consts = ins.slice(0, nc);
  const init = ins.slice(nc, nc + p.numCarry);
  const xs = ins.slice(nc + p.numCarry);
  const bodyParams = { name: "scan_body", donated: [], jaxpr: body.jaxpr, numConsts: 0 } as JitParams;
  const target = body.target;
  const placed = body.placing && isPlacing(target);
  const nY = body.jaxpr.outs.length - p.numCarry;
  const dev = body.device;
  // The stacked ys, [length, ...y.shape] each, written step by step.
  const stacked: Array[] = [];
  if (placed) {
    const committed = ins.some((a) => a instanceof Array && a.committed);
    body.jaxpr.outs.slice(p.numCarry).forEach((a, k) => {
      const shape = [p.length, ...a.aval.shape];
      const place = ysPlaces?.[k];
      const buf = place ? target.viewAt(dev, place, shape, a.aval.dtype) : target.allocate(dev, shape, a.aval.dtype);
      const out = wrapBuffer(buf, new ShapedArray(shape, a.aval.dtype, a.aval.weakType), dev);
      out.committed = committed;
      stacked.push(out);
    });
  }
  // Copies inside the outermost scan: the target's own count when it keeps one (materialised inputs,
  // moved outputs), else a non-contiguous xs slice counts as the copy the segment makes of it.
  const copies0 = targetCopies(target);
  const stridedXs =
    copies0 === null ? xs.filter((x) => ((x as Array).buffer as { contiguous?: boolean }).contiguous === false).length : 0;
  let carry: Value[] = [...init];
  const ys: Value[][] = placed ? [] : new globalThis.Array(p.length);
  const heldByYs = new Set<Value>();
  // Values the body may return without making them (inputs, its literals): never released here.
  const kept = literalValues(body.jaxpr, new Set<unknown>(ins));
  const fresh = (v: Value, inputs: readonly Value[]) => !inputs.includes(v) && !kept.has(v);
  counters.scanDepth++;
  try {
    for (let i = 0; i < p.length; i++) {
      const t = p.reverse ? p.length - 1 - i : i;
      // [length, ...rest] -> the view of row t: [...rest]
      const xt = xs.map((x) => reshape(sliceInDim(x, t, t + 1, 0), x.aval.shape.slice(1)));
      if (counters.scanDepth === 1) counters.scanCopies += stridedXs;
      const stepIns = [...consts, ...carry, ...xt];
      if (placed) {
        const places = new Map<number, OutputPlace>();
        stacked.forEach((st, k) => places.set(p.numCarry + k, { handle: st.buffer, offset: t * shapeSize(st.aval.shape.slice(1)) }));
        const outs = body.run(stepIns as Concrete[], bodyParams, places) as Value[];
        const next = outs.slice(0, p.numCarry);
        // Everything of this step but the next carry dies now (the ys are in the stacked arrays).
        const keep = new Set<Value>(next);
        for (const v of new Set<Value>([...outs, ...carry, ...xt])) if (!keep.has(v) && !kept.has(v)) hooks().release(v);
        carry = next;
        continue;
      }
      const outs = body.run(stepIns as Concrete[], bodyParams) as Value[];
      const next = outs.slice(0, p.numCarry);
      // The old carry dies unless the body passed it through (as the next carry or as a y) or an
      // earlier step's y is the same array (a body returning one value as both carry and y).
      for (const c of carry) if (!kept.has(c) && !outs.includes(c) && !heldByYs.has(c)) hooks().release(c);
      for (const y of outs.slice(p.numCarry)) heldByYs.add(y);
      for (const x of xt) if (!outs.includes(x)) hooks().release(x);
      carry = next;
      ys[t] = outs.slice(p.numCarry);
    }
  } finally {
    counters.scanDepth--;
  }
  if (copies0 !== null && counters.scanDepth === 0) counters.scanCopies += targetCopies(target)! - copies0;
  if (!placed) {
    for (let k = 0; k < nY; k++) {
      const parts = ys.map((y) => reshape(y[k]!, [1, ...y[k]!.aval.shape]));
      const out = concatenate(parts, 0);
      if (parts.length > 1) counters.scanCopies++;
      stacked.push(out as Array);
      // concatenate of one part (a scan of length 1) returns that part: it is the result, keep it.
      for (const part of parts) if (part !== out) hooks().release(part);
    }
    // After all stacking: one array may be several ys of a step (a body returning [c, n, n]).
    for (const y of heldByYs) if (fresh(y, carry)) hooks().release(y);
  }
  // Results must be fresh arrays (the caller releases them): a carry that is an input (passed through
  // by the body) gets a new Array object of its own. Not `reshape(c, sameShape)`: that returns `c`
  // itself, and the caller then released the argument as an intermediate (a disposed result).
  const outCarry = carry.map((c) => (kept.has(c) ? bind1(reshapeP, [c], { newSizes: [...c.aval.shape] }) : c));
  return [...outCarry, ...stacked];
}

/**
 * A while loop with a compiled predicate and body, driven from the host: each iteration runs the
 * predicate program, reads its scalar synchronously (the interpreter's contract, `readScalar`: on a
 * device that is only read asynchronously, WebGPU, it raises the same error as eager `whileLoop`),
 * then runs the body program. Operands are [condConsts..., bodyConsts..., carry...].
 */
function runWhile(p: WhileParams, cond: CompiledProgram, body: CompiledProgram, ins: readonly Value[]): Value[] {
  const cc = ins.slice(0, p.condNumConsts);
  const bc = ins.slice(p.condNumConsts, p.condNumConsts + p.bodyNumConsts);
  const init = ins.slice(p.condNumConsts + p.bodyNumConsts);
  const condParams = { name: "while_cond", donated: [], jaxpr: cond.jaxpr, numConsts: 0 } as JitParams;
  const bodyParams = { name: "while_body", donated: [], jaxpr: body.jaxpr, numConsts: 0 } as JitParams;
  // Values the programs may return without making them: never released here.
  const kept = literalValues(p.bodyJaxpr, literalValues(p.condJaxpr, new Set<unknown>(ins)));
  let carry: Value[] = [...init];
  for (;;) {
    const [pred] = cond.run([...cc, ...carry] as Concrete[], condParams);
    let go: number | boolean;
    try {
      go = readScalar("whileLoop", pred!);
    } finally {
      if (!kept.has(pred) && !carry.includes(pred!)) hooks().release(pred!);
    }
    if (!go) break;
    const next = body.run([...bc, ...carry] as Concrete[], bodyParams) as Value[];
    for (const c of new Set(carry)) if (!next.includes(c) && !kept.has(c)) hooks().release(c);
    carry = next;
  }
  // Fresh result objects (the caller releases them), as runScan.
  return carry.map((c) => (kept.has(c) ? bind1(reshapeP, [c], { newSizes: [...c.aval.shape] }) : c));
}

/** The array on `dev` (uncommitted arrays elsewhere are copied, as eager ops do). */
function onDevice(a: Array, dev: Device): Array {
  return a.device === dev ? a : a.copyTo(dev, "jit");
}

function compile(jaxpr: Jaxpr, device: Device, params: JitParams, copts: CompileOptions = {}): CompiledProgram {
  const target = jitTargetFor(device);
  if (!target) throw new ArgumentError(`jit: no compiler target for ${device.kind} devices`);
  const flat = flattenJaxpr(jaxpr);
  const donatedVars = new Set(flat.invars.filter((_, i) => i >= params.numConsts && params.donated[i - params.numConsts]));
  const { segments, literalInputs } = buildSegments(flat);
  const debug = debugLevel();
  const compiled: CompiledSegment[] = segments.map((s): CompiledSegment => {
    if (s.kind === "bind") {
      const sp = s.eqn.params as ScanParams;
      if (s.eqn.prim.name === "while") {
        const wp = s.eqn.params as WhileParams;
        try {
          const sub = (j: Jaxpr) => compile(j, device, { name: "while", donated: [], jaxpr: j, numConsts: 0 } as JitParams);
          return { kind: "while", eqn: s.eqn, cond: sub(wp.condJaxpr), body: sub(wp.bodyJaxpr) };
        } catch {
          return s; // not compilable: the loop runs through bind
        }
      }
      if (s.eqn.prim.name === "scan" && sp.length > 0) {
        try {
          const body = compile(sp.jaxpr, device, { name: "scan_body", donated: [], jaxpr: sp.jaxpr, numConsts: 0 } as JitParams, {
            dynamicOffsets: isPlacing(target),
          });
          return { kind: "scan", eqn: s.eqn, body };
        } catch {
          return s; // the body is not compilable: the scan runs through bind
        }
      }
      return s;
    }
    // The planner is told which inputs are donated, so it schedules their in-place writers after the
    // inputs' last readers and keeps such writers apart from kernels that read the input by a view.
    const donated = s.inVars.map((v) => donatedVars.has(v));
    const fopts = target.fusionOptions(device);
    const plan = planFusion(s.graph, { ...fopts, donated });
    const mem = planMemory(plan, (d) => target.bytesPerElement(d), 16, { donated, inPlaceSafe: fopts.inPlaceSafe });
    const exec =
      copts.dynamicOffsets && isPlacing(target)
        ? target.prepare(device, plan, mem, donated, { dynamicOffsets: true })
        : target.prepare(device, plan, mem, donated);
    return { ...s, exec, desc: describePlan(plan), donations: mem.donations.length };
  });
  const program = new CompiledProgram(flat, device, target, compiled, literalInputs, copts.dynamicOffsets === true && isPlacing(target));
  if (debug > 0) {
    const log = (s: string) => console.log(`[webgrad jit] ${s}`);
    log(`compiled for ${device.id}:\n${printJaxpr(flat)}`);
    for (const s of compiled) {
      if (s.kind === "scan") {
        log(`scan of length ${(s.eqn.params as ScanParams).length}: its body is compiled (above) and looped`);
        continue;
      }
      if (s.kind === "while") {
        log(`while: its predicate and body are compiled (above), the host reads the predicate each iteration`);
        continue;
      }
      if (s.kind === "bind") {
        log(`runs ${s.eqn.prim.name} through bind (not compiled)`);
        continue;
      }
      log(`kernel graph:\n${s.graph.toString()}`);
      log(`fused kernels (${s.exec.stats.kernels}, ${s.exec.stats.dispatches} dispatches, ` +
        `peak ${s.exec.stats.peakBytes} B of ${s.exec.stats.intermediateBytes} B intermediates):\n${s.desc}`);
      s.exec.sources.forEach((src, i) => log(`${device.kind === "webgpu" ? "WGSL" : "source"} of kernel ${i}:\n${src}`));
    }
  }
  return program;
}

/** A backend-neutral fusion analysis of a jaxpr (tests, benchmarks): kernels and memory plan. */
export interface PlanSummary {
  readonly kernels: number;
  /** Kernels by kind. */
  readonly byKind: Readonly<Record<"map" | "reduce" | "dot" | "opaque", number>>;
  readonly boundEqns: number;
  readonly peakBytes: number;
  readonly intermediateBytes: number;
  readonly plans: readonly FusionPlan[];
  readonly text: string;
}

export function planJaxpr(jaxpr: Jaxpr, opts: FusionOptions = {}): PlanSummary {
  const { segments } = buildSegments(flattenJaxpr(jaxpr));
  const plans: FusionPlan[] = [];
  let peakBytes = 0;
  let intermediateBytes = 0;
  for (const s of segments) {
    if (s.kind !== "graph") continue;
    const plan = planFusion(s.graph, { maxBuffers: 14, ...opts });
    const mem = planMemory(plan, () => 4);
    plans.push(plan);
    peakBytes += mem.peakBytes;
    intermediateBytes += mem.intermediateBytes;
  }
  const byKind = { map: 0, reduce: 0, dot: 0, opaque: 0 };
  for (const p of plans) for (const k of p.kernels) byKind[k.kind]++;
  return {
    kernels: plans.reduce((a, p) => a + p.kernels.length, 0),
    byKind,
    boundEqns: segments.length - plans.length,
    peakBytes,
    intermediateBytes,
    plans,
    text: plans.map(describePlan).join("\n--\n"),
  };
}

const cache = new WeakMap<Jaxpr, Map<string, CompiledProgram | Error>>();
let last: CompiledProgram | null = null;
let lastCopies = 0;

/** The compiled program of a jaxpr on a device (compiling it on first use); null when interpreted. */
export function compiledFor(jaxpr: Jaxpr, device: Device, params: JitParams): CompiledProgram | null {
  if (!jitTargetFor(device)) return null;
  let m = cache.get(jaxpr);
  if (!m) cache.set(jaxpr, (m = new Map()));
  const key = `${device.id}|${params.numConsts}|${params.donated.map((d) => (d ? 1 : 0)).join("")}`;
  let p = m.get(key);
  if (p === undefined) {
    try {
      p = compile(jaxpr, device, params);
    } catch (e) {
      // Never a wrong answer: anything the compiler cannot handle runs op by op.
      p = e as Error;
      if (debugLevel() > 0) console.log(`[webgrad jit] falling back to the interpreter: ${(e as Error).stack ?? e}`);
    }
    m.set(key, p);
  }
  return p instanceof Error ? null : p;
}

/** The device a jit call runs on: the committed arguments' device, else the first argument's. */
function callDevice(args: readonly Concrete[]): Device {
  const arrays = args.filter((a): a is Array => a instanceof Array);
  return arrays.find((a) => a.committed)?.device ?? arrays[0]?.device ?? getDefaultDevice();
}

/** The compiling JitExecutor: WebGPU arrays run compiled, others interpreted. */
export const jitCompilerExecutor: JitExecutor = (jaxpr, args, params) => {
  const program = compiledFor(jaxpr, callDevice(args), params);
  if (!program) return interpretJaxpr(jaxpr, args, params);
  last = program;
  // Nested compiled calls (a jit inside a while body) count into their own call, then into ours.
  const outer = counters.scanCopies;
  counters.scanCopies = 0;
  try {
    return program.run(args, params);
  } finally {
    lastCopies = counters.scanCopies;
    counters.scanCopies += outer;
  }
};

/**
 * Installs the jit compiler as jit's executor (idempotent), with the WebGPU target. Other targets
 * (a CPU Wasm code generator) register with `registerJitTarget`.
 */
export function installJitCompiler(): void {
  if (!jitTargetFor({ kind: "webgpu" } as Device)) registerJitTarget(webGpuJitTarget);
  setJitExecutor(jitCompilerExecutor);
}

/** Restores the interpreter. */
export function uninstallJitCompiler(): void {
  setJitExecutor(null);
}

/** Forgets the last call's stats (tests: a null afterwards means the call was interpreted). */
export function resetJitStats(): void {
  last = null;
}

/** Stats of the program the last compiled jit call ran. */
export function lastJitStats(): JitProgramStats | null {
  if (!last) return null;
  if (lastCopies === 0) return last.stats; // the same object call after call (tests compare identity)
  let m = statsWithCopies.get(last);
  if (m?.scanCopies !== lastCopies) statsWithCopies.set(last, (m = { ...last.stats, scanCopies: lastCopies }));
  return m;
}
const statsWithCopies = new WeakMap<CompiledProgram, JitProgramStats>();


/**
 * @file The jit compiler: `installJitCompiler()` replaces jit's interpreter (src/autodiff/jit.ts) with
 * an executor that compiles each jitted jaxpr once per device and runs the compiled program.
 *
 * Pipeline: inline nested calls and split at higher-order equations (segments.ts) -> record kernel
 * graphs from the primitives' `lower` rules (graph.ts) -> fuse (fusion.ts) -> static memory plan
 * (memory-plan.ts) -> a backend target generates and runs the kernels. Graph, fusion and memory plan are
 * backend-neutral; targets are per backend (WebGPU: src/ops/backend/webgpu/compile/). Arrays on a
 * device without a target (the CPU today) run through the interpreter.
 *
 * Debugging: one environment variable. `WEBGRAD_DEBUG=1` prints, per compiled program, the jaxpr, the
 * kernel graph, the fused kernels (with the memory plan's peak) and the generated WGSL, and why a
 * program fell back to the interpreter; `WEBGRAD_DEBUG=2` also makes `profileJit(f, ...args)` print
 * per-kernel times (one submit per kernel, timed on the host: the adapter's timestamp queries are not
 * requested by initWebGpu). `lastJitStats()` returns the counters of the last compiled call.
 */
import { bind, bind1, Concrete, hooks, Value } from "../../autodiff/core.js";
import { interpretJaxpr, JitExecutor, JitParams, makeJaxpr, setJitExecutor } from "../../autodiff/jit.js";
import { hoistConsts } from "../../autodiff/call.js";
import { ArgumentError } from "../../autodiff/errors.js";
import * as tree from "../../autodiff/tree.js";
import { Atom, Jaxpr, JaxprEqn, Literal, printJaxpr, Var } from "../../autodiff/jaxpr.js";
import type { ScanParams } from "../control-flow/scan.js";
import { concatenate, reshape, reshapeP, sliceInDim } from "../lax/structural.js";
import { Array, Device, getDefaultDevice, wrapBuffer } from "../array.js";
import { webGpuJitTarget } from "../backend/webgpu/compile/target.js";
import { jitTargetFor, registerJitTarget, type JitTarget, type SegmentStats, type TargetSegment } from "./target.js";
import { describePlan, planFusion, type FusionOptions, type FusionPlan } from "./fusion.js";
import { planMemory } from "./memory-plan.js";
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
}

type CompiledSegment =
  | (Segment & { kind: "bind" })
  | (Segment & { kind: "graph"; exec: TargetSegment; desc: string })
  /** A scan whose body is compiled: a loop of the body's kernels, all in the call's command buffer. */
  | { kind: "scan"; eqn: JaxprEqn; body: CompiledProgram };

/** A jaxpr compiled for one device. */
export class CompiledProgram {
  readonly stats: JitProgramStats;
  constructor(
    readonly jaxpr: Jaxpr,
    readonly device: Device,
    readonly target: JitTarget,
    readonly segments: readonly CompiledSegment[],
    readonly literalInputs: ReadonlyMap<Var, Literal>,
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
    };
  }

  run(args: readonly Concrete[], params: JitParams): Concrete[] {
    // Every kernel of the call (all segments, every scan iteration) goes into one command buffer.
    return this.target.call(this.device, () => this.runInner(args, params));
  }

  private runInner(args: readonly Concrete[], params: JitParams): Concrete[] {
    const dev = this.device;
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
        const outs = bind(s.eqn.prim, s.eqn.inputs.map(read), s.eqn.params);
        s.eqn.outBinders.forEach((v, k) => env.set(v, outs[k]!));
      } else if (s.kind === "scan") {
        const outs = runScan(s.eqn.params as ScanParams, s.body, s.eqn.inputs.map(read));
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
        const outs = s.exec.run(handles, { donated });
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
    return this.jaxpr.outs.map(read) as Concrete[];
  }
}

/** Per-kernel timings of one call (see `profileJit`). */
export interface JitProfile {
  /** One entry per kernel: its description (as WEBGRAD_DEBUG prints it) and wall-clock ms. */
  readonly kernels: readonly { readonly kernel: string; readonly ms: number }[];
  readonly totalMs: number;
}

/**
 * Runs `f` compiled on the arguments' (WebGPU) device one kernel per submit, waiting for each, and
 * returns the per-kernel times (wall clock: each includes a submit's latency, ~0.1 ms on lavapipe).
 * The outputs are released. For WEBGRAD_DEBUG=2 output and benchmarks.
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
  const env = new Map<Var, Value>();
  jaxpr.invars.forEach((v, i) => env.set(v, leaves[i]!));
  const read = (a: Atom): Value => (a instanceof Literal ? a.val : (env.get(a) ?? program.literalInputs.get(a)!.val));
  const kernels: { kernel: string; ms: number }[] = [];
  const made: Value[] = [];
  for (const s of program.segments) {
    if (s.kind === "bind" || s.kind === "scan") {
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
  const prof = { kernels, totalMs: kernels.reduce((a, k) => a + k.ms, 0) };
  if (debugLevel() >= 2) {
    console.log(`[webgrad jit] per-kernel times (ms, one submit each):\n${kernels.map((k) => `  ${k.ms.toFixed(3).padStart(9)}  ${k.kernel}`).join("\n")}\n  total ${prof.totalMs.toFixed(3)} ms`);
  }
  return prof;
}

/**
 * A scan with a compiled body: `length` iterations of the body's kernels, encoded back to back (no
 * read, no wait between iterations); xs are sliced per step and ys stacked at the end.
 */
function runScan(p: ScanParams, body: CompiledProgram, ins: readonly Value[]): Value[] {
  const nc = p.numConsts;
  const consts = ins.slice(0, nc);
  const init = ins.slice(nc, nc + p.numCarry);
  const xs = ins.slice(nc + p.numCarry);
  const bodyParams = { name: "scan_body", donated: [], jaxpr: body.jaxpr, numConsts: 0 } as JitParams;
  let carry: Value[] = [...init];
  const ys: Value[][] = new globalThis.Array(p.length);
  const heldByYs = new Set<Value>();
  const fresh = (v: Value, inputs: readonly Value[]) => !inputs.includes(v) && !ins.includes(v);
  for (let i = 0; i < p.length; i++) {
    const t = p.reverse ? p.length - 1 - i : i;
    const xt = xs.map((x) => reshape(sliceInDim(x, t, t + 1, 0), x.aval.shape.slice(1)));
    const stepIns = [...consts, ...carry, ...xt];
    const outs = body.run(stepIns as Concrete[], bodyParams) as Value[];
    const next = outs.slice(0, p.numCarry);
    // The old carry dies unless the body passed it through (as the next carry or as a y) or an
    // earlier step's y is the same array (a body returning one value as both carry and y).
    for (const c of carry) if (!init.includes(c) && !outs.includes(c) && !heldByYs.has(c)) hooks().release(c);
    for (const y of outs.slice(p.numCarry)) heldByYs.add(y);
    for (const x of xt) if (!outs.includes(x)) hooks().release(x);
    carry = next;
    ys[t] = outs.slice(p.numCarry);
  }
  const nY = body.jaxpr.outs.length - p.numCarry;
  const stacked: Value[] = [];
  for (let k = 0; k < nY; k++) {
    const parts = ys.map((y) => reshape(y[k]!, [1, ...y[k]!.aval.shape]));
    const out = concatenate(parts, 0);
    stacked.push(out);
    // concatenate of one part (a scan of length 1) returns that part: it is the result, keep it.
    for (const part of parts) if (part !== out) hooks().release(part);
  }
  // After all stacking: one array may be several ys of a step (a body returning [c, n, n]).
  for (const y of heldByYs) if (fresh(y, carry)) hooks().release(y);
  // Results must be fresh arrays (the caller releases them): a carry that is an input (passed through
  // by the body) gets a new Array object of its own. Not `reshape(c, sameShape)`: that returns `c`
  // itself, and the caller then released the argument as an intermediate (a disposed result).
  const outCarry = carry.map((c) => (ins.includes(c) ? bind1(reshapeP, [c], { newSizes: [...c.aval.shape] }) : c));
  return [...outCarry, ...stacked];
}

/** The array on `dev` (uncommitted arrays elsewhere are copied, as eager ops do). */
function onDevice(a: Array, dev: Device): Array {
  return a.device === dev ? a : a.copyTo(dev, "jit");
}

function compile(jaxpr: Jaxpr, device: Device, params: JitParams): CompiledProgram {
  const target = jitTargetFor(device);
  if (!target) throw new ArgumentError(`jit: no compiler target for ${device.kind} devices`);
  const flat = flattenJaxpr(jaxpr);
  const donatedVars = new Set(flat.invars.filter((_, i) => i >= params.numConsts && params.donated[i - params.numConsts]));
  const { segments, literalInputs } = buildSegments(flat);
  const debug = debugLevel();
  const compiled: CompiledSegment[] = segments.map((s): CompiledSegment => {
    if (s.kind === "bind") {
      const sp = s.eqn.params as ScanParams;
      if (s.eqn.prim.name === "scan" && sp.length > 0) {
        try {
          const body = compile(sp.jaxpr, device, { name: "scan_body", donated: [], jaxpr: sp.jaxpr, numConsts: 0 } as JitParams);
          return { kind: "scan", eqn: s.eqn, body };
        } catch {
          return s; // the body is not compilable: the scan runs through bind
        }
      }
      return s;
    }
    const plan = planFusion(s.graph, target.fusionOptions(device));
    const mem = planMemory(plan, (d) => target.bytesPerElement(d));
    const exec = target.prepare(
      device,
      plan,
      mem,
      s.inVars.map((v) => donatedVars.has(v)),
    );
    return { ...s, exec, desc: describePlan(plan) };
  });
  const program = new CompiledProgram(flat, device, target, compiled, literalInputs);
  if (debug > 0) {
    const log = (s: string) => console.log(`[webgrad jit] ${s}`);
    log(`compiled for ${device.id}:\n${printJaxpr(flat)}`);
    for (const s of compiled) {
      if (s.kind === "scan") {
        log(`scan of length ${(s.eqn.params as ScanParams).length}: its body is compiled (above) and looped`);
        continue;
      }
      if (s.kind === "bind") {
        log(`runs ${s.eqn.prim.name} through bind (not compiled)`);
        continue;
      }
      log(`kernel graph:\n${s.graph.toString()}`);
      log(`fused kernels (${s.exec.stats.kernels}, ${s.exec.stats.dispatches} dispatches, ` +
        `peak ${s.exec.stats.peakBytes} B of ${s.exec.stats.intermediateBytes} B intermediates):\n${s.desc}`);
      s.exec.sources.forEach((src, i) => log(`WGSL of kernel ${i}:\n${src}`));
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
  return program.run(args, params);
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
  return last?.stats ?? null;
}


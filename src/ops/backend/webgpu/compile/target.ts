/// <reference types="@webgpu/types" />
/**
 * @file The WebGPU target of the jit compiler: turns a fused plan (src/ops/compile/fusion.ts) and its
 * memory plan into generated kernels (codegen.ts) and runs them: intermediates live in slot buffers
 * kept across calls, outputs get fresh buffers (or donated input buffers), every dispatch of a call is
 * encoded into one command buffer and submitted once (`Runtime.encodeAll`). Kernel ops the compiler
 * does not generate (gather, sort, ...) run through the backend itself, in the same command buffer.
 * Scan bodies are prepared with `dynamicOffsets`: inputs are read at their buffer offset and outputs
 * written where the caller places them (xs slices and stacked ys, no copies); profiled calls time
 * each kernel with timestamp queries (`profileCall`).
 */
import { shapeSize, type DType } from "../../../../autodiff/aval.js";
import { BackendError } from "../../../../autodiff/errors.js";
import { describePlan, type FusionPlan } from "../../../compile/fusion.js";
import { donationMaps, inPlaceSafe, kernelWrites, planDonation } from "../../../compile/memory-plan.js";
import type { JitTarget, SegmentStats, TargetSegment } from "../../../compile/target.js";
import type { Device } from "../../../array.js";
import { applyViewOp, type Graph, type ViewOp } from "../../../compile/graph.js";
import type { MemoryPlan } from "../../../compile/memory-plan.js";
import type { WebGpuBackend } from "../backend.js";
import { GpuHandle, GpuStorage, wgslType } from "../handle.js";
import { materialize } from "../kernels/map.js";
import type { Kernel as RtKernel } from "../runtime.js";
import { DYN0, dotKernel, GeneratedKernel, mapKernel, reduceKernel, type DynamicOffsets } from "./codegen.js";

/** FNV-1a over the source, as a short cache key (collisions are detected, never trusted). */
function hashSource(s: string): string {
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ c, 0x5bd1e995) >>> 0;
  }
  return `${h1.toString(16)}${h2.toString(16)}:${s.length}`;
}
const sourcesByKey = new Map<string, string>();

function rtKernel(source: string): RtKernel {
  const key = `jit:${hashSource(source)}`;
  const prev = sourcesByKey.get(key);
  if (prev !== undefined && prev !== source) throw new BackendError(`jit: kernel key collision for ${key}`);
  sourcesByKey.set(key, source);
  return { key, source: () => source };
}

type Step =
  | {
      readonly kind: "gen";
      readonly gen: GeneratedKernel;
      readonly rt: RtKernel;
      readonly index: number;
      /** Donated (input node, output node) pairs this map kernel can run in place. */
      readonly inPlace?: readonly (readonly [number, number])[];
      /** In-place variants by the set of inputs really reused. */
      readonly variants?: Map<string, { readonly gen: GeneratedKernel; readonly rt: RtKernel }>;
      /** Dynamic-offset segments: the variant for run-time offsets that are not all multiples of 4. */
      readonly unaligned?: { readonly gen: GeneratedKernel; readonly rt: RtKernel };
    }
  | { readonly kind: "opaque"; readonly index: number; readonly node: number; readonly inputs: readonly { node: number; views: readonly ViewOp[] }[] };


/** Run-time options of one call. */
export interface RunOptions {
  /** Per graph input: the caller allows its buffer to be reused for an output. */
  readonly donated?: readonly boolean[];
  /** Called per kernel step with its index (debug timings). */
  readonly afterStep?: (i: number) => void;
  /**
   * Per graph output: write it into `handle`'s storage at element `handle.offset + offset` (contiguous)
   * instead of a fresh buffer; the returned handle is then a view there. Only segments prepared with
   * `dynamicOffsets` write in place, and not the results of backend-run ops: the caller checks and
   * moves those (`webGpuJitTarget.placeInto`). Scan ys use it.
   */
  readonly outputs?: readonly (OutputPlace | null | undefined)[];
}

/** Where an output goes (see RunOptions.outputs). */
export interface OutputPlace {
  readonly handle: GpuHandle;
  readonly offset: number;
}

/** Options of `prepare` beyond the JitTarget interface (src/ops/compile/index.ts passes them). */
export interface PrepareOptions {
  /**
   * Inputs and outputs take their base offset at run time (no materialising copy of an offset input,
   * outputs placed into a larger buffer): the compiled bodies of scans. Donation is off.
   */
  readonly dynamicOffsets?: boolean;
}

export class WebGpuSegment implements TargetSegment {
  readonly steps: Step[];
  private readonly slots: (GpuStorage | null)[];
  private readonly constants = new Map<number, GpuStorage>();
  readonly sources: string[] = [];
  readonly stats: SegmentStats;

  /** Output node -> the graph input whose (donated) buffer it reuses when possible. */
  readonly aliases = new Map<number, { readonly input: number; readonly node: number }>();
  /** Nodes written by generated kernels (placeable outputs). */
  private readonly generatedWrites: ReadonlySet<number>;
  /** Per kernel: its line of `describePlan` (profile labels). */
  private readonly labels: string[];
  /** Input and output nodes with run-time offsets (PrepareOptions.dynamicOffsets), else null. */
  readonly dynamic: ReadonlySet<number> | null;
  /** Dynamic segments: kernels regenerated to read an input through an output's binding (same buffer). */
  private readonly aliasVariants = new Map<string, { readonly gen: GeneratedKernel; readonly rt: RtKernel }>();
  private readonly regen: (index: number, alias: ReadonlyMap<number, number>, aligned4: boolean) => GeneratedKernel;

  constructor(
    readonly backend: WebGpuBackend,
    readonly plan: FusionPlan,
    readonly mem: MemoryPlan,
    donated: readonly boolean[] = [],
    prepOpts: PrepareOptions = {},
  ) {
    const g = plan.graph;
    this.labels = describePlan(plan).split("\n");
    this.generatedWrites = new Set(plan.kernels.flatMap(kernelWrites));
    this.dynamic = prepOpts.dynamicOffsets
      ? new Set([...g.nodes.filter((n) => n.op.kind === "input").map((n) => n.id), ...g.outputs])
      : null;
    if (this.dynamic) donated = [];
    const dyn: DynamicOffsets | undefined = this.dynamic ? { nodes: this.dynamic, aligned4: true } : undefined;
    const dtypeOf = (n: number): DType => g.node(n).dtype;
    const lim = {
      maxWorkgroupsPerDimension: backend.rt.limits.maxComputeWorkgroupsPerDimension,
      maxWorkgroupStorageSize: backend.rt.limits.maxComputeWorkgroupStorageSize,
    };
    const maxBuffers = backend.rt.limits.maxStorageBuffersPerShaderStage;
    const inPlace = this.planDonation(donated);
    this.regen = (index, alias, aligned4) => {
      const k = plan.kernels[index]!;
      const d = { nodes: this.dynamic ?? new Set<number>(), aligned4 };
      if (k.kind === "map") return mapKernel(k, dtypeOf, lim, alias, d);
      if (k.kind === "reduce") return reduceKernel(k, dtypeOf, lim, alias, d);
      if (k.kind === "dot") return dotKernel(k, dtypeOf, lim, alias, d);
      throw new BackendError("jit: regenerating a backend-run op (webgrad bug)");
    };
    this.steps = plan.kernels.map((k, index): Step => {
      if (k.kind === "opaque") return { kind: "opaque", index, node: k.node, inputs: k.inputs };
      const make = (d: DynamicOffsets | undefined) =>
        k.kind === "map" ? mapKernel(k, dtypeOf, lim, undefined, d) : k.kind === "reduce" ? reduceKernel(k, dtypeOf, lim, undefined, d) : dotKernel(k, dtypeOf, lim, undefined, d);
      const gen = make(dyn);
      if (gen.reads.some((r) => gen.writes.includes(r))) {
        throw new BackendError(`jit: kernel ${index} would read and write the same value (webgrad bug); not compiled`);
      }
      if (gen.reads.length + gen.writes.length + 1 > maxBuffers) {
        throw new BackendError(
          `jit: a fused kernel needs ${gen.reads.length + gen.writes.length + 1} storage buffers, the adapter allows ${maxBuffers}`,
        );
      }
      this.sources.push(gen.source);
      const ip = inPlace.get(index);
      if (ip) return { kind: "gen", gen, rt: rtKernel(gen.source), index, inPlace: ip, variants: new Map() };
      if (dyn) {
        const u = make({ ...dyn, aligned4: false });
        if (u.source !== gen.source) return { kind: "gen", gen, rt: rtKernel(gen.source), index, unaligned: { gen: u, rt: rtKernel(u.source) } };
      }
      return { kind: "gen", gen, rt: rtKernel(gen.source), index };
    });
    this.slots = mem.slotBytes.map(() => null);
    let dispatches = 0;
    for (const s of this.steps) dispatches += s.kind === "gen" ? s.gen.dispatches.length : 1;
    const outputBytes = g.outputs.reduce((a, o) => a + g.node(o).shape.reduce((x, y) => x * y, 1) * 4, 0);
    this.stats = {
      kernels: this.steps.length,
      dispatches,
      peakBytes: mem.peakBytes,
      intermediateBytes: mem.intermediateBytes,
      outputBytes,
    };
  }

  /**
   * Pairs donated inputs with outputs of the same type: an output written after the input's last read
   * reuses its buffer; one written by the kernel making that last read only when that kernel is a map
   * kernel reading the input element by element (then it runs in place). Returns the in-place pairs
   * per kernel index (input node -> output node).
   */
  private planDonation(donated: readonly boolean[]): Map<number, [number, number][]> {
    const { inPlace, aliases } = donationMaps(planDonation(this.plan, this.mem.lastUse, donated, inPlaceSafe));
    for (const [o, a] of aliases) this.aliases.set(o, a);
    return inPlace;
  }

  private slot(i: number): GpuStorage {
    let s = this.slots[i];
    if (!s) {
      const bytes = this.mem.slotBytes[i]!;
      s = new GpuStorage(this.backend.rt.alloc("jit", bytes), bytes);
      this.slots[i] = s;
    }
    return s;
  }

  private constant(node: number): GpuStorage {
    let s = this.constants.get(node);
    if (!s) {
      const n = this.plan.graph.node(node);
      if (n.op.kind !== "constant") throw new BackendError("jit: not a constant node");
      const h = this.backend.constant(n.op.data, { shape: n.shape, dtype: n.dtype });
      s = h.storage;
      this.constants.set(node, s);
    }
    return s;
  }

  /** Runs the segment on input handles (any layout); returns output handles (fresh, caller-owned). */
  run(inputs: readonly unknown[], opts: RunOptions = {}): GpuHandle[] {
    this.backend.rt.check();
    return this.backend.rt.encodeAll(() => {
      const it = this.execute(inputs as readonly GpuHandle[], opts);
      for (;;) {
        const r = it.next();
        if (r.done) return r.value;
      }
    });
  }

  /**
   * Runs the segment one kernel per submit, waiting for each (WEBGRAD_DEBUG timings): wall-clock
   * milliseconds per kernel, submit latency included. Donation is not applied.
   */
  async profile(inputs: readonly unknown[]): Promise<{ outputs: GpuHandle[]; ms: number[] }> {
    const rt = this.backend.rt;
    await rt.sync();
    const it = this.execute(inputs as readonly GpuHandle[], {});
    const ms: number[] = [];
    for (;;) {
      const t0 = performance.now();
      const r = it.next();
      await rt.sync();
      if (r.done) return { outputs: r.value, ms };
      ms.push(performance.now() - t0);
    }
  }

  /** Encodes the kernels, yielding after each (the caller decides when work is submitted). */
  private *execute(inputs: readonly GpuHandle[], opts: RunOptions): Generator<number, GpuHandle[]> {
    const rt = this.backend.rt;
    const g: Graph = this.plan.graph;
    {
      const temps: GpuHandle[] = [];
      const handles = new Map<number, GpuHandle>();
      // Inputs: contiguous from offset 0 (the layout every kernel was generated for).
      g.nodes.forEach((n) => {
        if (n.op.kind !== "input") return;
        let h = inputs[n.op.index]!;
        if (!h.contiguous || (h.offset !== 0 && !this.dynamic)) {
          h = materialize(rt, h);
          copies.n++;
          temps.push(h);
        }
        handles.set(n.id, h);
      });
      const outputs = new Set(g.outputs);
      const outHandles = new Map<number, GpuHandle>();
      // Run-time base offsets (dynamic segments): inputs' offsets, placed outputs' offsets.
      const dynOffset = new Map<number, number>();
      const places = new Map<number, OutputPlace>();
      g.outputs.forEach((o, k) => {
        const p = opts.outputs?.[k];
        if (p && !places.has(o)) places.set(o, p);
      });
      if (this.dynamic) {
        for (const [node, h] of handles) dynOffset.set(node, h.offset);
        for (const [o, p] of places) {
          // Only generated kernels write in place; a backend-run op's result is moved by the caller.
          if (!this.generatedWrites.has(o)) continue;
          const n = g.node(o);
          p.handle.storage.refs++;
          outHandles.set(o, new GpuHandle(p.handle.storage, n.dtype, n.shape, undefined, p.handle.offset + p.offset, false));
          dynOffset.set(o, p.handle.offset + p.offset);
        }
      }
      let aligned = true;
      for (const v of dynOffset.values()) if (v % 4 !== 0) aligned = false;
      const opaqueOut = new Map<number, GpuHandle>();
      const bufferOf = (node: number): GPUBuffer => {
        const h = handles.get(node) ?? outHandles.get(node) ?? opaqueOut.get(node);
        if (h) return h.buffer;
        const n = g.node(node);
        if (n.op.kind === "constant") return this.constant(node).buffer!;
        const s = this.mem.slotOf.get(node);
        if (s === undefined) throw new BackendError(`jit: no buffer for node %${node}`);
        return this.slot(s).buffer!;
      };
      const handleOf = (node: number): GpuHandle => {
        const h = handles.get(node) ?? outHandles.get(node) ?? opaqueOut.get(node);
        if (h) return h;
        const n = g.node(node);
        const storage = n.op.kind === "constant" ? this.constant(node) : this.slot(this.mem.slotOf.get(node)!);
        return new GpuHandle(storage, n.dtype, n.shape, undefined, 0, false);
      };
      const lastUse = this.mem.lastUse;
      // Donated inputs whose buffer can really be taken over (nobody else holds it).
      const reused = new Set<number>();
      const claimed = new Set<GpuStorage>();
      for (const [o, { input, node }] of this.aliases) {
        const h = handles.get(node)!;
        const n = g.node(o);
        const ok =
          opts.donated?.[input] === true &&
          h === inputs[input] &&
          h.owned &&
          !h.released &&
          h.contiguous &&
          h.offset === 0 &&
          h.storage.refs === 1 &&
          h.storage.bytes === shapeSize(n.shape) * 4 &&
          !claimed.has(h.storage);
        if (!ok) continue;
        claimed.add(h.storage);
        h.storage.refs++;
        outHandles.set(o, new GpuHandle(h.storage, n.dtype, n.shape));
        reused.add(node);
      }
      try {
        for (const step of this.steps) {
          // A profiled call (timestamp queries): this step's passes are timed as its kernel.
          if (rt.profilingActive) rt.markKernel(this.labels[step.index] ?? `k${step.index}`);
          if (step.kind === "gen") {
            let gen = step.gen;
            let kernel = step.rt;
            if (!aligned && step.unaligned) {
              gen = step.unaligned.gen;
              kernel = step.unaligned.rt;
            }
            for (const w of gen.writes) {
              if (outputs.has(w) && !outHandles.has(w)) {
                const n = g.node(w);
                const size = shapeSize(n.shape);
                outHandles.set(w, new GpuHandle(new GpuStorage(rt.alloc("jit", Math.max(size * 4, 16)), size * 4), n.dtype, n.shape));
              }
            }
            if (this.dynamic) {
              // A dispatch may not read a buffer through one binding and write it through another
              // (a scan carry that is also a y lives in the stacked ys the step writes): such an input
              // is read through the output's read_write binding (disjoint regions: no race), or,
              // where that cannot be (a matmul operand, another type), copied first.
              const wb = gen.writes.map(bufferOf);
              const clash = gen.reads.filter((r) => wb.includes(bufferOf(r)));
              if (clash.length > 0) {
                const k = this.plan.kernels[step.index]!;
                const alias = new Map<number, number>();
                for (const r of clash) {
                  const w = wb.indexOf(bufferOf(r));
                  const operand = k.kind === "dot" && (k.lhs.node === r || k.rhs.node === r);
                  if (!operand && wgslType(g.node(r).dtype) === wgslType(g.node(gen.writes[w]!).dtype)) alias.set(r, w);
                  else {
                    const m = materialize(rt, handleOf(r));
                    copies.n++;
                    temps.push(m);
                    handles.set(r, m);
                    dynOffset.set(r, 0);
                  }
                }
                if (alias.size > 0) {
                  const key = `${step.index}|${aligned ? 1 : 0}|${[...alias].map(([r, w]) => `${r}>${w}`).join(",")}`;
                  let v = this.aliasVariants.get(key);
                  if (!v) {
                    const g2 = this.regen(step.index, alias, aligned);
                    v = { gen: g2, rt: rtKernel(g2.source) };
                    this.aliasVariants.set(key, v);
                  }
                  gen = v.gen;
                  kernel = v.rt;
                }
              }
            }
            const pairs = step.inPlace?.filter(([i]) => reused.has(i)) ?? [];
            if (pairs.length > 0) {
              const key = pairs.map(([i]) => i).join(",");
              let v = step.variants!.get(key);
              if (!v) {
                const k = this.plan.kernels[step.index]!;
                const writes = kernelWrites(k);
                const alias = new Map(pairs.map(([i, o]) => [i, writes.indexOf(o)] as [number, number]));
                const dt = (n: number) => g.node(n).dtype;
                const lim = {
                  maxWorkgroupsPerDimension: rt.limits.maxComputeWorkgroupsPerDimension,
                  maxWorkgroupStorageSize: rt.limits.maxComputeWorkgroupStorageSize,
                };
                const g2 =
                  k.kind === "map"
                    ? mapKernel(k, dt, lim, alias)
                    : k.kind === "reduce"
                      ? reduceKernel(k, dt, lim, alias)
                      : k.kind === "dot"
                        ? dotKernel(k, dt, lim, alias)
                        : null;
                if (!g2) throw new BackendError("jit: in-place donation of a backend-run op (webgrad bug)");
                v = { gen: g2, rt: rtKernel(g2.source) };
                step.variants!.set(key, v);
              }
              gen = v.gen;
              kernel = v.rt;
            }
            const buffers = [...gen.reads.map(bufferOf), ...gen.writes.map(bufferOf)];
            // A buffer written by a dispatch must not be bound twice in it (WebGPU rejects it, and
            // it would mean the memory plan shared a live buffer): never encode such a dispatch.
            for (let w = gen.reads.length; w < buffers.length; w++) {
              if (buffers.indexOf(buffers[w]!) !== w) {
                throw new BackendError(`jit: kernel ${step.index} would write a buffer it also binds (webgrad bug)`);
              }
            }
            if (gen.dynamic.length > 0) {
              const offs = gen.dynamic.map((n) => dynOffset.get(n) ?? 0);
              for (const d of gen.dispatches) {
                const params = [...d.params];
                while (params.length < DYN0) params.push(0);
                rt.dispatch(kernel, [...params, ...offs], buffers, d.grid);
              }
            } else for (const d of gen.dispatches) rt.dispatch(kernel, d.params, buffers, d.grid);
          } else {
            const node = g.node(step.node);
            if (node.op.kind !== "opaque") throw new BackendError("jit: not an opaque node");
            const views: GpuHandle[] = [];
            const ins = step.inputs.map(({ node: src, views: vs }) => {
              let h = handleOf(src);
              for (const v of vs) {
                h = applyViewOp(this.backend, h, v);
                views.push(h);
              }
              return h;
            });
            const outs = node.op.run(this.backend, ins);
            for (const v of views) this.backend.release(v);
            // Results are read through proj nodes.
            g.nodes.forEach((p) => {
              if (p.op.kind === "proj" && p.inputs[0] === step.node) opaqueOut.set(p.id, outs[p.op.index] as GpuHandle);
            });
          }
          // Opaque results nobody reads any more go back to the pool.
          for (const [id, h] of opaqueOut) {
            if (!outputs.has(id) && (lastUse.get(id) ?? -1) <= step.index) {
              this.backend.release(h);
              opaqueOut.delete(id);
            }
          }
          opts.afterStep?.(step.index);
          yield step.index;
        }
      } finally {
        if (rt.profilingActive) rt.markKernel(null);
        for (const t of temps) {
          if (t.storage.buffer) rt.release(t.storage.buffer);
          t.storage.buffer = null;
          t.released = true;
        }
      }
      // Outputs not written in their place (backend-run ops, a segment without dynamic offsets) are
      // returned as they are: the caller moves them (`placeInto`).
      return g.outputs.map((o) => {
        const h = outHandles.get(o) ?? opaqueOut.get(o);
        if (!h) throw new BackendError(`jit: output %${o} was not computed`);
        return h;
      });
    }
  }
}

/** Copies made by compiled segments (inputs materialised) and `placeInto` since start (tests, stats). */
const copies = { n: 0 };

/** The WebGPU target, with output placement (see src/ops/compile/index.ts, `PlacingTarget`). */
export interface WebGpuJitTarget extends JitTarget {
  prepare(device: Device, plan: FusionPlan, mem: MemoryPlan, donated: readonly boolean[], opts?: PrepareOptions): TargetSegment;
  /** Copies made so far (inputs materialised by segments, outputs moved by `placeInto`); monotonic. */
  readonly copies: number;
  /** A fresh, uninitialised contiguous buffer (the stacked ys of a scan). */
  allocate(device: Device, shape: readonly number[], dtype: DType): GpuHandle;
  /** Copies `src` to `place` unless it is there already (null); returns the view there. */
  placeInto(device: Device, src: GpuHandle, place: OutputPlace): GpuHandle | null;
  /** A contiguous view of `shape` at `place` (a nested scan's stacked ys inside the outer's). */
  viewAt(device: Device, place: OutputPlace, shape: readonly number[], dtype: DType): GpuHandle;
  /**
   * Runs `fn` (a whole compiled call) in one command buffer with every kernel timed by timestamp
   * queries; null when the device has none (or they are turned off): the caller times on the host.
   */
  profileCall<T>(device: Device, fn: () => T): Promise<{ result: T; kernels: { kernel: string; ms: number }[]; wallMs: number; truncated: boolean } | null>;
}

export const webGpuJitTarget: WebGpuJitTarget = {
  kind: "webgpu",
  bytesPerElement: () => 4, // every dtype is stored in 32 bits (bool as u32)
  fusionOptions: (device: Device) => ({
    // Two bindings of margin: a dot binds its operands as vec4 and may read one of them again.
    maxBuffers: (device.backend as unknown as WebGpuBackend).rt.limits.maxStorageBuffersPerShaderStage - 2,
    // The matmul kernels load operands as vec4: lay large operands out for it.
    repackDots: true,
  }),
  prepare: (device, plan, mem, donated, opts?: PrepareOptions) =>
    new WebGpuSegment(device.backend as unknown as WebGpuBackend, plan, mem, donated, opts),
  call: (device, fn) => (device.backend as unknown as WebGpuBackend).rt.encodeAll(fn),
  get copies() {
    return copies.n;
  },
  // Output placement (compiled scans: ys written in place), beyond the JitTarget interface.
  allocate: (device: Device, shape: readonly number[], dtype: DType): GpuHandle => {
    const rt = (device.backend as unknown as WebGpuBackend).rt;
    const bytes = shapeSize(shape) * 4;
    return new GpuHandle(new GpuStorage(rt.alloc("scan", Math.max(bytes, 16)), bytes), dtype, shape);
  },
  placeInto: (device: Device, src: GpuHandle, place: OutputPlace): GpuHandle | null => {
    const at = place.handle.offset + place.offset;
    if (src.storage === place.handle.storage && src.offset === at && src.contiguous) return null;
    const backend = device.backend as unknown as WebGpuBackend;
    const m = src.contiguous ? src : materialize(backend.rt, src);
    backend.rt.copy(m.buffer, m.offset * 4, place.handle.buffer, at * 4, src.size * 4);
    copies.n++;
    if (m !== src) backend.release(m);
    place.handle.storage.refs++;
    return new GpuHandle(place.handle.storage, src.dtype, src.shape, undefined, at, false);
  },
  viewAt: (_device: Device, place: OutputPlace, shape: readonly number[], dtype: DType): GpuHandle => {
    place.handle.storage.refs++;
    return new GpuHandle(place.handle.storage, dtype, shape, undefined, place.handle.offset + place.offset, false);
  },
  profileCall: async <T>(device: Device, fn: () => T) => {
    const rt = (device.backend as unknown as WebGpuBackend).rt;
    if (!rt.useTimestamps) return null;
    await rt.sync();
    const t0 = performance.now();
    rt.beginProfile();
    let result: T;
    try {
      result = rt.encodeAll(fn);
    } catch (e) {
      // Close the profile: a failed call leaves the runtime usable.
      await rt.endProfile().catch(() => undefined);
      throw e;
    }
    const timing = await rt.endProfile();
    const wallMs = performance.now() - t0;
    return { result, kernels: timing.kernels.map((k) => ({ kernel: k.label, ms: k.ns / 1e6 })), wallMs, truncated: timing.truncated };
  },
};

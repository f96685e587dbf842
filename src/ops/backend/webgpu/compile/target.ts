/// <reference types="@webgpu/types" />
/**
 * @file The WebGPU target of the jit compiler: turns a fused plan (src/ops/compile/fusion.ts) and its
 * memory plan into generated kernels (codegen.ts) and runs them: intermediates live in slot buffers
 * kept across calls, outputs get fresh buffers (or donated input buffers), every dispatch of a call is
 * encoded into one command buffer and submitted once (`Runtime.encodeAll`). Kernel ops the compiler
 * does not generate (gather, sort, ...) run through the backend itself, in the same command buffer.
 */
import { shapeSize, type DType } from "../../../../autodiff/aval.js";
import { BackendError } from "../../../../autodiff/errors.js";
import type { FusionPlan, Kernel, Leaf, Program } from "../../../compile/fusion.js";
import { kernelWrites } from "../../../compile/memory-plan.js";
import type { JitTarget, SegmentStats, TargetSegment } from "../../../compile/target.js";
import type { Device } from "../../../array.js";
import { applyViewOp, contiguousLayout, sameLayout, type Graph, type ViewOp } from "../../../compile/graph.js";
import type { MemoryPlan } from "../../../compile/memory-plan.js";
import type { WebGpuBackend } from "../backend.js";
import { GpuHandle, GpuStorage } from "../handle.js";
import { materialize } from "../kernels/map.js";
import type { Kernel as RtKernel } from "../runtime.js";
import { dotKernel, GeneratedKernel, mapKernel, reduceKernel } from "./codegen.js";

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
    }
  | { readonly kind: "opaque"; readonly index: number; readonly node: number; readonly inputs: readonly { node: number; views: readonly ViewOp[] }[] };


/** Run-time options of one call. */
export interface RunOptions {
  /** Per graph input: the caller allows its buffer to be reused for an output. */
  readonly donated?: readonly boolean[];
  /** Called per kernel step with its index (debug timings). */
  readonly afterStep?: (i: number) => void;
}

export class WebGpuSegment implements TargetSegment {
  readonly steps: Step[];
  private readonly slots: (GpuStorage | null)[];
  private readonly constants = new Map<number, GpuStorage>();
  readonly sources: string[] = [];
  readonly stats: SegmentStats;

  /** Output node -> the graph input whose (donated) buffer it reuses when possible. */
  readonly aliases = new Map<number, { readonly input: number; readonly node: number }>();

  constructor(
    readonly backend: WebGpuBackend,
    readonly plan: FusionPlan,
    readonly mem: MemoryPlan,
    donated: readonly boolean[] = [],
  ) {
    const g = plan.graph;
    const dtypeOf = (n: number): DType => g.node(n).dtype;
    const lim = {
      maxWorkgroupsPerDimension: backend.rt.limits.maxComputeWorkgroupsPerDimension,
      maxWorkgroupStorageSize: backend.rt.limits.maxComputeWorkgroupStorageSize,
    };
    const maxBuffers = backend.rt.limits.maxStorageBuffersPerShaderStage;
    const inPlace = this.planDonation(donated);
    this.steps = plan.kernels.map((k, index): Step => {
      if (k.kind === "opaque") return { kind: "opaque", index, node: k.node, inputs: k.inputs };
      const gen = k.kind === "map" ? mapKernel(k, dtypeOf, lim) : k.kind === "reduce" ? reduceKernel(k, dtypeOf, lim) : dotKernel(k, dtypeOf, lim);
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
    const g = this.plan.graph;
    const inPlace = new Map<number, [number, number][]>();
    const producer = new Map<number, number>();
    this.plan.kernels.forEach((k, i) => {
      if (k.kind === "map" || k.kind === "dot") k.roots.forEach((r) => producer.set(r, i));
      else if (k.kind === "reduce") [...k.rowRoots, ...k.elemRoots].forEach((r) => producer.set(r, i));
    });
    const taken = new Set<number>();
    for (const n of g.nodes) {
      if (n.op.kind !== "input" || !donated[n.op.index]) continue;
      const size = shapeSize(n.shape);
      const last = this.mem.lastUse.get(n.id) ?? -1;
      for (const o of g.outputs) {
        const on = g.node(o);
        const ko = producer.get(o);
        if (taken.has(o) || ko === undefined || on.dtype !== n.dtype || shapeSize(on.shape) !== size) continue;
        if (last > ko) continue;
        if (last === ko && !inPlaceSafe(this.plan.kernels[ko]!, n.id, o)) continue;
        if (last === ko) {
          let list = inPlace.get(ko);
          if (!list) inPlace.set(ko, (list = []));
          list.push([n.id, o]);
        }
        taken.add(o);
        this.aliases.set(o, { input: n.op.index, node: n.id });
        break;
      }
    }
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
        if (!h.contiguous || h.offset !== 0) {
          h = materialize(rt, h);
          temps.push(h);
        }
        handles.set(n.id, h);
      });
      const outputs = new Set(g.outputs);
      const outHandles = new Map<number, GpuHandle>();
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
          if (step.kind === "gen") {
            let gen = step.gen;
            let kernel = step.rt;
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
            for (const w of gen.writes) {
              if (outputs.has(w) && !outHandles.has(w)) {
                const n = g.node(w);
                const size = shapeSize(n.shape);
                outHandles.set(w, new GpuHandle(new GpuStorage(rt.alloc("jit", Math.max(size * 4, 16)), size * 4), n.dtype, n.shape));
              }
            }
            const buffers = [...gen.reads.map(bufferOf), ...gen.writes.map(bufferOf)];
            // A buffer written by a dispatch must not be bound twice in it (WebGPU rejects it, and
            // it would mean the memory plan shared a live buffer): never encode such a dispatch.
            for (let w = gen.reads.length; w < buffers.length; w++) {
              if (buffers.indexOf(buffers[w]!) !== w) {
                throw new BackendError(`jit: kernel ${step.index} would write a buffer it also binds (webgrad bug)`);
              }
            }
            for (const d of gen.dispatches) rt.dispatch(kernel, d.params, buffers, d.grid);
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
        for (const t of temps) {
          if (t.storage.buffer) rt.release(t.storage.buffer);
          t.storage.buffer = null;
          t.released = true;
        }
      }
      return g.outputs.map((o) => {
        const h = outHandles.get(o) ?? opaqueOut.get(o);
        if (!h) throw new BackendError(`jit: output %${o} was not computed`);
        return h;
      });
    }
  }
}

/**
 * Whether kernel `k` may write output `out` into the buffer of input `input` that it also reads: every
 * read must be of the element being written, by the invocation writing it (identity layouts), and
 * never as a matmul operand.
 */
function inPlaceSafe(k: Kernel, input: number, out: number): boolean {
  const readsOf = (p: Program) => p.leaves.filter((l): l is Leaf & { kind: "buffer" } => l.kind === "buffer" && l.node === input);
  const identity = (p: Program, shape: readonly number[]) => readsOf(p).every((l) => sameLayout(l.layout, contiguousLayout(shape)));
  switch (k.kind) {
    case "map":
      return identity(k.program, k.shape);
    case "dot":
      return k.lhs.node !== input && k.rhs.node !== input && identity(k.epilogue, k.shape);
    case "reduce":
      if (k.rowRoots.includes(out)) {
        return k.steps.every((s) => readsOf(s.program).length === 0) && readsOf(k.elem).length === 0 && identity(k.row, k.kept);
      }
      return readsOf(k.row).length === 0 && k.steps.every((s) => identity(s.program, k.shape)) && identity(k.elem, k.shape);
    default:
      return false;
  }
}


/** The jit compiler's WebGPU target (registered by src/ops/compile/index.ts). */
export const webGpuJitTarget: JitTarget = {
  kind: "webgpu",
  bytesPerElement: () => 4, // every dtype is stored in 32 bits (bool as u32)
  fusionOptions: (device: Device) => ({
    // Two bindings of margin: a dot binds its operands as vec4 and may read one of them again.
    maxBuffers: (device.backend as unknown as WebGpuBackend).rt.limits.maxStorageBuffersPerShaderStage - 2,
  }),
  prepare: (device, plan, mem, donated) => new WebGpuSegment(device.backend as unknown as WebGpuBackend, plan, mem, donated),
  call: (device, fn) => (device.backend as unknown as WebGpuBackend).rt.encodeAll(fn),
};

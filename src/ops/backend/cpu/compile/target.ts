/**
 * @file The CPU target of the jit compiler: runs a fused plan (src/ops/compile/fusion.ts) on the CPU
 * backend. Read src/ops/compile/target.ts (the interface) and the WebGPU target
 * (src/ops/backend/webgpu/compile/target.ts, the model) first.
 *
 * Kernels:
 * - `map`: one fused elementwise kernel (`compileScalarProgram`, ../wasm/fused.ts: Wasm SIMD or JS),
 *   reading every leaf through a strided view of its node's storage, writing into the memory plan's
 *   slots (intermediates), fresh arrays (outputs) or a donated input's storage.
 * - `reduce`: per reduction, its prologue program is evaluated into a scratch array kept across calls
 *   (skipped when the operand is a plain read of a buffer: the reduction then reads that buffer through
 *   its layout) and reduced by the backend's `reduce` (Wasm for float32 rows / columns), then the row
 *   program (shape K) and the elementwise program (shape S) read the reductions as locals.
 * - `dot`: the backend's `dotGeneral` (Wasm SIMD GEMM on the worker pool) on strided operand views,
 *   then the epilogue program (bias, activation, residual) run in place on the fresh product.
 * - `opaque`: the backend's own op on buffers (views applied with the backend's view ops).
 *
 * Everything the steps need is resolved in `prepare` (kernels compiled, views preallocated, slot
 * storage made on first use and kept); `run` only swaps the inputs' storage into the views and calls
 * the kernels. Results are bit-identical to the interpreter on the same backend, since every piece
 * runs the same code the eager ops do (the fused kernels' documented few-ulp transcendental
 * approximations apply to both: eager float32 unary ops use the same Wasm kernels).
 */
import { shapeSize, type DType, type Shape } from "../../../../autodiff/aval.js";
import { BackendError } from "../../../../autodiff/errors.js";
import type { Device } from "../../../array.js";
import type { FusionPlan, Kernel, Leaf, Program } from "../../../compile/fusion.js";
import { applyViewOp, contiguousLayout, sameLayout, type Layout, type ViewOp } from "../../../compile/graph.js";
import { donationMaps, planDonation, readsInPlace, readsOf, type Donation, type InPlaceSafe, type MemoryPlan } from "../../../compile/memory-plan.js";
import { scalarProgramKey } from "../../../compile/scalar-program.js";
import type { JitTarget, SegmentStats, TargetSegment } from "../../../compile/target.js";
import type { AnyTypedArray, DotDims, ReduceOp } from "../../kernel.js";
import { allocate, allocateUninit, contiguousStrides, copyOut, copyStrided, CpuBuffer, isStorageShared } from "../buffer.js";
import { cpuBackend, type CpuBackend } from "../index.js";
import { compileScalarProgram, type FusedKernel, type StridedView } from "../wasm/fused.js";
import { allocateResidentBytes, dropStorage } from "../wasm/storage.js";

// ---------------------------------------------------------------------------------------------------
// Storage sharing (donation safety)

// ---------------------------------------------------------------------------------------------------
// Steps

/** A strided view whose storage and offset are filled in per call. */
interface Slot {
  data: AnyTypedArray | null;
  strides: readonly number[];
  offset: number;
}

/** How a program input is bound at run time. */
type Binding =
  /** node storage + layout offset */
  | { readonly kind: "node"; readonly node: number; readonly offset: number }
  /** a kernel local (reduction result, dot accumulator) */
  | { readonly kind: "local"; readonly local: number }
  /** an index view (iota), fixed */
  | { readonly kind: "fixed" };

interface ProgramStep {
  readonly kernel: FusedKernel;
  readonly shape: Shape;
  readonly views: Slot[];
  readonly bindings: readonly Binding[];
  /** Per program output: the node it stores (roots). */
  readonly roots: readonly number[];
  readonly into: AnyTypedArray[];
}

interface MapStep {
  readonly kind: "map";
  readonly index: number;
  readonly prog: ProgramStep;
}

interface ReduceRed {
  readonly op: ReduceOp;
  readonly dtype: DType;
  /** A plain read of a buffer: reduce it through its layout, no prologue kernel. */
  readonly direct: { readonly node: number; readonly layout: Layout } | null;
  /** The prologue (null when direct); its output goes to `scratch`. */
  readonly prog: ProgramStep | null;
  scratch: AnyTypedArray | null;
  /** Cached operand view of the last call (reused while storage and offset are unchanged). */
  cache: CpuBuffer | null;
}

interface ReduceStep {
  readonly kind: "reduce";
  readonly index: number;
  readonly shape: Shape;
  readonly axes: readonly number[];
  readonly kept: Shape;
  readonly reds: readonly ReduceRed[];
  readonly row: ProgramStep | null;
  readonly elem: ProgramStep | null;
}

interface DotStep {
  readonly kind: "dot";
  readonly index: number;
  readonly dims: DotDims;
  readonly shape: Shape;
  readonly dtype: DType;
  readonly lhs: { readonly node: number; readonly layout: Layout };
  readonly rhs: { readonly node: number; readonly layout: Layout };
  lhsCache: CpuBuffer | null;
  rhsCache: CpuBuffer | null;
  /** null: the epilogue stores the product unchanged (the product's storage becomes the root's). */
  readonly epilogue: ProgramStep | null;
  /** Root stored straight from the product when the epilogue is the identity. */
  readonly root: number;
  /** Epilogue output written in place over the product (-1: none). */
  readonly inPlace: number;
}

interface OpaqueStep {
  readonly kind: "opaque";
  readonly index: number;
  readonly node: number;
  readonly inputs: readonly { readonly node: number; readonly views: readonly ViewOp[] }[];
  readonly projs: readonly (readonly [node: number, index: number])[];
}

type Step = MapStep | ReduceStep | DotStep | OpaqueStep;

const LOCAL_ACC = 0;

/** The layout over S reading a K-shaped row value at every position of its row (as fusion.ts). */
function rowLayout(S: Shape, axes: readonly number[], K: Shape): Layout {
  const ks = contiguousStrides(K);
  let k = 0;
  return { shape: S, strides: S.map((_, d) => (axes.includes(d) ? 0 : ks[k++]!)), offset: 0 };
}

/** Whether a program stores its only input unchanged (one load of a leaf, stored once). */
function isPlainLoad(p: Program): boolean {
  return p.nodes.length === 1 && p.nodes[0]!.op === "load" && p.outputs.length === 1 && p.outputs[0] === 0;
}

function bytesPerElement(dtype: DType): number {
  return dtype === "float64" ? 8 : dtype === "bool" ? 1 : 4;
}

function storageFor(dtype: DType, slot: Uint8Array, size: number): AnyTypedArray {
  const buf = slot.buffer;
  const at = slot.byteOffset;
  switch (dtype) {
    case "float32":
      return new Float32Array(buf, at, size);
    case "float64":
      return new Float64Array(buf, at, size);
    case "int32":
      return new Int32Array(buf, at, size);
    case "uint32":
      return new Uint32Array(buf, at, size);
    case "bool":
      return new Uint8Array(buf, at, size);
    default:
      throw new BackendError(`jit: a known dtype, got ${String(dtype satisfies never)}`);
  }
}

/** Run-time options of one call. */
export interface CpuRunOptions {
  readonly donated?: readonly boolean[];
  /** Called after each kernel with its index (profiling). */
  readonly afterStep?: (i: number) => void;
  /**
   * Per graph output: where to write it (a compiled scan's ys go straight into the stacked result).
   * The output is then a view there; one no kernel writes there is copied (`copies`).
   */
  readonly outputs?: readonly (CpuPlace | undefined)[];
}

/** An output place on the CPU: `handle`'s storage from element `handle.offset + offset`. */
export interface CpuPlace {
  readonly handle: CpuBuffer;
  readonly offset: number;
}

/** Copies compiled segments made (inputs materialised, outputs moved into their place) since start. */
const copies = { n: 0 };

export class CpuSegment implements TargetSegment {
  readonly steps: Step[];
  readonly sources: string[] = [];
  readonly stats: SegmentStats;
  /** Output node -> the graph input node whose donated storage it may take. */
  readonly aliases = new Map<number, { readonly input: number; readonly node: number }>();
  /** The planned donations (outputs that take a donated input's storage when the call allows it). */
  donations: readonly Donation[] = [];
  /** Outputs the last call wrote into donated storage (`donations` less those refused at run time). */
  lastDonatedWrites = 0;

  /** Per node: storage and element offset of its C-order contents in the current call. */
  private readonly data: (AnyTypedArray | null)[];
  private readonly base: Float64Array;
  /** Per node: whether it is a graph output (fresh storage per call). */
  private readonly isOutput: Uint8Array;
  /** Per call: donated storage given to outputs. */
  private readonly outStorage: (AnyTypedArray | null)[];
  /**
   * The intermediate buffers, made on first use: resident (in the Wasm memory, so the kernels work on
   * them in place) where the arena allows, else ordinary. Held here for the segment's lifetime: a
   * resident block is returned when its Uint8Array is collected with the segment.
   */
  private readonly slotBuffers: (Uint8Array | null)[];
  /** Per intermediate node: its typed view of its slot (made on first use). */
  private readonly slotViews = new Map<number, AnyTypedArray>();
  private readonly constants = new Map<number, AnyTypedArray>();
  private readonly inputNodes: { readonly node: number; readonly index: number }[] = [];
  /** Locals of the running kernel (reduction results, the dot product). */
  private readonly locals: (AnyTypedArray | null)[] = [];
  /** The backend running reductions, products and opaque ops. */
  private readonly backend: CpuBackend = cpuBackend;

  constructor(
    readonly plan: FusionPlan,
    readonly mem: MemoryPlan,
    donated: readonly boolean[] = [],
  ) {
    const g = plan.graph;
    const n = g.nodes.length;
    this.data = new Array<AnyTypedArray | null>(n).fill(null);
    this.base = new Float64Array(n);
    this.isOutput = new Uint8Array(n);
    for (const o of g.outputs) this.isOutput[o] = 1;
    this.outStorage = new Array<AnyTypedArray | null>(n).fill(null);
    this.slotBuffers = mem.slotBytes.map(() => null);
    for (const nd of g.nodes) if (nd.op.kind === "input") this.inputNodes.push({ node: nd.id, index: nd.op.index });
    const inPlace = this.planDonation(donated);
    this.steps = plan.kernels.map((k, index) => this.buildStep(k, index, inPlace.get(index) ?? []));
    const outputBytes = g.outputs.reduce((a, o) => a + shapeSize(g.node(o).shape) * bytesPerElement(g.node(o).dtype), 0);
    this.stats = {
      kernels: this.steps.length,
      dispatches: this.steps.length,
      peakBytes: mem.peakBytes,
      intermediateBytes: mem.intermediateBytes,
      outputBytes,
    };
  }

  // ---- preparation ----

  private program(p: Program, roots: readonly number[], localIndex: (name: string) => number, localLayout: Layout | null): ProgramStep {
    this.sources.push(scalarProgramKey(p));
    const views: Slot[] = [];
    const bindings: Binding[] = [];
    for (const leaf of p.leaves) {
      switch (leaf.kind) {
        case "buffer":
          views.push({ data: null, strides: leaf.layout.strides, offset: 0 });
          bindings.push({ kind: "node", node: leaf.node, offset: leaf.layout.offset });
          break;
        case "iota":
          views.push({ data: null, strides: leaf.layout.strides, offset: leaf.layout.offset });
          bindings.push({ kind: "fixed" });
          break;
        case "local": {
          const l = localLayout ?? contiguousLayout(p.shape);
          views.push({ data: null, strides: l.strides, offset: l.offset });
          bindings.push({ kind: "local", local: localIndex(leaf.name) });
          break;
        }
        default:
          throw new BackendError(`jit: a known leaf kind, got ${String((leaf satisfies never as Leaf).kind)}`);
      }
    }
    return { kernel: compileScalarProgram(p), shape: p.shape, views, bindings, roots, into: roots.map(() => null as unknown as AnyTypedArray) };
  }

  private buildStep(k: Kernel, index: number, inPlace: readonly (readonly [number, number])[]): Step {
    const g = this.plan.graph;
    switch (k.kind) {
      case "map":
        return { kind: "map", index, prog: this.program(k.program, k.roots, () => -1, null) };
      case "reduce": {
        const names = new Map<string, number>();
        k.steps.forEach((s, i) => names.set(`red${s.node}`, i));
        const localIndex = (name: string): number => {
          const i = names.get(name);
          if (i === undefined) throw new BackendError(`jit: an unknown kernel local ${name}`);
          return i;
        };
        const rowL = rowLayout(k.shape, k.axes, k.kept);
        const reds: ReduceRed[] = k.steps.map((s) => {
          const leaf = s.program.leaves[0];
          const direct = isPlainLoad(s.program) && leaf?.kind === "buffer" ? { node: leaf.node, layout: leaf.layout } : null;
          return {
            op: s.op,
            dtype: s.dtype,
            direct,
            prog: direct ? null : this.program(s.program, [-1], localIndex, rowL),
            scratch: null,
            cache: null,
          };
        });
        return {
          kind: "reduce",
          index,
          shape: k.shape,
          axes: k.axes,
          kept: k.kept,
          reds,
          row: k.rowRoots.length > 0 ? this.program(k.row, k.rowRoots, localIndex, null) : null,
          elem: k.elemRoots.length > 0 ? this.program(k.elem, k.elemRoots, localIndex, rowL) : null,
        };
      }
      case "dot": {
        const localIndex = (name: string): number => {
          if (name !== "acc") throw new BackendError(`jit: an unknown kernel local ${name}`);
          return LOCAL_ACC;
        };
        const ep = k.epilogue;
        const identity = k.roots.length === 1 && isPlainLoad(ep) && ep.leaves[0]?.kind === "local";
        // The epilogue may overwrite the product itself (same dtype), unless an output reuses a
        // donated input (then that one is written in place of the input).
        const donatedRoots = new Set(inPlace.map(([, o]) => o));
        let inPlaceOut = -1;
        if (!identity) {
          inPlaceOut = k.roots.findIndex((r, j) => !donatedRoots.has(r) && !this.aliases.has(r) && ep.nodes[ep.outputs[j]!]!.dtype === k.dtype);
        }
        return {
          kind: "dot",
          index,
          dims: k.dims,
          shape: k.shape,
          dtype: k.dtype,
          lhs: k.lhs,
          rhs: k.rhs,
          lhsCache: null,
          rhsCache: null,
          epilogue: identity ? null : this.program(ep, k.roots, localIndex, null),
          root: identity ? k.roots[0]! : -1,
          inPlace: inPlaceOut,
        };
      }
      case "opaque": {
        const projs: [number, number][] = [];
        for (const p of g.nodes) if (p.op.kind === "proj" && p.inputs[0] === k.node) projs.push([p.id, p.op.index]);
        return { kind: "opaque", index, node: k.node, inputs: k.inputs, projs };
      }
      default:
        return k satisfies never;
    }
  }

  /**
   * Pairs donated inputs with outputs of the same dtype and size (`planDonation`, memory-plan.ts, as the
   * WebGPU target): an output written after the input's last read may take its storage; one written by
   * the kernel making that last read only when the kernel reads the input element by element at the
   * position it writes (`cpuInPlaceSafe`). Returns, per kernel, the pairs it writes in place.
   */
  private planDonation(donated: readonly boolean[]): Map<number, [number, number][]> {
    this.donations = planDonation(this.plan, this.mem.lastUse, donated, cpuInPlaceSafe);
    const { inPlace, aliases } = donationMaps(this.donations);
    for (const [o, a] of aliases) this.aliases.set(o, a);
    return inPlace;
  }

  // ---- storage ----

  private slotView(node: number): AnyTypedArray {
    let v = this.slotViews.get(node);
    if (v === undefined) {
      const s = this.mem.slotOf.get(node);
      if (s === undefined) throw new BackendError(`jit: no buffer for node %${node}`);
      let buf = this.slotBuffers[s];
      if (!buf) {
        const bytes = this.mem.slotBytes[s]!;
        this.slotBuffers[s] = buf = allocateResidentBytes(bytes) ?? new Uint8Array(bytes);
      }
      const n = this.plan.graph.node(node);
      v = storageFor(n.dtype, buf, shapeSize(n.shape));
      this.slotViews.set(node, v);
    }
    return v;
  }

  private constant(node: number): AnyTypedArray {
    let c = this.constants.get(node);
    if (c === undefined) {
      const n = this.plan.graph.node(node);
      if (n.op.kind !== "constant") throw new BackendError(`jit: no buffer for node %${node}`);
      c = this.backend.constant(n.op.data, { shape: n.shape, dtype: n.dtype }).data;
      this.constants.set(node, c);
    }
    return c;
  }

  /** Storage a kernel writes node `node` into: donated, fresh (outputs) or its slot. */
  private dest(node: number): AnyTypedArray {
    const d = this.outStorage[node];
    if (d) return d;
    const n = this.plan.graph.node(node);
    if (this.isOutput[node]) return allocateUninit(n.dtype, shapeSize(n.shape)); // every element is written
    return this.slotView(node);
  }

  /** Storage of a node read by a kernel (set by its producer, or a constant). */
  private source(node: number): AnyTypedArray {
    const d = this.data[node];
    if (d) return d;
    return (this.data[node] = this.constant(node));
  }

  private bind(p: ProgramStep): void {
    const { views, bindings } = p;
    for (let i = 0; i < views.length; i++) {
      const b = bindings[i]!;
      const v = views[i]!;
      if (b.kind === "node") {
        v.data = this.source(b.node);
        v.offset = this.base[b.node]! + b.offset;
      } else if (b.kind === "local") {
        v.data = this.locals[b.local]!;
      }
    }
  }

  private runProgram(p: ProgramStep, shape: Shape): void {
    this.bind(p);
    const into = p.into;
    for (let j = 0; j < p.roots.length; j++) into[j] = this.dest(p.roots[j]!);
    p.kernel(p.views as StridedView[], shape, into);
    for (let j = 0; j < p.roots.length; j++) this.store(p.roots[j]!, into[j]!);
  }

  private store(node: number, data: AnyTypedArray): void {
    this.data[node] = data;
    this.base[node] = 0;
  }

  /** A CpuBuffer reading `node` through `layout` (cached while its storage and offset stay). */
  private operand(node: number, layout: Layout, cache: CpuBuffer | null): CpuBuffer {
    const data = this.source(node);
    const off = this.base[node]! + layout.offset;
    if (cache !== null && !cache.released && cache.data === data && cache.offset === off) return cache;
    return new CpuBuffer(data, this.plan.graph.node(node).dtype, layout.shape, layout.strides, off, false);
  }

  // ---- running ----

  run(inputs: readonly unknown[], opts: CpuRunOptions = {}): CpuBuffer[] {
    return this.execute(inputs as readonly CpuBuffer[], opts);
  }

  async profile(inputs: readonly unknown[]): Promise<{ outputs: unknown[]; ms: number[] }> {
    const ms: number[] = [];
    let t0 = performance.now();
    const outputs = this.execute(inputs as readonly CpuBuffer[], {
      afterStep: () => {
        const t = performance.now();
        ms.push(t - t0);
        t0 = t;
      },
    });
    return { outputs, ms };
  }

  private execute(inputs: readonly CpuBuffer[], opts: CpuRunOptions): CpuBuffer[] {
    const g = this.plan.graph;
    const data = this.data;
    data.fill(null);
    this.outStorage.fill(null);
    for (const { node, index } of this.inputNodes) {
      const x = inputs[index];
      if (!x) throw new BackendError(`jit: ${g.numInputs} segment inputs, got ${inputs.length}`);
      if (x.contiguous) {
        data[node] = x.data;
        this.base[node] = x.offset;
      } else {
        data[node] = copyOut(x);
        this.base[node] = 0;
        copies.n++;
      }
    }
    // Outputs with a place are written there (into a view of the place's storage).
    const places = opts.outputs;
    const placed: (AnyTypedArray | null)[] = [];
    if (places) {
      g.outputs.forEach((o, j) => {
        const pl = places[j];
        placed.push(null);
        if (!pl || this.outStorage[o]) return;
        const at = pl.handle.offset + pl.offset;
        const v = pl.handle.data.subarray(at, at + shapeSize(g.node(o).shape));
        this.outStorage[o] = placed[j] = v;
      });
    }
    // Donated inputs whose storage can really be taken over.
    this.lastDonatedWrites = 0;
    if (this.aliases.size > 0 && opts.donated) {
      let claimed: Set<AnyTypedArray> | null = null;
      for (const [o, { input, node }] of this.aliases) {
        const x = inputs[input]!;
        const d = x.data;
        const n = g.node(o);
        const ok =
          opts.donated[input] === true &&
          x.owned &&
          x.contiguous &&
          x.offset === 0 &&
          d.length === shapeSize(n.shape) &&
          data[node] === d &&
          !isStorageShared(d) &&
          !(claimed?.has(d) ?? false) &&
          !inputs.some((y, i) => i !== input && !y.released && y.data === d);
        if (!ok || this.outStorage[o]) continue;
        (claimed ??= new Set()).add(d);
        this.outStorage[o] = d;
        this.lastDonatedWrites++;
      }
    }
    const after = opts.afterStep;
    for (const step of this.steps) {
      switch (step.kind) {
        case "map":
          this.runProgram(step.prog, step.prog.shape);
          break;
        case "reduce":
          this.runReduce(step);
          break;
        case "dot":
          this.runDot(step);
          break;
        case "opaque":
          this.runOpaque(step);
          break;
        default:
          step satisfies never;
      }
      if (after) after(step.index);
    }
    const outs: CpuBuffer[] = [];
    g.outputs.forEach((o, j) => {
      const d = data[o];
      if (!d) throw new BackendError(`jit: output %${o} was not computed`);
      const n = g.node(o);
      const pl = places?.[j];
      if (!pl) {
        outs.push(new CpuBuffer(d, n.dtype, n.shape));
        return;
      }
      const at = pl.handle.offset + pl.offset;
      if (d !== placed[j]) {
        // Not written there (a product without epilogue, a backend-run op, an input passed through,
        // a node that is several outputs): moved.
        const size = shapeSize(n.shape);
        const b = this.base[o]!;
        pl.handle.data.set(d.subarray(b, b + size) as never, at);
        copies.n++;
      }
      outs.push(pl.handle.view(n.shape, contiguousStrides(n.shape), at));
    });
    // Drop the references to this call's storage (inputs, outputs) so it can be collected.
    data.fill(null);
    this.outStorage.fill(null);
    this.locals.fill(null);
    return outs;
  }

  private runReduce(s: ReduceStep): void {
    const locals = this.locals;
    const kept = { shape: s.kept, dtype: "float32" as DType };
    for (let i = 0; i < s.reds.length; i++) {
      const r = s.reds[i]!;
      let x: CpuBuffer;
      if (r.direct) {
        x = r.cache = this.operand(r.direct.node, r.direct.layout, r.cache);
      } else {
        const p = r.prog!;
        this.bind(p);
        const size = shapeSize(s.shape);
        if (r.scratch === null || r.scratch.length < size) r.scratch = allocate(r.dtype, size);
        p.into[0] = r.scratch;
        p.kernel(p.views as StridedView[], s.shape, p.into);
        if (r.cache === null || r.cache.data !== r.scratch) r.cache = new CpuBuffer(r.scratch, r.dtype, s.shape, contiguousStrides(s.shape), 0, false);
        x = r.cache;
      }
      kept.dtype = r.dtype;
      locals[i] = this.backend.reduce(r.op, x, s.axes, kept).takeStorage();
    }
    if (s.row) this.runProgram(s.row, s.kept);
    if (s.elem) this.runProgram(s.elem, s.shape);
  }

  private runDot(s: DotStep): void {
    const l = (s.lhsCache = this.operand(s.lhs.node, s.lhs.layout, s.lhsCache));
    const r = (s.rhsCache = this.operand(s.rhs.node, s.rhs.layout, s.rhsCache));
    const acc = this.backend.dotGeneral(l, r, s.dims, { shape: s.shape, dtype: s.dtype }).takeStorage();
    if (s.epilogue === null) {
      // The fresh product is the root's storage (a donated buffer would only cost a copy here).
      this.store(s.root, acc);
      return;
    }
    const p = s.epilogue;
    this.locals[LOCAL_ACC] = acc;
    this.bind(p);
    const into = p.into;
    for (let j = 0; j < p.roots.length; j++) into[j] = j === s.inPlace ? acc : this.dest(p.roots[j]!);
    p.kernel(p.views as StridedView[], s.shape, into);
    for (let j = 0; j < p.roots.length; j++) this.store(p.roots[j]!, into[j]!);
    this.locals[LOCAL_ACC] = null;
    // The product went through the epilogue into other storage: its block can go back at once.
    if (!into.includes(acc)) dropStorage(acc);
  }

  private runOpaque(s: OpaqueStep): void {
    const g = this.plan.graph;
    const node = g.node(s.node);
    if (node.op.kind !== "opaque") throw new BackendError("jit: not an opaque node");
    const b = this.backend;
    const ins = s.inputs.map(({ node: src, views }) => {
      const n = g.node(src);
      let h = new CpuBuffer(this.source(src), n.dtype, n.shape, contiguousStrides(n.shape), this.base[src]!, false);
      for (const v of views) h = applyViewOp(b, h, v);
      return h;
    });
    const outs = node.op.run(b, ins) as CpuBuffer[];
    for (const [p, k] of s.projs) {
      const o = outs[k]!;
      // Results must be storage of their own (an op may return a view of an operand).
      if (this.isOutput[p] && !(o.owned && o.contiguous && o.offset === 0 && o.data.length === o.size)) {
        this.store(p, copyOut(o));
      } else if (o.contiguous) {
        this.data[p] = o.data;
        this.base[p] = o.offset;
      } else this.store(p, copyOut(o));
    }
  }
}

/**
 * Whether kernel `k` may write output `out` into the storage of `input`, which it also reads: every
 * read must be of the element being written (identity layouts) and happen before the write. Looser
 * than the strict rule (memory-plan.ts): products and reductions are complete before any store.
 */
export const cpuInPlaceSafe: InPlaceSafe = (k: Kernel, input: number, out: number): boolean => {
  const identity = (p: Program, shape: Shape) => readsInPlace(p, input, shape);
  switch (k.kind) {
    case "map":
      return identity(k.program, k.shape);
    case "dot":
      // The product is complete before the epilogue runs: only the epilogue's reads matter.
      return identity(k.epilogue, k.shape);
    case "reduce":
      // Order: reductions, row program, elementwise program.
      if (k.rowRoots.includes(out)) return readsOf(k.elem, input).length === 0 && identity(k.row, k.kept);
      return identity(k.elem, k.shape);
    default:
      return false;
  }
};


/** The jit compiler's CPU target (registered by `installCpuJitTarget`, ./index.ts). */
/** Output placement (`PlacingTarget` of src/ops/compile/index.ts), beyond the JitTarget interface. */
interface CpuPlacing {
  readonly copies: number;
  allocate(device: Device, shape: readonly number[], dtype: DType): CpuBuffer;
  placeInto(device: Device, src: unknown, place: { readonly handle: unknown; readonly offset: number }): CpuBuffer | null;
  viewAt(device: Device, place: { readonly handle: unknown; readonly offset: number }, shape: readonly number[], dtype: DType): CpuBuffer;
}

/**
 * The CPU target. It places outputs (src/ops/compile/index.ts, `PlacingTarget`): a compiled scan's
 * steps read their xs slices as offset views (inputs at any offset are read where they are) and
 * write their ys into the stacked result.
 */
export const cpuJitTarget: JitTarget & CpuPlacing = {
  kind: "cpu",
  bytesPerElement,
  // No binding limit on the CPU; a bound keeps the fused kernels' Wasm chunk area under 1 MiB (16 KiB
  // per operand). At 24, the PaLM backward pass of the main job had two kernels over it, and the
  // planner split them one materialised member per attempt: 14 extra plans of a 3,000-node graph, 2.5
  // of its 3.8 s of planning. 48 needs none, and the kernels measured no slower. No vec4 repacking of
  // dot operands: the packed GEMM reads any strided layout into its own panels.
  fusionOptions: (_device: Device) => ({ maxBuffers: 48, repackDots: false, inPlaceSafe: cpuInPlaceSafe }),
  // Input offsets are always read at run time here: `dynamicOffsets` needs nothing more.
  prepare: (_device: Device, plan: FusionPlan, mem: MemoryPlan, donated: readonly boolean[]) => new CpuSegment(plan, mem, donated),
  call: <T>(_device: Device, fn: () => T): T => fn(),
  get copies(): number {
    return copies.n;
  },
  allocate: (_device: Device, shape: readonly number[], dtype: DType): CpuBuffer =>
    new CpuBuffer(allocateUninit(dtype, shapeSize(shape)), dtype, shape),
  placeInto: (_device: Device, src: unknown, place: { readonly handle: unknown; readonly offset: number }): CpuBuffer | null => {
    const x = src as CpuBuffer;
    const h = place.handle as CpuBuffer;
    const at = h.offset + place.offset;
    if (x.data === h.data && x.offset === at && x.contiguous) return null;
    const dst = h.view(x.shape, contiguousStrides(x.shape), at);
    copyStrided(h.data, at, contiguousStrides(x.shape), x);
    copies.n++;
    return dst;
  },
  viewAt: (_device: Device, place: { readonly handle: unknown; readonly offset: number }, shape: readonly number[], _dtype: DType): CpuBuffer => {
    const h = place.handle as CpuBuffer;
    return h.view(shape, contiguousStrides(shape), h.offset + place.offset);
  },
};

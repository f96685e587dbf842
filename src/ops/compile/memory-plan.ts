/**
 * @file The static memory plan of a fused program: every intermediate (a kernel result that is not an
 * output of the call) gets a slot; slots are reused by liveness (greedy, best fit by size), and the
 * target keeps the slots' buffers across calls. Backend-neutral: sizes come from the target's bytes per
 * element.
 *
 * Donation (`jit(f, { donateArgnums })`): a donated input's buffer may be taken by an output of the same
 * dtype and size that is written no earlier than the input's last read (`planDonation`, the pairing both
 * targets make). The fusion planner (fusion.ts) orders kernels so that such writers run after the last
 * reader of the old value whenever the dependencies allow; `donations` reports the pairs.
 */
import { shapeSize, type DType, type Shape } from "../../autodiff/aval.js";
import type { FusionPlan, Kernel, Leaf, Program } from "./fusion.js";
import { contiguousLayout, sameLayout } from "./graph.js";

/** Nodes a kernel reads from buffers (program leaves, dot operands, opaque inputs). */
export function kernelReads(k: Kernel): number[] {
  const out = new Set<number>();
  const progs =
    k.kind === "map" ? [k.program] : k.kind === "reduce" ? [...k.steps.map((s) => s.program), k.row, k.elem] : k.kind === "dot" ? [k.epilogue] : [];
  for (const p of progs) for (const l of p.leaves) if (l.kind === "buffer") out.add(l.node);
  if (k.kind === "dot") {
    out.add(k.lhs.node);
    out.add(k.rhs.node);
  }
  if (k.kind === "opaque") for (const i of k.inputs) out.add(i.node);
  return [...out];
}

/** Nodes a kernel writes into buffers it does not allocate itself (opaque kernels allocate their own). */
export function kernelWrites(k: Kernel): number[] {
  switch (k.kind) {
    case "map":
    case "dot":
      return [...k.roots];
    case "reduce":
      return [...k.rowRoots, ...k.elemRoots];
    case "opaque":
      return [];
    default:
      return k satisfies never;
  }
}

export interface MemoryPlan {
  /** Slot of each intermediate node. */
  readonly slotOf: ReadonlyMap<number, number>;
  /** Bytes of each slot (the largest intermediate it holds). */
  readonly slotBytes: readonly number[];
  /** Index of the last kernel reading each materialised node (-1: none). */
  readonly lastUse: ReadonlyMap<number, number>;
  /** Σ slot bytes: the plan's peak intermediate memory. */
  readonly peakBytes: number;
  /** Σ bytes of all intermediates (what an unplanned execution would hold at once at worst). */
  readonly intermediateBytes: number;
  /**
   * Outputs that take a donated input's buffer (`planDonation`; empty unless `planMemory` was told
   * which inputs are donated): written over the old value by the kernel making its last read
   * (`inPlace`) or into the buffer after that read. A target takes the buffer at run time unless the
   * caller's array shares it (a live view) or is not donatable (a shared constant).
   */
  readonly donations: readonly Donation[];
}

/** Options of `planMemory`. */
export interface MemoryPlanOptions {
  /** Per graph input index: whether its buffer is donated (pairs are reported in `donations`). */
  readonly donated?: readonly boolean[];
  /** The target's rule for an output written by the kernel making the donated input's last read. */
  readonly inPlaceSafe?: InPlaceSafe;
}

export function planMemory(plan: FusionPlan, bytesPerElement: (d: DType) => number, align = 16, opts: MemoryPlanOptions = {}): MemoryPlan {
  const outputs = new Set(plan.graph.outputs);
  const lastUse = new Map<number, number>();
  plan.kernels.forEach((k, i) => {
    for (const n of kernelReads(k)) lastUse.set(n, i);
  });
  const slotOf = new Map<number, number>();
  const slotBytes: number[] = [];
  const free: number[] = [];
  let intermediateBytes = 0;
  const releaseAt = new Map<number, number[]>();
  plan.kernels.forEach((k, i) => {
    for (const n of kernelWrites(k)) {
      if (outputs.has(n)) continue;
      const node = plan.graph.node(n);
      const bytes = Math.max(align, Math.ceil((shapeSize(node.shape) * bytesPerElement(node.dtype)) / align) * align);
      intermediateBytes += bytes;
      // Best fit among free slots; grow the smallest adequate one, or add a slot.
      let best = -1;
      for (const s of free) {
        if (slotBytes[s]! >= bytes && (best < 0 || slotBytes[s]! < slotBytes[best]!)) best = s;
      }
      if (best < 0) {
        best = slotBytes.length;
        slotBytes.push(bytes);
      } else free.splice(free.indexOf(best), 1);
      slotOf.set(n, best);
      const last = lastUse.get(n) ?? i;
      let list = releaseAt.get(last);
      if (!list) releaseAt.set(last, (list = []));
      list.push(best);
    }
    // Slots whose last reader is this kernel are free for the next kernels' results.
    for (const s of releaseAt.get(i) ?? []) free.push(s);
  });
  return {
    slotOf,
    slotBytes,
    lastUse,
    peakBytes: slotBytes.reduce((a, b) => a + b, 0),
    intermediateBytes,
    donations: opts.donated ? planDonation(plan, lastUse, opts.donated, opts.inPlaceSafe) : [],
  };
}

// ---------------------------------------------------------------------------------------------------
// Donation

/**
 * Whether kernel `k` may write output `out` into the buffer of graph input node `input`, which it also
 * reads. A target's own rule; `inPlaceSafe` below is the strict one (every read of the input is of the
 * element being written, by the invocation writing it, never as a matmul operand), which is the WebGPU
 * target's. The CPU target allows more (its products and reductions are complete before any store).
 */
export type InPlaceSafe = (k: Kernel, input: number, out: number) => boolean;

/** The leaves of program `p` that read graph node `input`. */
export function readsOf(p: Program, input: number): (Leaf & { kind: "buffer" })[] {
  return p.leaves.filter((l): l is Leaf & { kind: "buffer" } => l.kind === "buffer" && l.node === input);
}

/** Whether every read of `input` by `p` (over `shape`) is of the element being written (C order). */
export function readsInPlace(p: Program, input: number, shape: Shape): boolean {
  return readsOf(p, input).every((l) => sameLayout(l.layout, contiguousLayout(shape)));
}

/** The strict in-place rule (see `InPlaceSafe`). */
export const inPlaceSafe: InPlaceSafe = (k, input, out) => {
  const reads = (p: Program) => readsOf(p, input);
  const identity = (p: Program, shape: Shape) => readsInPlace(p, input, shape);
  switch (k.kind) {
    case "map":
      return identity(k.program, k.shape);
    case "dot":
      return k.lhs.node !== input && k.rhs.node !== input && identity(k.epilogue, k.shape);
    case "reduce":
      if (k.rowRoots.includes(out)) {
        return k.steps.every((s) => reads(s.program).length === 0) && reads(k.elem).length === 0 && identity(k.row, k.kept);
      }
      return reads(k.row).length === 0 && k.steps.every((s) => identity(s.program, k.shape)) && identity(k.elem, k.shape);
    default:
      return false;
  }
};

/** One output that takes a donated input's buffer. */
export interface Donation {
  /** The graph input's index (`input#index`) and node. */
  readonly input: number;
  readonly node: number;
  /** The output node and the kernel writing it. */
  readonly output: number;
  readonly kernel: number;
  /** Written by the kernel making the input's last read (over the old value, element by element). */
  readonly inPlace: boolean;
}

/** The kernel storing each node it writes (map, dot and reduce roots; opaque results are their own). */
export function producers(plan: FusionPlan): Map<number, number> {
  const producer = new Map<number, number>();
  plan.kernels.forEach((k, i) => {
    for (const r of kernelWrites(k)) producer.set(r, i);
  });
  return producer;
}

/**
 * Whether output `o` is an update of input `x` by kernel `k`: `k` reads x only at the element it
 * writes (the strict rule) and does read it, as `p - lr·g` does. Such pairs are made first.
 */
export function isUpdate(k: Kernel, x: number, o: number): boolean {
  return kernelReads(k).includes(x) && inPlaceSafe(k, x, o);
}

/**
 * A target's view of planned donations: per kernel, the [input node, output node] pairs it writes in
 * place; and per output node, the graph input (and its node) whose buffer it takes.
 */
export function donationMaps(donations: readonly Donation[]): {
  inPlace: Map<number, [number, number][]>;
  aliases: Map<number, { readonly input: number; readonly node: number }>;
} {
  const inPlace = new Map<number, [number, number][]>();
  const aliases = new Map<number, { readonly input: number; readonly node: number }>();
  for (const d of donations) {
    if (d.inPlace) {
      let list = inPlace.get(d.kernel);
      if (!list) inPlace.set(d.kernel, (list = []));
      list.push([d.node, d.output]);
    }
    aliases.set(d.output, { input: d.input, node: d.node });
  }
  return { inPlace, aliases };
}

/**
 * Pairs donated inputs with outputs of the same dtype and (non-zero) size stored by a generated kernel,
 * greedily in input order then output order, in two passes: first updates (`isUpdate`) written by
 * the kernel making the input's last read (in place), then any output written no earlier than the
 * input's last read (or by that kernel when `safe` allows). Updates first: two params of one shape
 * are not paired crosswise, which would order each one's update after the other's. `lastUse` is the
 * memory plan's. The fusion planner's schedule (fusion.ts, `donationEdges`) makes the same pairs hold.
 */
export function planDonation(
  plan: FusionPlan,
  lastUse: ReadonlyMap<number, number>,
  donated: readonly boolean[],
  safe: InPlaceSafe = inPlaceSafe,
): Donation[] {
  const g = plan.graph;
  const out: Donation[] = [];
  if (!donated.some((d) => d)) return out;
  const producer = producers(plan);
  const taken = new Set<number>();
  const donors = g.nodes.filter((n) => n.op.kind === "input" && donated[n.op.index] && shapeSize(n.shape) > 0);
  const paired = new Set<number>();
  for (const updatesOnly of [true, false]) {
    for (const n of donors) {
      if (paired.has(n.id) || n.op.kind !== "input") continue;
      const last = lastUse.get(n.id) ?? -1;
      for (const o of g.outputs) {
        const on = g.node(o);
        const ko = producer.get(o);
        if (taken.has(o) || ko === undefined || on.dtype !== n.dtype || shapeSize(on.shape) !== shapeSize(n.shape)) continue;
        const k = plan.kernels[ko]!;
        if (updatesOnly ? last !== ko || !isUpdate(k, n.id, o) || !safe(k, n.id, o) : last > ko || (last === ko && !safe(k, n.id, o))) continue;
        taken.add(o);
        paired.add(n.id);
        out.push({ input: n.op.index, node: n.id, output: o, kernel: ko, inPlace: last === ko });
        break;
      }
    }
  }
  return out;
}

/**
 * @file The static memory plan of a fused program: every intermediate (a kernel result that is not an
 * output of the call) gets a slot; slots are reused by liveness (greedy, best fit by size), and the
 * target keeps the slots' buffers across calls. Backend-neutral: sizes come from the target's bytes per
 * element.
 */
import { shapeSize, type DType } from "../../autodiff/aval.js";
import type { FusionPlan, Kernel } from "./fusion.js";

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
}

export function planMemory(plan: FusionPlan, bytesPerElement: (d: DType) => number, align = 16): MemoryPlan {
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
  };
}

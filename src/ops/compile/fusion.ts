/**
 * @file Fusion: partitions a kernel graph (graph.ts) into kernels and describes each kernel's body as
 * `ScalarProgram`s (scalar-program.ts) over its iteration space. Backend-neutral; code generators
 * (src/ops/backend/webgpu/compile/) render the result.
 *
 * Kernel kinds:
 * - `map`: elementwise ops (with casts, `select`, constants, iota) over one iteration shape, any number
 *   of outputs of that shape.
 * - `reduce`: one or more reductions over the same input shape S and axes (kept shape K) with the
 *   elementwise ops feeding them (prologues), the per-row ops between them (`row` context, shape K) and
 *   the elementwise ops after them at shape S or K (epilogues). softmax, logsumexp and layer norm are
 *   each one kernel of this kind.
 * - `dot`: a dot_general with an elementwise epilogue at its output shape (bias, activation, residual).
 * - `opaque`: a kernel op the compiler does not generate (gather, sort, pad, ...), run by the backend.
 *
 * View ops are never materialised between fused ops: a consumer reads a producer through the views in
 * between by composing them into a strided layout (graph.ts) and evaluating the producer at the
 * positions the layout names (elementwise ops commute with views). Where that is impossible (a reshape
 * of a non-contiguous layout) the planner inserts a copy and plans again.
 *
 * Grouping rule (consumers first): a node joins its consumers' kernel when all of them are in one
 * kernel and the kinds allow it; otherwise it is materialised. Cheap elementwise ops on leaves are
 * recomputed in every consumer kernel instead.
 */
import { shapeEq, shapeSize, type DType, type Shape } from "../../autodiff/aval.js";
import type { DotDims, ReduceOp } from "../backend/kernel.js";
import { contiguousStrides, mergedStride } from "../backend/strides.js";
import { applyView, contiguousLayout, GNode, Graph, isElementwise, Layout, layoutKey, sameLayout, ViewOp } from "./graph.js";
import { inPlaceSafe, kernelReads, kernelWrites, type InPlaceSafe } from "./memory-plan.js";
import type { ScalarNode, ScalarProgram } from "./scalar-program.js";

// ---------------------------------------------------------------------------------------------------
// Kernel descriptions

/** What a program input (a `load`) reads. Layouts are over the program's iteration shape. */
export type Leaf =
  /** A materialised node's buffer (contiguous over the node's shape) read through `layout`. */
  | { readonly kind: "buffer"; readonly node: number; readonly layout: Layout }
  /** An iota: the value is `layout.offset + Σ c·layout.strides` converted to `dtype`. */
  | { readonly kind: "iota"; readonly layout: Layout }
  /** A value computed earlier in the same kernel: a reduction result, a row value, the dot accumulator. */
  | { readonly kind: "local"; readonly name: string };

export interface Program extends ScalarProgram {
  readonly leaves: readonly Leaf[];
}

export interface MapKernel {
  readonly kind: "map";
  readonly shape: Shape;
  readonly program: Program;
  /** Node stored by each program output (contiguous, C order). */
  readonly roots: readonly number[];
}

export interface ReduceStep {
  readonly node: number;
  readonly op: ReduceOp;
  readonly dtype: DType;
  /** The reduction's operand at each position of S; its result is the local `red<node>`. */
  readonly program: Program;
}

export interface ReduceKernel {
  readonly kind: "reduce";
  readonly shape: Shape;
  readonly axes: readonly number[];
  readonly kept: Shape;
  readonly steps: readonly ReduceStep[];
  /** Per-row outputs (shape K), computed after the reductions. */
  readonly row: Program;
  readonly rowRoots: readonly number[];
  /** Elementwise outputs at shape S, stored in a final loop (empty program when none). */
  readonly elem: Program;
  readonly elemRoots: readonly number[];
}

export interface DotKernel {
  readonly kind: "dot";
  readonly node: number;
  readonly dims: DotDims;
  readonly shape: Shape;
  readonly dtype: DType;
  /** Operands: buffers read through layouts over their own shapes. */
  readonly lhs: { readonly node: number; readonly layout: Layout };
  readonly rhs: { readonly node: number; readonly layout: Layout };
  /** Epilogue over the output shape; the local `acc` is the product. */
  readonly epilogue: Program;
  readonly roots: readonly number[];
}

export interface OpaqueKernel {
  readonly kind: "opaque";
  readonly node: number;
  /** Per input: the materialised node and the views applied to it. */
  readonly inputs: readonly { readonly node: number; readonly views: readonly ViewOp[] }[];
}

export type Kernel = MapKernel | ReduceKernel | DotKernel | OpaqueKernel;

/** A fused plan: kernels in execution order and what every output and node needs. */
export interface FusionPlan {
  readonly graph: Graph;
  readonly kernels: readonly Kernel[];
  /** Nodes whose values live in buffers: inputs, constants, roots of kernels, opaque results. */
  readonly materialized: ReadonlySet<number>;
  /** Planning passes it took (1 + the re-plans; a statistic). */
  readonly attempts: number;
}

// ---------------------------------------------------------------------------------------------------
// Planning

class Replan extends Error {
  constructor(
    readonly fix: {
      copyBefore?: { node: number; input: number };
      noJoin?: number[];
      fallback?: boolean;
      noMerge?: boolean;
      /** Nodes to materialise (one per kernel over the buffer limit). */
      force?: number[];
    },
  ) {
    super("replan");
  }
}

interface Group {
  kind: "map" | "reduce" | "dot" | "opaque";
  /** map: iteration shape; reduce: S; dot: output shape. */
  iter: Shape;
  axes: number[];
  kept: Shape;
  dot: number;
  reductions: number[];
  members: Set<number>;
  roots: number[];
  opaque: number;
  /** Made by multi-output merging (a failure there disables merging). */
  merged?: boolean;
}

const LEAF_KINDS = new Set(["input", "constant", "proj"]);

/** Equal shapes up to size-1 dims (the same elements in the same C order). */
export function squeezeEq(a: Shape, b: Shape): boolean {
  return shapeEq(
    a.filter((d) => d !== 1),
    b.filter((d) => d !== 1),
  );
}

/** Reads a node of a squeeze-equal shape at the positions of `iter` (a reshape that never fails). */
function asIter(shape: Shape, iter: Shape): Chain {
  return shapeEq(shape, iter) ? [] : [{ node: -1, op: { v: "reshape", shape: iter } }];
}
const CHEAP_KINDS = new Set(["full", "iota"]);

export interface FusionOptions {
  /** false: one kernel per op (debugging, comparisons). */
  readonly fuse?: boolean;
  /** Multi-output fusion of kernels with one iteration space (default true). */
  readonly merge?: boolean;
  /** Storage buffers a kernel may bind, its parameter block included (the adapter's limit). */
  readonly maxBuffers?: number;
  /**
   * Whether large float32 dot operands whose layout is valid but not vec4-friendly (columns not
   * contiguous, rows not 4-aligned) are repacked by a copy kernel first (default true). The WebGPU
   * target wants it (its matmul loads vec4); the CPU target does not (its packed GEMM copies operand
   * panels itself, so a repack only adds a pass over memory). Operands whose layout cannot be read
   * with [batch, rows, cols] strides are always copied.
   */
  readonly repackDots?: boolean;
  /**
   * Per graph input index: whether its buffer is donated (`jit(f, { donateArgnums })`). Kernels writing
   * an output that can take a donated input's buffer are ordered after the input's other readers, and
   * a reader of the input through a view is not merged into such a writer. Absent: every input is
   * treated as possibly donated for the ordering of its updates (kernels that read it at the element
   * they write an output of its size; an order that frees the input's other readers first costs no
   * memory: the output is allocated later by as much as the writer's operands are kept longer), and no
   * merge is refused.
   */
  readonly donated?: readonly boolean[];
  /** The target's rule for writing a donated input's buffer in the kernel making its last read (default: the strict one, memory-plan.ts). */
  readonly inPlaceSafe?: InPlaceSafe;
}

/** What the planner knows about donation (from `FusionOptions`). */
interface DonationOpts {
  /** Whether graph input `index` may be donated. */
  readonly donor: (index: number) => boolean;
  /** Whether merges that spoil a donation are refused (donation known, not assumed). */
  readonly known: boolean;
  readonly safe: InPlaceSafe;
}

/**
 * Builds the kernels of a graph (the graph may gain copy nodes). Planning is retried with a more
 * conservative setting whenever a fusion turns out impossible (a reshape that needs a copy, a read of
 * a kernel-local value at another position, a kernel over the buffer limit), down to one kernel per
 * op; it never produces a kernel it cannot express exactly.
 */
export function planFusion(graph: Graph, opts: FusionOptions = {}): FusionPlan {
  prepareOutputs(graph);
  prepareDots(graph, opts.repackDots !== false);
  prepareOpaque(graph);
  const forced = new Set<number>();
  const noJoin = new Set<number>();
  let fallback = opts.fuse === false;
  let merge = opts.merge !== false;
  const maxBuffers = opts.maxBuffers ?? 8;
  const donated = opts.donated;
  const donation: DonationOpts = {
    donor: donated ? (i) => donated[i] === true : () => true,
    known: donated !== undefined,
    safe: opts.inPlaceSafe ?? inPlaceSafe,
  };
  for (let attempt = 0; ; attempt++) {
    try {
      return { ...tryPlan(graph, forced, noJoin, fallback, merge, maxBuffers, donation), attempts: attempt + 1 };
    } catch (e) {
      if (!(e instanceof Replan) || attempt > 200) throw e;
      const f = e.fix;
      if (f.copyBefore) {
        // Materialise the reshape's operand: the node itself when it is computed here, else a copy.
        const src = graph.node(f.copyBefore.node).inputs[f.copyBefore.input]!;
        const s = graph.node(src);
        if ((isElementwise(s) || s.op.kind === "reduce" || s.op.kind === "dot") && !forced.has(src)) forced.add(src);
        else {
          const c = graph.add({ kind: "copy" }, [src], s.shape, s.dtype);
          graph.setInput(f.copyBefore.node, f.copyBefore.input, c);
          forced.add(c);
        }
      }
      for (const n of f.noJoin ?? []) noJoin.add(n);
      for (const n of f.force ?? []) forced.add(n);
      if (f.fallback) fallback = true;
      if (f.noMerge) merge = false;
    }
  }
}

/** Every output becomes a distinct node computed by a kernel (copies of inputs, views, constants). */
function prepareOutputs(g: Graph): void {
  const seen = new Set<number>();
  g.outputs = g.outputs.map((o) => {
    const n = g.node(o);
    const computed = isElementwise(n) || n.op.kind === "reduce" || n.op.kind === "dot" || n.op.kind === "proj";
    if (computed && !seen.has(o)) {
      seen.add(o);
      return o;
    }
    const c = g.add({ kind: "copy" }, [o], n.shape, n.dtype);
    seen.add(c);
    return c;
  });
}

/** Operands of backend-run ops must be buffers: constants (full, iota) feeding them are materialised. */
function prepareOpaque(g: Graph): void {
  for (const n of [...g.nodes]) {
    if (n.op.kind !== "opaque") continue;
    n.inputs.forEach((i, k) => {
      const src = g.node(g.viewSource(i).src);
      if (!CHEAP_KINDS.has(src.op.kind)) return;
      const x = g.node(i);
      g.setInput(n.id, k, g.add({ kind: "copy" }, [i], x.shape, x.dtype));
    });
  }
}

/** Where a dot operand reads its source, or null when a reshape needs a copy first. */
function operandLayout(g: Graph, id: number): { src: number; layout: Layout | null } {
  const { src, views } = g.viewSource(id);
  let l: Layout | null = contiguousLayout(g.node(src).shape);
  for (const v of views) {
    l = applyView(l, v.op);
    if (l === null) break;
  }
  return { src, layout: l };
}


/** Batch, row and column groups of a dot operand: lhs [batch, free, contracting], rhs [batch, contracting, free]. */
export function dotGroups(shape: Shape, dims: DotDims, side: 0 | 1): [number[], number[], number[]] {
  const c = dims.contracting[side];
  const b = dims.batch[side];
  const free = shape.map((_, d) => d).filter((d) => !c.includes(d) && !b.includes(d));
  return side === 0 ? [[...b], free, [...c]] : [[...b], [...c], free];
}

/** [batch, row, col] strides of a layout for the given groups, or null. */
export function matStrides(l: Layout, groups: [number[], number[], number[]]): [number, number, number] | null {
  const s = groups.map((ax) =>
    mergedStride(
      ax.map((a) => l.shape[a]!),
      ax.map((a) => l.strides[a]!),
    ),
  );
  return s.some((x) => x === null) ? null : (s as [number, number, number]);
}

/** Functions that cost tens of instructions per element (polynomials, range reduction). */
const COSTLY_UNARY = new Set<string>(["exp", "log", "tanh", "logistic", "sin", "cos", "erf", "erf_inv", "expm1", "log1p"]);
const COSTLY_BINARY = new Set<string>(["pow", "atan2"]);
/** A costly function is not recomputed in a kernel iterating over this many times its own size. */
const COSTLY_BROADCAST = 4;
const costly = (n: GNode): boolean =>
  (n.op.kind === "unary" && COSTLY_UNARY.has(n.op.fn)) || (n.op.kind === "binary" && COSTLY_BINARY.has(n.op.fn));

/**
 * Dot operands must be plain buffers read with [batch, rows, cols] strides; with `repack`, large float
 * products also want columns contiguous and rows 4-aligned (vec4 loads). Otherwise insert
 * transpose(copy(transpose(x))) so the copy lays the operand out as [batch, rows, cols].
 */
function prepareDots(g: Graph, repack: boolean): void {
  // transpose(dot(a, b)) that swaps the free dims is dot(b, a): compute it in the wanted layout.
  const users = g.users();
  for (const n of [...g.nodes]) {
    if (n.op.kind !== "dot" || users[n.id]!.length !== 1 || g.outputs.includes(n.id)) continue;
    const t = g.node(users[n.id]![0]!);
    if (t.op.kind !== "view" || t.op.view.v !== "transpose") continue;
    const dims = n.op.dims;
    const [lhs, rhs] = [g.node(n.inputs[0]!), g.node(n.inputs[1]!)];
    const nb = dims.batch[0].length;
    const nl = lhs.shape.length - nb - dims.contracting[0].length;
    const nr = rhs.shape.length - nb - dims.contracting[1].length;
    const want = [...Array.from({ length: nb }, (_, i) => i), ...Array.from({ length: nr }, (_, i) => nb + nl + i), ...Array.from({ length: nl }, (_, i) => nb + i)];
    if (t.op.view.perm.join() !== want.join()) continue;
    const swapped: DotDims = {
      contracting: [dims.contracting[1], dims.contracting[0]],
      batch: [dims.batch[1], dims.batch[0]],
    };
    const d2 = g.add({ kind: "dot", dims: swapped }, [rhs.id, lhs.id], t.shape, t.dtype);
    users[t.id]!.forEach((u) => g.node(u).inputs.forEach((x, k) => x === t.id && g.setInput(u, k, d2)));
    g.outputs = g.outputs.map((o) => (o === t.id ? d2 : o));
  }
  for (const n of [...g.nodes]) {
    if (n.op.kind !== "dot") continue;
    const dims = n.op.dims;
    [0, 1].forEach((side) => {
      const opnd = g.node(n.inputs[side]!);
      const groups = dotGroups(opnd.shape, dims, side as 0 | 1);
      const { src, layout } = operandLayout(g, opnd.id);
      const srcKind = g.node(src).op.kind;
      const isBuffer = LEAF_KINDS.has(srcKind) || !CHEAP_KINDS.has(srcKind);
      const st = layout && isBuffer ? matStrides(layout, groups) : null;
      const cols = shapeSize(groups[2].map((a) => opnd.shape[a]!));
      const [M, N, K] = [
        shapeSize(dotGroups(g.node(n.inputs[0]!).shape, dims, 0)[1].map((a) => g.node(n.inputs[0]!).shape[a]!)),
        shapeSize(dotGroups(g.node(n.inputs[1]!).shape, dims, 1)[2].map((a) => g.node(n.inputs[1]!).shape[a]!)),
        shapeSize(dims.contracting[0].map((a) => g.node(n.inputs[0]!).shape[a]!)),
      ];
      const big = n.dtype === "float32" && M * N * K >= 64 * 64 * 64 && M >= 4 && N >= 4;
      const vecOk = st !== null && st[2] === 1 && st[1] % 4 === 0 && st[0] % 4 === 0 && layout!.offset % 4 === 0;
      if (st !== null && (!repack || vecOk || !big || cols % 4 !== 0)) return;
      // Repack: copy the operand in [batch, rows, cols] order, then view it back in its own axis order.
      const perm = [...groups[0], ...groups[1], ...groups[2]];
      const inv: number[] = [];
      perm.forEach((p, i) => (inv[p] = i));
      const t = g.add({ kind: "view", view: { v: "transpose", perm } }, [opnd.id], perm.map((p) => opnd.shape[p]!), opnd.dtype);
      const c = g.add({ kind: "copy" }, [t], g.node(t).shape, opnd.dtype);
      const back = g.add({ kind: "view", view: { v: "transpose", perm: inv } }, [c], opnd.shape, opnd.dtype);
      g.setInput(n.id, side, back);
    });
  }
}

function tryPlan(
  graph: Graph,
  forced: Set<number>,
  noJoin: Set<number>,
  fallback: boolean,
  merge: boolean,
  maxBuffers: number,
  donation: DonationOpts,
): Omit<FusionPlan, "attempts"> {
  const order = graph.topo();
  const pos = new Map<number, number>();
  order.forEach((id, i) => pos.set(id, i));
  const users: number[][] = graph.nodes.map(() => []);
  for (const id of order) for (const i of graph.node(id).inputs) users[i]!.push(id);
  const outputs = new Set(graph.outputs);

  /** Use sites of a node through views: fusible consumers and whether some consumer needs a buffer. */
  const sites = (id: number): { fuse: number[]; mat: boolean } => {
    const fuse: number[] = [];
    let mat = false;
    const walk = (x: number) => {
      for (const u of users[x]!) {
        const k = graph.node(u).op.kind;
        if (k === "view") walk(u);
        else if (isElementwise(graph.node(u)) || k === "reduce") fuse.push(u);
        else mat = true;
      }
    };
    walk(id);
    return { fuse, mat };
  };

  /** A leaf-only elementwise op (cheap to recompute in each consumer kernel). */
  const leafOnly = (id: number): boolean =>
    graph.node(id).inputs.every((i) => {
      const s = graph.viewSource(i).src;
      const k = graph.node(s).op.kind;
      return LEAF_KINDS.has(k) || CHEAP_KINDS.has(k);
    });

  const groupOf = new Map<number, Group>();
  const inlined = new Set<number>();
  const groups: Group[] = [];
  const newGroup = (n: GNode): Group => {
    const k = n.op.kind;
    const g: Group = {
      kind: k === "reduce" ? "reduce" : k === "dot" ? "dot" : k === "opaque" ? "opaque" : "map",
      iter: k === "reduce" ? graph.node(n.inputs[0]!).shape : n.shape,
      axes: k === "reduce" && n.op.kind === "reduce" ? [...n.op.axes] : [],
      kept: n.shape,
      dot: k === "dot" ? n.id : -1,
      reductions: k === "reduce" ? [n.id] : [],
      members: new Set([n.id]),
      roots: k === "opaque" ? [] : [n.id],
      opaque: k === "opaque" ? n.id : -1,
    };
    groups.push(g);
    groupOf.set(n.id, g);
    return g;
  };

  const tryJoin = (n: GNode, g: Group, isOut: boolean): boolean => {
    const k = n.op.kind;
    if (isElementwise(n)) {
      if (isOut) {
        if (g.kind === "reduce") {
          if (!squeezeEq(n.shape, g.iter) && !squeezeEq(n.shape, g.kept)) return false;
        } else if (!squeezeEq(n.shape, g.iter)) return false;
      }
    } else if (k === "reduce" && n.op.kind === "reduce") {
      if (noJoin.has(n.id)) return false;
      const S = graph.node(n.inputs[0]!).shape;
      if (g.kind === "reduce") {
        if (!shapeEq(S, g.iter) || g.axes.join() !== n.op.axes.join()) return false;
      } else if (g.kind === "map") {
        const ok = g.roots.every((r) => squeezeEq(graph.node(r).shape, S) || squeezeEq(graph.node(r).shape, n.shape));
        if (!ok) return false;
        g.kind = "reduce";
        g.iter = S;
        g.axes = [...n.op.axes];
        g.kept = n.shape;
      } else return false;
      g.reductions.push(n.id);
    } else if (k === "dot") {
      if (noJoin.has(n.id) || g.kind !== "map" || !squeezeEq(g.iter, n.shape)) return false;
      g.kind = "dot";
      g.dot = n.id;
    } else return false;
    g.members.add(n.id);
    if (isOut) g.roots.push(n.id);
    groupOf.set(n.id, g);
    return true;
  };

  /** The iteration space of the kernel computing node `u` (its own shape if it has none yet). */
  const consumerIter = (u: number): readonly number[] => groupOf.get(u)?.iter ?? graph.node(u).shape;

  for (let i = order.length - 1; i >= 0; i--) {
    const n = graph.node(order[i]!);
    const k = n.op.kind;
    if (k === "opaque") {
      newGroup(n);
      continue;
    }
    if (!(isElementwise(n) || k === "reduce" || k === "dot")) continue;
    const { fuse, mat } = sites(n.id);
    const isOut = outputs.has(n.id);
    const gs = new Set(fuse.map((u) => groupOf.get(u)!).filter((x) => x !== undefined));
    // A costly function is computed once where its consumers would repeat it per element of a
    // broadcast (Adam's bias correction b1^t, a scalar, inside the [params] update kernel).
    const spread = costly(n) && fuse.some((u) => COSTLY_BROADCAST * shapeSize(n.shape) <= shapeSize(consumerIter(u)));
    const materialize = mat || forced.has(n.id) || fallback || spread;
    if (!materialize && gs.size === 1 && tryJoin(n, [...gs][0]!, isOut)) continue;
    if (!materialize && !isOut && gs.size > 1 && isElementwise(n) && leafOnly(n.id)) {
      inlined.add(n.id);
      continue;
    }
    newGroup(n);
  }

  /** Nodes a group reads from buffers (outside its members), through views and inlined ops. */
  const groupReads = (g: Group): Set<number> => {
    const acc = new Set<number>();
    const seen = new Set<number>();
    const walk = (id: number) => {
      if (seen.has(id)) return;
      seen.add(id);
      const n = graph.node(id);
      const k = n.op.kind;
      if (g.members.has(id)) return;
      if (k === "view" || inlined.has(id)) {
        for (const i of n.inputs) walk(i);
        return;
      }
      if (CHEAP_KINDS.has(k)) return;
      acc.add(id);
    };
    for (const m of g.members) for (const i of graph.node(m).inputs) walk(i);
    return acc;
  };
  /** The group producing a materialised node (none for inputs and constants). */
  const producer = (id: number): Group | undefined => {
    const n = graph.node(id);
    return n.op.kind === "proj" ? groupOf.get(n.inputs[0]!) : groupOf.get(id);
  };
  const computeDeps = (reads?: ReadonlyMap<Group, Set<number>>): Map<Group, Set<Group>> => {
    const deps = new Map<Group, Set<Group>>();
    for (const g of groups) {
      const acc = new Set<Group>();
      for (const r of reads?.get(g) ?? groupReads(g)) {
        const h = producer(r);
        if (h && h !== g) acc.add(h);
      }
      deps.set(g, acc);
    }
    return deps;
  };

  // Rematerialisation: a small elementwise kernel whose one result only feeds other fused kernels is
  // recomputed inside each of them (from its own inputs) instead of being stored and loaded (the
  // residuals of a GELU or a layer norm in a backward pass). One level deep, so work cannot snowball.
  if (!fallback) {
    for (const g of [...groups].reverse()) {
      if (g.kind !== "map" || g.roots.length !== 1 || g.members.size > 8) continue;
      const r = g.roots[0]!;
      if (outputs.has(r) || forced.has(r) || sites(r).mat) continue;
      const ms = [...g.members];
      if (!ms.every((m) => isElementwise(graph.node(m)) && graph.node(m).inputs.every((i) => !inlined.has(graph.viewSource(i).src) && !inlined.has(i)))) continue;
      if (groupReads(g).size > 3) continue;
      // Not when a consumer iterates over a broadcast of it and it evaluates a costly function: the
      // sin and cos of RoPE's [seq, dim/2] angles would run once per element of a [batch, seq, hidden]
      // kernel.
      if (ms.some((m) => costly(graph.node(m))) && sites(r).fuse.some((u) => COSTLY_BROADCAST * shapeSize(g.iter) <= shapeSize(consumerIter(u)))) continue;
      for (const m of ms) {
        inlined.add(m);
        groupOf.delete(m);
      }
      groups.splice(groups.indexOf(g), 1);
    }
  }

  /**
   * How group `g` reads node `x`: not at all, only directly (elementwise at the position it computes,
   * or as a reduction's operand), or otherwise (through views, as a matmul operand).
   */
  const readKind = (g: Group, x: number): "none" | "direct" | "other" => {
    let kind: "none" | "direct" | "other" = "none";
    const seen = new Set<string>();
    const walk = (id: number, via: boolean, operand: boolean) => {
      if (id === x) {
        if (via || operand) kind = "other";
        else if (kind === "none") kind = "direct";
        return;
      }
      const n = graph.node(id);
      const key = `${id}:${via}:${operand}`;
      if (g.members.has(id) || seen.has(key)) return;
      seen.add(key);
      if (n.op.kind === "view") for (const i of n.inputs) walk(i, true, operand);
      else if (inlined.has(id)) for (const i of n.inputs) walk(i, via, operand);
    };
    for (const mId of g.members) {
      const mn = graph.node(mId);
      for (const i of mn.inputs) walk(i, false, mn.op.kind === "dot");
    }
    return kind;
  };
  /** Donation candidates: per donated input node, the outputs of its dtype and size. */
  const candidates = new Map<number, Set<number>>();
  if (donation.known) {
    for (const n of graph.nodes) {
      if (n.op.kind !== "input" || !donation.donor(n.op.index) || shapeSize(n.shape) === 0) continue;
      const os = graph.outputs.filter((o) => graph.node(o).dtype === n.dtype && shapeSize(graph.node(o).shape) === shapeSize(n.shape));
      if (os.length > 0) candidates.set(n.id, new Set(os));
    }
  }
  /**
   * Whether merging `b` into a kernel with `a` would stop an output of `a` from taking a donated input's
   * buffer in place: `a` writes an output that could take input x's buffer and reads x (if at all) only
   * directly, `b` reads x otherwise (the repacking copy of a weight merged into its update's kernel).
   */
  const spoilsDonation = (a: Group, b: Group): boolean => {
    for (const [x, os] of candidates) {
      if (!a.roots.some((r) => os.has(r))) continue;
      if (readKind(a, x) !== "other" && readKind(b, x) === "other") return true;
    }
    return false;
  };

  // Multi-output fusion: a map kernel joins a kernel of the same iteration space that it reads from
  // (or that reads the same buffers), when that creates no cycle and stays within the buffer limit.
  if (merge && !fallback) {
    for (let round = 0; round < 1000; round++) {
      // Per round (the groups change only by the one merge that ends it): every group's reads, and
      // what each group reaches through its dependencies, as bitsets over group indices (a depth-first
      // closure; the plan so far is acyclic). Recomputing a walk per candidate pair made planning the
      // backward pass of a transformer block cost seconds.
      const readsOf = new Map<Group, Set<number>>();
      for (const g of groups) readsOf.set(g, groupReads(g));
      const deps = computeDeps(readsOf);
      // Who reads each buffer: a candidate partner shares a read with m or is one m reads from.
      const readers = new Map<number, Group[]>();
      for (const g of groups) for (const r of readsOf.get(g)!) (readers.get(r) ?? readers.set(r, []).get(r)!).push(g);
      const index = new Map<Group, number>();
      groups.forEach((g, i) => index.set(g, i));
      const words = Math.ceil(groups.length / 32);
      const closure = new Map<Group, Uint32Array>();
      const reachSet = (g: Group): Uint32Array => {
        let bits = closure.get(g);
        if (bits) return bits;
        bits = new Uint32Array(words);
        closure.set(g, bits); // a cycle (never expected) cannot recurse forever
        const i = index.get(g)!;
        bits[i >>> 5]! |= 1 << (i & 31);
        for (const d of deps.get(g)!) {
          const db = reachSet(d);
          for (let w = 0; w < words; w++) bits[w]! |= db[w]!;
        }
        return bits;
      };
      /** Whether `to` depends on `from`'s result, not counting the direct dependency when skipDirect. */
      const reaches = (from: Group, to: Group, skipDirect: boolean): boolean => {
        const t = index.get(to)!;
        for (const d of deps.get(from)!) {
          if (skipDirect && d === to) continue;
          if ((reachSet(d)[t >>> 5]! & (1 << (t & 31))) !== 0) return true;
        }
        return false;
      };
      let done = false;
      for (const m of groups) {
        if (m.kind !== "map" && m.kind !== "reduce") continue;
        const mReads = readsOf.get(m)!;
        const partners = new Set<Group>(deps.get(m)!);
        for (const r of mReads) for (const g of readers.get(r)!) partners.add(g);
        for (const p of groups) {
          if (p === m || p.kind === "opaque" || !partners.has(p)) continue;
          const shapeOk =
            m.kind === "reduce"
              ? p.kind === "reduce" && shapeEq(m.iter, p.iter) && m.axes.join() === p.axes.join()
              : p.kind === "reduce"
                ? squeezeEq(m.iter, p.iter) || squeezeEq(m.iter, p.kept)
                : squeezeEq(m.iter, p.iter);
          if (!shapeOk) continue;
          // A matmul's operands are read from buffers: their producer cannot run inside its kernel.
          if (p.kind === "dot" && graph.node(p.dot).inputs.some((i) => m.members.has(graph.viewSource(i).src))) continue;
          const pReads = readsOf.get(p)!;
          if (reaches(m, p, true) || reaches(p, m, true)) continue;
          if (donation.known && (spoilsDonation(m, p) || spoilsDonation(p, m))) continue;
          const reads = new Set([...mReads, ...pReads]);
          for (const x of [...p.members, ...m.members]) reads.delete(x);
          if (reads.size + p.roots.length + m.roots.length + 1 > maxBuffers) continue;
          for (const x of m.members) {
            p.members.add(x);
            groupOf.set(x, p);
          }
          p.roots.push(...m.roots);
          p.reductions.push(...m.reductions);
          p.merged = true;
          groups.splice(groups.indexOf(m), 1);
          done = true;
          break;
        }
        if (done) break;
      }
      if (!done) break;
    }
  }

  // Roots nobody outside the kernel reads are not stored (they stay kernel-internal values).
  const readOutside = new Set<number>();
  for (const g of groups) for (const r of groupReads(g)) readOutside.add(r);
  for (const g of groups) {
    if (g.kind === "opaque") continue;
    g.roots = g.roots.filter((r) => outputs.has(r) || readOutside.has(r));
  }
  const live = groups.filter((g) => g.kind === "opaque" || g.roots.length > 0);

  const materialized = new Set<number>();
  for (const id of order) {
    const k = graph.node(id).op.kind;
    if (LEAF_KINDS.has(k)) materialized.add(id);
  }
  for (const g of live) for (const r of g.roots) materialized.add(r);

  // Kernels that would bind more storage buffers than the adapter allows are split: in each, the
  // member reading the most buffers is materialised on its own (all such kernels in one re-plan).
  const split: number[] = [];
  for (const g of live) {
    if (g.kind === "opaque") continue;
    const reads = groupReads(g);
    if (reads.size + g.roots.length + 1 <= maxBuffers) continue;
    if (g.merged) throw new Replan({ noMerge: true });
    let best = -1;
    let bestCount = 0;
    for (const x of g.members) {
      if (!isElementwise(graph.node(x)) || g.roots.includes(x)) continue;
      const sub: Group = { ...g, members: new Set([...g.members].filter((y) => ctxDepends(graph, x, y, g.members))) };
      const c = groupReads(sub).size;
      if (c > bestCount) {
        best = x;
        bestCount = c;
      }
    }
    if (best < 0) throw new Replan({ fallback: true });
    split.push(best);
  }
  if (split.length > 0) throw new Replan({ force: split });

  // Order the kernels by their dependencies; a cycle means a bad fusion: plan again more carefully.
  // Depth first from the kernels in program order, each one right after what it reads (short
  // liveness for the memory plan); `extra` adds ordering edges (donation) on top of the data ones.
  const deps = computeDeps();
  const schedule = (extra?: ReadonlyMap<Group, ReadonlySet<Group>>): Group[] | null => {
    const sorted: Group[] = [];
    const state = new Map<Group, number>();
    let cyclic = false;
    const visit = (g: Group) => {
      const s = state.get(g);
      if (s === 2) return;
      if (s === 1) {
        cyclic = true;
        return;
      }
      state.set(g, 1);
      for (const d of deps.get(g)!) visit(d);
      for (const d of extra?.get(g) ?? []) visit(d);
      state.set(g, 2);
      sorted.push(g);
    };
    for (const g of [...live].reverse()) visit(g);
    return cyclic ? null : sorted;
  };
  const sorted = schedule();
  if (sorted === null) throw new Replan(live.some((g) => g.merged) ? { noMerge: true } : { fallback: true });

  const ctx: BuildCtx = { graph, groupOf, inlined, materialized, pos };
  const kernelOf = new Map<Group, Kernel>();
  for (const g of sorted) {
    try {
      kernelOf.set(g, buildKernel(ctx, g));
    } catch (e) {
      if (e instanceof Replan && g.merged) throw new Replan({ noMerge: true });
      throw e;
    }
  }
  const extra = donationEdges(graph, sorted, kernelOf, deps, donation);
  const scheduled = extra.size > 0 ? schedule(extra) : sorted;
  if (scheduled === null) throw new Error("planFusion: donation edges made a cycle (webgrad bug)");
  return { graph, kernels: scheduled.map((g) => kernelOf.get(g)!), materialized };
}

/**
 * Ordering edges for donation: inputs that may be donated are paired with outputs that could take
 * their buffers as `planDonation` (memory-plan.ts) pairs them (updates first, then any output; in
 * input order, then output order), and the kernel writing each paired output is made to run after
 * every other kernel reading the input, when none of those depends on the writer. Donation then
 * applies whatever the program order: an SGD update computed before a backward matmul that still
 * reads the old parameter no longer blocks the in-place write. Returns writer -> the readers it must
 * follow. With the donation unknown only updates are paired (a non-donated input's pairing must not
 * block a real one).
 */
function donationEdges(
  graph: Graph,
  groups: readonly Group[],
  kernelOf: ReadonlyMap<Group, Kernel>,
  deps: ReadonlyMap<Group, ReadonlySet<Group>>,
  donation: DonationOpts,
): Map<Group, Set<Group>> {
  const extra = new Map<Group, Set<Group>>();
  const donors = graph.nodes.filter((n) => n.op.kind === "input" && donation.donor(n.op.index) && shapeSize(n.shape) > 0);
  if (donors.length === 0) return extra;
  const writer = new Map<number, Group>();
  const readers = new Map<number, Group[]>();
  for (const g of groups) {
    const k = kernelOf.get(g)!;
    for (const r of kernelWrites(k)) writer.set(r, g);
    for (const r of kernelReads(k)) {
      let list = readers.get(r);
      if (!list) readers.set(r, (list = []));
      list.push(g);
    }
  }
  // Reverse edges (data and extra): who must run after each kernel.
  const after = new Map<Group, Set<Group>>(groups.map((g) => [g, new Set<Group>()]));
  for (const g of groups) for (const d of deps.get(g) ?? []) after.get(d)?.add(g);
  /** Whether any of `rs` depends (transitively, data or extra edges) on `w`. */
  const anyDependsOn = (rs: readonly Group[], w: Group): boolean => {
    if (rs.length === 0) return false;
    const targets = new Set(rs);
    const stack = [...after.get(w)!];
    const seen = new Set<Group>();
    while (stack.length) {
      const x = stack.pop()!;
      if (targets.has(x)) return true;
      if (seen.has(x)) continue;
      seen.add(x);
      for (const y of after.get(x) ?? []) stack.push(y);
    }
    return false;
  };
  const taken = new Set<number>();
  const paired = new Set<number>();
  for (const updatesOnly of donation.known ? [true, false] : [true]) {
    for (const x of donors) {
      if (paired.has(x.id)) continue;
      const rs = readers.get(x.id) ?? [];
      for (const o of graph.outputs) {
        const on = graph.node(o);
        const w = writer.get(o);
        if (taken.has(o) || w === undefined || on.dtype !== x.dtype || shapeSize(on.shape) !== shapeSize(x.shape)) continue;
        const k = kernelOf.get(w)!;
        const reads = rs.includes(w);
        // an update (memory-plan.ts `isUpdate`): w reads x, only at the element it writes
        if (updatesOnly ? !reads || !inPlaceSafe(k, x.id, o) || !donation.safe(k, x.id, o) : reads && !donation.safe(k, x.id, o)) continue;
        const others = rs.filter((r) => r !== w);
        if (anyDependsOn(others, w)) continue;
        taken.add(o);
        paired.add(x.id);
        if (others.length === 0) break;
        let list = extra.get(w);
        if (!list) extra.set(w, (list = new Set()));
        for (const r of others) {
          list.add(r);
          after.get(r)!.add(w);
        }
        break;
      }
    }
  }
  return extra;
}

/** Whether `y` is `x` or one of its inputs within `members` (transitively). */
function ctxDepends(graph: Graph, x: number, y: number, members: ReadonlySet<number>): boolean {
  if (x === y) return true;
  const stack = [x];
  const seen = new Set<number>();
  while (stack.length) {
    const n = stack.pop()!;
    if (n === y) return true;
    if (seen.has(n)) continue;
    seen.add(n);
    for (const i of graph.node(n).inputs) {
      const k = graph.node(i).op.kind;
      if (members.has(i) || k === "view") stack.push(i);
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------------------
// Programs

interface BuildCtx {
  readonly graph: Graph;
  readonly groupOf: Map<number, Group>;
  readonly inlined: Set<number>;
  readonly materialized: Set<number>;
  readonly pos: Map<number, number>;
}

type Chain = readonly { readonly node: number; readonly op: ViewOp }[];

/** Applies views to a layout; a failing reshape asks for a copy before it. */
function applyChain(l: Layout, chain: Chain): Layout {
  let cur = l;
  for (const c of chain) {
    const next = applyView(cur, c.op);
    if (next === null) throw new Replan({ copyBefore: { node: c.node, input: 0 } });
    cur = next;
  }
  return cur;
}

/** The layout over S that reads a K-shaped row value at every position of its row. */
function rowLayout(S: Shape, axes: readonly number[], K: Shape): Layout {
  const ks = contiguousStrides(K);
  let k = 0;
  return { shape: S, strides: S.map((_, d) => (axes.includes(d) ? 0 : ks[k++]!)), offset: 0 };
}

/** How a kernel resolves nodes that are computed inside it rather than loaded. */
interface Resolver {
  /** A local for `node` read through `layout` (over the iteration shape), or undefined to compute / load. */
  local(node: number, layout: Layout): string | undefined;
}

class ProgramBuilder {
  readonly nodes: ScalarNode[] = [];
  readonly inputs: { dtype: DType }[] = [];
  readonly leaves: Leaf[] = [];
  readonly outputs: number[] = [];
  private readonly memo = new Map<string, number>();
  private readonly leafMemo = new Map<string, number>();

  constructor(
    readonly ctx: BuildCtx,
    readonly group: Group,
    readonly shape: Shape,
    readonly resolver: Resolver,
  ) {}

  private push(n: ScalarNode): number {
    this.nodes.push(n);
    return this.nodes.length - 1;
  }

  private leaf(leaf: Leaf, dtype: DType): number {
    const key = `${leaf.kind}:${leaf.kind === "local" ? leaf.name : `${leaf.kind === "buffer" ? leaf.node : ""}@${layoutKey(leaf.layout)}`}:${dtype}`;
    let i = this.leafMemo.get(key);
    if (i === undefined) {
      this.leaves.push(leaf);
      this.inputs.push({ dtype });
      i = this.push({ op: "load", input: this.leaves.length - 1, dtype });
      this.leafMemo.set(key, i);
    }
    return i;
  }

  /** The SSA index of `id`'s value at each iteration position, reading it through `chain`. */
  value(id: number, chain: Chain = []): number {
    const g = this.ctx.graph;
    const n = g.node(id);
    if (n.op.kind === "view") return this.value(n.inputs[0]!, [{ node: id, op: n.op.view }, ...chain]);
    if (n.op.kind === "full") return this.push({ op: "const", value: n.op.value, dtype: n.dtype });
    if (n.op.kind === "iota") {
      const dim = n.op.dim;
      const base: Layout = { shape: n.shape, strides: n.shape.map((_, d) => (d === dim ? 1 : 0)), offset: 0 };
      return this.leaf({ kind: "iota", layout: applyChain(base, chain) }, n.dtype);
    }
    const layout = applyChain(contiguousLayout(n.shape), chain);
    const key = `${id}@${layoutKey(layout)}`;
    const hit = this.memo.get(key);
    if (hit !== undefined) return hit;
    let out: number;
    const local = this.resolver.local(id, layout);
    const member = this.group.members.has(id) || this.ctx.inlined.has(id);
    if (local !== undefined) out = this.leaf({ kind: "local", name: local }, n.dtype);
    else if (!member || !isElementwise(n)) {
      if (!this.ctx.materialized.has(id)) throw new Replan({ fallback: true });
      out = this.leaf({ kind: "buffer", node: id, layout }, n.dtype);
    } else if (n.op.kind === "pad" || n.op.kind === "concat") {
      out = n.op.kind === "pad" ? this.pad(n, n.op.value, n.op.lo, chain) : this.concat(n, n.op.axis, chain);
    } else {
      const ins = n.inputs.map((i) => this.value(i, chain));
      switch (n.op.kind) {
        case "unary":
          out = this.push({ op: "unary", fn: n.op.fn, x: ins[0]!, dtype: n.dtype });
          break;
        case "binary":
          out = this.push({ op: "binary", fn: n.op.fn, x: ins[0]!, y: ins[1]!, dtype: n.dtype });
          break;
        case "select":
          out = this.push({ op: "select", pred: ins[0]!, onTrue: ins[1]!, onFalse: ins[2]!, dtype: n.dtype });
          break;
        case "cast":
          out = this.push({ op: "cast", x: ins[0]!, dtype: n.dtype });
          break;
        case "bitcast":
          out = this.push({ op: "bitcast", x: ins[0]!, dtype: n.dtype });
          break;
        case "copy":
          out = ins[0]!;
          break;
        default:
          throw new Replan({ fallback: true });
      }
    }
    this.memo.set(key, out);
    return out;
  }

  /** The int32 coordinate along `dim` of node `n`'s output at each iteration position. */
  private coord(n: GNode, dim: number, chain: Chain): number {
    const base: Layout = { shape: n.shape, strides: n.shape.map((_, d) => (d === dim ? 1 : 0)), offset: 0 };
    return this.leaf({ kind: "iota", layout: applyChain(base, chain) }, "int32");
  }

  private constI(v: number): number {
    return this.push({ op: "const", value: v, dtype: "int32" });
  }

  /** pad: the operand read at c - lo, selected where c is inside it (reads outside are discarded). */
  private pad(n: GNode, value: number, lo: readonly number[], chain: Chain): number {
    const x = this.ctx.graph.node(n.inputs[0]!);
    const xv = this.value(x.id, [{ node: n.id, op: { v: "shift", shape: n.shape, lo } }, ...chain]);
    let pred = -1;
    n.shape.forEach((size, d) => {
      const l = lo[d]!;
      const inside: number[] = [];
      const c = () => this.coord(n, d, chain);
      if (l > 0) inside.push(this.push({ op: "binary", fn: "ge", x: c(), y: this.constI(l), dtype: "bool" }));
      if (l + x.shape[d]! < size) inside.push(this.push({ op: "binary", fn: "lt", x: c(), y: this.constI(l + x.shape[d]!), dtype: "bool" }));
      for (const b of inside) pred = pred < 0 ? b : this.push({ op: "binary", fn: "and", x: pred, y: b, dtype: "bool" });
    });
    if (pred < 0) return xv;
    return this.push({ op: "select", pred, onTrue: xv, onFalse: this.push({ op: "const", value, dtype: n.dtype }), dtype: n.dtype });
  }

  /** concatenate: piece k read at c - start_k along the axis, chosen by where c falls. */
  private concat(n: GNode, axis: number, chain: Chain): number {
    const g = this.ctx.graph;
    const pieces: { id: number; end: number; lo: number[] }[] = [];
    let at = 0;
    for (const i of n.inputs) {
      const len = g.node(i).shape[axis]!;
      if (len > 0) pieces.push({ id: i, end: at + len, lo: n.shape.map((_, d) => (d === axis ? at : 0)) });
      at += len;
    }
    if (pieces.length === 0) return this.push({ op: "const", value: 0, dtype: n.dtype });
    const c = this.coord(n, axis, chain);
    let out = -1;
    for (let k = pieces.length - 1; k >= 0; k--) {
      const p = pieces[k]!;
      const v = this.value(p.id, [{ node: n.id, op: { v: "shift", shape: n.shape, lo: p.lo } }, ...chain]);
      if (out < 0) out = v;
      else {
        const pred = this.push({ op: "binary", fn: "lt", x: c, y: this.constI(p.end), dtype: "bool" });
        out = this.push({ op: "select", pred, onTrue: v, onFalse: out, dtype: n.dtype });
      }
    }
    return out;
  }

  program(): Program {
    return { shape: this.shape, inputs: [...this.inputs], nodes: [...this.nodes], outputs: [...this.outputs], leaves: [...this.leaves] };
  }
}

function buildKernel(ctx: BuildCtx, g: Group): Kernel {
  const graph = ctx.graph;
  switch (g.kind) {
    case "opaque": {
      const n = graph.node(g.opaque);
      return {
        kind: "opaque",
        node: n.id,
        inputs: n.inputs.map((i) => {
          const { src, views } = graph.viewSource(i);
          if (!ctx.materialized.has(src)) throw new Replan({ fallback: true });
          return { node: src, views: views.map((v) => v.op) };
        }),
      };
    }
    case "map": {
      const pb = new ProgramBuilder(ctx, g, g.iter, { local: () => undefined });
      for (const r of g.roots) pb.outputs.push(pb.value(r, asIter(graph.node(r).shape, g.iter)));
      return { kind: "map", shape: g.iter, program: pb.program(), roots: [...g.roots] };
    }
    case "dot": {
      const d = graph.node(g.dot);
      if (d.op.kind !== "dot") throw new Replan({ fallback: true });
      const ident = contiguousLayout(d.shape);
      const pb = new ProgramBuilder(ctx, g, d.shape, {
        local: (node, layout) => {
          if (node !== d.id) return undefined;
          if (!sameLayout(layout, ident)) throw new Replan({ noJoin: [d.id] });
          return "acc";
        },
      });
      for (const r of g.roots) pb.outputs.push(pb.value(r, asIter(graph.node(r).shape, d.shape)));
      const operand = (i: number) => {
        const { src, layout } = operandLayout(graph, d.inputs[i]!);
        if (layout === null || !ctx.materialized.has(src)) throw new Replan({ fallback: true });
        return { node: src, layout };
      };
      return {
        kind: "dot",
        node: d.id,
        dims: d.op.dims,
        shape: d.shape,
        dtype: d.dtype,
        lhs: operand(0),
        rhs: operand(1),
        epilogue: pb.program(),
        roots: [...g.roots],
      };
    }
    case "reduce": {
      const S = g.iter;
      const K = g.kept;
      const reds = [...g.reductions].sort((a, b) => ctx.pos.get(a)! - ctx.pos.get(b)!);
      const redSet = new Set(reds);
      // Elementwise members are evaluated wherever they are read (per element, or per row after the
      // reductions); only the reductions are kernel locals, read at their own row.
      const rowL = rowLayout(S, g.axes, K);
      const identK = contiguousLayout(K);
      const rowPb = new ProgramBuilder(ctx, g, K, {
        local: (node, layout) => {
          if (!redSet.has(node)) return undefined;
          if (!sameLayout(layout, identK)) throw new Replan({ noJoin: reds });
          return `red${node}`;
        },
      });
      const elemResolver: Resolver = {
        local: (node, layout) => {
          if (!redSet.has(node)) return undefined;
          if (!sameLayout(layout, rowL)) throw new Replan({ noJoin: reds });
          return `red${node}`;
        },
      };
      const done = new Set<number>();
      const steps: ReduceStep[] = reds.map((r) => {
        const n = graph.node(r);
        if (n.op.kind !== "reduce") throw new Replan({ fallback: true });
        // A reduction reads only reductions computed before it (topological order).
        const pb = new ProgramBuilder(ctx, g, S, {
          local: (node, layout) => {
            const name = elemResolver.local(node, layout);
            if (name !== undefined && !done.has(node)) throw new Replan({ noJoin: reds });
            return name;
          },
        });
        pb.outputs.push(pb.value(n.inputs[0]!));
        done.add(r);
        return { node: r, op: n.op.fn, dtype: n.dtype, program: pb.program() };
      });
      const rowRoots: number[] = [];
      const elemRoots: number[] = [];
      const elemPb = new ProgramBuilder(ctx, g, S, elemResolver);
      for (const r of g.roots) {
        const shape = graph.node(r).shape;
        const isRow = squeezeEq(shape, K) && (redSet.has(r) || !squeezeEq(shape, S));
        if (isRow) {
          rowRoots.push(r);
          rowPb.outputs.push(rowPb.value(r, asIter(shape, K)));
        } else {
          if (!squeezeEq(shape, S)) throw new Replan({ noJoin: reds });
          elemRoots.push(r);
          elemPb.outputs.push(elemPb.value(r, asIter(shape, S)));
        }
      }
      return {
        kind: "reduce",
        shape: S,
        axes: g.axes,
        kept: K,
        steps,
        row: rowPb.program(),
        rowRoots,
        elem: elemPb.program(),
        elemRoots,
      };
    }
    default:
      return g.kind satisfies never;
  }
}

/** Short description of a plan (WEBGRAD_DEBUG and tests). */
export function describePlan(p: FusionPlan): string {
  return p.kernels
    .map((k, i) => {
      switch (k.kind) {
        case "map":
          return `k${i}: map [${k.shape.join(",")}] ${k.program.nodes.length} ops -> %${k.roots.join(", %")}`;
        case "reduce":
          return `k${i}: reduce [${k.shape.join(",")}] axes (${k.axes.join(",")}) ${k.steps.length} reductions -> %${[...k.rowRoots, ...k.elemRoots].join(", %")}`;
        case "dot":
          return `k${i}: dot [${k.shape.join(",")}] epilogue ${k.epilogue.nodes.length} ops -> %${k.roots.join(", %")}`;
        case "opaque": {
          const n = p.graph.node(k.node);
          return `k${i}: ${n.op.kind === "opaque" ? n.op.name : "?"} (backend)`;
        }
        default:
          return k satisfies never;
      }
    })
    .join("\n");
}

/**
 * @file The jit compiler's kernel graph: one node per kernel op (src/ops/backend/kernel.ts), recorded by
 * running each primitive's `lower` rule on a `GraphBuilder` (a `KernelBuilder` whose handles are node
 * ids). Backend-neutral: fusion (fusion.ts), the memory plan (memory-plan.ts) and every code generator
 * read this graph. Also the layout algebra of the view ops (a strided map from iteration coordinates
 * to a node's C-order linear index), which is how fusion pushes reshapes, transposes, broadcasts,
 * slices and reverses down to the loads instead of materialising them.
 *
 * Read kernel.ts first, then this file, then fusion.ts.
 */
import { shapeSize, type DType, type Shape } from "../../autodiff/aval.js";
import { BackendError, ShapeError } from "../../autodiff/errors.js";
import type {
  AnyTypedArray,
  ArgReduceOp,
  BinaryOp,
  CumulativeOp,
  DotDims,
  KernelBuilder,
  OutType,
  ReduceOp,
  UnaryOp,
} from "../backend/kernel.js";
import { COMPARISON_OPS } from "../backend/kernel.js";
import { contiguousStrides, padShape, reshapeStrides } from "../backend/strides.js";

// ---------------------------------------------------------------------------------------------------
// Views and layouts

/** A view op, as kernel.ts defines it (no data movement). */
export type ViewOp =
  | { readonly v: "reshape"; readonly shape: Shape }
  | { readonly v: "transpose"; readonly perm: readonly number[] }
  | { readonly v: "broadcast"; readonly shape: Shape; readonly dims: readonly number[] }
  | {
      readonly v: "slice";
      readonly starts: readonly number[];
      readonly limits: readonly number[];
      readonly strides: readonly number[];
    }
  | { readonly v: "reverse"; readonly axes: readonly number[] }
  /**
   * Position c of `shape` reads the operand at c - lo (unchecked: pad and concatenate mask the
   * positions outside the operand). Never a graph node; fusion uses it to read pad / concat operands.
   */
  | { readonly v: "shift"; readonly shape: Shape; readonly lo: readonly number[] };

/**
 * A strided map over `shape`: position c maps to `offset + Σ c[d]·strides[d]` (a buffer element, or for
 * iota the coordinate value). Starting from a node's contiguous layout and applying the views between
 * it and a consumer gives where the consumer reads it.
 */
export interface Layout {
  readonly shape: Shape;
  readonly strides: readonly number[];
  readonly offset: number;
}

export function contiguousLayout(shape: Shape): Layout {
  return { shape, strides: contiguousStrides(shape), offset: 0 };
}

/**
 * Applies a view op to a device buffer through a backend's own view ops (targets use it for the
 * operands of ops they run on the backend rather than generate).
 */
export function applyViewOp<H>(b: KernelBuilder<H>, h: H, v: ViewOp): H {
  switch (v.v) {
    case "reshape":
      return b.reshape(h, v.shape);
    case "transpose":
      return b.transpose(h, v.perm);
    case "broadcast":
      return b.broadcastInDim(h, v.shape, v.dims);
    case "slice":
      return b.slice(h, v.starts, v.limits, v.strides);
    case "reverse":
      return b.reverse(h, v.axes);
    case "shift":
      throw new BackendError("jit: a shift view reached a backend-run op (webgrad bug)");
    default:
      return v satisfies never;
  }
}

/** Applies one view to a layout; null when a reshape cannot be expressed with strides. */
export function applyView(l: Layout, op: ViewOp): Layout | null {
  switch (op.v) {
    case "reshape": {
      const st = reshapeStrides(l.shape, l.strides, op.shape);
      return st === null ? null : { shape: op.shape, strides: st, offset: l.offset };
    }
    case "transpose":
      return { shape: op.perm.map((p) => l.shape[p]!), strides: op.perm.map((p) => l.strides[p]!), offset: l.offset };
    case "broadcast": {
      const strides = new Array<number>(op.shape.length).fill(0);
      op.dims.forEach((d, i) => {
        if (l.shape[i] === op.shape[d]) strides[d] = l.strides[i]!;
      });
      return { shape: op.shape, strides, offset: l.offset };
    }
    case "slice": {
      const shape: number[] = [];
      const strides: number[] = [];
      let offset = l.offset;
      for (let d = 0; d < l.shape.length; d++) {
        const n = Math.max(0, Math.ceil((op.limits[d]! - op.starts[d]!) / op.strides[d]!));
        shape.push(n);
        strides.push(l.strides[d]! * op.strides[d]!);
        if (n > 0) offset += op.starts[d]! * l.strides[d]!;
      }
      return { shape, strides, offset };
    }
    case "reverse": {
      const strides = [...l.strides];
      let offset = l.offset;
      for (const a of op.axes) {
        const n = l.shape[a]!;
        if (n > 0) offset += (n - 1) * strides[a]!;
        strides[a] = -strides[a]!;
      }
      return { shape: l.shape, strides, offset };
    }
    case "shift": {
      let offset = l.offset;
      op.lo.forEach((lo, d) => (offset -= lo * l.strides[d]!));
      return { shape: op.shape, strides: l.strides, offset };
    }
    default:
      return op satisfies never;
  }
}

/** Output shape of a view applied to `shape`. */
export function viewShape(shape: Shape, op: ViewOp): Shape {
  return applyView({ shape, strides: shape.map(() => 0), offset: 0 }, op)!.shape;
}

/** Whether two layouts over the same shape address the same elements (strides of size-1 dims ignored). */
export function sameLayout(a: Layout, b: Layout): boolean {
  if (a.shape.length !== b.shape.length) return false;
  if (shapeSize(a.shape) === 0) return true;
  if (a.offset !== b.offset) return false;
  return a.shape.every((n, d) => n === b.shape[d] && (n === 1 || a.strides[d] === b.strides[d]));
}

export function layoutKey(l: Layout): string {
  return `${l.offset}:${l.strides.join(",")}`;
}

// ---------------------------------------------------------------------------------------------------
// Nodes

/** What a node computes. Elementwise kinds take operands of the node's shape. */
/** How an opaque node runs: the builder method called on real buffers. */
export type OpaqueRun = <H>(b: KernelBuilder<H>, inputs: readonly H[]) => H[];

export type NodeOp =
  /** A buffer given at run time (an argument of the compiled segment). */
  | { readonly kind: "input"; readonly index: number }
  /** Host data, uploaded once when the plan is built. */
  | { readonly kind: "constant"; readonly data: AnyTypedArray }
  | { readonly kind: "full"; readonly value: number }
  | { readonly kind: "iota"; readonly dim: number }
  | { readonly kind: "unary"; readonly fn: UnaryOp }
  | { readonly kind: "binary"; readonly fn: BinaryOp }
  | { readonly kind: "select" }
  | { readonly kind: "cast" }
  | { readonly kind: "bitcast" }
  /** Identity; inserted by the compiler where a value must be materialised (outputs, repacking). */
  | { readonly kind: "copy" }
  /** pad without interior padding: the operand at c - lo where inside it, else `value`. */
  | { readonly kind: "pad"; readonly value: number; readonly lo: readonly number[] }
  /** concatenate along `axis`. */
  | { readonly kind: "concat"; readonly axis: number }
  | { readonly kind: "reduce"; readonly fn: ReduceOp; readonly axes: readonly number[] }
  | { readonly kind: "dot"; readonly dims: DotDims }
  | { readonly kind: "view"; readonly view: ViewOp }
  /**
   * Any other kernel op, run through the backend's own implementation on real buffers: `run` calls
   * the builder method. Results are read with `proj` nodes.
   */
  | {
      readonly kind: "opaque";
      readonly name: string;
      readonly outs: readonly OutType[];
      readonly run: OpaqueRun;
    }
  | { readonly kind: "proj"; readonly index: number };

export interface GNode {
  readonly id: number;
  readonly op: NodeOp;
  readonly inputs: readonly number[];
  readonly shape: Shape;
  readonly dtype: DType;
}

/** Ops evaluated per output element (pad and concat read their operands at shifted positions). */
export const ELEMENTWISE: ReadonlySet<NodeOp["kind"]> = new Set(["unary", "binary", "select", "cast", "bitcast", "copy", "pad", "concat"]);

export function isElementwise(n: GNode): boolean {
  return ELEMENTWISE.has(n.op.kind);
}

/** The kernel graph of one compiled segment: nodes in topological order (ids are indices). */
export class Graph {
  readonly nodes: GNode[] = [];
  /** Node ids of the segment's results, in order. */
  outputs: number[] = [];
  /** Number of `input` nodes. */
  numInputs = 0;

  add(op: NodeOp, inputs: readonly number[], shape: Shape, dtype: DType): number {
    const id = this.nodes.length;
    this.nodes.push({ id, op, inputs, shape: [...shape], dtype });
    return id;
  }

  node(id: number): GNode {
    return this.nodes[id]!;
  }

  /** Redirects input `k` of node `id` to `to` (the compiler inserting copies). */
  setInput(id: number, k: number, to: number): void {
    const n = this.nodes[id]!;
    const inputs = [...n.inputs];
    inputs[k] = to;
    this.nodes[id] = { ...n, inputs };
  }

  /** Node ids in a topological order (inputs before users), only those reachable from the outputs. */
  topo(): number[] {
    const seen = new Uint8Array(this.nodes.length);
    const order: number[] = [];
    const visit = (root: number) => {
      const stack: [number, number][] = [[root, 0]];
      while (stack.length) {
        const top = stack[stack.length - 1]!;
        const [id, k] = top;
        if (k === 0) {
          if (seen[id]) {
            stack.pop();
            continue;
          }
          seen[id] = 1;
        }
        const ins = this.nodes[id]!.inputs;
        if (k < ins.length) {
          top[1]++;
          if (!seen[ins[k]!]) stack.push([ins[k]!, 0]);
        } else {
          order.push(id);
          stack.pop();
        }
      }
    };
    for (const o of this.outputs) visit(o);
    return order;
  }

  /** Consumers of each node. */
  users(): number[][] {
    const u: number[][] = this.nodes.map(() => []);
    for (const n of this.nodes) for (const i of n.inputs) u[i]!.push(n.id);
    return u;
  }

  /** Follows view nodes back to the first non-view node, returning it and the views in apply order. */
  viewSource(id: number): { src: number; views: { node: number; op: ViewOp }[] } {
    const views: { node: number; op: ViewOp }[] = [];
    let n = this.node(id);
    while (n.op.kind === "view") {
      views.unshift({ node: n.id, op: n.op.view });
      n = this.node(n.inputs[0]!);
    }
    return { src: n.id, views };
  }

  /** A readable listing (WEBGRAD_DEBUG). */
  toString(): string {
    return this.nodes
      .map((n) => {
        const { kind } = n.op;
        let what: string = kind;
        if (kind === "unary" || kind === "binary") what = n.op.fn;
        else if (kind === "reduce") what = `reduce_${n.op.fn}[${n.op.axes.join(",")}]`;
        else if (kind === "view") what = `${n.op.view.v}`;
        else if (kind === "opaque") what = `opaque:${n.op.name}`;
        else if (kind === "full") what = `full(${n.op.value})`;
        else if (kind === "input") what = `input#${n.op.index}`;
        return `%${n.id} = ${what}(${n.inputs.map((i) => `%${i}`).join(", ")}) : ${n.dtype}[${n.shape.join(",")}]`;
      })
      .join("\n");
  }
}

// ---------------------------------------------------------------------------------------------------
// The recording builder

/**
 * Records kernel ops as graph nodes. Shapes and dtypes follow kernel.ts; inputs were validated by the
 * primitives' abstractEval, so only the output types are derived here.
 */
export class GraphBuilder implements KernelBuilder<number> {
  constructor(readonly g: Graph) {}

  typeOf(x: number): OutType {
    const n = this.g.node(x);
    return { shape: n.shape, dtype: n.dtype };
  }
  full(out: OutType, value: number): number {
    return this.g.add({ kind: "full", value }, [], out.shape, out.dtype);
  }
  constant(data: AnyTypedArray, out: OutType): number {
    return this.g.add({ kind: "constant", data }, [], out.shape, out.dtype);
  }
  iota(out: OutType, dim: number): number {
    return this.g.add({ kind: "iota", dim }, [], out.shape, out.dtype);
  }
  unary(fn: UnaryOp, x: number, out: OutType): number {
    return this.g.add({ kind: "unary", fn }, [x], out.shape, out.dtype);
  }
  binary(fn: BinaryOp, x: number, y: number, out: OutType): number {
    return this.g.add({ kind: "binary", fn }, [x, y], out.shape, COMPARISON_OPS.has(fn) ? "bool" : out.dtype);
  }
  select(pred: number, onTrue: number, onFalse: number): number {
    const t = this.g.node(onTrue);
    return this.g.add({ kind: "select" }, [pred, onTrue, onFalse], t.shape, t.dtype);
  }
  cast(x: number, dtype: DType): number {
    return this.g.add({ kind: "cast" }, [x], this.g.node(x).shape, dtype);
  }
  bitcast(x: number, dtype: DType): number {
    return this.g.add({ kind: "bitcast" }, [x], this.g.node(x).shape, dtype);
  }
  reduce(fn: ReduceOp, x: number, axes: readonly number[], out: OutType): number {
    return this.g.add({ kind: "reduce", fn, axes: [...axes] }, [x], out.shape, out.dtype);
  }
  dotGeneral(x: number, y: number, dims: DotDims, out: OutType): number {
    return this.g.add({ kind: "dot", dims }, [x, y], out.shape, out.dtype);
  }
  private view(x: number, op: ViewOp): number {
    const n = this.g.node(x);
    return this.g.add({ kind: "view", view: op }, [x], viewShape(n.shape, op), n.dtype);
  }
  reshape(x: number, shape: Shape): number {
    if (shapeSize(shape) !== shapeSize(this.g.node(x).shape)) {
      throw new ShapeError(`reshape: a shape with ${shapeSize(this.g.node(x).shape)} elements, got [${shape.join(", ")}]`);
    }
    return this.view(x, { v: "reshape", shape: [...shape] });
  }
  transpose(x: number, perm: readonly number[]): number {
    return this.view(x, { v: "transpose", perm: [...perm] });
  }
  broadcastInDim(x: number, shape: Shape, dims: readonly number[]): number {
    return this.view(x, { v: "broadcast", shape: [...shape], dims: [...dims] });
  }
  slice(x: number, starts: readonly number[], limits: readonly number[], strides: readonly number[]): number {
    return this.view(x, { v: "slice", starts: [...starts], limits: [...limits], strides: [...strides] });
  }
  reverse(x: number, axes: readonly number[]): number {
    return this.view(x, { v: "reverse", axes: [...axes] });
  }

  // ---- opaque ops: run by the backend itself ----

  private opaque(name: string, inputs: readonly number[], outs: readonly OutType[], run: OpaqueRun): number[] {
    const id = this.g.add({ kind: "opaque", name, outs, run }, inputs, [], "uint32");
    return outs.map((o, k) => this.g.add({ kind: "proj", index: k }, [id], o.shape, o.dtype));
  }
  private t(x: number): OutType {
    return this.typeOf(x);
  }
  argReduce(op: ArgReduceOp, x: number, axis: number, out: OutType): number {
    return this.opaque(op, [x], [out], (b, [h]) => [b.argReduce(op, h!, axis, out)])[0]!;
  }
  cumulative(op: CumulativeOp, x: number, axis: number, reverse: boolean): number {
    return this.opaque(`cum${op}`, [x], [this.t(x)], (b, [h]) => [b.cumulative(op, h!, axis, reverse)])[0]!;
  }
  pad(x: number, value: number, lo: readonly number[], hi: readonly number[], interior: readonly number[]): number {
    const t = this.t(x);
    const out = { shape: padShape(t.shape, lo, hi, interior), dtype: t.dtype };
    if (interior.every((i) => i === 0) && shapeSize(t.shape) > 0) {
      return this.g.add({ kind: "pad", value, lo: [...lo] }, [x], out.shape, out.dtype);
    }
    return this.opaque("pad", [x], [out], (b, [h]) => [b.pad(h!, value, lo, hi, interior)])[0]!;
  }
  concatenate(xs: readonly number[], axis: number): number {
    const t = this.t(xs[0]!);
    const total = xs.reduce((s, x) => s + this.t(x).shape[axis]!, 0);
    const out = { shape: t.shape.map((n, d) => (d === axis ? total : n)), dtype: t.dtype };
    return this.g.add({ kind: "concat", axis }, xs, out.shape, out.dtype);
  }
  gather(x: number, idx: number, axis: number, batchDims: number, out: OutType): number {
    return this.opaque("gather", [x, idx], [out], (b, [h, i]) => [b.gather(h!, i!, axis, batchDims, out)])[0]!;
  }
  scatterAdd(operand: number, idx: number, updates: number, axis: number, batchDims: number): number {
    return this.opaque("scatter_add", [operand, idx, updates], [this.t(operand)], (b, [o, i, u]) => [
      b.scatterAdd(o!, i!, u!, axis, batchDims),
    ])[0]!;
  }
  dynamicSlice(x: number, starts: readonly number[], sizes: readonly number[]): number {
    const out = { shape: [...sizes], dtype: this.t(x).dtype };
    return this.opaque("dynamic_slice", [x, ...starts], [out], (b, [h, ...s]) => [b.dynamicSlice(h!, s, sizes)])[0]!;
  }
  dynamicUpdateSlice(x: number, update: number, starts: readonly number[]): number {
    return this.opaque("dynamic_update_slice", [x, update, ...starts], [this.t(x)], (b, [h, u, ...s]) => [
      b.dynamicUpdateSlice(h!, u!, s),
    ])[0]!;
  }
  sort(xs: readonly number[], axis: number, numKeys: number): number[] {
    return this.opaque("sort", xs, xs.map((x) => this.t(x)), (b, hs) => b.sort(hs, axis, numKeys));
  }
  threefry2x32(k0: number, k1: number, x0: number, x1: number): [number, number] {
    const t = this.t(k0);
    const [a, b] = this.opaque("threefry2x32", [k0, k1, x0, x1], [t, t], (bb, [p, q, r, s]) => bb.threefry2x32(p!, q!, r!, s!));
    return [a!, b!];
  }
}

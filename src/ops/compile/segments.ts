/**
 * @file From a jaxpr to compiled segments: nested call primitives whose body is their jaxpr (jit,
 * custom_jvp_call, custom_vjp_call, checkpoint) are inlined; every first-order primitive is lowered
 * onto a `GraphBuilder` (its `lower` rule), and so is `cond` when its branches lower (all branches
 * computed, the index selecting); any other equation (scan, while, ...) splits the program: it runs
 * through the ordinary `bind` between compiled segments (the compiler loops a scan's compiled body).
 */
import { ShapedArray } from "../../autodiff/aval.js";
import { hooks, Primitive, Value } from "../../autodiff/core.js";
import { Atom, Jaxpr, JaxprEqn, Literal, Var } from "../../autodiff/jaxpr.js";
import type { OpsPrimitive } from "../primitive.js";
import { Graph, GraphBuilder } from "./graph.js";

/** Call primitives inlined by evaluating their jaxpr (their impl is exactly that). */
const INLINED = new Set(["jit", "custom_jvp_call", "custom_vjp_call", "checkpoint"]);

function isLowerable(p: Primitive): p is OpsPrimitive {
  return typeof (p as Partial<OpsPrimitive>).lower === "function";
}

/**
 * Whether an equation lowers into a kernel graph: first-order primitives, and `cond` whose branches
 * do (every branch is computed and the index selects, as eager cond on WebGPU does).
 */
function lowersToGraph(e: JaxprEqn): boolean {
  if (isLowerable(e.prim)) return true;
  if (e.prim.name !== "cond" || e.inputs[0]?.aval.dtype !== "int32" || e.inputs[0]?.aval.ndim !== 0) return false;
  const branches = (e.params as { branches?: readonly Jaxpr[] }).branches;
  return Array.isArray(branches) && branches.every((b) => b.constvars.length === 0 && flattenJaxpr(b).eqns.every(lowersToGraph));
}

/** Lowers equations onto the builder; `read` gives the node of an atom. */
function lowerEqns(b: GraphBuilder, eqns: readonly JaxprEqn[], read: (a: Atom) => number, bindOut: (v: Var, id: number) => void): void {
  for (const e of eqns) {
    const ins = e.inputs.map(read);
    if (isLowerable(e.prim)) {
      const avalsIn = e.inputs.map((a) => a.aval as ShapedArray);
      const avalsOut = e.outBinders.map((v) => v.aval);
      const outs = e.prim.lower(b, ins, e.params, avalsIn, avalsOut);
      e.outBinders.forEach((v, i) => bindOut(v, outs[i]!));
      continue;
    }
    // cond: every branch, then a select chain on the clamped index.
    const branches = ((e.params as { branches: readonly Jaxpr[] }).branches).map(flattenJaxpr);
    const [index, ...ops] = ins;
    const outsPer = branches.map((br) => {
      const env = new Map<Var, number>();
      br.invars.forEach((v, i) => env.set(v, ops[i]!));
      const rd = (a: Atom): number => (a instanceof Var ? env.get(a)! : read(a));
      lowerEqns(b, br.eqns, rd, (v, id) => env.set(v, id));
      return br.outs.map(rd);
    });
    const n = branches.length;
    const i32 = (v: number) => b.full({ shape: [], dtype: "int32" }, v);
    const idx = b.binary("max", b.binary("min", index!, i32(n - 1), { shape: [], dtype: "int32" }), i32(0), { shape: [], dtype: "int32" });
    e.outBinders.forEach((v, k) => {
      let out = outsPer[0]![k]!;
      for (let j = 1; j < n; j++) {
        const hit = b.broadcastInDim(b.binary("eq", idx, i32(j), { shape: [], dtype: "bool" }), v.aval.shape, []);
        out = b.select(hit, outsPer[j]![k]!, out);
      }
      bindOut(v, out);
    });
  }
}

/** Inlines nested call primitives (fresh variables per inlined body). */
export function flattenJaxpr(jaxpr: Jaxpr): Jaxpr {
  if (!jaxpr.eqns.some((e) => INLINED.has(e.prim.name))) return jaxpr;
  const eqns: JaxprEqn[] = [];
  const inline = (j: Jaxpr, args: readonly Atom[]): Atom[] => {
    const env = new Map<Var, Atom>();
    j.invars.forEach((v, i) => env.set(v, args[i]!));
    const sub = (a: Atom): Atom => (a instanceof Var ? (env.get(a) ?? a) : a);
    for (const e of j.eqns) {
      const inputs = e.inputs.map(sub);
      if (INLINED.has(e.prim.name) && e.params?.jaxpr instanceof Jaxpr && e.params.jaxpr.constvars.length === 0) {
        const outs = inline(e.params.jaxpr as Jaxpr, inputs);
        e.outBinders.forEach((v, i) => env.set(v, outs[i]!));
        continue;
      }
      const outBinders = e.outBinders.map((v) => new Var(v.aval));
      e.outBinders.forEach((v, i) => env.set(v, outBinders[i]!));
      eqns.push({ prim: e.prim, inputs, params: e.params, outBinders });
    }
    return j.outs.map(sub);
  };
  const outs = inline(jaxpr, jaxpr.invars);
  return new Jaxpr(jaxpr.constvars, jaxpr.invars, eqns, outs);
}

/** One compiled piece: a kernel graph over `inVars` producing `outVars`. */
export interface GraphSegment {
  readonly kind: "graph";
  readonly graph: Graph;
  readonly inVars: readonly Var[];
  readonly outVars: readonly Var[];
}

/** An equation run through `bind` (higher-order primitives the compiler does not handle). */
export interface BindSegment {
  readonly kind: "bind";
  readonly eqn: JaxprEqn;
}

export type Segment = GraphSegment | BindSegment;

/** Scalar value of a literal readable on the host, or null. */
function literalScalar(l: Literal): number | null {
  const v = hooks().literalValue(l.val as Value);
  if (v === null) return null;
  return typeof v === "boolean" ? (v ? 1 : 0) : v;
}

/**
 * Splits a (flattened) jaxpr into segments. Each graph segment's inputs are the variables it reads that
 * are defined outside it; its outputs are the variables it defines that are read later (or returned).
 * Literals become `full` nodes (or inputs when not readable on the host).
 */
export function buildSegments(jaxpr: Jaxpr): { segments: Segment[]; literalInputs: Map<Var, Literal> } {
  const literalInputs = new Map<Var, Literal>();
  const runs: (JaxprEqn[] | JaxprEqn)[] = [];
  for (const e of jaxpr.eqns) {
    if (lowersToGraph(e)) {
      const last = runs[runs.length - 1];
      if (Array.isArray(last)) last.push(e);
      else runs.push([e]);
    } else runs.push(e);
  }
  // Variables read after each run (later equations and the jaxpr's results).
  const readAfter: Set<Var>[] = new Array(runs.length);
  const acc = new Set<Var>(jaxpr.outs.filter((a): a is Var => a instanceof Var));
  for (let r = runs.length - 1; r >= 0; r--) {
    readAfter[r] = new Set(acc);
    const run = runs[r]!;
    for (const e of Array.isArray(run) ? run : [run]) for (const a of e.inputs) if (a instanceof Var) acc.add(a);
  }
  const segments: Segment[] = runs.map((run, r) => {
    if (!Array.isArray(run)) return { kind: "bind", eqn: run };
    const g = new Graph();
    const b = new GraphBuilder(g);
    const env = new Map<Var, number>();
    const inVars: Var[] = [];
    const read = (a: Atom): number => {
      if (a instanceof Literal) {
        const v = literalScalar(a);
        if (v !== null) return b.full({ shape: a.aval.shape, dtype: a.aval.dtype }, v);
        // A literal we cannot read on the host: pass it as an input through a fresh variable.
        const fake = new Var(a.aval);
        literalInputs.set(fake, a);
        return read(fake);
      }
      let id = env.get(a);
      if (id === undefined) {
        id = g.add({ kind: "input", index: inVars.length }, [], a.aval.shape, a.aval.dtype);
        inVars.push(a);
        env.set(a, id);
      }
      return id;
    };
    const defined: Var[] = [];
    lowerEqns(b, run, read, (v, id) => {
      env.set(v, id);
      defined.push(v);
    });
    g.numInputs = inVars.length;
    const outVars = defined.filter((v) => readAfter[r]!.has(v));
    g.outputs = outVars.map((v) => env.get(v)!);
    return { kind: "graph", graph: g, inVars, outVars };
  });
  return { segments, literalInputs };
}

/**
 * @file Shared machinery of the control-flow primitives (scan.ts, cond.ts, while.ts): leaf paths for
 * error messages, carry/branch output checks with JAX's weak-type promotion, and the jaxpr-level
 * transforms the rules are made of — JVP and batching of a body with a per-output "instantiate" choice
 * (what the fixed points on carries need), reordering and const-joining of jaxprs, and the eager-loop
 * helpers (reading a predicate synchronously, freeing dead carries).
 *
 * Read scan.ts first; it is the most complete example.
 */
import { isFloat, ShapedArray } from "../../autodiff/aval.js";
import { hooks, MaybeZero, Value } from "../../autodiff/core.js";
import { BackendError, DTypeError, ShapeError } from "../../autodiff/errors.js";
import { ClosedJaxpr, evalJaxpr, Jaxpr, Literal, printJaxpr, traceToJaxpr, Var } from "../../autodiff/jaxpr.js";
import { jvpFlat } from "../../autodiff/jvp.js";
import { isPlainObject } from "../../autodiff/tree.js";
import { BDim, moveBatchAxis, vmapFlat } from "../../autodiff/vmap.js";
import { Array } from "../array.js";
import { convert } from "../lax/elementwise.js";

// ---------------------------------------------------------------------------------------------------
// Leaf names for error messages

/** One readable path per leaf, in `flatten`'s order (sorted object keys): `carry.h`, `carry[1]`. */
export function leafPaths(tree: unknown, root: string): string[] {
  const out: string[] = [];
  const go = (x: unknown, p: string): void => {
    if (x === null || x === undefined) return;
    if (globalThis.Array.isArray(x)) x.forEach((c, i) => go(c, `${p}[${i}]`));
    else if (isPlainObject(x)) for (const k of Object.keys(x).sort()) go(x[k], `${p}.${k}`);
    else out.push(p);
  };
  go(tree, root);
  return out;
}

export function asValues(leaves: readonly unknown[], paths: readonly string[], what: string): Value[] {
  return leaves.map((l, i) => hooks().asValue(l, `${what}: ${paths[i] ?? `leaf ${i}`}`));
}

// ---------------------------------------------------------------------------------------------------
// Output checks with weak-type promotion (JAX's _promote_weak_typed_inputs)

/**
 * Makes a loop body's carry output `out` fit the carry's input aval `want`, as JAX does:
 * - a weakly typed output (a JS number) is cast to the input's dtype;
 * - a weakly typed input (init given as a JS number) whose output is strongly typed is *promoted*: the
 *   caller must re-trace with the input cast to `promote[i]` (returned through the array);
 * - any other shape or dtype change is an error naming the leaf.
 */
export function fitCarry(
  what: string,
  out: Value,
  want: ShapedArray,
  path: string,
  i: number,
  promote: (ShapedArray | null)[],
): Value {
  const a = out.aval;
  if (a.ndim !== want.ndim || a.shape.some((d, j) => d !== want.shape[j])) {
    throw new ShapeError(
      `${what}: the carry output ${path} must keep the input's shape ${want.str()}, got ${a.str()}` +
        `\nTip: a loop carry has a fixed shape and dtype; return growing results as per-step outputs instead`,
    );
  }
  if (a.dtype === want.dtype) {
    if (want.weakType && !a.weakType) promote[i] = a.withWeak(false);
    else if (a.weakType && !want.weakType) return convert(out, want.dtype, false);
    return out;
  }
  if (a.weakType) return convert(out, want.dtype, want.weakType);
  if (want.weakType) {
    promote[i] = a.withWeak(false);
    return out;
  }
  throw new DTypeError(
    `${what}: the carry output ${path} must keep the input's dtype ${want.dtype}, got ${a.dtype}` +
      `\nTip: cast it back with np.astype(x, "${want.dtype}"), or give the initial value the dtype the body produces`,
  );
}

/** Casts `x` to the (strong) aval a promotion asked for. */
export function promoteTo(x: Value, a: ShapedArray): Value {
  return convert(x, a.dtype, false);
}

// ---------------------------------------------------------------------------------------------------
// Jaxpr plumbing

/** A closed jaxpr with its consts turned into leading invars: [consts..., invars...]. */
export function hoist(cj: ClosedJaxpr): { jaxpr: Jaxpr; consts: Value[] } {
  const j = cj.jaxpr;
  return { jaxpr: new Jaxpr([], [...j.constvars, ...j.invars], j.eqns, j.outs), consts: [...cj.consts] };
}

/** Same jaxpr with its invars and outputs listed in another order (`order[k]` = old index at k). */
export function permute(j: Jaxpr, inOrder: readonly number[], outOrder: readonly number[]): Jaxpr {
  return new Jaxpr(
    j.constvars,
    inOrder.map((k) => j.invars[k]!),
    j.eqns,
    outOrder.map((k) => j.outs[k]!),
  );
}

/** Index helpers for building permutations: `span(a, n)` = [a, a+1, ..., a+n-1]. */
export function span(start: number, n: number): number[] {
  return globalThis.Array.from({ length: n }, (_, i) => start + i);
}

/** Adds unused invars of the given avals at position `at` (so a jaxpr accepts extra operands). */
export function withUnusedInvars(j: Jaxpr, at: number, avals: readonly ShapedArray[]): Jaxpr {
  const fresh = avals.map((a) => new Var(a));
  return new Jaxpr(j.constvars, [...j.invars.slice(0, at), ...fresh, ...j.invars.slice(at)], j.eqns, j.outs);
}

/**
 * Puts several closed jaxprs (branches) on one signature: each takes all branches' consts first (the
 * others' unused), then its own invars. Returns the const-free jaxprs and the joined consts.
 */
export function joinConsts(cjs: readonly ClosedJaxpr[]): { jaxprs: Jaxpr[]; consts: Value[] } {
  const consts = cjs.flatMap((c) => [...c.consts]);
  const avals = consts.map((c) => c.aval);
  let off = 0;
  const jaxprs = cjs.map((c) => {
    const n = c.consts.length;
    const before = avals.slice(0, off).map((a) => new Var(a));
    const after = avals.slice(off + n).map((a) => new Var(a));
    off += n;
    const j = c.jaxpr;
    return new Jaxpr([], [...before, ...j.constvars, ...after, ...j.invars], j.eqns, j.outs);
  });
  return { jaxprs, consts };
}

/**
 * For syntactic rules (which build equations, not calls): a closed jaxpr whose consts are passed as
 * literal atoms. Traced helper jaxprs rarely have consts (scalars become literals), but on devices
 * without synchronous reads they can.
 */
export function constAtoms(consts: readonly Value[]): Literal[] {
  return consts.map((c) => new Literal(c, c.aval));
}

/** Prints a jaxpr as a param of an enclosing equation (indented like jit's). */
export function printNested(j: Jaxpr): string {
  return printJaxpr(j).split("\n").join("\n      ");
}

// ---------------------------------------------------------------------------------------------------
// JVP and batching of a body, per-output instantiate

/**
 * The JVP of a const-free jaxpr for a pattern of non-zero input tangents. Takes [primals...,
 * nonzero tangents...], returns [primal outs..., nonzero tangent outs...]. Output tangents listed in
 * `instantiate` are materialised as zeros when they would be symbolic zeros (float outputs only: integer
 * values have no tangent space and never get one).
 */
export function jvpJaxprInst(
  jaxpr: Jaxpr,
  nonzeros: readonly boolean[],
  instantiate: readonly boolean[],
): { cj: ClosedJaxpr; outNonzero: boolean[] } {
  const inAvals = jaxpr.inAvals;
  const nz = nonzeros.map((b, i) => b && isFloat(inAvals[i]!.dtype));
  const tanAvals = inAvals.filter((_, i) => nz[i]).map((a) => a.withWeak(false));
  let outNonzero: boolean[] = [];
  const cj = traceToJaxpr(
    (...xs: Value[]) => {
      const n = inAvals.length;
      let k = n;
      const tangents: MaybeZero[] = nz.map((b) => (b ? xs[k++]! : null));
      const [po, to] = jvpFlat((...p: Value[]) => evalJaxpr(jaxpr, [], p), xs.slice(0, n), tangents);
      const touts: Value[] = [];
      outNonzero = po.map((_, i) => {
        const a = jaxpr.outs[i]!.aval;
        if (!isFloat(a.dtype)) return false;
        let t = to[i] ?? null;
        if (t === null && instantiate[i]) t = hooks().zeros(a.withWeak(false));
        if (t === null) return false;
        if (t.aval.dtype !== a.dtype) t = convert(t, a.dtype, false);
        touts.push(t);
        return true;
      });
      return [...po, ...touts];
    },
    [...inAvals, ...tanAvals],
    "jvp",
  );
  return { cj, outNonzero };
}

/** Drops tangents of integer/bool primals (they have no tangent space). */
export function floatTangents(primals: readonly Value[], tangents: readonly MaybeZero[]): MaybeZero[] {
  return tangents.map((t, i) => (t !== null && isFloat(primals[i]!.aval.dtype) ? t : null));
}

/**
 * The batched version of a const-free jaxpr: inputs with `batchedIn` get a leading axis of `size`.
 * An output is batched (at axis 0) when it depends on a batched input or `force[i]`; the others stay
 * unbatched. Returns which outputs are batched.
 */
export function batchJaxpr(
  jaxpr: Jaxpr,
  batchedIn: readonly boolean[],
  size: number,
  force: readonly boolean[],
): { cj: ClosedJaxpr; outBatched: boolean[] } {
  const inAvals = jaxpr.inAvals.map((a, i) =>
    batchedIn[i] ? new ShapedArray([size, ...a.shape], a.dtype, a.weakType) : a,
  );
  let outBatched: boolean[] = [];
  const cj = traceToJaxpr(
    (...xs: Value[]) => {
      const [outs, dims] = vmapFlat(
        (...ys: Value[]) => evalJaxpr(jaxpr, [], ys),
        batchedIn.map((b): BDim => (b ? 0 : null)),
        size,
        xs,
      );
      outBatched = dims.map((d, i) => d !== null || !!force[i]);
      return outs.map((o, i) => (outBatched[i] ? moveBatchAxis(o, dims[i]!, 0, size) : o));
    },
    inAvals,
    "vmap",
  );
  return { cj, outBatched };
}

/** True when every `true` of `sub` is `true` in `sup` (a fixed point has been reached). */
export function within(sub: readonly boolean[], sup: readonly boolean[]): boolean {
  return sub.every((b, i) => !b || sup[i]);
}

export function orMasks(a: readonly boolean[], b: readonly boolean[]): boolean[] {
  return a.map((x, i) => x || b[i]!);
}

// ---------------------------------------------------------------------------------------------------
// Eager execution helpers

/** Reads a scalar predicate / index synchronously (CPU); a clear error on lazy devices. */
export function readScalar(what: string, v: Value): number | boolean {
  const lit = hooks().literalValue(v);
  if (lit === null) {
    const dev = v instanceof Array ? ` on ${v.device.id}` : "";
    throw new BackendError(
      `${what}: eager control flow needs to read its predicate synchronously, got an array${dev} that can only be read asynchronously` +
        `\nTip: give the loop a static trip count (lax.fori with JS-number bounds, or scan: these run on the device, under jit as one submit), run it on the CPU device, or drive it from JS with an awaited read of the predicate`,
    );
  }
  return lit;
}

/**
 * Every concrete value a jaxpr (and the jaxprs nested in its params) may return without creating it:
 * its literals. Eager loops never free these.
 */
export function literalValues(j: Jaxpr, into = new Set<unknown>()): Set<unknown> {
  const visitParam = (p: unknown): void => {
    if (p instanceof Jaxpr) literalValues(p, into);
    else if (p instanceof ClosedJaxpr) {
      literalValues(p.jaxpr, into);
      p.consts.forEach((c) => into.add(c));
    } else if (globalThis.Array.isArray(p)) p.forEach(visitParam);
    else if (isPlainObject(p)) Object.values(p).forEach(visitParam);
  };
  for (const e of j.eqns) {
    for (const a of e.inputs) if (a instanceof Literal) into.add(a.val);
    visitParam(e.params);
  }
  for (const a of j.outs) if (a instanceof Literal) into.add(a.val);
  return into;
}

/**
 * Frees the arrays of a previous loop carry that the loop created and no longer holds (so a long eager
 * loop keeps O(1) carries alive). `protectedVals` are never freed: the loop's own arguments, literals.
 */
export function freeDead(old: readonly Value[], live: ReadonlySet<unknown>, protectedVals: ReadonlySet<unknown>): void {
  for (const v of old) {
    if (v instanceof Array && !live.has(v) && !protectedVals.has(v)) v.dispose();
  }
}

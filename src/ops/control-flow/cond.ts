/**
 * @file `cond` and `switch`: choose one of several functions by a scalar predicate / index, as a
 * primitive carrying every branch as a jaxpr (JAX's `cond_p`; `cond` is a two-branch `switch` with
 * branches [false, true]). Operands are [index (int32 scalar), ...operands]; every branch takes the same
 * operands (the branches' closed-over values are joined into them) and returns the same avals.
 *
 * Rules (JAX's):
 * - jvp: a cond of the branches' JVPs, with the union of their non-zero output tangents;
 * - vmap: a batched index turns the cond into a `select` over all branches' outputs; otherwise a cond of
 *   the batched branches (union of batched outputs);
 * - partial eval: with a known index, a known cond computes known outputs and every branch's residuals
 *   (zeros for the branches not taken), and an unknown cond of the branches' unknown parts is recorded;
 *   an unknown index makes everything unknown;
 * - transpose: a cond of the transposed branches (index and residuals non-linear).
 */
import { isInt, ShapedArray } from "../../autodiff/aval.js";
import {
  bind,
  definePrimitiveRules,
  hooks,
  instantiate,
  MaybeZero,
  Primitive,
  Tracer,
  UndefinedPrimal,
  Value,
} from "../../autodiff/core.js";
import { ArgumentError, DTypeError, NonlinearError, ShapeError, TreeMismatchError } from "../../autodiff/errors.js";
import { ClosedJaxpr, evalJaxpr, Jaxpr, JaxprEqn, traceToJaxpr, Var } from "../../autodiff/jaxpr.js";
import {
  partialEvalJaxpr,
  partialEvalJaxprRules,
  PartialEvalTrace,
  PartialEvalTracer,
} from "../../autodiff/partial-eval.js";
import { backwardPass } from "../../autodiff/transpose.js";
import { flatten, TreeDef, treedefEqual, treedefStr, unflatten } from "../../autodiff/tree.js";
import { moveBatchAxis, vmapFlatAxis0 } from "../../autodiff/vmap.js";
import { convert, eq, full, max, min, ne, select } from "../lax/elementwise.js";
import { broadcastInDim } from "../lax/structural.js";
import { Array, scalar } from "../array.js";
import { scope } from "../memory.js";
import {
  asValues,
  batchJaxpr,
  constAtoms,
  floatTangents,
  joinConsts,
  jvpJaxprInst,
  leafPaths,
  printNested,
} from "./common.js";

export interface CondParams {
  /** Const-free branches, each [operands...] -> [outs...], all with the same avals. */
  readonly branches: readonly Jaxpr[];
}

/** Binds cond on closed branches (their consts are joined and passed after the index). */
function bindCond(index: Value, cjs: readonly ClosedJaxpr[], ops: readonly Value[]): Value[] {
  const { jaxprs, consts } = joinConsts(cjs);
  return bind(condP, [index, ...consts, ...ops], { branches: jaxprs } satisfies CondParams);
}

function clampIndex(i: number, n: number): number {
  return Math.min(Math.max(Math.trunc(i), 0), n - 1);
}

// ---------------------------------------------------------------------------------------------------
// jvp

function condJvp(primals: readonly Value[], tangentsIn: readonly MaybeZero[], p: CondParams): [Value[], MaybeZero[]] {
  const [index, ...ops] = primals;
  const tangents = floatTangents(ops, tangentsIn.slice(1));
  const nz = tangents.map((t) => t !== null);
  const nOut = p.branches[0]!.outs.length;
  const none = new globalThis.Array<boolean>(nOut).fill(false);
  let union = none;
  for (const b of p.branches) {
    const { outNonzero } = jvpJaxprInst(b, nz, none);
    union = union.map((u, i) => u || outNonzero[i]!);
  }
  const cjs = p.branches.map((b) => jvpJaxprInst(b, nz, union).cj);
  const outs = bindCond(index!, cjs, [...ops, ...(tangents.filter((t) => t !== null) as Value[])]);
  let k = nOut;
  return [outs.slice(0, nOut), union.map((u) => (u ? outs[k++]! : null))];
}

// ---------------------------------------------------------------------------------------------------
// vmap

function condVmap(args: readonly Value[], dims: readonly (number | null)[], p: CondParams, size: number): [Value[], (number | null)[]] {
  const [index, ...ops] = args;
  const opDims = dims.slice(1);
  const n = p.branches.length;
  if (dims[0] !== null) {
    // A batched index: every branch runs on the whole batch and a select picks per example (JAX's
    // conversion of a batched cond into a select).
    const idx = clampBatched(moveBatchAxis(index!, dims[0]!, 0, size), n);
    const outsPer = p.branches.map((b) => vmapFlatAxis0((...xs: Value[]) => evalJaxpr(b, [], xs), opDims, size, ops));
    const result = outsPer[0]!.map((o0, k) => {
      let out = o0;
      for (let j = 1; j < n; j++) {
        const o = outsPer[j]![k]!;
        const hit = broadcastInDim(eq(idx, broadcastInDim(full([], j, "int32"), [size], [])), o.aval.shape, [0]); // [batch, ...out]
        out = select(hit, o, out);
      }
      return out;
    });
    return [result, result.map(() => 0)];
  }
  const batched = opDims.map((d) => d !== null);
  const nOut = p.branches[0]!.outs.length;
  let union = new globalThis.Array<boolean>(nOut).fill(false);
  for (const b of p.branches) {
    const { outBatched } = batchJaxpr(b, batched, size, union);
    union = union.map((u, i) => u || outBatched[i]!);
  }
  const cjs = p.branches.map((b) => batchJaxpr(b, batched, size, union).cj);
  const moved = ops.map((o, i) => (batched[i] ? moveBatchAxis(o, opDims[i]!, 0, size) : o));
  const outs = bindCond(index!, cjs, moved);
  return [outs, union.map((u) => (u ? 0 : null))];
}

function clampBatched(idx: Value, n: number): Value {
  const s = idx.aval.shape;
  const lo = broadcastInDim(full([], 0, "int32"), s, []);
  const hi = broadcastInDim(full([], n - 1, "int32"), s, []);
  return max(lo, min(idx, hi));
}

// ---------------------------------------------------------------------------------------------------
// Partial evaluation

interface CondSplit {
  readonly unknownsOut: boolean[];
  /** Known branches: [knownOps] -> [knownOuts, all branches' residuals (zeros for the others)]. */
  readonly known: ClosedJaxpr[];
  /** Unknown branches: [all residuals, unknownOps] -> [unknownOuts]. */
  readonly unknown: Jaxpr[];
  readonly resAvals: ShapedArray[];
}

function splitCond(p: CondParams, unknownOps: readonly boolean[]): CondSplit {
  const nOut = p.branches[0]!.outs.length;
  let union = new globalThis.Array<boolean>(nOut).fill(false);
  for (const b of p.branches) {
    const { unknownsOut } = partialEvalJaxpr(b, unknownOps, false);
    union = union.map((u, i) => u || unknownsOut[i]!);
  }
  const pes = p.branches.map((b) => partialEvalJaxpr(b, unknownOps, union));
  const resAvalsPer = pes.map((pe) => pe.known.outs.slice(pe.known.outs.length - pe.numRes).map((a) => a.aval));
  const resAvals = resAvalsPer.flat();
  const knownAvals = p.branches[0]!.inAvals.filter((_, i) => !unknownOps[i]);
  let off = 0;
  const known: ClosedJaxpr[] = [];
  const unknown: Jaxpr[] = [];
  pes.forEach((pe) => {
    const n = pe.numRes;
    const before = resAvals.slice(0, off);
    const after = resAvals.slice(off + n);
    off += n;
    known.push(
      traceToJaxpr(
        (...xs: Value[]) => {
          const outs = evalJaxpr(pe.known, [], xs);
          const zeros = (as: readonly ShapedArray[]) => as.map((a) => hooks().zeros(a));
          const m = outs.length - n;
          return [...outs.slice(0, m), ...zeros(before), ...outs.slice(m), ...zeros(after)];
        },
        knownAvals,
        "cond",
      ),
    );
    const u = pe.unknown;
    unknown.push(
      new Jaxpr(
        [],
        [...before.map((a) => new Var(a)), ...u.invars.slice(0, n), ...after.map((a) => new Var(a)), ...u.invars.slice(n)],
        u.eqns,
        u.outs,
      ),
    );
  });
  return { unknownsOut: union, known, unknown, resAvals };
}

function condPartialEval(trace: PartialEvalTrace, tracers: readonly PartialEvalTracer[], p: CondParams): Tracer[] {
  const outAvals = p.branches[0]!.outAvals;
  const [index, ...ops] = tracers;
  if (!index!.pval.isKnown) return trace.recordEqn(condP, tracers, p, outAvals);
  const unknownOps = ops.map((t) => !t.pval.isKnown);
  const s = splitCond(p, unknownOps);
  const knownOps = ops.filter((t) => t.pval.isKnown).map((t) => t.pval.known!);
  const nKnownOut = s.unknownsOut.filter((u) => !u).length;
  const knownOuts = bindCond(index!.pval.known!, s.known, knownOps);
  const res = knownOuts.slice(nKnownOut);
  const result: Tracer[] = new globalThis.Array(outAvals.length);
  let k = 0;
  s.unknownsOut.forEach((u, i) => {
    if (!u) result[i] = trace.pure(knownOuts[k++]!);
  });
  if (s.unknownsOut.some(Boolean)) {
    const ins = [index!, ...res.map((r) => trace.pure(r) as PartialEvalTracer), ...ops.filter((t) => !t.pval.isKnown)];
    const outs = trace.recordEqn(
      condP,
      ins,
      { branches: s.unknown } satisfies CondParams,
      outAvals.filter((_, i) => s.unknownsOut[i]),
    );
    k = 0;
    s.unknownsOut.forEach((u, i) => {
      if (u) result[i] = outs[k++]!;
    });
  }
  return result;
}

function condPartialEvalJaxpr(unknownsIn: readonly boolean[], eqn: JaxprEqn) {
  const p = eqn.params as CondParams;
  const [index, ...ops] = eqn.inputs;
  if (unknownsIn[0]) {
    return {
      known: null,
      unknown: eqn,
      unknownsOut: eqn.outBinders.map(() => true),
      residuals: eqn.inputs.filter((a, i): a is Var => a instanceof Var && !unknownsIn[i]),
    };
  }
  const unknownOps = unknownsIn.slice(1);
  const s = splitCond(p, unknownOps);
  const { jaxprs, consts } = joinConsts(s.known);
  const resBinders = s.resAvals.map((a) => new Var(a));
  const knownEqn: JaxprEqn = {
    prim: condP,
    inputs: [index!, ...constAtoms(consts), ...ops.filter((_, i) => !unknownOps[i])],
    params: { branches: jaxprs } satisfies CondParams,
    outBinders: [...eqn.outBinders.filter((_, i) => !s.unknownsOut[i]), ...resBinders],
  };
  const anyUnknown = s.unknownsOut.some(Boolean);
  const unknownEqn: JaxprEqn | null = anyUnknown
    ? {
        prim: condP,
        inputs: [index!, ...resBinders, ...ops.filter((_, i) => unknownOps[i])],
        params: { branches: s.unknown } satisfies CondParams,
        outBinders: eqn.outBinders.filter((_, i) => s.unknownsOut[i]),
      }
    : null;
  const residuals = anyUnknown ? [...(index instanceof Var ? [index] : []), ...resBinders] : [];
  return { known: knownEqn, unknown: unknownEqn, unknownsOut: s.unknownsOut, residuals };
}

// ---------------------------------------------------------------------------------------------------
// Transpose

function condTranspose(cts: readonly MaybeZero[], args: readonly (Value | UndefinedPrimal)[], p: CondParams): MaybeZero[] {
  const [index, ...ops] = args;
  if (index instanceof UndefinedPrimal) {
    throw new NonlinearError("cond: the branch index depends on a tangent while transposing (webgrad bug)");
  }
  const lin = ops.map((o) => o instanceof UndefinedPrimal);
  const res = ops.filter((o): o is Value => !(o instanceof UndefinedPrimal));
  const inAvals = p.branches[0]!.inAvals;
  const outAvals = p.branches[0]!.outAvals.map((a) => a.withWeak(false));
  const ctsFull = cts.map((c, i) => instantiate(c, outAvals[i]!));
  const nRes = res.length;
  const cjs = p.branches.map((b) =>
    traceToJaxpr(
      (...xs: Value[]) => {
        const r = xs.slice(0, nRes);
        const ct = xs.slice(nRes);
        let k = 0;
        const bodyArgs = inAvals.map((a, i) => (lin[i] ? new UndefinedPrimal(a) : r[k++]!));
        const ctsIn = backwardPass(b, [], bodyArgs, ct);
        return ctsIn.flatMap((c, i) => (lin[i] ? [instantiate(c, inAvals[i]!.withWeak(false))] : []));
      },
      [...res.map((v) => v.aval), ...outAvals],
      "transpose",
    ),
  );
  const outs = bindCond(index as Value, cjs, [...res, ...ctsFull]);
  let k = 0;
  return [null, ...lin.map((l) => (l ? outs[k++]! : null))];
}

// ---------------------------------------------------------------------------------------------------
// The primitive

function condAbstractEval(avals: readonly ShapedArray[], p: CondParams): ShapedArray[] {
  const [index, ...ops] = avals;
  if (!index || index.ndim !== 0 || index.dtype !== "int32") {
    throw new DTypeError(`cond: the branch index must be an int32 scalar, got ${index?.str() ?? "nothing"}`);
  }
  if (p.branches.length === 0) throw new ArgumentError("cond: needs at least one branch, got 0");
  const outs = p.branches[0]!.outAvals;
  p.branches.forEach((b, j) => {
    if (b.invars.length !== ops.length || b.inAvals.some((a, i) => !a.sameType(ops[i]!))) {
      throw new ShapeError(
        `cond: branch ${j} takes (${b.inAvals.map((a) => a.str()).join(", ")}), got (${ops.map((a) => a.str()).join(", ")})`,
      );
    }
    if (b.outs.length !== outs.length || b.outAvals.some((a, i) => !a.sameType(outs[i]!))) {
      throw new ShapeError(
        `cond: branch ${j} returns (${b.outAvals.map((a) => a.str()).join(", ")}), branch 0 (${outs.map((a) => a.str()).join(", ")})`,
      );
    }
  });
  return outs;
}

// ---------------------------------------------------------------------------------------------------
// Eager evaluation on devices without synchronous reads

/**
 * Eager cond when the index cannot be read synchronously (it lives on WebGPU, where reads are async
 * and a sync read would stall the batched queue): every branch runs and `select` picks the chosen
 * outputs on the device, as the batched-index vmap rule does. Branches are pure, so this gives the
 * same values as running only the chosen one (and the same derivatives: jvp/transpose bind cond again
 * and land here too), at the cost of computing all branches — n× the work and the peak memory of the
 * largest branch's intermediates, plus (n-1) selects per output. Errors of the untaken branches are
 * raised (shape errors cannot occur: the branches were traced against the same avals).
 * The index is clamped on the device, as `clampIndex` does on the host.
 */
function condBySelect(index: Value, ops: readonly Value[], p: CondParams): Value[] {
  const n = p.branches.length;
  if (n === 1) return evalJaxpr(p.branches[0]!, [], ops);
  // Intermediates (every branch's outputs, the masks) are released when the scope ends.
  // Constants on the index's device (cached scalars), so nothing needs a synchronous copy.
  const dev = (index as Array).device;
  const c = (j: number) => scalar(j, "int32", false, dev);
  return scope(() => {
    const idx = max(min(index, c(n - 1)), c(0));
    const outsPer = p.branches.map((b) => evalJaxpr(b, [], ops));
    return outsPer[0]!.map((o0, k) => {
      let out = o0;
      for (let j = 1; j < n; j++) {
        const hit = broadcastInDim(eq(idx, c(j)), out.aval.shape, []); // [...out]
        out = select(hit, outsPer[j]![k]!, out);
      }
      return out;
    });
  });
}

export const condP: Primitive<CondParams> = definePrimitiveRules<CondParams>({
  name: "cond",
  abstractEval: condAbstractEval,
  impl: (args, p) => {
    const [index, ...ops] = args;
    const lit = hooks().literalValue(index!);
    if (lit === null) return condBySelect(index!, ops, p) as any;
    const i = clampIndex(Number(lit), p.branches.length);
    return evalJaxpr(p.branches[i]!, [], ops) as any;
  },
  jvp: condJvp,
  transpose: condTranspose,
  vmap: condVmap,
  partialEval: condPartialEval,
  printParams: (p) => `branches=(\n      ${p.branches.map((b) => printNested(b)).join("\n      ")}\n    )`,
});

partialEvalJaxprRules.set(condP, condPartialEvalJaxpr);

// ---------------------------------------------------------------------------------------------------
// The API

/** Traces each branch on the operands; checks and reconciles their outputs (JAX's weak-type join). */
function traceBranches(
  what: string,
  branches: readonly ((...a: any[]) => any)[],
  names: readonly string[],
  operands: readonly unknown[],
): {
  cjs: ClosedJaxpr[];
  ops: Value[];
  outDef: TreeDef;
} {
  const [opLeaves, opDef] = flatten(operands);
  const opPaths = leafPaths(operands, "operands");
  const ops = asValues(opLeaves, opPaths, `${what} operand`);
  const avals = ops.map((v) => v.aval);
  const trace = (f: (...a: any[]) => any, j: number, targets: readonly ShapedArray[] | null) => {
    let outDef: TreeDef | undefined;
    let outPaths: string[] = [];
    const cj = traceToJaxpr(
      (...xs: Value[]) => {
        const out = f(...unflatten<unknown[]>(opDef, xs));
        const [ol, od] = flatten(out);
        outDef = od;
        outPaths = leafPaths(out, "output");
        const vals = asValues(ol, outPaths, `${what} ${names[j]}`);
        return targets ? vals.map((v, i) => (v.aval.equals(targets[i]!) ? v : convert(v, targets[i]!.dtype, targets[i]!.weakType))) : vals;
      },
      avals,
      what,
    );
    return { cj, outDef: outDef!, outPaths };
  };
  const first = branches.map((f, j) => trace(f, j, null));
  const def0 = first[0]!.outDef;
  first.forEach((t, j) => {
    if (!treedefEqual(t.outDef, def0)) {
      throw new TreeMismatchError(
        `${what}: every branch must return the same structure, got ${treedefStr(def0)} from ${names[0]} and ${treedefStr(t.outDef)} from ${names[j]}`,
      );
    }
  });
  // Join the output avals: shapes must agree; weak types yield to strong ones (JAX's promotion).
  const outAvals0 = first[0]!.cj.outAvals;
  const targets = outAvals0.map((a0, i) => {
    let t = a0;
    first.forEach((b, j) => {
      const a = b.cj.outAvals[i]!;
      const path = first[0]!.outPaths[i]!;
      if (a.ndim !== t.ndim || a.shape.some((d, k) => d !== t.shape[k])) {
        throw new ShapeError(`${what}: ${names[j]} returns ${path} of shape ${a.str()}, but ${names[0]} returns ${a0.str()}`);
      }
      if (a.dtype === t.dtype) {
        t = t.withWeak(t.weakType && a.weakType);
      } else if (t.weakType && !a.weakType) {
        t = a;
      } else if (!(a.weakType && !t.weakType)) {
        throw new DTypeError(
          `${what}: ${names[j]} returns ${path} of dtype ${a.dtype}, but ${names[0]} returns ${a0.dtype}` +
            `\nTip: cast one of them with np.astype so both branches return the same dtype`,
        );
      }
    });
    return t;
  });
  const cjs = first.map((b, j) => (b.cj.outAvals.every((a, i) => a.equals(targets[i]!)) ? b.cj : trace(branches[j]!, j, targets).cj));
  return { cjs, ops, outDef: def0 };
}

/**
 * `switch(index, branches, ...operands)`: JAX's `lax.switch` — calls `branches[index](...operands)`,
 * with `index` clamped to [0, branches.length - 1]. Every branch is traced and must return the same
 * structure, shapes and dtypes. Differentiable (the index is not), batchable, staged under `jit`.
 */
export function switchCase(index: unknown, branches: readonly ((...a: any[]) => any)[], ...operands: unknown[]): any {
  if (!globalThis.Array.isArray(branches) || branches.length === 0 || branches.some((b) => typeof b !== "function")) {
    throw new ArgumentError("switch: branches must be a non-empty list of functions");
  }
  const idx = hooks().asValue(index, "switch index");
  if (idx.aval.ndim !== 0) {
    throw new ShapeError(
      `switch: the index must be a scalar, got ${idx.aval.str()}\nTip: to choose per element, use np.where, or vmap the switch`,
    );
  }
  if (!isInt(idx.aval.dtype) && !(idx.aval.weakType && typeof index === "number" && Number.isInteger(index))) {
    throw new DTypeError(`switch: the index must be an integer scalar, got ${idx.aval.dtype}`);
  }
  if (branches.length === 1) return branches[0]!(...operands);
  const n = branches.length;
  const clamped =
    typeof index === "number"
      ? full([], clampIndex(index, n), "int32")
      : max(full([], 0, "int32"), min(convert(idx, "int32", false), full([], n - 1, "int32")));
  const { cjs, ops, outDef } = traceBranches("switch", branches, branches.map((_, j) => `branch ${j}`), operands);
  return unflatten(outDef, bindCond(clamped, cjs, ops));
}

export { switchCase as switch };

/**
 * `cond(pred, trueFn, falseFn, ...operands)`: JAX's `lax.cond` — `pred ? trueFn(...operands) :
 * falseFn(...operands)` for a scalar bool (or number, non-zero = true) predicate. Both branches are
 * traced and must return the same structure, shapes and dtypes. Under `vmap` with a batched predicate
 * both branches run and a `select` picks per example.
 */
export function cond(pred: unknown, trueFn: (...a: any[]) => any, falseFn: (...a: any[]) => any, ...operands: unknown[]): any {
  if (typeof trueFn !== "function" || typeof falseFn !== "function") {
    throw new ArgumentError("cond: trueFn and falseFn must be functions\nTip: the signature is cond(pred, trueFn, falseFn, ...operands)");
  }
  const p = hooks().asValue(pred, "cond pred");
  if (p.aval.ndim !== 0) {
    throw new ShapeError(
      `cond: pred must be a scalar, got ${p.aval.str()}` +
        `\nTip: to choose per element use np.where(pred, a, b); to map cond over a batch use vmap`,
    );
  }
  const index = p.aval.dtype === "bool" ? convert(p, "int32") : convert(ne(p, full([], 0, p.aval.dtype)), "int32");
  const { cjs, ops, outDef } = traceBranches("cond", [falseFn, trueFn], ["falseFn", "trueFn"], operands);
  return unflatten(outDef, bindCond(index, cjs, ops));
}


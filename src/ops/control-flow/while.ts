/**
 * @file `whileLoop(condFn, bodyFn, init)`: JAX's `lax.while_loop`, a primitive carrying the predicate
 * and the body as jaxprs. Operands are [condConsts..., bodyConsts..., carry...].
 *
 * - jvp: a while over (primal, tangent) carries, with a fixed point on which carry tangents are non-zero;
 *   the predicate only sees primals.
 * - vmap: a fixed point on batched carries. When the predicate is batched (lanes stop at different
 *   steps), every carry is batched, the loop runs while any lane's predicate holds, and lanes that are
 *   done keep their value through a select (JAX's batched while).
 * - reverse mode: the trip count is data-dependent, so there is nothing to transpose. Partial evaluation
 *   runs the known carries in a known loop and records the whole loop for the unknown ones (so
 *   `linearize` works); transposing it raises a clear error pointing to scan / fori.
 */
import { ShapedArray } from "../../autodiff/aval.js";
import {
  bind,
  definePrimitiveRules,
  instantiate,
  MaybeZero,
  Primitive,
  Tracer,
  Value,
} from "../../autodiff/core.js";
import { ArgumentError, DTypeError, ShapeError, TreeMismatchError } from "../../autodiff/errors.js";
import { dce, evalJaxpr, Jaxpr, JaxprEqn, outputsDependOn, traceToJaxpr, Var } from "../../autodiff/jaxpr.js";
import { partialEvalJaxprRules, PartialEvalTrace, PartialEvalTracer } from "../../autodiff/partial-eval.js";
import { flatten, treedefEqual, treedefStr, unflatten } from "../../autodiff/tree.js";
import { moveBatchAxis, vmapFlatAxis0 } from "../../autodiff/vmap.js";
import { scope } from "../memory.js";
import { select } from "../lax/elementwise.js";
import { reduceMax } from "../lax/reduce.js";
import { broadcastInDim } from "../lax/structural.js";
import {
  asValues,
  batchJaxpr,
  fitCarry,
  floatTangents,
  freeDead,
  hoist,
  jvpJaxprInst,
  leafPaths,
  literalValues,
  orMasks,
  permute,
  printNested,
  promoteTo,
  readScalar,
  span,
  within,
  withUnusedInvars,
} from "./common.js";

export interface WhileParams {
  /** [condConsts, carry] -> [pred: bool scalar]. */
  readonly condJaxpr: Jaxpr;
  /** [bodyConsts, carry] -> [carry]. */
  readonly bodyJaxpr: Jaxpr;
  readonly condNumConsts: number;
  readonly bodyNumConsts: number;
}

function whileImpl(args: readonly Value[], p: WhileParams): Value[] {
  const nCC = p.condNumConsts;
  const nBC = p.bodyNumConsts;
  const cc = args.slice(0, nCC);
  const bc = args.slice(nCC, nCC + nBC);
  let carry = args.slice(nCC + nBC);
  const protectedVals = literalValues(p.bodyJaxpr, literalValues(p.condJaxpr, new Set<unknown>(args)));
  for (;;) {
    const go = scope(() => readScalar("whileLoop", evalJaxpr(p.condJaxpr, [], [...cc, ...carry])[0]!));
    if (!go) return carry;
    const next = scope(() => evalJaxpr(p.bodyJaxpr, [], [...bc, ...carry]));
    freeDead(carry, new Set<unknown>(next), protectedVals);
    carry = next;
  }
}

function bindWhile(
  cond: { jaxpr: Jaxpr; consts: readonly Value[] },
  body: { jaxpr: Jaxpr; consts: readonly Value[] },
  carry: readonly Value[],
): Value[] {
  return bind(whileP, [...cond.consts, ...body.consts, ...carry], {
    condJaxpr: cond.jaxpr,
    bodyJaxpr: body.jaxpr,
    condNumConsts: cond.consts.length,
    bodyNumConsts: body.consts.length,
  } satisfies WhileParams);
}

// ---------------------------------------------------------------------------------------------------
// jvp

function whileJvp(primals: readonly Value[], tangentsIn: readonly MaybeZero[], p: WhileParams): [Value[], MaybeZero[]] {
  const nCC = p.condNumConsts;
  const nBC = p.bodyNumConsts;
  const nK = primals.length - nCC - nBC;
  const tangents = floatTangents(primals, tangentsIn);
  const nz = tangents.map((t) => t !== null);
  const constNz = nz.slice(nCC, nCC + nBC);
  let carryNz = nz.slice(nCC + nBC);
  let res: ReturnType<typeof jvpJaxprInst>;
  for (;;) {
    res = jvpJaxprInst(p.bodyJaxpr, [...constNz, ...carryNz], carryNz);
    if (within(res.outNonzero, carryNz)) break;
    carryNz = orMasks(carryNz, res.outNonzero);
  }
  const count = (m: readonly boolean[]) => m.filter(Boolean).length;
  const nzC = count(constNz);
  const nzK = count(carryNz);
  const { jaxpr: jv, consts: jvConsts } = hoist(res.cj);
  const h = jvConsts.length;
  // JVP body takes [bodyConsts, carry, constT, carryT]; the loop wants [bodyConsts, constT, carry, carryT].
  const body = permute(
    jv,
    [...span(0, h), ...span(h, nBC), ...span(h + nBC + nK, nzC), ...span(h + nBC, nK), ...span(h + nBC + nK + nzC, nzK)],
    span(0, nK + nzK),
  );
  const carryAvals = p.bodyJaxpr.inAvals.slice(nBC);
  const cond = withUnusedInvars(p.condJaxpr, nCC + nK, carryAvals.filter((_, i) => carryNz[i]).map((a) => a.withWeak(false)));
  const carryT = tangents
    .slice(nCC + nBC)
    .flatMap((t, i) => (carryNz[i] ? [instantiate(t, carryAvals[i]!)] : []));
  const constT = tangents.slice(nCC, nCC + nBC).filter((t, i) => constNz[i] && t !== null) as Value[];
  const outs = bindWhile(
    { jaxpr: cond, consts: primals.slice(0, nCC) },
    { jaxpr: body, consts: [...jvConsts, ...primals.slice(nCC, nCC + nBC), ...constT] },
    [...primals.slice(nCC + nBC), ...carryT],
  );
  let k = nK;
  return [outs.slice(0, nK), carryNz.map((b) => (b ? outs[k++]! : null))];
}

// ---------------------------------------------------------------------------------------------------
// vmap

function whileVmap(args: readonly Value[], dims: readonly (number | null)[], p: WhileParams, size: number): [Value[], (number | null)[]] {
  const nCC = p.condNumConsts;
  const nBC = p.bodyNumConsts;
  const b = dims.map((d) => d !== null);
  const ccB = b.slice(0, nCC);
  const bcB = b.slice(nCC, nCC + nBC);
  let carryB = b.slice(nCC + nBC);
  let predBatched = false;
  for (;;) {
    const { outBatched } = batchJaxpr(p.bodyJaxpr, [...bcB, ...carryB], size, carryB);
    const next = orMasks(carryB, outBatched);
    predBatched = batchJaxpr(p.condJaxpr, [...ccB, ...next], size, [false]).outBatched[0]!;
    const full = predBatched ? next.map(() => true) : next;
    if (within(full, carryB)) break;
    carryB = orMasks(carryB, full);
  }
  const at0 = (i: number) => moveBatchAxis(args[i]!, dims[i]!, 0, size);
  const move = (from: number, mask: readonly boolean[]) => mask.map((m, i) => (m ? at0(from + i) : args[from + i]!));
  const cc = move(0, ccB);
  const bc = move(nCC, bcB);
  const carry = move(nCC + nBC, carryB);
  if (!predBatched) {
    const cond = hoist(batchJaxpr(p.condJaxpr, [...ccB, ...carryB], size, [false]).cj);
    const body = hoist(batchJaxpr(p.bodyJaxpr, [...bcB, ...carryB], size, carryB).cj);
    const outs = bindWhile(
      { jaxpr: cond.jaxpr, consts: [...cond.consts, ...cc] },
      { jaxpr: body.jaxpr, consts: [...body.consts, ...bc] },
      carry,
    );
    return [outs, carryB.map((x) => (x ? 0 : null))];
  }
  // Batched predicate: run while any lane is active; finished lanes keep their carry (select).
  const consts = [...cc, ...bc];
  const constDims = [...ccB, ...bcB].map((x) => (x ? 0 : null));
  const carryAvals = carry.map((c) => c.aval);
  const preds = (xs: readonly Value[]) =>
    vmapFlatAxis0(
      (...ys: Value[]) => evalJaxpr(p.condJaxpr, [], [...ys.slice(0, nCC), ...ys.slice(nCC + nBC)]),
      [...constDims, ...carry.map(() => 0)],
      size,
      xs,
    )[0]!; // [batch] bool
  const condCj = traceToJaxpr((...xs: Value[]) => [reduceMax(preds(xs), [0])], [...consts.map((c) => c.aval), ...carryAvals], "whileLoop");
  const bodyCj = traceToJaxpr(
    (...xs: Value[]) => {
      const active = preds(xs);
      const next = vmapFlatAxis0(
        (...ys: Value[]) => evalJaxpr(p.bodyJaxpr, [], ys.slice(nCC)),
        [...constDims, ...carry.map(() => 0)],
        size,
        xs,
      );
      const old = xs.slice(nCC + nBC);
      return next.map((n, i) => select(broadcastInDim(active, n.aval.shape, [0]), n, old[i]!)); // [batch, ...carry]
    },
    [...consts.map((c) => c.aval), ...carryAvals],
    "whileLoop",
  );
  const cond = hoist(condCj);
  const body = hoist(bodyCj);
  const outs = bindWhile(
    { jaxpr: cond.jaxpr, consts: [...cond.consts, ...consts] },
    { jaxpr: body.jaxpr, consts: [...body.consts, ...consts] },
    carry,
  );
  return [outs, outs.map(() => 0)];
}

// ---------------------------------------------------------------------------------------------------
// Partial evaluation and (no) transpose

interface WhileSplit {
  /** Carries that depend on unknown inputs; null when the predicate itself is unknown (all unknown). */
  readonly carryU: boolean[] | null;
  readonly knownCond: Jaxpr;
  readonly knownBody: Jaxpr;
}

function splitWhile(p: WhileParams, unknownsIn: readonly boolean[]): WhileSplit {
  const nCC = p.condNumConsts;
  const nBC = p.bodyNumConsts;
  const ccU = unknownsIn.slice(0, nCC);
  const bcU = unknownsIn.slice(nCC, nCC + nBC);
  let carryU = unknownsIn.slice(nCC + nBC);
  for (;;) {
    const out = outputsDependOn(p.bodyJaxpr, [...bcU, ...carryU]);
    if (within(out, carryU)) break;
    carryU = orMasks(carryU, out);
  }
  const predU = outputsDependOn(p.condJaxpr, [...ccU, ...carryU])[0]!;
  const [jc] = dce(p.condJaxpr, [true]);
  const [jb] = dce(p.bodyJaxpr, carryU.map((u) => !u));
  const keepIn = (j: Jaxpr, mask: readonly boolean[]) => new Jaxpr([], j.invars.filter((_, i) => !mask[i]), j.eqns, j.outs);
  return {
    carryU: predU ? null : carryU,
    knownCond: keepIn(jc, [...ccU, ...carryU]),
    knownBody: keepIn(jb, [...bcU, ...carryU]),
  };
}

function knownParams(p: WhileParams, s: WhileSplit, unknownsIn: readonly boolean[]): WhileParams {
  return {
    condJaxpr: s.knownCond,
    bodyJaxpr: s.knownBody,
    condNumConsts: unknownsIn.slice(0, p.condNumConsts).filter((u) => !u).length,
    bodyNumConsts: unknownsIn.slice(p.condNumConsts, p.condNumConsts + p.bodyNumConsts).filter((u) => !u).length,
  };
}

function whilePartialEval(trace: PartialEvalTrace, tracers: readonly PartialEvalTracer[], p: WhileParams): Tracer[] {
  const nK = tracers.length - p.condNumConsts - p.bodyNumConsts;
  const avals = p.bodyJaxpr.outAvals;
  const unknownsIn = tracers.map((t) => !t.pval.isKnown);
  const s = splitWhile(p, unknownsIn);
  if (s.carryU === null || s.carryU.every(Boolean)) return trace.recordEqn(whileP, tracers, p, avals);
  const carryU = s.carryU;
  // Known carries: a loop over them alone, run now.
  const knownIn = [...unknownsIn.slice(0, -nK), ...carryU];
  const known = bind(
    whileP,
    tracers.filter((_, i) => !knownIn[i]).map((t) => t.pval.known!),
    knownParams(p, s, knownIn),
  );
  // Unknown carries: the whole loop, recorded (it recomputes the known part).
  const all = carryU.some(Boolean) ? trace.recordEqn(whileP, tracers, p, avals) : [];
  let k = 0;
  return carryU.map((u, i) => (u ? all[i]! : trace.pure(known[k++]!)));
}

function whilePartialEvalJaxpr(unknownsIn: readonly boolean[], eqn: JaxprEqn) {
  const p = eqn.params as WhileParams;
  const nK = eqn.inputs.length - p.condNumConsts - p.bodyNumConsts;
  const s = splitWhile(p, unknownsIn);
  const knownInputsAsRes = eqn.inputs.filter((a, i): a is Var => a instanceof Var && !unknownsIn[i]);
  if (s.carryU === null || s.carryU.every(Boolean)) {
    return { known: null, unknown: eqn, unknownsOut: eqn.outBinders.map(() => true), residuals: knownInputsAsRes };
  }
  const carryU = s.carryU;
  const knownIn = [...unknownsIn.slice(0, -nK), ...carryU];
  const knownEqn: JaxprEqn = {
    prim: whileP,
    inputs: eqn.inputs.filter((_, i) => !knownIn[i]),
    params: knownParams(p, s, knownIn),
    outBinders: eqn.outBinders.filter((_, i) => !carryU[i]),
  };
  const unknownEqn: JaxprEqn | null = carryU.some(Boolean)
    ? {
        ...eqn,
        outBinders: eqn.outBinders.map((v, i) => (carryU[i] ? v : new Var(v.aval))),
      }
    : null;
  return { known: knownEqn, unknown: unknownEqn, unknownsOut: carryU, residuals: unknownEqn ? knownInputsAsRes : [] };
}

function reverseModeError(): ArgumentError {
  return new ArgumentError(
    "whileLoop: reverse-mode differentiation (grad / vjp) does not work for whileLoop, got a cotangent flowing into one; " +
      "its trip count depends on the data, so no residuals are saved" +
      "\nTip: use scan, or fori with static (JS number) bounds, whose trip count is known; forward mode (jvp) works with whileLoop",
  );
}

// ---------------------------------------------------------------------------------------------------
// The primitive

export const whileP: Primitive<WhileParams> = definePrimitiveRules<WhileParams>({
  name: "while",
  abstractEval: (avals, p) => {
    const nCC = p.condNumConsts;
    const nBC = p.bodyNumConsts;
    const carry = avals.slice(nCC + nBC);
    const wantC = p.condJaxpr.inAvals;
    const wantB = p.bodyJaxpr.inAvals;
    const got = (xs: readonly ShapedArray[]) => `(${xs.map((a) => a.str()).join(", ")})`;
    const condIn = [...avals.slice(0, nCC), ...carry];
    const bodyIn = avals.slice(nCC);
    if (condIn.length !== wantC.length || condIn.some((a, i) => !a.sameType(wantC[i]!))) {
      throw new ShapeError(`while: the predicate takes ${got(wantC)}, got ${got(condIn)}`);
    }
    if (bodyIn.length !== wantB.length || bodyIn.some((a, i) => !a.sameType(wantB[i]!))) {
      throw new ShapeError(`while: the body takes ${got(wantB)}, got ${got(bodyIn)}`);
    }
    return p.bodyJaxpr.outAvals;
  },
  impl: (args, p) => whileImpl(args, p) as any,
  jvp: whileJvp,
  transpose: () => {
    throw reverseModeError();
  },
  vmap: whileVmap,
  partialEval: whilePartialEval,
  printParams: (p) =>
    `body_jaxpr=${printNested(p.bodyJaxpr)} body_nconsts=${p.bodyNumConsts} ` +
    `cond_jaxpr=${printNested(p.condJaxpr)} cond_nconsts=${p.condNumConsts}`,
});

partialEvalJaxprRules.set(whileP, whilePartialEvalJaxpr);

// ---------------------------------------------------------------------------------------------------
// The API

/**
 * `whileLoop(condFn, bodyFn, init)`: JAX's `lax.while_loop` —
 * ```
 * let carry = init; while (condFn(carry)) carry = bodyFn(carry); return carry;
 * ```
 * `condFn` returns a bool scalar; `bodyFn` keeps the carry's structure, shapes and dtypes. Forward-mode
 * differentiable and batchable (lanes may stop at different steps); reverse mode raises an error — use
 * `scan` or `fori` with static bounds.
 */
export function whileLoop<C = any>(condFn: (carry: C) => unknown, bodyFn: (carry: C) => C, init: C): C {
  if (typeof condFn !== "function" || typeof bodyFn !== "function") {
    throw new ArgumentError("whileLoop: condFn and bodyFn must be functions\nTip: the signature is whileLoop(condFn, bodyFn, init)");
  }
  const [leaves, def] = flatten(init);
  const paths = leafPaths(init, "carry");
  let initVals = asValues(leaves, paths, "whileLoop init");
  const nK = initVals.length;
  for (let attempt = 0; ; attempt++) {
    const promote: (ShapedArray | null)[] = new globalThis.Array(nK).fill(null);
    const avals = initVals.map((v) => v.aval);
    const bodyCj = traceToJaxpr(
      (...vs: Value[]) => {
        const out = bodyFn(unflatten<C>(def, vs));
        const [ol, od] = flatten(out);
        if (!treedefEqual(od, def)) {
          throw new TreeMismatchError(
            `whileLoop: bodyFn must return init's structure ${treedefStr(def)}, got ${treedefStr(od)}`,
          );
        }
        return asValues(ol, paths, "whileLoop body output").map((v, i) => fitCarry("whileLoop", v, avals[i]!, paths[i]!, i, promote));
      },
      avals,
      "whileLoop",
    );
    if (promote.some((a) => a !== null) && attempt < nK) {
      initVals = initVals.map((v, i) => (promote[i] ? promoteTo(v, promote[i]!) : v));
      continue;
    }
    const condCj = traceToJaxpr(
      (...vs: Value[]) => {
        const [pl] = flatten(condFn(unflatten<C>(def, vs)));
        const pred = pl.length === 1 ? asValues(pl, ["pred"], "whileLoop condFn output")[0]! : null;
        if (pred === null || pred.aval.ndim !== 0 || pred.aval.dtype !== "bool") {
          const got = pred ? pred.aval.str() : `a tree of ${pl.length} leaves`;
          const err = pred && pred.aval.ndim === 0 ? DTypeError : ShapeError;
          throw new err(
            `whileLoop: condFn must return a bool scalar, got ${got}` +
              `\nTip: compare explicitly, e.g. np.less(i, n) or np.greater(np.abs(err), tol)`,
          );
        }
        return [pred];
      },
      avals,
      "whileLoop",
    );
    return unflatten<C>(def, bindWhile(hoist(condCj), hoist(bodyCj), initVals));
  }
}

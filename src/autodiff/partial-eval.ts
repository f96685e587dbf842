/**
 * @file Partial evaluation: runs a function on a mix of known values and unknown (abstract) inputs,
 * evaluating everything that depends only on known values and recording the rest into a jaxpr.
 * `linearize` is partial evaluation of `jvp` with the tangents unknown: the known part is the primal
 * computation, the recorded part is the linear map from input tangents to output tangents, which
 * `transpose.ts` turns into the VJP. This is how JAX gets reverse mode from forward mode.
 *
 * Also `partialEvalJaxpr`, the same split done syntactically on a jaxpr (for control-flow bodies).
 */
import { ShapedArray } from "./aval.js";
import { bind, fullLower, instantiate, MainTrace, Primitive, Trace, Tracer, Value, withNewMain } from "./core.js";
import { ArgumentError } from "./errors.js";
import { Atom, ClosedJaxpr, Jaxpr, JaxprEqn, Var } from "./jaxpr.js";
import { jvpFlat } from "./jvp.js";

export class PartialVal {
  private constructor(
    readonly aval: ShapedArray,
    readonly known: Value | null,
  ) {}
  static known(v: Value): PartialVal {
    return new PartialVal(v.aval, v);
  }
  static unknown(aval: ShapedArray): PartialVal {
    return new PartialVal(aval, null);
  }
  get isKnown(): boolean {
    return this.known !== null;
  }
}

type Recipe =
  | { readonly kind: "lambda" }
  | { readonly kind: "const"; readonly val: Value }
  | {
      readonly kind: "eqn";
      readonly prim: Primitive;
      readonly tracersIn: readonly PartialEvalTracer[];
      readonly params: any;
      readonly tracersOut: PartialEvalTracer[];
    };

export class PartialEvalTracer extends Tracer {
  constructor(
    trace: Trace,
    readonly pval: PartialVal,
    public recipe: Recipe | null,
  ) {
    super(trace);
  }
  get aval(): ShapedArray {
    return this.pval.aval;
  }
  override fullLower(): Value {
    return this.pval.known !== null ? fullLower(this.pval.known) : this;
  }
}

export class PartialEvalTrace extends Trace {
  newArg(pval: PartialVal): PartialEvalTracer {
    return new PartialEvalTracer(this, pval, { kind: "lambda" });
  }
  pure(x: Value): Tracer {
    return new PartialEvalTracer(this, PartialVal.known(x), null);
  }
  lift(x: Tracer): Tracer {
    return this.pure(x);
  }
  /** Makes a known tracer an unknown one whose value is recorded as a constant of the jaxpr. */
  instantiateConst(t: PartialEvalTracer): PartialEvalTracer {
    if (t.pval.known === null) return t;
    return new PartialEvalTracer(this, PartialVal.unknown(t.aval), { kind: "const", val: t.pval.known });
  }
  /** Records an equation with (some) unknown inputs; returns its unknown output tracers. */
  recordEqn(prim: Primitive, tracers: readonly PartialEvalTracer[], params: any, avalsOut: readonly ShapedArray[]): PartialEvalTracer[] {
    const tracersIn = tracers.map((t) => this.instantiateConst(t));
    const tracersOut: PartialEvalTracer[] = [];
    const recipe: Recipe = { kind: "eqn", prim, tracersIn, params, tracersOut };
    for (const a of avalsOut) tracersOut.push(new PartialEvalTracer(this, PartialVal.unknown(a), recipe));
    return tracersOut;
  }
  processPrimitive(prim: Primitive, tracers: readonly Tracer[], params: any): Tracer[] {
    const ts = tracers as readonly PartialEvalTracer[];
    if (ts.every((t) => t.pval.known !== null)) {
      return bind(prim, ts.map((t) => t.pval.known!), params).map((v) => this.pure(v));
    }
    if (prim.partialEval) return prim.partialEval(this, ts, params);
    const avalsOut = prim.abstractEval(
      ts.map((t) => t.aval),
      params,
    );
    return this.recordEqn(prim, ts, params, avalsOut);
  }
}

/** Builds the jaxpr of the unknown computation from input tracers to output tracers. */
function tracersToJaxpr(tracersIn: readonly PartialEvalTracer[], tracersOut: readonly PartialEvalTracer[]): ClosedJaxpr {
  const tracerToVar = new Map<PartialEvalTracer, Var>();
  const constvars: Var[] = [];
  const consts: Value[] = [];
  const invars = tracersIn.map((t) => {
    const v = new Var(t.aval);
    tracerToVar.set(t, v);
    return v;
  });
  const eqns: JaxprEqn[] = [];
  const processed = new Set<Recipe>();
  const inputSet = new Set(tracersIn);

  // Iterative post-order DFS over recipes, so deep programs do not overflow the JS stack.
  const visit = (root: PartialEvalTracer) => {
    const stack: [PartialEvalTracer, boolean][] = [[root, false]];
    while (stack.length) {
      const [t, expanded] = stack.pop()!;
      if (tracerToVar.has(t)) continue;
      const r = t.recipe;
      if (r === null || r.kind === "lambda") {
        if (!inputSet.has(t)) {
          throw new ArgumentError("partial eval: an unknown value that is not an input was found (webgrad bug)");
        }
        continue;
      }
      if (r.kind === "const") {
        const v = new Var(t.aval);
        tracerToVar.set(t, v);
        constvars.push(v);
        consts.push(r.val);
        continue;
      }
      if (processed.has(r)) continue;
      if (!expanded) {
        stack.push([t, true]);
        for (const x of r.tracersIn) if (!tracerToVar.has(x)) stack.push([x, false]);
        continue;
      }
      processed.add(r);
      const inputs = r.tracersIn.map((x) => tracerToVar.get(x)!);
      const outBinders = r.tracersOut.map((o) => {
        const v = new Var(o.aval);
        tracerToVar.set(o, v);
        return v;
      });
      eqns.push({ prim: r.prim, inputs, params: r.params, outBinders });
    }
  };
  for (const t of tracersOut) visit(t);
  const outs = tracersOut.map((t) => tracerToVar.get(t)!);
  return new ClosedJaxpr(new Jaxpr(constvars, invars, eqns, outs), consts);
}

/**
 * Runs `fn` (flat in, flat out) on partial values. Returns the jaxpr of the unknown part (inputs: the
 * unknown inputs; outputs: the unknown outputs) and the partial values of all outputs.
 */
export function partialEvalFlat(
  fn: (...xs: Value[]) => readonly Value[],
  pvalsIn: readonly PartialVal[],
  /** Which outputs must be unknown even if their value is known (decided after `fn` ran). */
  instantiateOut: (i: number, numOuts: number) => boolean = () => false,
): [ClosedJaxpr, PartialVal[]] {
  return withNewMain(PartialEvalTrace, null, "linearize", (main: MainTrace) => {
    const trace = new PartialEvalTrace(main);
    const tracersIn = pvalsIn.map((p) => trace.newArg(p));
    const outs = fn(...tracersIn);
    const tracersOut = outs.map((o, i) => {
      const t = trace.fullRaise(o) as PartialEvalTracer;
      return instantiateOut(i, outs.length) ? trace.instantiateConst(t) : t;
    });
    const pvalsOut = tracersOut.map((t) => t.pval);
    const unkIn = tracersIn.filter((t) => t.pval.known === null);
    const unkOut = tracersOut.filter((t) => t.pval.known === null);
    return [tracersToJaxpr(unkIn, unkOut), pvalsOut];
  });
}

/**
 * Linearizes a flat function at `primals`: the primal outputs, and the jaxpr of the linear map from
 * input tangents to output tangents (with its constants, the residuals).
 */
export function linearizeFlat(
  fn: (...xs: Value[]) => readonly unknown[],
  primals: readonly Value[],
  transformName = "linearize",
): [Value[], ClosedJaxpr] {
  const n = primals.length;
  const fJvp = (...xs: Value[]): Value[] => {
    const [po, to] = jvpFlat(fn, xs.slice(0, n), xs.slice(n), transformName);
    return [...po, ...to.map((t, i) => instantiate(t, po[i]!.aval))];
  };
  const pvalsIn = [
    ...primals.map((p) => PartialVal.known(p)),
    ...primals.map((p) => PartialVal.unknown(p.aval.withWeak(false))),
  ];
  // Tangent outputs (the second half) are always jaxpr outputs, even when constant (e.g. zeros).
  const [jaxpr, pvalsOut] = partialEvalFlat(fJvp, pvalsIn, (i, total) => i >= total / 2);
  const primalsOut = pvalsOut.slice(0, pvalsOut.length / 2).map((p) => {
    if (p.known === null) throw new ArgumentError("linearize: a primal output depends on a tangent (webgrad bug)");
    return p.known;
  });
  return [primalsOut, jaxpr];
}

// ---------------------------------------------------------------------------------------------------
// Syntactic partial evaluation of a jaxpr (for control-flow bodies)

/** A custom syntactic rule for higher-order primitives (scan, cond): splits one equation. */
export type PartialEvalJaxprRule = (
  unknownsIn: readonly boolean[],
  eqn: JaxprEqn,
) => { known: JaxprEqn | null; unknown: JaxprEqn | null; unknownsOut: boolean[]; residuals: Var[] };

export const partialEvalJaxprRules = new Map<Primitive, PartialEvalJaxprRule>();

/**
 * Splits a const-free jaxpr by which inputs are unknown. Returns
 * - `known`: known inputs -> [known outputs, residuals]
 * - `unknown`: [residuals, unknown inputs] -> unknown outputs
 * - which outputs are unknown, and the number of residuals.
 * Outputs with `instantiate[i]` are made unknown (their known value passes as a residual).
 */
export function partialEvalJaxpr(
  jaxpr: Jaxpr,
  unknownsIn: readonly boolean[],
  instantiate: readonly boolean[] | boolean = false,
): { known: Jaxpr; unknown: Jaxpr; unknownsOut: boolean[]; numRes: number } {
  if (jaxpr.constvars.length) throw new ArgumentError("partialEvalJaxpr: expects a jaxpr without constvars");
  const env = new Map<Var, boolean>();
  const residuals = new Set<Var>();
  const read = (a: Atom) => a instanceof Var && env.get(a) === true;
  const newRes = (a: Atom): Atom => {
    if (a instanceof Var) residuals.add(a);
    return a;
  };
  const eqnsKnown: JaxprEqn[] = [];
  const eqnsUnknown: JaxprEqn[] = [];
  jaxpr.invars.forEach((v, i) => env.set(v, unknownsIn[i]!));
  for (const e of jaxpr.eqns) {
    const unks = e.inputs.map(read);
    const rule = partialEvalJaxprRules.get(e.prim);
    if (rule && unks.some((u) => u)) {
      const r = rule(unks, e);
      if (r.known) eqnsKnown.push(r.known);
      if (r.unknown) eqnsUnknown.push(r.unknown);
      r.residuals.forEach((v) => residuals.add(v));
      e.outBinders.forEach((v, i) => env.set(v, r.unknownsOut[i]!));
    } else if (unks.some((u) => u)) {
      const inputs = e.inputs.map((a, i) => (unks[i] ? a : newRes(a)));
      eqnsUnknown.push({ ...e, inputs });
      e.outBinders.forEach((v) => env.set(v, true));
    } else {
      eqnsKnown.push(e);
      e.outBinders.forEach((v) => env.set(v, false));
    }
  }
  let unknownsOut = jaxpr.outs.map(read);
  const inst = jaxpr.outs.map((_, i) => (typeof instantiate === "boolean" ? instantiate : instantiate[i]!));
  // Known outputs that must become unknown: pass their value through as a residual. Literals are
  // re-materialised on the unknown side as they are.
  jaxpr.outs.forEach((a, i) => {
    if (inst[i] && !unknownsOut[i]) newRes(a);
  });
  unknownsOut = unknownsOut.map((u, i) => u || inst[i]!);
  const res = [...residuals];
  // Residuals that are unknown-side inputs are not residuals (they are available there already).
  const resVars = res.filter((v) => env.get(v) !== true);
  const insKnown = jaxpr.invars.filter((_, i) => !unknownsIn[i]);
  const insUnknown = jaxpr.invars.filter((_, i) => unknownsIn[i]);
  const outsKnown = jaxpr.outs.filter((_, i) => !unknownsOut[i]);
  const outsUnknown = jaxpr.outs.filter((_, i) => unknownsOut[i]);
  // Fresh binders on the unknown side for the residuals.
  const known = new Jaxpr([], insKnown, eqnsKnown, [...outsKnown, ...resVars]);
  const unknown = new Jaxpr([], [...resVars, ...insUnknown], eqnsUnknown, outsUnknown);
  return { known, unknown, unknownsOut, numRes: resVars.length };
}

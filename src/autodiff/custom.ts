/**
 * @file User-defined derivatives and rematerialisation: `customJvp`, `customVjp`, `checkpoint`.
 *
 * - `customJvp(f).defjvp(rule)`: forward mode uses `rule`; reverse mode comes from transposing it, as
 *   in JAX, so the rule's tangent output must be linear in the tangents.
 * - `customVjp(f).defvjp(fwd, bwd)`: under differentiation the forward pass runs `fwd` (saving
 *   residuals) and the linear part is an opaque `custom_lin` primitive whose transpose calls `bwd`.
 * - `checkpoint(f)`: under reverse mode only `f`'s inputs are saved; its intermediates are recomputed
 *   during the backward pass (https://arxiv.org/abs/1604.06174).
 */
import { ShapedArray } from "./aval.js";
import {
  bind,
  definePrimitiveRules,
  hooks,
  instantiate,
  MaybeZero,
  nonlinear,
  Primitive,
  Tracer,
  UndefinedPrimal,
  Value,
} from "./core.js";
import { ArgumentError, DTypeError, ShapeError } from "./errors.js";
import { dce, evalJaxpr, Jaxpr, JaxprEqn, outputsDependOn, traceToJaxpr, Var } from "./jaxpr.js";
import { bindCall, CallParams, callJvpRule, callVmapRule, vmapJaxpr } from "./call.js";
import { partialEvalFlat, partialEvalJaxprRules, PartialEvalTrace, PartialEvalTracer, PartialVal } from "./partial-eval.js";
import { transposeClosed } from "./transpose.js";
import { flatten, TreeDef, treedefEqual, treedefStr, unflatten } from "./tree.js";
import { BDim, moveBatchAxis, vmapFlatAxis0 } from "./vmap.js";

/** Traces a pytree function at its arguments; returns the closed jaxpr, flat values, and tree defs. */
function traceTree(what: string, f: (...a: any[]) => any, args: readonly unknown[]) {
  const [leaves, inDef] = flatten(args);
  const values = leaves.map((x, i) => hooks().asValue(x, `${what} argument leaf ${i}`));
  let outDef: TreeDef | undefined;
  const cj = traceToJaxpr(
    (...xs: Value[]) => {
      const [ol, od] = flatten(f(...unflatten<unknown[]>(inDef, xs)));
      outDef = od;
      return ol;
    },
    values.map((v) => v.aval),
    what,
  );
  return { cj, values, inDef, outDef: outDef! };
}

function checkMatches(what: string, got: Value, want: ShapedArray, i: number): Value {
  const a = got.aval;
  if (a.shape.length !== want.shape.length || a.shape.some((d, j) => d !== want.shape[j])) {
    throw new ShapeError(`${what}: output leaf ${i} must have shape ${want.str()}, got ${a.str()}`);
  }
  if (a.dtype !== want.dtype) {
    if (a.weakType) return hooks().convert(got, want);
    throw new DTypeError(`${what}: output leaf ${i} must have dtype ${want.dtype}, got ${a.dtype}`);
  }
  return got;
}

function flatValues(what: string, tree: unknown, def: TreeDef, avals: readonly ShapedArray[]): Value[] {
  const [leaves, d] = flatten(tree);
  if (!treedefEqual(d, def)) {
    throw new ArgumentError(`${what}: expected a tree of structure ${treedefStr(def)}, got ${treedefStr(d)}`);
  }
  return leaves.map((x, i) => checkMatches(what, hooks().asValue(x, `${what} leaf ${i}`), avals[i]!, i));
}

/** Broadcasts every argument to batch axis 0 (custom rules are batched on fully batched inputs). */
function allAt0(args: readonly Value[], dims: readonly BDim[], size: number): Value[] {
  return args.map((a, i) => moveBatchAxis(a, dims[i]!, 0, size));
}

// ---------------------------------------------------------------------------------------------------
// customJvp

type FlatJvp = (primals: readonly Value[], tangents: readonly Value[]) => [Value[], Value[]];

interface CustomJvpParams extends CallParams {
  readonly name: string;
  readonly jvpFn: FlatJvp;
}

function rejectConstTangents(what: string, tangents: readonly MaybeZero[], numConsts: number): void {
  if (tangents.slice(0, numConsts).some((t) => t !== null)) {
    throw new ArgumentError(
      `${what}: the function closes over a value that is being differentiated` +
        `\nTip: pass that value as an explicit argument of the custom function`,
    );
  }
}

export const customJvpCallP: Primitive<CustomJvpParams> = definePrimitiveRules<CustomJvpParams>({
  name: "custom_jvp_call",
  abstractEval: (_avals, p) => p.jaxpr.outAvals,
  impl: (args, p) => evalJaxpr(p.jaxpr, [], args) as any,
  jvp: (primals, tangents, p) => {
    rejectConstTangents("customJvp", tangents, p.numConsts);
    const ps = primals.slice(p.numConsts);
    const ts = tangents.slice(p.numConsts).map((t, i) => instantiate(t, ps[i]!.aval));
    return p.jvpFn(ps, ts);
  },
  transpose: nonlinear,
  vmap: (args, dims, p, size) => {
    const batched = allAt0(args, dims, size);
    const cj = vmapJaxpr(p.jaxpr, args.map(() => true), size);
    const n = args.length - p.numConsts;
    const jvpFn: FlatJvp = (ps, ts) => {
      const outs = vmapFlatAxis0(
        (...xs: Value[]) => {
          const [po, to] = p.jvpFn(xs.slice(0, n), xs.slice(n));
          return [...po, ...to];
        },
        [...ps.map(() => 0), ...ts.map(() => 0)],
        size,
        [...ps, ...ts],
      );
      return [outs.slice(0, outs.length / 2), outs.slice(outs.length / 2)];
    };
    const outs = bindCall(customJvpCallP, cj, batched, { name: p.name, jvpFn });
    return [outs, outs.map(() => 0)];
  },
  printParams: (p) => `name=${p.name}`,
});

export interface CustomJvpFunction<F extends (...args: any[]) => any> {
  (...args: Parameters<F>): ReturnType<F>;
  /**
   * Sets the JVP rule: `rule(primals, tangents)` returns `[primalOut, tangentOut]`, both with the
   * output's structure; `tangentOut` must be linear in `tangents`. Returns the function itself.
   */
  defjvp(rule: (primals: any[], tangents: any[]) => [any, any]): CustomJvpFunction<F>;
}

/** Wraps `f` so its derivative is given by a rule (set with `.defjvp`), as JAX's custom_jvp. */
export function customJvp<F extends (...args: any[]) => any>(f: F): CustomJvpFunction<F> {
  let rule: ((primals: any[], tangents: any[]) => [any, any]) | null = null;
  const name = f.name || "fn";
  const g = ((...args: unknown[]) => {
    if (!rule) throw new ArgumentError(`customJvp(${name}): call .defjvp(rule) before calling the function`);
    const r = rule;
    const { cj, values, inDef, outDef } = traceTree("customJvp", f, args);
    const outAvals = cj.outAvals;
    const jvpFn: FlatJvp = (ps, ts) => {
      const [po, to] = r(unflatten(inDef, ps), unflatten(inDef, ts));
      const pol = flatValues(`customJvp(${name}) rule primal output`, po, outDef, outAvals);
      const tol = flatValues(
        `customJvp(${name}) rule tangent output`,
        to,
        outDef,
        outAvals.map((a) => a.withWeak(false)),
      );
      return [pol, tol];
    };
    return unflatten(outDef, bindCall(customJvpCallP, cj, values, { name, jvpFn }));
  }) as unknown as CustomJvpFunction<F>;
  g.defjvp = (r) => {
    rule = r;
    return g;
  };
  return g;
}

// ---------------------------------------------------------------------------------------------------
// customVjp

type FlatFwd = (primals: readonly Value[]) => [Value[], Value[]];
type FlatBwd = (res: readonly Value[], cts: readonly Value[]) => Value[];

interface CustomVjpParams extends CallParams {
  readonly name: string;
  readonly fwd: FlatFwd;
  readonly bwd: FlatBwd;
}

interface CustomLinParams {
  readonly name: string;
  readonly numRes: number;
  readonly bwd: FlatBwd;
  readonly outAvals: readonly ShapedArray[];
}

function forwardModeError(name: string): ArgumentError {
  return new ArgumentError(
    `jvp: forward-mode differentiation of customVjp(${name}) is not possible, it only defines a VJP` +
      `\nTip: use grad / vjp / jacrev, or define the derivative with customJvp instead`,
  );
}

export const customLinP: Primitive<CustomLinParams> = definePrimitiveRules<CustomLinParams>({
  name: "custom_lin",
  abstractEval: (_avals, p) => [...p.outAvals],
  impl: (_args, p) => {
    throw forwardModeError(p.name);
  },
  jvp: (_ps, _ts, p) => {
    throw forwardModeError(p.name);
  },
  transpose: (cts, args, p) => {
    const res = args.slice(0, p.numRes) as Value[];
    if (res.some((r) => r instanceof UndefinedPrimal)) {
      throw new ArgumentError(`customVjp(${p.name}): residuals must not depend on tangents (webgrad bug)`);
    }
    const ctsFull = cts.map((c, i) => instantiate(c, p.outAvals[i]!));
    return [...res.map(() => null), ...p.bwd(res, ctsFull)];
  },
  vmap: (args, dims, p, size) => {
    const batched = allAt0(args, dims, size);
    const bwd: FlatBwd = (res, cts) =>
      vmapFlatAxis0(
        (...xs: Value[]) => p.bwd(xs.slice(0, res.length), xs.slice(res.length)),
        [...res, ...cts].map(() => 0),
        size,
        [...res, ...cts],
      );
    const outAvals = p.outAvals.map((a) => new ShapedArray([size, ...a.shape], a.dtype, a.weakType));
    const outs = bind(customLinP, batched, { ...p, bwd, outAvals });
    return [outs, outs.map(() => 0)];
  },
  printParams: (p) => `name=${p.name} num_res=${p.numRes}`,
});

export const customVjpCallP: Primitive<CustomVjpParams> = definePrimitiveRules<CustomVjpParams>({
  name: "custom_vjp_call",
  abstractEval: (_avals, p) => p.jaxpr.outAvals,
  impl: (args, p) => evalJaxpr(p.jaxpr, [], args) as any,
  jvp: (primals, tangents, p) => {
    rejectConstTangents("customVjp", tangents, p.numConsts);
    const ps = primals.slice(p.numConsts);
    const [outs, res] = p.fwd(ps);
    const ts = tangents.slice(p.numConsts).map((t, i) => instantiate(t, ps[i]!.aval));
    const outAvals = outs.map((o) => o.aval.withWeak(false));
    const touts = bind(customLinP, [...res, ...ts], { name: p.name, numRes: res.length, bwd: p.bwd, outAvals });
    return [outs, touts];
  },
  transpose: nonlinear,
  vmap: (args, dims, p, size) => {
    const batched = allAt0(args, dims, size);
    const cj = vmapJaxpr(p.jaxpr, args.map(() => true), size);
    const nOut = p.jaxpr.outs.length;
    const fwd: FlatFwd = (ps) => {
      let numRes = 0;
      const outs = vmapFlatAxis0(
        (...xs: Value[]) => {
          const [o, r] = p.fwd(xs);
          numRes = r.length;
          return [...o, ...r];
        },
        ps.map(() => 0),
        size,
        ps,
      );
      void numRes;
      return [outs.slice(0, nOut), outs.slice(nOut)];
    };
    const bwd: FlatBwd = (res, cts) =>
      vmapFlatAxis0(
        (...xs: Value[]) => p.bwd(xs.slice(0, res.length), xs.slice(res.length)),
        [...res, ...cts].map(() => 0),
        size,
        [...res, ...cts],
      );
    const outs = bindCall(customVjpCallP, cj, batched, { name: p.name, fwd, bwd });
    return [outs, outs.map(() => 0)];
  },
  printParams: (p) => `name=${p.name}`,
});

export interface CustomVjpFunction<F extends (...args: any[]) => any> {
  (...args: Parameters<F>): ReturnType<F>;
  /**
   * Sets the VJP: `fwd(...args)` returns `[output, residuals]` (residuals: any pytree);
   * `bwd(residuals, ct)` returns one cotangent per positional argument (null for zero).
   */
  defvjp(fwd: (...args: any[]) => [any, any], bwd: (res: any, ct: any) => readonly any[]): CustomVjpFunction<F>;
}

/** Wraps `f` so reverse mode uses user-given forward/backward functions, as JAX's custom_vjp. */
export function customVjp<F extends (...args: any[]) => any>(f: F): CustomVjpFunction<F> {
  let rules: { fwd: (...a: any[]) => [any, any]; bwd: (res: any, ct: any) => readonly any[] } | null = null;
  const name = f.name || "fn";
  const g = ((...args: unknown[]) => {
    if (!rules) throw new ArgumentError(`customVjp(${name}): call .defvjp(fwd, bwd) before calling the function`);
    const r = rules;
    const { cj, values, inDef, outDef } = traceTree("customVjp", f, args);
    const outAvals = cj.outAvals;
    const inAvals = values.map((v) => v.aval.withWeak(false));
    let resDef: TreeDef | undefined;
    const fwd: FlatFwd = (ps) => {
      const res = r.fwd(...unflatten<unknown[]>(inDef, ps));
      if (!Array.isArray(res) || res.length !== 2) {
        throw new ArgumentError(`customVjp(${name}): fwd must return a pair [output, residuals]`);
      }
      const outs = flatValues(`customVjp(${name}) fwd output`, res[0], outDef, outAvals);
      const [rl, rd] = flatten(res[1]);
      resDef = rd;
      return [outs, rl.map((x, i) => hooks().asValue(x, `customVjp(${name}) residual ${i}`))];
    };
    const bwd: FlatBwd = (res, cts) => {
      const out = r.bwd(unflatten(resDef!, res), unflatten(outDef, cts));
      if (!Array.isArray(out) || out.length !== args.length) {
        throw new ArgumentError(
          `customVjp(${name}): bwd must return a list with one cotangent per argument (${args.length}), got ${
            Array.isArray(out) ? `a list of ${out.length}` : typeof out
          }`,
        );
      }
      // null entries (or null leaves) are zeros.
      const perArg = out.map((o, i) => (o === null || o === undefined ? zerosTree(args[i]) : o));
      return flatValues(`customVjp(${name}) bwd output`, perArg, inDef, inAvals);
    };
    return unflatten(outDef, bindCall(customVjpCallP, cj, values, { name, fwd, bwd }));
  }) as unknown as CustomVjpFunction<F>;
  g.defvjp = (fwd, bwd) => {
    rules = { fwd, bwd };
    return g;
  };
  return g;
}

function zerosTree(x: unknown): unknown {
  const [leaves, def] = flatten(x);
  return unflatten(
    def,
    leaves.map((l, i) => hooks().zeros(hooks().asValue(l, `leaf ${i}`).aval.withWeak(false))),
  );
}

// ---------------------------------------------------------------------------------------------------
// checkpoint (remat)

interface CheckpointParams extends CallParams {
  readonly name: string;
}

/** Keeps only the used invars of a jaxpr. */
function pruneInvars(j: Jaxpr, used: readonly boolean[]): Jaxpr {
  return new Jaxpr(j.constvars, j.invars.filter((_, i) => used[i]), j.eqns, j.outs);
}

export const checkpointP: Primitive<CheckpointParams> = definePrimitiveRules<CheckpointParams>({
  name: "checkpoint",
  abstractEval: (_avals, p) => p.jaxpr.outAvals,
  impl: (args, p) => evalJaxpr(p.jaxpr, [], args) as any,
  jvp: (primals, tangents, p) => callJvpRule(checkpointP)(primals, tangents, p),
  vmap: (args, dims, p, size) => callVmapRule(checkpointP, (x, d, n) => moveBatchAxis(x, d, 0, n))(args, dims, p, size),
  // The linear inputs are tangents; the others are the saved primal inputs. Partially evaluate the
  // jaxpr with the tangents unknown: the known part (the forward pass) is recomputed now, and the
  // recorded linear part is transposed. This is where rematerialisation happens.
  transpose: (cts, args, p) => {
    const pvals = args.map((a) => (a instanceof UndefinedPrimal ? PartialVal.unknown(a.aval) : PartialVal.known(a)));
    const [linJaxpr, pvalsOut] = partialEvalFlat((...xs: Value[]) => evalJaxpr(p.jaxpr, [], xs), pvals);
    // Outputs that turned out not to depend on the tangents have zero cotangent contribution.
    const ctsLin = cts.filter((_, i) => !pvalsOut[i]!.isKnown);
    const ctsIn = transposeClosed(linJaxpr, ctsLin);
    let k = 0;
    return args.map((a) => (a instanceof UndefinedPrimal ? ctsIn[k++]! : null));
  },
  partialEval: (trace: PartialEvalTrace, tracers: readonly PartialEvalTracer[], p: CheckpointParams) => {
    const unknownIn = tracers.map((t) => !t.pval.isKnown);
    const outUnknown = outputsDependOn(p.jaxpr, unknownIn);
    const outs: Tracer[] = [];
    if (outUnknown.some((u) => !u)) {
      const [jk, usedK] = dce(p.jaxpr, outUnknown.map((u) => !u));
      const knownArgs = tracers.filter((_, i) => usedK[i]).map((t) => t.pval.known!);
      const known = bind(checkpointP, knownArgs, { name: p.name, numConsts: 0, jaxpr: pruneInvars(jk, usedK) });
      let k = 0;
      outUnknown.forEach((u, i) => {
        if (!u) outs[i] = trace.pure(known[k++]!);
      });
    }
    const [ju] = dce(p.jaxpr, outUnknown);
    const unk = trace.recordEqn(checkpointP, tracers, { ...p, jaxpr: ju }, ju.outAvals);
    let k = 0;
    outUnknown.forEach((u, i) => {
      if (u) outs[i] = unk[k++]!;
    });
    return outs;
  },
  printParams: (p) => `name=${p.name}`,
});

/**
 * Syntactic partial evaluation of a checkpoint equation (inside control-flow bodies): a known
 * checkpoint computes the known outputs; the unknown one recomputes from the inputs (saving only the
 * inputs is the point of checkpoint), as checkpointP.partialEval does.
 */
function checkpointPartialEvalJaxpr(unknownsIn: readonly boolean[], eqn: JaxprEqn) {
  const p = eqn.params as { jaxpr: Jaxpr; numConsts: number; name: string };
  const unknownsOut = outputsDependOn(p.jaxpr, unknownsIn);
  let knownEqn: JaxprEqn | null = null;
  if (unknownsOut.some((u) => !u)) {
    const [jk, used] = dce(p.jaxpr, unknownsOut.map((u) => !u));
    knownEqn = {
      prim: checkpointP,
      inputs: eqn.inputs.filter((_, i) => used[i]),
      params: { ...p, numConsts: 0, jaxpr: new Jaxpr([], jk.invars.filter((_, i) => used[i]), jk.eqns, jk.outs) },
      outBinders: eqn.outBinders.filter((_, i) => !unknownsOut[i]),
    };
  }
  let unknownEqn: JaxprEqn | null = null;
  if (unknownsOut.some(Boolean)) {
    const [ju] = dce(p.jaxpr, unknownsOut);
    unknownEqn = { prim: checkpointP, inputs: eqn.inputs, params: { ...p, jaxpr: ju }, outBinders: eqn.outBinders.filter((_, i) => unknownsOut[i]) };
  }
  const residuals = unknownEqn ? eqn.inputs.filter((a, i): a is Var => a instanceof Var && !unknownsIn[i]) : [];
  return { known: knownEqn, unknown: unknownEqn, unknownsOut, residuals };
}

partialEvalJaxprRules.set(checkpointP, checkpointPartialEvalJaxpr);

/**
 * `checkpoint(f)`: same values as `f`; under reverse mode, `f`'s intermediates are not kept for the
 * backward pass but recomputed from its inputs, trading compute for memory.
 */
export function checkpoint<F extends (...args: any[]) => any>(f: F): F {
  const name = f.name || "fn";
  return ((...args: unknown[]) => {
    const { cj, values, outDef } = traceTree("checkpoint", f, args);
    return unflatten(outDef, bindCall(checkpointP, cj, values, { name }));
  }) as F;
}

/**
 * @file Reverse mode: transposes a linear jaxpr (from `linearizeFlat`) by walking it backwards and
 * applying each primitive's transpose rule to the cotangents. On top: `vjp`, `grad`, `valueAndGrad`,
 * `linearize`.
 */
import { isFloat, ShapedArray } from "./aval.js";
import { bind, hooks, instantiate, isTracer, MaybeZero, nonlinear, UndefinedPrimal, Value } from "./core.js";
import { ArgumentError, DTypeError, NonlinearError, ShapeError } from "./errors.js";
import { Atom, ClosedJaxpr, evalJaxpr, Jaxpr, Literal, Var } from "./jaxpr.js";
import { linearizeFlat } from "./partial-eval.js";
import { assertSameStructure, flatten, TreeDef, unflatten } from "./tree.js";

/**
 * Transposes `jaxpr` with respect to the inputs given as `UndefinedPrimal`: returns the cotangent of
 * every input (null = zero, and always null for inputs given as values). Equations whose inputs are all
 * known are evaluated forwards first (they compute residuals, e.g. under `checkpoint`).
 */
export function backwardPass(
  jaxpr: Jaxpr,
  consts: readonly Value[],
  args: readonly (Value | UndefinedPrimal)[],
  cts: readonly MaybeZero[],
): MaybeZero[] {
  const primalEnv = new Map<Var, Value | UndefinedPrimal>();
  jaxpr.constvars.forEach((v, i) => primalEnv.set(v, consts[i]!));
  jaxpr.invars.forEach((v, i) => primalEnv.set(v, args[i]!));
  const readPrimal = (a: Atom): Value | UndefinedPrimal => (a instanceof Literal ? a.val : primalEnv.get(a)!);
  const linearEqns: boolean[] = [];
  for (const e of jaxpr.eqns) {
    const ins = e.inputs.map(readPrimal);
    if (ins.some((x) => x instanceof UndefinedPrimal)) {
      linearEqns.push(true);
      e.outBinders.forEach((v) => primalEnv.set(v, new UndefinedPrimal(v.aval)));
    } else {
      linearEqns.push(false);
      const outs = bind(e.prim, ins as Value[], e.params);
      e.outBinders.forEach((v, i) => primalEnv.set(v, outs[i]!));
    }
  }

  const ctEnv = new Map<Var, Value>();
  const addCt = (v: Var, ct: MaybeZero) => {
    if (ct === null) return;
    const prev = ctEnv.get(v);
    ctEnv.set(v, prev === undefined ? ct : hooks().add(prev, ct));
  };
  jaxpr.outs.forEach((a, i) => {
    if (a instanceof Var) addCt(a, cts[i] ?? null);
  });
  for (let k = jaxpr.eqns.length - 1; k >= 0; k--) {
    if (!linearEqns[k]) continue;
    const e = jaxpr.eqns[k]!;
    const ctsIn = e.outBinders.map((v) => ctEnv.get(v) ?? null);
    e.outBinders.forEach((v) => ctEnv.delete(v));
    if (ctsIn.every((c) => c === null)) continue;
    if (e.prim.transpose === nonlinear) {
      throw new NonlinearError(
        `grad: ${e.prim.name} is not linear, but reverse mode met it applied to a tangent` +
          `\nTip: this usually means a custom rule returned a tangent computed non-linearly; it is a bug otherwise`,
      );
    }
    const ins = e.inputs.map(readPrimal);
    const ctsOut = e.prim.transpose(ctsIn, ins, e.params);
    e.inputs.forEach((a, i) => {
      if (ins[i] instanceof UndefinedPrimal && a instanceof Var) addCt(a, ctsOut[i] ?? null);
    });
  }
  return jaxpr.invars.map((v, i) => (args[i] instanceof UndefinedPrimal ? (ctEnv.get(v) ?? null) : null));
}

/** A jaxpr's cotangent map as a function: linear inputs are UndefinedPrimal. */
export function transposeClosed(cj: ClosedJaxpr, cts: readonly MaybeZero[]): MaybeZero[] {
  return backwardPass(
    cj.jaxpr,
    cj.consts,
    cj.jaxpr.invars.map((v) => new UndefinedPrimal(v.aval)),
    cts,
  );
}

function flattenArgs(what: string, args: readonly unknown[]): [Value[], TreeDef] {
  const [leaves, def] = flatten(args);
  return [leaves.map((x, i) => hooks().asValue(x, `${what} argument leaf ${i}`)), def];
}

function checkCotangent(what: string, ct: Value, primalOut: ShapedArray, i: number): Value {
  const a = ct.aval;
  if (a.shape.length !== primalOut.shape.length || a.shape.some((d, j) => d !== primalOut.shape[j])) {
    throw new ShapeError(`${what}: cotangent ${i} must have the output's shape ${primalOut.str()}, got ${a.str()}`);
  }
  if (a.dtype !== primalOut.dtype) {
    if (a.weakType) return hooks().convert(ct, primalOut.withWeak(false));
    throw new DTypeError(`${what}: cotangent ${i} must have the output's dtype ${primalOut.dtype}, got ${a.dtype}`);
  }
  return ct;
}

/**
 * `vjp(f, ...primals)` returns `[f(...primals), vjpFn]`; `vjpFn(ct)` returns one cotangent per primal
 * (a list, with the primals' structure), for an output cotangent `ct` of the output's structure.
 */
export function vjp<R = any>(f: (...args: any[]) => R, ...primals: unknown[]): [R, (ct: R) => any[]] {
  const [out, fn] = vjpWithAux(f, false, primals);
  return [out as R, fn];
}

/** vjp with `hasAux`: f returns [out, aux]; aux is returned untouched (not differentiated). */
export function vjpWithAux(
  f: (...args: any[]) => any,
  hasAux: boolean,
  primals: readonly unknown[],
  transformName = "vjp",
): [any, (ct: any) => any[], any] {
  const [xs, inDef] = flattenArgs("vjp", primals);
  let outDef: TreeDef | undefined;
  let auxDef: TreeDef | undefined;
  let numOut = 0;
  const flatFn = (...ys: Value[]) => {
    const res = f(...unflatten<unknown[]>(inDef, ys));
    let out = res;
    let aux: unknown = undefined;
    if (hasAux) {
      if (!Array.isArray(res) || res.length !== 2) {
        throw new ArgumentError("vjp/grad: with hasAux the function must return a pair [output, aux]");
      }
      [out, aux] = res;
    }
    const [ol, od] = flatten(out);
    const [al, ad] = flatten(aux);
    outDef = od;
    auxDef = ad;
    numOut = ol.length;
    // Aux arrays leave the trace as outputs; other JS values (numbers, strings) pass through as they are.
    auxIsArray = al.map((x) => isTracer(x) || hooks().isConcrete(x));
    auxOther = al.map((x, i) => (auxIsArray[i] ? undefined : x));
    return [...ol, ...al.filter((_, i) => auxIsArray[i])];
  };
  let auxIsArray: boolean[] = [];
  let auxOther: unknown[] = [];
  const [outsAll, linJaxpr] = linearizeFlat(flatFn, xs, transformName);
  const outs = outsAll.slice(0, numOut);
  const outAvals = outs.map((o) => o.aval);
  const vjpFn = (ct: unknown): any[] => {
    const [cl, cd] = flatten(ct);
    assertSameStructure("vjp", cd, outDef!, "the cotangent must have the structure of the function's output");
    const cts = cl.map((c, i) => checkCotangent("vjp", hooks().asValue(c, `vjp cotangent ${i}`), outAvals[i]!, i));
    const ctsAll: MaybeZero[] = [...cts, ...Array(outsAll.length - numOut).fill(null)];
    const ctsIn = transposeClosed(linJaxpr, ctsAll);
    return unflatten<any[]>(
      inDef,
      ctsIn.map((c, i) => instantiate(c, xs[i]!.aval)),
    );
  };
  let k = numOut;
  const auxLeaves = auxIsArray.map((isArr, i) => (isArr ? outsAll[k++] : auxOther[i]));
  return [unflatten(outDef!, outs), vjpFn, hasAux ? unflatten(auxDef!, auxLeaves) : undefined];
}

export interface GradOptions {
  /** Which positional arguments to differentiate: a number (result is one gradient) or a list. */
  argnums?: number | readonly number[];
  /** f returns [output, aux]; aux is passed through. */
  hasAux?: boolean;
}

export function normalizeArgnums(what: string, argnums: number | readonly number[], nargs: number): number[] {
  const list = typeof argnums === "number" ? [argnums] : [...argnums];
  if (list.length === 0) throw new ArgumentError(`${what}: argnums must not be empty`);
  return list.map((a) => {
    if (!Number.isInteger(a)) throw new ArgumentError(`${what}: argnums must be integers, got ${a}`);
    const k = a < 0 ? a + nargs : a;
    if (k < 0 || k >= nargs) {
      throw new ArgumentError(
        `${what}: argnums ${a} is out of range for a call with ${nargs} positional argument${nargs === 1 ? "" : "s"}`,
      );
    }
    return k;
  });
}

/** Shared by grad and valueAndGrad: returns [value, grads, aux]. */
function valueAndGradImpl(what: string, f: (...args: any[]) => any, opts: GradOptions, args: unknown[]): [Value, any, any] {
  const argnums = opts.argnums ?? 0;
  const nums = normalizeArgnums(what, argnums, args.length);
  for (const k of nums) {
    for (const leaf of flatten(args[k])[0]) {
      const v = hooks().asValue(leaf, `${what} argument ${k}`);
      if (!isFloat(v.aval.dtype)) {
        throw new DTypeError(
          `${what}: can only differentiate with respect to float arguments, got ${v.aval.dtype} in argument ${k}` +
            `\nTip: cast it with np.astype(x, "float32"), or leave it out of argnums`,
        );
      }
    }
  }
  const g = (...diff: unknown[]) => {
    const full = [...args];
    nums.forEach((k, i) => (full[k] = diff[i]));
    return f(...full);
  };
  const [out, vjpFn, aux] = vjpWithAux(g, !!opts.hasAux, nums.map((k) => args[k]), what);
  const [ol] = flatten(out);
  if (ol.length !== 1) {
    throw new ShapeError(
      `${what}: the function must return a single scalar array, got a tree with ${ol.length} leaves` +
        (opts.hasAux ? "" : "\nTip: to return extra values, use hasAux: true and return [loss, aux]"),
    );
  }
  const o = hooks().asValue(ol[0], `${what} output`);
  if (o.aval.ndim !== 0) {
    throw new ShapeError(
      `${what}: the function must return a scalar (shape []), got ${o.aval.str()}` +
        `\nTip: use vjp or jacrev for non-scalar outputs, or reduce with np.sum / np.mean`,
    );
  }
  if (!isFloat(o.aval.dtype)) {
    throw new DTypeError(`${what}: the function must return a float scalar, got ${o.aval.dtype}`);
  }
  const one = hooks().full(o.aval.withWeak(false), 1);
  const grads = vjpFn(unflatten(flatten(out)[1], [one]));
  const result = typeof argnums === "number" ? grads[0] : grads;
  return [o, result, aux];
}

/**
 * `grad(f)(...args)`: the gradient of scalar-valued `f` with respect to argument `argnums` (default 0);
 * a list of gradients when `argnums` is a list; `[grads, aux]` with `hasAux`.
 */
export function grad(f: (...args: any[]) => any, opts: GradOptions = {}): (...args: any[]) => any {
  return (...args: any[]) => {
    const [, g, aux] = valueAndGradImpl("grad", f, opts, args);
    return opts.hasAux ? [g, aux] : g;
  };
}

/** `valueAndGrad(f)(...args)` returns `[value, grad]`, or `[[value, aux], grad]` with `hasAux`. */
export function valueAndGrad(f: (...args: any[]) => any, opts: GradOptions = {}): (...args: any[]) => [any, any] {
  return (...args: any[]) => {
    const [v, g, aux] = valueAndGradImpl("valueAndGrad", f, opts, args);
    return opts.hasAux ? [[v, aux], g] : [v, g];
  };
}

/**
 * `linearize(f, ...primals)` returns `[f(...primals), fLin]` where `fLin(...tangents)` evaluates the
 * JVP at the primals without re-running the primal computation.
 */
export function linearize<R = any>(f: (...args: any[]) => R, ...primals: unknown[]): [R, (...tangents: unknown[]) => R] {
  const [xs, inDef] = flattenArgs("linearize", primals);
  let outDef: TreeDef | undefined;
  const flatFn = (...ys: Value[]) => {
    const [ol, od] = flatten(f(...unflatten<unknown[]>(inDef, ys)));
    outDef = od;
    return ol;
  };
  const [outs, lin] = linearizeFlat(flatFn, xs);
  const fLin = (...tangents: unknown[]): R => {
    const [tl, td] = flatten(tangents);
    assertSameStructure("linearize", td, inDef, "tangents must have the primals' structure");
    const ts = tl.map((t, i) => hooks().convert(hooks().asValue(t, `linearize tangent ${i}`), xs[i]!.aval.withWeak(false)));
    return unflatten<R>(outDef!, evalJaxpr(lin.jaxpr, lin.consts, ts));
  };
  return [unflatten<R>(outDef!, outs), fLin];
}

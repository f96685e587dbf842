/**
 * @file Helpers for primitives that carry a jaxpr (jit, checkpoint, custom_jvp_call, control flow):
 * transforming a jaxpr by re-tracing the transform of its interpreter, and binding a closed jaxpr with
 * its constants passed as leading arguments (so outer transforms see them as ordinary inputs).
 */
import { ShapedArray } from "./aval.js";
import { bind, hooks, MaybeZero, Primitive, Value } from "./core.js";
import { ClosedJaxpr, evalJaxpr, Jaxpr, traceToJaxpr } from "./jaxpr.js";
import { jvpFlat } from "./jvp.js";
import { BDim, vmapFlatAxis0 } from "./vmap.js";

/** Params shared by every call primitive: a const-free jaxpr and how many leading args are its consts. */
export interface CallParams {
  readonly jaxpr: Jaxpr;
  readonly numConsts: number;
}

/** Turns a ClosedJaxpr's consts into leading invars: the form call primitives store. */
export function hoistConsts(cj: ClosedJaxpr): { jaxpr: Jaxpr; consts: readonly Value[] } {
  if (cj.consts.length === 0) return { jaxpr: cj.jaxpr, consts: [] };
  // One hoisted jaxpr per closed jaxpr: compilers cache by jaxpr identity, so a cached jit call must
  // bind the same object every time.
  let jaxpr = hoisted.get(cj);
  if (!jaxpr) {
    jaxpr = new Jaxpr([], [...cj.jaxpr.constvars, ...cj.jaxpr.invars], cj.jaxpr.eqns, cj.jaxpr.outs);
    hoisted.set(cj, jaxpr);
  }
  return { jaxpr, consts: cj.consts };
}
const hoisted = new WeakMap<ClosedJaxpr, Jaxpr>();

/** Binds a call primitive on a closed jaxpr: consts become the first `numConsts` arguments. */
export function bindCall<P extends CallParams>(
  prim: Primitive<P>,
  cj: ClosedJaxpr,
  args: readonly Value[],
  extra: Omit<P, "jaxpr" | "numConsts">,
): Value[] {
  const { jaxpr, consts } = hoistConsts(cj);
  return bind(prim, [...consts, ...args], { ...extra, jaxpr, numConsts: consts.length } as P);
}

/**
 * The JVP of a const-free jaxpr, for the given pattern of non-zero input tangents. The result takes
 * [primals..., nonzero tangents...] and returns [primal outs..., nonzero tangent outs...]; `outNonzero`
 * says which output tangents exist. With `instantiate`, every output tangent exists.
 */
export function jvpJaxpr(
  jaxpr: Jaxpr,
  nonzeros: readonly boolean[],
  instantiate: boolean,
): { jaxpr: ClosedJaxpr; outNonzero: boolean[] } {
  const inAvals = jaxpr.inAvals;
  const tanAvals = inAvals.filter((_, i) => nonzeros[i]).map((a) => a.withWeak(false));
  let outNonzero: boolean[] = [];
  const cj = traceToJaxpr(
    (...xs: Value[]) => {
      const n = inAvals.length;
      const primals = xs.slice(0, n);
      let k = n;
      const tangents: MaybeZero[] = nonzeros.map((nz) => (nz ? xs[k++]! : null));
      const [po, to] = jvpFlat((...p: Value[]) => evalJaxpr(jaxpr, [], p), primals, tangents);
      outNonzero = to.map((t) => t !== null || instantiate);
      const touts = to
        .map((t, i) => (instantiate && t === null ? hooks().zeros(po[i]!.aval.withWeak(false)) : t))
        .filter((t): t is Value => t !== null);
      return [...po, ...touts];
    },
    [...inAvals, ...tanAvals],
    "jvp",
  );
  return { jaxpr: cj, outNonzero };
}

/**
 * The batched version of a const-free jaxpr: inputs with `batched[i]` get a leading axis of
 * `axisSize`; every output is batched along axis 0.
 */
export function vmapJaxpr(jaxpr: Jaxpr, batched: readonly boolean[], axisSize: number): ClosedJaxpr {
  const inAvals = jaxpr.inAvals.map((a, i) =>
    batched[i] ? new ShapedArray([axisSize, ...a.shape], a.dtype, a.weakType) : a,
  );
  const dims: BDim[] = batched.map((b) => (b ? 0 : null));
  return traceToJaxpr(
    (...xs: Value[]) => vmapFlatAxis0((...ys: Value[]) => evalJaxpr(jaxpr, [], ys), dims, axisSize, xs),
    inAvals,
    "vmap",
  );
}

/** Standard JVP rule for call primitives: bind the same primitive on the JVP of its jaxpr. */
export function callJvpRule<P extends CallParams>(prim: Primitive<P>) {
  return (primals: readonly Value[], tangents: readonly MaybeZero[], params: P): [Value[], MaybeZero[]] => {
    const nonzeros = tangents.map((t) => t !== null);
    const { jaxpr, outNonzero } = jvpJaxpr(params.jaxpr, nonzeros, false);
    const { jaxpr: _j, numConsts: _n, ...extra } = params;
    const outs = bindCall(prim, jaxpr, [...primals, ...(tangents.filter((t) => t !== null) as Value[])], extra as any);
    const nOut = params.jaxpr.outs.length;
    const po = outs.slice(0, nOut);
    let k = nOut;
    const to = outNonzero.map((nz) => (nz ? outs[k++]! : null));
    return [po, to];
  };
}

/** Standard batching rule for call primitives: bind on the batched jaxpr, all outputs at axis 0. */
export function callVmapRule<P extends CallParams>(prim: Primitive<P>, moveTo0: (x: Value, d: BDim, size: number) => Value) {
  return (args: readonly Value[], dims: readonly BDim[], params: P, axisSize: number): [Value[], BDim[]] => {
    const batched = dims.map((d) => d !== null);
    const cj = vmapJaxpr(params.jaxpr, batched, axisSize);
    const { jaxpr: _j, numConsts: _n, ...extra } = params;
    const moved = args.map((a, i) => (dims[i] === null ? a : moveTo0(a, dims[i]!, axisSize)));
    const outs = bindCall(prim, cj, moved, extra as any);
    return [outs, outs.map(() => 0)];
  };
}

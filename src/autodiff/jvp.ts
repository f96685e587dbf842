/**
 * @file Forward mode: the JVP trace carries (primal, tangent) pairs through every primitive's `jvp`
 * rule. Tangents may be symbolic zeros (`null`), so constants and integer values cost nothing. `jvp`
 * is the user-facing transform; `jvpFlat` is the flat version other transforms build on.
 */
import { ShapedArray, isFloat } from "./aval.js";
import {
  bind,
  hooks,
  instantiate,
  MainTrace,
  MaybeZero,
  Primitive,
  Trace,
  Tracer,
  Value,
  withNewMain,
} from "./core.js";
import { DTypeError, ShapeError } from "./errors.js";
import { assertSameStructure, flatten, unflatten } from "./tree.js";

export class JVPTracer extends Tracer {
  constructor(
    trace: Trace,
    readonly primal: Value,
    readonly tangent: MaybeZero,
  ) {
    super(trace);
  }
  get aval(): ShapedArray {
    return this.primal.aval;
  }
}

export class JVPTrace extends Trace {
  pure(x: Value): Tracer {
    return new JVPTracer(this, x, null);
  }
  lift(x: Tracer): Tracer {
    return new JVPTracer(this, x, null);
  }
  processPrimitive(prim: Primitive, tracers: readonly Tracer[], params: any): Tracer[] {
    const ts = tracers as readonly JVPTracer[];
    const primals = ts.map((t) => t.primal);
    const tangents = ts.map((t) => t.tangent);
    if (tangents.every((t) => t === null)) {
      return bind(prim, primals, params).map((p) => new JVPTracer(this, p, null));
    }
    const [primalsOut, tangentsOut] = prim.jvp(primals, tangents, params);
    return primalsOut.map((p, i) => new JVPTracer(this, p, tangentsOut[i] ?? null));
  }
}

/** Tangents of non-float values are always zero (JAX's float0). */
export function hasTangentSpace(aval: ShapedArray): boolean {
  return isFloat(aval.dtype);
}

/**
 * Flat forward mode: runs `fn` on JVP tracers built from `primals` and `tangents`, returns the output
 * primals and (possibly null) tangents.
 */
export function jvpFlat(
  fn: (...xs: Value[]) => readonly unknown[],
  primals: readonly Value[],
  tangents: readonly MaybeZero[],
  /** The user-facing transform, for error messages (grad and vjp run through here too). */
  transformName = "jvp",
): [Value[], MaybeZero[]] {
  return withNewMain(JVPTrace, null, transformName, (main: MainTrace) => {
    const trace = new JVPTrace(main);
    const tracersIn = primals.map((p, i) => new JVPTracer(trace, p, hasTangentSpace(p.aval) ? tangents[i]! : null));
    const outs = fn(...tracersIn);
    const tracersOut = outs.map((o, i) => trace.fullRaise(hooks().asValue(o, `jvp output ${i}`)) as JVPTracer);
    return [tracersOut.map((t) => t.primal), tracersOut.map((t) => t.tangent)];
  });
}

/** Checks that a tangent matches its primal's shape and dtype. */
export function checkTangent(what: string, primal: Value, tangent: Value, i: number): Value {
  const pa = primal.aval;
  const ta = tangent.aval;
  if (pa.shape.length !== ta.shape.length || pa.shape.some((d, j) => d !== ta.shape[j])) {
    throw new ShapeError(`${what}: tangent ${i} must have the primal's shape ${pa.str()}, got ${ta.str()}`);
  }
  if (ta.dtype !== pa.dtype) {
    if (ta.weakType) return hooks().convert(tangent, pa);
    throw new DTypeError(
      `${what}: tangent ${i} must have the primal's dtype ${pa.dtype}, got ${ta.dtype}` +
        `\nTip: cast with np.astype(t, "${pa.dtype}")`,
    );
  }
  return tangent;
}

/**
 * Forward-mode derivative: `jvp(f, primals, tangents)` returns `[f(...primals), J·tangents]`, where
 * `primals` and `tangents` are lists of pytrees of the same structure.
 */
export function jvp<R = any>(f: (...args: any[]) => R, primals: readonly unknown[], tangents: readonly unknown[]): [R, R] {
  const [pLeaves, pDef] = flatten(primals);
  const [tLeaves, tDef] = flatten(tangents);
  assertSameStructure("jvp", pDef, tDef, "primals and tangents must be lists of pytrees of the same structure");
  const ps = pLeaves.map((x, i) => hooks().asValue(x, `jvp primal ${i}`));
  const ts = tLeaves.map((x, i) => checkTangent("jvp", ps[i]!, hooks().asValue(x, `jvp tangent ${i}`), i));
  let outDef: ReturnType<typeof flatten>[1] | undefined;
  const flatFn = (...xs: Value[]) => {
    const out = f(...unflatten<unknown[]>(pDef, xs));
    const [leaves, def] = flatten(out);
    outDef = def;
    return leaves;
  };
  const [po, to] = jvpFlat(flatFn, ps, ts);
  const toFull = to.map((t, i) => instantiate(t, po[i]!.aval));
  return [unflatten<R>(outDef!, po), unflatten<R>(outDef!, toFull)];
}

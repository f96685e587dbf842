/**
 * @file `jit` and `makeJaxpr`. `jit(f)` traces `f` once per input signature (tree structure, shapes,
 * dtypes, weak types, static argument values) into a jaxpr, caches it, and binds the `jit` call
 * primitive on it. Without a compiler registered (see `setJitExecutor`) the jaxpr is interpreted; the
 * WebGPU compiler plugs in there. Under other transforms the `jit` primitive's rules transform the
 * jaxpr itself, so `jit(grad(f))`, `grad(jit(f))` and `vmap(jit(f))` all stay staged.
 */
import { ShapedArray } from "./aval.js";
import { bind, Concrete, definePrimitiveRules, hooks, isTracer, Primitive, Trace, Tracer, Value } from "./core.js";
import { ArgumentError } from "./errors.js";
import { Atom, ClosedJaxpr, dce, evalJaxpr, Jaxpr, JaxprEqn, Literal, printJaxpr, traceToJaxpr, Var } from "./jaxpr.js";
import { partialEvalJaxpr, partialEvalJaxprRules } from "./partial-eval.js";
import { bindCall, CallParams, callJvpRule, callVmapRule } from "./call.js";
import { backwardPass } from "./transpose.js";
import { flatten, TreeDef, treedefStr, unflatten } from "./tree.js";
import { moveBatchAxis } from "./vmap.js";

export interface JitParams extends CallParams {
  /** The traced function's name, for printing and debugging. */
  readonly name: string;
  /** Per non-const argument: whether its buffer may be reused for the outputs (donateArgnums). */
  readonly donated: readonly boolean[];
}

/** Runs a jitted jaxpr on concrete arguments. The default interprets it; compilers replace this. */
export type JitExecutor = (jaxpr: Jaxpr, args: readonly Concrete[], params: JitParams) => Concrete[];

/**
 * The default executor: interprets the jaxpr eagerly, releasing each intermediate right after its last
 * use (so memory stays flat across calls without waiting for the garbage collector).
 */
const interpret: JitExecutor = (jaxpr, args) => {
  const lastUse = new Map<Var, number>();
  jaxpr.eqns.forEach((e, i) => e.inputs.forEach((a) => a instanceof Var && lastUse.set(a, i)));
  // Never free what the caller or the jaxpr itself owns: arguments and literal constants (call
  // primitives such as scan or custom_jvp_call may return one of their inputs unchanged).
  const keep = new Set<unknown>(args);
  for (const e of jaxpr.eqns) for (const a of e.inputs) if (a instanceof Literal) keep.add(a.val);
  const outVars = new Set(jaxpr.outs.filter((a): a is Var => a instanceof Var));
  const env = new Map<Var, Value>();
  jaxpr.invars.forEach((v, i) => env.set(v, args[i]!));
  const read = (a: Atom): Value => (a instanceof Literal ? a.val : env.get(a)!);
  // How many live variables hold each object (call primitives may return their inputs).
  const holders = new Map<unknown, number>();
  const hold = (x: unknown, d: number) => holders.set(x, (holders.get(x) ?? 0) + d);
  jaxpr.eqns.forEach((e, i) => {
    const outs = bind(e.prim, e.inputs.map(read), e.params);
    // Only results of first-order primitives (those with a `lower` rule) are known to be fresh arrays;
    // higher-order ones (jit, scan, custom rules) may return an input or a literal of theirs.
    const fresh = "lower" in e.prim;
    e.outBinders.forEach((v, k) => {
      env.set(v, outs[k]!);
      if (fresh) hold(outs[k], outVars.has(v) ? 2 : 1); // outputs hold an extra, permanent reference
      else keep.add(outs[k]);
    });
    for (const a of e.inputs) {
      if (!(a instanceof Var) || lastUse.get(a) !== i || !env.has(a) || outVars.has(a)) continue;
      const x = env.get(a)!;
      env.delete(a);
      if (!holders.has(x)) continue; // an input of the call: not ours to free
      hold(x, -1);
      if (holders.get(x)! <= 0 && !keep.has(x)) hooks().release(x);
    }
    // Results nobody reads are dead at once.
    e.outBinders.forEach((v) => {
      if (!lastUse.has(v) && !outVars.has(v)) {
        const x = env.get(v)!;
        env.delete(v);
        if (!holders.has(x)) return;
        hold(x, -1);
        if (holders.get(x)! <= 0 && !keep.has(x)) hooks().release(x);
      }
    });
  });
  const outs = jaxpr.outs.map(read);
  return outs as Concrete[];
};
let executor: JitExecutor = interpret;

/** The default (interpreting) executor, for compilers that fall back to it (src/ops/compile/). */
export const interpretJaxpr: JitExecutor = interpret;

/** Installs the function that executes jitted jaxprs on concrete inputs (a compiler), or resets it. */
export function setJitExecutor(e: JitExecutor | null): void {
  executor = e ?? interpret;
}

export const jitP: Primitive<JitParams> = definePrimitiveRules<JitParams>({
  name: "jit",
  abstractEval: (avals, p) => {
    const want = p.jaxpr.inAvals;
    if (avals.length !== want.length || avals.some((a, i) => !a.sameType(want[i]!))) {
      throw new ArgumentError(
        `jit: jaxpr expects inputs (${want.map((a) => a.str()).join(", ")}), got (${avals.map((a) => a.str()).join(", ")})`,
      );
    }
    return p.jaxpr.outAvals;
  },
  impl: (args, p) => {
    const outs = executor(p.jaxpr, args, p);
    p.donated.forEach((d, i) => {
      const a = args[p.numConsts + i] as unknown as { dispose?: () => void };
      if (d && !outs.includes(a as unknown as Concrete)) a.dispose?.();
    });
    return outs;
  },
  jvp: (primals, tangents, p) => callJvpRule(jitP)(primals, tangents, { ...p, donated: [] }),
  transpose: (cts, args, p) => backwardPass(p.jaxpr, [], args, cts),
  vmap: (args, dims, p, size) =>
    callVmapRule(jitP, (x, d, n) => moveBatchAxis(x, d, 0, n))(args, dims, { ...p, donated: [] }, size),
  // Under linearize, inline: known parts are evaluated now, the linear part is recorded op by op.
  partialEval: (trace: Trace, tracers: readonly Tracer[], p: JitParams) =>
    evalJaxpr(p.jaxpr, [], tracers).map((v) => trace.fullRaise(v)),
  printParams: (p) => `name=${p.name} jaxpr=${indentJaxpr(p.jaxpr)}`,
});

/**
 * Syntactic partial evaluation of a jit equation (inside control-flow bodies under reverse mode): a
 * known jit computes the known outputs and the residuals, an unknown jit consumes them (JAX's rule for
 * pjit).
 */
function jitPartialEvalJaxpr(unknownsIn: readonly boolean[], eqn: JaxprEqn) {
  const p = eqn.params as JitParams;
  const pe = partialEvalJaxpr(p.jaxpr, unknownsIn, false);
  const known = pe.known;
  const resBinders = known.outs.slice(known.outs.length - pe.numRes).map((a) => new Var(a.aval));
  const knownEqn: JaxprEqn = {
    prim: jitP,
    inputs: eqn.inputs.filter((_, i) => !unknownsIn[i]),
    params: { ...p, jaxpr: known, numConsts: 0, donated: [] } satisfies JitParams,
    outBinders: [...eqn.outBinders.filter((_, i) => !pe.unknownsOut[i]), ...resBinders],
  };
  const anyUnknown = pe.unknownsOut.some(Boolean);
  const unknownEqn: JaxprEqn | null = anyUnknown
    ? {
        prim: jitP,
        inputs: [...resBinders, ...eqn.inputs.filter((_, i) => unknownsIn[i])],
        params: { ...p, jaxpr: pe.unknown, numConsts: 0, donated: [] } satisfies JitParams,
        outBinders: eqn.outBinders.filter((_, i) => pe.unknownsOut[i]),
      }
    : null;
  return { known: knownEqn, unknown: unknownEqn, unknownsOut: pe.unknownsOut, residuals: anyUnknown ? resBinders : [] };
}

partialEvalJaxprRules.set(jitP, jitPartialEvalJaxpr);

function indentJaxpr(j: Jaxpr): string {
  return printJaxpr(j).split("\n").join("\n      ");
}

export interface JitOptions {
  /** Positional arguments that are compile-time constants (part of the cache key, not traced). */
  staticArgnums?: number | readonly number[];
  /** Positional arguments whose buffers the call may reuse for its outputs (they become unusable). */
  donateArgnums?: number | readonly number[];
}

const objectIds = new WeakMap<object, number>();
let nextObjectId = 0;

function staticKey(x: unknown): string {
  if (x === null || x === undefined || typeof x !== "object" && typeof x !== "function") {
    return `${typeof x}:${String(x)}`;
  }
  if (Array.isArray(x) || Object.getPrototypeOf(x) === Object.prototype) {
    try {
      return `json:${JSON.stringify(x)}`;
    } catch {
      /* fall through to identity */
    }
  }
  let id = objectIds.get(x as object);
  if (id === undefined) objectIds.set(x as object, (id = nextObjectId++));
  return `id:${id}`;
}

function toList(what: string, a: number | readonly number[] | undefined, nargs: number): number[] {
  const list = a === undefined ? [] : typeof a === "number" ? [a] : [...a];
  return list.map((k) => {
    const j = k < 0 ? k + nargs : k;
    if (!Number.isInteger(k) || j < 0 || j >= nargs) {
      throw new ArgumentError(`jit: ${what} ${k} is out of range for a call with ${nargs} arguments`);
    }
    return j;
  });
}

interface CacheEntry {
  readonly cj: ClosedJaxpr;
  readonly outDef: TreeDef;
}

interface Traceable {
  /** The dynamic argument leaves as values. */
  readonly values: Value[];
  /** Cache key: structure, avals (with weak types) and static argument values. */
  readonly key: string;
  /** Traces `f` at these arguments' avals. */
  run(): CacheEntry;
}

/** Prepares tracing `f` on the dynamic args (all but `staticNums`); shared by jit and makeJaxpr. */
function prepareTrace(
  f: (...args: any[]) => any,
  args: readonly unknown[],
  staticNums: readonly number[],
  transformName: string,
): Traceable {
  const dyn = args.filter((_, i) => !staticNums.includes(i));
  const [leaves, inDef] = flatten(dyn);
  const values = leaves.map((x, i) => hooks().asValue(x, `${transformName} argument leaf ${i}`));
  const key =
    treedefStr(inDef) +
    "|" +
    values.map((v) => v.aval.str() + (v.aval.weakType ? "~" : "")).join(",") +
    "|" +
    staticNums.map((i) => staticKey(args[i])).join(",") +
    "|" +
    hooks().contextKey();
  const run = (): CacheEntry => {
    let outDef: TreeDef | undefined;
    const flatFn = (...xs: Value[]) => {
      const dynTree = unflatten<unknown[]>(inDef, xs);
      const full: unknown[] = [];
      let k = 0;
      for (let i = 0; i < args.length; i++) full.push(staticNums.includes(i) ? args[i] : dynTree[k++]);
      const [ol, od] = flatten(f(...full));
      outDef = od;
      return ol;
    };
    const traced = traceToJaxpr(flatFn, values.map((v) => v.aval), transformName);
    // jit drops equations whose results are unused; makeJaxpr shows the trace as it was recorded.
    const cj = transformName === "jit" ? new ClosedJaxpr(dce(traced.jaxpr, traced.jaxpr.outs.map(() => true))[0], traced.consts) : traced;
    return { cj, outDef: outDef! };
  };
  return { values, key, run };
}

/**
 * Compiles `f` (traces it to a jaxpr per input signature, then runs the jaxpr). Static arguments are
 * passed through as JS values and must be hashable (primitives, or plain JSON-able objects; other
 * objects are keyed by identity).
 */
export function jit<F extends (...args: any[]) => any>(f: F, opts: JitOptions = {}): F {
  const cache = new Map<string, CacheEntry>();
  const name = f.name || "fn";
  const wrapped = (...args: unknown[]) => {
    const staticNums = toList("staticArgnums", opts.staticArgnums, args.length);
    const donateNums = toList("donateArgnums", opts.donateArgnums, args.length);
    const t = prepareTrace(f, args, staticNums, "jit");
    let entry = cache.get(t.key);
    if (!entry) {
      entry = t.run();
      if (!entry.cj.consts.some(isTracer)) cache.set(t.key, entry);
    }
    const donated: boolean[] = [];
    const dyn = args.map((a, i) => [a, i] as const).filter(([, i]) => !staticNums.includes(i));
    for (const [a, i] of dyn) {
      const n = flatten(a)[0].length;
      for (let j = 0; j < n; j++) donated.push(donateNums.includes(i));
    }
    const outs = bindCall(jitP, entry.cj, t.values, { name, donated });
    return unflatten(entry.outDef, outs);
  };
  Object.defineProperty(wrapped, "name", { value: `jit(${name})` });
  return wrapped as F;
}

/** `makeJaxpr(f)(...args)` returns the closed jaxpr of `f` at the arguments' shapes (printable). */
export function makeJaxpr(
  f: (...args: any[]) => any,
  opts: { staticArgnums?: number | readonly number[] } = {},
): (...args: unknown[]) => ClosedJaxpr {
  return (...args: unknown[]) => {
    const staticNums = toList("staticArgnums", opts.staticArgnums, args.length);
    const t = prepareTrace(f, args, staticNums, "makeJaxpr");
    return t.run().cj;
  };
}

/** Abstract evaluation: the output shapes/dtypes of `f` without running it. */
export function evalShape(f: (...args: any[]) => any, ...args: unknown[]): any {
  const t = prepareTrace(f, args, [], "evalShape");
  const { cj, outDef } = t.run();
  return unflatten(outDef, cj.outAvals);
}

export type { ShapedArray };

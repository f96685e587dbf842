/**
 * @file The IR (a jaxpr, as JAX calls it): typed variables, equations applying primitives, and a
 * printer whose output reads like JAX's. Also the staging trace that records a function into a jaxpr
 * (`traceToJaxpr`, behind `makeJaxpr` and `jit`), the interpreter `evalJaxpr`, and dead-code elimination.
 */
import { ShapedArray } from "./aval.js";
import { bind, hooks, MainTrace, Primitive, Trace, Tracer, Value, withNewDynamicMain } from "./core.js";
import { ArgumentError } from "./errors.js";

export class Var {
  constructor(readonly aval: ShapedArray) {}
}

/** A constant written inline in the IR (scalars). */
export class Literal {
  constructor(
    readonly val: Value,
    readonly aval: ShapedArray,
  ) {}
}

export type Atom = Var | Literal;

export interface JaxprEqn {
  readonly prim: Primitive;
  readonly inputs: readonly Atom[];
  readonly params: any;
  readonly outBinders: readonly Var[];
}

export class Jaxpr {
  constructor(
    /** Variables bound to the closed-over constants (ClosedJaxpr.consts), in order. */
    readonly constvars: readonly Var[],
    readonly invars: readonly Var[],
    readonly eqns: readonly JaxprEqn[],
    readonly outs: readonly Atom[],
  ) {}
  get inAvals(): ShapedArray[] {
    return this.invars.map((v) => v.aval);
  }
  get outAvals(): ShapedArray[] {
    return this.outs.map((v) => v.aval);
  }
  toString(): string {
    return printJaxpr(this);
  }
}

/** A jaxpr with the values of its constvars. */
export class ClosedJaxpr {
  constructor(
    readonly jaxpr: Jaxpr,
    readonly consts: readonly Value[],
  ) {
    if (consts.length !== jaxpr.constvars.length) {
      throw new ArgumentError(`ClosedJaxpr: ${jaxpr.constvars.length} constvars, got ${consts.length} consts`);
    }
  }
  get inAvals(): ShapedArray[] {
    return this.jaxpr.inAvals;
  }
  get outAvals(): ShapedArray[] {
    return this.jaxpr.outAvals;
  }
  toString(): string {
    return printJaxpr(this.jaxpr);
  }
}

// ---------------------------------------------------------------------------------------------------
// Printing

function varNamer(): (v: Var) => string {
  const names = new Map<Var, string>();
  return (v: Var) => {
    let n = names.get(v);
    if (n === undefined) {
      let i = names.size;
      n = "";
      do {
        n = String.fromCharCode(97 + (i % 26)) + n;
        i = Math.floor(i / 26) - 1;
      } while (i >= 0);
      names.set(v, n);
    }
    return n;
  };
}

function formatParam(v: unknown, indent: string, name: (v: Var) => string): string {
  if (v instanceof ClosedJaxpr) return printJaxprInner(v.jaxpr, indent + "  ", name);
  if (v instanceof Jaxpr) return printJaxprInner(v, indent + "  ", name);
  if (Array.isArray(v)) {
    const parts = v.map((x) => formatParam(x, indent, name));
    return parts.length === 1 ? `(${parts[0]},)` : `(${parts.join(", ")})`;
  }
  if (typeof v === "function") return v.name || "<fn>";
  if (v === null || v === undefined) return "None";
  if (typeof v === "boolean") return v ? "True" : "False";
  if (typeof v === "object") {
    return `{${Object.entries(v as Record<string, unknown>)
      .map(([k, x]) => `${k}=${formatParam(x, indent, name)}`)
      .join(" ")}}`;
  }
  return String(v);
}

function formatAtom(a: Atom, name: (v: Var) => string): string {
  if (a instanceof Var) return name(a);
  const lit = hooks().literalValue(a.val);
  const s = typeof lit === "boolean" ? (lit ? "True" : "False") : formatNumber(lit ?? NaN, a.aval);
  return `${s}:${a.aval.str()}`;
}

function formatNumber(x: number, aval: ShapedArray): string {
  if (aval.dtype === "float32" || aval.dtype === "float64") {
    return Number.isInteger(x) ? x.toFixed(1) : String(x);
  }
  return String(x);
}

function printJaxprInner(jaxpr: Jaxpr, indent: string, name: (v: Var) => string): string {
  const binder = (v: Var) => `${name(v)}:${v.aval.str()}`;
  const head =
    `{ lambda ${jaxpr.constvars.map(binder).join(" ")}${jaxpr.constvars.length ? "; " : ""}` +
    `${jaxpr.invars.map(binder).join(" ")}. let`;
  const lines = jaxpr.eqns.map((e) => {
    const lhs = e.outBinders.map(binder).join(" ");
    const ps = e.prim.printParams
      ? e.prim.printParams(e.params)
      : Object.entries(e.params ?? {})
          .filter(([, v]) => v !== undefined)
          .map(([k, v]) => `${k}=${formatParam(v, indent + "  ", name)}`)
          .join(" ");
    const rhs = `${e.prim.name}${ps ? `[${ps}]` : ""} ${e.inputs.map((a) => formatAtom(a, name)).join(" ")}`;
    return `${indent}    ${lhs || "_"} = ${rhs.trimEnd()}`;
  });
  const outs = jaxpr.outs.map((a) => formatAtom(a, name));
  const tail = `${indent}  in (${outs.join(", ")}${outs.length === 1 ? "," : ""}) }`;
  return [head, ...lines, tail].join("\n");
}

/** Prints a jaxpr the way JAX does. */
export function printJaxpr(jaxpr: Jaxpr): string {
  return printJaxprInner(jaxpr, "", varNamer());
}

// ---------------------------------------------------------------------------------------------------
// Interpreter

/** Evaluates a jaxpr by binding each equation under whatever transforms are active. */
export function evalJaxpr(jaxpr: Jaxpr, consts: readonly Value[], args: readonly Value[]): Value[] {
  if (args.length !== jaxpr.invars.length) {
    throw new ArgumentError(`evalJaxpr: jaxpr takes ${jaxpr.invars.length} arguments, got ${args.length}`);
  }
  const env = new Map<Var, Value>();
  jaxpr.constvars.forEach((v, i) => env.set(v, consts[i]!));
  jaxpr.invars.forEach((v, i) => env.set(v, args[i]!));
  const read = (a: Atom): Value => (a instanceof Literal ? a.val : env.get(a)!);
  for (const e of jaxpr.eqns) {
    const outs = bind(e.prim, e.inputs.map(read), e.params);
    e.outBinders.forEach((v, i) => env.set(v, outs[i]!));
  }
  return jaxpr.outs.map(read);
}

export function evalClosedJaxpr(cj: ClosedJaxpr, args: readonly Value[]): Value[] {
  return evalJaxpr(cj.jaxpr, cj.consts, args);
}

// ---------------------------------------------------------------------------------------------------
// Staging: record operations into a jaxpr

class StagingTracer extends Tracer {
  constructor(
    trace: Trace,
    private readonly _aval: ShapedArray,
  ) {
    super(trace);
  }
  get aval(): ShapedArray {
    return this._aval;
  }
}

class JaxprBuilder {
  eqns: JaxprEqn[] = [];
  tracerToVar = new Map<Tracer, Var>();
  constTracers = new Map<Value, StagingTracer>();
  constVals = new Map<Var, Value>();

  newTracer(trace: Trace, aval: ShapedArray): StagingTracer {
    return new StagingTracer(trace, aval);
  }
  addVar(t: Tracer): Var {
    const v = new Var(t.aval);
    this.tracerToVar.set(t, v);
    return v;
  }
  getVar(t: Tracer): Var {
    const v = this.tracerToVar.get(t);
    if (!v) throw new ArgumentError("jaxpr builder: a tracer from another staging context was used");
    return v;
  }
}

export class StagingTrace extends Trace {
  private get builder(): JaxprBuilder {
    return this.main.globalData as JaxprBuilder;
  }
  newArg(aval: ShapedArray): StagingTracer {
    const t = this.builder.newTracer(this, aval);
    this.builder.addVar(t);
    return t;
  }
  pure(x: Value): Tracer {
    const b = this.builder;
    let t = b.constTracers.get(x);
    if (!t) {
      t = b.newTracer(this, x.aval);
      b.constTracers.set(x, t);
      const v = b.addVar(t);
      b.constVals.set(v, x);
    }
    return t;
  }
  lift(x: Tracer): Tracer {
    return this.pure(x);
  }
  processPrimitive(prim: Primitive, tracers: readonly Tracer[], params: any): Tracer[] {
    const b = this.builder;
    const avalsOut = prim.abstractEval(
      tracers.map((t) => t.aval),
      params,
    );
    const inputs = tracers.map((t) => b.getVar(t));
    const outs = avalsOut.map((a) => b.newTracer(this, a));
    b.eqns.push({ prim, inputs, params, outBinders: outs.map((t) => b.addVar(t)) });
    return outs;
  }
}

/** Turns constants that are scalars into inline literals; the rest stay constvars. */
function buildJaxpr(b: JaxprBuilder, inTracers: readonly Tracer[], outTracers: readonly Tracer[]): ClosedJaxpr {
  const invars = inTracers.map((t) => b.getVar(t));
  const constEntries = [...b.constVals.entries()];
  const literalFor = new Map<Var, Literal>();
  const constvars: Var[] = [];
  const consts: Value[] = [];
  for (const [v, val] of constEntries) {
    if (!(val instanceof Tracer) && val.aval.ndim === 0 && hooks().literalValue(val) !== null) {
      literalFor.set(v, new Literal(val, val.aval));
    } else {
      constvars.push(v);
      consts.push(val);
    }
  }
  const sub = (a: Var): Atom => literalFor.get(a) ?? a;
  const eqns = b.eqns.map((e) => ({ ...e, inputs: e.inputs.map((a) => (a instanceof Var ? sub(a) : a)) }));
  const outs = outTracers.map((t) => sub(b.getVar(t)));
  const jaxpr = new Jaxpr(constvars, invars, eqns, outs);
  return new ClosedJaxpr(jaxpr, consts);
}

/**
 * Traces `fn` on abstract arguments of the given avals into a closed jaxpr. `fn` takes and returns flat
 * lists of values. Closed-over tracers of outer transforms become consts (so they are passed as inputs
 * when the jaxpr is bound, which keeps those transforms in play).
 */
export function traceToJaxpr(
  fn: (...args: Value[]) => readonly unknown[],
  inAvals: readonly ShapedArray[],
  transformName = "jit",
): ClosedJaxpr {
  const builder = new JaxprBuilder();
  return withNewDynamicMain(StagingTrace, builder, transformName, (main: MainTrace) => {
    const trace = new StagingTrace(main);
    const tracersIn = inAvals.map((a) => trace.newArg(a));
    const outs = fn(...tracersIn);
    const tracersOut = outs.map((o, i) => trace.fullRaise(hooks().asValue(o, `${transformName} output ${i}`)));
    return buildJaxpr(builder, tracersIn, tracersOut);
  });
}

// ---------------------------------------------------------------------------------------------------
// Utilities on jaxprs

/**
 * Dead-code elimination: keeps only the outputs where `used[i]` and the equations they need.
 * Returns the pruned jaxpr (same invars and constvars) and which invars are still used.
 */
export function dce(jaxpr: Jaxpr, used: readonly boolean[]): [Jaxpr, boolean[]] {
  const live = new Set<Var>();
  const outs = jaxpr.outs.filter((_, i) => used[i]);
  for (const a of outs) if (a instanceof Var) live.add(a);
  const kept: JaxprEqn[] = [];
  for (let i = jaxpr.eqns.length - 1; i >= 0; i--) {
    const e = jaxpr.eqns[i]!;
    if (e.outBinders.some((v) => live.has(v))) {
      kept.push(e);
      for (const a of e.inputs) if (a instanceof Var) live.add(a);
    }
  }
  kept.reverse();
  return [new Jaxpr(jaxpr.constvars, jaxpr.invars, kept, outs), jaxpr.invars.map((v) => live.has(v))];
}

/** For each output, whether it depends on any input where `inputMask[i]` is true. */
export function outputsDependOn(jaxpr: Jaxpr, inputMask: readonly boolean[]): boolean[] {
  const dep = new Set<Var>();
  jaxpr.invars.forEach((v, i) => inputMask[i] && dep.add(v));
  for (const e of jaxpr.eqns) {
    if (e.inputs.some((a) => a instanceof Var && dep.has(a))) for (const v of e.outBinders) dep.add(v);
  }
  return jaxpr.outs.map((a) => a instanceof Var && dep.has(a));
}

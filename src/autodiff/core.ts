/**
 * @file The heart of the tracing machinery: primitives, `bind`, the trace stack, and the `Tracer` base
 * class. Read this first. The design follows JAX (and its Autodidax walkthrough): every operation is a
 * `Primitive` applied with `bind`; `bind` finds the innermost active transform among the arguments
 * (the trace with the highest level) and lets it interpret the primitive. Transforms (jvp, vmap,
 * partial evaluation, staging to a jaxpr) are `Trace` subclasses living in their own files.
 *
 * Core never imports ops: a primitive carries its own rules, and the few array operations core itself
 * needs (zeros, adding cotangents, converting JS numbers) are registered by the ops layer in `hooks`.
 */
import { DType, ShapedArray } from "./aval.js";
import { ArgumentError, ConcretizationError, UnexpectedTracerError } from "./errors.js";

// ---------------------------------------------------------------------------------------------------
// Values

/** Host copies of array contents, C order (bool as bytes). */
export type HostData = Float32Array | Float64Array | Int32Array | Uint32Array | Uint8Array;
/** Nested JS lists, as `toArray()` returns them. */
export type NestedArray = number | boolean | NestedArray[];

/**
 * What every array-valued thing offers, concrete or traced (as `jax.Array` covers both). Reading the
 * contents of a tracer throws ConcretizationError: inside a transform there is no value yet.
 */
export interface ArrayBase {
  readonly aval: ShapedArray;
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly ndim: number;
  readonly size: number;
  readonly weakType: boolean;
  data(): Promise<HostData>;
  toArray(): Promise<NestedArray>;
  item(): Promise<number | boolean>;
  dataSync(): HostData;
  toArraySync(): NestedArray;
  itemSync(): number | boolean;
  [Symbol.iterator](): Iterator<Value>;
}

/** A concrete array as core sees it. The ops layer defines the class (src/ops/array.ts). */
export interface Concrete extends ArrayBase {}

/** Anything a primitive can be applied to: a concrete array or a tracer of some transform. */
export type Value = Concrete | Tracer;

/** A tangent or cotangent that may be a symbolic zero (`null`): zero tangents cost nothing. */
export type MaybeZero = Value | null;

export function getAval(x: Value): ShapedArray {
  return x.aval;
}

export function isTracer(x: unknown): x is Tracer {
  return x instanceof Tracer;
}

// ---------------------------------------------------------------------------------------------------
// Primitives

/** A placeholder for a linear input during transposition: we know its aval, not its value. */
export class UndefinedPrimal {
  constructor(readonly aval: ShapedArray) {}
}

export type TransposeRule<P> = (
  cts: readonly MaybeZero[],
  args: readonly (Value | UndefinedPrimal)[],
  params: P,
) => MaybeZero[];

/** Marker for primitives that have no transpose because they are not linear in any argument. */
export const nonlinear = "nonlinear" as const;

export interface PrimitiveRules<P> {
  /** Printed name, JAX's snake_case (`reduce_sum`, `dot_general`). */
  readonly name: string;
  /** Output avals from input avals; the only place shape/dtype checks live. */
  abstractEval(avals: readonly ShapedArray[], params: P): ShapedArray[];
  /** Concrete evaluation on concrete inputs (the ops layer builds it from a `lower` rule). */
  impl(args: readonly Concrete[], params: P): Concrete[];
  /**
   * Forward-mode rule. Called only when at least one tangent is non-zero; `null` tangents are zeros.
   * Returns output primals and tangents (null for zero / integer outputs).
   */
  jvp(primals: readonly Value[], tangents: readonly MaybeZero[], params: P): [Value[], MaybeZero[]];
  /** Transpose rule for primitives linear in some arguments, or `nonlinear`. */
  transpose: TransposeRule<P> | typeof nonlinear;
  /**
   * Batching rule: `dims[i]` is the batch axis of `args[i]` (null if unbatched; at least one is not).
   * Returns outputs and their batch axes.
   */
  vmap(args: readonly Value[], dims: readonly (number | null)[], params: P, axisSize: number): [Value[], (number | null)[]];
  /** Prints params in a jaxpr; defaults to a generic printer. */
  printParams?(params: P): string;
  /** Custom partial-evaluation rule (higher-order primitives); see partial-eval.ts. */
  partialEval?: PartialEvalRule<P>;
}

/** Partial evaluation hook; the trace type is opaque here to keep this file free of the PE machinery. */
export type PartialEvalRule<P> = (trace: any, tracers: readonly any[], params: P) => any[];

export interface Primitive<P = any> extends PrimitiveRules<P> {
  /** Brand so objects are recognisable in printed IR and errors. */
  readonly isPrimitive: true;
}

/** All primitives by name, for the property-test spec table and introspection. */
export const primitiveRegistry = new Map<string, Primitive>();

export function definePrimitiveRules<P>(rules: PrimitiveRules<P>): Primitive<P> {
  if (primitiveRegistry.has(rules.name)) {
    throw new ArgumentError(`definePrimitive: a primitive named "${rules.name}" already exists`);
  }
  const p: Primitive<P> = { ...rules, isPrimitive: true };
  primitiveRegistry.set(p.name, p);
  return p;
}

// ---------------------------------------------------------------------------------------------------
// Traces

/** One active transform on the stack. `level` orders nesting: higher = more inner. */
export class MainTrace {
  active = true;
  private _trace: Trace | undefined;
  /** The (stateless) trace object of this main, created once. */
  get trace(): Trace {
    return (this._trace ??= new this.traceType(this));
  }
  constructor(
    readonly level: number,
    readonly traceType: new (main: MainTrace) => Trace,
    /** Transform-specific data (vmap's axis size, the jaxpr builder, ...). */
    readonly globalData: any,
    /** Human name for error messages ("grad", "vmap", "jit", ...). */
    readonly transformName: string,
  ) {}
}

export abstract class Trace {
  constructor(readonly main: MainTrace) {}
  /** Wraps a value that is not a tracer of this trace (a constant) as one of this trace's tracers. */
  abstract pure(x: Value): Tracer;
  /** Wraps a tracer of an outer (lower-level) trace. */
  abstract lift(x: Tracer): Tracer;
  abstract processPrimitive(prim: Primitive, tracers: readonly Tracer[], params: any): Tracer[];

  fullRaise(x: Value): Tracer {
    if (!(x instanceof Tracer)) return this.pure(x);
    const main = x._trace.main;
    if (main === this.main) return x;
    if (!main.active) throw escapedTracer(x);
    if (main.level < this.main.level) return this.lift(x);
    if (main.level > this.main.level) {
      throw new UnexpectedTracerError(
        `${this.main.transformName}: got a tracer of an inner ${main.transformName} transform (${x.aval.str()}) ` +
          `while processing an outer one.\nTip: a value created inside a transformed function was used outside it.`,
      );
    }
    throw new UnexpectedTracerError(
      `${this.main.transformName}: two different transforms at the same level met (${x.aval.str()}); ` +
        `this is a webgrad bug or a tracer leaked between calls`,
    );
  }
}

/** Evaluation: applies primitives to concrete arrays. Always at the bottom of the stack. */
export class EvalTrace extends Trace {
  pure(x: Value): Tracer {
    return x as Tracer; // concrete values pass through untouched; see bind()
  }
  lift(x: Tracer): Tracer {
    return x;
  }
  processPrimitive(prim: Primitive, values: readonly Tracer[], params: any): Tracer[] {
    for (const v of values) {
      if (v instanceof Tracer) throw escapedTracer(v);
    }
    return prim.impl(values as unknown as Concrete[], params) as unknown as Tracer[];
  }
}

const traceStack: MainTrace[] = [new MainTrace(0, EvalTrace, null, "eval")];
/** The staging trace that every operation must go through, even on constants (JAX's omnistaging). */
let dynamicTrace: MainTrace | null = null;

/** Runs `fn` with a new transform pushed on the stack. */
export function withNewMain<R>(
  traceType: new (main: MainTrace) => Trace,
  globalData: any,
  transformName: string,
  fn: (main: MainTrace) => R,
): R {
  const main = new MainTrace(traceStack.length, traceType, globalData, transformName);
  traceStack.push(main);
  try {
    return fn(main);
  } finally {
    traceStack.pop();
    main.active = false;
  }
}

/** Like withNewMain, and makes the new main the dynamic (staging) trace while `fn` runs. */
export function withNewDynamicMain<R>(
  traceType: new (main: MainTrace) => Trace,
  globalData: any,
  transformName: string,
  fn: (main: MainTrace) => R,
): R {
  return withNewMain(traceType, globalData, transformName, (main) => {
    const prev = dynamicTrace;
    dynamicTrace = main;
    try {
      return fn(main);
    } finally {
      dynamicTrace = prev;
    }
  });
}

function escapedTracer(x: Tracer): UnexpectedTracerError {
  const name = x._trace.main.transformName;
  return new UnexpectedTracerError(
    `${name}: a tracer (${x.aval.str()}) was used after its ${name} transform returned.\n` +
      `Tip: do not store values computed inside a transformed function in outer variables; return them instead.`,
  );
}

function findTopTrace(args: readonly Value[]): Trace {
  let top = traceStack[0]!;
  for (const a of args) {
    if (a instanceof Tracer) {
      const m = a._trace.main;
      if (!m.active) throw escapedTracer(a);
      if (m.level > top.level) top = m;
    }
  }
  if (dynamicTrace && dynamicTrace.level > top.level) top = dynamicTrace;
  return top.trace;
}

/**
 * Whether no transform is active (plain eager evaluation). Then every bind runs at once on concrete
 * arrays and nothing can keep a concrete value for later (under vjp / linearize one may be kept as a
 * residual), so eager code may dispose its own intermediates as soon as it has used them.
 */
export function isEagerContext(): boolean {
  return traceStack.length === 1;
}

/** Applies a primitive to values under the innermost active transform among them. */
export function bind(prim: Primitive, args: readonly Value[], params: any): Value[] {
  // Fast path for eager evaluation: no transform is active and no argument is a tracer. (A plain loop:
  // this runs once per eager op.)
  if (traceStack.length === 1) {
    let traced = false;
    for (let i = 0; i < args.length; i++) {
      if (args[i] instanceof Tracer) {
        traced = true;
        break;
      }
    }
    if (!traced) return prim.impl(args as readonly Concrete[], params);
  }
  const trace = findTopTrace(args);
  const tracers = args.map((a) => trace.fullRaise(a));
  const outs = trace.processPrimitive(prim, tracers, params);
  return outs.map(fullLower);
}

/** `bind` for single-output primitives. */
export function bind1(prim: Primitive, args: readonly Value[], params: any): Value {
  return bind(prim, args, params)[0]!;
}

export function fullLower(x: Value): Value {
  return x instanceof Tracer ? x.fullLower() : x;
}

// ---------------------------------------------------------------------------------------------------
// Tracers

/**
 * A stand-in for an array inside a transform. It has the array's shape and dtype but, in general, no
 * value: using it as a JS number or boolean throws `ConcretizationError`.
 */
export abstract class Tracer {
  constructor(readonly _trace: Trace) {}
  abstract get aval(): ShapedArray;
  get shape(): readonly number[] {
    return this.aval.shape;
  }
  get dtype() {
    return this.aval.dtype;
  }
  get ndim(): number {
    return this.aval.ndim;
  }
  get size(): number {
    return this.aval.size;
  }
  get weakType(): boolean {
    return this.aval.weakType;
  }
  /** Unwraps tracers that carry no information for their trace (e.g. unbatched vmap values). */
  fullLower(): Value {
    return this;
  }
  private readError(what: string): ConcretizationError {
    return new ConcretizationError(
      `${what}: cannot read the value of a traced array ${this.aval.str()} inside ${this._trace.main.transformName}; ` +
        `it has no value until the transformed function returns.\nTip: return the array from the function and read the result`,
    );
  }
  data(): Promise<HostData> {
    return Promise.reject(this.readError("data"));
  }
  toArray(): Promise<NestedArray> {
    return Promise.reject(this.readError("toArray"));
  }
  item(): Promise<number | boolean> {
    return Promise.reject(this.readError("item"));
  }
  dataSync(): HostData {
    throw this.readError("dataSync");
  }
  toArraySync(): NestedArray {
    throw this.readError("toArraySync");
  }
  itemSync(): number | boolean {
    throw this.readError("itemSync");
  }
  [Symbol.toPrimitive](): never {
    throw new ConcretizationError(
      `${this._trace.main.transformName}: a traced array ${this.aval.str()} was used as a JS number, string or boolean ` +
        `(e.g. in \`if (x > 0)\` or \`Number(x)\`).\nTip: use np.where / lax.cond for value-dependent choices, ` +
        `or mark the argument static (jit's staticArgnums).`,
    );
  }
  toString(): string {
    return `Tracer<${this.aval.str()}> (${this._trace.main.transformName})`;
  }
  /** Iterates over axis 0 (so `const [a, b] = x` destructures rows). */
  [Symbol.iterator](): Iterator<Value> {
    return hooks().unstack(this)[Symbol.iterator]();
  }
}

// ---------------------------------------------------------------------------------------------------
// Hooks the ops layer registers: the few array operations core itself needs.

export interface CoreHooks {
  /** Converts a JS number / boolean / array-like leaf into a Value (weakly typed for JS numbers). */
  asValue(x: unknown, what: string): Value;
  /** A zero array of the given aval. */
  zeros(aval: ShapedArray): Value;
  /** An array of the given aval filled with `value`. */
  full(aval: ShapedArray, value: number): Value;
  /** Elementwise sum of two same-aval values (accumulating cotangents). */
  add(x: Value, y: Value): Value;
  /** Moves axis `from` of x to `to`. */
  moveaxis(x: Value, from: number, to: number): Value;
  /** Inserts a new axis of size `size` at `axis` by broadcasting. */
  broadcastAxis(x: Value, size: number, axis: number): Value;
  /** Casts to a dtype (used to match tangent dtypes). */
  convert(x: Value, aval: ShapedArray): Value;
  /** A concrete scalar/array value of a constant for printing in jaxprs (small arrays only), or null. */
  literalValue(x: Value): number | boolean | null;
  /** What else a cached trace depends on (the default device its constants were made on). */
  contextKey(): string;
  /** Releases a concrete array's buffer early (no-op for tracers and permanent constants). */
  release(x: Value): void;
  /** Splits along axis 0 (iteration over an array yields its rows, as in JAX and numpy). */
  unstack(x: Value): Value[];
  /** Whether this value is a concrete array of the ops layer. */
  isConcrete(x: unknown): x is Concrete;
}

let registered: CoreHooks | null = null;

export function registerHooks(h: CoreHooks): void {
  registered = h;
}

export function hooks(): CoreHooks {
  if (!registered) {
    throw new Error("webgrad: the ops layer is not loaded; import from 'webgrad' (src/index.ts), not from core files");
  }
  return registered;
}

/** Adds two maybe-zero tangents. */
export function addTangents(a: MaybeZero, b: MaybeZero): MaybeZero {
  if (a === null) return b;
  if (b === null) return a;
  return hooks().add(a, b);
}

export function instantiate(t: MaybeZero, aval: ShapedArray): Value {
  return t === null ? hooks().zeros(aval.withWeak(false)) : t;
}

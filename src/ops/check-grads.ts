/**
 * @file Gradient verification, as JAX's `jax.test_util.check_grads`: compares `jvp` and `vjp` of a
 * function with central finite differences along random directions (fixed seed), at first and
 * optionally higher order, and on failure says which argument and which elements are wrong.
 *
 * - JVP check: `jvp(f, args, t)` against `(f(x + εt) - f(x - εt)) / 2ε`, and its primal against `f(x)`.
 * - VJP check: `⟨ct, J·t⟩ = ⟨Jᵀ·ct, t⟩`, with J·t from finite differences (as JAX does, so reverse
 *   mode is checked against an independent oracle and works for `customVjp` functions that have no
 *   forward mode).
 * - order 2 repeats both checks on the functions `(p, t) => jvp(f, p, t)` and
 *   `(...x) => vjpFn(f(...x))` (JAX's recursion), so second derivatives are checked too.
 * - On failure, per-argument finite differences find the argument(s) at fault, and per-element ones
 *   find the elements, reported worst first: one by one for leaves of up to 64 elements, by bisection
 *   (a bounded number of evaluations) for larger ones, falling back to the first 64.
 *
 * Finite differences run in the inputs' dtype (float64 inputs, which live on the CPU, give float64
 * differences); perturbed points are built on the host, and the step actually taken after rounding to
 * the dtype is the one used, so float32 checks are not polluted by the rounding of x ± εt.
 * Host reads are synchronous in `checkGrads` (CPU arrays) and asynchronous in `checkGradsAsync`
 * (any device); both run the same code, written as a generator that yields the arrays it reads.
 */
import { DType, isFloat, ShapedArray } from "../autodiff/aval.js";
import { hooks, Value } from "../autodiff/core.js";
import { ArgumentError, WebgradError } from "../autodiff/errors.js";
import { jvp } from "../autodiff/jvp.js";
import { vjp } from "../autodiff/transpose.js";
import { flatten, TreeDef, unflatten } from "../autodiff/tree.js";
import { Array as WArray, fromHost } from "./array.js";
import type { AnyTypedArray } from "./backend/kernel.js";
import { newTypedArray } from "./dtype.js";
import * as np from "./np.js";

type Fn = (...args: any[]) => any;
type Mode = "fwd" | "rev";
type Tol = number | Partial<Record<DType, number>>;

export interface CheckGradsOptions {
  /** Highest derivative order checked (1: first derivatives, 2: also second). Default 1. */
  order?: number;
  /** Which modes to check: "fwd" (jvp) and/or "rev" (vjp). Default both. */
  modes?: readonly Mode[];
  /** Absolute tolerance: a number, or per dtype. Default 2e-3 for float32, 1e-5 for float64. */
  atol?: Tol;
  /** Relative tolerance: a number, or per dtype. Default 2e-3 for float32, 1e-5 for float64. */
  rtol?: Tol;
  /** Finite-difference step. Default 1e-3 when any input is float32, 1e-6 when all are float64. */
  eps?: number;
  /** Seed of the random directions (default 0). */
  seed?: number;
}

/** One comparison made by checkGrads. */
export interface GradCheckRecord {
  /** "JVP", "VJP", "JVP of VJP", ... (JAX's names). */
  readonly check: string;
  /** Derivative order of the check (1 for JVP / VJP, 2 for "JVP of VJP", ...). */
  readonly order: number;
  /** What was compared: jvp/vjp primal output vs f, jvp tangent vs finite differences, or inner products. */
  readonly quantity: "primal" | "tangent" | "inner product";
  /** Largest |got - expected| over the compared elements. */
  readonly maxAbsErr: number;
  /** Largest |got - expected| / |expected| over the elements with expected ≠ 0. */
  readonly maxRelErr: number;
  readonly atol: number;
  readonly rtol: number;
}

/** What checkGrads returns on success. */
export interface GradCheckSummary {
  readonly checks: readonly GradCheckRecord[];
  readonly maxAbsErr: number;
  readonly maxRelErr: number;
}

/** One element that disagrees, from the per-element follow-up. */
export interface GradCheckElement {
  /** Index tuple into the argument. */
  readonly index: readonly number[];
  /** Output entry where the disagreement is largest (JVP checks), e.g. `out[1] [0, 2]`. */
  readonly output?: string;
  readonly expected: number;
  readonly got: number;
}

/** Structured form of a failure (also rendered in the error's message). */
export interface GradCheckFailure {
  readonly check: string;
  readonly order: number;
  readonly quantity: GradCheckRecord["quantity"];
  /** Arguments found at fault (index into the argument list, pytree path like `args[0].w`). */
  readonly arguments: readonly { readonly index: number; readonly path: string; readonly elements: readonly GradCheckElement[] }[];
}

/** A derivative disagrees with finite differences (or jvp's primal with f); the message says where. */
export class GradCheckError extends WebgradError {
  constructor(
    message: string,
    readonly failure: GradCheckFailure,
  ) {
    super(message);
  }
}

const DEFAULT_TOL: Partial<Record<DType, number>> = { float32: 2e-3, float64: 1e-5 };
const DEFAULT_EPS: Partial<Record<DType, number>> = { float32: 1e-3, float64: 1e-6 };
/** Elements of a failing argument examined one by one. */
const MAX_ELEMENTS = 64;
/** Elements listed in a report. */
const MAX_LISTED = 5;
/** Arguments examined element by element. */
const MAX_ARGS_DETAILED = 3;

// ---------------------------------------------------------------------------------------------------
// Host reads: the checks are generators that yield the arrays they need on the host.

type Host = Float64Array;
type Gen<R> = Generator<Value, R, Host>;

function* read(v: Value): Gen<Host> {
  return yield v;
}

function* readAll(vs: readonly Value[]): Gen<Host[]> {
  const out: Host[] = [];
  for (const v of vs) out.push(yield v);
  return out;
}

function concrete(what: string, v: Value): WArray {
  if (!(v instanceof WArray)) {
    throw new ArgumentError(
      `${what}: needs concrete arrays, got a traced value ${v.aval.str()}` +
        `\nTip: call it outside of jit / vmap / grad, on concrete arguments`,
    );
  }
  return v;
}

function toF64(d: AnyTypedArray): Host {
  return d instanceof Float64Array ? d : Float64Array.from(d as ArrayLike<number>);
}

function runSync<R>(what: string, g: Gen<R>): R {
  let r = g.next();
  while (!r.done) {
    const a = concrete(what, r.value);
    if (!a.device.backend.readSync) {
      throw new ArgumentError(
        `${what}: arrays on ${a.device.id} can only be read asynchronously` +
          `\nTip: use await checkGradsAsync(...), or check gradients on the CPU backend in float64`,
      );
    }
    r = g.next(toF64(a.dataSync()));
  }
  return r.value;
}

async function runAsync<R>(what: string, g: Gen<R>): Promise<R> {
  let r = g.next();
  while (!r.done) r = g.next(toF64(await concrete(what, r.value).data()));
  return r.value;
}

// ---------------------------------------------------------------------------------------------------
// Small helpers

/** Deterministic standard normals (splitmix32 + Box-Muller). */
function makeRng(seed: number): () => number {
  let s = seed >>> 0;
  const u32 = () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  return () => {
    const u1 = (u32() + 1) / 4294967297;
    const u2 = u32() / 4294967296;
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  };
}

function randn(rng: () => number, n: number): Host {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = rng();
  return out;
}

/** Rounds host values to `dtype` (what storing them in an array of that dtype gives). */
function roundTo(x: Host, dtype: DType): Host {
  if (dtype === "float64") return x;
  const t = newTypedArray(dtype, x.length);
  for (let i = 0; i < x.length; i++) t[i] = x[i]!;
  return toF64(t);
}

function upload(data: Host, like: Value, weakType: boolean): Value {
  const a = like as WArray;
  return fromHost(data, a.aval.shape, { dtype: a.aval.dtype, device: a.device, weakType });
}

function dot(a: Host, b: Host): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

function unravel(k: number, shape: readonly number[]): number[] {
  const idx: number[] = new Array<number>(shape.length).fill(0);
  for (let d = shape.length - 1; d >= 0; d--) {
    const n = shape[d]!;
    idx[d] = k % n;
    k = Math.floor(k / n);
  }
  return idx;
}

const fmt = (x: number): string => (Number.isFinite(x) ? (x === 0 ? "0" : x.toPrecision(6)) : String(x));

/** An element of an output leaf for messages: `out[1] at [0, 2]`, or just the path for scalars. */
const at = (path: string, idx: readonly number[]): string => (idx.length ? `${path} at [${idx.join(", ")}]` : path);

/** Pytree paths of the leaves of `def`, rooted at `root`: `args[0].w`, `out[1]`. */
export function leafPaths(def: TreeDef, root: string): string[] {
  const out: string[] = [];
  const go = (d: TreeDef, p: string): void => {
    switch (d.kind) {
      case "leaf":
        out.push(p);
        return;
      case "array":
        d.children.forEach((c, i) => go(c, `${p}[${i}]`));
        return;
      case "object":
        d.keys.forEach((k, i) => go(d.children[i]!, /^[A-Za-z_$][\w$]*$/.test(k) ? `${p}.${k}` : `${p}[${JSON.stringify(k)}]`));
        return;
      default:
        return;
    }
  };
  go(def, root);
  return out;
}

interface Tolerance {
  atol: number;
  rtol: number;
}

interface Cmp {
  maxAbs: number;
  maxRel: number;
  /** Largest |got - expected| - (atol + rtol·|expected|); > 0 means a failure. */
  excess: number;
  /** Flat index where the excess is largest. */
  worst: number;
}

function compare(got: Host, exp: Host, tol: Tolerance): Cmp {
  let maxAbs = 0;
  let maxRel = 0;
  let excess = -Infinity;
  let worst = -1;
  for (let k = 0; k < exp.length; k++) {
    const g = got[k]!;
    const e = exp[k]!;
    let diff = Math.abs(g - e);
    if (Number.isNaN(g) && Number.isNaN(e)) diff = 0;
    else if (Number.isNaN(diff)) diff = Infinity;
    const ex = diff - (tol.atol + tol.rtol * Math.abs(e));
    if (diff > maxAbs) maxAbs = diff;
    if (e !== 0 && Number.isFinite(e) && diff / Math.abs(e) > maxRel) maxRel = diff / Math.abs(e);
    if (ex > excess) {
      excess = ex;
      worst = k;
    }
  }
  return { maxAbs, maxRel, excess, worst };
}

// ---------------------------------------------------------------------------------------------------
// Public: numerical JVP

/**
 * Central differences: `(f(...(args + eps·t)) - f(...(args - eps·t))) / (2·eps)`, with f's output
 * structure. Non-float arguments are not perturbed; non-float outputs get zero (float32) tangents.
 * `eps` defaults to 1e-3 (1e-6 when every float argument is float64).
 */
export function numericalJvp(f: Fn, args: readonly unknown[], tangents: readonly unknown[], eps?: number): any {
  const [al, ad] = flatten(args);
  const [tl] = flatten(tangents);
  if (tl.length !== al.length) {
    throw new ArgumentError(
      `numericalJvp: tangents must have the arguments' structure, got ${tl.length} tangent leaves for ${al.length} argument leaves`,
    );
  }
  const xs = al.map((x, i) => hooks().asValue(x, `numericalJvp argument leaf ${i}`));
  const h = eps ?? defaultEps(xs);
  const shifted = (sign: number) =>
    xs.map((x, i) => (isFloat(x.aval.dtype) ? np.add(x, np.multiply(np.astype(tl[i] as np.ArrayLike, x.aval.dtype), sign * h)) : x));
  const [pl, od] = flatten(f(...unflatten<unknown[]>(ad, shifted(1))));
  const [ml] = flatten(f(...unflatten<unknown[]>(ad, shifted(-1))));
  return unflatten(
    od,
    pl.map((p, j) => {
      const pv = hooks().asValue(p, `numericalJvp output leaf ${j}`);
      const mv = hooks().asValue(ml[j], `numericalJvp output leaf ${j}`);
      if (!isFloat(pv.aval.dtype)) return np.zeros(pv.aval.shape);
      return np.multiply(np.subtract(pv, mv), 0.5 / h);
    }),
  );
}

function defaultEps(xs: readonly Value[]): number {
  const floats = xs.filter((x) => isFloat(x.aval.dtype));
  if (floats.length > 0 && floats.every((x) => x.aval.dtype === "float64")) return DEFAULT_EPS.float64!;
  return DEFAULT_EPS.float32!;
}

// ---------------------------------------------------------------------------------------------------
// The checks

interface LeafInfo {
  /** Pytree path of the original argument leaf, e.g. `args[0].w (as tangent)`. */
  label: string;
  /** Index of the original positional argument. */
  argIndex: number;
}

interface Level {
  f: Fn;
  /** The positional arguments (leaves are concrete arrays). */
  args: unknown[];
  info: LeafInfo[];
  /** "" at the top, else "JVP", "VJP of JVP", ... */
  name: string;
  depth: number;
}

interface Ctx {
  what: string;
  modes: readonly Mode[];
  order: number;
  atol?: Tol;
  rtol?: Tol;
  eps?: number;
  seed: number;
  records: GradCheckRecord[];
}

function tolFor(ctx: Ctx, dtypes: readonly DType[]): Tolerance {
  const pick = (t: Tol | undefined, d: DType): number => {
    if (!isFloat(d)) return 0;
    if (typeof t === "number") return t;
    return t?.[d] ?? DEFAULT_TOL[d]!;
  };
  let atol = 0;
  let rtol = 0;
  for (const d of dtypes) {
    atol = Math.max(atol, pick(ctx.atol, d));
    rtol = Math.max(rtol, pick(ctx.rtol, d));
  }
  return { atol, rtol };
}

/** The point checked: the arguments' leaves, their host copies, and the finite-difference step. */
interface Point {
  def: TreeDef;
  xs: Value[];
  host: Host[];
  eps: number;
}

function* pointOf(ctx: Ctx, level: Level): Gen<Point> {
  const [leaves, def] = flatten(level.args);
  const xs = leaves as Value[];
  const host = yield* readAll(xs);
  return { def, xs, host, eps: ctx.eps ?? defaultEps(xs) };
}

interface Perturbation {
  plus: Value[];
  minus: Value[];
  /** The direction actually taken, (plus - minus) / 2ε on the host (float64); null for non-float leaves. */
  dir: (Host | null)[];
  /** dir stored in each leaf's dtype, as jvp tangents (zeros for non-float leaves). */
  tangents: Value[];
}

/** Builds x ± ε·d on the host for direction `d` per leaf (null: leaf not moved). */
function perturb(pt: Point, dirs: readonly (Host | null)[]): Perturbation {
  const plus: Value[] = [];
  const minus: Value[] = [];
  const dir: (Host | null)[] = [];
  const tangents: Value[] = [];
  pt.xs.forEach((x, i) => {
    const d = dirs[i];
    const weak = x.aval.weakType;
    if (!isFloat(x.aval.dtype) || !d) {
      plus.push(x);
      minus.push(x);
      dir.push(isFloat(x.aval.dtype) ? new Float64Array(x.aval.size) : null);
      tangents.push(upload(new Float64Array(x.aval.size), x, false));
      return;
    }
    const h = pt.host[i]!;
    const p = new Float64Array(h.length);
    const m = new Float64Array(h.length);
    for (let k = 0; k < h.length; k++) {
      p[k] = h[k]! + pt.eps * d[k]!;
      m[k] = h[k]! - pt.eps * d[k]!;
    }
    const pr = roundTo(p, x.aval.dtype);
    const mr = roundTo(m, x.aval.dtype);
    const taken = new Float64Array(h.length);
    for (let k = 0; k < h.length; k++) taken[k] = (pr[k]! - mr[k]!) / (2 * pt.eps);
    plus.push(upload(pr, x, weak));
    minus.push(upload(mr, x, weak));
    dir.push(taken);
    tangents.push(upload(taken, x, false));
  });
  return { plus, minus, dir, tangents };
}

interface Outputs {
  def: TreeDef;
  vals: Value[];
}

function outputsOf(what: string, tree: unknown): Outputs {
  const [l, def] = flatten(tree);
  return { def, vals: l.map((x, j) => hooks().asValue(x, `${what} output leaf ${j}`)) };
}

/** Central differences on the host (float64): one array per output leaf (null for non-float leaves). */
function* finiteDiff(what: string, level: Level, pt: Point, pb: Perturbation): Gen<{ def: TreeDef; avals: ShapedArray[]; jt: (Host | null)[] }> {
  const fp = outputsOf(what, level.f(...unflatten<unknown[]>(pt.def, pb.plus)));
  const fm = outputsOf(what, level.f(...unflatten<unknown[]>(pt.def, pb.minus)));
  const hp = yield* readAll(fp.vals);
  const hm = yield* readAll(fm.vals);
  const jt = fp.vals.map((v, j) => {
    if (!isFloat(v.aval.dtype)) return null;
    const a = hp[j]!;
    const b = hm[j]!;
    const out = new Float64Array(a.length);
    for (let k = 0; k < a.length; k++) out[k] = (a[k]! - b[k]!) / (2 * pt.eps);
    return out;
  });
  return { def: fp.def, avals: fp.vals.map((v) => v.aval), jt };
}

function checkName(level: Level, mode: Mode): string {
  const m = mode === "fwd" ? "JVP" : "VJP";
  return level.name ? `${m} of ${level.name}` : m;
}

function record(ctx: Ctx, check: string, order: number, quantity: GradCheckRecord["quantity"], c: Cmp, tol: Tolerance): void {
  ctx.records.push({ check, order, quantity, maxAbsErr: c.maxAbs, maxRelErr: c.maxRel, atol: tol.atol, rtol: tol.rtol });
}

/** Compares output leaves (null expected: not compared) with per-dtype tolerances. */
function compareLeaves(
  ctx: Ctx,
  got: readonly Host[],
  exp: readonly (Host | null)[],
  avals: readonly ShapedArray[],
): { agg: Cmp; worst: { j: number; c: Cmp } | null } {
  const agg: Cmp = { maxAbs: 0, maxRel: 0, excess: -Infinity, worst: -1 };
  let worst: { j: number; c: Cmp } | null = null;
  exp.forEach((e, j) => {
    if (!e) return;
    const c = compare(got[j]!, e, tolFor(ctx, [avals[j]!.dtype]));
    agg.maxAbs = Math.max(agg.maxAbs, c.maxAbs);
    agg.maxRel = Math.max(agg.maxRel, c.maxRel);
    if (c.excess > 0 && (!worst || c.excess > worst.c.excess)) worst = { j, c };
  });
  return { agg, worst };
}

function* checkPrimal(ctx: Ctx, check: string, order: number, got: Outputs, exp: Outputs, outPaths: string[]): Gen<void> {
  const hg = yield* readAll(got.vals);
  const he = yield* readAll(exp.vals);
  const avals = exp.vals.map((v) => v.aval);
  const { agg, worst } = compareLeaves(ctx, hg, he, avals);
  const tolAll = tolFor(ctx, avals.map((a) => a.dtype));
  record(ctx, check, order, "primal", agg, tolAll);
  if (worst) {
    const { j, c } = worst;
    const idx = unravel(c.worst, exp.vals[j]!.aval.shape);
    throw new GradCheckError(
      `${ctx.what}: the primal output of ${check} differs from the function's output at ${at(outPaths[j]!, idx)}: ` +
        `expected ${fmt(he[j]![c.worst]!)}, got ${fmt(hg[j]![c.worst]!)}` +
        `\nTip: the function must be deterministic and pure; a customJvp / customVjp rule must return f's value as its primal output`,
      { check, order, quantity: "primal", arguments: [] },
    );
  }
}

/** The JVP check at one level: tangent vs finite differences, primal vs f. */
function* checkJvp(ctx: Ctx, level: Level): Gen<void> {
  const check = checkName(level, "fwd");
  const order = level.depth + 1;
  const pt = yield* pointOf(ctx, level);
  const rng = makeRng(ctx.seed);
  const dirs = pt.xs.map((x) => (isFloat(x.aval.dtype) ? randn(rng, x.aval.size) : null));
  const pb = perturb(pt, dirs);

  const [po, to] = jvp(level.f, unflatten<unknown[]>(pt.def, pt.xs), unflatten<unknown[]>(pt.def, pb.tangents));
  const got = outputsOf(check, po);
  const gotT = outputsOf(check, to);
  const exp = outputsOf(check, level.f(...unflatten<unknown[]>(pt.def, pt.xs)));
  const outPaths = leafPaths(exp.def, "out");
  yield* checkPrimal(ctx, check, order, got, exp, outPaths);

  const fd = yield* finiteDiff(check, level, pt, pb);
  const ht = yield* readAll(gotT.vals);
  const tolAll = tolFor(ctx, fd.avals.map((a) => a.dtype));
  const { agg, worst: failedAt } = compareLeaves(ctx, ht, fd.jt, fd.avals);
  record(ctx, check, order, "tangent", agg, tolAll);
  if (!failedAt) return;
  const { j, c } = failedAt;
  const headline =
    `${check} (order ${order}) does not match finite differences: along a random direction t, ` +
    `J·t at ${at(outPaths[j]!, unravel(c.worst, fd.avals[j]!.shape))} is ` +
    `${fmt(fd.jt[j]![c.worst]!)} by finite differences, ${fmt(ht[j]![c.worst]!)} by jvp`;
  yield* followUp(ctx, level, pt, dirs, "fwd", check, order, headline, outPaths);
}

/** The VJP check at one level: ⟨ct, J·t⟩ (finite differences) against ⟨vjp(ct), t⟩, primal vs f. */
function* checkVjp(ctx: Ctx, level: Level): Gen<void> {
  const check = checkName(level, "rev");
  const order = level.depth + 1;
  const pt = yield* pointOf(ctx, level);
  const [vo, vjpFn] = vjp(level.f, ...unflatten<unknown[]>(pt.def, pt.xs));
  const got = outputsOf(check, vo);
  const exp = outputsOf(check, level.f(...unflatten<unknown[]>(pt.def, pt.xs)));
  const outPaths = leafPaths(exp.def, "out");
  yield* checkPrimal(ctx, check, order, got, exp, outPaths);

  const rng = makeRng(ctx.seed);
  const dirs = pt.xs.map((x) => (isFloat(x.aval.dtype) ? randn(rng, x.aval.size) : null));
  const pb = perturb(pt, dirs);
  const fd = yield* finiteDiff(check, level, pt, pb);
  // Random cotangents, rounded to the outputs' dtypes (the values the vjp really receives).
  const ctHost = got.vals.map((v) =>
    isFloat(v.aval.dtype) ? roundTo(randn(rng, v.aval.size), v.aval.dtype) : new Float64Array(v.aval.size),
  );
  const cts = got.vals.map((v, j) => upload(ctHost[j]!, v, false));
  const ctIn = flatten<unknown>(vjpFn(unflatten(got.def, cts)))[0].map((c, i) => hooks().asValue(c, `${check} cotangent ${i}`));
  const hIn = yield* readAll(ctIn);

  let ip = 0;
  pt.xs.forEach((_, i) => {
    const d = pb.dir[i];
    if (d) ip += dot(d, hIn[i]!);
  });
  let ipExp = 0;
  fd.jt.forEach((e, j) => {
    if (e) ipExp += dot(e, ctHost[j]!);
  });
  const tol = tolFor(ctx, [...pt.xs, ...got.vals].map((v) => v.aval.dtype));
  const c = compare(Float64Array.of(ip), Float64Array.of(ipExp), tol);
  record(ctx, check, order, "inner product", c, tol);
  if (c.excess <= 0) return;
  const headline =
    `${check} (order ${order}) does not match finite differences: for a random direction t and cotangent ct, ` +
    `⟨ct, J·t⟩ = ${fmt(ipExp)} by finite differences, ⟨Jᵀ·ct, t⟩ = ${fmt(ip)} by vjp`;
  yield* followUp(ctx, level, pt, dirs, "rev", check, order, headline, outPaths, { ctHost, hIn, outAvals: got.vals.map((v) => v.aval) });
}

interface RevData {
  ctHost: Host[];
  hIn: Host[];
  outAvals: ShapedArray[];
}

/**
 * After a failed check: which arguments disagree (moving one argument leaf at a time along the same
 * random direction), then which of their elements (one-hot directions: all of a small leaf, bisection
 * in a large one, else its first MAX_ELEMENTS). Throws the GradCheckError.
 */
function* followUp(
  ctx: Ctx,
  level: Level,
  pt: Point,
  dirs: readonly (Host | null)[],
  mode: Mode,
  check: string,
  order: number,
  headline: string,
  outPaths: string[],
  rev?: RevData,
): Gen<never> {
  const floatLeaves = pt.xs.map((_, i) => i).filter((i) => isFloat(pt.xs[i]!.aval.dtype));

  /** Compares derivative along `dirsI` (only some leaves moved); returns the worst excess and detail. */
  function* along(dirsI: (Host | null)[]): Gen<{ excess: number; got: number; exp: number; where: string }> {
    const pb = perturb(pt, dirsI);
    const fd = yield* finiteDiff(check, level, pt, pb);
    if (mode === "fwd") {
      const [, to] = jvp(level.f, unflatten<unknown[]>(pt.def, pt.xs), unflatten<unknown[]>(pt.def, pb.tangents));
      const gotT = outputsOf(check, to);
      const ht = yield* readAll(gotT.vals);
      const { worst } = compareLeaves(ctx, ht, fd.jt, fd.avals);
      if (!worst) return { excess: -Infinity, got: 0, exp: 0, where: "" };
      const { j, c } = worst;
      return {
        excess: c.excess,
        got: ht[j]![c.worst]!,
        exp: fd.jt[j]![c.worst]!,
        where: at(outPaths[j]!, unravel(c.worst, fd.avals[j]!.shape)),
      };
    }
    let got = 0;
    pt.xs.forEach((_, i) => {
      const d = pb.dir[i];
      if (d && dirsI[i]) got += dot(d, rev!.hIn[i]!);
    });
    let exp = 0;
    fd.jt.forEach((e, j) => {
      if (e) exp += dot(e, rev!.ctHost[j]!);
    });
    const tol = tolFor(ctx, [...pt.xs.map((x) => x.aval.dtype), ...fd.avals.map((a) => a.dtype)]);
    const c = compare(Float64Array.of(got), Float64Array.of(exp), tol);
    return { excess: c.excess, got, exp, where: "" };
  }

  // With one scalar float output (a loss), Jᵀ·ct is the gradient times ct: report the gradient.
  const floatOuts = rev ? rev.outAvals.map((_, j) => j).filter((j) => isFloat(rev.outAvals[j]!.dtype)) : [];
  const scalarCt =
    rev && floatOuts.length === 1 && rev.outAvals[floatOuts[0]!]!.size === 1 ? rev.ctHost[floatOuts[0]!]![0]! : null;
  const asGradient = scalarCt !== null && scalarCt !== 0;
  const ctScale = asGradient ? scalarCt : 1;

  const failing: number[] = [];
  for (const i of floatLeaves) {
    const only = pt.xs.map((_, k) => (k === i ? dirs[k]! : null));
    const r = yield* along(only);
    if (r.excess > 0) failing.push(i);
  }

  type Bad = GradCheckElement & { diff: number };
  /** Element k of leaf i alone (one-hot direction): the disagreement, or null when it agrees. */
  function* element(i: number, k: number): Gen<Bad | null> {
    const e = new Float64Array(pt.xs[i]!.aval.size);
    e[k] = 1;
    const only = pt.xs.map((_, m) => (m === i ? e : null));
    const r = yield* along(only);
    if (r.excess <= 0) return null;
    // In rev mode the element's derivative is the k-th entry of Jᵀ·ct; `along` measured it as an inner
    // product with the direction actually taken (≈ 1 at k), so divide that step out.
    const step = perturb(pt, only).dir[i]![k]!;
    const got = mode === "rev" ? rev!.hIn[i]![k]! / ctScale : r.got;
    const exp = mode === "rev" ? r.exp / step / ctScale : r.exp;
    return {
      index: unravel(k, pt.xs[i]!.aval.shape),
      ...(mode === "fwd" ? { output: r.where } : {}),
      expected: exp,
      got,
      diff: Math.abs(got - exp),
    };
  }

  /**
   * Large leaves: bisection along the random direction restricted to halves of the flat index range,
   * descending into the halves that still disagree, within a budget of evaluations.
   */
  function* bisect(i: number): Gen<{ bad: Bad[]; complete: boolean }> {
    const bad: Bad[] = [];
    let budget = 2 * MAX_ELEMENTS;
    const d = dirs[i]!;
    function* go(lo: number, hi: number): Gen<void> {
      if (hi - lo === 1) {
        budget--;
        const b = yield* element(i, lo);
        if (b) bad.push(b);
        return;
      }
      const mid = (lo + hi) >> 1;
      for (const [a, b] of [
        [lo, mid],
        [mid, hi],
      ] as const) {
        if (budget <= 0 || bad.length >= MAX_LISTED) return;
        budget--;
        const sub = new Float64Array(d.length);
        sub.set(d.subarray(a, b), a);
        const r = yield* along(pt.xs.map((_, m) => (m === i ? sub : null)));
        if (r.excess > 0) yield* go(a, b);
      }
    }
    yield* go(0, d.length);
    return { bad, complete: budget > 0 && bad.length < MAX_LISTED };
  }

  const lines: string[] = [];
  const argsOut: { index: number; path: string; elements: GradCheckElement[] }[] = [];
  for (const i of failing.slice(0, MAX_ARGS_DETAILED)) {
    const x = pt.xs[i]!;
    const info = level.info[i]!;
    const size = x.aval.size;
    let bad: Bad[] = [];
    let summary: string;
    if (size > MAX_ELEMENTS) {
      const r = yield* bisect(i);
      bad = r.bad;
      summary = `found by bisection over the ${size} elements` + (r.complete ? "" : " (search stopped early; there may be more)");
    }
    if (bad.length === 0) {
      const n = Math.min(size, MAX_ELEMENTS);
      for (let k = 0; k < n; k++) {
        const b = yield* element(i, k);
        if (b) bad.push(b);
      }
      summary = `${bad.length} of the ${n} elements checked${size > n ? ` (the first ${n} of ${size})` : ""} disagree`;
      if (bad.length === 0) {
        summary =
          `no single element among the first ${n} of ${size} disagrees on its own` +
          (size > n ? " (the wrong ones may come later)" : " (only combined moves do)");
      }
    }
    bad.sort((a, b) => (b.diff === a.diff ? 0 : Number.isNaN(b.diff) || b.diff > a.diff ? 1 : -1));
    const elements = bad.map(({ diff: _d, ...rest }) => rest);
    argsOut.push({ index: info.argIndex, path: info.label, elements });
    const what = mode === "fwd" ? "jvp" : "vjp";
    const quantity = mode === "fwd" || asGradient ? "∂out/∂x" : "Jᵀ·ct (ct random)";
    lines.push(`  argument ${info.argIndex} (${info.label}, ${x.aval.str()}) disagrees:`);
    for (const el of bad.slice(0, MAX_LISTED)) {
      lines.push(
        `    element [${el.index.join(", ")}]${el.output ? ` → ${el.output}` : ""}: ${quantity} expected ${fmt(el.expected)} ` +
          `(finite differences), got ${fmt(el.got)} (${what}), |diff| ${fmt(el.diff)}`,
      );
    }
    const more = bad.length - Math.min(bad.length, MAX_LISTED);
    lines.push(`    ${summary!}${more > 0 ? `; ${more} more not listed` : ""}`);
  }
  if (failing.length > MAX_ARGS_DETAILED) {
    lines.push(`  ... and ${failing.length - MAX_ARGS_DETAILED} more arguments: ${failing.slice(MAX_ARGS_DETAILED).map((i) => level.info[i]!.label).join(", ")}`);
  }
  if (failing.length === 0) {
    lines.push("  no single argument disagrees on its own; the error appears only when arguments move together");
  }
  const tip =
    "\nTip: a wrong derivative rule (a customJvp / customVjp rule or a primitive's jvp / transpose) for the listed elements; " +
    "if the function is not smooth there (relu at 0, abs, max ties) or eps is too large or small for its scale, " +
    "move the point or pass eps / atol / rtol";
  throw new GradCheckError(`${ctx.what}: ${headline}\n${lines.join("\n")}${tip}`, {
    check,
    order,
    quantity: mode === "fwd" ? "tangent" : "inner product",
    arguments: argsOut,
  });
}

function* checkLevel(ctx: Ctx, level: Level): Gen<void> {
  const remaining = ctx.order - level.depth;
  if (ctx.modes.includes("fwd")) {
    yield* checkJvp(ctx, level);
    if (remaining > 1) {
      const f = level.f;
      yield* checkLevel(ctx, {
        f: (p: unknown[], t: unknown[]) => jvp(f, p, t),
        args: [level.args, level.args],
        info: [
          ...level.info.map((x) => ({ ...x, label: `${x.label} (as primal)` })),
          ...level.info.map((x) => ({ ...x, label: `${x.label} (as tangent)` })),
        ],
        name: checkName(level, "fwd"),
        depth: level.depth + 1,
      });
    }
  }
  if (ctx.modes.includes("rev")) {
    yield* checkVjp(ctx, level);
    if (remaining > 1) {
      const f = level.f;
      yield* checkLevel(ctx, {
        f: (...a: unknown[]) => {
          const [out, fn] = vjp(f, ...a);
          return fn(out);
        },
        args: level.args,
        info: level.info,
        name: checkName(level, "rev"),
        depth: level.depth + 1,
      });
    }
  }
}

function* checkGradsGen(what: string, f: Fn, args: readonly unknown[], opts: CheckGradsOptions): Gen<GradCheckSummary> {
  if (typeof f !== "function") throw new ArgumentError(`${what}: expected a function, got ${typeof f}`);
  if (!Array.isArray(args)) {
    throw new ArgumentError(`${what}: args must be a list of positional arguments, got ${typeof args}\nTip: checkGrads(f, [x])`);
  }
  const order = opts.order ?? 1;
  if (!Number.isInteger(order) || order < 1) throw new ArgumentError(`${what}: order must be a positive integer, got ${order}`);
  const modes = opts.modes ?? ["fwd", "rev"];
  if (modes.length === 0 || modes.some((m) => m !== "fwd" && m !== "rev")) {
    throw new ArgumentError(`${what}: modes must be a non-empty list of "fwd" and "rev", got ${JSON.stringify(modes)}`);
  }
  if (opts.eps !== undefined && !(opts.eps > 0)) throw new ArgumentError(`${what}: eps must be positive, got ${opts.eps}`);
  const [leaves, def] = flatten(args);
  const xs = leaves.map((x, i) => concrete(what, hooks().asValue(x, `${what} argument leaf ${i}`)));
  const paths = leafPaths(def, "args");
  const info = paths.map((p) => ({ label: p, argIndex: Number(/^args\[(\d+)\]/.exec(p)![1]) }));
  const ctx: Ctx = { what, modes, order, atol: opts.atol, rtol: opts.rtol, eps: opts.eps, seed: opts.seed ?? 0, records: [] };
  yield* checkLevel(ctx, { f, args: unflatten<unknown[]>(def, xs), info, name: "", depth: 0 });
  return {
    checks: ctx.records,
    maxAbsErr: Math.max(0, ...ctx.records.map((r) => r.maxAbsErr)),
    maxRelErr: Math.max(0, ...ctx.records.map((r) => r.maxRelErr)),
  };
}

/**
 * `checkGrads(f, args, {order, modes, atol, rtol, eps})`: checks f's JVP and VJP (and, with order 2,
 * their derivatives) against central finite differences at `args`, as JAX's `check_grads`. Throws a
 * GradCheckError naming the check, the argument (index and pytree path) and the worst elements on
 * failure; returns the errors measured on success. Reads arrays synchronously (CPU); use
 * `checkGradsAsync` for other devices. Use float64 inputs for tight checks.
 */
export function checkGrads(f: Fn, args: readonly unknown[], opts: CheckGradsOptions = {}): GradCheckSummary {
  return runSync("checkGrads", checkGradsGen("checkGrads", f, args, opts));
}

/** `checkGrads` for arrays on any device (reads are awaited). */
export function checkGradsAsync(f: Fn, args: readonly unknown[], opts: CheckGradsOptions = {}): Promise<GradCheckSummary> {
  return runAsync("checkGradsAsync", checkGradsGen("checkGradsAsync", f, args, opts));
}


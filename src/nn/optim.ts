/**
 * @file Optimisers in optax's style: a `GradientTransformation` is a pair of pure functions
 * `init(params) -> state` and `update(updates, state, params?) -> [updates, state]`, composed with
 * `chain`; `applyUpdates(params, updates)` adds the result to the params. States are pytrees of arrays
 * (step counts are int32 arrays), so a whole training step can be `jit`-ed and its state donated.
 *
 * Read first: `scaleByAdam` and `adamw` (= chain(scaleByAdam, addDecayedWeights, scaleByLearningRate)),
 * the pattern every optimiser here follows; then `multiSteps` (gradient accumulation without control
 * flow: both branches are computed and selected with `where`, so it stays jit-able).
 *
 * Learning rates are numbers or schedules (`count -> lr`, e.g. `warmupCosineDecaySchedule`); a schedule
 * is evaluated at the number of updates made so far (0 at the first update), in float32.
 * Masks (`weightDecay` masks, `masked`, `partition`) are pytrees of booleans with the params' structure
 * or a prefix of it (`{ tokenEmb: false, layers: true }`), or functions of the params returning one.
 */
import { DType } from "../autodiff/aval.js";
import { Value } from "../autodiff/core.js";
import { ArgumentError, TreeMismatchError } from "../autodiff/errors.js";
import * as tree from "../autodiff/tree.js";
import { isPlainObject } from "../autodiff/tree.js";
import * as np from "../ops/np.js";
import type { ArrayLike } from "../ops/np.js";

/** Any pytree of arrays (params, gradients, updates). */
export type Tree = any;

/** optax's GradientTransformation: pure `init` and `update`. */
export interface GradientTransformation<S = any> {
  init(params: Tree): S;
  /** Transforms `updates` (gradients at first); `params` is needed by weight decay. */
  update(updates: Tree, state: S, params?: Tree): [Tree, S];
}

/** A learning-rate (or any hyperparameter) schedule: the value at step `count` (0-based), float32. */
export type Schedule = (count: ArrayLike) => Value;
export type ScalarOrSchedule = number | Schedule;

/** A boolean mask over a pytree: same structure or a prefix of it, or a function of the tree returning one. */
export type Mask = unknown;

// ---------------------------------------------------------------------------------------------------
// Tree helpers

const INT32_MAX = 2147483647;

/** A fresh step counter (int32 scalar 0). */
const zeroCount = (): Value => np.zeros([], { dtype: "int32" });

/** count + 1, saturating at int32's maximum (optax's safe_int32_increment). */
function incrementCount(count: Value): Value {
  return np.where(np.less(count, INT32_MAX), np.add(count, 1), INT32_MAX);
}

const dtypeOf = (x: Value): DType => x.aval.dtype;

/**
 * A scalar (JS number or array) in the dtype of leaf `x`, so float64 params keep float64 maths. JS
 * numbers are made in that dtype directly (through float32 they would lose precision).
 */
const like = (s: ArrayLike, x: Value): Value => (typeof s === "number" ? np.full([], s, { dtype: dtypeOf(x) }) : np.astype(s, dtypeOf(x)));

/** √(Σ leaves Σ x²): the l2 norm of the whole tree flattened into one vector. */
export function globalNorm(updates: Tree): Value {
  const ls = tree.leaves<Value>(updates).map((l) => np.asArray(l, "globalNorm"));
  if (ls.length === 0) return np.zeros([]);
  return np.sqrt(ls.map((l) => np.sum(np.square(l))).reduce((a, b) => np.add(a, b)));
}

/** One boolean per leaf of `t` (in tree.flatten's order), from a full or prefix mask. */
export function expandMask(what: string, t: Tree, mask: Mask): boolean[] {
  const m = typeof mask === "function" ? (mask as (p: Tree) => unknown)(t) : mask;
  const out: boolean[] = [];
  const walk = (x: unknown, mk: unknown, path: string): void => {
    if (x === null || x === undefined) return;
    if (typeof mk === "boolean") {
      for (let i = tree.leaves(x).length; i > 0; i--) out.push(mk);
      return;
    }
    const at = path || "the root";
    if (Array.isArray(x)) {
      if (!Array.isArray(mk) || mk.length !== x.length) {
        throw new TreeMismatchError(`${what}: the mask at ${at} must be a boolean or a list of ${x.length}, got ${describe(mk)}`);
      }
      x.forEach((c, i) => walk(c, mk[i], `${path}[${i}]`));
      return;
    }
    if (isPlainObject(x)) {
      if (!isPlainObject(mk)) throw new TreeMismatchError(`${what}: the mask at ${at} must be a boolean or an object, got ${describe(mk)}`);
      for (const k of Object.keys(x).sort()) {
        if (x[k] === null || x[k] === undefined) continue;
        if (!(k in mk)) {
          throw new TreeMismatchError(`${what}: the mask has no entry for ${path ? `${path}.${k}` : k}\nTip: give a boolean for every key (true/false covers a whole subtree)`);
        }
        walk(x[k], mk[k], path ? `${path}.${k}` : k);
      }
      return;
    }
    throw new TreeMismatchError(`${what}: the mask at ${at} must be a boolean for this leaf, got ${describe(mk)}`);
  };
  walk(t, m, "");
  return out;
}

function describe(x: unknown): string {
  if (Array.isArray(x)) return `a list of ${x.length}`;
  if (x === null) return "null";
  return isPlainObject(x) ? "an object" : typeof x;
}

/** Rebuilds `t` with each leaf replaced by f(leaf, i) (i in tree.flatten's order). */
function mapLeavesIndexed(t: Tree, f: (x: any, i: number) => unknown): Tree {
  const [ls, def] = tree.flatten(t);
  return tree.unflatten(def, ls.map(f));
}

/**
 * Splits `t` by `mask` into `[selected, rest]`: leaves where the mask is true go to the first tree, the
 * others to the second; the missing leaves are `null` in each (a node every transform passes through),
 * so `grad` can differentiate `selected` alone. `combine` undoes it.
 */
export function partition<T>(t: T, mask: Mask): [T, T] {
  const m = expandMask("partition", t, mask);
  return [mapLeavesIndexed(t, (x, i) => (m[i] ? x : null)), mapLeavesIndexed(t, (x, i) => (m[i] ? null : x))];
}

/** Inverse of `partition`: fills the `null`s of one tree from the other. */
export function combine<T>(a: T, b: T): T {
  const go = (x: unknown, y: unknown, path: string): unknown => {
    if (x === null || x === undefined) return y;
    if (y === null || y === undefined) return x;
    if (Array.isArray(x) && Array.isArray(y)) {
      if (x.length !== y.length) throw new TreeMismatchError(`combine: lists at ${path || "the root"} differ in length, got ${x.length} and ${y.length}`);
      return x.map((c, k) => go(c, y[k], `${path}[${k}]`));
    }
    if (isPlainObject(x) && isPlainObject(y)) {
      const o: Record<string, unknown> = {};
      for (const k of new Set([...Object.keys(x), ...Object.keys(y)])) o[k] = go(x[k], y[k], path ? `${path}.${k}` : k);
      return o;
    }
    throw new TreeMismatchError(`combine: both trees have a value at ${path || "the root"}\nTip: combine takes the two halves that partition returned`);
  };
  return go(a, b, "") as T;
}

/** params + updates, leaf by leaf, keeping each param's dtype (optax's apply_updates). */
export function applyUpdates<T>(params: T, updates: Tree): T {
  return tree.map((p: Value, u: Value) => np.astype(np.add(p, u), dtypeOf(np.asArray(p))), params, updates);
}

const zerosLikeTree = (t: Tree): Tree => tree.map((x: Value) => np.zerosLike(x), t);

function needParams(what: string, params: Tree | undefined): Tree {
  if (params === undefined) {
    throw new ArgumentError(`${what}: update needs the params (weight decay is proportional to them)\nTip: opt.update(grads, state, params)`);
  }
  return params;
}

function checkRate(what: string, x: number, lo = 0, hi = Infinity): void {
  if (typeof x !== "number" || !(x >= lo && x <= hi)) throw new ArgumentError(`${what} must be in [${lo}, ${hi}], got ${String(x)}`);
}

// ---------------------------------------------------------------------------------------------------
// Building blocks

/** Passes updates through unchanged. */
export function identity(): GradientTransformation<Record<string, never>> {
  return { init: () => ({}), update: (u, s) => [u, s] };
}

/** Sets every update to zero (for frozen parts, with `masked`). */
export function setToZero(): GradientTransformation<Record<string, never>> {
  return { init: () => ({}), update: (u, s) => [zerosLikeTree(u), s] };
}

/** Multiplies updates by a constant. */
export function scale(step: number): GradientTransformation<Record<string, never>> {
  return { init: () => ({}), update: (u, s) => [tree.map((g: Value) => np.multiply(g, like(step, g)), u), s] };
}

/** Multiplies updates by schedule(count), count = updates made so far. */
export function scaleBySchedule(schedule: Schedule): GradientTransformation<{ count: Value }> {
  return {
    init: () => ({ count: zeroCount() }),
    update: (u, s) => {
      const step = schedule(s.count);
      return [tree.map((g: Value) => np.multiply(g, like(step, g)), u), { count: incrementCount(s.count) }];
    },
  };
}

/** Multiplies updates by -lr (gradient descent); lr may be a schedule. */
export function scaleByLearningRate(lr: ScalarOrSchedule, opts: { flipSign?: boolean } = {}): GradientTransformation {
  const sign = opts.flipSign === false ? 1 : -1;
  if (typeof lr === "function") return scaleBySchedule((c) => np.multiply(lr(c), sign));
  return scale(sign * lr);
}

/** Chains transformations: each one's output updates are the next one's input. State: one per link. */
export function chain(...transforms: GradientTransformation[]): GradientTransformation<any[]> {
  return {
    init: (params) => transforms.map((t) => t.init(params)),
    update: (updates, state, params) => {
      if (!Array.isArray(state) || state.length !== transforms.length) {
        throw new TreeMismatchError(`chain: state must be a list of ${transforms.length} states, got ${describe(state)}`);
      }
      let u = updates;
      const next = transforms.map((t, i) => {
        const [nu, ns] = t.update(u, state[i], params);
        u = nu;
        return ns;
      });
      return [u, next];
    },
  };
}

/** Momentum (optax's trace): t ← g + decay·t; the update is t, or g + decay·t with Nesterov. */
export function trace(opts: { decay: number; nesterov?: boolean }): GradientTransformation<{ trace: Tree }> {
  checkRate("trace: decay", opts.decay);
  return {
    init: (params) => ({ trace: zerosLikeTree(params) }),
    update: (u, s) => {
      const t = tree.map((g: Value, m: Value) => np.add(g, np.multiply(like(opts.decay, g), m)), u, s.trace);
      const out = opts.nesterov ? tree.map((g: Value, m: Value) => np.add(g, np.multiply(like(opts.decay, g), m)), u, t) : t;
      return [out, { trace: t }];
    },
  };
}

export interface AdamOptions {
  /** Decay of the first moment (default 0.9). */
  b1?: number;
  /** Decay of the second moment (default 0.999). */
  b2?: number;
  /** Added to √v̂ (default 1e-8). */
  eps?: number;
  /** Added to v̂ inside the square root (default 0). */
  epsRoot?: number;
}

export interface AdamState {
  count: Value;
  mu: Tree;
  nu: Tree;
}

/**
 * Adam's rescaling (Kingma & Ba, https://arxiv.org/abs/1412.6980): m ← b1·m + (1-b1)·g,
 * v ← b2·v + (1-b2)·g², update m̂ / (√(v̂ + epsRoot) + eps) with the bias corrections m̂ = m/(1-b1^t),
 * v̂ = v/(1-b2^t). The bias corrections are computed in each leaf's dtype.
 */
export function scaleByAdam(opts: AdamOptions = {}): GradientTransformation<AdamState> {
  const b1 = opts.b1 ?? 0.9;
  const b2 = opts.b2 ?? 0.999;
  const eps = opts.eps ?? 1e-8;
  const epsRoot = opts.epsRoot ?? 0;
  checkRate("adam: b1", b1, 0, 1);
  checkRate("adam: b2", b2, 0, 1);
  return {
    init: (params) => ({ count: zeroCount(), mu: zerosLikeTree(params), nu: zerosLikeTree(params) }),
    update: (u, s) => {
      const mu = tree.map((g: Value, m: Value) => np.add(np.multiply(like(1 - b1, g), g), np.multiply(like(b1, g), m)), u, s.mu);
      const nu = tree.map((g: Value, v: Value) => np.add(np.multiply(like(1 - b2, g), np.square(g)), np.multiply(like(b2, g), v)), u, s.nu);
      const count = incrementCount(s.count);
      const out = tree.map(
        (m: Value, v: Value) => {
          const t = like(count, m);
          const mHat = np.divide(m, np.subtract(1, np.power(like(b1, m), t)));
          const vHat = np.divide(v, np.subtract(1, np.power(like(b2, v), t)));
          return np.divide(mHat, np.add(np.sqrt(np.add(vHat, epsRoot)), eps));
        },
        mu,
        nu,
      );
      return [out, { count, mu, nu }];
    },
  };
}

/**
 * Adds weightDecay·param to the updates where `mask` is true (all leaves by default): decoupled weight
 * decay (Loshchilov & Hutter, https://arxiv.org/abs/1711.05101) when placed after the adaptive rescaling.
 */
export function addDecayedWeights(weightDecay: number, mask: Mask = true): GradientTransformation<Record<string, never>> {
  checkRate("addDecayedWeights: weightDecay", weightDecay);
  return {
    init: () => ({}),
    update: (u, s, params) => {
      const p = needParams("addDecayedWeights", params);
      if (weightDecay === 0) return [u, s];
      const m = expandMask("addDecayedWeights mask", p, mask);
      const [pl, pdef] = tree.flatten<Value>(p);
      const [ul, udef] = tree.flatten<Value>(u);
      tree.assertSameStructure("addDecayedWeights", udef, pdef, "updates and params must have the same structure");
      return [tree.unflatten(udef, ul.map((g, i) => (m[i] ? np.add(g, np.multiply(like(weightDecay, g), pl[i]!)) : g))), s];
    },
  };
}

/**
 * Lion's update (Chen et al., https://arxiv.org/abs/2302.06675): sign((1-b1)·g + b1·m), then
 * m ← (1-b2)·g + b2·m. Every coordinate moves by exactly ±1·lr, so use a 3-10× smaller lr than AdamW.
 */
export function scaleByLion(opts: { b1?: number; b2?: number } = {}): GradientTransformation<{ count: Value; mu: Tree }> {
  const b1 = opts.b1 ?? 0.9;
  const b2 = opts.b2 ?? 0.99;
  checkRate("lion: b1", b1, 0, 1);
  checkRate("lion: b2", b2, 0, 1);
  return {
    init: (params) => ({ count: zeroCount(), mu: zerosLikeTree(params) }),
    update: (u, s) => {
      const out = tree.map((g: Value, m: Value) => np.sign(np.add(np.multiply(like(1 - b1, g), g), np.multiply(like(b1, g), m))), u, s.mu);
      const mu = tree.map((g: Value, m: Value) => np.add(np.multiply(like(1 - b2, g), g), np.multiply(like(b2, g), m)), u, s.mu);
      return [out, { count: incrementCount(s.count), mu }];
    },
  };
}

/**
 * Rescales all updates together so their global l2 norm is at most `maxNorm` (Pascanu et al.,
 * https://arxiv.org/abs/1211.5063): g ← g · maxNorm / max(‖g‖, maxNorm).
 */
export function clipByGlobalNorm(maxNorm: number): GradientTransformation<Record<string, never>> {
  if (!(maxNorm > 0)) throw new ArgumentError(`clipByGlobalNorm: maxNorm must be positive, got ${maxNorm}`);
  return {
    init: () => ({}),
    update: (u, s) => {
      const norm = globalNorm(u);
      const clipped = np.less(norm, maxNorm);
      return [tree.map((g: Value) => np.where(clipped, g, np.multiply(np.divide(g, like(norm, g)), like(maxNorm, g))), u), s];
    },
  };
}

/**
 * Applies `inner` only to the leaves where `mask` is true; the others pass through unchanged (optax's
 * masked). The inner state covers the selected leaves only.
 */
export function masked<S>(inner: GradientTransformation<S>, mask: Mask): GradientTransformation<{ inner: S }> {
  // A function mask is evaluated on the params (or, without them, on the updates, which share their structure).
  const resolve = (t: Tree): Mask => (typeof mask === "function" ? (mask as (p: Tree) => unknown)(t) : mask);
  return {
    init: (params) => ({ inner: inner.init(partition(params, resolve(params))[0]) }),
    update: (u, s, params) => {
      const m = resolve(params ?? u);
      const [sel, rest] = partition(u, m);
      const [nu, ns] = inner.update(sel, s.inner, params === undefined ? undefined : partition(params, m)[0]);
      return [combine(nu, rest), { inner: ns }];
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Optimisers

/** Stochastic gradient descent, optionally with (Nesterov) momentum (https://proceedings.mlr.press/v28/sutskever13.html). */
export function sgd(learningRate: ScalarOrSchedule, opts: { momentum?: number; nesterov?: boolean } = {}): GradientTransformation {
  const parts: GradientTransformation[] = [];
  if (opts.momentum !== undefined && opts.momentum !== 0) parts.push(trace({ decay: opts.momentum, nesterov: opts.nesterov }));
  else if (opts.nesterov) throw new ArgumentError("sgd: nesterov needs a momentum > 0");
  parts.push(scaleByLearningRate(learningRate));
  return chain(...parts);
}

/** Adam (https://arxiv.org/abs/1412.6980). */
export function adam(learningRate: ScalarOrSchedule, opts: AdamOptions = {}): GradientTransformation {
  return chain(scaleByAdam(opts), scaleByLearningRate(learningRate));
}

/**
 * AdamW (https://arxiv.org/abs/1711.05101): Adam with weight decay decoupled from the adaptive scaling,
 * update = -lr·(adam(g) + weightDecay·param). `mask` selects the params that decay (default all; it is
 * usual to leave out gains and embeddings). weightDecay defaults to 1e-4, as optax.
 */
export function adamw(learningRate: ScalarOrSchedule, opts: AdamOptions & { weightDecay?: number; mask?: Mask } = {}): GradientTransformation {
  return chain(scaleByAdam(opts), addDecayedWeights(opts.weightDecay ?? 1e-4, opts.mask ?? true), scaleByLearningRate(learningRate));
}

/** Lion (https://arxiv.org/abs/2302.06675), with decoupled weight decay (default 1e-3, as optax). */
export function lion(learningRate: ScalarOrSchedule, opts: { b1?: number; b2?: number; weightDecay?: number; mask?: Mask } = {}): GradientTransformation {
  return chain(scaleByLion(opts), addDecayedWeights(opts.weightDecay ?? 1e-3, opts.mask ?? true), scaleByLearningRate(learningRate));
}

export interface MultiStepsState<S = any> {
  /** Micro-steps accumulated since the last real update (0..k-1). */
  miniStep: Value;
  /** Real updates made so far. */
  gradientStep: Value;
  innerState: S;
  /** Running mean of the gradients of this accumulation window. */
  accGrads: Tree;
}

/**
 * Gradient accumulation (optax's MultiSteps): every call adds the gradients to a running mean; every
 * k-th call applies `inner` to the mean and returns its updates, the other calls return zeros (so
 * `applyUpdates` leaves the params as they are). Branch-free, so it works under jit.
 */
export function multiSteps<S>(inner: GradientTransformation<S>, k: number): GradientTransformation<MultiStepsState<S>> {
  if (!Number.isInteger(k) || k < 1) throw new ArgumentError(`multiSteps: k must be a positive integer, got ${k}`);
  return {
    init: (params) => ({ miniStep: zeroCount(), gradientStep: zeroCount(), innerState: inner.init(params), accGrads: zerosLikeTree(params) }),
    update: (u, s, params) => {
      const n = np.add(s.miniStep, 1); // grads seen in this window, this one included
      const acc = tree.map((g: Value, a: Value) => np.add(a, np.divide(np.subtract(g, a), like(n, a))), u, s.accGrads);
      const emit = np.equal(s.miniStep, k - 1);
      const [innerUpdates, innerNext] = inner.update(acc, s.innerState, params);
      const pick = (x: Value, y: Value) => np.where(emit, x, y);
      return [
        tree.map((x: Value) => np.where(emit, x, np.zerosLike(x)), innerUpdates),
        {
          miniStep: np.where(emit, 0, n),
          gradientStep: pick(incrementCount(s.gradientStep), s.gradientStep),
          innerState: tree.map(pick, innerNext, s.innerState),
          accGrads: tree.map((a: Value) => np.where(emit, np.zerosLike(a), a), acc),
        },
      ];
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Schedules (float32 values of a step count)

const countF = (count: ArrayLike): Value => np.astype(count, "float32");

/** The same value at every step. */
export function constantSchedule(value: number): Schedule {
  return (count) => np.fullLike(countF(count), value);
}

/**
 * Linear from initValue (at transitionBegin) to endValue (at transitionBegin + transitionSteps), constant
 * outside (optax's linear_schedule).
 */
export function linearSchedule(initValue: number, endValue: number, transitionSteps: number, transitionBegin = 0): Schedule {
  if (transitionSteps <= 0) return constantSchedule(initValue);
  return (count) => {
    const c = np.clip(np.subtract(countF(count), transitionBegin), 0, transitionSteps);
    const frac = np.subtract(1, np.divide(c, transitionSteps));
    return np.add(np.multiply(initValue - endValue, frac), endValue);
  };
}

/** Linear warm-up from `initValue` (default 0) to `peakValue` over `warmupSteps`, then constant. */
export function linearWarmup(peakValue: number, warmupSteps: number, initValue = 0): Schedule {
  return linearSchedule(initValue, peakValue, warmupSteps);
}

/**
 * Cosine decay (SGDR, https://arxiv.org/abs/1608.03983) from initValue to alpha·initValue over
 * decaySteps: init·((1-alpha)·(½(1 + cos(π·min(t, T)/T)))^exponent + alpha).
 */
export function cosineDecaySchedule(initValue: number, decaySteps: number, opts: { alpha?: number; exponent?: number } = {}): Schedule {
  if (!Number.isInteger(decaySteps) || decaySteps <= 0) {
    throw new ArgumentError(`cosineDecaySchedule: decaySteps must be a positive integer, got ${decaySteps}`);
  }
  const alpha = opts.alpha ?? 0;
  const exponent = opts.exponent ?? 1;
  return (count) => {
    const c = np.minimum(countF(count), decaySteps);
    const cosine = np.multiply(0.5, np.add(1, np.cos(np.multiply(Math.PI / decaySteps, c))));
    return np.multiply(initValue, np.add(np.multiply(1 - alpha, np.power(cosine, exponent)), alpha));
  };
}

/** schedules[0] before boundaries[0], schedules[i+1] (counting from boundaries[i]) after it (optax's join_schedules). */
export function joinSchedules(schedules: readonly Schedule[], boundaries: readonly number[]): Schedule {
  if (schedules.length !== boundaries.length + 1) {
    throw new ArgumentError(`joinSchedules: needs one more schedule than boundaries, got ${schedules.length} and ${boundaries.length}`);
  }
  return (count) => {
    const c = countF(count);
    let out = schedules[0]!(c);
    boundaries.forEach((b, i) => {
      out = np.where(np.less(c, b), out, schedules[i + 1]!(np.subtract(c, b)));
    });
    return out;
  };
}

export interface WarmupCosineOptions {
  /** Value at step 0 (default 0). */
  initValue?: number;
  peakValue: number;
  warmupSteps: number;
  /** Total length including the warm-up, as optax. */
  decaySteps: number;
  /** Value at the end of the decay (default 0). */
  endValue?: number;
  exponent?: number;
}

/** Linear warm-up to peakValue, then cosine decay to endValue at decaySteps (optax's warmup_cosine_decay_schedule). */
export function warmupCosineDecaySchedule(opts: WarmupCosineOptions): Schedule {
  const { peakValue, warmupSteps, decaySteps } = opts;
  const initValue = opts.initValue ?? 0;
  const endValue = opts.endValue ?? 0;
  if (!(decaySteps > warmupSteps)) {
    throw new ArgumentError(`warmupCosineDecaySchedule: decaySteps (${decaySteps}) must exceed warmupSteps (${warmupSteps}); decaySteps includes the warm-up`);
  }
  const alpha = peakValue === 0 ? 0 : endValue / peakValue;
  return joinSchedules(
    [linearSchedule(initValue, peakValue, warmupSteps), cosineDecaySchedule(peakValue, decaySteps - warmupSteps, { alpha, exponent: opts.exponent })],
    [warmupSteps],
  );
}
export const warmupCosine = warmupCosineDecaySchedule;

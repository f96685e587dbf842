/**
 * @file Generalised advantage estimation over the response tokens of a batch of sequences, as array
 * ops (a reverse `lax.scan` over time), so it runs on any device and stages into `jit`. Read `gae`.
 *
 * Layout: rewards, values and mask are [..., T] (usually [batch, T] with T = seq − 1, the per-action
 * layout of src/rl/common.ts); time is the last axis, every other axis is independent (so `vmap` over
 * rows gives the same result). Only positions where `mask` is set are time steps: masked-out positions
 * (prompt, padding) are skipped — their rewards and values are ignored, they pass the running advantage
 * through unchanged, and their outputs are 0. So left- or right-padded rows and rows of different
 * lengths need no special care, and each row is one episode that ends after its last masked step
 * (bootstrap value 0 there, as every response here ends: eos or the length budget).
 */
import type { Value } from "../autodiff/core.js";
import { isFloat, shapeStr } from "../autodiff/aval.js";
import { ArgumentError, DTypeError, ShapeError } from "../autodiff/errors.js";
import { scan } from "../ops/control-flow.js";
import * as np from "../ops/np.js";
import type { ArrayLike } from "../ops/np.js";
import { maskAsFloat, maskedWhiten } from "./common.js";

export interface GaeOptions {
  /** Discount γ in [0, 1] (RLHF: 1). */
  gamma: number;
  /** GAE's λ in [0, 1] (RLHF: 0.95): 0 is the one-step TD error, 1 the Monte-Carlo return minus V. */
  lambda: number;
}

function checkUnit(what: string, x: unknown): number {
  if (!(typeof x === "number" && x >= 0 && x <= 1)) throw new ArgumentError(`gae: ${what} must be a number in [0, 1], got ${String(x)}`);
  return x;
}

/**
 * Generalised advantage estimation (Schulman et al., https://arxiv.org/abs/1506.02438): with
 * δ_t = r_t + γ·V_{t'} − V_t (t' the next masked step after t, V = 0 past the last one),
 * A_t = δ_t + γλ·A_{t'}, the returns (value targets) are A_t + V_t. λ trades bias (a wrong critic) for
 * variance (noisy rewards); the exponentially-weighted sum of k-step advantages needs one backward pass.
 *
 * rewards, values, mask: [..., T] (mask bool or 0/1). Returns advantages and returns of the rewards'
 * shape and dtype, 0 at masked-out positions. Not differentiated through (callers treat both as data).
 */
export function gae(rewards: ArrayLike, values: ArrayLike, mask: ArrayLike, opts: GaeOptions): { advantages: Value; returns: Value } {
  if (typeof opts !== "object" || opts === null) throw new ArgumentError("gae: options must be { gamma, lambda }, got " + String(opts));
  const gamma = checkUnit("gamma", opts.gamma);
  const lambda = checkUnit("lambda", opts.lambda);
  const r = np.asArray(rewards, "gae");
  const v = np.asArray(values, "gae");
  if (!isFloat(r.aval.dtype)) throw new DTypeError(`gae: rewards must be floats, got ${r.aval.dtype}`);
  if (!isFloat(v.aval.dtype)) throw new DTypeError(`gae: values must be floats, got ${v.aval.dtype}`);
  if (r.aval.ndim < 1) throw new ShapeError(`gae: rewards must have a time axis (last), got ${shapeStr(r.aval.shape)}`);
  const sr = r.aval.shape;
  const sv = v.aval.shape;
  if (sr.length !== sv.length || sr.some((d, i) => d !== sv[i])) {
    throw new ShapeError(`gae: values must have the rewards' shape ${shapeStr(sr)}, got ${shapeStr(sv)}`);
  }
  const m = maskAsFloat("gae", mask, r); // [..., T], checks the shape
  const T = sr[sr.length - 1]!;
  const vv = np.astype(v, r.aval.dtype);
  if (T === 0) return { advantages: r, returns: r };
  // Time first for the scan: [..., T] -> [T, ...].
  const tFirst = (x: Value): Value => np.moveaxis(x, -1, 0);
  const batchShape = sr.slice(0, -1);
  const zero = np.zeros(batchShape, { dtype: r.aval.dtype });
  const gammaLambda = gamma * lambda;
  // Carry: the value and advantage of the next masked step (0 past the last one).
  const [, advT] = scan(
    (carry: { nextValue: Value; nextAdv: Value }, x: { r: Value; v: Value; m: Value }) => {
      const delta = np.subtract(np.add(x.r, np.multiply(gamma, carry.nextValue)), x.v);
      const adv = np.add(delta, np.multiply(gammaLambda, carry.nextAdv));
      const on = np.greater(x.m, 0);
      const next = { nextValue: np.where(on, x.v, carry.nextValue), nextAdv: np.where(on, adv, carry.nextAdv) };
      return [next, np.where(on, adv, 0)] as const;
    },
    { nextValue: zero, nextAdv: zero },
    { r: tFirst(r), v: tFirst(vv), m: tFirst(m) },
    { reverse: true },
  );
  const advantages = np.moveaxis(advT, 0, -1); // [T, ...] -> [..., T]
  const returns = np.multiply(np.add(advantages, vv), m);
  return { advantages, returns };
}

/**
 * Advantage whitening over the masked positions (all axes): zero mean, unit variance, 0 elsewhere.
 * Normalising per batch keeps the policy-gradient step size independent of the reward scale
 * (as OpenAI baselines / TRL do); `shiftMean: false` keeps the mean.
 */
export function whitenAdvantages(advantages: ArrayLike, mask: ArrayLike, opts: { shiftMean?: boolean } = {}): Value {
  return maskedWhiten(advantages, mask, { shiftMean: opts.shiftMean });
}

/**
 * @file KL divergence between the policy and the frozen reference model, estimated per token from
 * samples of the policy, and the adaptive KL coefficient of Ziegler et al. Read `klEstimate` first.
 *
 * RLHF keeps the policy near the supervised (SFT) model by paying −β·KL(π‖π_ref) per token. The exact KL
 * needs the whole vocabulary at every position; with samples x ~ π the usual estimators use only the
 * log-probs of the sampled tokens (J. Schulman, "Approximating KL Divergence",
 * http://joschu.net/blog/kl-approx.html). With log r = log π_ref(x) − log π(x):
 *   k1 = −log r              unbiased, high variance, can be negative per token;
 *   k2 = ½ (log r)²          biased (its gradient is the KL's to first order), always ≥ 0;
 *   k3 = (r − 1) − log r     unbiased and always ≥ 0 (log r ≤ r − 1), lower variance than k1.
 * All are 0 where the two log-probs agree. In the PPO reward they are computed from stored (concrete)
 * log-probs, so no gradient flows through them; GRPO puts k3 in its loss, where its gradient is wanted.
 */
import type { Value } from "../autodiff/core.js";
import { isFloat, shapeStr } from "../autodiff/aval.js";
import { ArgumentError, DTypeError, ShapeError } from "../autodiff/errors.js";
import * as np from "../ops/np.js";
import type { ArrayLike } from "../ops/np.js";

/** The per-token KL estimators (see the file comment). */
export type KlEstimator = "k1" | "k2" | "k3";

const ESTIMATORS: readonly KlEstimator[] = ["k1", "k2", "k3"];

/**
 * Per-token estimate of KL(π‖π_ref) at tokens sampled from π: `logp` = log π(x), `refLogp` =
 * log π_ref(x), same shape (any), float. Elementwise; average (masked) over tokens or sum over a
 * sequence for the KL of the whole response.
 */
export function klEstimate(logp: ArrayLike, refLogp: ArrayLike, kind: KlEstimator): Value {
  if (!ESTIMATORS.includes(kind)) {
    throw new ArgumentError(`klEstimate: kind must be one of ${ESTIMATORS.map((e) => `"${e}"`).join(", ")}, got ${JSON.stringify(kind)}`);
  }
  const lp = np.asArray(logp, "klEstimate");
  const rp = np.asArray(refLogp, "klEstimate");
  for (const [what, v] of [["logp", lp], ["refLogp", rp]] as const) {
    if (!isFloat(v.aval.dtype)) throw new DTypeError(`klEstimate: ${what} must be float log-probabilities, got ${v.aval.dtype}`);
  }
  const sa = lp.aval.shape;
  const sb = rp.aval.shape;
  if (sa.length !== sb.length || sa.some((d, i) => d !== sb[i])) {
    throw new ShapeError(`klEstimate: logp and refLogp must have the same shape, got ${shapeStr(sa)} and ${shapeStr(sb)}`);
  }
  const logRatio = np.subtract(rp, lp); // log π_ref(x) − log π(x)
  switch (kind) {
    case "k1":
      return np.negative(logRatio);
    case "k2":
      return np.multiply(0.5, np.square(logRatio));
    case "k3":
      // expm1 keeps (r − 1) accurate when r ≈ 1, where the estimate is a small difference.
      return np.subtract(np.expm1(logRatio), logRatio);
  }
}

export interface AdaptiveKlOptions {
  /** The starting coefficient β (TRL: 0.2). */
  init: number;
  /** The KL (per sequence, in nats) to steer towards (TRL: 6). */
  target: number;
  /** How many samples it takes to move β by the full proportional error (TRL: 10000). */
  horizon: number;
}

/**
 * Adaptive KL coefficient (Ziegler et al., "Fine-Tuning Language Models from Human Preferences",
 * https://arxiv.org/abs/1909.08593, §2.2): a proportional controller that raises β when the measured
 * KL is above `target` and lowers it below, e_t = clip(KL_t / target − 1, −0.2, 0.2),
 * β ← β·(1 + e_t·n/horizon) with n the number of samples behind KL_t. Clipping e bounds each step, so
 * one noisy batch cannot swing β far.
 */
export class AdaptiveKlController {
  private beta: number;
  readonly target: number;
  readonly horizon: number;

  constructor(opts: AdaptiveKlOptions) {
    if (typeof opts !== "object" || opts === null) throw new ArgumentError(`AdaptiveKlController: options must be { init, target, horizon }, got ${String(opts)}`);
    const { init, target, horizon } = opts;
    if (!(typeof init === "number" && Number.isFinite(init) && init >= 0)) {
      throw new ArgumentError(`AdaptiveKlController: init must be a finite number >= 0, got ${String(init)}`);
    }
    if (!(typeof target === "number" && Number.isFinite(target) && target > 0)) {
      throw new ArgumentError(`AdaptiveKlController: target must be a finite number > 0, got ${String(target)}`);
    }
    if (!(typeof horizon === "number" && Number.isFinite(horizon) && horizon > 0)) {
      throw new ArgumentError(`AdaptiveKlController: horizon must be a finite number > 0, got ${String(horizon)}`);
    }
    this.beta = init;
    this.target = target;
    this.horizon = horizon;
  }

  /** The current coefficient β. */
  get value(): number {
    return this.beta;
  }

  /** Moves β after a batch of `nSteps` samples whose mean KL (per sequence) was `currentKl`. */
  update(currentKl: number, nSteps: number): void {
    if (typeof currentKl !== "number" || Number.isNaN(currentKl)) {
      throw new ArgumentError(`AdaptiveKlController.update: currentKl must be a number, got ${String(currentKl)}\nTip: read it with await x.item()`);
    }
    if (!(typeof nSteps === "number" && Number.isFinite(nSteps) && nSteps >= 0)) {
      throw new ArgumentError(`AdaptiveKlController.update: nSteps must be a finite number >= 0, got ${String(nSteps)}`);
    }
    const error = Math.min(Math.max(currentKl / this.target - 1, -0.2), 0.2);
    this.beta *= 1 + (error * nSteps) / this.horizon;
  }
}

/** A constant β with the controller's interface (TRL's FixedKLController), for code that takes either. */
export class FixedKlController {
  readonly value: number;
  constructor(value: number) {
    if (!(typeof value === "number" && Number.isFinite(value) && value >= 0)) {
      throw new ArgumentError(`FixedKlController: value must be a finite number >= 0, got ${String(value)}`);
    }
    this.value = value;
  }
  update(_currentKl: number, _nSteps: number): void {}
}

/**
 * @file Direct preference optimisation (DPO, Rafailov et al., https://arxiv.org/abs/2305.18290): train
 * the policy on the reward model's preference pairs directly, without a reward model or RL loop. Its
 * loss is Bradley–Terry on the *implicit* reward β·log(π/π_ref) of each response, so the optimum of
 * the KL-regularised RLHF objective is reached by a classification loss.
 *
 * Read first: `dpoLoss` (the loss on summed response log-probs), then `responseLogProb` (those sums
 * from a PaLM) and `dpoStepLoss` (one training step's loss as a pure function of (trainable, frozen)
 * params, for `valueAndGrad(..., { hasAux: true })`). Variants: conservative DPO (cDPO, label
 * smoothing ε: the labels are flipped with probability ε, https://ericmitchell.ai/cdpo.pdf) and IPO
 * (Azar et al., https://arxiv.org/abs/2310.12036: a squared loss that keeps the log-ratio margin at
 * 1/(2β) instead of pushing it to infinity on deterministic preferences).
 *
 * Data: a `PreferenceBatch` from src/rl/reward.ts (rows 0..b-1 prompt+chosen, rows b..2b-1
 * prompt+rejected, right-padded), so one forward pass scores both sides.
 */
import type { Value } from "../autodiff/core.js";
import { isFloat, isInt, shapeStr } from "../autodiff/aval.js";
import { ArgumentError, DTypeError, ShapeError } from "../autodiff/errors.js";
import { stopGradient } from "../ops/lax/elementwise.js";
import { Array } from "../ops/array.js";
import * as np from "../ops/np.js";
import type { ArrayLike } from "../ops/np.js";
import type * as random from "../ops/random.js";
import { logSigmoid } from "../nn/activations.js";
import { combine } from "../nn/optim.js";
import * as palm from "../nn/palm.js";
import type { LoraParams, PalmConfig, PalmParams } from "../nn/palm.js";
import { maskedMean, maskedSum, responseMask, sequenceLogProbs } from "./common.js";
import { splitPairs } from "./reward.js";
import type { PreferenceBatch } from "./reward.js";

// ---------------------------------------------------------------------------------------------------
// The loss

export interface DpoLossOptions {
  /** β, the strength of the implicit KL penalty to the reference (default 0.1, as the paper). */
  beta?: number;
  /** cDPO's ε in [0, 0.5): the probability that a label is flipped (default 0; sigmoid loss only). */
  labelSmoothing?: number;
  /** "sigmoid" (DPO, default) or "ipo". */
  kind?: "sigmoid" | "ipo";
}

export interface DpoLossResult {
  /** Mean loss over the pairs (differentiable). */
  loss: Value;
  /** Implicit rewards β·(log π - log π_ref) per pair, [b]; metrics (gradients stopped). */
  chosenReward: Value;
  rejectedReward: Value;
  /** Fraction of pairs whose implicit chosen reward is strictly above the rejected one. */
  accuracy: Value;
}

function checkLossOptions(name: string, opts: DpoLossOptions): { beta: number; eps: number; kind: "sigmoid" | "ipo" } {
  const beta = opts.beta ?? 0.1;
  if (typeof beta !== "number" || !(beta > 0) || !Number.isFinite(beta)) throw new ArgumentError(`${name}: beta must be a positive number, got ${String(beta)}`);
  const eps = opts.labelSmoothing ?? 0;
  if (typeof eps !== "number" || !(eps >= 0 && eps < 0.5)) {
    throw new ArgumentError(`${name}: labelSmoothing must be in [0, 0.5), got ${String(eps)}\nTip: ε ≥ 0.5 would reverse the preferences`);
  }
  const kind = opts.kind ?? "sigmoid";
  if (kind !== "sigmoid" && kind !== "ipo") throw new ArgumentError(`${name}: kind must be "sigmoid" or "ipo", got ${JSON.stringify(kind)}`);
  if (kind === "ipo" && eps !== 0) {
    throw new ArgumentError(`${name}: labelSmoothing applies to the sigmoid loss only, got ${eps} with kind "ipo"\nTip: IPO is already robust to noisy labels; drop labelSmoothing`);
  }
  return { beta, eps, kind };
}

/**
 * The DPO loss from the summed response log-probs of the policy and the reference (each [b], or any
 * common shape, scalars included so a per-pair loss vmaps). With h = (πc - refc) - (πr - refr):
 *   sigmoid: -(1-ε)·log σ(β·h) - ε·log σ(-β·h)     (ε = 0: DPO's eq. 7; ε > 0: cDPO)
 *   ipo:     (h - 1/(2β))²                          (IPO's eq. 17; pass per-token *mean* log-probs, as TRL)
 * The loss is the mean over pairs; the implicit rewards β·(π - ref) and the accuracy are metrics.
 */
export function dpoLoss(
  policyChosen: ArrayLike,
  policyRejected: ArrayLike,
  refChosen: ArrayLike,
  refRejected: ArrayLike,
  opts: DpoLossOptions & { reduction?: "mean" | "none" } = {},
): DpoLossResult {
  const name = "dpoLoss";
  const { beta, eps, kind } = checkLossOptions(name, opts);
  const names = ["policyChosen", "policyRejected", "refChosen", "refRejected"];
  const [pc, pr, rc, rr] = [policyChosen, policyRejected, refChosen, refRejected].map((x, i) => {
    const v = np.asArray(x, name);
    if (!isFloat(v.aval.dtype)) throw new DTypeError(`${name}: ${names[i]} must be float32 or float64 log-probs, got ${v.aval.dtype}`);
    return v;
  }) as [Value, Value, Value, Value];
  for (const [i, v] of [pr, rc, rr].entries()) {
    const s = v.aval.shape;
    if (s.length !== pc.aval.ndim || s.some((d, k) => d !== pc.aval.shape[k])) {
      throw new ShapeError(`${name}: ${names[i + 1]} must have policyChosen's shape ${shapeStr(pc.aval.shape)}, got ${shapeStr(s)}`);
    }
  }
  const chosenRatio = np.subtract(pc, rc); // log π(yc|x)/π_ref(yc|x)
  const rejectedRatio = np.subtract(pr, rr);
  const h = np.subtract(chosenRatio, rejectedRatio);
  let perPair: Value;
  if (kind === "ipo") {
    perPair = np.square(np.subtract(h, 1 / (2 * beta)));
  } else {
    const z = np.multiply(h, beta);
    perPair = np.negative(logSigmoid(z));
    if (eps > 0) perPair = np.subtract(np.multiply(perPair, 1 - eps), np.multiply(logSigmoid(np.negative(z)), eps));
  }
  const reduction = opts.reduction ?? "mean";
  if (reduction !== "mean" && reduction !== "none") throw new ArgumentError(`${name}: reduction must be "mean" or "none", got ${JSON.stringify(reduction)}`);
  const chosenReward = stopGradient(np.multiply(chosenRatio, beta));
  const rejectedReward = stopGradient(np.multiply(rejectedRatio, beta));
  return {
    loss: reduction === "mean" ? np.mean(perPair) : perPair,
    chosenReward,
    rejectedReward,
    accuracy: np.mean(np.astype(np.greater(chosenReward, rejectedReward), chosenReward.aval.dtype)),
  };
}

// ---------------------------------------------------------------------------------------------------
// Log-probs of responses

export interface ResponseLogProbOptions {
  /** [b] int32: tokens before promptLengths[i] are the prompt (not scored). Must be >= 1. */
  promptLengths: ArrayLike;
  /** [b] int32: tokens at or after totalLengths[i] are padding (default: none). */
  totalLengths?: ArrayLike;
  config: PalmConfig;
  lora?: LoraParams | null;
  loraScope?: string | null;
  /** Mean instead of sum over the response tokens (IPO's length normalisation, as TRL). */
  average?: boolean;
  /** Dropout key for the model (dropout runs only with one). */
  key?: random.Key | null;
}

/**
 * log π(response | prompt) for each row of tokens [b, n]: the sum (or mean, `average`) over response
 * tokens promptLengths[i] <= t < totalLengths[i] of log p(token t | tokens before t). Returns [b].
 * Padding after totalLengths is masked from attention too (it matters for non-causal models). A row
 * whose prompt is empty cannot score its first token (nothing predicts it); prompts need >= 1 token.
 */
export function responseLogProb(params: PalmParams, tokens: ArrayLike, opts: ResponseLogProbOptions): Value {
  const name = "responseLogProb";
  if (typeof opts !== "object" || opts === null || opts.promptLengths === undefined) {
    throw new ArgumentError(`${name}: opts.promptLengths is required\nTip: responseLogProb(params, tokens, { promptLengths, totalLengths, config })`);
  }
  if (!palm.resolveConfig(opts.config).causal) {
    throw new ArgumentError(`${name}: needs a causal (autoregressive) model, got config.causal false\nTip: a bidirectional model sees the token it would predict, so its log-probs are not a policy's`);
  }
  const t = np.asArray(tokens, name);
  if (!isInt(t.aval.dtype)) throw new DTypeError(`${name}: tokens must be integers (int32), got ${t.aval.dtype}\nTip: np.array(ids, { dtype: "int32" })`);
  if (t.aval.ndim !== 2) throw new ShapeError(`${name}: tokens must be [batch, seq], got ${t.aval.str()}`);
  const [b, n] = t.aval.shape as [number, number];
  if (n < 2) throw new ShapeError(`${name}: needs at least 2 tokens per row (a prompt token and a response token), got ${t.aval.str()}`);
  const pl = np.asArray(opts.promptLengths, name);
  if (!isInt(pl.aval.dtype) || pl.aval.ndim !== 1 || pl.aval.shape[0] !== b) {
    throw new ShapeError(`${name}: promptLengths must be int32 [${b}], got ${pl.aval.str()}`);
  }
  checkHost(name, "promptLengths", opts.promptLengths, 1, n);
  let tl: Value | undefined;
  if (opts.totalLengths !== undefined) {
    tl = np.asArray(opts.totalLengths, name);
    if (!isInt(tl.aval.dtype) || tl.aval.ndim !== 1 || tl.aval.shape[0] !== b) {
      throw new ShapeError(`${name}: totalLengths must be int32 [${b}], got ${tl.aval.str()}`);
    }
    checkHost(name, "totalLengths", opts.totalLengths, 1, n);
  }
  const padMask = tl === undefined ? null : np.less(np.expandDims(np.arange(0, n, 1, { dtype: "int32" }), 0), np.expandDims(tl, 1)); // [1, n] < [b, 1] -> [b, n]
  const logits = palm.apply(params, t, { config: opts.config, lora: opts.lora ?? null, loraScope: opts.loraScope ?? null, mask: padMask, key: opts.key ?? null }); // [b, n, V]
  const logp = sequenceLogProbs(logits, t); // [b, n-1]: entry t scores token t+1
  const actions = responseMask(pl, n, { totalLengths: tl, forActions: true }); // [b, n-1]
  return opts.average ? maskedMean(logp, actions, { axis: 1 }) : maskedSum(logp, actions, { axis: 1 }); // [b]
}

/** Range check of concrete CPU values (traced / device values are the caller's contract). */
function checkHost(name: string, what: string, x: ArrayLike, lo: number, hi: number): void {
  let vals: number[] | null = null;
  if (x instanceof Array) {
    if (x.device.backend.readSync) vals = globalThis.Array.from(x.dataSync() as globalThis.ArrayLike<number>, Number);
  } else if (globalThis.Array.isArray(x)) {
    vals = (x as unknown[]).flat(Infinity).map(Number);
  }
  const bad = vals?.find((v) => !(v >= lo && v <= hi));
  if (bad !== undefined) throw new ArgumentError(`${name}: ${what} must lie in [${lo}, ${hi}], got ${bad}`);
}

// ---------------------------------------------------------------------------------------------------
// The training step's loss

export interface DpoConfig extends DpoLossOptions {
  /** The policy's PaLM config. */
  palm: PalmConfig;
  /**
   * The policy's LoRA scope (default null: full fine-tuning). With a scope, the frozen base model
   * *is* the reference (the adapter switched off), so no second copy of the weights is needed.
   */
  loraScope?: string | null;
  /** Length-normalised (mean per token) log-probs; default true for IPO, false for DPO (as TRL). */
  averageLogProbs?: boolean;
}

/** The policy being trained: a PaLM and, for LoRA fine-tuning, its LoRA tree. */
export interface DpoParams {
  palm: PalmParams;
  lora: LoraParams | null;
}

/** A preference batch, optionally with the reference's log-probs of its 2b rows (from `referenceLogProbs`). */
export type DpoBatch = PreferenceBatch & { refLogProbs?: Value };

export interface DpoStepAux {
  accuracy: Value;
  /** Mean implicit rewards of the chosen / rejected responses, and their difference. */
  chosenReward: Value;
  rejectedReward: Value;
  margin: Value;
  /** Mean policy log-probs of the chosen / rejected responses. */
  policyChosenLogProb: Value;
  policyRejectedLogProb: Value;
}

function resolveScope(config: DpoConfig): string | null {
  const s = config.loraScope ?? null;
  if (s !== null && (typeof s !== "string" || s === "")) throw new ArgumentError(`dpo: config.loraScope must be a non-empty string or null, got ${JSON.stringify(s)}`);
  return s;
}

/** Which leaves of `DpoParams` DPO trains (for `optim.partition`): the LoRA scope only, or the whole PaLM. */
export function trainableMask(params: DpoParams, config: DpoConfig): unknown {
  const scope = resolveScope(config);
  if (scope === null) return { palm: true, lora: false };
  if (!params.lora || !(scope in params.lora)) {
    throw new ArgumentError(`dpo.trainableMask: params.lora must hold the "${scope}" scope, got ${params.lora ? JSON.stringify(Object.keys(params.lora)) : "null"}\nTip: lora.init(key, config, { scopes: ["${scope}"] })`);
  }
  const loraMask: Record<string, boolean> = {};
  for (const k of Object.keys(params.lora)) loraMask[k] = k === scope;
  return { palm: false, lora: loraMask };
}

const useAverage = (config: DpoConfig): boolean => config.averageLogProbs ?? (config.kind ?? "sigmoid") === "ipo";

function checkBatch(name: string, batch: DpoBatch): void {
  if (typeof batch !== "object" || batch === null || typeof batch.numPairs !== "number" || !batch.tokens || !batch.promptLengths) {
    throw new ArgumentError(`${name}: batch must be a PreferenceBatch (from preferenceBatch)`);
  }
}

/**
 * The reference model's response log-probs of a batch's 2b rows ([2b], gradients stopped): compute
 * them once per batch (or once per dataset) and pass them as `batch.refLogProbs` to `dpoStepLoss`.
 */
export function referenceLogProbs(reference: PalmParams, batch: PreferenceBatch, config: DpoConfig): Value {
  checkBatch("dpo.referenceLogProbs", batch);
  const lp = responseLogProb(reference, batch.tokens, {
    promptLengths: batch.promptLengths,
    totalLengths: batch.totalLengths,
    config: config.palm,
    average: useAverage(config),
  });
  return stopGradient(lp);
}

/**
 * The loss of one DPO step as a pure function of the trainable and frozen halves of the policy
 * (`optim.partition(policy, trainableMask(policy, config))`), for
 * `valueAndGrad(dpoStepLoss, { hasAux: true })(trainable, frozen, batch, config)` → `[[loss, aux], grads]`.
 * The reference log-probs are `batch.refLogProbs` when given; otherwise, with a LoRA scope, the base
 * model with the adapter off (gradients stopped). Full fine-tuning without `refLogProbs` is an error
 * (the policy's own weights are not a fixed reference).
 */
export function dpoStepLoss(trainable: DpoParams, frozen: DpoParams, batch: DpoBatch, config: DpoConfig, opts: { key?: random.Key | null } = {}): [Value, DpoStepAux] {
  const name = "dpoStepLoss";
  checkBatch(name, batch);
  const scope = resolveScope(config);
  checkLossOptions(name, config);
  const policy = combine(trainable, frozen);
  const average = useAverage(config);
  const lp = responseLogProb(policy.palm, batch.tokens, {
    promptLengths: batch.promptLengths,
    totalLengths: batch.totalLengths,
    config: config.palm,
    lora: policy.lora,
    loraScope: scope,
    average,
    key: opts.key,
  }); // [2b]
  let ref: Value;
  if (batch.refLogProbs !== undefined) {
    ref = np.asArray(batch.refLogProbs, name);
    if (ref.aval.ndim !== 1 || ref.aval.shape[0] !== lp.aval.shape[0]) {
      throw new ShapeError(`${name}: batch.refLogProbs must be [${lp.aval.shape[0]}] (one per row), got ${ref.aval.str()}`);
    }
    ref = stopGradient(np.astype(ref, lp.aval.dtype));
  } else if (scope !== null) {
    ref = stopGradient(
      responseLogProb(policy.palm, batch.tokens, { promptLengths: batch.promptLengths, totalLengths: batch.totalLengths, config: config.palm, average }),
    );
  } else {
    throw new ArgumentError(
      `${name}: full fine-tuning (config.loraScope null) needs batch.refLogProbs\nTip: batch.refLogProbs = referenceLogProbs(sftParams, batch, config) before training`,
    );
  }
  const [pc, pr] = splitPairs(lp);
  const [rc, rr] = splitPairs(ref);
  const out = dpoLoss(pc, pr, rc, rr, config);
  const chosenReward = np.mean(out.chosenReward);
  const rejectedReward = np.mean(out.rejectedReward);
  return [
    out.loss,
    {
      accuracy: out.accuracy,
      chosenReward,
      rejectedReward,
      margin: np.subtract(chosenReward, rejectedReward),
      policyChosenLogProb: stopGradient(np.mean(pc)),
      policyRejectedLogProb: stopGradient(np.mean(pr)),
    },
  ];
}

/**
 * @file PPO for RLHF (actor-critic, per-token KL penalty to a frozen reference, GAE), as pure loss
 * functions plus one impure driver. Read `tokenRewards` (what the policy is paid), `clippedSurrogate`
 * and `clippedValueLoss` (the per-token terms), `ppoLoss` (the minibatch loss, a pure function of
 * (trainable, frozen, batch)), then `ppoUpdate` (epochs of shuffled minibatches, each one a jitted
 * `valueAndGrad` step with gradient clipping and Adam) and `initPpo`.
 *
 * Against the known bugs of PaLM-rlhf-pytorch (see /work/shared/ANCHORS.md): the KL is to the frozen
 * reference (SFT) model and enters the reward as data (computed from stored log-probs, so never
 * differentiated); every average is over response tokens only (`actionMask`), never over prompt or
 * padding; per-token log-probs are aligned per row (src/rl/rollout.ts); the entropy *bonus* is
 * −entropyCoef·H added to the loss we minimise (so entropy is maximised); advantages come from GAE.
 */
import type { Value } from "../autodiff/core.js";
import { shapeStr } from "../autodiff/aval.js";
import { ArgumentError, ShapeError } from "../autodiff/errors.js";
import { jit } from "../autodiff/jit.js";
import { valueAndGrad } from "../autodiff/transpose.js";
import { stopGradient } from "../ops/lax/elementwise.js";
import { Array } from "../ops/array.js";
import { dispose } from "../ops/memory.js";
import * as tree from "../autodiff/tree.js";
import * as np from "../ops/np.js";
import type { ArrayLike } from "../ops/np.js";
import * as random from "../ops/random.js";
import * as lora from "../nn/lora.js";
import * as optim from "../nn/optim.js";
import type { LoraParams, PalmConfig, PalmParams } from "../nn/palm.js";
import { maskAsFloat, maskedMean, maskedSum } from "./common.js";
import { gae, whitenAdvantages } from "./advantages.js";
import { AdaptiveKlController, klEstimate } from "./kl.js";
import type { KlEstimator } from "./kl.js";
import { checkRollout, joinPolicy, policyOutputs, splitPolicy, trainableMask } from "./rollout.js";
import type { PolicyModel, PolicyOutputs, PolicySpec, PolicyWeights, Rollout, ValueHead } from "./rollout.js";

export type { PolicyModel, PolicyWeights, PolicySpec, ValueHead, Rollout } from "./rollout.js";

// ---------------------------------------------------------------------------------------------------
// Config

export interface PpoConfig {
  /** Passes over each rollout batch (default 4). */
  epochs: number;
  /** Sequences per minibatch (default 8; the last minibatch of an epoch may be smaller). */
  minibatchSize: number;
  /** ε of the clipped probability ratio (default 0.2). */
  clipEps: number;
  /** Values may move at most this far from the rollout's values before the loss stops pulling (default 0.2); null: no clipping. */
  valueClip: number | null;
  /** Weight of the value loss (default 0.5; the critic shares the loss with the actor). */
  vfCoef: number;
  /** Weight of the entropy bonus (default 0.01): the loss gets −entropyCoef·H. */
  entropyCoef: number;
  /** β of the per-token KL penalty to the reference (default 0.1); the initial β with adaptiveKl. */
  klCoef: number;
  /** The per-token KL estimator in the reward (default "k1", as TRL). */
  klEstimator: KlEstimator;
  /** Ziegler et al.'s adaptive β (target KL per sequence, horizon in samples), or null for a fixed β. */
  adaptiveKl?: { target: number; horizon: number } | null;
  /** Discount γ (default 1). */
  gamma: number;
  /** GAE λ (default 0.95). */
  lambda: number;
  /** Whiten the advantages over the batch's response tokens (default true). */
  whitenAdvantages: boolean;
  /** Clip the scores to [-rewardClip, rewardClip] (after normalisation), or null (default). */
  rewardClip?: number | null;
  /** Whiten the scores over the batch (mean 0, std 1) before use (default false). */
  normalizeRewards?: boolean;
  /** Clip the gradient's global l2 norm (default 1); null or 0: no clipping. */
  maxGradNorm: number | null;
  /** Adam's learning rate (default 1e-4, as PaLM-rlhf-pytorch). */
  learningRate: number;
}

export const defaultPpoConfig: PpoConfig = {
  epochs: 4,
  minibatchSize: 8,
  clipEps: 0.2,
  valueClip: 0.2,
  vfCoef: 0.5,
  entropyCoef: 0.01,
  klCoef: 0.1,
  klEstimator: "k1",
  adaptiveKl: null,
  gamma: 1,
  lambda: 0.95,
  whitenAdvantages: true,
  rewardClip: null,
  normalizeRewards: false,
  maxGradNorm: 1,
  learningRate: 1e-4,
};

/** The defaults with `cfg` on top, checked (named errors for bad values). */
export function resolvePpoConfig(cfg: Partial<PpoConfig> = {}): PpoConfig {
  if (typeof cfg !== "object" || cfg === null) throw new ArgumentError(`ppo: config must be an object, got ${String(cfg)}`);
  const c: PpoConfig = { ...defaultPpoConfig };
  for (const [k, v] of Object.entries(cfg)) if (v !== undefined) (c as unknown as Record<string, unknown>)[k] = v;
  const num = (k: keyof PpoConfig, lo: number, hi = Infinity, lowOpen = false): void => {
    const v = c[k];
    if (!(typeof v === "number" && Number.isFinite(v) && (lowOpen ? v > lo : v >= lo) && v <= hi)) {
      throw new ArgumentError(`ppo: config.${k} must be a number ${lowOpen ? ">" : ">="} ${lo}${hi < Infinity ? ` and <= ${hi}` : ""}, got ${JSON.stringify(v)}`);
    }
  };
  const posInt = (k: keyof PpoConfig): void => {
    const v = c[k];
    if (!(typeof v === "number" && Number.isInteger(v) && v >= 1)) throw new ArgumentError(`ppo: config.${k} must be a positive integer, got ${JSON.stringify(v)}`);
  };
  posInt("epochs");
  posInt("minibatchSize");
  num("clipEps", 0, Infinity, true);
  if (c.valueClip !== null) num("valueClip", 0, Infinity, true);
  num("vfCoef", 0);
  num("entropyCoef", 0);
  num("klCoef", 0);
  num("gamma", 0, 1);
  num("lambda", 0, 1);
  num("learningRate", 0, Infinity, true);
  if (c.maxGradNorm !== null && c.maxGradNorm !== 0) num("maxGradNorm", 0, Infinity, true);
  if (c.rewardClip !== null && c.rewardClip !== undefined) num("rewardClip", 0, Infinity, true);
  if (!["k1", "k2", "k3"].includes(c.klEstimator)) throw new ArgumentError(`ppo: config.klEstimator must be "k1", "k2" or "k3", got ${JSON.stringify(c.klEstimator)}`);
  if (typeof c.whitenAdvantages !== "boolean") throw new ArgumentError(`ppo: config.whitenAdvantages must be a boolean, got ${JSON.stringify(c.whitenAdvantages)}`);
  if (c.adaptiveKl !== null && c.adaptiveKl !== undefined) {
    // The controller checks target and horizon with its own named errors.
    new AdaptiveKlController({ init: c.klCoef, ...c.adaptiveKl });
  }
  return c;
}

// ---------------------------------------------------------------------------------------------------
// Rewards

function sameShape(what: string, names: string[], xs: Value[]): void {
  const s0 = xs[0]!.aval.shape;
  xs.forEach((x, i) => {
    const s = x.aval.shape;
    if (s.length !== s0.length || s.some((d, j) => d !== s0[j])) {
      throw new ShapeError(`${what}: ${names[i]} must have ${names[0]}'s shape ${shapeStr(s0)}, got ${shapeStr(s)}`);
    }
  });
}

/** [..., T] float: 1 at the last position where `mask` is set in each row, 0 elsewhere (any mask, not only contiguous). */
export function lastMaskedPosition(mask: Value): Value {
  const T = mask.aval.shape[mask.aval.ndim - 1]!;
  const pos = np.arange(1, T + 1, 1, { dtype: "int32" }); // [T]: 1-based, so an empty row has max 0
  const last = np.max(np.multiply(np.astype(np.greater(mask, 0), "int32"), pos), { axis: -1, keepdims: true }); // [..., 1]
  return np.astype(np.equal(pos, last), mask.aval.dtype); // [..., T]; never 1 for an empty row (pos >= 1)
}

/**
 * The per-token reward of RLHF (Ziegler et al., https://arxiv.org/abs/1909.08593; Stiennon et al.
 * https://arxiv.org/abs/2009.01325): r_t = −β·KL_t at every response token, plus the sequence's score at
 * its last response token. logProbs / refLogProbs / mask [b, T], scores [b]. The KL uses the given
 * (stored) log-probs, so it is data: nothing is differentiated through it. Returns the rewards [b, T]
 * (0 outside the mask) and the per-token KL estimate [b, T] (0 outside the mask).
 */
export function tokenRewards(
  scores: ArrayLike,
  logProbs: ArrayLike,
  refLogProbs: ArrayLike,
  mask: ArrayLike,
  opts: { klCoef: number; klEstimator?: KlEstimator },
): { rewards: Value; kl: Value } {
  const lp = stopGradient(np.asArray(logProbs, "tokenRewards"));
  const rp = stopGradient(np.asArray(refLogProbs, "tokenRewards"));
  const s = np.asArray(scores, "tokenRewards");
  if (!(typeof opts?.klCoef === "number" && Number.isFinite(opts.klCoef) && opts.klCoef >= 0)) {
    throw new ArgumentError(`tokenRewards: klCoef must be a finite number >= 0, got ${String(opts?.klCoef)}`);
  }
  sameShape("tokenRewards", ["logProbs", "refLogProbs"], [lp, rp]);
  if (lp.aval.ndim < 1 || s.aval.ndim !== lp.aval.ndim - 1 || s.aval.shape.some((d, i) => d !== lp.aval.shape[i])) {
    throw new ShapeError(`tokenRewards: scores must be one per row of logProbs ${shapeStr(lp.aval.shape)}, got ${shapeStr(s.aval.shape)}`);
  }
  const m = maskAsFloat("tokenRewards", mask, lp);
  const kl = np.multiply(klEstimate(lp, rp, opts.klEstimator ?? "k1"), m);
  const atEnd = np.multiply(lastMaskedPosition(m), np.expandDims(np.astype(stopGradient(s), lp.aval.dtype), -1)); // [..., T]
  return { rewards: np.add(np.multiply(-opts.klCoef, kl), atEnd), kl };
}

/** Scores after the optional normalisation (batch whitening) and clipping of a PpoConfig. */
export function processScores(scores: ArrayLike, cfg: Pick<PpoConfig, "normalizeRewards" | "rewardClip">): Value {
  let s = np.asArray(scores, "processScores");
  if (cfg.normalizeRewards) {
    const n = s.aval.size;
    const mean = np.mean(s);
    const std = np.std(s, { ddof: n > 1 ? 1 : 0 });
    s = np.divide(np.subtract(s, mean), np.add(std, 1e-8));
  }
  if (cfg.rewardClip !== null && cfg.rewardClip !== undefined) s = np.clip(s, -cfg.rewardClip, cfg.rewardClip);
  return s;
}

// ---------------------------------------------------------------------------------------------------
// Per-token loss terms

/**
 * PPO's clipped surrogate per token (Schulman et al., https://arxiv.org/abs/1707.06347, eq. 7), as a
 * loss to minimise: max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)) with ρ = exp(logp − oldLogp). The pessimistic max
 * removes the incentive to move ρ outside [1−ε, 1+ε] in the direction the advantage favours, so the
 * gradient is zero there and equal to the unclipped −A·∇ρ elsewhere: a cheap trust region.
 */
export function clippedSurrogate(logp: ArrayLike, oldLogp: ArrayLike, advantages: ArrayLike, clipEps: number): Value {
  if (!(typeof clipEps === "number" && clipEps > 0 && Number.isFinite(clipEps))) throw new ArgumentError(`clippedSurrogate: clipEps must be a number > 0, got ${String(clipEps)}`);
  const lp = np.asArray(logp, "clippedSurrogate");
  const old = np.asArray(oldLogp, "clippedSurrogate");
  const adv = np.asArray(advantages, "clippedSurrogate");
  sameShape("clippedSurrogate", ["logp", "oldLogp", "advantages"], [lp, old, adv]);
  const ratio = np.exp(np.subtract(lp, stopGradient(old)));
  const a = stopGradient(adv);
  const unclipped = np.multiply(np.negative(a), ratio);
  const clipped = np.multiply(np.negative(a), np.clip(ratio, 1 - clipEps, 1 + clipEps));
  return np.maximum(unclipped, clipped);
}

/**
 * The critic's loss per token: ½(V − R)², and with `valueClip` the pessimistic
 * ½·max((V − R)², (V_clipped − R)²) where V_clipped = V_old + clip(V − V_old, −c, c) (PPO2 in OpenAI
 * baselines, https://github.com/openai/baselines), which limits how far one update moves the values.
 */
export function clippedValueLoss(values: ArrayLike, oldValues: ArrayLike, returns: ArrayLike, valueClip: number | null): Value {
  const v = np.asArray(values, "clippedValueLoss");
  const old = stopGradient(np.asArray(oldValues, "clippedValueLoss"));
  const ret = stopGradient(np.asArray(returns, "clippedValueLoss"));
  sameShape("clippedValueLoss", ["values", "oldValues", "returns"], [v, old, ret]);
  const plain = np.square(np.subtract(v, ret));
  if (valueClip === null) return np.multiply(0.5, plain);
  if (!(typeof valueClip === "number" && valueClip > 0)) throw new ArgumentError(`clippedValueLoss: valueClip must be a number > 0 or null, got ${String(valueClip)}`);
  const vClipped = np.add(old, np.clip(np.subtract(v, old), -valueClip, valueClip));
  return np.multiply(0.5, np.maximum(plain, np.square(np.subtract(vClipped, ret))));
}

// ---------------------------------------------------------------------------------------------------
// The minibatch loss

/** One minibatch of PPO training data: per-token arrays [b, n-1] (or [n-1] per example), tokens [b, n]. */
export interface PpoBatch {
  tokens: Value;
  actionMask: Value;
  oldLogProbs: Value;
  oldValues: Value;
  advantages: Value;
  returns: Value;
}

export interface PpoLossStats {
  policyLoss: Value;
  valueLoss: Value;
  entropy: Value;
  /** KL(old‖new) ≈ mean(ρ − 1 − log ρ) (k3), how far this update has moved the policy. */
  approxKl: Value;
  /** Fraction of response tokens whose ratio is outside [1−ε, 1+ε]. */
  clipFrac: Value;
}

/**
 * The PPO loss from the policy's outputs on a batch: policyLoss + vfCoef·valueLoss − entropyCoef·entropy,
 * each averaged over the response tokens (`actionMask`) only. With `reduction: "sum"` every term is
 * summed over the tokens instead, so per-example sums add up to the batch's (the mean is sum / count).
 * Works on any leading shape (so on one example under `vmap`).
 */
export function ppoLossFromOutputs(
  out: PolicyOutputs,
  batch: PpoBatch,
  cfg: Pick<PpoConfig, "clipEps" | "valueClip" | "vfCoef" | "entropyCoef">,
  opts: { reduction?: "mean" | "sum" } = {},
): { loss: Value; stats: PpoLossStats } {
  const reduce = opts.reduction === "sum" ? maskedSum : opts.reduction === undefined || opts.reduction === "mean" ? maskedMean : null;
  if (reduce === null) throw new ArgumentError(`ppoLoss: reduction must be "mean" or "sum", got ${JSON.stringify(opts.reduction)}`);
  const mask = batch.actionMask;
  const policyLoss = reduce(clippedSurrogate(out.logProbs, batch.oldLogProbs, batch.advantages, cfg.clipEps), mask);
  const entropy = reduce(out.entropy, mask);
  let loss = np.subtract(policyLoss, np.multiply(cfg.entropyCoef, entropy));
  let valueLoss: Value = np.zerosLike(policyLoss);
  if (out.values !== null) {
    valueLoss = reduce(clippedValueLoss(out.values, batch.oldValues, batch.returns, cfg.valueClip), mask);
    loss = np.add(loss, np.multiply(cfg.vfCoef, valueLoss));
  }
  const logRatio = stopGradient(np.subtract(out.logProbs, batch.oldLogProbs));
  const ratio = np.exp(logRatio);
  const approxKl = reduce(np.subtract(np.subtract(ratio, 1), logRatio), mask);
  const clipFrac = reduce(np.astype(np.greater(np.abs(np.subtract(ratio, 1)), cfg.clipEps), logRatio.aval.dtype), mask);
  return {
    loss,
    stats: { policyLoss: stopGradient(policyLoss), valueLoss: stopGradient(valueLoss), entropy: stopGradient(entropy), approxKl, clipFrac },
  };
}

function checkBatch(what: string, batch: PpoBatch): void {
  if (typeof batch !== "object" || batch === null) throw new ArgumentError(`${what}: batch must be a PpoBatch, got ${String(batch)}`);
  const t = np.asArray(batch.tokens, what);
  const s = [...t.aval.shape.slice(0, -1), t.aval.shape[t.aval.ndim - 1]! - 1];
  for (const k of ["actionMask", "oldLogProbs", "oldValues", "advantages", "returns"] as const) {
    const v = np.asArray(batch[k], what);
    if (v.aval.ndim !== s.length || v.aval.shape.some((d, i) => d !== s[i])) {
      throw new ShapeError(`${what}: batch.${k} must be ${shapeStr(s)} (tokens ${shapeStr(t.aval.shape)} minus one position), got ${shapeStr(v.aval.shape)}`);
    }
  }
}

/**
 * The PPO loss of a minibatch, a pure differentiable function of the trainable half of the policy's
 * weights (`optim.partition(weights, trainableMask(policy))`): forward pass, then `ppoLossFromOutputs`.
 * `spec` is the policy's static part (`splitPolicy(policy).spec`).
 */
export function ppoLoss(
  trainable: PolicyWeights,
  frozen: PolicyWeights,
  batch: PpoBatch,
  cfg: Pick<PpoConfig, "clipEps" | "valueClip" | "vfCoef" | "entropyCoef">,
  spec: PolicySpec,
  opts: { reduction?: "mean" | "sum" } = {},
): { loss: Value; stats: PpoLossStats } {
  checkBatch("ppoLoss", batch);
  const weights = optim.combine(trainable, frozen);
  return ppoLossFromOutputs(policyOutputs(weights, batch.tokens, spec), batch, cfg, opts);
}

// ---------------------------------------------------------------------------------------------------
// State, init and the update

export interface PpoState {
  policy: PolicyModel;
  /** The frozen SFT params (no adapter): the KL anchor. */
  reference: PalmParams;
  /** The optimiser's state over the trainable half of the policy's weights. */
  optState: unknown;
  /** The current KL coefficient β (adapted after each update with config.adaptiveKl). */
  klCoef: number;
  /** Updates made so far. */
  step: number;
}

export interface InitPolicyOptions {
  /** LoRA scope of the actor (default "actor"); null: fine-tune the full network. */
  actorScope?: string | null;
  /** LoRA scope of the critic (default "critic"); the actor's scope shares the whole network; null with a separate critic: train it fully. */
  criticScope?: string | null;
  /** Make the critic a separate copy of the SFT model instead of sharing the actor's trunk (default false). */
  separateCritic?: boolean;
  /** LoRA rank (default 8). */
  loraR?: number;
  /** Existing LoRA params to start from (scopes are added when missing). */
  lora?: LoraParams | null;
  /** Build a value head (default true; GRPO passes false). */
  valueHead?: boolean;
}

/** The optimiser of a PpoConfig: optional global-norm clipping, then Adam. */
export function ppoOptimizer(cfg: Pick<PpoConfig, "maxGradNorm" | "learningRate">): optim.GradientTransformation {
  const adam = optim.adam(cfg.learningRate);
  return cfg.maxGradNorm ? optim.chain(optim.clipByGlobalNorm(cfg.maxGradNorm), adam) : adam;
}

/** A fresh policy from the SFT params: LoRA scopes for actor / critic (B = 0, so it starts as the SFT model), a value head. */
export function initPolicy(key: random.Key, sft: PalmParams, config: PalmConfig, opts: InitPolicyOptions = {}): PolicyModel {
  const actorScope = opts.actorScope === undefined ? "actor" : opts.actorScope;
  const withValues = opts.valueHead ?? true;
  const criticScope = !withValues ? null : opts.criticScope === undefined ? "critic" : opts.criticScope;
  let l: LoraParams | null = opts.lora ?? null;
  [actorScope, criticScope].forEach((s, i) => {
    if (s === null || (l !== null && s in l)) return;
    l = lora.addScope(l ?? {}, random.foldIn(key, 10 + i), config, s, { r: opts.loraR });
  });
  const dim = sft.tokenEmb.aval.shape[1]!;
  const dtype = sft.tokenEmb.aval.dtype;
  const valueHead: ValueHead | null = withValues
    ? { w: np.multiply(random.normal(random.foldIn(key, 20), [dim], { dtype }), 1 / Math.sqrt(dim)), b: np.zeros([], { dtype }) }
    : null;
  const policy: PolicyModel = {
    params: sft,
    lora: l,
    config,
    valueHead,
    actorScope,
    criticScope,
    critic: withValues && opts.separateCritic ? sft : null,
  };
  splitPolicy(policy); // checks
  return policy;
}

/**
 * PPO's initial state: the policy from the SFT params (see `initPolicy`; `opts` picks LoRA or full
 * fine-tuning and a shared or separate critic), the SFT params as the frozen reference, the optimiser.
 */
export function initPpo(key: random.Key, sft: PalmParams, config: PalmConfig, cfg: Partial<PpoConfig> = {}, opts: InitPolicyOptions = {}): PpoState {
  const c = resolvePpoConfig(cfg);
  const policy = initPolicy(key, sft, config, opts);
  const [trainable] = optim.partition(splitPolicy(policy).weights, trainableMask(policy));
  return { policy, reference: sft, optState: ppoOptimizer(c).init(trainable), klCoef: c.klCoef, step: 0 };
}

interface StepStatic {
  cfg: PpoConfig;
  spec: PolicySpec;
}

/** One minibatch step: loss, gradients of the trainable half, clipped Adam update. */
function ppoStep(trainable: PolicyWeights, optState: unknown, frozen: PolicyWeights, batch: PpoBatch, st: StepStatic) {
  const lossFn = (t: PolicyWeights) => {
    const r = ppoLoss(t, frozen, batch, st.cfg, st.spec);
    return [r.loss, r.stats];
  };
  const [[loss, stats], grads] = valueAndGrad(lossFn, { hasAux: true })(trainable) as [[Value, PpoLossStats], PolicyWeights];
  const gradNorm = optim.globalNorm(grads);
  const [updates, nextOpt] = ppoOptimizer(st.cfg).update(grads, optState, trainable);
  return { trainable: optim.applyUpdates(trainable, updates), optState: nextOpt, stats: { ...stats, loss, gradNorm } };
}
const ppoStepJit = jit(ppoStep, { staticArgnums: [4] });

/** Advantages and returns of a rollout under a config: KL-penalised token rewards, GAE, whitening. */
export function rolloutAdvantages(
  rollout: Rollout,
  cfg: PpoConfig,
  klCoef: number,
): { rewards: Value; kl: Value; advantages: Value; returns: Value; scores: Value } {
  checkRollout("rolloutAdvantages", rollout);
  const scores = processScores(rollout.scores, cfg);
  const { rewards, kl } = tokenRewards(scores, rollout.logProbs, rollout.refLogProbs, rollout.actionMask, { klCoef, klEstimator: cfg.klEstimator });
  let { advantages, returns } = gae(rewards, rollout.values, rollout.actionMask, { gamma: cfg.gamma, lambda: cfg.lambda });
  if (cfg.whitenAdvantages) advantages = whitenAdvantages(advantages, rollout.actionMask);
  return { rewards, kl, advantages, returns, scores };
}

/** Disposes the arrays of `old` that are not also in `now` (a jit may pass a buffer through). */
function disposeReplaced(old: unknown, now: unknown): void {
  const keep = new Set(tree.leaves(now));
  dispose(tree.leaves(old).filter((x) => !keep.has(x)));
}

/** Means over steps of per-step scalar stats, as plain numbers (one device read per stat), disposing them. */
export async function meanStats(steps: readonly Record<string, Value>[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  if (steps.length === 0) return out;
  for (const k of Object.keys(steps[0]!)) {
    const all = np.stack(steps.map((s) => s[k]!)); // [steps]
    const m = np.mean(all);
    out[k] = Number(await (m as Array).item());
    dispose([all, m]);
  }
  dispose(steps);
  return out;
}

/**
 * One PPO update on a rollout: token rewards (−β·KL + score at the end), GAE, advantage whitening, then
 * `epochs` passes over shuffled minibatches, each a jitted step (valueAndGrad of the summed loss, clipped
 * gradients, Adam). Afterwards the adaptive β (if configured) moves towards the target KL.
 *
 * Stats (plain numbers): policyLoss, valueLoss, entropy, approxKl, clipFrac, loss, gradNorm (means over
 * the minibatch steps, before clipping for gradNorm), meanReward (mean over sequences of Σ_t r_t: score
 * minus the KL penalty), meanScore (raw scores), kl (mean per-sequence KL to the reference), klCoef (the
 * β used), meanResponseLength, and steps (minibatch steps taken).
 */
export async function ppoUpdate(state: PpoState, rollout: Rollout, cfg: Partial<PpoConfig>, key: random.Key): Promise<{ state: PpoState; stats: Record<string, number> }> {
  const c = resolvePpoConfig(cfg);
  const { batch: b } = checkRollout("ppoUpdate", rollout);
  const { weights, spec } = splitPolicy(state.policy);
  if (!spec.withValues) throw new ArgumentError("ppoUpdate: the policy has no value head (valueHead null)\nTip: initPpo builds one; use grpoUpdate for critic-free training");
  const mask = trainableMask(state.policy);
  let [trainable, frozen] = optim.partition(weights, mask);
  let optState = state.optState;

  const adv = rolloutAdvantages(rollout, c, state.klCoef);
  const data: PpoBatch = {
    tokens: rollout.tokens,
    actionMask: rollout.actionMask,
    oldLogProbs: rollout.logProbs,
    oldValues: rollout.values,
    advantages: adv.advantages,
    returns: adv.returns,
  };
  const stepStats: Record<string, Value>[] = [];
  const st: StepStatic = { cfg: c, spec };
  let steps = 0;
  for (let epoch = 0; epoch < c.epochs; epoch++) {
    const perm = globalThis.Array.from(await (random.permutation(random.foldIn(key, epoch), b) as Array).data(), Number);
    for (let start = 0; start < b; start += c.minibatchSize) {
      const idx = np.array(new Int32Array(perm.slice(start, start + c.minibatchSize)));
      const mb = Object.fromEntries(Object.entries(data).map(([k, v]) => [k, np.take(v, idx, 0)])) as unknown as PpoBatch;
      const r = ppoStepJit(trainable, optState, frozen, mb, st);
      const prev = [trainable, optState];
      trainable = r.trainable;
      optState = r.optState;
      // Free the previous step's trainable weights and optimiser state, but never the caller's (step 0's inputs).
      if (steps > 0) disposeReplaced(prev, [trainable, optState]);
      stepStats.push(r.stats); // read once at the end: no device sync per step
      dispose([mb, idx]);
      steps++;
    }
  }

  const maskF = np.astype(rollout.actionMask, adv.rewards.aval.dtype);
  const seqKl = np.sum(adv.kl, { axis: -1 }); // [b]
  const meanKl = (await (np.mean(seqKl) as Array).item()) as number;
  const meanReward = (await (np.mean(np.sum(adv.rewards, { axis: -1 })) as Array).item()) as number;
  const meanScore = (await (np.mean(rollout.scores) as Array).item()) as number;
  const meanLen = (await (np.mean(np.sum(maskF, { axis: -1 })) as Array).item()) as number;
  dispose([adv, maskF, seqKl]);

  let klCoef = state.klCoef;
  if (c.adaptiveKl) {
    const ctl = new AdaptiveKlController({ init: klCoef, target: c.adaptiveKl.target, horizon: c.adaptiveKl.horizon });
    ctl.update(meanKl, b);
    klCoef = ctl.value;
  }
  const stats = await meanStats(stepStats);
  Object.assign(stats, { meanReward, meanScore, kl: meanKl, klCoef: state.klCoef, meanResponseLength: meanLen, steps });
  const policy = joinPolicy(optim.combine(trainable, frozen), spec);
  return { state: { policy, reference: state.reference, optState, klCoef, step: state.step + 1 }, stats };
}

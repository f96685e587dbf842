/**
 * @file GRPO, Group Relative Policy Optimization (Shao et al., DeepSeekMath,
 * https://arxiv.org/abs/2402.03300, §4.1): PPO without a critic. Each prompt is sampled G times; a
 * response's advantage is its score standardised within its group, (r − mean_g)/std_g, given to every
 * token of the response; the loss is PPO's clipped surrogate plus β·KL(π‖π_ref) (the k3 estimator, in
 * the loss rather than in the reward). Read `groupRelativeAdvantages`, `grpoLossFromOutputs`, then
 * `grpoUpdate`. Rollouts are PPO's (src/rl/rollout.ts) with each prompt repeated G times
 * (`collectGroupRollouts`), rows prompt-major: row = prompt·G + j.
 */
import type { Value } from "../autodiff/core.js";
import { shapeStr } from "../autodiff/aval.js";
import { ArgumentError, ShapeError } from "../autodiff/errors.js";
import { jit } from "../autodiff/jit.js";
import { valueAndGrad } from "../autodiff/transpose.js";
import * as tree from "../autodiff/tree.js";
import { stopGradient } from "../ops/lax/elementwise.js";
import { Array } from "../ops/array.js";
import { dispose } from "../ops/memory.js";
import * as np from "../ops/np.js";
import type { ArrayLike } from "../ops/np.js";
import * as random from "../ops/random.js";
import * as optim from "../nn/optim.js";
import type { PalmConfig, PalmParams } from "../nn/palm.js";
import type { Prompts } from "../nn/generate.js";
import { maskAsFloat, maskedMean } from "./common.js";
import { klEstimate } from "./kl.js";
import { clippedSurrogate, initPolicy, meanStats, ppoOptimizer } from "./ppo.js";
import type { InitPolicyOptions } from "./ppo.js";
import { checkRollout, collectRollouts, joinPolicy, policyOutputs, splitPolicy, trainableMask } from "./rollout.js";
import type { CollectRolloutOptions, PolicyModel, PolicyOutputs, PolicySpec, PolicyWeights, Rollout } from "./rollout.js";

export interface GrpoConfig {
  /** Samples per prompt, G (default 4; at least 2, a group of one has no baseline). */
  groupSize: number;
  /** Passes over each rollout batch (default 1: GRPO's single update per batch). */
  epochs: number;
  /** Sequences per minibatch (default 8). */
  minibatchSize: number;
  /** ε of the clipped ratio (default 0.2). */
  clipEps: number;
  /** β of the k3 KL to the reference in the loss (default 0.04, as DeepSeekMath). */
  klCoef: number;
  /** Weight of an entropy bonus (default 0). */
  entropyCoef: number;
  /** Divide by the group's std (default true); false keeps r − mean (Dr. GRPO, https://arxiv.org/abs/2503.20783). */
  scaleRewards: boolean;
  /** "sequence": mean over each response's tokens, then over responses (the paper); "token": mean over all response tokens. */
  lossAggregation: "sequence" | "token";
  /** Gradient clipping by global norm (default 1); null or 0: none. */
  maxGradNorm: number | null;
  /** Adam's learning rate (default 1e-4). */
  learningRate: number;
}

export const defaultGrpoConfig: GrpoConfig = {
  groupSize: 4,
  epochs: 1,
  minibatchSize: 8,
  clipEps: 0.2,
  klCoef: 0.04,
  entropyCoef: 0,
  scaleRewards: true,
  lossAggregation: "sequence",
  maxGradNorm: 1,
  learningRate: 1e-4,
};

/** The defaults with `cfg` on top, checked. */
export function resolveGrpoConfig(cfg: Partial<GrpoConfig> = {}): GrpoConfig {
  if (typeof cfg !== "object" || cfg === null) throw new ArgumentError(`grpo: config must be an object, got ${String(cfg)}`);
  const c: GrpoConfig = { ...defaultGrpoConfig };
  for (const [k, v] of Object.entries(cfg)) if (v !== undefined) (c as unknown as Record<string, unknown>)[k] = v;
  const int = (k: keyof GrpoConfig, lo: number): void => {
    const v = c[k];
    if (!(typeof v === "number" && Number.isInteger(v) && v >= lo)) throw new ArgumentError(`grpo: config.${k} must be an integer >= ${lo}, got ${JSON.stringify(v)}`);
  };
  const num = (k: keyof GrpoConfig, open: boolean): void => {
    const v = c[k];
    if (!(typeof v === "number" && Number.isFinite(v) && (open ? v > 0 : v >= 0))) throw new ArgumentError(`grpo: config.${k} must be a number ${open ? ">" : ">="} 0, got ${JSON.stringify(v)}`);
  };
  int("groupSize", 2);
  int("epochs", 1);
  int("minibatchSize", 1);
  num("clipEps", true);
  num("klCoef", false);
  num("entropyCoef", false);
  num("learningRate", true);
  if (c.maxGradNorm !== null && c.maxGradNorm !== 0) num("maxGradNorm", true);
  if (typeof c.scaleRewards !== "boolean") throw new ArgumentError(`grpo: config.scaleRewards must be a boolean, got ${JSON.stringify(c.scaleRewards)}`);
  if (c.lossAggregation !== "sequence" && c.lossAggregation !== "token") {
    throw new ArgumentError(`grpo: config.lossAggregation must be "sequence" or "token", got ${JSON.stringify(c.lossAggregation)}`);
  }
  return c;
}

/**
 * Group-relative advantages: scores [b] with b = groups·G (prompt-major, row = group·G + j) →
 * (r − mean of its group) / (std of its group + eps), [b]. The std is the sample std (ddof 1, as
 * torch's `std` in the reference implementations); `scaleRewards: false` leaves out the division. A
 * group whose scores are all equal gets advantages 0 (it carries no signal).
 */
export function groupRelativeAdvantages(scores: ArrayLike, groupSize: number, opts: { scaleRewards?: boolean; eps?: number } = {}): Value {
  const s = np.asArray(scores, "groupRelativeAdvantages");
  if (!(Number.isInteger(groupSize) && groupSize >= 2)) {
    throw new ArgumentError(`groupRelativeAdvantages: groupSize must be an integer >= 2, got ${String(groupSize)}\nTip: a group of one sample has no baseline`);
  }
  if (s.aval.ndim !== 1 || s.aval.shape[0]! % groupSize !== 0) {
    throw new ShapeError(`groupRelativeAdvantages: scores must be [groups·${groupSize}] (one per sample, prompt-major), got ${shapeStr(s.aval.shape)}`);
  }
  const sf = np.astype(s, s.aval.dtype === "float64" ? "float64" : "float32");
  const g = np.reshape(sf, [s.aval.shape[0]! / groupSize, groupSize]); // [b] -> [groups, G]
  let adv = np.subtract(g, np.mean(g, { axis: 1, keepdims: true }));
  if (opts.scaleRewards ?? true) adv = np.divide(adv, np.add(np.std(g, { axis: 1, keepdims: true, ddof: 1 }), opts.eps ?? 1e-4));
  return np.reshape(adv, [s.aval.shape[0]!]); // [groups, G] -> [b]
}

/** One GRPO minibatch: tokens [b, n]; per-token [b, n-1]; advantages [b] (one per sequence). */
export interface GrpoBatch {
  tokens: Value;
  actionMask: Value;
  oldLogProbs: Value;
  refLogProbs: Value;
  advantages: Value;
}

export interface GrpoLossStats {
  policyLoss: Value;
  /** Mean per-token k3 KL to the reference. */
  kl: Value;
  entropy: Value;
  approxKl: Value;
  clipFrac: Value;
}

/**
 * The GRPO loss from the policy's outputs: per token clippedSurrogate(A) + β·k3(π, π_ref) − c·H,
 * aggregated by `lossAggregation` over the response tokens only. Any leading shape (one example under
 * `vmap` gives that example's loss; with "sequence" aggregation the batch loss is the mean of those).
 */
export function grpoLossFromOutputs(
  out: Pick<PolicyOutputs, "logProbs" | "entropy">,
  batch: GrpoBatch,
  cfg: Pick<GrpoConfig, "clipEps" | "klCoef" | "entropyCoef" | "lossAggregation">,
): { loss: Value; stats: GrpoLossStats } {
  const lp = out.logProbs;
  const mask = maskAsFloat("grpoLoss", batch.actionMask, lp);
  const adv = np.asArray(batch.advantages, "grpoLoss");
  if (adv.aval.ndim !== lp.aval.ndim - 1 || adv.aval.shape.some((d, i) => d !== lp.aval.shape[i])) {
    throw new ShapeError(`grpoLoss: advantages must be one per sequence of logProbs ${shapeStr(lp.aval.shape)}, got ${shapeStr(adv.aval.shape)}`);
  }
  const advTok = np.multiply(np.expandDims(np.astype(adv, lp.aval.dtype), -1), np.onesLike(lp)); // [..., 1] -> [..., T]
  const pg = clippedSurrogate(lp, batch.oldLogProbs, advTok, cfg.clipEps);
  const kl = klEstimate(lp, stopGradient(np.asArray(batch.refLogProbs, "grpoLoss")), "k3");
  const perToken = np.subtract(np.add(pg, np.multiply(cfg.klCoef, kl)), np.multiply(cfg.entropyCoef, out.entropy));
  const reduce = (x: Value): Value =>
    cfg.lossAggregation === "token" ? maskedMean(x, mask) : np.mean(maskedMean(x, mask, { axis: -1 })); // per-sequence means, then their mean
  const logRatio = stopGradient(np.subtract(lp, batch.oldLogProbs));
  const ratio = np.exp(logRatio);
  return {
    loss: reduce(perToken),
    stats: {
      policyLoss: stopGradient(reduce(pg)),
      kl: stopGradient(maskedMean(kl, mask)),
      entropy: stopGradient(maskedMean(out.entropy, mask)),
      approxKl: maskedMean(np.subtract(np.subtract(ratio, 1), logRatio), mask),
      clipFrac: maskedMean(np.astype(np.greater(np.abs(np.subtract(ratio, 1)), cfg.clipEps), lp.aval.dtype), mask),
    },
  };
}

/** The GRPO loss of a minibatch: a pure differentiable function of the trainable half of the policy's weights. */
export function grpoLoss(
  trainable: PolicyWeights,
  frozen: PolicyWeights,
  batch: GrpoBatch,
  cfg: Pick<GrpoConfig, "clipEps" | "klCoef" | "entropyCoef" | "lossAggregation">,
  spec: PolicySpec,
): { loss: Value; stats: GrpoLossStats } {
  if (typeof batch !== "object" || batch === null) throw new ArgumentError(`grpoLoss: batch must be a GrpoBatch, got ${String(batch)}`);
  const weights = optim.combine(trainable, frozen);
  return grpoLossFromOutputs(policyOutputs(weights, batch.tokens, { ...spec, withValues: false }), batch, cfg);
}

export interface GrpoState {
  policy: PolicyModel;
  reference: PalmParams;
  optState: unknown;
  step: number;
}

/** GRPO's initial state: an actor (LoRA scope "actor" by default, or full with actorScope null) and no critic. */
export function initGrpo(
  key: random.Key,
  sft: PalmParams,
  config: PalmConfig,
  cfg: Partial<GrpoConfig> = {},
  opts: Omit<InitPolicyOptions, "valueHead" | "criticScope" | "separateCritic"> = {},
): GrpoState {
  const c = resolveGrpoConfig(cfg);
  const policy = initPolicy(key, sft, config, { ...opts, valueHead: false });
  const [trainable] = optim.partition(splitPolicy(policy).weights, trainableMask(policy));
  return { policy, reference: sft, optState: ppoOptimizer(c).init(trainable), step: 0 };
}

/**
 * Rollouts for GRPO: each prompt repeated `groupSize` times (prompt-major, row = prompt·G + j), sampled
 * and scored as `collectRollouts` does.
 */
export async function collectGroupRollouts(
  key: random.Key,
  opts: Omit<CollectRolloutOptions, "prompts"> & { prompts: readonly (readonly number[])[]; groupSize: number },
): Promise<Rollout> {
  if (!(Number.isInteger(opts.groupSize) && opts.groupSize >= 2)) throw new ArgumentError(`collectGroupRollouts: groupSize must be an integer >= 2, got ${String(opts.groupSize)}`);
  if (!globalThis.Array.isArray(opts.prompts)) throw new ArgumentError("collectGroupRollouts: prompts must be a list of token lists");
  const rep: Prompts = opts.prompts.flatMap((p) => globalThis.Array.from({ length: opts.groupSize }, () => [...p]));
  return collectRollouts(key, { ...opts, prompts: rep });
}

interface StepStatic {
  cfg: GrpoConfig;
  spec: PolicySpec;
}

function grpoStep(trainable: PolicyWeights, optState: unknown, frozen: PolicyWeights, batch: GrpoBatch, st: StepStatic) {
  const lossFn = (t: PolicyWeights) => {
    const r = grpoLoss(t, frozen, batch, st.cfg, st.spec);
    return [r.loss, r.stats];
  };
  const [[loss, stats], grads] = valueAndGrad(lossFn, { hasAux: true })(trainable) as [[Value, GrpoLossStats], PolicyWeights];
  const gradNorm = optim.globalNorm(grads);
  const [updates, nextOpt] = ppoOptimizer(st.cfg).update(grads, optState, trainable);
  return { trainable: optim.applyUpdates(trainable, updates), optState: nextOpt, stats: { ...stats, loss, gradNorm } };
}
const grpoStepJit = jit(grpoStep, { staticArgnums: [4] });

/**
 * One GRPO update on a group rollout (from `collectGroupRollouts`, batch = prompts·G): group-relative
 * advantages of the scores, then `epochs` passes of shuffled minibatches, each a jitted valueAndGrad
 * step with clipped gradients and Adam. Stats (plain numbers): policyLoss, kl, entropy, approxKl,
 * clipFrac, loss, gradNorm (means over steps), meanScore, scoreStd (mean within-group std), steps.
 */
export async function grpoUpdate(state: GrpoState, rollout: Rollout, cfg: Partial<GrpoConfig>, key: random.Key): Promise<{ state: GrpoState; stats: Record<string, number> }> {
  const c = resolveGrpoConfig(cfg);
  const { batch: b } = checkRollout("grpoUpdate", rollout);
  if (b % c.groupSize !== 0) throw new ShapeError(`grpoUpdate: the rollout's ${b} rows must be groups of ${c.groupSize}\nTip: collect it with collectGroupRollouts and the same groupSize`);
  const { weights, spec } = splitPolicy(state.policy);
  let [trainable, frozen] = optim.partition(weights, trainableMask(state.policy));
  let optState = state.optState;
  const advantages = groupRelativeAdvantages(rollout.scores, c.groupSize, { scaleRewards: c.scaleRewards });
  const data: GrpoBatch = {
    tokens: rollout.tokens,
    actionMask: rollout.actionMask,
    oldLogProbs: rollout.logProbs,
    refLogProbs: rollout.refLogProbs,
    advantages,
  };
  const stepStats: Record<string, Value>[] = [];
  let steps = 0;
  for (let epoch = 0; epoch < c.epochs; epoch++) {
    const perm = globalThis.Array.from(await (random.permutation(random.foldIn(key, epoch), b) as Array).data(), Number);
    for (let start = 0; start < b; start += c.minibatchSize) {
      const idx = np.array(new Int32Array(perm.slice(start, start + c.minibatchSize)));
      const mb = Object.fromEntries(Object.entries(data).map(([k, v]) => [k, np.take(v, idx, 0)])) as unknown as GrpoBatch;
      const r = grpoStepJit(trainable, optState, frozen, mb, { cfg: c, spec });
      const prev = [trainable, optState];
      trainable = r.trainable;
      optState = r.optState;
      if (steps > 0) {
        const keep = new Set(tree.leaves([trainable, optState]));
        dispose(tree.leaves(prev).filter((x) => !keep.has(x)));
      }
      stepStats.push(r.stats); // read once at the end: no device sync per step
      dispose([mb, idx]);
      steps++;
    }
  }
  const groups = np.reshape(rollout.scores, [b / c.groupSize, c.groupSize]); // [b] -> [groups, G]
  const meanScore = (await (np.mean(rollout.scores) as Array).item()) as number;
  const scoreStd = (await (np.mean(np.std(groups, { axis: 1 })) as Array).item()) as number;
  dispose([advantages]);
  const stats = await meanStats(stepStats);
  Object.assign(stats, { meanScore, scoreStd, steps });
  return { state: { policy: joinPolicy(optim.combine(trainable, frozen), spec), reference: state.reference, optState, step: state.step + 1 }, stats };
}

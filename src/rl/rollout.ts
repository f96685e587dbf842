/**
 * @file The policy model of PPO / GRPO (actor, critic, value head as one pytree of weights) and its
 * forward pass, and rollouts: batched generation from prompts, then one forward pass of the policy
 * (log-probs, values) and of the frozen reference (log-probs) over the full sequences. Read
 * `PolicyModel`, then `policyOutputs`, then `collectRollouts`.
 *
 * Layout of a rollout (as `generate` packs it): row i of tokens [b, n] holds its prompt at positions
 * 0..promptLengths[i]-1, its response up to totalLengths[i]-1 (eos included), then padding. Every row
 * starts at position 0 and the model is causal, so the padding after a row changes none of its
 * log-probs, and the per-token quantities of row i are aligned with row i's own tokens whatever the
 * other rows' prompt lengths (the misalignment bug of PaLM-rlhf-pytorch). Per-token quantities are
 * [b, n-1] (entry t is about token t+1, see src/rl/common.ts); `actionMask` marks the response tokens.
 */
import { Value } from "../autodiff/core.js";
import { shapeStr } from "../autodiff/aval.js";
import { ArgumentError, ShapeError } from "../autodiff/errors.js";
import { jit } from "../autodiff/jit.js";
import { Array } from "../ops/array.js";
import { dispose } from "../ops/memory.js";
import * as np from "../ops/np.js";
import type { ArrayLike } from "../ops/np.js";
import * as random from "../ops/random.js";
import * as palm from "../nn/palm.js";
import type { LoraParams, PalmConfig, PalmParams } from "../nn/palm.js";
import { generate } from "../nn/generate.js";
import type { Prompts, SampleOptions } from "../nn/generate.js";
import { entropyFromLogits, responseMask, sequenceLogProbs } from "./common.js";

// ---------------------------------------------------------------------------------------------------
// The policy model

/** A linear value head on the critic's final embeddings: V = e·w + b. */
export interface ValueHead {
  /** [dim] */
  w: Value;
  /** [] */
  b: Value;
}

/**
 * The PPO policy: actor, critic and value head.
 *  - actor: `params` with the LoRA scope `actorScope` of `lora` (default "actor"); `actorScope: null`
 *    trains `params` themselves (full fine-tuning).
 *  - critic (the value function): by default it shares the actor's trunk `params` with its own LoRA
 *    scope `criticScope` (default "critic"; cheap: one base model, two adapters). With
 *    `criticScope === actorScope` actor and critic share the whole network and one forward pass. With
 *    `critic` set it is a separate PaLM (adapted by scope `criticScope` of `lora` when that is not null,
 *    trained fully otherwise). The value head reads the critic's final embeddings (`palm.embed`).
 *  - valueHead: null for critic-free methods (GRPO).
 * The reference model (the frozen SFT params, no adapter) is kept apart: see PpoState / GrpoState.
 */
export interface PolicyModel {
  params: PalmParams;
  lora: LoraParams | null;
  config: PalmConfig;
  valueHead: ValueHead | null;
  actorScope?: string | null;
  criticScope?: string | null;
  /** A separate critic network (same architecture config), or null/absent to share the actor's trunk. */
  critic?: PalmParams | null;
  /** LoRA's alpha (default r: scale 1). */
  loraAlpha?: number;
}

/** The differentiable part of a PolicyModel (a pytree of arrays; `partition` splits it). */
export interface PolicyWeights {
  params: PalmParams;
  lora: LoraParams | null;
  valueHead: ValueHead | null;
  critic: PalmParams | null;
}

/** The static part of a PolicyModel (JSON-able: a jit cache key). */
export interface PolicySpec {
  config: PalmConfig;
  actorScope: string | null;
  criticScope: string | null;
  separateCritic: boolean;
  withValues: boolean;
  loraAlpha: number | null;
}

/** Splits a PolicyModel into its weights (traced) and its spec (static). */
export function splitPolicy(policy: PolicyModel): { weights: PolicyWeights; spec: PolicySpec } {
  if (typeof policy !== "object" || policy === null || typeof policy.params !== "object" || typeof policy.config !== "object") {
    throw new ArgumentError("policy: must be a PolicyModel { params, lora, config, valueHead, ... }, got " + String(policy));
  }
  const actorScope = policy.actorScope === undefined ? "actor" : policy.actorScope;
  const criticScope = policy.criticScope === undefined ? "critic" : policy.criticScope;
  const lora = policy.lora ?? null;
  for (const [what, scope] of [["actorScope", actorScope], ["criticScope", criticScope]] as const) {
    if (scope !== null && (lora === null || !(scope in lora))) {
      if (what === "criticScope" && (policy.valueHead === null || policy.valueHead === undefined)) continue;
      throw new ArgumentError(
        `policy: ${what} "${scope}" is not a scope of policy.lora, got ${lora === null ? "no LoRA params" : JSON.stringify(Object.keys(lora))}` +
          `\nTip: lora.init(key, config, { scopes: ["${scope}"] }), or set ${what}: null to train the full network`,
      );
    }
  }
  const vh = policy.valueHead ?? null;
  if (vh !== null) {
    const dim = policy.params.tokenEmb.aval.shape[1]!;
    if (vh.w.aval.ndim !== 1 || vh.w.aval.shape[0] !== dim || vh.b.aval.ndim !== 0) {
      throw new ShapeError(`policy: valueHead must be { w: [${dim}], b: [] }, got w ${shapeStr(vh.w.aval.shape)} and b ${shapeStr(vh.b.aval.shape)}`);
    }
  }
  return {
    weights: { params: policy.params, lora, valueHead: vh, critic: policy.critic ?? null },
    spec: {
      config: policy.config,
      actorScope,
      criticScope,
      separateCritic: (policy.critic ?? null) !== null,
      withValues: vh !== null,
      loraAlpha: policy.loraAlpha ?? null,
    },
  };
}

/** Rebuilds a PolicyModel from weights and spec (the inverse of `splitPolicy`). */
export function joinPolicy(weights: PolicyWeights, spec: PolicySpec): PolicyModel {
  return {
    params: weights.params,
    lora: weights.lora,
    config: spec.config,
    valueHead: weights.valueHead,
    actorScope: spec.actorScope,
    criticScope: spec.criticScope,
    critic: weights.critic,
    ...(spec.loraAlpha === null ? {} : { loraAlpha: spec.loraAlpha }),
  };
}

/**
 * The trainable / frozen mask of a policy's weights (for `optim.partition`): the actor's LoRA scope (or
 * the base params when actorScope is null), the critic's scope (or the separate critic when
 * criticScope is null) and the value head are trained; everything else is frozen.
 */
export function trainableMask(policy: PolicyModel): unknown {
  const { weights: w, spec } = splitPolicy(policy);
  const trained = new Set([spec.actorScope, spec.withValues ? spec.criticScope : null].filter((s): s is string => s !== null));
  const loraMask = w.lora === null ? false : Object.fromEntries(Object.keys(w.lora).map((k) => [k, trained.has(k)]));
  return {
    params: spec.actorScope === null || (spec.withValues && !spec.separateCritic && spec.criticScope === null),
    lora: loraMask,
    valueHead: true,
    critic: spec.criticScope === null,
  };
}

/** Per-token outputs of the policy on full sequences: [..., n-1] each (values only with a value head). */
export interface PolicyOutputs {
  logProbs: Value;
  entropy: Value;
  values: Value | null;
}

/**
 * One forward pass of the actor (and the critic): log-probs of each next token, the entropy of each
 * next-token distribution, and the values V(tokens 0..t) of each state before an action. tokens [b, n]
 * or [n] (so it can be `vmap`ped per example). Pure and differentiable in `weights`.
 */
export function policyOutputs(weights: PolicyWeights, tokens: ArrayLike, spec: PolicySpec): PolicyOutputs {
  const t = np.asArray(tokens, "policyOutputs");
  const n = t.aval.shape[t.aval.ndim - 1]!;
  if (t.aval.ndim < 1 || t.aval.ndim > 2 || n < 2) {
    throw new ShapeError(`policyOutputs: tokens must be [batch, seq] or [seq] with seq >= 2, got ${shapeStr(t.aval.shape)}`);
  }
  const alpha = spec.loraAlpha === null ? {} : { loraAlpha: spec.loraAlpha };
  const { logits, embeddings } = palm.apply(weights.params, t, {
    config: spec.config,
    lora: weights.lora,
    loraScope: spec.actorScope,
    returnEmbeddings: true,
    ...alpha,
  }); // [..., n, V], [..., n, dim]
  const ax = t.aval.ndim - 1; // the sequence axis
  const logProbs = sequenceLogProbs(logits, t); // [..., n-1]
  const entropy = entropyFromLogits(np.split(logits, [n - 1], ax)[0]!); // [..., n-1, V] -> [..., n-1]
  let values: Value | null = null;
  if (spec.withValues && weights.valueHead !== null) {
    let e: Value;
    if (spec.separateCritic) {
      e = palm.embed(weights.critic!, t, { config: spec.config, lora: weights.lora, loraScope: spec.criticScope, ...alpha });
    } else if (spec.criticScope === spec.actorScope) {
      e = embeddings;
    } else {
      e = palm.embed(weights.params, t, { config: spec.config, lora: weights.lora, loraScope: spec.criticScope, ...alpha });
    }
    const states = np.split(e, [n - 1], ax)[0]!; // [..., n-1, dim]: the states before each action
    values = np.add(np.dot(states, weights.valueHead.w), weights.valueHead.b); // [..., n-1]
  }
  return { logProbs, entropy, values };
}

/** Log-probs [..., n-1] of each next token under the reference model (no adapter). */
export function referenceLogProbs(reference: PalmParams, tokens: ArrayLike, config: PalmConfig): Value {
  return sequenceLogProbs(palm.apply(reference, tokens, { config }), tokens);
}

const policyOutputsJit = jit(policyOutputs, { staticArgnums: [2] });
const referenceLogProbsJit = jit(referenceLogProbs, { staticArgnums: [2] });

// ---------------------------------------------------------------------------------------------------
// Rollouts

/** A batch of sampled responses with everything PPO needs about them (all concrete arrays). */
export interface Rollout {
  /** [b, n] int32: prompt, response (eos included), padding. */
  tokens: Value;
  /** [b] int32 */
  promptLengths: Value;
  /** [b] int32: prompt + response length. */
  totalLengths: Value;
  /** [b, n-1] bool: entry t is set when token t+1 is a response token (an action). */
  actionMask: Value;
  /** [b, n-1] log-probs of the tokens under the policy that sampled them (0 outside actionMask). */
  logProbs: Value;
  /** [b, n-1] log-probs under the frozen reference (0 outside actionMask). */
  refLogProbs: Value;
  /** [b, n-1] the critic's values of the states before each action (0 outside actionMask; zeros without a value head). */
  values: Value;
  /** [b] the reward model's (or task's) score of each full sequence. */
  scores: Value;
  /** Each row's response tokens (eos included), as JS lists: for logging. */
  completions: number[][];
}

/** What a scoring function gets: the rollout's sequences and lengths, and the JS lists for convenience. */
export type ScoreFn = (
  tokens: Array,
  promptLengths: Array,
  totalLengths: Array,
  info: { prompts: number[][]; completions: number[][] },
) => ArrayLike | readonly number[] | Promise<ArrayLike | readonly number[]>;

export interface CollectRolloutOptions {
  policy: PolicyModel;
  /** The frozen reference (SFT) params, same architecture as the policy. */
  reference: PalmParams;
  prompts: Prompts;
  maxNewTokens: number;
  scoreFn: ScoreFn;
  /** Sampling options (temperature 1, no filtering by default: PPO's ratios assume the sampling distribution is the policy's). */
  sample?: SampleOptions;
  eosToken?: number | null;
  padToken?: number;
}

/**
 * Samples one response per prompt from the policy (KV-cached `generate`), scores the sequences, and
 * computes the policy's log-probs and values and the reference's log-probs in one forward pass each
 * over the full sequences. Masked-out entries of the per-token arrays are set to 0.
 */
export async function collectRollouts(key: random.Key, opts: CollectRolloutOptions): Promise<Rollout> {
  if (typeof opts !== "object" || opts === null) throw new ArgumentError("collectRollouts: options must be an object, got " + String(opts));
  if (typeof opts.scoreFn !== "function") throw new ArgumentError(`collectRollouts: scoreFn must be a function, got ${typeof opts.scoreFn}`);
  const { weights, spec } = splitPolicy(opts.policy);
  const refArch = palm.architecture(opts.reference);
  const polArch = palm.architecture(weights.params);
  for (const k of ["numTokens", "dim", "depth", "heads", "dimHead", "ffInner"] as const) {
    if (refArch[k] !== polArch[k]) {
      throw new ShapeError(`collectRollouts: the reference must have the policy's architecture, got ${k} ${refArch[k]} (reference) and ${polArch[k]} (policy)`);
    }
  }
  const sample = opts.sample ?? {};
  const g = await generate(weights.params, opts.prompts, {
    ...sample,
    config: spec.config,
    key,
    maxNewTokens: opts.maxNewTokens,
    eosToken: opts.eosToken ?? null,
    padToken: opts.padToken ?? 0,
    lora: spec.actorScope === null ? null : weights.lora,
    loraScope: spec.actorScope,
    ...(spec.loraAlpha === null ? {} : { loraAlpha: spec.loraAlpha }),
  });
  g.tokens.dispose();
  const tokens = g.sequences; // [b, n]
  const [b, n] = tokens.aval.shape as [number, number];
  const device = tokens.device;
  const promptLists = await promptListsOf(tokens, g.promptLengths);
  const promptLengths = np.array(new Int32Array(g.promptLengths), { device });
  const totalLengths = np.array(new Int32Array(g.promptLengths.map((p, i) => p + g.completions[i]!.length)), { device });
  const actionMask = responseMask(promptLengths, n, { totalLengths, forActions: true }); // [b, n-1]

  const out = policyOutputsJit(weights, tokens, spec);
  const ref = referenceLogProbsJit(opts.reference, tokens, spec.config);
  const zero = (x: Value): Value => np.where(actionMask, x, 0);
  const logProbs = zero(out.logProbs);
  const refLogProbs = zero(ref);
  const values = out.values === null ? np.zerosLike(logProbs) : zero(out.values);
  dispose([out, ref]);

  const raw = await opts.scoreFn(tokens, promptLengths, totalLengths, { prompts: promptLists, completions: g.completions });
  const scoresV = globalThis.Array.isArray(raw) && raw.every((s) => typeof s === "number") ? np.array(raw as number[], { dtype: logProbs.aval.dtype, device }) : np.asArray(raw as ArrayLike, "collectRollouts: scores");
  if (scoresV.aval.ndim !== 1 || scoresV.aval.shape[0] !== b) {
    throw new ShapeError(`collectRollouts: scoreFn must return one score per sequence, [${b}], got ${shapeStr(scoresV.aval.shape)}`);
  }
  const scores = np.astype(scoresV, logProbs.aval.dtype);
  return { tokens, promptLengths, totalLengths, actionMask, logProbs, refLogProbs, values, scores, completions: g.completions };
}

async function promptListsOf(tokens: Array, lengths: readonly number[]): Promise<number[][]> {
  const n = tokens.aval.shape[1]!;
  const all = globalThis.Array.from(await tokens.data(), Number);
  return lengths.map((p, i) => all.slice(i * n, i * n + p));
}

/** Checks that a rollout's arrays fit together ([b, n] tokens, [b] lengths and scores, [b, n-1] per-token). */
export function checkRollout(what: string, r: Rollout): { batch: number; seqLen: number } {
  if (typeof r !== "object" || r === null) throw new ArgumentError(`${what}: rollout must be a Rollout (from collectRollouts), got ${String(r)}`);
  const t = np.asArray(r.tokens, what);
  if (t.aval.ndim !== 2) throw new ShapeError(`${what}: rollout.tokens must be [batch, seq], got ${shapeStr(t.aval.shape)}`);
  const [b, n] = t.aval.shape as [number, number];
  const want: [keyof Rollout, number[]][] = [
    ["promptLengths", [b]],
    ["totalLengths", [b]],
    ["scores", [b]],
    ["actionMask", [b, n - 1]],
    ["logProbs", [b, n - 1]],
    ["refLogProbs", [b, n - 1]],
    ["values", [b, n - 1]],
  ];
  for (const [k, shape] of want) {
    const v = np.asArray(r[k] as ArrayLike, what);
    const s = v.aval.shape;
    if (s.length !== shape.length || s.some((d, i) => d !== shape[i])) {
      throw new ShapeError(`${what}: rollout.${k} must be ${shapeStr(shape)} for tokens ${shapeStr([b, n])}, got ${shapeStr(s)}`);
    }
  }
  return { batch: b, seqLen: n };
}

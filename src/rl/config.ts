/**
 * @file The configuration of `webgrad rlhf`: every setting of the pipeline (task, model, SFT, reward
 * model, PPO, evaluation) in one JSON-compatible object with defaults. `resolveConfig(partial)` merges a
 * partial config (e.g. a JSON file, `loadConfigFile`) over the defaults and validates every leaf:
 * unknown keys and bad values are `RlhfConfigError`s naming the key path ("ppo.clipEps: must be a
 * number in (0, 1), got 2"), so a typo never silently falls back to a default.
 *
 * `defaultConfig` is the main job (a few minutes on two CPU cores); `quickConfig` is a tiny variant for
 * tests and smoke runs (seconds). Read first: `RlhfConfig`, then `SPEC` (the rule for each leaf).
 */
import { readFile } from "node:fs/promises";
import { ArgumentError } from "../autodiff/errors.js";
import { defaultTaskConfig, TaskConfig, checkTaskConfig } from "./task.js";

/** A bad configuration: an unknown key, a value of the wrong type or out of range, an unreadable file. */
export class RlhfConfigError extends ArgumentError {}

export interface ModelConfig {
  dim: number;
  depth: number;
  heads: number;
  dimHead: number;
  ffMult: number;
}

export interface SftConfig {
  /** Optimiser steps on the demonstrations. */
  steps: number;
  batchSize: number;
  learningRate: number;
  warmupSteps: number;
  weightDecay: number;
  /** Training prompts get this many demonstrations each. */
  demosPerPrompt: number;
  /** Save the stage's progress every N steps (0: only when interrupted); not part of the stage's fingerprint. */
  checkpointEvery: number;
}

export interface RewardConfig {
  steps: number;
  /** Preference pairs per step. */
  batchSize: number;
  learningRate: number;
  weightDecay: number;
  /** Labelled pairs on training prompts / on held-out prompts (for the accuracy). */
  trainPairs: number;
  evalPairs: number;
  /** Pooling of the final embeddings into the scalar reward. */
  pooling: "mean" | "last";
  /** LoRA rank of the reward model's adapter on the SFT trunk; 0 = full fine-tuning. */
  loraR: number;
  /** Held-out accuracy every N steps (and at the end). */
  evalEvery: number;
  /** Save the stage's progress every N steps (0: only when interrupted). */
  checkpointEvery: number;
}

export interface PpoStageConfig {
  /** PPO iterations (rollout + update). */
  iterations: number;
  /** Prompts (responses) per rollout. */
  rolloutBatch: number;
  /** Sampling temperature of the rollouts. */
  temperature: number;
  epochs: number;
  minibatchSize: number;
  clipEps: number;
  valueClip: number;
  vfCoef: number;
  entropyCoef: number;
  /** β of the KL penalty to the SFT model (the initial value when adaptive). */
  klCoef: number;
  klEstimator: "k1" | "k3";
  /** Adaptive KL controller (Ziegler et al.): target KL per sequence and horizon; null = fixed β. */
  adaptiveKl: { target: number; horizon: number } | null;
  gamma: number;
  lambda: number;
  whitenAdvantages: boolean;
  rewardClip: number | null;
  normalizeRewards: boolean;
  maxGradNorm: number;
  learningRate: number;
  /** LoRA rank of the actor and critic adapters; 0 = full fine-tuning of the actor (the critic keeps a rank-8 adapter on the shared trunk). */
  loraR: number;
  /** Held-out evaluation every N iterations (and at the end). */
  evalEvery: number;
  /** Save the stage's progress every N iterations (0: only when interrupted). */
  checkpointEvery: number;
}

export interface EvalConfig {
  /** Held-out prompts for the RM-free evaluation of SFT vs PPO. */
  prompts: number;
  /** Sampling temperature of the evaluation generations. */
  temperature: number;
  /** Sample generations shown in the report (before / after). */
  shownSamples: number;
}

export interface RlhfConfig {
  seed: number;
  task: TaskConfig;
  /** Distinct training prompts (SFT demonstrations, preference pairs and PPO rollouts use them). */
  trainPrompts: number;
  model: ModelConfig;
  sft: SftConfig;
  reward: RewardConfig;
  ppo: PpoStageConfig;
  eval: EvalConfig;
}

/** The main job: tuned so that, with seed 0, RLHF visibly works in a few minutes on two CPU cores. */
export const defaultConfig: RlhfConfig = {
  seed: 0,
  task: { ...defaultTaskConfig },
  trainPrompts: 2000,
  model: { dim: 32, depth: 2, heads: 2, dimHead: 16, ffMult: 2 },
  sft: { steps: 800, batchSize: 32, learningRate: 3e-3, warmupSteps: 20, weightDecay: 0.01, demosPerPrompt: 1, checkpointEvery: 200 },
  reward: { steps: 150, batchSize: 32, learningRate: 1e-3, weightDecay: 0.0, trainPairs: 4000, evalPairs: 500, pooling: "mean", loraR: 0, evalEvery: 50, checkpointEvery: 50 },
  ppo: {
    iterations: 60,
    rolloutBatch: 64,
    temperature: 1,
    epochs: 2,
    minibatchSize: 32,
    clipEps: 0.2,
    valueClip: 0.2,
    vfCoef: 0.5,
    entropyCoef: 0.0,
    klCoef: 0.3,
    klEstimator: "k1",
    adaptiveKl: null,
    gamma: 1,
    lambda: 0.95,
    whitenAdvantages: true,
    rewardClip: null,
    normalizeRewards: true,
    maxGradNorm: 1,
    learningRate: 1e-3,
    loraR: 0,
    evalEvery: 10,
    checkpointEvery: 10,
  },
  eval: { prompts: 256, temperature: 1, shownSamples: 8 },
};

/** A tiny configuration for tests and smoke runs: seconds, not minutes (it shows nothing statistically). */
export const quickConfig: RlhfConfig = {
  ...defaultConfig,
  trainPrompts: 64,
  model: { dim: 16, depth: 1, heads: 2, dimHead: 8, ffMult: 2 },
  sft: { ...defaultConfig.sft, steps: 12, batchSize: 8, warmupSteps: 2 },
  reward: { ...defaultConfig.reward, steps: 8, batchSize: 8, trainPairs: 64, evalPairs: 32, evalEvery: 4 },
  ppo: { ...defaultConfig.ppo, iterations: 3, rolloutBatch: 8, minibatchSize: 4, epochs: 1, evalEvery: 2 },
  eval: { prompts: 16, temperature: 1, shownSamples: 3 },
};

type Check = (v: unknown) => string | null;

const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
const int =
  (lo: number, hi = Number.MAX_SAFE_INTEGER): Check =>
  (v) =>
    isNum(v) && Number.isInteger(v) && v >= lo && v <= hi ? null : hi === Number.MAX_SAFE_INTEGER ? `must be an integer >= ${lo}` : `must be an integer in [${lo}, ${hi}]`;
/** A number in a range; `open` excludes the bounds. */
const num =
  (lo: number, hi: number, open: { lo?: boolean; hi?: boolean } = {}): Check =>
  (v) => {
    const ok = isNum(v) && (open.lo ? v > lo : v >= lo) && (open.hi ? v < hi : v <= hi);
    if (ok) return null;
    if (hi === Infinity) return `must be a number ${open.lo ? ">" : ">="} ${lo}`;
    return `must be a number in ${open.lo ? "(" : "["}${lo}, ${hi}${open.hi ? ")" : "]"}`;
  };
const bool: Check = (v) => (typeof v === "boolean" ? null : "must be true or false");
const oneOf =
  (...xs: string[]): Check =>
  (v) =>
    typeof v === "string" && xs.includes(v) ? null : `must be one of ${xs.map((x) => JSON.stringify(x)).join(", ")}`;
const str: Check = (v) => (typeof v === "string" ? null : "must be a string");
const orNull =
  (c: Check): Check =>
  (v) =>
    v === null ? null : c(v) === null ? null : `${c(v)} or null`;

/** The rule for every leaf (objects with sub-keys are walked; `ppo.adaptiveKl` is an object or null). */
const SPEC = {
  seed: int(0, 2 ** 31 - 1),
  task: {
    minPromptLetters: int(1, 32),
    maxPromptLetters: int(1, 32),
    responseLength: int(1, 64),
    copyProb: num(0, 1),
    hiddenLetters: str,
  },
  trainPrompts: int(4),
  model: { dim: int(1), depth: int(1), heads: int(1), dimHead: (v: unknown) => (int(2)(v) ?? ((v as number) % 2 === 0 ? null : "must be even (rotary embeddings)")), ffMult: int(1) },
  sft: { steps: int(0), batchSize: int(1), learningRate: num(0, Infinity, { lo: true }), warmupSteps: int(0), weightDecay: num(0, Infinity), demosPerPrompt: int(1), checkpointEvery: int(0) },
  reward: {
    steps: int(0),
    batchSize: int(1),
    learningRate: num(0, Infinity, { lo: true }),
    weightDecay: num(0, Infinity),
    trainPairs: int(1),
    evalPairs: int(1),
    pooling: oneOf("mean", "last"),
    loraR: int(0),
    evalEvery: int(0),
    checkpointEvery: int(0),
  },
  ppo: {
    iterations: int(0),
    rolloutBatch: int(1),
    temperature: num(0, Infinity, { lo: true }),
    epochs: int(1),
    minibatchSize: int(1),
    clipEps: num(0, 1, { lo: true, hi: true }),
    valueClip: num(0, Infinity, { lo: true }),
    vfCoef: num(0, Infinity),
    entropyCoef: num(0, Infinity),
    klCoef: num(0, Infinity),
    klEstimator: oneOf("k1", "k3"),
    adaptiveKl: { $nullable: true, target: num(0, Infinity, { lo: true }), horizon: int(1) },
    gamma: num(0, 1),
    lambda: num(0, 1),
    whitenAdvantages: bool,
    rewardClip: orNull(num(0, Infinity, { lo: true })),
    normalizeRewards: bool,
    maxGradNorm: num(0, Infinity),
    learningRate: num(0, Infinity, { lo: true }),
    loraR: int(0),
    evalEvery: int(0),
    checkpointEvery: int(0),
  },
  eval: { prompts: int(1), temperature: num(0, Infinity), shownSamples: int(0) },
} as const;

type Spec = Check | { readonly [k: string]: Spec | boolean };

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const describe = (v: unknown): string => (v === undefined ? "undefined" : JSON.stringify(v) ?? String(v));

/** Deep partial of a config, as read from JSON. */
export type PartialConfig = { [K in keyof RlhfConfig]?: RlhfConfig[K] extends object ? Partial<RlhfConfig[K]> | null : RlhfConfig[K] };

function merge(base: unknown, over: unknown, spec: Spec, path: string, problems: string[], tips: string[]): unknown {
  if (typeof spec === "function") {
    const err = spec(over);
    if (err) problems.push(`${path}: ${err}, got ${describe(over)}`);
    return over;
  }
  const nullable = (spec as Record<string, unknown>).$nullable === true;
  if (over === null && nullable) return null;
  if (!isObj(over)) {
    problems.push(`${path}: must be an object${nullable ? " or null" : ""}, got ${describe(over)}`);
    return base;
  }
  const keys = Object.keys(spec).filter((k) => k !== "$nullable");
  const out: Record<string, unknown> = {};
  const b = isObj(base) ? base : {};
  for (const k of Object.keys(over)) {
    if (!keys.includes(k)) {
      problems.push(`${path ? path + "." : ""}${k}: unknown key`);
      tips.push(`Tip: the keys of ${path || "the config"} are ${keys.join(", ")}`);
    }
  }
  for (const k of keys) {
    const sub = (spec as Record<string, Spec>)[k]!;
    const p = path ? `${path}.${k}` : k;
    if (k in over && over[k] !== undefined) out[k] = merge(b[k], over[k], sub, p, problems, tips);
    else if (k in b) out[k] = b[k];
    else if (typeof sub === "function") problems.push(`${p}: missing`);
    else out[k] = merge(undefined, {}, sub, p, problems, tips);
  }
  return out;
}

/**
 * The defaults (or `base`) with `partial` merged over them, validated: a deep merge (nested objects
 * merge key by key, `null` replaces a nullable object). Throws one RlhfConfigError listing every problem.
 */
export function resolveConfig(partial: unknown = {}, base: RlhfConfig = defaultConfig): RlhfConfig {
  const problems: string[] = [];
  const tips: string[] = [];
  const merged = merge(base, partial ?? {}, SPEC as unknown as Spec, "", problems, tips) as RlhfConfig;
  if (problems.length === 0) {
    try {
      checkTaskConfig(merged.task);
    } catch (e) {
      problems.push((e as Error).message.replace(/^task: /, "task."));
    }
    if (merged.ppo.minibatchSize > merged.ppo.rolloutBatch) {
      problems.push(`ppo.minibatchSize: must be <= ppo.rolloutBatch (${merged.ppo.rolloutBatch}), got ${merged.ppo.minibatchSize}`);
    }
  }
  if (problems.length > 0) {
    const tip = [...new Set(tips)].join("\n");
    throw new RlhfConfigError(`rlhf config: ${problems.length === 1 ? problems[0] : `${problems.length} problems:\n  ${problems.join("\n  ")}`}${tip ? `\n${tip}` : ""}`);
  }
  return merged;
}

/** Reads a JSON config file (a partial config) and resolves it over `base` (default: the defaults). */
export async function loadConfigFile(path: string, base: RlhfConfig = defaultConfig): Promise<RlhfConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new RlhfConfigError(`rlhf config: cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new RlhfConfigError(`rlhf config: ${path} must be JSON, got a parse error: ${(e as Error).message}`);
  }
  if (!isObj(json)) throw new RlhfConfigError(`rlhf config: ${path} must hold a JSON object, got ${describe(json)}`);
  return resolveConfig(json, base);
}

/** A stable JSON string of a value (object keys sorted), for comparing configs. */
export function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(",")}]`;
  if (isObj(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stableJson(v[k])}`).join(",")}}`;
  return JSON.stringify(v) ?? "null";
}

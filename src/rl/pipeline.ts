/**
 * @file `runRlhf(options)`: the RLHF pipeline behind `webgrad rlhf` — SFT → reward model → PPO on the
 * embedded toy task (task.ts), each stage checkpointed (atomically, src/io) and skipped on a rerun
 * when its checkpoint matches the config, then a held-out evaluation of SFT vs PPO and the report
 * (report.ts). This is one of the impure modules (files, clock, terminal); the maths lives in the pure
 * losses it calls: `palm.loss` (SFT), `rewardModelLoss` (reward.ts), `ppoUpdate` (ppo.ts).
 *
 * Read first: `runRlhf` (setup, the three stages, evaluation, report), then each stage function.
 *
 * Determinism: the data (prompts, demonstrations, preference pairs, each step's batch) comes from
 * seeded host PRNGs (`rngFor(seed, purpose, step)`); every model key derives from
 * `random.key(config.seed)` by `foldIn` with a fixed number per use (SFT init 1, RM init 3, PPO init 5,
 * PPO rollouts 6, final evaluation 7, periodic held-out evaluation 8, PPO minibatch shuffles 9) and the
 * step number, so a step's randomness does not depend on whether the run was interrupted before it.
 *
 * Resuming, two levels. A finished stage's checkpoint (`<stage>.safetensors`) holds its params, its
 * history and a fingerprint of the config it depends on (its own section and every earlier stage's,
 * `checkpointEvery` excepted): a rerun with the same config skips it, a changed section reruns that
 * stage and everything after it. A stage in progress saves `<stage>.partial.safetensors` (params,
 * optimiser state, step, history) every `checkpointEvery` steps and when interrupted (`interrupt`,
 * Ctrl-C in the CLI); a rerun continues from it and, on CPU, reproduces the uninterrupted run bit for
 * bit (tests/rlhf-pipeline.test.ts).
 *
 * Outputs in `out`: sft.safetensors, reward.safetensors, ppo.safetensors (stage checkpoints),
 * report.html (self-contained: plots, summary, samples), summary.json (the numbers), config.json (the
 * resolved config: `--config` it to rerun exactly).
 */
import { existsSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import cliProgress from "cli-progress";
import { Value } from "../autodiff/core.js";
import { ArgumentError } from "../autodiff/errors.js";
import { evalShape, jit } from "../autodiff/jit.js";
import { valueAndGrad } from "../autodiff/transpose.js";
import * as tree from "../autodiff/tree.js";
import "../ops/hooks.js";
import "../ops/devices.js";
import { Array, setDefaultDevice } from "../ops/array.js";
import { dispose } from "../ops/memory.js";
import * as np from "../ops/np.js";
import * as random from "../ops/random.js";
import * as optim from "../nn/optim.js";
import * as palm from "../nn/palm.js";
import type { PalmConfig, PalmParams } from "../nn/palm.js";
import { generate } from "../nn/generate.js";
import { loadCheckpoint, saveCheckpoint } from "../io/checkpoint.js";
import * as reward from "./reward.js";
import type { RewardModelConfig, RewardModelParams } from "./reward.js";
import { sequenceLogProbs } from "./common.js";
import { defaultConfig, PartialConfig, quickConfig, resolveConfig, RlhfConfig, RlhfConfigError, loadConfigFile, stableJson } from "./config.js";
import { decode, PAD, padRows, rng, ToyTask } from "./task.js";
import type { PreferencePair } from "./task.js";
import { renderReport, terminalSamples, terminalTable } from "./report.js";
import type { PpoHistory, RewardHistory, RlhfReportData, RlhfSummary, SampleRow, SftHistory } from "./report.js";
import { initPolicy, initPpo, ppoUpdate } from "./ppo.js";
import type { InitPolicyOptions, PpoConfig, PpoState } from "./ppo.js";
import { collectRollouts, joinPolicy, splitPolicy } from "./rollout.js";
import type { PolicyModel, PolicyWeights } from "./rollout.js";

export type Stage = "sft" | "reward" | "ppo";
export const STAGES: readonly Stage[] = ["sft", "reward", "ppo"];

export interface RlhfOptions {
  /** A (partial) config merged over the defaults (or over the quick config with `quick`). */
  config?: PartialConfig | RlhfConfig;
  /** A JSON config file (a partial config); `config` is merged over it. */
  configFile?: string;
  /** Start from the tiny quick config (seconds) instead of the main job's. */
  quick?: boolean;
  /** "cpu" (default) or "webgpu". */
  device?: "cpu" | "webgpu";
  /** Output directory (default "rlhf-out"); null writes nothing (no checkpoints, no report). */
  out?: string | null;
  /** Ignore existing stage checkpoints and run every stage (default false: resume). */
  fresh?: boolean;
  /** Stop after this stage (checkpointed; a rerun continues with the next one). */
  stopAfter?: Stage;
  /** Progress bars (default: when stderr is a terminal and not quiet). */
  progress?: boolean;
  quiet?: boolean;
  /** Where log lines go (default stdout). */
  log?: (line: string) => void;
  /**
   * Asked after every step / iteration: returning true stops the run there, with the stage's progress
   * saved to `<stage>.partial.safetensors`; a rerun continues from it (the CLI wires Ctrl-C to this).
   */
  interrupt?: (stage: Stage, step: number) => boolean;
}

export type StageStatus = "run" | "resumed" | "not run" | "interrupted";

export interface RlhfResult {
  config: RlhfConfig;
  /** What each stage did in this invocation. */
  stages: Record<Stage, StageStatus>;
  /** Null when interrupted. */
  summary: RlhfSummary | null;
  report: RlhfReportData | null;
  /** Paths written (null without `out`). */
  reportPath: string | null;
  out: string | null;
  sftParams: PalmParams | null;
  rewardParams: RewardModelParams | null;
  policy: TrainedPolicy | null;
}

/** Everything the stages share. */
export interface PipelineContext {
  cfg: RlhfConfig;
  task: ToyTask;
  palmConfig: PalmConfig;
  root: random.Key;
  trainPrompts: number[][];
  evalPrompts: number[][];
  out: string | null;
  /** A log line (above the progress bars when they are on). */
  say: (line: string) => void;
  /** A progress bar for a stage (starting at `start` when resumed): update(value, info) and done(). */
  bar: (name: string, total: number, start?: number) => { update: (v: number, info?: string) => void; done: () => void };
  deviceName: string;
  /** Asked after every step: true stops the run (progress saved). */
  interrupt: (stage: Stage, step: number) => boolean;
  /** Whether a partial checkpoint of the current stage may be continued (false once an earlier stage reran). */
  resumePartial: boolean;
}

/** The config sections stage s depends on (its fingerprint: stored in its checkpoint). */
export function stageFingerprint(cfg: RlhfConfig, s: Stage): string {
  // How often progress is saved changes nothing the stage computes.
  const strip = <T extends { checkpointEvery: number }>(x: T): Omit<T, "checkpointEvery"> => {
    const { checkpointEvery: _, ...rest } = x;
    return rest;
  };
  const base = { seed: cfg.seed, task: cfg.task, trainPrompts: cfg.trainPrompts, model: cfg.model, sft: strip(cfg.sft) };
  if (s === "sft") return stableJson(base);
  if (s === "reward") return stableJson({ ...base, reward: strip(cfg.reward) });
  return stableJson({ ...base, reward: strip(cfg.reward), ppo: strip(cfg.ppo) });
}

/** The PaLM config of the task's model. */
export function palmConfigOf(cfg: RlhfConfig, task: ToyTask): PalmConfig {
  return { numTokens: task.vocabSize, ...cfg.model, crossEntropyIgnoreIndex: null };
}

/** The reward model's config for a pipeline config. */
export function rewardModelConfigOf(cfg: RlhfConfig, palmConfig: PalmConfig): RewardModelConfig {
  return { palm: palmConfig, pooling: cfg.reward.pooling, loraScope: cfg.reward.loraR > 0 ? "reward" : null, ...(cfg.reward.loraR > 0 ? { loraR: cfg.reward.loraR } : {}) };
}

/** Resolves the options' config: defaults (or quick) ← config file ← options.config. */
export async function configOf(o: Pick<RlhfOptions, "config" | "configFile" | "quick">): Promise<RlhfConfig> {
  let base = o.quick ? quickConfig : defaultConfig;
  if (o.configFile) base = await loadConfigFile(o.configFile, base);
  return resolveConfig(o.config ?? {}, base);
}

/** Number of scalars in a tree of arrays or ShapedArrays. */
const countParams = (t: unknown): number => tree.leaves<{ shape: readonly number[] }>(t).reduce((a, x) => a + x.shape.reduce((p, d) => p * d, 1), 0);
const readNums = async (x: Value): Promise<number[]> => globalThis.Array.from(await (x as Array).data(), Number);
const num = async (x: Value): Promise<number> => Number(await (x as Array).item());
const mean = (xs: readonly number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
const stderr = (xs: readonly number[]): number => {
  if (xs.length < 2) return NaN;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1) / xs.length);
};

/** Mean of one statistic over some PPO iterations. */
const tail = (its: readonly Record<string, number>[], k: string): number => mean(its.map((x) => x[k] ?? NaN));

/** JSON history in a checkpoint: NaN / Infinity survive as strings. */
const toJson = (h: unknown): string => JSON.stringify(h, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v));
const fromJson = <T>(s: string): T => JSON.parse(s, (_k, v) => (v === "NaN" ? NaN : v === "Infinity" ? Infinity : v === "-Infinity" ? -Infinity : v)) as T;

/** Loads a stage checkpoint when it exists and its fingerprint matches; null otherwise (with a log line why). */
async function loadStage<P, H>(ctx: PipelineContext, s: Stage, like: () => unknown): Promise<{ params: P; history: H } | null> {
  if (!ctx.out) return null;
  const path = join(ctx.out, `${s}.safetensors`);
  if (!existsSync(path)) return null;
  const ck = await loadCheckpoint(path, { like: (stored) => ((stored.extra as { fingerprint?: string } | undefined)?.fingerprint === stageFingerprint(ctx.cfg, s) ? { params: like() } : {}) });
  const extra = ck.extra as { fingerprint?: string; history?: string } | undefined;
  if (extra?.fingerprint !== stageFingerprint(ctx.cfg, s) || typeof extra.history !== "string") {
    ctx.say(`${s}: ${path} was made with a different config; running the stage again`);
    return null;
  }
  return { params: ck.params as P, history: fromJson<H>(extra.history) };
}

async function saveStage(ctx: PipelineContext, s: Stage, params: unknown, history: unknown): Promise<void> {
  if (!ctx.out) return;
  await saveCheckpoint(join(ctx.out, `${s}.safetensors`), {
    params,
    config: ctx.palmConfig,
    extra: { stage: s, fingerprint: stageFingerprint(ctx.cfg, s), history: toJson(history) },
  });
  await rm(partialPath(ctx, s), { force: true });
}

/** A stage in progress: what its loop needs to continue exactly where it stopped. */
export interface StageProgress<H> {
  params: unknown;
  optState: unknown;
  /** Steps (iterations) done. */
  step: number;
  /** The history so far. */
  history: H;
  /** Other loop state (numbers), e.g. PPO's current KL coefficient. */
  state: Record<string, number>;
}

const partialPath = (ctx: PipelineContext, s: Stage): string => join(ctx.out ?? ".", `${s}.partial.safetensors`);

/** Saves a stage in progress (atomically): every `checkpointEvery` steps and when interrupted. */
async function savePartial<H>(ctx: PipelineContext, s: Stage, p: StageProgress<H>): Promise<void> {
  if (!ctx.out) return;
  await saveCheckpoint(partialPath(ctx, s), {
    params: p.params,
    optState: p.optState,
    step: p.step,
    config: ctx.palmConfig,
    extra: { stage: s, fingerprint: stageFingerprint(ctx.cfg, s), history: toJson(p.history), state: toJson(p.state) },
  });
}

/**
 * The saved progress of an unfinished stage, when there is one made with the same config (and the
 * stages before it were not rerun: `ctx.resumePartial`); `like` gives the { params, optState } template.
 */
async function loadPartial<H>(ctx: PipelineContext, s: Stage, like: () => { params: unknown; optState: unknown }): Promise<StageProgress<H> | null> {
  if (!ctx.out || !ctx.resumePartial) return null;
  const path = partialPath(ctx, s);
  if (!existsSync(path)) return null;
  const fp = stageFingerprint(ctx.cfg, s);
  const ck = await loadCheckpoint(path, { like: (stored) => ((stored.extra as { fingerprint?: string } | undefined)?.fingerprint === fp ? like() : {}) });
  const extra = ck.extra as { fingerprint?: string; history?: string; state?: string } | undefined;
  if (extra?.fingerprint !== fp || typeof extra.history !== "string") {
    ctx.say(`${s}: ignoring ${path}, made with a different config`);
    return null;
  }
  ctx.say(`${s}: continuing from step ${ck.step ?? 0} (${path})`);
  return { params: ck.params, optState: ck.optState, step: ck.step ?? 0, history: fromJson<H>(extra.history), state: fromJson<Record<string, number>>(extra.state ?? "{}") };
}

/** After step `step` of stage s: a periodic partial checkpoint; true when the run was interrupted (progress saved). */
async function checkpointOrStop<H>(ctx: PipelineContext, s: Stage, every: number, last: boolean, progress: () => StageProgress<H>): Promise<boolean> {
  const p = (): StageProgress<H> => progress();
  if (!last && ctx.interrupt(s, p().step)) {
    await savePartial(ctx, s, p());
    ctx.say(`${s}: interrupted after step ${p().step}${ctx.out ? `; progress saved to ${partialPath(ctx, s)}, rerun to continue` : ""}`);
    return true;
  }
  if (!last && every > 0 && p().step % every === 0) await savePartial(ctx, s, p());
  return false;
}

/** AdamW with linear warm-up then cosine decay to lr/10 (constant when too few steps), global-norm clip 1. */
function makeOptimizer(lr: number, steps: number, warmup: number, weightDecay: number): optim.GradientTransformation {
  const w = Math.min(warmup, Math.max(0, steps - 1));
  const schedule = steps > 1 ? optim.warmupCosineDecaySchedule({ initValue: w > 0 ? 0 : lr, peakValue: lr, warmupSteps: w, decaySteps: steps, endValue: lr / 10 }) : optim.constantSchedule(lr);
  const decayMask = (p: unknown): unknown => tree.map((x: Value | null) => x !== null && x.aval.ndim >= 2, p);
  return optim.chain(optim.clipByGlobalNorm(1), optim.adamw(schedule, { weightDecay, mask: decayMask }));
}

// ---------------------------------------------------------------------------------------------------
// SFT

/** [b, L] tokens and the [b, L] loss mask (true on response tokens) of prompt+response rows. */
function sftBatch(rows: readonly { tokens: number[]; promptLength: number }[], len: number): { tokens: Array; lossMask: Array } {
  const { data } = padRows(rows.map((r) => r.tokens), len, PAD);
  const mask = new globalThis.Array<boolean>(rows.length * len).fill(false);
  rows.forEach((r, i) => {
    for (let t = r.promptLength; t < r.tokens.length; t++) mask[i * len + t] = true;
  });
  return {
    tokens: np.array(data, { dtype: "int32", shape: [rows.length, len] }) as Array,
    lossMask: np.array(mask, { dtype: "bool", shape: [rows.length, len] }) as Array,
  };
}

/** SFT's history while it runs (saved in partial checkpoints). */
interface SftProgress {
  loss: number[];
  seconds: number;
}

/**
 * Supervised fine-tuning on the demonstrations: next-token loss on the response tokens only. Returns
 * null when interrupted (progress saved).
 */
export async function sftStage(ctx: PipelineContext): Promise<{ params: PalmParams; history: SftHistory } | null> {
  const { cfg, task, palmConfig } = ctx;
  const c = cfg.sft;
  const demos = task.demonstrations(ctx.trainPrompts, cfg.seed * 1000 + 3, c.demosPerPrompt);
  const heldOut = task.demonstrations(ctx.evalPrompts, cfg.seed * 1000 + 13, 1);
  const len = task.maxSequenceTokens;
  const opt = makeOptimizer(c.learningRate, c.steps, c.warmupSteps, c.weightDecay);
  const lossFn = (p: PalmParams, tokens: Value, lossMask: Value): Value => palm.loss(p, tokens, { config: palmConfig, ignoreIndex: null, lossMask });
  const step = jit(
    (p: PalmParams, s: unknown, tokens: Value, lossMask: Value): [PalmParams, unknown, Value] => {
      const [l, g] = valueAndGrad(lossFn)(p, tokens, lossMask) as [Value, PalmParams];
      const [u, s2] = opt.update(g, s, p);
      return [optim.applyUpdates(p, u), s2, l];
    },
    { donateArgnums: [0, 1] },
  );
  const resumed = await loadPartial<SftProgress>(ctx, "sft", () =>
    evalShape(() => {
      const p = palm.init(random.key(0), palmConfig);
      return { params: p, optState: opt.init(p) };
    }),
  );
  let params = (resumed?.params as PalmParams | undefined) ?? palm.init(random.foldIn(ctx.root, 1), palmConfig);
  let optState: unknown = resumed?.optState ?? opt.init(params);
  const losses: number[] = resumed?.history.loss.slice() ?? [];
  const first = resumed?.step ?? 0;
  const bar = ctx.bar("SFT", c.steps, first);
  const t0 = performance.now();
  let tStart = t0;
  const progress = (i: number): StageProgress<SftProgress> => ({
    params,
    optState,
    step: i,
    history: { loss: losses, seconds: (resumed?.history.seconds ?? 0) + (performance.now() - t0) / 1000 },
    state: {},
  });
  for (let i = first; i < c.steps; i++) {
    const r = rngFor(cfg.seed, 2, i);
    const rows = globalThis.Array.from({ length: c.batchSize }, () => demos[Math.floor(r() * demos.length)]!);
    const b = sftBatch(rows, len);
    const [p, s, l] = step(params, optState, b.tokens, b.lossMask);
    params = p;
    optState = s;
    const loss = await num(l);
    b.tokens.dispose();
    b.lossMask.dispose();
    if (i === first) tStart = performance.now();
    losses.push(loss);
    if (!Number.isFinite(loss)) throw new ArgumentError(`rlhf: the SFT loss became ${loss} at step ${i + 1}\nTip: lower sft.learningRate`);
    bar.update(i + 1, `loss ${loss.toFixed(3)}`);
    if (await checkpointOrStop(ctx, "sft", c.checkpointEvery, i + 1 === c.steps, () => progress(i + 1))) return null;
  }
  bar.done();
  const seconds = (resumed?.history.seconds ?? 0) + (performance.now() - t0) / 1000;
  const timedSteps = c.steps - first - 1;
  const timed = (performance.now() - tStart) / 1000;
  const hb = sftBatch(heldOut, len);
  const heldOutLoss = await num(jit(lossFn)(params, hb.tokens, hb.lossMask));
  const history: SftHistory = { loss: losses, heldOutLoss, seconds, tokensPerSecond: timedSteps > 0 ? (timedSteps * c.batchSize * len) / timed : NaN };
  ctx.say(`SFT: ${c.steps} steps in ${seconds.toFixed(1)}s, final loss ${(losses.at(-1) ?? NaN).toFixed(3)}, held-out loss ${heldOutLoss.toFixed(3)}`);
  return { params, history };
}

/** A host PRNG for (seed, purpose, step): independent streams that a resumed run reproduces. */
function rngFor(seed: number, purpose: number, step: number): () => number {
  // A simple hash of the three numbers into one 32-bit seed (splitmix-like mixing).
  let h = (seed * 0x9e3779b1) ^ (purpose * 0x85ebca77) ^ (step * 0xc2b2ae3d);
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  h ^= h >>> 16;
  return rng(h >>> 0);
}

// ---------------------------------------------------------------------------------------------------
// Reward model

const stripMargin = (p: PreferencePair): reward.PreferencePair => ({ prompt: p.prompt, chosen: p.chosen, rejected: p.rejected });

/** The reward model's history while it trains (saved in partial checkpoints). */
interface RewardProgress {
  loss: number[];
  trainAccuracy: number[];
  heldOutAccuracy: [number, number][];
  seconds: number;
}

/**
 * Reward-model training on preference pairs labelled by the hidden rule (Bradley–Terry). Returns null
 * when interrupted (progress saved).
 */
export async function rewardStage(ctx: PipelineContext, sftParams: PalmParams): Promise<{ params: RewardModelParams; history: RewardHistory } | null> {
  const { cfg, task, palmConfig } = ctx;
  const c = cfg.reward;
  const rmConfig = rewardModelConfigOf(cfg, palmConfig);
  const trainPairs = task.preferencePairs(ctx.trainPrompts, cfg.seed * 1000 + 4, c.trainPairs);
  const evalPairs = task.preferencePairs(ctx.evalPrompts, cfg.seed * 1000 + 14, c.evalPairs);
  const len = task.maxSequenceTokens;
  let params = reward.init(random.foldIn(ctx.root, 3), rmConfig, { fromPalm: sftParams });
  const mask = reward.trainableMask(params, rmConfig);
  let [trainable, frozen] = optim.partition(params, mask);
  const opt = makeOptimizer(c.learningRate, c.steps, Math.min(10, Math.floor(c.steps / 10)), c.weightDecay);
  let optState: unknown = opt.init(trainable);
  const resumed = await loadPartial<RewardProgress>(ctx, "reward", () =>
    evalShape(() => {
      const p0 = reward.init(random.key(0), rmConfig, { fromPalm: palm.init(random.key(0), palmConfig) });
      const [tr0] = optim.partition(p0, reward.trainableMask(p0, rmConfig));
      return { params: tr0, optState: opt.init(tr0) };
    }),
  );
  if (resumed) {
    trainable = resumed.params as RewardModelParams;
    optState = resumed.optState;
  }
  const B = c.batchSize;
  const lossFn = (tr: RewardModelParams, fr: RewardModelParams, tokens: Value, pl: Value, tl: Value, m: Value): [Value, reward.RewardStepAux] =>
    reward.rewardModelLoss(tr, fr, { tokens, promptLengths: pl, totalLengths: tl, mask: m, numPairs: B }, rmConfig);
  // Not donated: with full fine-tuning the trainable trunk starts as the SFT params, which PPO still needs.
  const step = jit((tr: RewardModelParams, fr: RewardModelParams, s: unknown, tokens: Value, pl: Value, tl: Value, m: Value) => {
    const [[l, aux], g] = valueAndGrad(lossFn, { hasAux: true })(tr, fr, tokens, pl, tl, m) as [[Value, reward.RewardStepAux], RewardModelParams];
    const [u, s2] = opt.update(g, s, tr);
    return [optim.applyUpdates(tr, u), s2, l, aux.accuracy] as const;
  });
  const scoreJit = jit((p: RewardModelParams, tokens: Value, pl: Value, m: Value) => reward.apply(p, tokens, { config: rmConfig, promptLengths: pl, mask: m }));
  const evalBatch = reward.preferenceBatch(evalPairs.map(stripMargin), { padTo: len });
  const evaluate = async (): Promise<number> => {
    const p = optim.combine(trainable, frozen);
    const r = await readNums(scoreJit(p, evalBatch.tokens, evalBatch.promptLengths, evalBatch.mask));
    const n = evalBatch.numPairs;
    let right = 0;
    for (let i = 0; i < n; i++) if (r[i]! > r[n + i]!) right++;
    return right / n;
  };

  const losses: number[] = resumed?.history.loss.slice() ?? [];
  const accs: number[] = resumed?.history.trainAccuracy.slice() ?? [];
  const heldOut: [number, number][] = resumed?.history.heldOutAccuracy.slice() ?? [];
  const first = resumed?.step ?? 0;
  const bar = ctx.bar("reward model", c.steps, first);
  const t0 = performance.now();
  let tStart = t0;
  const progress = (i: number): StageProgress<RewardProgress> => ({
    params: trainable,
    optState,
    step: i,
    history: { loss: losses, trainAccuracy: accs, heldOutAccuracy: heldOut, seconds: (resumed?.history.seconds ?? 0) + (performance.now() - t0) / 1000 },
    state: {},
  });
  for (let i = first; i < c.steps; i++) {
    const r = rngFor(cfg.seed, 4, i);
    const batch = reward.preferenceBatch(
      globalThis.Array.from({ length: B }, () => stripMargin(trainPairs[Math.floor(r() * trainPairs.length)]!)),
      { padTo: len },
    );
    const [tr, s, l, acc] = step(trainable, frozen, optState, batch.tokens, batch.promptLengths, batch.totalLengths, batch.mask);
    trainable = tr;
    optState = s;
    const loss = await num(l);
    if (i === first) tStart = performance.now();
    losses.push(loss);
    accs.push(await num(acc));
    dispose(batch);
    if (!Number.isFinite(loss)) throw new ArgumentError(`rlhf: the reward-model loss became ${loss} at step ${i + 1}\nTip: lower reward.learningRate`);
    let info = `loss ${loss.toFixed(3)}`;
    if ((c.evalEvery > 0 && (i + 1) % c.evalEvery === 0) || i + 1 === c.steps) {
      const a = await evaluate();
      heldOut.push([i + 1, a]);
    }
    if (heldOut.length) info += ` | held-out acc ${(100 * heldOut.at(-1)![1]).toFixed(1)}%`;
    bar.update(i + 1, info);
    if (await checkpointOrStop(ctx, "reward", c.checkpointEvery, i + 1 === c.steps, () => progress(i + 1))) return null;
  }
  bar.done();
  const seconds = (resumed?.history.seconds ?? 0) + (performance.now() - t0) / 1000;
  const timedSteps = c.steps - first - 1;
  const timed = (performance.now() - tStart) / 1000;
  const finalAccuracy = heldOut.at(-1)?.[1] ?? (await evaluate());
  params = optim.combine(trainable, frozen);
  const history: RewardHistory = { loss: losses, trainAccuracy: accs, heldOutAccuracy: heldOut, finalAccuracy, seconds, pairsPerSecond: timedSteps > 0 ? (timedSteps * B) / timed : NaN };
  ctx.say(`reward model: ${c.steps} steps in ${seconds.toFixed(1)}s, held-out pairwise accuracy ${(100 * finalAccuracy).toFixed(1)}% (chance 50%)`);
  return { params, history };
}

/** A batch scorer with the reward model: [b] rewards of prompt+response sequences. */
export function rewardScorer(rmConfig: RewardModelConfig, params: RewardModelParams): (tokens: Value, promptLengths: Value, totalLengths: Value) => Value {
  const f = jit((p: RewardModelParams, tokens: Value, pl: Value, tl: Value) => {
    const n = tokens.aval.shape[1]!;
    const pos = np.expandDims(np.arange(0, n, 1, { dtype: "int32" }), 0); // [1, n]
    const m = np.less(pos, np.expandDims(tl, 1)); // [b, n] valid tokens
    return reward.apply(p, tokens, { config: rmConfig, promptLengths: pl, mask: m });
  });
  return (tokens, pl, tl) => f(params, tokens, pl, tl);
}

// ---------------------------------------------------------------------------------------------------
// Evaluation

/** The LoRA options that run a policy's actor with palm.apply / generate. */
function actorOptions(policy: TrainedPolicy): { lora: PolicyModel["lora"]; loraScope: string | null } {
  const scope = splitPolicy(policy).spec.actorScope;
  return { lora: scope === null ? null : policy.lora, loraScope: scope };
}

/** Samples of a model on prompts: completions (eos included) and sequences. */
async function sampleModel(params: PalmParams, prompts: number[][], key: random.Key, ctx: PipelineContext, policy: TrainedPolicy | null) {
  return generate(params, prompts, {
    config: ctx.palmConfig,
    key,
    maxNewTokens: ctx.task.maxNewTokens,
    eosToken: ctx.task.eosToken,
    padToken: PAD,
    temperature: ctx.cfg.eval.temperature,
    ...(policy ? actorOptions(policy) : {}),
  });
}

/**
 * The held-out evaluation: one sample per held-out prompt from the SFT model and from the PPO policy
 * (same key), hidden scores, win-rate, RM rewards, and KL(PPO || SFT) on the PPO samples.
 */
export async function evaluate(
  ctx: PipelineContext,
  sftParams: PalmParams,
  rm: { params: RewardModelParams; history: RewardHistory } | null,
  policy: TrainedPolicy | null,
): Promise<{ summary: RlhfSummary; samples: SampleRow[] }> {
  const { task, cfg } = ctx;
  const prompts = ctx.evalPrompts;
  const key = random.foldIn(ctx.root, 7);
  const scorer = rm ? rewardScorer(rewardModelConfigOf(cfg, ctx.palmConfig), rm.params) : null;
  const run = async (params: PalmParams, pol: TrainedPolicy | null) => {
    const g = await sampleModel(params, prompts, key, ctx, pol);
    const scores = g.completions.map((c) => task.score(c));
    const echo = g.completions.map((c, i) => task.echoRate(prompts[i]!, c));
    const pl = np.array(Int32Array.from(g.promptLengths), { dtype: "int32" });
    const tl = np.array(Int32Array.from(g.promptLengths.map((p, i) => p + g.completions[i]!.length)), { dtype: "int32" });
    const rewards = scorer ? await readNums(scorer(g.sequences, pl, tl)) : scores.map(() => NaN);
    return { g, scores, echo, rewards, pl, tl };
  };
  const sft = await run(sftParams, null);
  const ppo = policy ? await run(policy.params, policy) : null;
  let kl = NaN;
  if (ppo && policy) {
    // Sequence KL(π || π_sft) = E_π[Σ_t log π(a_t) − log π_sft(a_t)] over the response tokens (k1 on π's samples).
    const tokens = ppo.g.sequences;
    const n = tokens.aval.shape[1]!;
    const lp = sequenceLogProbs(palm.apply(policy.params, tokens, { config: ctx.palmConfig, ...actorOptions(policy) }), tokens); // [b, n-1]
    const ref = sequenceLogProbs(palm.apply(sftParams, tokens, { config: ctx.palmConfig }), tokens); // [b, n-1]
    const pos = np.expandDims(np.arange(1, n, 1, { dtype: "int32" }), 0); // [1, n-1]: the token each entry predicts
    const act = np.logicalAnd(np.greaterEqual(pos, np.expandDims(ppo.pl, 1)), np.less(pos, np.expandDims(ppo.tl, 1))); // [b, n-1]
    kl = (await num(np.sum(np.where(act, np.subtract(lp, ref), 0)))) / prompts.length;
  }
  let wins = 0;
  if (ppo) sft.scores.forEach((s, i) => (wins += ppo.scores[i]! > s ? 1 : ppo.scores[i]! === s ? 0.5 : 0));
  const summary: RlhfSummary = {
    sftScore: mean(sft.scores),
    ppoScore: ppo ? mean(ppo.scores) : NaN,
    sftScoreStderr: stderr(sft.scores),
    ppoScoreStderr: ppo ? stderr(ppo.scores) : NaN,
    winRate: ppo ? wins / prompts.length : NaN,
    kl,
    sftReward: mean(sft.rewards),
    ppoReward: ppo ? mean(ppo.rewards) : NaN,
    sftEcho: mean(sft.echo),
    ppoEcho: ppo ? mean(ppo.echo) : NaN,
    rmAccuracy: rm?.history.finalAccuracy ?? NaN,
    prompts: prompts.length,
  };
  const shown = Math.min(cfg.eval.shownSamples, prompts.length);
  const samples: SampleRow[] = globalThis.Array.from({ length: shown }, (_, i) => ({
    prompt: decode(prompts[i]!),
    sft: decode(sft.g.completions[i]!),
    sftScore: sft.scores[i]!,
    sftReward: sft.rewards[i]!,
    ppo: ppo ? decode(ppo.g.completions[i]!) : "",
    ppoScore: ppo ? ppo.scores[i]! : NaN,
    ppoReward: ppo ? ppo.rewards[i]! : NaN,
  }));
  return { summary, samples };
}

/** Mean hidden score of a policy's samples on the held-out prompts (PPO's periodic evaluation). */
export async function heldOutScore(ctx: PipelineContext, policy: TrainedPolicy, iteration: number): Promise<number> {
  const g = await sampleModel(policy.params, ctx.evalPrompts, random.foldIn(random.foldIn(ctx.root, 8), iteration), ctx, policy);
  return mean(g.completions.map((c) => ctx.task.score(c)));
}

// ---------------------------------------------------------------------------------------------------
// PPO

/** The trained policy: a PolicyModel (actor = `params` with LoRA scope `actorScope`, or full fine-tuning). */
export type TrainedPolicy = PolicyModel;

export interface PpoStageResult {
  policy: TrainedPolicy;
  history: PpoHistory;
}

/** The ppo.ts config of a pipeline config. */
export function ppoConfigOf(cfg: RlhfConfig): PpoConfig {
  const p = cfg.ppo;
  return {
    epochs: p.epochs,
    minibatchSize: p.minibatchSize,
    clipEps: p.clipEps,
    valueClip: p.valueClip,
    vfCoef: p.vfCoef,
    entropyCoef: p.entropyCoef,
    klCoef: p.klCoef,
    klEstimator: p.klEstimator,
    adaptiveKl: p.adaptiveKl,
    gamma: p.gamma,
    lambda: p.lambda,
    whitenAdvantages: p.whitenAdvantages,
    rewardClip: p.rewardClip,
    normalizeRewards: p.normalizeRewards,
    maxGradNorm: p.maxGradNorm,
    learningRate: p.learningRate,
  };
}

/** How the policy is built from the SFT model: LoRA actor/critic scopes of rank ppo.loraR, or full fine-tuning (loraR 0). */
function policyOptions(cfg: RlhfConfig): InitPolicyOptions {
  return cfg.ppo.loraR > 0 ? { actorScope: "actor", criticScope: "critic", loraR: cfg.ppo.loraR } : { actorScope: null, criticScope: "critic", loraR: 8 };
}

function policyTemplateModel(ctx: PipelineContext, sft: PalmParams): PolicyModel {
  return initPolicy(random.key(0), sft, ctx.palmConfig, policyOptions(ctx.cfg));
}

/** Shapes of the policy's weights (the template a ppo checkpoint is checked against). */
function policyTemplate(ctx: PipelineContext): unknown {
  return evalShape(() => splitPolicy(policyTemplateModel(ctx, palm.init(random.key(0), ctx.palmConfig))).weights);
}

/** PPO's history while it runs (saved in partial checkpoints). */
interface PpoProgress {
  iterations: Record<string, number>[];
  heldOutScore: [number, number][];
  seconds: number;
}

/**
 * PPO against the reward model: each iteration samples one response per prompt for a batch of
 * training prompts, scores them with the RM, and runs `ppoUpdate` (KL-penalised rewards, GAE, clipped
 * surrogate). The hidden rule is only *measured* (rollouts and held-out prompts), never optimised.
 */
export async function ppoStage(ctx: PipelineContext, sftParams: PalmParams, rmParams: RewardModelParams): Promise<PpoStageResult | null> {
  const { cfg, task } = ctx;
  const c = cfg.ppo;
  const pc = ppoConfigOf(cfg);
  let state: PpoState = initPpo(random.foldIn(ctx.root, 5), sftParams, ctx.palmConfig, pc, policyOptions(cfg));
  const spec = splitPolicy(state.policy).spec;
  const resumed = await loadPartial<PpoProgress>(ctx, "ppo", () =>
    evalShape(() => {
      const st = initPpo(random.key(0), palm.init(random.key(0), ctx.palmConfig), ctx.palmConfig, pc, policyOptions(cfg));
      return { params: splitPolicy(st.policy).weights, optState: st.optState };
    }),
  );
  if (resumed) {
    state = { policy: joinPolicy(resumed.params as PolicyWeights, spec), reference: sftParams, optState: resumed.optState, klCoef: resumed.state.klCoef!, step: resumed.step };
  }
  const scorer = rewardScorer(rewardModelConfigOf(cfg, ctx.palmConfig), rmParams);
  const iterations: Record<string, number>[] = resumed?.history.iterations.slice() ?? [];
  const heldOut: [number, number][] = resumed?.history.heldOutScore.slice() ?? [[0, await heldOutScore(ctx, state.policy, 0)]];
  const first = resumed?.step ?? 0;
  const bar = ctx.bar("PPO", c.iterations, first);
  const t0 = performance.now();
  let rolloutTokens = 0;
  let rolloutMs = 0;
  let updateTokens = 0;
  let updateMs = 0;
  const progress = (it: number): StageProgress<PpoProgress> => ({
    params: splitPolicy(state.policy).weights,
    optState: state.optState,
    step: it,
    history: { iterations, heldOutScore: heldOut, seconds: (resumed?.history.seconds ?? 0) + (performance.now() - t0) / 1000 },
    state: { klCoef: state.klCoef },
  });
  for (let it = first; it < c.iterations; it++) {
    const r = rngFor(cfg.seed, 6, it);
    const prompts = globalThis.Array.from({ length: c.rolloutBatch }, () => ctx.trainPrompts[Math.floor(r() * ctx.trainPrompts.length)]!);
    let hidden: number[] = [];
    const ta = performance.now();
    const rollout = await collectRollouts(random.foldIn(random.foldIn(ctx.root, 6), it), {
      policy: state.policy,
      reference: state.reference,
      prompts,
      maxNewTokens: task.maxNewTokens,
      eosToken: task.eosToken,
      padToken: PAD,
      sample: { temperature: c.temperature },
      scoreFn: (tokens, pl, tl, info) => {
        hidden = info.completions.map((x) => task.score(x));
        return scorer(tokens, pl, tl);
      },
    });
    const newTokens = rollout.completions.reduce((a, x) => a + x.length, 0);
    const tb = performance.now();
    const u = await ppoUpdate(state, rollout, pc, random.foldIn(random.foldIn(ctx.root, 9), it));
    const tc = performance.now();
    if (it > first) {
      rolloutTokens += newTokens;
      rolloutMs += tb - ta;
      updateTokens += c.epochs * rollout.tokens.aval.shape[0]! * rollout.tokens.aval.shape[1]!;
      updateMs += tc - tb;
    }
    state = u.state;
    dispose(rollout);
    const s = u.stats;
    const row: Record<string, number> = {
      reward: s.meanScore ?? NaN,
      hiddenScore: mean(hidden),
      kl: s.kl ?? NaN,
      policyLoss: s.policyLoss ?? NaN,
      valueLoss: s.valueLoss ?? NaN,
      entropy: s.entropy ?? NaN,
      approxKl: s.approxKl ?? NaN,
      clipFrac: s.clipFrac ?? NaN,
      klCoef: s.klCoef ?? NaN,
      responseLength: s.meanResponseLength ?? NaN,
    };
    iterations.push(row);
    if ((c.evalEvery > 0 && (it + 1) % c.evalEvery === 0) || it + 1 === c.iterations) heldOut.push([it + 1, await heldOutScore(ctx, state.policy, it + 1)]);
    bar.update(it + 1, `RM ${row.reward!.toFixed(2)} | hidden ${row.hiddenScore!.toFixed(3)} (held-out ${heldOut.at(-1)![1].toFixed(3)}) | KL ${row.kl!.toFixed(2)}`);
    if (!Number.isFinite(row.policyLoss!)) throw new ArgumentError(`rlhf: the PPO loss became ${row.policyLoss} at iteration ${it + 1}\nTip: lower ppo.learningRate`);
    if (await checkpointOrStop(ctx, "ppo", c.checkpointEvery, it + 1 === c.iterations, () => progress(it + 1))) return null;
  }
  bar.done();
  const seconds = (resumed?.history.seconds ?? 0) + (performance.now() - t0) / 1000;
  const history: PpoHistory = {
    iterations,
    heldOutScore: heldOut,
    seconds,
    rolloutTokensPerSecond: rolloutMs > 0 ? (rolloutTokens / rolloutMs) * 1000 : NaN,
    updateTokensPerSecond: updateMs > 0 ? (updateTokens / updateMs) * 1000 : NaN,
  };
  const last = iterations.at(-1);
  ctx.say(
    `PPO: ${c.iterations} iterations in ${seconds.toFixed(1)}s` +
      (last
        ? `, rollouts' RM reward ${tail(iterations.slice(0, 5), "reward").toFixed(2)} → ${tail(iterations.slice(-5), "reward").toFixed(2)} (means of the first / last 5 iterations), ` +
          `held-out hidden score ${heldOut[0]![1].toFixed(3)} → ${heldOut.at(-1)![1].toFixed(3)}, KL ${tail(iterations.slice(-5), "kl").toFixed(2)}`
        : ""),
  );
  return { policy: state.policy, history };
}

// ---------------------------------------------------------------------------------------------------
// The pipeline

async function setDevice(device: RlhfOptions["device"], say: (s: string) => void): Promise<string> {
  if (device === "webgpu") {
    const wg = await import("../ops/backend/webgpu/index.js");
    const dev = await wg.initWebGpu();
    if (!dev) throw new ArgumentError(`rlhf: --device webgpu, but no WebGPU device: ${wg.webGpuUnavailableReason() ?? "unknown reason"}\nTip: npm run setup:webgpu, or --device cpu`);
    setDefaultDevice(dev);
    say(`device: ${dev.description}`);
    return dev.description;
  }
  if (device !== undefined && device !== "cpu") throw new ArgumentError(`rlhf: device must be "cpu" or "webgpu", got ${JSON.stringify(device)}`);
  setDefaultDevice("cpu");
  return "cpu";
}

/** Runs (or resumes) the pipeline; see the file comment and RlhfOptions. */
export async function runRlhf(options: RlhfOptions = {}): Promise<RlhfResult> {
  const wall0 = performance.now();
  const quiet = options.quiet ?? false;
  const log = quiet ? () => undefined : options.log ?? ((s: string) => process.stdout.write(s + "\n"));
  if (options.stopAfter !== undefined && !STAGES.includes(options.stopAfter)) {
    throw new RlhfConfigError(`rlhf: stopAfter must be one of ${STAGES.join(", ")}, got ${JSON.stringify(options.stopAfter)}`);
  }
  const cfg = await configOf(options);
  const out = options.out === null ? null : resolve(options.out ?? "rlhf-out");
  if (out) await mkdir(out, { recursive: true });

  const useBar = (options.progress ?? process.stderr.isTTY === true) && !quiet;
  const multibar = useBar
    ? new cliProgress.MultiBar(
        { format: "{stage} |{bar}| {value}/{total} | {info} | ETA {eta_formatted}", hideCursor: true, clearOnComplete: false, stopOnComplete: false, etaBuffer: 20 },
        cliProgress.Presets.shades_classic,
      )
    : null;
  let barsOn = multibar !== null;
  const stopBars = (): void => {
    if (barsOn) multibar!.stop(); // once: a second stop() re-renders the bars over what was printed since
    barsOn = false;
  };
  const say = (s: string): void => (barsOn ? multibar!.log(s + "\n") : log(s));
  // Without bars (not a terminal, or --no-progress) a stage logs a line at every tenth of its steps.
  const bar = (name: string, total: number, start = 0) => {
    const b = multibar?.create(Math.max(total, 1), start, { stage: name.padEnd(12), info: "" }) ?? null;
    const every = Math.max(1, Math.ceil(total / 10));
    return {
      update: (v: number, info = "") => {
        if (b) b.update(v, { info });
        else if (v % every === 0 && v < total) log(`${name} ${v}/${total}: ${info}`);
      },
      done: () => b?.update(Math.max(total, 1)),
    };
  };

  try {
    const deviceName = await setDevice(options.device, say);
    const task = new ToyTask(cfg.task);
    const trainPrompts = task.prompts(cfg.seed * 1000 + 1, cfg.trainPrompts);
    const evalPrompts = task.prompts(cfg.seed * 1000 + 11, cfg.eval.prompts, new Set(trainPrompts.map((p) => p.join(","))));
    const palmConfig = palmConfigOf(cfg, task);
    const ctx: PipelineContext = {
      cfg,
      task,
      palmConfig,
      root: random.key(cfg.seed),
      trainPrompts,
      evalPrompts,
      out,
      say,
      bar,
      deviceName,
      interrupt: options.interrupt ?? (() => false),
      resumePartial: true,
    };
    const rmConfig = rewardModelConfigOf(cfg, palmConfig);
    say(
      `rlhf: tiny PaLM (dim ${cfg.model.dim}, depth ${cfg.model.depth}, ${countParams(evalShape(() => palm.init(random.key(0), palmConfig))).toLocaleString("en-US")} params), ` +
        `${task.vocabSize} tokens, ${trainPrompts.length} train / ${evalPrompts.length} held-out prompts; hidden rule: fraction of response letters in {${cfg.task.hiddenLetters}}` +
        (out ? `; output in ${out}` : ""),
    );
    if (out) await writeFile(join(out, "config.json"), JSON.stringify(cfg, null, 2) + "\n");

    const stages: Record<Stage, StageStatus> = { sft: "not run", reward: "not run", ppo: "not run" };
    const stop = (s: Stage): boolean => options.stopAfter !== undefined && STAGES.indexOf(s) >= STAGES.indexOf(options.stopAfter);
    let rerun = options.fresh === true; // once a stage runs, every later one must run too
    const interrupted = (s: Stage): RlhfResult => {
      stages[s] = "interrupted";
      stopBars();
      log(`rlhf: interrupted during ${s}; rerun the same command to continue`);
      return { config: cfg, stages, summary: null, report: null, reportPath: null, out, sftParams: null, rewardParams: null, policy: null };
    };

    // SFT
    ctx.resumePartial = !rerun;
    let sft: { params: PalmParams; history: SftHistory } | null = rerun ? null : await loadStage<PalmParams, SftHistory>(ctx, "sft", () => evalShape(() => palm.init(random.key(0), palmConfig)));
    if (sft) {
      stages.sft = "resumed";
      say(`SFT: resumed from ${join(out!, "sft.safetensors")}`);
    } else {
      sft = await sftStage(ctx);
      if (!sft) return interrupted("sft");
      stages.sft = "run";
      rerun = true;
      await saveStage(ctx, "sft", sft.params, sft.history);
    }

    // Reward model
    let rm: { params: RewardModelParams; history: RewardHistory } | null = null;
    if (!stop("sft")) {
      ctx.resumePartial = !rerun;
      rm = rerun ? null : await loadStage<RewardModelParams, RewardHistory>(ctx, "reward", () => evalShape(() => reward.init(random.key(0), rmConfig, { fromPalm: palm.init(random.key(0), palmConfig) })));
      if (rm) {
        stages.reward = "resumed";
        say(`reward model: resumed from ${join(out!, "reward.safetensors")}`);
      } else {
        rm = await rewardStage(ctx, sft.params);
        if (!rm) return interrupted("reward");
        stages.reward = "run";
        rerun = true;
        await saveStage(ctx, "reward", rm.params, rm.history);
      }
    }

    // PPO
    let ppo: PpoStageResult | null = null;
    if (rm && !stop("reward")) {
      ctx.resumePartial = !rerun;
      const loaded = rerun ? null : await loadStage<PolicyWeights, PpoHistory>(ctx, "ppo", () => policyTemplate(ctx));
      ppo = loaded ? { policy: joinPolicy(loaded.params, splitPolicy(policyTemplateModel(ctx, sft.params)).spec), history: loaded.history } : null;
      if (ppo) {
        stages.ppo = "resumed";
        say(`PPO: resumed from ${join(out!, "ppo.safetensors")}`);
      } else {
        ppo = await ppoStage(ctx, sft.params, rm.params);
        if (!ppo) return interrupted("ppo");
        stages.ppo = "run";
        await saveStage(ctx, "ppo", splitPolicy(ppo.policy).weights, ppo.history);
      }
    }

    const ev = await evaluate(ctx, sft.params, rm, ppo?.policy ?? null);
    const report: RlhfReportData = {
      config: cfg,
      device: deviceName,
      sft: sft.history,
      reward: rm?.history ?? null,
      ppo: ppo?.history ?? null,
      summary: ev.summary,
      samples: ev.samples,
      stages,
      wallSeconds: (performance.now() - wall0) / 1000,
    };
    stopBars();
    let reportPath: string | null = null;
    if (out) {
      reportPath = join(out, "report.html");
      await writeFile(reportPath, renderReport(report));
      await writeFile(join(out, "summary.json"), JSON.stringify({ summary: ev.summary, stages, wallSeconds: report.wallSeconds, samples: ev.samples }, null, 2) + "\n");
    }
    const shown = terminalSamples(report);
    if (shown) log(shown);
    log(terminalTable(report));
    if (reportPath) log(`report: ${reportPath}`);
    return { config: cfg, stages, summary: ev.summary, report, reportPath, out, sftParams: sft.params, rewardParams: rm?.params ?? null, policy: ppo?.policy ?? null };
  } finally {
    stopBars();
  }
}

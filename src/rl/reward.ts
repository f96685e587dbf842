/**
 * @file The reward model of RLHF as pure functions: a PaLM trunk (its own LoRA scope, "reward" by
 * default, or full fine-tuning), learned prompt/response segment embeddings added to the token
 * embeddings, masked-mean (or last-token) pooling of the final hidden states, and a head that is a
 * scalar or `numBins` bins. Then the losses (Bradley–Terry on preference pairs, MSE on scalar ratings,
 * cross-entropy on binned ratings), the metrics (pairwise accuracy, reward mean/std), `preferenceBatch`
 * (pads prompt+response pairs into one [2b, n] batch) and `rewardModelLoss` (one training step's loss as
 * a pure function of (trainable, frozen) params, for `valueAndGrad(..., { hasAux: true })`).
 *
 * Read first: `apply` (the forward pass), then `bradleyTerryLoss` and `rewardModelLoss`. The model
 * follows lucidrains/PaLM-rlhf-pytorch's `RewardModel` (reward.py): same segment embeddings, pooling and
 * head; two deliberate differences: the segment embeddings start at N(0, 0.02²) rather than 0 (so a
 * fresh model already tells prompt from response apart) and the scalar head has a bias (it cancels in
 * Bradley–Terry but matters for MSE on ratings).
 *
 * Conventions: tokens [b, n] int32; a `mask` [b, n] marks the valid (non-padding) tokens — padding is
 * both hidden from attention (a key padding mask) and left out of the pooling, so the reward never
 * depends on what padding holds (a non-causal trunk also treats negative ids as padding, as palm.ts). Segment 0 is the prompt, segment 1 the response. Every loss is a
 * pure function of arrays and composes with grad / vmap / jit; they accept rank-0 inputs too, so a
 * per-example loss can be `vmap`-ed. Values of concrete CPU arrays (token ids, bins, lengths) are
 * range-checked; traced or device-resident ones are the caller's contract (a sync read would stall).
 */
import { isFloat, isInt, shapeStr } from "../autodiff/aval.js";
import { Tracer } from "../autodiff/core.js";
import type { Value } from "../autodiff/core.js";
import { ArgumentError, DTypeError, ShapeError } from "../autodiff/errors.js";
import { stopGradient } from "../ops/lax/elementwise.js";
import { Array } from "../ops/array.js";
import * as np from "../ops/np.js";
import type { ArrayLike } from "../ops/np.js";
import * as random from "../ops/random.js";
import { logSigmoid, softmax } from "../nn/activations.js";
import { softmaxCrossEntropyWithIntegerLabels } from "../nn/losses.js";
import * as lora from "../nn/lora.js";
import { combine } from "../nn/optim.js";
import * as palm from "../nn/palm.js";
import type { LoraParams, PalmConfig, PalmParams } from "../nn/palm.js";

// ---------------------------------------------------------------------------------------------------
// Config and params

export interface RewardModelConfig {
  /** The trunk's config (the SFT model's, when initialising from it). */
  palm: PalmConfig;
  /** Bins of the head: absent or 1 gives a scalar reward, > 1 gives `numBins` logits (binned ratings). */
  numBins?: number;
  /** How the hidden states [b, n, dim] become one vector per row: masked mean (default) or the last valid token. */
  pooling?: "mean" | "last";
  /** LoRA scope of the trunk (default "reward"); null trains the whole trunk (full fine-tuning). */
  loraScope?: string | null;
  /** LoRA rank (default 8, as PaLM-rlhf-pytorch). */
  loraR?: number;
}

export interface RewardModelParams {
  palm: PalmParams;
  /** The trunk's LoRA tree (holding at least the config's scope), or null for full fine-tuning. */
  lora: LoraParams | null;
  /** [2, dim]: row 0 is added to prompt tokens, row 1 to response tokens. */
  segmentEmb: Value;
  /** The head: pooled [b, dim] @ w [dim, bins] + b [bins]; bins = 1 for the scalar head. */
  head: { w: Value; b: Value };
}

/** The config with its defaults filled in and checked. */
export interface ResolvedRewardModelConfig {
  palm: PalmConfig;
  numBins: number;
  pooling: "mean" | "last";
  loraScope: string | null;
  loraR: number;
}

const posInt = (x: unknown): x is number => typeof x === "number" && Number.isInteger(x) && x > 0;
const isValue = (x: unknown): x is Value => x instanceof Array || x instanceof Tracer;

/** Fills in the defaults and checks the config (named errors on bad values). */
export function resolveConfig(config: RewardModelConfig): ResolvedRewardModelConfig {
  if (typeof config !== "object" || config === null || typeof config.palm !== "object" || config.palm === null) {
    throw new ArgumentError(`rewardModel: config must be { palm: PalmConfig, ... }, got ${config === null ? "null" : typeof config}`);
  }
  const numBins = config.numBins ?? 1;
  if (!posInt(numBins)) {
    throw new ArgumentError(`rewardModel: config.numBins must be a positive integer (1 or absent: scalar head), got ${String(numBins)}`);
  }
  const pooling = config.pooling ?? "mean";
  if (pooling !== "mean" && pooling !== "last") {
    throw new ArgumentError(`rewardModel: config.pooling must be "mean" or "last", got ${JSON.stringify(pooling)}`);
  }
  const loraScope = config.loraScope === undefined ? "reward" : config.loraScope;
  if (loraScope !== null && (typeof loraScope !== "string" || loraScope === "")) {
    throw new ArgumentError(`rewardModel: config.loraScope must be a non-empty string or null (full fine-tuning), got ${JSON.stringify(loraScope)}`);
  }
  const loraR = config.loraR ?? 8;
  if (!posInt(loraR)) throw new ArgumentError(`rewardModel: config.loraR must be a positive integer, got ${String(loraR)}`);
  palm.resolveConfig(config.palm);
  return { palm: config.palm, numBins, pooling, loraScope, loraR };
}

/**
 * Fresh reward-model params. The trunk is `opts.fromPalm` (typically the SFT model; shared, not
 * copied: params are immutable) or a fresh PaLM; with a LoRA scope, that scope's adapters start at
 * B = 0 so the trunk initially computes exactly the base model. `opts.lora` keeps an existing LoRA
 * tree (e.g. the policy's) and adds the reward scope to it. Head weights U(-1/√dim, 1/√dim) (torch's
 * Linear default), bias 0; segment embeddings N(0, 0.02²).
 */
export function init(key: random.Key, config: RewardModelConfig, opts: { fromPalm?: PalmParams; lora?: LoraParams | null } = {}): RewardModelParams {
  const c = resolveConfig(config);
  const pc = palm.resolveConfig(c.palm);
  const trunk = opts.fromPalm ?? palm.init(random.foldIn(key, 0), c.palm);
  if (opts.fromPalm) {
    const arch = palm.architecture(opts.fromPalm);
    if (arch.dim !== pc.dim || arch.depth !== pc.depth || arch.numTokens !== pc.numTokens || arch.heads !== pc.heads || arch.dimHead !== pc.dimHead) {
      throw new ShapeError(
        `rewardModel.init: opts.fromPalm must match config.palm (dim ${pc.dim}, depth ${pc.depth}, numTokens ${pc.numTokens}, heads ${pc.heads}, dimHead ${pc.dimHead}), got dim ${arch.dim}, depth ${arch.depth}, numTokens ${arch.numTokens}, heads ${arch.heads}, dimHead ${arch.dimHead}\nTip: pass the SFT model's config as config.palm`,
      );
    }
  }
  const dtype = trunk.tokenEmb.aval.dtype;
  let loraParams: LoraParams | null = null;
  if (c.loraScope !== null) {
    const base = opts.lora ?? {};
    if (c.loraScope in base) {
      throw new ArgumentError(`rewardModel.init: opts.lora already has a "${c.loraScope}" scope\nTip: choose another config.loraScope, or drop it with lora.removeScope`);
    }
    loraParams = lora.addScope(base, random.foldIn(key, 1), { ...c.palm, dtype }, c.loraScope, { r: c.loraR });
  }
  const bound = 1 / Math.sqrt(pc.dim);
  return {
    palm: trunk,
    lora: loraParams,
    segmentEmb: np.multiply(random.normal(random.foldIn(key, 2), [2, pc.dim], { dtype }), 0.02),
    head: {
      w: random.uniform(random.foldIn(key, 3), [pc.dim, c.numBins], { dtype, minval: -bound, maxval: bound }),
      b: np.zeros([c.numBins], { dtype }),
    },
  };
}

/**
 * The pytree of booleans (for `optim.partition`) of what a reward model trains: the head and the
 * segment embeddings always; with a LoRA scope, that scope's adapters only (the trunk and other scopes
 * stay frozen); with `loraScope: null`, the whole trunk.
 */
export function trainableMask(params: RewardModelParams, config: RewardModelConfig): unknown {
  const c = resolveConfig(config);
  if (c.loraScope === null) return { palm: true, lora: false, segmentEmb: true, head: true };
  if (!params.lora || !(c.loraScope in params.lora)) {
    throw new ArgumentError(
      `rewardModel.trainableMask: params.lora must hold the "${c.loraScope}" scope, got ${params.lora ? JSON.stringify(Object.keys(params.lora)) : "null"}\nTip: make the params with rewardModel.init and the same config`,
    );
  }
  const loraMask: Record<string, boolean> = {};
  for (const s of Object.keys(params.lora)) loraMask[s] = s === c.loraScope;
  return { palm: false, lora: loraMask, segmentEmb: true, head: true };
}

// ---------------------------------------------------------------------------------------------------
// Input checks

/** Host values of `x` when it can be read without a device sync (JS data, CPU arrays), else null. */
function hostValues(x: ArrayLike): number[] | null {
  if (x instanceof Tracer) return null;
  if (x instanceof Array) {
    if (!x.device.backend.readSync) return null;
    return globalThis.Array.from(x.dataSync() as globalThis.ArrayLike<number>, Number);
  }
  if (typeof x === "number" || typeof x === "boolean") return [Number(x)];
  const flat = (v: unknown): number[] => (globalThis.Array.isArray(v) ? v.flatMap(flat) : ArrayBuffer.isView(v) ? globalThis.Array.from(v as unknown as globalThis.ArrayLike<number>, Number) : [Number(v)]);
  return flat(x);
}

function sameShape(name: string, what: string, want: readonly number[], got: Value): void {
  const s = got.aval.shape;
  if (s.length !== want.length || s.some((d, i) => d !== want[i])) {
    throw new ShapeError(`${name}: ${what} must have shape ${shapeStr(want)}, got ${shapeStr(s)}`);
  }
}

function intArray(name: string, what: string, x: ArrayLike): Value {
  const v = np.asArray(x, name);
  if (!isInt(v.aval.dtype)) {
    throw new DTypeError(`${name}: ${what} must be integers (int32), got ${v.aval.dtype}\nTip: np.array(values, { dtype: "int32" })`);
  }
  return np.astype(v, "int32");
}

/** Every concrete value of `x` lies in [lo, hi] (skipped for traced / device values). */
function checkRange(name: string, what: string, x: ArrayLike, lo: number, hi: number, tip = ""): void {
  const vals = hostValues(x);
  if (vals === null) return;
  const bad = vals.find((v) => !(v >= lo && v <= hi));
  if (bad !== undefined) throw new ArgumentError(`${name}: ${what} must lie in [${lo}, ${hi}], got ${bad}${tip ? `\n${tip}` : ""}`);
}

function floatArray(name: string, what: string, x: ArrayLike): Value {
  const v = np.asArray(x, name);
  if (!isFloat(v.aval.dtype)) {
    throw new DTypeError(`${name}: ${what} must be float32 or float64, got ${v.aval.dtype}\nTip: np.astype(${what}, "float32")`);
  }
  return v;
}

function asMask(name: string, what: string, x: ArrayLike, shape: readonly number[]): Value {
  const m = np.asArray(x, name);
  sameShape(name, what, shape, m);
  return m.aval.dtype === "bool" ? m : np.notEqual(m, 0);
}

// ---------------------------------------------------------------------------------------------------
// apply

export interface RewardApplyOptions {
  config: RewardModelConfig;
  /** [b, n] bool, true on prompt tokens. Exactly one of promptMask / promptLengths. */
  promptMask?: ArrayLike;
  /** [b] int32: the first promptLengths[i] tokens of row i are the prompt. */
  promptLengths?: ArrayLike;
  /** [b, n] bool or 0/1: valid (non-padding) tokens; default all valid. */
  mask?: ArrayLike;
  /** Dropout key for the trunk (dropout runs only with one; see PalmConfig.attnDropout / ffDropout). */
  key?: random.Key | null;
}

/** The [b, n] prompt mask (bool) from exactly one of promptMask / promptLengths. */
function promptMaskOf(name: string, opts: RewardApplyOptions, b: number, n: number, unbatched: boolean): Value {
  const hasMask = opts.promptMask !== undefined && opts.promptMask !== null;
  const hasLengths = opts.promptLengths !== undefined && opts.promptLengths !== null;
  if (hasMask === hasLengths) {
    throw new ArgumentError(
      `${name}: give exactly one of promptMask ([b, n] bool) and promptLengths ([b] int32), got ${hasMask ? "both" : "neither"}\nTip: preferenceBatch(...) returns promptLengths`,
    );
  }
  if (hasMask) {
    const m = asMask(name, "promptMask", opts.promptMask!, unbatched ? [n] : [b, n]);
    return unbatched ? np.expandDims(m, 0) : m; // [n] -> [1, n]
  }
  const pl = intArray(name, "promptLengths", opts.promptLengths!);
  sameShape(name, "promptLengths", unbatched ? [] : [b], pl);
  checkRange(name, "promptLengths", opts.promptLengths!, 0, n);
  const pos = np.arange(0, n, 1, { dtype: "int32" }); // [n]
  return np.less(np.expandDims(pos, 0), np.reshape(pl, [b, 1])); // [1, n] < [b, 1] -> [b, n]
}

/**
 * The pooled final hidden states [b, dim] of the reward model's trunk (what the head reads): tokens
 * [b, n] (or [n]) int32, segment embeddings from the prompt mask / lengths, padding masked from
 * attention and pooling. Exposed for value heads and probes; `apply` adds the head.
 */
export function pooledEmbedding(params: RewardModelParams, tokens: ArrayLike, opts: RewardApplyOptions): Value {
  const name = "rewardModel.apply";
  const c = resolveConfig(opts.config);
  checkParams(name, params, c);
  let t = intArray(name, "tokens", tokens);
  if (t.aval.ndim !== 1 && t.aval.ndim !== 2) throw new ShapeError(`${name}: tokens must be [batch, seq] or [seq], got ${t.aval.str()}`);
  const unbatched = t.aval.ndim === 1;
  if (unbatched) t = np.expandDims(t, 0); // [n] -> [1, n]
  const [b, n] = t.aval.shape as [number, number];
  if (n === 0) throw new ShapeError(`${name}: tokens must not be empty, got ${t.aval.str()}`);
  const numTokens = params.palm.tokenEmb.aval.shape[0]!;
  checkRange(name, "tokens", tokens, palm.resolveConfig(c.palm).causal ? 0 : -Infinity, numTokens - 1, "Tip: token ids index the embedding table; mark padding with `mask` and pad with a valid id (0)");

  const promptMask = promptMaskOf(name, opts, b, n, unbatched); // [b, n]
  let valid: Value | null = null;
  if (opts.mask !== undefined && opts.mask !== null) {
    const m = asMask(name, "mask", opts.mask, unbatched ? [n] : [b, n]);
    valid = unbatched ? np.expandDims(m, 0) : m; // [n] -> [1, n]
  }
  // Non-causal PaLM treats negative ids as padding (PaLM-rlhf-pytorch's convention): pool as it attends.
  if (!palm.resolveConfig(c.palm).causal) {
    const nonNegative = np.greaterEqual(t, 0); // [b, n]
    valid = valid === null ? nonNegative : np.logicalAnd(valid, nonNegative);
  }

  // Segment embeddings (PaLM-rlhf-pytorch's prompt_embed / response_embed): the reward model must know
  // which tokens it is judging and which it is conditioned on.
  const segment = np.astype(np.logicalNot(promptMask), "int32"); // [b, n]: 0 prompt, 1 response
  const extraEmbed = np.take(params.segmentEmb, segment, 0); // [2, dim] gathered by [b, n] -> [b, n, dim]
  const emb = palm.embed(params.palm, t, {
    config: c.palm,
    mask: valid,
    lora: params.lora,
    loraScope: c.loraScope,
    extraEmbed,
    key: opts.key ?? null,
  }); // [b, n, dim]

  const dtype = emb.aval.dtype;
  const validF = valid === null ? np.ones([b, n], { dtype }) : np.astype(valid, dtype); // [b, n]
  let pooled: Value;
  if (c.pooling === "mean") {
    // Masked mean over the sequence; a row with no valid token pools to 0 rather than 0/0.
    const total = np.einsum("bnd,bn->bd", emb, validF); // [b, dim]
    const count = np.maximum(np.sum(validF, { axis: 1, keepdims: true }), 1); // [b, 1]
    pooled = np.divide(total, count);
  } else {
    // The last valid position of each row (with right padding: totalLength - 1); 0 for an empty row.
    const pos = np.expandDims(np.arange(0, n, 1, { dtype: "int32" }), 0); // [1, n]
    const last = np.max(np.where(valid ?? true, pos, 0), { axis: 1 }); // [b]
    pooled = np.einsum("bnd,bn->bd", emb, np.oneHot(last, n, { dtype })); // [b, dim]
  }
  return unbatched ? np.squeeze(pooled, 0) : pooled; // [1, dim] -> [dim]
}

function checkParams(name: string, params: RewardModelParams, c: ResolvedRewardModelConfig): void {
  if (typeof params !== "object" || params === null || !isValue(params.segmentEmb) || !params.head || !isValue(params.head.w) || !isValue(params.head.b)) {
    throw new ArgumentError(`${name}: params must be the tree made by rewardModel.init ({ palm, lora, segmentEmb, head: { w, b } })`);
  }
  const dim = palm.architecture(params.palm).dim;
  sameShape(name, "params.segmentEmb", [2, dim], params.segmentEmb);
  sameShape(name, "params.head.w", [dim, c.numBins], params.head.w);
  sameShape(name, "params.head.b", [c.numBins], params.head.b);
  if (c.loraScope !== null && (!params.lora || !(c.loraScope in params.lora))) {
    throw new ArgumentError(
      `${name}: config.loraScope is "${c.loraScope}" but params.lora has ${params.lora ? `scopes ${JSON.stringify(Object.keys(params.lora))}` : "none"}\nTip: use the config the params were made with (loraScope: null for full fine-tuning)`,
    );
  }
}

/**
 * The reward model: tokens [b, n] int32 (or one row [n]) → rewards [b] with the scalar head, or logits
 * [b, numBins] with the binned head. Exactly one of `promptMask` / `promptLengths` says which tokens
 * are prompt; `mask` marks the valid tokens (padding changes nothing: it is masked from attention and
 * from the pooling).
 */
export function apply(params: RewardModelParams, tokens: ArrayLike, opts: RewardApplyOptions): Value {
  if (typeof opts !== "object" || opts === null || !opts.config) {
    throw new ArgumentError("rewardModel.apply: opts.config is required\nTip: rewardModel.apply(params, tokens, { config, promptLengths, mask })");
  }
  const c = resolveConfig(opts.config);
  const pooled = pooledEmbedding(params, tokens, opts); // [b, dim] or [dim]
  const out = np.add(np.matmul(pooled, params.head.w), params.head.b); // [b, bins] or [bins]
  return c.numBins === 1 ? np.squeeze(out, -1) : out; // [b, 1] -> [b]
}

/**
 * One scalar score per row for either head: the reward itself (scalar head), or the expected bin index
 * Σ_k k·softmax(logits)_k (binned head). What the RL stage's `scoreFn` wants.
 */
export function score(params: RewardModelParams, tokens: ArrayLike, opts: RewardApplyOptions): Value {
  const out = apply(params, tokens, opts);
  const c = resolveConfig(opts.config);
  if (c.numBins === 1) return out;
  const bins = np.arange(0, c.numBins, 1, { dtype: out.aval.dtype }); // [bins]
  return np.sum(np.multiply(softmax(out, { axis: -1 }), bins), { axis: -1 }); // [b]
}

// ---------------------------------------------------------------------------------------------------
// Losses and metrics

function pairOf(name: string, a: ArrayLike, b: ArrayLike, names: [string, string]): [Value, Value] {
  const x = floatArray(name, names[0], a);
  const y = floatArray(name, names[1], b);
  sameShape(name, names[1], x.aval.shape, y);
  return [x, y];
}

/**
 * The Bradley–Terry pairwise loss (InstructGPT, https://arxiv.org/abs/2203.02155, eq. 1): the mean of
 * -log σ(r_chosen - r_rejected - margin), computed through the overflow-free log σ. The optional
 * `margin` (broadcast against the rewards, e.g. a per-pair preference strength as in Llama 2,
 * https://arxiv.org/abs/2307.09288 §3.2.2) asks the chosen reward to lead by at least that much.
 * `reduction: "none"` returns the per-pair losses. Shapes of rChosen and rRejected must agree (any
 * rank, scalars included, so the per-pair loss vmaps).
 */
export function bradleyTerryLoss(rChosen: ArrayLike, rRejected: ArrayLike, opts: { margin?: ArrayLike; reduction?: "mean" | "none" } = {}): Value {
  const name = "bradleyTerryLoss";
  const [rc, rr] = pairOf(name, rChosen, rRejected, ["rChosen", "rRejected"]);
  let diff = np.subtract(rc, rr);
  if (opts.margin !== undefined) {
    const m = np.asArray(opts.margin, name);
    const s = np.broadcastShapes(name, rc.aval.shape, m.aval.shape);
    if (s.length !== rc.aval.ndim) throw new ShapeError(`${name}: margin must broadcast to the rewards' shape ${shapeStr(rc.aval.shape)}, got ${shapeStr(m.aval.shape)}`);
    diff = np.subtract(diff, np.astype(m, rc.aval.dtype));
  }
  const perPair = np.negative(logSigmoid(diff));
  return reduce(name, perPair, opts.reduction);
}

function reduce(name: string, x: Value, reduction: "mean" | "none" | undefined): Value {
  if (reduction === undefined || reduction === "mean") return np.mean(x);
  if (reduction === "none") return x;
  throw new ArgumentError(`${name}: reduction must be "mean" or "none", got ${JSON.stringify(reduction)}`);
}

/** Mean squared error of scalar predictions against float ratings of the same shape (PaLM-rlhf-pytorch's F.mse_loss). */
export function ratingMseLoss(pred: ArrayLike, ratings: ArrayLike, opts: { reduction?: "mean" | "none" } = {}): Value {
  const name = "ratingMseLoss";
  const p = floatArray(name, "pred", pred);
  const r = np.asArray(ratings, name);
  sameShape(name, "ratings", p.aval.shape, r);
  return reduce(name, np.square(np.subtract(p, np.astype(r, p.aval.dtype))), opts.reduction);
}

/**
 * Cross-entropy of binned logits [..., numBins] against integer bins [...] in [0, numBins) (PaLM-rlhf-
 * pytorch's F.cross_entropy on the binned head), mean over the examples.
 */
export function binnedRatingLoss(logits: ArrayLike, bins: ArrayLike, opts: { reduction?: "mean" | "none" } = {}): Value {
  const name = "binnedRatingLoss";
  const lg = floatArray(name, "logits", logits);
  if (lg.aval.ndim === 0) throw new ShapeError(`${name}: logits need a bins axis, got a scalar`);
  const b = intArray(name, "bins", bins);
  sameShape(name, "bins", lg.aval.shape.slice(0, -1), b);
  const numBins = lg.aval.shape[lg.aval.ndim - 1]!;
  checkRange(name, "bins", bins, 0, numBins - 1);
  return reduce(name, softmaxCrossEntropyWithIntegerLabels(lg, b), opts.reduction);
}

/** Fraction of pairs where the chosen reward is strictly above the rejected one (ties count as wrong, as TRL). */
export function pairwiseAccuracy(rChosen: ArrayLike, rRejected: ArrayLike): Value {
  const [rc, rr] = pairOf("pairwiseAccuracy", rChosen, rRejected, ["rChosen", "rRejected"]);
  return np.mean(np.astype(np.greater(rc, rr), rc.aval.dtype));
}

/** Mean and (population, ddof 0) standard deviation of rewards, over all entries. Metrics: not differentiated. */
export function rewardStats(r: ArrayLike): { mean: Value; std: Value } {
  const v = stopGradient(floatArray("rewardStats", "r", r));
  return { mean: np.mean(v), std: np.std(v) };
}

// ---------------------------------------------------------------------------------------------------
// Batching preference data

/** One preference: a prompt and two responses to it, `chosen` preferred over `rejected`. */
export interface PreferencePair {
  prompt: readonly number[];
  chosen: readonly number[];
  rejected: readonly number[];
  /** Optional preference strength (the Bradley–Terry margin of this pair). */
  margin?: number;
}

/** A padded [2b, n] batch: rows 0..b-1 are prompt+chosen, rows b..2b-1 prompt+rejected (same order). */
export interface PreferenceBatch {
  tokens: Value; // [2b, n] int32
  promptLengths: Value; // [2b] int32
  totalLengths: Value; // [2b] int32
  mask: Value; // [2b, n] bool, true on tokens < totalLengths
  /** [b] float32, present when any pair has a margin (the others get 0). */
  margin?: Value;
  /** b, the number of pairs. */
  numPairs: number;
}

/**
 * Pads preference pairs into one right-padded batch for a single forward pass (chosen rows first, then
 * rejected). `maxLen` truncates the *responses* so each row fits (a prompt that does not leave room for
 * at least one response token is an error); `padTo` pads to a fixed width (one jit trace for every
 * batch); `padId` fills the padding (default 0; it is masked out anyway).
 */
export function preferenceBatch(pairs: readonly PreferencePair[], opts: { padId?: number; maxLen?: number; padTo?: number } = {}): PreferenceBatch {
  const name = "preferenceBatch";
  if (!globalThis.Array.isArray(pairs) || pairs.length === 0) {
    throw new ArgumentError(`${name}: pairs must be a non-empty list of { prompt, chosen, rejected }, got ${globalThis.Array.isArray(pairs) ? "an empty list" : typeof pairs}`);
  }
  const padId = opts.padId ?? 0;
  if (!Number.isInteger(padId)) throw new ArgumentError(`${name}: padId must be an integer, got ${padId}`);
  if (opts.maxLen !== undefined && !posInt(opts.maxLen)) throw new ArgumentError(`${name}: maxLen must be a positive integer, got ${opts.maxLen}`);
  const ids = (what: string, x: unknown, i: number): number[] => {
    if (!globalThis.Array.isArray(x) || x.some((t) => !Number.isInteger(t) || t < 0)) {
      throw new ArgumentError(`${name}: pairs[${i}].${what} must be a list of non-negative integer token ids, got ${JSON.stringify(x)?.slice(0, 80)}`);
    }
    return x as number[];
  };
  const rows: number[][] = [];
  const prompts: number[] = [];
  for (const side of ["chosen", "rejected"] as const) {
    pairs.forEach((p, i) => {
      const prompt = ids("prompt", p?.prompt, i);
      let resp = ids(side, p[side], i);
      if (opts.maxLen !== undefined && prompt.length + resp.length > opts.maxLen) {
        if (prompt.length >= opts.maxLen) {
          throw new ArgumentError(`${name}: pairs[${i}].prompt has ${prompt.length} tokens, leaving no room for a response in maxLen ${opts.maxLen}`);
        }
        resp = resp.slice(0, opts.maxLen - prompt.length);
      }
      rows.push([...prompt, ...resp]);
      prompts.push(prompt.length);
    });
  }
  const longest = Math.max(...rows.map((r) => r.length));
  if (longest === 0) throw new ArgumentError(`${name}: every sequence is empty`);
  const n = opts.padTo ?? longest;
  if (!posInt(n) || n < longest) throw new ArgumentError(`${name}: padTo must be an integer >= the longest row (${longest}), got ${opts.padTo}`);
  const b2 = rows.length;
  const tok = new Int32Array(b2 * n).fill(padId);
  const msk = new Uint8Array(b2 * n);
  rows.forEach((r, i) => {
    tok.set(r, i * n);
    msk.fill(1, i * n, i * n + r.length);
  });
  const out: PreferenceBatch = {
    tokens: np.array(tok, { dtype: "int32", shape: [b2, n] }),
    promptLengths: np.array(Int32Array.from(prompts), { dtype: "int32", shape: [b2] }),
    totalLengths: np.array(Int32Array.from(rows.map((r) => r.length)), { dtype: "int32", shape: [b2] }),
    mask: np.array(globalThis.Array.from(msk, (v) => v === 1), { dtype: "bool", shape: [b2, n] }),
    numPairs: pairs.length,
  };
  if (pairs.some((p) => p.margin !== undefined)) {
    out.margin = np.array(Float32Array.from(pairs.map((p) => p.margin ?? 0)), { dtype: "float32", shape: [pairs.length] });
  }
  return out;
}

/** Splits a [2b, ...] array of a `preferenceBatch` into its chosen [b, ...] and rejected [b, ...] halves. */
export function splitPairs(x: ArrayLike): [Value, Value] {
  const v = np.asArray(x, "splitPairs");
  const rows = v.aval.shape[0];
  if (rows === undefined || rows % 2 !== 0 || rows === 0) {
    throw new ShapeError(`splitPairs: the leading axis must be 2b (chosen rows, then rejected), got ${v.aval.str()}`);
  }
  const [c, r] = np.split(v, 2, 0) as [Value, Value]; // [2b, ...] -> 2 × [b, ...]
  return [c, r];
}

// ---------------------------------------------------------------------------------------------------
// The training step's loss

/** Scalar (rating) or integer (bin) labels, one per row, for rating-trained reward models. */
export interface RatingBatch {
  tokens: Value; // [b, n] int32
  promptLengths?: Value; // [b]
  promptMask?: Value; // [b, n]
  mask?: Value; // [b, n]
  /** [b]: float ratings (scalar head, MSE) or int32 bins (binned head, cross-entropy). */
  ratings: Value;
}

export interface RewardStepAux {
  /** Pairwise accuracy (preference batches) or, for binned ratings, the accuracy of the argmax bin; NaN-free. */
  accuracy: Value;
  rewardMean: Value;
  rewardStd: Value;
  /** Preference batches only: mean chosen reward - mean rejected reward. */
  margin?: Value;
}

/**
 * The loss of one reward-model training step as a pure function of the trainable and frozen halves
 * of the params (`optim.partition(params, trainableMask(params, config))`), so
 * `valueAndGrad(rewardModelLoss, { hasAux: true })(trainable, frozen, batch, config)` gives
 * `[[loss, aux], grads]` with grads only for the trainable leaves. A `PreferenceBatch` (has
 * `numPairs`) trains the scalar head with Bradley–Terry (margins included when the batch has them);
 * a `RatingBatch` uses MSE (scalar head, float ratings) or cross-entropy (binned head, int bins).
 * `opts.key` enables the trunk's dropout.
 */
export function rewardModelLoss(
  trainable: RewardModelParams,
  frozen: RewardModelParams,
  batch: PreferenceBatch | RatingBatch,
  config: RewardModelConfig,
  opts: { key?: random.Key | null } = {},
): [Value, RewardStepAux] {
  const name = "rewardModelLoss";
  const c = resolveConfig(config);
  const params = combine(trainable, frozen);
  if ("numPairs" in batch) {
    if (c.numBins !== 1) {
      throw new ArgumentError(`${name}: preference pairs train a scalar head, got config.numBins ${c.numBins}\nTip: use ratings (RatingBatch) for a binned head, or numBins: 1`);
    }
    const r = apply(params, batch.tokens, { config, promptLengths: batch.promptLengths, mask: batch.mask, key: opts.key }); // [2b]
    const [rc, rr] = splitPairs(r);
    const loss = bradleyTerryLoss(rc, rr, { margin: batch.margin });
    const stats = rewardStats(r);
    return [
      loss,
      { accuracy: pairwiseAccuracy(stopGradient(rc), stopGradient(rr)), rewardMean: stats.mean, rewardStd: stats.std, margin: stopGradient(np.subtract(np.mean(rc), np.mean(rr))) },
    ];
  }
  if (!("ratings" in batch)) throw new ArgumentError(`${name}: batch must be a PreferenceBatch (from preferenceBatch) or a RatingBatch ({ tokens, ratings, ... })`);
  const out = apply(params, batch.tokens, { config, promptLengths: batch.promptLengths, promptMask: batch.promptMask, mask: batch.mask, key: opts.key });
  if (c.numBins === 1) {
    const stats = rewardStats(out);
    const ratings = np.asArray(batch.ratings, name);
    const err = np.abs(np.subtract(stopGradient(out), np.astype(ratings, out.aval.dtype)));
    // "accuracy" of a regression: the fraction of predictions within 0.5 of the rating (rounds to it).
    return [ratingMseLoss(out, ratings), { accuracy: np.mean(np.astype(np.less(err, 0.5), out.aval.dtype)), rewardMean: stats.mean, rewardStd: stats.std }];
  }
  const bins = intArray(name, "ratings (bins)", batch.ratings);
  const expected = np.sum(np.multiply(softmax(stopGradient(out), { axis: -1 }), np.arange(0, c.numBins, 1, { dtype: out.aval.dtype })), { axis: -1 }); // [b]
  const stats = rewardStats(expected);
  const hit = np.equal(np.argmax(stopGradient(out), { axis: -1 }), bins);
  return [binnedRatingLoss(out, bins), { accuracy: np.mean(np.astype(hit, out.aval.dtype)), rewardMean: stats.mean, rewardStd: stats.std }];
}

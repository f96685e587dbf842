/**
 * @file Autoregressive generation from a PaLM (src/nn/palm.ts) with a key/value cache, and best-of-n
 * reranking. Read first: `chunkStep` (one jitted step: `palm.applyWithCache` on a chunk, sample, write
 * the token), then `generate` (the host loop). The model maths lives only in palm.ts: `applyWithCache`
 * runs the same transformer block as `palm.apply`, reading and writing the cache.
 *
 * How a batch of prompts of different lengths is decoded: the rows are left-aligned in one int32
 * buffer `seq` [batch, maxPromptLen + maxNewTokens]. The common prefix (the shortest prompt's length)
 * is run in one pass (the "prefill"), then one position per step for every row at once; a row whose
 * prompt is longer than the current position has its prompt token forced instead of the sample. So all
 * rows share the same position, the cache is written with one `dynamicUpdateSlice` at a scalar offset,
 * and the decode step has one signature: it is traced once for all steps (the position is a traced
 * int32 scalar). Each row generates `maxNewTokens` tokens after its own prompt, stopping early at
 * `eosToken` (kept) and padding with `padToken` after it.
 *
 * The cache holds k and v per layer, [batch, maxLen, dimHead] each (multi-query attention has a
 * single k/v head); slots not yet written are zeros and masked (key position > query position), so
 * their softmax weight is exactly 0. Rotary / xPos use the absolute position; the xPos exponent is
 * centred on maxLen/2 instead of seqLen/2 as in `palm.apply` — the centre cancels in q·k, so the
 * logits agree with a full forward pass up to rounding (tests/generate.test.ts checks 1e-10 in float64).
 */
import { isInt } from "../autodiff/aval.js";
import { Value } from "../autodiff/core.js";
import { ArgumentError, DTypeError, ShapeError } from "../autodiff/errors.js";
import { jit } from "../autodiff/jit.js";
import { Array } from "../ops/array.js";
import * as lax from "../ops/lax/index.js";
import { dispose } from "../ops/memory.js";
import * as np from "../ops/np.js";
import type { ArrayLike } from "../ops/np.js";
import * as random from "../ops/random.js";
import { softmax } from "./activations.js";
import { applyWithCache, architecture, initCache, resolveConfig } from "./palm.js";
import type { CacheOptions, KvCache, LoraParams, PalmArchitecture, PalmConfig, PalmParams } from "./palm.js";

// ---------------------------------------------------------------------------------------------------
// Sampling filters (usable on their own: logits [..., vocab])

/**
 * Top-k filtering (Fan et al., https://arxiv.org/abs/1805.04833): keeps the k largest logits along the
 * last axis and sets the rest to -Infinity. Logits tied with the k-th largest are kept too (as
 * HuggingFace's TopKLogitsWarper), so more than k survive only on exact ties.
 */
export function filterTopK(logits: ArrayLike, k: number): Value {
  const x = np.asArray(logits, "filterTopK");
  const n = x.aval.shape[x.aval.ndim - 1];
  if (n === undefined) throw new ShapeError(`filterTopK: logits must have a vocab axis, got ${x.aval.str()}`);
  if (!Number.isInteger(k) || k < 1) throw new ArgumentError(`filterTopK: k must be a positive integer, got ${k}`);
  if (k >= n) return x;
  const [vals] = np.topK(x, k); // [..., k], descending
  const kth = np.split(vals, [k - 1], -1)[1]!; // [..., 1]
  return np.where(np.less(x, kth), -Infinity, x);
}

/**
 * Nucleus (top-p) filtering (Holtzman et al., https://arxiv.org/abs/1904.09751): keeps the smallest
 * set of most likely tokens whose probabilities sum to at least p, and sets the rest to -Infinity.
 * A token is kept when the probability mass of the tokens ranked strictly above it is below p (so the
 * most likely token is always kept). Ties with the least likely kept token are kept too.
 */
export function filterTopP(logits: ArrayLike, p: number): Value {
  const x = np.asArray(logits, "filterTopP");
  if (x.aval.ndim === 0) throw new ShapeError(`filterTopP: logits must have a vocab axis, got ${x.aval.str()}`);
  if (!(p > 0 && p <= 1)) throw new ArgumentError(`filterTopP: p must be in (0, 1], got ${p}`);
  if (p === 1) return x;
  const sorted = np.sort(x, { descending: true }); // [..., V]
  const probs = softmax(sorted, { axis: -1 }); // [..., V]
  const v = x.aval.shape.at(-1)!;
  const cum = np.cumsum(probs, { axis: -1 }); // [..., V]
  const shifted = np.split(cum, [v - 1], -1)[0]!; // [..., V-1]: cum without its last entry
  const before = np.pad(shifted, [...x.aval.shape.slice(0, -1).map(() => [0, 0] as const), [1, 0] as const]); // [..., V]: mass ranked strictly above
  const keepSorted = np.less(before, p); // [..., V], a prefix of trues
  const count = np.sum(keepSorted, { axis: -1, keepdims: true }); // [..., 1] >= 1
  const threshold = np.takeAlongAxis(sorted, np.subtract(count, 1), -1); // [..., 1]: least likely kept
  return np.where(np.less(x, threshold), -Infinity, x);
}

export interface SampleOptions {
  /** Softmax temperature (default 1); 0 takes the argmax (greedy). */
  temperature?: number;
  /** Keep only the k most likely tokens. */
  topK?: number | null;
  /** Keep only the smallest set of most likely tokens with total probability >= p. */
  topP?: number | null;
}

function checkSampleOptions(name: string, o: SampleOptions, vocab: number): void {
  const t = o.temperature ?? 1;
  if (!(typeof t === "number" && t >= 0 && Number.isFinite(t))) {
    throw new ArgumentError(`${name}: temperature must be a finite number >= 0, got ${String(t)}`);
  }
  if (o.topK !== undefined && o.topK !== null && !(Number.isInteger(o.topK) && o.topK >= 1 && o.topK <= vocab)) {
    throw new ArgumentError(`${name}: topK must be an integer in [1, ${vocab}], got ${String(o.topK)}`);
  }
  if (o.topP !== undefined && o.topP !== null && !(typeof o.topP === "number" && o.topP > 0 && o.topP <= 1)) {
    throw new ArgumentError(`${name}: topP must be in (0, 1], got ${String(o.topP)}\nTip: topP 1 keeps every token`);
  }
}

/**
 * One token per row from logits [..., vocab]: argmax at temperature 0, otherwise the Gumbel-max trick
 * (argmax of logits/T + Gumbel noise is a sample of softmax(logits/T); Gumbel 1954, as
 * `jax.random.categorical`) on the top-k / top-p filtered logits. Returns int32 [...].
 */
export function sampleLogits(key: random.Key, logits: ArrayLike, opts: SampleOptions = {}): Value {
  const x = np.asArray(logits, "sampleLogits");
  checkSampleOptions("sampleLogits", opts, x.aval.shape.at(-1) ?? 0);
  const t = opts.temperature ?? 1;
  if (t === 0) return np.astype(np.argmax(x, { axis: -1 }), "int32");
  let l = t === 1 ? x : np.divide(x, t);
  if (opts.topK !== undefined && opts.topK !== null) l = filterTopK(l, opts.topK);
  if (opts.topP !== undefined && opts.topP !== null) l = filterTopP(l, opts.topP);
  const g = random.gumbel(key, l.aval.shape, { dtype: l.aval.dtype });
  return np.astype(np.argmax(np.add(l, g), { axis: -1 }), "int32");
}

// ---------------------------------------------------------------------------------------------------
// The cached forward pass (palm.applyWithCache; re-exported here for callers of this module)

export { initCache } from "./palm.js";
export type { CacheOptions, KvCache } from "./palm.js";

/** The causal check `generate` makes up front (applyWithCache makes it again inside the step). */
function checkCausal(arch: PalmArchitecture, config: PalmConfig | undefined): void {
  const c = resolveConfig(config ?? { numTokens: arch.numTokens, dim: arch.dim, depth: arch.depth, heads: arch.heads, dimHead: arch.dimHead, qkRmsNorm: arch.qkRmsNorm });
  if (!c.causal) throw new ArgumentError("generate: needs a causal model, got config.causal false");
}

/**
 * `palm.applyWithCache` with the argument order this module has always used: logits [batch, n,
 * numTokens] for tokens [batch, n] at positions start..start+n-1, and the updated cache.
 */
export function forwardChunk(params: PalmParams, tokens: Value, start: Value, cache: KvCache, options: CacheOptions = {}): { logits: Value; cache: KvCache } {
  return applyWithCache(params, tokens, cache, start, options);
}

// ---------------------------------------------------------------------------------------------------
// One jitted step

/** The static (compile-time) part of a step: part of jit's cache key, so it must be JSON-able. */
interface StepStatic {
  n: number;
  config: PalmConfig | null;
  loraScope: string | null;
  loraAlpha: number | null;
  temperature: number;
  topK: number | null;
  topP: number | null;
  eosToken: number | null;
  padToken: number;
  maxNewTokens: number;
}

interface StepState {
  cache: KvCache;
  /** [batch, maxLen] int32: prompts, then the tokens written so far, padToken elsewhere. */
  seq: Value;
  /** [batch] bool: the row has emitted eos. */
  done: Value;
}

let traces = 0;

/**
 * Runs positions t..t+n-1 of every row through the model (reading them from `seq`), samples the token
 * at position t+n from the last logits, and writes it into `seq` — or the prompt's token where the row
 * is still inside its prompt, or padToken where the row has finished. Also returns whether every row
 * has now finished, and the last logits [batch, numTokens].
 */
function chunkStep(params: PalmParams, lora: LoraParams | null, state: StepState, lengths: Value, t: Value, key: Value, st: StepStatic) {
  traces++;
  const [b, maxLen] = state.seq.aval.shape as [number, number];
  const zero = np.zeros([], { dtype: "int32" });
  const inputs = lax.dynamicSlice(state.seq, [zero, t], [b, st.n]); // [b, n]
  const { logits, cache } = forwardChunk(params, inputs, t, state.cache, {
    config: st.config ?? undefined,
    lora,
    loraScope: st.loraScope,
    loraAlpha: st.loraAlpha ?? undefined,
  });
  const last = np.reshape(np.split(logits, [st.n - 1], 1)[1]!, [b, logits.aval.shape[2]!]); // [b, 1, V] -> [b, V]
  const pos = np.add(t, st.n); // the position being decided
  const sampled = sampleLogits(random.foldIn(key, pos), last, st);
  const inPrompt = np.less(pos, lengths); // [b]
  const end = np.add(lengths, st.maxNewTokens); // [b]: first position after the row's new tokens
  const generating = np.logicalAnd(np.logicalNot(inPrompt), np.logicalAnd(np.less(pos, end), np.logicalNot(state.done)));
  const forced = np.reshape(lax.dynamicSlice(state.seq, [zero, np.minimum(pos, maxLen - 1)], [b, 1]), [b]); // [b, 1] -> [b]
  const token = np.where(inPrompt, forced, np.where(generating, sampled, st.padToken)); // [b]
  let done = state.done;
  if (st.eosToken !== null) done = np.logicalOr(done, np.logicalAnd(generating, np.equal(sampled, st.eosToken)));
  const seq = lax.dynamicUpdateSlice(state.seq, np.reshape(token, [b, 1]), [zero, pos]); // [b] -> [b, 1]
  // Finished: eos emitted, or no position of the row's budget left after this one.
  const finished = np.all(np.logicalOr(done, np.greaterEqual(np.add(pos, 1), end)));
  return { state: { cache, seq, done }, finished, logits: last };
}

/**
 * One jitted step per device: jit's cache is keyed by shapes and dtypes, not devices, and a trace
 * captures the constants it creates (rotary tables, masks) on the device that was the default then.
 */
const chunkStepJits = new Map<string, typeof chunkStep>();
function chunkStepFor(deviceId: string): typeof chunkStep {
  let f = chunkStepJits.get(deviceId);
  if (!f) chunkStepJits.set(deviceId, (f = jit(chunkStep, { staticArgnums: [6], donateArgnums: [2] })));
  return f;
}

/** How many times the step function has been traced in this process (a jit cache check for tests). */
export function generateTraceCount(): number {
  return traces;
}

// ---------------------------------------------------------------------------------------------------
// generate

/** Prompts: a JS list of token lists, or a padded [batch, promptLen] int array with each row's length. */
export type Prompts = readonly (readonly number[])[] | { tokens: ArrayLike; lengths: readonly number[] | ArrayLike };

export interface GenerateOptions extends SampleOptions {
  /** The config the params were made with (checked against their shapes). */
  config?: PalmConfig;
  /** Randomness for sampling (each position uses foldIn(key, position)); not needed at temperature 0. */
  key?: random.Key;
  /** New tokens per row (after its own prompt). */
  maxNewTokens: number;
  /** Stop a row after it emits this token (the token is kept). */
  eosToken?: number | null;
  /** Written after a row stops (default 0). */
  padToken?: number;
  lora?: LoraParams | null;
  loraScope?: string | null;
  loraAlpha?: number;
  /** Look for "every row finished" (a device read) every this many steps (default 1). */
  stopCheckEvery?: number;
}

export interface GenerateResult {
  /** [batch, maxNewTokens] int32: each row's new tokens, padToken after eos. */
  tokens: Array;
  /** [batch, maxPromptLen + maxNewTokens] int32: prompt and new tokens, left-aligned, padToken after. */
  sequences: Array;
  /** Each row's new tokens as a list, up to and including eos (no padding). */
  completions: number[][];
  /** Each row's prompt length. */
  promptLengths: number[];
  /** Jitted decode steps run (after the prefill). */
  steps: number;
}

async function readInts(x: ArrayLike, what: string): Promise<{ data: number[]; shape: readonly number[] }> {
  const v = np.asArray(x, what);
  if (!isInt(v.aval.dtype)) throw new DTypeError(`${what}: must be integers, got ${v.aval.dtype}`);
  if (!(v instanceof Array)) throw new ArgumentError(`${what}: must be a concrete array, got a traced value\nTip: generate runs outside jit`);
  return { data: globalThis.Array.from(await v.data(), Number), shape: v.aval.shape };
}

/** Normalises prompts to JS token lists. */
async function promptLists(prompts: Prompts): Promise<number[][]> {
  if (globalThis.Array.isArray(prompts)) return (prompts as readonly (readonly number[])[]).map((p) => [...p]);
  const p = prompts as { tokens: ArrayLike; lengths: readonly number[] | ArrayLike };
  if (typeof p !== "object" || p === null || !("tokens" in p) || !("lengths" in p)) {
    throw new ArgumentError("generate: prompts must be a list of token lists or { tokens: [batch, promptLen], lengths: [batch] }");
  }
  const t = await readInts(p.tokens, "generate: prompts.tokens");
  if (t.shape.length !== 2) throw new ShapeError(`generate: prompts.tokens must be [batch, promptLen], got shape [${t.shape.join(", ")}]`);
  const [b, n] = t.shape as [number, number];
  const lengths = globalThis.Array.isArray(p.lengths) ? [...(p.lengths as number[])] : (await readInts(p.lengths as ArrayLike, "generate: prompts.lengths")).data;
  if (lengths.length !== b) throw new ShapeError(`generate: prompts.lengths must have ${b} entries (one per row), got ${lengths.length}`);
  return lengths.map((len, i) => {
    if (!Number.isInteger(len) || len < 0 || len > n) throw new ArgumentError(`generate: prompts.lengths[${i}] must be an integer in [0, ${n}], got ${len}`);
    return t.data.slice(i * n, i * n + len);
  });
}

/**
 * Samples up to `maxNewTokens` tokens after each prompt (see the file comment for the layout). The
 * decode step is jitted (traced once per batch shape and options) and costs one position per token
 * thanks to the cache. Reproducible: the same key, prompts and options give the same tokens.
 */
export async function generate(params: PalmParams, prompts: Prompts, opts: GenerateOptions): Promise<GenerateResult> {
  const arch = architecture(params);
  if (opts.config) checkCausal(arch, opts.config);
  const lists = await promptLists(prompts);
  if (lists.length === 0) throw new ShapeError("generate: needs at least one prompt, got 0");
  lists.forEach((p, i) => {
    if (p.length === 0) throw new ArgumentError(`generate: prompt ${i} is empty\nTip: start each prompt with a bos token`);
    p.forEach((tok) => {
      if (!Number.isInteger(tok) || tok < 0 || tok >= arch.numTokens) {
        throw new ArgumentError(`generate: prompt ${i} has token ${tok}, outside [0, ${arch.numTokens})`);
      }
    });
  });
  const maxNew = opts.maxNewTokens;
  if (!Number.isInteger(maxNew) || maxNew < 1) throw new ArgumentError(`generate: maxNewTokens must be a positive integer, got ${String(maxNew)}`);
  checkSampleOptions("generate", opts, arch.numTokens);
  const padToken = opts.padToken ?? 0;
  const eos = opts.eosToken ?? null;
  for (const [name, v] of [["padToken", padToken], ["eosToken", eos]] as const) {
    if (v !== null && !(Number.isInteger(v) && v >= 0 && v < arch.numTokens)) {
      throw new ArgumentError(`generate: ${name} must be a token id in [0, ${arch.numTokens}), got ${String(v)}`);
    }
  }
  const temperature = opts.temperature ?? 1;
  if (temperature !== 0 && opts.key === undefined) {
    throw new ArgumentError("generate: sampling needs a key, got none\nTip: pass { key: random.key(seed) }, or temperature 0 for greedy decoding");
  }
  const stopEvery = opts.stopCheckEvery ?? 1;
  if (!Number.isInteger(stopEvery) || stopEvery < 1) throw new ArgumentError(`generate: stopCheckEvery must be a positive integer, got ${stopEvery}`);

  const batch = lists.length;
  const lengths = lists.map((p) => p.length);
  const maxPrompt = Math.max(...lengths);
  const minPrompt = Math.min(...lengths);
  const maxLen = maxPrompt + maxNew;
  const host = new Int32Array(batch * maxLen).fill(padToken);
  lists.forEach((p, i) => host.set(p, i * maxLen));

  const st = (n: number): StepStatic => ({
    n,
    config: opts.config ?? null,
    loraScope: opts.lora && opts.loraScope ? opts.loraScope : null,
    loraAlpha: opts.loraAlpha ?? null,
    temperature,
    topK: opts.topK ?? null,
    topP: opts.topP ?? null,
    eosToken: eos,
    padToken,
    maxNewTokens: maxNew,
  });
  const loraArg = opts.lora && opts.loraScope ? opts.lora : null;
  // Arrays made here go to the params' device (the default device when the params are not concrete).
  const device = params.tokenEmb instanceof Array ? params.tokenEmb.device : undefined;
  const key = opts.key ?? np.array(new Uint32Array([0, 0]), { device });
  const lengthsArr = np.array(new Int32Array(lengths), { device });
  let state: StepState = {
    cache: initCache(params, batch, maxLen),
    seq: np.array(host, { shape: [batch, maxLen], device }),
    done: np.array(new Uint8Array(batch), { dtype: "bool", device }),
  };
  const i32 = (t: number): Array => np.array(new Int32Array([t]), { shape: [], device });

  const chunkStepJit = chunkStepFor(params.tokenEmb instanceof Array ? params.tokenEmb.device.id : "traced");
  // Prefill: the common prefix 0..minPrompt-1 at once, deciding position minPrompt.
  const t0 = i32(0);
  let r = chunkStepJit(params, loraArg, state, lengthsArr, t0, key, st(minPrompt));
  t0.dispose();
  state = r.state;
  let steps = 0;
  const decode = st(1);
  for (let t = minPrompt; t < maxLen - 1; t++) {
    if (steps % stopEvery === 0 && (await (r.finished as Array).item())) break;
    dispose([r.finished, r.logits]);
    const tArr = i32(t);
    r = chunkStepJit(params, loraArg, state, lengthsArr, tArr, key, decode);
    tArr.dispose();
    state = r.state;
    steps++;
  }
  const seq = state.seq as Array;
  dispose([state.cache, state.done, lengthsArr, r.logits, r.finished]);
  const all = globalThis.Array.from(await seq.data(), Number);
  const newHost = new Int32Array(batch * maxNew);
  const completions: number[][] = [];
  lists.forEach((p, i) => {
    const row = all.slice(i * maxLen + p.length, i * maxLen + p.length + maxNew);
    newHost.set(row, i * maxNew);
    const e = eos === null ? -1 : row.indexOf(eos);
    completions.push(e >= 0 ? row.slice(0, e + 1) : row);
  });
  return { tokens: np.array(newHost, { shape: [batch, maxNew] }), sequences: seq, completions, promptLengths: lengths, steps };
}

// ---------------------------------------------------------------------------------------------------
// Best of n

/** What a best-of-n scoring function sees: all batch·n candidates, prompt-major (row = prompt·n + j). */
export interface Candidates {
  prompts: number[][];
  completions: number[][];
  /** [batch·n, maxPromptLen + maxNewTokens] int32, as `generate`'s sequences. */
  sequences: Array;
  promptLengths: number[];
}

export type ScoreFn = (c: Candidates) => ArrayLike | readonly number[] | Promise<ArrayLike | readonly number[]>;

export interface BestOfNResult {
  /** Per prompt, the completion with the highest score (the first on ties). */
  best: number[][];
  bestIndex: number[];
  /** [batch][n] scores. */
  scores: number[][];
  /** [batch][n] completions. */
  candidates: number[][][];
}

/**
 * Best-of-n sampling (rejection sampling against a scorer, as in https://arxiv.org/abs/2112.09332):
 * samples n completions per prompt in one batch and keeps the one `scoreFn` rates highest.
 */
export async function bestOfN(params: PalmParams, prompts: Prompts, n: number, scoreFn: ScoreFn, opts: GenerateOptions): Promise<BestOfNResult> {
  if (!Number.isInteger(n) || n < 1) throw new ArgumentError(`bestOfN: n must be a positive integer, got ${String(n)}`);
  if (typeof scoreFn !== "function") throw new ArgumentError(`bestOfN: scoreFn must be a function, got ${typeof scoreFn}`);
  const lists = await promptLists(prompts);
  const rep = lists.flatMap((p) => globalThis.Array.from({ length: n }, () => p));
  const g = await generate(params, rep, opts);
  const raw = await scoreFn({ prompts: rep, completions: g.completions, sequences: g.sequences, promptLengths: g.promptLengths });
  let scores: number[];
  if (globalThis.Array.isArray(raw) && raw.every((s) => typeof s === "number")) scores = [...(raw as number[])];
  else {
    const v = np.asArray(raw as ArrayLike, "bestOfN: scores");
    if (!(v instanceof Array)) throw new ArgumentError("bestOfN: scoreFn must return concrete scores, got a traced value");
    scores = globalThis.Array.from(await v.data(), Number);
  }
  if (scores.length !== rep.length) throw new ShapeError(`bestOfN: scoreFn must return ${rep.length} scores (batch·n), got ${scores.length}`);
  const out: BestOfNResult = { best: [], bestIndex: [], scores: [], candidates: [] };
  lists.forEach((_, i) => {
    const s = scores.slice(i * n, (i + 1) * n);
    let j = 0;
    s.forEach((v, k) => {
      if (v > s[j]! || (Number.isNaN(s[j]!) && !Number.isNaN(v))) j = k;
    });
    out.scores.push(s);
    out.candidates.push(g.completions.slice(i * n, (i + 1) * n));
    out.bestIndex.push(j);
    out.best.push(g.completions[i * n + j]!);
  });
  return out;
}

/**
 * @file PaLM as pure functions: `init(key, config)` builds a params pytree, `apply(params, tokens,
 * options)` returns logits [batch, seq, numTokens]; `loss` is the next-token cross-entropy. Everything
 * is composed of `np` / `nn` operations, so it works under grad, vmap and jit.
 *
 * `applyWithCache(params, tokens, cache, position)` is the same model for cached decoding (used by
 * src/nn/generate.ts): it runs the same `block`, writing each layer's keys/values into a KV cache.
 *
 * Read first: `block` (one parallel attention + feed-forward layer, optionally reading and writing the
 * cache), then `trunk` (the layer loop), then `forward` / `applyWithCache` (the two ways in). The numerics follow
 * lucidrains/PaLM-rlhf-pytorch (palm.py) closely: its weights map onto ours one to one (torch's Linear
 * stores [out, in]; we store [in, out], so transpose when importing a checkpoint). One deliberate
 * difference: some versions of that file compute the logits from the un-normalised residual stream
 * (`to_logits(x)`); we use the final LayerNorm's output, as the PaLM paper and its later versions do.
 *
 * Params layout (all linears bias-free, weights [in, out]):
 *   tokenEmb [numTokens, dim] (tied: also the output projection)
 *   layers[l].norm.gamma [dim]
 *   layers[l].fusedAttnFfProj [dim, heads·dimHead + dimHead + dimHead + 2·ffMult·dim]   (q | k | v | ff)
 *   layers[l].attnOut [heads·dimHead, dim]
 *   layers[l].ffOut [ffMult·dim, dim]
 *   layers[l].qScale, kScale [dimHead]   (only with qkRmsNorm)
 *   norm.gamma [dim]
 * The architecture (dim, heads, dimHead, ffMult, depth, numTokens, qkRmsNorm) is read back from these
 * shapes, so `apply` needs the config only for what shapes cannot tell (causal, xPos, dropout).
 */
import { isFloat, isInt, shapeStr, DType } from "../autodiff/aval.js";
import { Tracer, Value } from "../autodiff/core.js";
import { ArgumentError, DTypeError, ShapeError } from "../autodiff/errors.js";
import { Array } from "../ops/array.js";
import * as lax from "../ops/lax/index.js";
import * as np from "../ops/np.js";
import type { ArrayLike } from "../ops/np.js";
import * as random from "../ops/random.js";
import { silu, softmax } from "./activations.js";
import { tokenCrossEntropy } from "./losses.js";

// ---------------------------------------------------------------------------------------------------
// Config and params

export interface PalmConfig {
  numTokens: number;
  dim: number;
  depth: number;
  /** Query heads (default 8). Keys and values have a single shared head (multi-query). */
  heads?: number;
  /** Size of each head (default 64); must be even for the rotary embedding. */
  dimHead?: number;
  /** Feed-forward width as a multiple of dim (default 4). */
  ffMult?: number;
  /** Causal (decoder) attention (default true). Non-causal models take a padding mask instead. */
  causal?: boolean;
  /** l2-normalise q and k, scale them by learned per-channel gains, and use `qkScale` as the attention scale. */
  qkRmsNorm?: boolean;
  /** The attention scale used with qkRmsNorm (default 8, as PaLM-rlhf-pytorch). */
  qkScale?: number;
  /** xPos decay base (default 512). */
  xposScaleBase?: number;
  /** xPos scaling of q and k (default true); it is only ever on in causal mode. */
  useXpos?: boolean;
  /** Dropout on the attention probabilities (default 0); runs only when `apply` is given a key. */
  attnDropout?: number;
  /** Dropout after the SwiGLU (default 0); runs only when `apply` is given a key. */
  ffDropout?: number;
  /** Label ignored by `loss` (default 0); null ignores nothing. */
  crossEntropyIgnoreIndex?: number | null;
  /** dtype of the params made by `init` (default float32). `apply` computes in the params' dtype. */
  dtype?: DType;
}

export type ResolvedPalmConfig = Required<Omit<PalmConfig, "crossEntropyIgnoreIndex">> & {
  crossEntropyIgnoreIndex: number | null;
};

export interface PalmLayerParams {
  norm: { gamma: Value };
  fusedAttnFfProj: Value;
  attnOut: Value;
  ffOut: Value;
  qScale?: Value;
  kScale?: Value;
}

export interface PalmParams {
  tokenEmb: Value;
  layers: PalmLayerParams[];
  norm: { gamma: Value };
}

/** One LoRA adapter: x ↦ (x @ A @ B)·alpha/r (https://arxiv.org/abs/2106.09685). A [in, r], B [r, out]. */
export interface LoraAdapter {
  A: Value;
  B: Value;
}
/** Adapters for one layer: on the query, key, value and attention-output projections. */
export interface LoraLayer {
  q: LoraAdapter;
  k: LoraAdapter;
  v: LoraAdapter;
  o: LoraAdapter;
}
/** LoRA params keyed by scope ("actor", "critic", "reward", ...): one LoraLayer per PaLM layer. */
export type LoraParams = Record<string, LoraLayer[]>;

const posInt = (x: unknown): boolean => typeof x === "number" && Number.isInteger(x) && x > 0;

/** Fills in PaLM-rlhf-pytorch's defaults and checks the config. */
export function resolveConfig(config: PalmConfig): ResolvedPalmConfig {
  if (typeof config !== "object" || config === null) {
    throw new ArgumentError(`palm: config must be an object, got ${config === null ? "null" : typeof config}`);
  }
  const c: ResolvedPalmConfig = {
    numTokens: config.numTokens,
    dim: config.dim,
    depth: config.depth,
    heads: config.heads ?? 8,
    dimHead: config.dimHead ?? 64,
    ffMult: config.ffMult ?? 4,
    causal: config.causal ?? true,
    qkRmsNorm: config.qkRmsNorm ?? false,
    qkScale: config.qkScale ?? 8,
    xposScaleBase: config.xposScaleBase ?? 512,
    useXpos: config.useXpos ?? true,
    attnDropout: config.attnDropout ?? 0,
    ffDropout: config.ffDropout ?? 0,
    crossEntropyIgnoreIndex: config.crossEntropyIgnoreIndex === undefined ? 0 : config.crossEntropyIgnoreIndex,
    dtype: config.dtype ?? "float32",
  };
  for (const k of ["numTokens", "dim", "depth", "heads", "dimHead", "ffMult"] as const) {
    if (!posInt(c[k])) throw new ArgumentError(`palm: config.${k} must be a positive integer, got ${String(c[k])}`);
  }
  if (c.dimHead % 2 !== 0) {
    throw new ArgumentError(`palm: config.dimHead must be even (rotary embeddings rotate pairs of channels), got ${c.dimHead}`);
  }
  for (const k of ["attnDropout", "ffDropout"] as const) {
    if (!(c[k] >= 0 && c[k] < 1)) throw new ArgumentError(`palm: config.${k} must be in [0, 1), got ${c[k]}`);
  }
  if (!(c.xposScaleBase > 0)) throw new ArgumentError(`palm: config.xposScaleBase must be positive, got ${c.xposScaleBase}`);
  if (!isFloat(c.dtype)) throw new DTypeError(`palm: config.dtype must be float32 or float64, got ${c.dtype}`);
  return c;
}

/** The shapes of the architecture, read back from a params tree. */
export interface PalmArchitecture {
  numTokens: number;
  dim: number;
  depth: number;
  heads: number;
  dimHead: number;
  ffInner: number;
  qkRmsNorm: boolean;
  dtype: DType;
}

const isValue = (x: unknown): x is Value => x instanceof Array || x instanceof Tracer;

function shapeOf(what: string, x: unknown, rank: number): readonly number[] {
  if (!isValue(x)) throw new ArgumentError(`palm: params.${what} must be an array, got ${x === null ? "null" : typeof x}`);
  if (x.aval.ndim !== rank) throw new ShapeError(`palm: params.${what} must have rank ${rank}, got ${x.aval.str()}`);
  return x.aval.shape;
}

/** Reads dim, heads, dimHead, ... from the params' shapes, checking that every layer agrees. */
export function architecture(params: PalmParams): PalmArchitecture {
  if (typeof params !== "object" || params === null || !globalThis.Array.isArray(params.layers)) {
    throw new ArgumentError("palm: params must be the tree made by palm.init ({tokenEmb, layers, norm})");
  }
  const [numTokens, dim] = shapeOf("tokenEmb", params.tokenEmb, 2) as [number, number];
  const depth = params.layers.length;
  if (depth === 0) throw new ShapeError("palm: params.layers must not be empty");
  const l0 = params.layers[0]!;
  const attnInner = shapeOf("layers[0].attnOut", l0.attnOut, 2)[0]!;
  const ffInner = shapeOf("layers[0].ffOut", l0.ffOut, 2)[0]!;
  const fusedOut = shapeOf("layers[0].fusedAttnFfProj", l0.fusedAttnFfProj, 2)[1]!;
  const dimHead = (fusedOut - attnInner - 2 * ffInner) / 2;
  if (!posInt(dimHead) || attnInner % dimHead !== 0) {
    throw new ShapeError(
      `palm: layers[0].fusedAttnFfProj's ${fusedOut} outputs must be heads·dimHead (${attnInner}) + 2·dimHead + 2·ffInner (${2 * ffInner})`,
    );
  }
  const qkRmsNorm = l0.qScale !== undefined;
  const want: Record<string, number[]> = {
    "norm.gamma": [dim],
    fusedAttnFfProj: [dim, fusedOut],
    attnOut: [attnInner, dim],
    ffOut: [ffInner, dim],
    ...(qkRmsNorm ? { qScale: [dimHead], kScale: [dimHead] } : {}),
  };
  params.layers.forEach((lp, l) => {
    for (const [name, shape] of Object.entries(want)) {
      const v = name === "norm.gamma" ? lp.norm?.gamma : (lp as unknown as Record<string, unknown>)[name];
      const s = shapeOf(`layers[${l}].${name}`, v, shape.length);
      if (s.some((d, i) => d !== shape[i])) {
        throw new ShapeError(`palm: params.layers[${l}].${name} must be ${shapeStr(shape)} like layer 0's, got ${shapeStr(s)}`);
      }
    }
    if ((lp.qScale !== undefined) !== qkRmsNorm || (lp.kScale !== undefined) !== qkRmsNorm) {
      throw new ArgumentError(`palm: layers must all have qScale/kScale (qkRmsNorm) or none, layer ${l} differs`);
    }
  });
  const g = shapeOf("norm.gamma", params.norm?.gamma, 1);
  if (g[0] !== dim) throw new ShapeError(`palm: params.norm.gamma must be [${dim}], got ${shapeStr(g)}`);
  const dtype = params.tokenEmb.aval.dtype;
  if (!isFloat(dtype)) throw new DTypeError(`palm: params must be float32 or float64, got tokenEmb ${dtype}`);
  return { numTokens, dim, depth, heads: attnInner / dimHead, dimHead, ffInner, qkRmsNorm, dtype };
}

function checkConfigAgainst(c: ResolvedPalmConfig, a: PalmArchitecture): void {
  const pairs: [string, number | boolean, number | boolean][] = [
    ["numTokens", c.numTokens, a.numTokens],
    ["dim", c.dim, a.dim],
    ["depth", c.depth, a.depth],
    ["heads", c.heads, a.heads],
    ["dimHead", c.dimHead, a.dimHead],
    ["ffMult·dim", c.ffMult * c.dim, a.ffInner],
    ["qkRmsNorm", c.qkRmsNorm, a.qkRmsNorm],
  ];
  for (const [k, want, got] of pairs) {
    if (want !== got) {
      throw new ShapeError(`palm.apply: config.${k} is ${want} but the params have ${k} ${got}\nTip: pass the config the params were made with`);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// init

/** Keys for each parameter, derived by folding a fixed index into the root key. */
const paramKey = (key: random.Key, i: number): Value => random.foldIn(key, i);

/**
 * Fresh params: token embeddings N(0, 0.02) (tied with the output projection, as PaLM), linears
 * U(-1/√fanIn, 1/√fanIn) (torch's nn.Linear default, which PaLM-rlhf-pytorch keeps), gains 1.
 */
export function init(key: random.Key, config: PalmConfig): PalmParams {
  const c = resolveConfig(config);
  const { dim, heads, dimHead, dtype } = c;
  const attnInner = heads * dimHead;
  const ffInner = c.ffMult * dim;
  const fusedOut = attnInner + 2 * dimHead + 2 * ffInner;
  const linear = (k: Value, fanIn: number, fanOut: number): Value => {
    const b = 1 / Math.sqrt(fanIn);
    return random.uniform(k, [fanIn, fanOut], { dtype, minval: -b, maxval: b });
  };
  const layers: PalmLayerParams[] = [];
  for (let l = 0; l < c.depth; l++) {
    const lk = paramKey(key, l + 1);
    const lp: PalmLayerParams = {
      norm: { gamma: np.ones([dim], { dtype }) },
      fusedAttnFfProj: linear(paramKey(lk, 0), dim, fusedOut),
      attnOut: linear(paramKey(lk, 1), attnInner, dim),
      ffOut: linear(paramKey(lk, 2), ffInner, dim),
    };
    if (c.qkRmsNorm) {
      lp.qScale = np.ones([dimHead], { dtype });
      lp.kScale = np.ones([dimHead], { dtype });
    }
    layers.push(lp);
  }
  return {
    tokenEmb: np.multiply(random.normal(paramKey(key, 0), [c.numTokens, dim], { dtype }), 0.02),
    layers,
    norm: { gamma: np.ones([dim], { dtype }) },
  };
}

/** Total number of scalars in a params tree (any tree of arrays). */
export function numParams(params: unknown): number {
  let n = 0;
  const visit = (x: unknown): void => {
    if (isValue(x)) n += x.aval.size;
    else if (globalThis.Array.isArray(x)) x.forEach(visit);
    else if (typeof x === "object" && x !== null) Object.values(x).forEach(visit);
  };
  visit(params);
  return n;
}

// ---------------------------------------------------------------------------------------------------
// Building blocks

/** LayerNorm with a learned gain and no bias (the bias is fixed at 0 in PaLM), eps 1e-5, over the last axis. */
export function layerNorm(x: Value, gamma: Value, eps = 1e-5): Value {
  const mean = np.mean(x, { axis: -1, keepdims: true });
  const xc = np.subtract(x, mean);
  const variance = np.mean(np.square(xc), { axis: -1, keepdims: true });
  return np.multiply(np.multiply(xc, np.rsqrt(np.add(variance, eps))), gamma);
}

/** x / max(‖x‖₂, 1e-12) over the last axis (torch's F.normalize). */
export function l2norm(x: Value): Value {
  return np.multiply(x, np.rsqrt(np.maximum(np.sum(np.square(x), { axis: -1, keepdims: true }), 1e-24)));
}

/** The rotary angles (and xPos scales) for positions 0..seqLen-1, as constants of `dtype`. */
export interface Rotary {
  /** [seq, dimHead]: position·θ_j, the θ's repeated for the two halves. */
  freqs: Value;
  /** [seq, dimHead]: xPos scales for q (k uses their reciprocal), or null when xPos is off. */
  scale: Value | null;
  /** 1/scale, or null. */
  invScale: Value | null;
}

// Rotary position embeddings, RoFormer (https://arxiv.org/abs/2104.09864): rotating q and k by an angle
// proportional to the position makes q·k depend only on the relative offset. xPos
// (https://arxiv.org/abs/2212.10554) additionally scales q by ζ^(i/base) and k by ζ^(-j/base), so the
// attention score decays smoothly with distance (ζ < 1 per frequency), for better length extrapolation.
export function rotaryEmbedding(
  seqLen: number,
  dimHead: number,
  opts: { xpos?: boolean; scaleBase?: number; dtype?: DType } = {},
): Rotary {
  const half = dimHead / 2;
  const dtype = opts.dtype ?? "float32";
  const freqs = new Float64Array(seqLen * dimHead);
  const scale = new Float64Array(seqLen * dimHead);
  const base = opts.scaleBase ?? 512;
  for (let i = 0; i < seqLen; i++) {
    // PaLM-rlhf-pytorch centres xPos's exponent on the middle of the sequence; the centre cancels in
    // q·k (q gets ζ^p, k gets ζ^-p), it only keeps the scales near 1.
    const power = (i - Math.floor(seqLen / 2)) / base;
    for (let j = 0; j < half; j++) {
      const invFreq = 1 / Math.pow(10000, (2 * j) / dimHead);
      const zeta = (2 * j + 0.4 * dimHead) / (1.4 * dimHead);
      freqs[i * dimHead + j] = freqs[i * dimHead + j + half] = i * invFreq;
      scale[i * dimHead + j] = scale[i * dimHead + j + half] = Math.pow(zeta, power);
    }
  }
  const shape = [seqLen, dimHead];
  const f = np.array(freqs, { dtype, shape });
  if (!opts.xpos) return { freqs: f, scale: null, invScale: null };
  return {
    freqs: f,
    scale: np.array(scale, { dtype, shape }),
    invScale: np.array(scale.map((s) => 1 / s), { dtype, shape }),
  };
}

/** [x1, x2] ↦ [-x2, x1] on the two halves of the last axis. */
export function rotateHalf(x: Value): Value {
  const [x1, x2] = np.split(x, 2, -1); // 2 × [..., d/2]
  return np.concatenate([np.negative(x2!), x1!], -1); // [..., d]
}

/** t·cos(θ)·s + rotateHalf(t)·sin(θ)·s; freqs/scale [seq, d] broadcast against t [..., seq, d]. */
export function applyRotary(freqs: Value, t: Value, scale: Value | null = null): Value {
  let cos = np.cos(freqs);
  let sin = np.sin(freqs);
  if (scale !== null) {
    cos = np.multiply(cos, scale);
    sin = np.multiply(sin, scale);
  }
  return np.add(np.multiply(t, cos), np.multiply(rotateHalf(t), sin));
}

/** The most negative finite value of a float dtype (what masked attention scores are set to, as torch). */
export const negMax = (dtype: DType): number => (dtype === "float64" ? -Number.MAX_VALUE : -3.4028234663852886e38);

/** Inverted dropout: zero with probability p, scale the rest by 1/(1-p). */
function dropout(x: Value, p: number, key: Value | null): Value {
  if (key === null || p === 0) return x;
  const keep = random.bernoulli(key, 1 - p, x.aval.shape);
  return np.where(keep, np.divide(x, 1 - p), 0);
}

/** (x @ A @ B)·scale: the low-rank update, without forming A @ B. */
export function loraDelta(x: Value, a: LoraAdapter, scale: number): Value {
  return np.multiply(np.dot(np.dot(x, a.A), a.B), scale);
}

interface BlockContext {
  c: ResolvedPalmConfig;
  arch: PalmArchitecture;
  /** Rotary angles and xPos scales at the positions of this chunk's tokens: [n, dimHead] each. */
  rotary: Rotary;
  /** [batch, 1, 1, keys] key padding mask, or null. */
  keyMask: Value | null;
  /** [n, keys], true where a query may not see a key (the key comes later), or null. */
  causalMask: Value | null;
  loraScale: number;
}

/** One layer's keys and values: [batch, maxLen, dimHead] in the cache (multi-query: no head axis). */
interface LayerKv {
  k: Value;
  v: Value;
}

/** One layer's cache and the int32 scalar position where the chunk's keys and values go. */
interface LayerCache extends LayerKv {
  start: Value;
}

/**
 * One layer's residual branch: attn(norm(x)) + ff(norm(x)), from one fused projection. Without a cache
 * the chunk attends to itself; with one, its keys and values are written into the cache at
 * `cache.start` and the queries attend over the whole cache (ctx.causalMask hides the slots after
 * each query). Returns the branch output [b, n, dim] and the keys/values attended over.
 */
function block(lp: PalmLayerParams, x: Value, ctx: BlockContext, lora: LoraLayer | null, key: Value | null, cache: LayerCache | null): { y: Value; kv: LayerKv } {
  const { c, arch, rotary } = ctx;
  const { heads, dimHead, ffInner } = arch;
  const [b, n] = x.aval.shape as [number, number, number];
  const attnInner = heads * dimHead;
  const dtype = x.aval.dtype;

  // Pre-norm (https://arxiv.org/abs/2002.04745): normalising the branch input, not the residual stream,
  // keeps gradients well-scaled at depth without warm-up tricks; PaLM drops LayerNorm's bias.
  const h = layerNorm(x, lp.norm.gamma); // [b, n, dim]

  // One fused, bias-free projection for q, k, v and the feed-forward input, evaluated in parallel with
  // attention: PaLM (https://arxiv.org/abs/2204.02311, §2 "parallel layers", from GPT-J) — the input
  // matmuls fuse into one, ~15 % faster training at large scale; the quality cost seen at 8B vanishes at 62B.
  const fused = np.dot(h, lp.fusedAttnFfProj); // [b, n, heads·dimHead + 2·dimHead + 2·ffInner]
  let [q, k, v, ff] = np.split(fused, [attnInner, attnInner + dimHead, attnInner + 2 * dimHead], -1) as [Value, Value, Value, Value];
  // q [b, n, heads·dimHead], k [b, n, dimHead], v [b, n, dimHead], ff [b, n, 2·ffInner]

  if (lora !== null) {
    q = np.add(q, loraDelta(h, lora.q, ctx.loraScale));
    k = np.add(k, loraDelta(h, lora.k, ctx.loraScale));
    v = np.add(v, loraDelta(h, lora.v, ctx.loraScale));
  }

  // Multi-query attention (Shazeer, https://arxiv.org/abs/1911.02150): many query heads share one key
  // and one value head, so k and v have no head axis; decoding reads far less memory for the same quality.
  q = np.transpose(np.reshape(q, [b, n, heads, dimHead]), [0, 2, 1, 3]); // [b, n, heads, dimHead] -> [b, heads, n, dimHead]

  if (arch.qkRmsNorm) {
    // qk-normalisation (https://arxiv.org/abs/2010.04245, as in PaLM-rlhf-pytorch): unit-norm q and k with
    // learned per-channel gains bound the logits, so a fixed, larger attention scale (qkScale) is used.
    q = np.multiply(l2norm(q), lp.qScale!); // [b, heads, n, dimHead]
    k = np.multiply(l2norm(k), lp.kScale!); // [b, n, dimHead]
  }

  q = applyRotary(rotary.freqs, q, rotary.scale); // [b, heads, n, dimHead]
  k = applyRotary(rotary.freqs, k, rotary.invScale); // [b, n, dimHead]

  // With a cache, write this chunk's keys/values at `start` and attend over every slot.
  let kv: LayerKv = { k, v };
  if (cache !== null) {
    const zero = np.zeros([], { dtype: "int32" });
    kv = {
      k: lax.dynamicUpdateSlice(cache.k, k, [zero, cache.start, zero]), // [b, maxLen, dimHead]
      v: lax.dynamicUpdateSlice(cache.v, v, [zero, cache.start, zero]), // [b, maxLen, dimHead]
    };
  }

  const attnScale = arch.qkRmsNorm ? c.qkScale : dimHead ** -0.5;
  let sim = np.multiply(np.einsum("bhid,bjd->bhij", q, kv.k), attnScale); // [b, heads, n(i), keys(j)]
  if (ctx.keyMask !== null) sim = np.where(ctx.keyMask, sim, negMax(dtype));
  if (ctx.causalMask !== null) sim = np.where(ctx.causalMask, negMax(dtype), sim);
  let attn = softmax(sim, { axis: -1 }); // [b, heads, n, keys]
  attn = dropout(attn, c.attnDropout, key === null ? null : random.foldIn(key, 0));

  let out = np.einsum("bhij,bjd->bhid", attn, kv.v); // [b, heads, n, dimHead]
  out = np.reshape(np.transpose(out, [0, 2, 1, 3]), [b, n, attnInner]); // [b, heads, n, dimHead] -> [b, n, heads, dimHead] -> [b, n, heads·dimHead]
  let attnOut = np.dot(out, lp.attnOut); // [b, n, dim]
  if (lora !== null) attnOut = np.add(attnOut, loraDelta(out, lora.o, ctx.loraScale));

  // SwiGLU feed-forward (Shazeer, https://arxiv.org/abs/2002.05202): x·silu(gate) instead of relu(x),
  // better perplexity at equal compute; the value half comes first, the gate second, as in the reference.
  const [ffx, gate] = np.split(ff, [ffInner], -1) as [Value, Value]; // 2 × [b, n, ffInner]
  let ffh = np.multiply(silu(gate), ffx);
  ffh = dropout(ffh, c.ffDropout, key === null ? null : random.foldIn(key, 1));
  const ffOut = np.dot(ffh, lp.ffOut); // [b, n, dim]

  return { y: np.add(attnOut, ffOut), kv };
}

/**
 * The trunk shared by `apply` and `applyWithCache`: token embeddings, every layer with its residual,
 * the final LayerNorm. Returns the normalised embeddings [b, n, dim] and, with a cache, the new one.
 */
function trunk(
  params: PalmParams,
  ids: Value,
  ctx: BlockContext,
  lora: LoraLayer[] | null,
  key: Value | null,
  extraEmbed: ArrayLike | null,
  cache: { kv: KvCache; start: Value } | null,
): { embeddings: Value; cache: KvCache | null } {
  let x = np.take(params.tokenEmb, ids, 0); // [b, n, dim]
  if (extraEmbed !== null) x = np.add(x, extraEmbed);
  const newK: Value[] = [];
  const newV: Value[] = [];
  params.layers.forEach((lp, l) => {
    const lk = key === null ? null : random.foldIn(key, l);
    const layerCache = cache === null ? null : { k: cache.kv.k[l]!, v: cache.kv.v[l]!, start: cache.start };
    const { y, kv } = block(lp, x, ctx, lora === null ? null : lora[l]!, lk, layerCache);
    x = np.add(y, x);
    newK.push(kv.k);
    newV.push(kv.v);
  });
  return { embeddings: layerNorm(x, params.norm.gamma), cache: cache === null ? null : { k: newK, v: newV } }; // [b, n, dim]
}

/** The config for `apply`: the given one (checked against the params' shapes), or PaLM's defaults. */
function configFor(arch: PalmArchitecture, config: PalmConfig | undefined): ResolvedPalmConfig {
  // Without a config, the shapes come from the params (arch) and the rest from PaLM's defaults; the
  // blocks read sizes only from `arch`, so c.ffMult is never used on that path.
  const c = resolveConfig(config ?? { numTokens: arch.numTokens, dim: arch.dim, depth: arch.depth, heads: arch.heads, dimHead: arch.dimHead, qkRmsNorm: arch.qkRmsNorm });
  if (config) checkConfigAgainst(c, arch);
  return c;
}

/** The LoRA layers of `options.loraScope` (null without LoRA) and their scale alpha/r. */
export function resolveLora(
  name: string,
  arch: PalmArchitecture,
  options: { lora?: LoraParams | null; loraScope?: string | null; loraAlpha?: number },
): { layers: LoraLayer[] | null; scale: number } {
  if (!options.lora || !options.loraScope) return { layers: null, scale: 1 };
  const scoped = options.lora[options.loraScope];
  if (!scoped) {
    throw new ArgumentError(
      `${name}: LoRA scope "${options.loraScope}" not found, got scopes ${JSON.stringify(Object.keys(options.lora))}\nTip: lora.init(key, config, { scopes: ["${options.loraScope}"] })`,
    );
  }
  if (scoped.length !== arch.depth) {
    throw new ShapeError(`${name}: LoRA scope "${options.loraScope}" has ${scoped.length} layers, the model ${arch.depth}`);
  }
  const r = scoped[0]!.q.A.aval.shape[1]!;
  return { layers: scoped, scale: (options.loraAlpha ?? r) / r };
}

// ---------------------------------------------------------------------------------------------------
// apply

export interface ApplyOptions {
  /**
   * The config the params were made with. Shapes are read from the params; the config supplies what
   * shapes cannot (causal, xPos, qkScale, dropout) and is checked against them. Without it, PaLM's
   * defaults apply (causal, xPos on, no dropout).
   */
  config?: PalmConfig;
  /**
   * [batch, seq] bool (or 0/1): which tokens may be attended to (a key padding mask). In non-causal mode
   * negative token ids are masked too (and embedded as token 0), as PaLM-rlhf-pytorch does.
   */
  mask?: ArrayLike | null;
  /** LoRA params (from `lora.init`) and the scope to apply; no adapter when either is missing. */
  lora?: LoraParams | null;
  loraScope?: string | null;
  /** LoRA's alpha; the adapter output is scaled by alpha/r (default alpha = r, scale 1, as the reference). */
  loraAlpha?: number;
  /** Dropout key: dropout (config.attnDropout / ffDropout) runs only when one is given. */
  key?: random.Key | null;
  /** [batch, seq, dim] added to the token embeddings (the reward model's segment embeddings). */
  extraEmbed?: ArrayLike | null;
  /** Also return the final normalised embeddings: `{ logits, embeddings }`. */
  returnEmbeddings?: boolean;
}

function checkTokens(name: string, tokens: ArrayLike): Value {
  const t = np.asArray(tokens, name);
  if (!isInt(t.aval.dtype)) {
    throw new DTypeError(`${name}: tokens must be integers (int32), got ${t.aval.dtype}\nTip: np.array(ids, { dtype: "int32" })`);
  }
  if (t.aval.ndim !== 1 && t.aval.ndim !== 2) {
    throw new ShapeError(`${name}: tokens must be [batch, seq] or [seq], got ${t.aval.str()}`);
  }
  if (t.aval.shape[t.aval.ndim - 1] === 0) throw new ShapeError(`${name}: tokens must not be empty, got ${t.aval.str()}`);
  return np.astype(t, "int32");
}

/** The shared forward pass: final normalised embeddings [b, n, dim]. */
function forward(name: string, params: PalmParams, tokens: Value, options: ApplyOptions): Value {
  const arch = architecture(params);
  const c = configFor(arch, options.config);
  const [b, n] = tokens.aval.shape as [number, number];

  let keyMask: Value | null = null;
  let ids = tokens;
  if (!c.causal) {
    const valid = np.greaterEqual(tokens, 0); // [b, n]
    keyMask = valid;
    ids = np.where(valid, tokens, 0);
  }
  if (options.mask !== undefined && options.mask !== null) {
    const m = np.asArray(options.mask, name);
    if (m.aval.ndim !== 2 || m.aval.shape[0] !== b || m.aval.shape[1] !== n) {
      throw new ShapeError(`${name}: mask must be [batch, seq] = ${shapeStr([b, n])}, got ${m.aval.str()}`);
    }
    const mb = m.aval.dtype === "bool" ? m : np.notEqual(m, 0);
    keyMask = keyMask === null ? mb : np.logicalAnd(keyMask, mb);
  }
  const keyMask4 = keyMask === null ? null : np.reshape(keyMask, [b, 1, 1, n]); // [b, n] -> [b, 1, 1, n(j)]
  // Causal (autoregressive) masking (https://arxiv.org/abs/1706.03762): position i attends to j <= i only.
  const causalMask = c.causal ? np.triu(np.ones([n, n], { dtype: "bool" }), 1) : null; // [n(i), n(j)], true for j > i
  const lora = resolveLora(name, arch, options);

  const ctx: BlockContext = {
    c,
    arch,
    rotary: rotaryEmbedding(n, arch.dimHead, { xpos: c.causal && c.useXpos, scaleBase: c.xposScaleBase, dtype: arch.dtype }),
    keyMask: keyMask4,
    causalMask,
    loraScale: lora.scale,
  };
  return trunk(params, ids, ctx, lora.layers, options.key ?? null, options.extraEmbed ?? null, null).embeddings; // [b, n, dim]
}

/** Logits [b, n, numTokens] from the final embeddings [b, n, dim]. */
function toLogits(params: PalmParams, embeddings: Value): Value {
  // Tied input/output embeddings (Press & Wolf, https://arxiv.org/abs/1608.05859), as PaLM: the output
  // projection is the embedding matrix, saving numTokens·dim params and regularising both.
  return np.einsum("bnd,vd->bnv", embeddings, params.tokenEmb); // [b, n, dim] x [numTokens, dim] -> [b, n, numTokens]
}

/**
 * Unbatched calls: tokens [seq] (and a [seq] mask, a [seq, dim] extraEmbed) get a batch axis of 1, so
 * `vmap` over single sequences works; `squeeze` says whether to drop it from the results again.
 */
function batchArgs(tokens: Value, options: ApplyOptions): { tokens: Value; options: ApplyOptions; squeeze: boolean } {
  if (tokens.aval.ndim === 2) return { tokens, options, squeeze: false };
  const lift = (x: ArrayLike | null | undefined, rank: number): ArrayLike | null | undefined => {
    if (x === undefined || x === null) return x;
    const v = np.asArray(x, "palm");
    return v.aval.ndim === rank ? np.expandDims(v, 0) : v; // [...] -> [1, ...]
  };
  return {
    tokens: np.expandDims(tokens, 0), // [seq] -> [1, seq]
    options: { ...options, mask: lift(options.mask, 1), extraEmbed: lift(options.extraEmbed, 2) },
    squeeze: true,
  };
}

/**
 * Logits [batch, seq, numTokens] for tokens [batch, seq] (int32); [seq] gives [seq, numTokens]. With
 * `returnEmbeddings`, `{ logits, embeddings }` where embeddings are the final LayerNorm's output.
 */
export function apply(params: PalmParams, tokens: ArrayLike, options: ApplyOptions & { returnEmbeddings: true }): { logits: Value; embeddings: Value };
export function apply(params: PalmParams, tokens: ArrayLike, options?: ApplyOptions): Value;
export function apply(params: PalmParams, tokens: ArrayLike, options: ApplyOptions = {}): Value | { logits: Value; embeddings: Value } {
  const b = batchArgs(checkTokens("palm.apply", tokens), options);
  let embeddings = forward("palm.apply", params, b.tokens, b.options); // [b, n, dim]
  let logits = toLogits(params, embeddings); // [b, n, numTokens]
  if (b.squeeze) {
    embeddings = np.squeeze(embeddings, 0); // [1, n, dim] -> [n, dim]
    logits = np.squeeze(logits, 0); // [1, n, numTokens] -> [n, numTokens]
  }
  return options.returnEmbeddings ? { logits, embeddings } : logits;
}

/** Only the final normalised embeddings [batch, seq, dim] (no logits), for reward / value heads. */
export function embed(params: PalmParams, tokens: ArrayLike, options: ApplyOptions = {}): Value {
  const b = batchArgs(checkTokens("palm.embed", tokens), options);
  const e = forward("palm.embed", params, b.tokens, b.options); // [b, n, dim]
  return b.squeeze ? np.squeeze(e, 0) : e; // [1, n, dim] -> [n, dim]
}

/** Options of `loss`: those of `apply` (a `mask` has the tokens' shape; an `extraEmbed` must cover the seq-1 inputs). */
export interface LossOptions extends ApplyOptions {
  /** [batch, seq] mask over the *tokens*: a target token counts only where it is true. */
  lossMask?: ArrayLike;
  /** Overrides config.crossEntropyIgnoreIndex (default 0). */
  ignoreIndex?: number | null;
}

/**
 * The language-model loss (PaLM-rlhf-pytorch's `return_loss`): tokens[:, :-1] predict tokens[:, 1:],
 * mean cross-entropy over targets that are not the ignore index (0 by default) and not masked out.
 */
export function loss(params: PalmParams, tokens: ArrayLike, options: LossOptions = {}): Value {
  let t = checkTokens("palm.loss", tokens);
  if (t.aval.ndim === 1) t = np.expandDims(t, 0); // [seq] -> [1, seq]
  const n = t.aval.shape[1]!;
  if (n < 2) throw new ShapeError(`palm.loss: needs at least 2 tokens per sequence, got ${t.aval.str()}`);
  const inputs = np.split(t, [n - 1], 1)[0]!; // [b, n-1]
  const labels = np.split(t, [1], 1)[1]!; // [b, n-1]
  let mask: Value | undefined;
  if (options.lossMask !== undefined) {
    const m = np.asArray(options.lossMask, "palm.loss");
    mask = np.split(m.aval.ndim === 1 ? np.expandDims(m, 0) : m, [1], 1)[1]; // [b, n-1]
  }
  let applyMask = options.mask;
  if (applyMask !== undefined && applyMask !== null) {
    const m = np.asArray(applyMask, "palm.loss");
    applyMask = np.split(m.aval.ndim === 1 ? np.expandDims(m, 0) : m, [n - 1], 1)[0]!; // [b, n-1]
  }
  const logits = apply(params, inputs, { ...options, mask: applyMask, returnEmbeddings: false }); // [b, n-1, numTokens]
  const ignoreIndex =
    options.ignoreIndex !== undefined ? options.ignoreIndex : options.config ? resolveConfig(options.config).crossEntropyIgnoreIndex : 0;
  return tokenCrossEntropy(logits, labels, { ignoreIndex, mask });
}

// ---------------------------------------------------------------------------------------------------
// Cached decoding

/** Per layer, the keys and values written so far: [batch, maxLen, dimHead] each (one k/v head). */
export interface KvCache {
  k: Value[];
  v: Value[];
}

/** An empty cache (zeros, in the params' dtype and on their device) for `batch` rows of up to `maxLen` positions. */
export function initCache(params: PalmParams, batch: number, maxLen: number): KvCache {
  const arch = architecture(params);
  if (!posInt(batch) || !posInt(maxLen)) throw new ArgumentError(`palm.initCache: batch and maxLen must be positive integers, got ${batch} and ${maxLen}`);
  const device = params.tokenEmb instanceof Array ? params.tokenEmb.device : undefined;
  const size = batch * maxLen * arch.dimHead;
  const zeros = (): Value =>
    np.array(arch.dtype === "float64" ? new Float64Array(size) : new Float32Array(size), { dtype: arch.dtype, shape: [batch, maxLen, arch.dimHead], device });
  return { k: params.layers.map(zeros), v: params.layers.map(zeros) };
}

/** What `applyWithCache` takes besides the cache: fixed for a whole generation (static under jit). */
export interface CacheOptions {
  /** The config the params were made with (must be causal); PaLM's defaults without it. */
  config?: PalmConfig;
  lora?: LoraParams | null;
  loraScope?: string | null;
  loraAlpha?: number;
}

/**
 * Cached decoding: logits [batch, n, numTokens] for tokens [batch, n] at the absolute positions
 * position..position+n-1, attending to the cached positions before `position` and causally to each
 * other; returns the cache with the chunk's keys and values written at `position`. It runs the same
 * `block` as `apply`, so the logits agree with `apply` on the whole prefix up to rounding (the xPos
 * exponent is centred on maxLen/2 instead of seq/2; the centre cancels in q·k).
 *
 * `position` is an int32 scalar and may be traced (one jit trace serves every decode step); n is
 * static. Cache slots after position+n-1 are masked out, whatever they hold. The chunk must fit:
 * position + n <= maxLen (checked for a JS number; for an array it is the caller's contract, as reading
 * it would force a device sync).
 */
export function applyWithCache(
  params: PalmParams,
  tokens: ArrayLike,
  cache: KvCache,
  position: ArrayLike,
  options: CacheOptions = {},
): { logits: Value; cache: KvCache } {
  const name = "palm.applyWithCache";
  const t = checkTokens(name, tokens);
  if (t.aval.ndim !== 2) throw new ShapeError(`${name}: tokens must be [batch, n], got ${t.aval.str()}\nTip: np.expandDims(tokens, 0) for one row`);
  const arch = architecture(params);
  const c = configFor(arch, options.config);
  if (!c.causal) throw new ArgumentError(`${name}: needs a causal model, got config.causal false`);
  const lora = resolveLora(name, arch, options);
  const [b, n] = t.aval.shape as [number, number];

  if (typeof cache !== "object" || cache === null || !globalThis.Array.isArray(cache.k) || !globalThis.Array.isArray(cache.v)) {
    throw new ArgumentError(`${name}: cache must be { k: Value[], v: Value[] } (from palm.initCache)`);
  }
  if (cache.k.length !== arch.depth || cache.v.length !== arch.depth) {
    throw new ShapeError(`${name}: the cache must have ${arch.depth} layers of k and v, got ${cache.k.length} and ${cache.v.length}`);
  }
  const maxLen = cache.k[0]!.aval.shape[1]!;
  for (const kv of [...cache.k, ...cache.v]) {
    const s = kv.aval.shape;
    if (s.length !== 3 || s[0] !== b || s[1] !== maxLen || s[2] !== arch.dimHead || kv.aval.dtype !== arch.dtype) {
      throw new ShapeError(`${name}: cache entries must be ${arch.dtype}[${b}, ${maxLen}, ${arch.dimHead}] (batch, maxLen, dimHead), got ${kv.aval.str()}`);
    }
  }
  if (n > maxLen) throw new ShapeError(`${name}: ${n} tokens do not fit a cache of ${maxLen} positions`);

  const device = params.tokenEmb instanceof Array ? params.tokenEmb.device : undefined;
  const pos = typeof position === "number" ? np.array(new Int32Array([position]), { shape: [], device }) : np.asArray(position, name);
  if (pos.aval.ndim !== 0) throw new ShapeError(`${name}: position must be a scalar (shared by every row), got ${pos.aval.str()}`);
  if (!isInt(pos.aval.dtype)) throw new DTypeError(`${name}: position must be an integer, got ${pos.aval.str()}`);
  // dynamicUpdateSlice would clamp an out-of-range start (a silent wrong answer): check what can be
  // checked without reading a device (a JS number); array positions are the caller's contract.
  if (typeof position === "number" && (!Number.isInteger(position) || position < 0 || position + n > maxLen)) {
    throw new ShapeError(`${name}: positions ${position}..${position + n - 1} must lie in the cache's [0, ${maxLen}), got position ${position} with ${n} tokens`);
  }
  const s = np.astype(pos, "int32");
  const zero = np.zeros([], { dtype: "int32" });

  // Rotary angles (and xPos scales) at the absolute positions s..s+n-1.
  const full = rotaryEmbedding(maxLen, arch.dimHead, { xpos: c.useXpos, scaleBase: c.xposScaleBase, dtype: arch.dtype });
  const rows = (x: Value | null): Value | null => (x === null ? null : lax.dynamicSlice(x, [s, zero], [n, arch.dimHead])); // [maxLen, d] -> [n, d]
  // Causal mask by absolute position: query s+i sees key j iff j <= s+i (unwritten slots are later).
  const qPos = np.add(np.arange(n, undefined, 1, { dtype: "int32" }), s); // [n]
  const kPos = np.arange(maxLen, undefined, 1, { dtype: "int32" }); // [maxLen]
  const causalMask = np.greater(np.reshape(kPos, [1, maxLen]), np.reshape(qPos, [n, 1])); // [1, maxLen] > [n, 1] -> [n(i), maxLen(j)]

  const ctx: BlockContext = {
    c,
    arch,
    rotary: { freqs: rows(full.freqs)!, scale: rows(full.scale), invScale: rows(full.invScale) },
    keyMask: null,
    causalMask,
    loraScale: lora.scale,
  };
  const r = trunk(params, t, ctx, lora.layers, null, null, { kv: cache, start: s });
  return { logits: toLogits(params, r.embeddings), cache: r.cache! };
}

/**
 * @file LoRA for PaLM (https://arxiv.org/abs/2106.09685) as a params pytree of its own, and the
 * trainable / frozen split that fine-tuning needs.
 *
 * Low-rank adapters let RLHF train several "heads" of one frozen base model: PaLM-rlhf-pytorch keeps
 * one adapter set per scope ("actor", "critic", "reward") and switches between them per call. Here a
 * scope is a key of the LoRA tree: `{ actor: [{ q, k, v, o }, ...one per layer], critic: [...] }` with
 * each adapter `{ A: [in, r], B: [r, out] }`; `palm.apply(params, tokens, { lora, loraScope: "actor" })`
 * adds (x @ A @ B)·alpha/r to the query, key, value and attention-output projections of every layer.
 * As the reference: A ~ N(0, 1), B = 0 (so a fresh adapter changes nothing), alpha = r (scale 1).
 *
 * `partition(tree, mask)` / `combine(trainable, frozen)` split any pytree by a boolean mask (same
 * structure, or a prefix: `{ palm: false, lora: { actor: true } }`) so `grad` differentiates only the
 * trainable half; leaves that go to the other half become `null`, which every transform passes through.
 */
import { Value } from "../autodiff/core.js";
import { ArgumentError, ShapeError } from "../autodiff/errors.js";
import * as np from "../ops/np.js";
import * as random from "../ops/random.js";
import { architecture, resolveConfig } from "./palm.js";
import type { LoraAdapter, LoraLayer, LoraParams, PalmConfig, PalmParams } from "./palm.js";

export type { LoraAdapter, LoraLayer, LoraParams };

export interface LoraInitOptions {
  /** Scope names (default ["default"]). */
  scopes?: string | readonly string[];
  /** Rank (default 8, as PaLM-rlhf-pytorch). */
  r?: number;
}

function adapter(key: random.Key, dimIn: number, dimOut: number, r: number, dtype: "float32" | "float64"): LoraAdapter {
  return {
    A: random.normal(key, [dimIn, r], { dtype }), // [in, r]
    B: np.zeros([r, dimOut], { dtype }), // [r, out]
  };
}

/** One scope's adapters: q [dim -> heads·dimHead], k and v [dim -> dimHead], o [heads·dimHead -> dim], per layer. */
function scopeAdapters(key: random.Key, config: PalmConfig, r: number): LoraLayer[] {
  const c = resolveConfig(config);
  if (!Number.isInteger(r) || r <= 0) throw new ArgumentError(`lora.init: r must be a positive integer, got ${r}`);
  const dtype = c.dtype as "float32" | "float64";
  const qInner = c.heads * c.dimHead;
  const layers: LoraLayer[] = [];
  for (let l = 0; l < c.depth; l++) {
    const lk = random.foldIn(key, l);
    layers.push({
      q: adapter(random.foldIn(lk, 0), c.dim, qInner, r, dtype),
      k: adapter(random.foldIn(lk, 1), c.dim, c.dimHead, r, dtype),
      v: adapter(random.foldIn(lk, 2), c.dim, c.dimHead, r, dtype),
      o: adapter(random.foldIn(lk, 3), qInner, c.dim, r, dtype),
    });
  }
  return layers;
}

/** Fresh LoRA params for the given scopes (each scope from its own key, split off `key` by position). */
export function init(key: random.Key, config: PalmConfig, opts: LoraInitOptions = {}): LoraParams {
  const scopes = opts.scopes === undefined ? ["default"] : typeof opts.scopes === "string" ? [opts.scopes] : [...opts.scopes];
  if (new Set(scopes).size !== scopes.length) throw new ArgumentError(`lora.init: scopes must be distinct, got ${JSON.stringify(scopes)}`);
  const out: LoraParams = {};
  scopes.forEach((s, i) => (out[s] = scopeAdapters(random.foldIn(key, i), config, opts.r ?? 8)));
  return out;
}

/** A new LoRA tree with `scope` added (PaLM-rlhf-pytorch's add_finetune_params). */
export function addScope(lora: LoraParams, key: random.Key, config: PalmConfig, scope: string, opts: { r?: number } = {}): LoraParams {
  if (scope in lora) throw new ArgumentError(`lora.addScope: scope "${scope}" already exists`);
  return { ...lora, [scope]: scopeAdapters(key, config, opts.r ?? 8) };
}

/** A new LoRA tree without `scope`. */
export function removeScope(lora: LoraParams, scope: string): LoraParams {
  if (!(scope in lora)) throw new ArgumentError(`lora.removeScope: scope "${scope}" not found, got ${JSON.stringify(Object.keys(lora))}`);
  const out = { ...lora };
  delete out[scope];
  return out;
}

/** The dense update A @ B · scale of one adapter: [in, out]. */
export function adapterWeight(a: LoraAdapter, scale = 1): Value {
  return np.multiply(np.matmul(a.A, a.B), scale); // [in, r] @ [r, out] -> [in, out]
}

/**
 * Base params with scope `scope` folded into the weights (PaLM-rlhf-pytorch's merge_finetune_params):
 * applying the result without LoRA equals applying `params` with that scope. Pure: returns new params.
 */
export function mergeLora(params: PalmParams, lora: LoraParams, scope: string, opts: { alpha?: number } = {}): PalmParams {
  const arch = architecture(params);
  const layers = lora[scope];
  if (!layers) throw new ArgumentError(`mergeLora: scope "${scope}" not found, got ${JSON.stringify(Object.keys(lora))}`);
  if (layers.length !== arch.depth) throw new ShapeError(`mergeLora: scope "${scope}" has ${layers.length} layers, the model ${arch.depth}`);
  const r = layers[0]!.q.A.aval.shape[1]!;
  const scale = (opts.alpha ?? r) / r;
  const qkvOut = arch.heads * arch.dimHead + 2 * arch.dimHead;
  const fusedOut = params.layers[0]!.fusedAttnFfProj.aval.shape[1]!;
  return {
    ...params,
    layers: params.layers.map((lp, l) => {
      const a = layers[l]!;
      const qkv = np.concatenate([adapterWeight(a.q, scale), adapterWeight(a.k, scale), adapterWeight(a.v, scale)], 1); // [dim, heads·dimHead + 2·dimHead]
      const delta = np.pad(qkv, [[0, 0], [0, fusedOut - qkvOut]]); // [dim, fusedOut]: the feed-forward columns get no update
      return {
        ...lp,
        fusedAttnFfProj: np.add(lp.fusedAttnFfProj, delta),
        attnOut: np.add(lp.attnOut, adapterWeight(a.o, scale)),
      };
    }),
  };
}

// Trainable / frozen: `partition` and `combine` live in optim.ts (optimisers mask with them too).
export { partition, combine } from "./optim.js";

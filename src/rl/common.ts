/**
 * @file Building blocks shared by every RLHF loss (reward model, PPO, DPO, GRPO): per-token log-probs
 * and entropies from logits, masked reductions and whitening, and the response mask of
 * prompt+response sequences. All are pure functions of arrays, so they compose with grad / vmap / jit.
 *
 * Conventions: sequences are [batch, seq] int32 token ids; a model's logits at position t predict the
 * token at t+1, so per-token quantities of a sequence are [batch, seq-1] and entry t belongs to token
 * t+1 (the "action" taken after seeing tokens 0..t). Masks are bool or 0/1 arrays.
 */
import type { Value } from "../autodiff/core.js";
import { shapeStr } from "../autodiff/aval.js";
import { ShapeError } from "../autodiff/errors.js";
import * as np from "../ops/np.js";
import type { ArrayLike } from "../ops/np.js";
import { logSoftmax, softmax } from "../nn/activations.js";

function sameShape(name: string, what: string, a: Value, b: Value): void {
  const sa = a.aval.shape;
  const sb = b.aval.shape;
  if (sa.length !== sb.length || sa.some((d, i) => d !== sb[i])) {
    throw new ShapeError(`${name}: ${what} must have shape ${shapeStr(sa)}, got ${shapeStr(sb)}`);
  }
}

/** A mask as floats of `like`'s dtype (1 where counted, 0 elsewhere). */
export function maskAsFloat(name: string, mask: ArrayLike, like: Value): Value {
  const m = np.asArray(mask, name);
  sameShape(name, "mask", like, m);
  return m.aval.dtype === "bool" ? np.astype(m, like.aval.dtype) : np.astype(np.notEqual(m, 0), like.aval.dtype);
}

/**
 * log p(targets) under `logits`: logits [..., vocab], targets [...] int32 (in range) → [...].
 * Use `sequenceLogProbs` for whole sequences.
 */
export function tokenLogProbs(logits: ArrayLike, targets: ArrayLike): Value {
  const lg = np.asArray(logits, "tokenLogProbs");
  const tg = np.asArray(targets, "tokenLogProbs");
  if (lg.aval.ndim !== tg.aval.ndim + 1 || tg.aval.shape.some((d, i) => d !== lg.aval.shape[i])) {
    throw new ShapeError(
      `tokenLogProbs: logits must be targets' shape plus a vocabulary axis, got logits ${shapeStr(lg.aval.shape)} and targets ${shapeStr(tg.aval.shape)}`,
    );
  }
  const logp = logSoftmax(lg, { axis: -1 }); // [..., vocab]
  return np.squeeze(np.takeAlongAxis(logp, np.expandDims(tg, -1), -1), -1); // [..., 1] -> [...]
}

/**
 * Per-token log-probs of a sequence under its own logits: logits [b, n, vocab] (position t predicts
 * token t+1), tokens [b, n] → [b, n-1], entry t = log p(tokens[t+1] | tokens[..t]).
 */
export function sequenceLogProbs(logits: ArrayLike, tokens: ArrayLike): Value {
  const lg = np.asArray(logits, "sequenceLogProbs");
  const tk = np.asArray(tokens, "sequenceLogProbs");
  if (tk.aval.ndim < 1 || lg.aval.ndim !== tk.aval.ndim + 1 || tk.aval.shape.some((d, i) => d !== lg.aval.shape[i])) {
    throw new ShapeError(
      `sequenceLogProbs: logits must be tokens' shape plus a vocabulary axis, got logits ${shapeStr(lg.aval.shape)} and tokens ${shapeStr(tk.aval.shape)}`,
    );
  }
  const ax = tk.aval.ndim - 1;
  const n = tk.aval.shape[ax]!;
  const inputs = np.split(lg, [n - 1], ax)[0]!; // [..., n-1, vocab]
  const targets = np.split(tk, [1], ax)[1]!; // [..., n-1]
  return tokenLogProbs(inputs, targets);
}

/** Entropy of the categorical distribution of each position: logits [..., vocab] → [...]. */
export function entropyFromLogits(logits: ArrayLike): Value {
  const lg = np.asArray(logits, "entropyFromLogits");
  const logp = logSoftmax(lg, { axis: -1 });
  return np.negative(np.sum(np.multiply(softmax(lg, { axis: -1 }), logp), { axis: -1 }));
}

/** Sum of x over the positions where mask is set (all axes, or `axis`). */
export function maskedSum(x: ArrayLike, mask: ArrayLike, opts: { axis?: number | number[] } = {}): Value {
  const v = np.asArray(x, "maskedSum");
  return np.sum(np.multiply(v, maskAsFloat("maskedSum", mask, v)), { axis: opts.axis });
}

/**
 * Mean of x over the positions where mask is set (all axes, or `axis`). Where nothing is set the
 * result is 0, not 0/0, so an empty row never poisons a step.
 */
export function maskedMean(x: ArrayLike, mask: ArrayLike, opts: { axis?: number | number[] } = {}): Value {
  const v = np.asArray(x, "maskedMean");
  const m = maskAsFloat("maskedMean", mask, v);
  const total = np.sum(np.multiply(v, m), { axis: opts.axis });
  const count = np.sum(m, { axis: opts.axis });
  return np.divide(total, np.maximum(count, 1));
}

/** Variance of x over the masked positions (all axes), with Bessel's correction when `unbiased`. */
export function maskedVar(x: ArrayLike, mask: ArrayLike, opts: { unbiased?: boolean } = {}): Value {
  const v = np.asArray(x, "maskedVar");
  const m = maskAsFloat("maskedVar", mask, v);
  const count = np.sum(m);
  const mean = np.divide(np.sum(np.multiply(v, m)), np.maximum(count, 1));
  const sq = np.sum(np.multiply(np.square(np.subtract(v, mean)), m));
  const denom = opts.unbiased ? np.maximum(np.subtract(count, 1), 1) : np.maximum(count, 1);
  return np.divide(sq, denom);
}

/**
 * (x - mean) / sqrt(var + eps) over the masked positions (all axes); masked-out positions are set to
 * 0. With `shiftMean: false` the mean is added back (TRL's whitening of rewards).
 */
export function maskedWhiten(x: ArrayLike, mask: ArrayLike, opts: { shiftMean?: boolean; eps?: number } = {}): Value {
  const v = np.asArray(x, "maskedWhiten");
  const m = maskAsFloat("maskedWhiten", mask, v);
  const mean = maskedMean(v, m);
  const variance = maskedVar(v, m, { unbiased: true });
  let w = np.multiply(np.subtract(v, mean), np.reciprocal(np.sqrt(np.add(variance, opts.eps ?? 1e-8))));
  if (opts.shiftMean === false) w = np.add(w, mean);
  return np.multiply(w, m);
}

/**
 * The mask of response tokens in [b, n] sequences made of a prompt of `promptLengths[i]` tokens and a
 * response ending before `totalLengths[i]` (default n): true at promptLength <= t < totalLength.
 * Shifted by one (`forActions`), it is the [b, n-1] mask of the per-token quantities of
 * `sequenceLogProbs`: entry t is an action when token t+1 is a response token.
 */
export function responseMask(
  promptLengths: ArrayLike,
  seqLen: number,
  opts: { totalLengths?: ArrayLike; forActions?: boolean } = {},
): Value {
  const pl = np.asArray(promptLengths, "responseMask");
  if (pl.aval.ndim !== 1) throw new ShapeError(`responseMask: promptLengths must be [batch], got ${shapeStr(pl.aval.shape)}`);
  const tl = opts.totalLengths === undefined ? null : np.asArray(opts.totalLengths, "responseMask");
  if (tl) sameShape("responseMask", "totalLengths", pl, tl);
  const pos = np.expandDims(np.arange(0, seqLen, 1, { dtype: "int32" }), 0); // [1, n]
  let m = np.greaterEqual(pos, np.expandDims(pl, 1)); // [b, n]
  if (tl) m = np.logicalAnd(m, np.less(pos, np.expandDims(tl, 1)));
  return opts.forActions ? np.split(m, [1], 1)[1]! : m; // [b, n] -> [b, n-1]
}

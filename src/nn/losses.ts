/**
 * @file Losses as pure functions over arrays: token cross-entropy with an ignore index and a mask (the
 * language-model loss), optax-style per-example losses (`softmaxCrossEntropy`,
 * `softmaxCrossEntropyWithIntegerLabels`, `sigmoidBinaryCrossEntropy`, `squaredError`), all computed
 * from log-softmax / log-sigmoid so that large logits never overflow. Read `tokenCrossEntropy` first.
 *
 * Conventions (as optax): the per-example losses do not reduce; the token losses return the mean over
 * the tokens that count (the way `torch.nn.functional.cross_entropy(..., ignore_index)` does).
 */
import { isFloat, isInt, shapeStr } from "../autodiff/aval.js";
import { Value } from "../autodiff/core.js";
import { DTypeError, ShapeError } from "../autodiff/errors.js";
import * as np from "../ops/np.js";
import type { ArrayLike } from "../ops/np.js";
import { logSigmoid, logSoftmax } from "./activations.js";

function floatLogits(name: string, logits: ArrayLike): Value {
  const v = np.asArray(logits, name);
  if (!isFloat(v.aval.dtype)) {
    throw new DTypeError(`${name}: logits must be float32 or float64, got ${v.aval.dtype}\nTip: np.astype(logits, "float32")`);
  }
  if (v.aval.ndim === 0) throw new ShapeError(`${name}: logits need a class axis, got a scalar`);
  return v;
}

function intLabels(name: string, labels: ArrayLike, logits: Value): Value {
  const l = np.asArray(labels, name);
  if (!isInt(l.aval.dtype)) {
    throw new DTypeError(`${name}: labels must be integers (int32), got ${l.aval.dtype}\nTip: np.astype(labels, "int32")`);
  }
  const want = logits.aval.shape.slice(0, -1);
  if (l.aval.ndim !== want.length || l.aval.shape.some((d, i) => d !== want[i])) {
    throw new ShapeError(
      `${name}: labels must have the logits' shape without the class axis, ${shapeStr(want)}, got ${shapeStr(l.aval.shape)}`,
    );
  }
  return np.astype(l, "int32");
}

/** -log softmax(logits)[label] for each example, without reduction. Labels out of [0, C) are clamped. */
export function softmaxCrossEntropyWithIntegerLabels(logits: ArrayLike, labels: ArrayLike): Value {
  const name = "softmaxCrossEntropyWithIntegerLabels";
  const lg = floatLogits(name, logits);
  const lb = intLabels(name, labels, lg);
  const logp = logSoftmax(lg, { axis: -1 }); // [..., C]
  const picked = np.takeAlongAxis(logp, np.expandDims(lb, -1), -1); // [..., 1]
  return np.negative(np.squeeze(picked, -1)); // [...]
}

/**
 * Cross-entropy of softmax(logits) against `labels`, per example (the class axis is the last one).
 * Float labels are distributions over the classes (shape of the logits, as optax); integer labels are
 * class indices (the logits' shape without the class axis).
 */
export function softmaxCrossEntropy(logits: ArrayLike, labels: ArrayLike): Value {
  const lg = floatLogits("softmaxCrossEntropy", logits);
  const lb = np.asArray(labels, "softmaxCrossEntropy");
  if (isInt(lb.aval.dtype)) return softmaxCrossEntropyWithIntegerLabels(lg, lb);
  if (!isFloat(lb.aval.dtype)) {
    throw new DTypeError(`softmaxCrossEntropy: labels must be class probabilities (float) or class indices (int32), got ${lb.aval.dtype}`);
  }
  np.broadcastShapes("softmaxCrossEntropy", lg.aval.shape, lb.aval.shape);
  return np.negative(np.sum(np.multiply(lb, logSoftmax(lg, { axis: -1 })), { axis: -1 }));
}

/**
 * Element-wise binary cross-entropy of sigmoid(logits) against targets in [0, 1]:
 * -y·log σ(x) - (1 - y)·log σ(-x), through the overflow-free log σ. No reduction.
 */
export function sigmoidBinaryCrossEntropy(logits: ArrayLike, labels: ArrayLike): Value {
  const xv = np.asArray(logits, "sigmoidBinaryCrossEntropy");
  if (!isFloat(xv.aval.dtype)) {
    throw new DTypeError(`sigmoidBinaryCrossEntropy: logits must be float32 or float64, got ${xv.aval.dtype}`);
  }
  const y = np.asArray(labels, "sigmoidBinaryCrossEntropy");
  np.broadcastShapes("sigmoidBinaryCrossEntropy", xv.aval.shape, y.aval.shape);
  const yf = isFloat(y.aval.dtype) ? y : np.astype(y, xv.aval.dtype);
  return np.negative(np.add(np.multiply(yf, logSigmoid(xv)), np.multiply(np.subtract(1, yf), logSigmoid(np.negative(xv)))));
}

/** (predictions - targets)², element-wise (optax's squared_error; halve it for l2_loss). */
export function squaredError(predictions: ArrayLike, targets: ArrayLike): Value {
  return np.square(np.subtract(predictions, targets));
}

export interface TokenLossOptions {
  /** Labels equal to this are left out of the loss and of the count (default 0, as PaLM-rlhf-pytorch). null: none. */
  ignoreIndex?: number | null;
  /** Bool or 0/1 array of the labels' shape: tokens where it is false/0 are left out as well. */
  mask?: ArrayLike;
}

/**
 * Mean cross-entropy over the tokens that count: logits [..., numTokens], labels [...] (int32). A token
 * counts when its label differs from `ignoreIndex` and `mask` (if given) is true there. With no token
 * counting the result is 0 (not 0/0), so an all-padding batch does not poison a training step.
 */
export function tokenCrossEntropy(logits: ArrayLike, labels: ArrayLike, opts: TokenLossOptions = {}): Value {
  const name = "tokenCrossEntropy";
  const lg = floatLogits(name, logits);
  const lb = intLabels(name, labels, lg);
  const ignore = opts.ignoreIndex === undefined ? 0 : opts.ignoreIndex;
  let keep: Value = np.onesLike(lb, { dtype: "bool" });
  if (ignore !== null) keep = np.notEqual(lb, ignore);
  if (opts.mask !== undefined) {
    const m = np.asArray(opts.mask, name);
    if (m.aval.ndim !== lb.aval.ndim || m.aval.shape.some((d, i) => d !== lb.aval.shape[i])) {
      throw new ShapeError(`${name}: mask must have the labels' shape ${shapeStr(lb.aval.shape)}, got ${shapeStr(m.aval.shape)}`);
    }
    keep = np.logicalAnd(keep, m.aval.dtype === "bool" ? m : np.notEqual(m, 0));
  }
  // Ignored labels may lie outside [0, C) (e.g. -100); gather a valid class for them and drop it after.
  const safe = np.where(keep, lb, 0);
  const perToken = softmaxCrossEntropyWithIntegerLabels(lg, safe); // [...]
  const w = np.astype(keep, lg.aval.dtype);
  const total = np.sum(np.multiply(perToken, w));
  const count = np.maximum(np.sum(w), 1);
  return np.divide(total, count);
}

/**
 * Next-token loss on logits computed over a whole sequence: logits [batch, seq, numTokens] at
 * positions 0..seq-2 predict tokens [batch, seq] at positions 1..seq-1. `mask` (if given) has the
 * tokens' shape and is shifted with the labels (it marks which *target* tokens count).
 */
export function nextTokenCrossEntropy(logits: ArrayLike, tokens: ArrayLike, opts: TokenLossOptions = {}): Value {
  const lg = floatLogits("nextTokenCrossEntropy", logits);
  const tk = np.asArray(tokens, "nextTokenCrossEntropy");
  if (tk.aval.ndim < 1 || lg.aval.ndim !== tk.aval.ndim + 1 || tk.aval.shape.some((d, i) => d !== lg.aval.shape[i])) {
    throw new ShapeError(
      `nextTokenCrossEntropy: logits must be tokens' shape plus a class axis, got logits ${shapeStr(lg.aval.shape)} and tokens ${shapeStr(tk.aval.shape)}`,
    );
  }
  const ax = tk.aval.ndim - 1;
  const n = tk.aval.shape[ax]!;
  const inputs = np.split(lg, [n - 1], ax)[0]!; // [..., seq-1, numTokens]
  const labels = np.split(tk, [1], ax)[1]!; // [..., seq-1]
  const mask = opts.mask === undefined ? undefined : np.split(np.asArray(opts.mask), [1], ax)[1]!;
  return tokenCrossEntropy(inputs, labels, { ignoreIndex: opts.ignoreIndex, mask });
}

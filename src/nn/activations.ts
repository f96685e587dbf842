/**
 * @file Activation functions and the softmax family (`nn`), as compositions of np functions. The
 * numerically delicate ones (softplus, logSigmoid, logSoftmax) use the stable forms.
 */
import { Value } from "../autodiff/core.js";
import * as lax from "../ops/lax/elementwise.js";
import * as np from "../ops/np.js";
import { ArrayLike } from "../ops/np.js";

const f = (x: ArrayLike, name: string): Value => {
  const v = np.asArray(x, `nn.${name}`);
  return v.aval.dtype === "float32" || v.aval.dtype === "float64" ? v : np.astype(v, "float32");
};

export const relu = (x: ArrayLike): Value => {
  const v = np.asArray(x, "nn.relu");
  return np.maximum(v, 0);
};

/** 1 / (1 + e^-x), via the backend's overflow-free logistic. */
export const sigmoid = (x: ArrayLike): Value => lax.logistic(f(x, "sigmoid"));

/** log(1 + e^x) = max(x, 0) + log1p(e^-|x|), stable for large |x|. */
export const softplus = (x: ArrayLike): Value => {
  const v = f(x, "softplus");
  return np.add(np.maximum(v, 0), np.log1p(np.exp(np.negative(np.abs(v)))));
};

/** log σ(x) = -softplus(-x). */
export const logSigmoid = (x: ArrayLike): Value => np.negative(softplus(np.negative(f(x, "logSigmoid"))));

/** x·σ(x) (https://arxiv.org/abs/1710.05941). */
export const silu = (x: ArrayLike): Value => {
  const v = f(x, "silu");
  return np.multiply(v, sigmoid(v));
};
export const swish = silu;

/**
 * GELU (https://arxiv.org/abs/1606.08415). `approximate` (the default, as JAX) uses the tanh form;
 * otherwise the exact x·Φ(x) with erf.
 */
export const gelu = (x: ArrayLike, opts: { approximate?: boolean } = {}): Value => {
  const v = f(x, "gelu");
  if (opts.approximate ?? true) {
    const c = Math.sqrt(2 / Math.PI);
    const inner = np.multiply(c, np.add(v, np.multiply(0.044715, np.multiply(v, np.multiply(v, v)))));
    return np.multiply(np.multiply(0.5, v), np.add(1, np.tanh(inner)));
  }
  return np.multiply(np.multiply(0.5, v), np.add(1, np.erf(np.multiply(v, Math.SQRT1_2))));
};

export const elu = (x: ArrayLike, alpha = 1): Value => {
  const v = f(x, "elu");
  return np.where(np.greater(v, 0), v, np.multiply(alpha, np.expm1(np.minimum(v, 0))));
};

export const leakyRelu = (x: ArrayLike, negativeSlope = 0.01): Value => {
  const v = f(x, "leakyRelu");
  return np.where(np.greaterEqual(v, 0), v, np.multiply(negativeSlope, v));
};

/** log softmax along `axis` (default last): x - logsumexp(x). */
export const logSoftmax = (x: ArrayLike, opts: { axis?: number } = {}): Value => {
  const v = f(x, "logSoftmax");
  const axis = opts.axis ?? -1;
  return np.subtract(v, np.logsumexp(v, { axis, keepdims: true }));
};

/** softmax along `axis` (default last), with the max subtracted for stability. */
export const softmax = (x: ArrayLike, opts: { axis?: number } = {}): Value => {
  const v = f(x, "softmax");
  const axis = opts.axis ?? -1;
  const m = lax.stopGradient(np.max(v, { axis, keepdims: true }));
  const e = np.exp(np.subtract(v, m));
  return np.divide(e, np.sum(e, { axis, keepdims: true }));
};

export { oneHot } from "../ops/np.js";

/**
 * @file `random`: functional pseudo-random numbers with explicit keys, bit-for-bit JAX's default
 * Threefry-2x32 implementation (`jax_threefry_partitionable=True`, the default since JAX 0.5).
 *
 * A key is a uint32 array of shape [2] (JAX's raw `PRNGKey`); nothing here has state. Derive fresh keys
 * with `split` / `foldIn` and never reuse a key for two different draws. Every function is composed of
 * lax / np operations over the `threefry2x32` primitive (lax/random-bits.ts), so all of them work under
 * jit, vmap and grad (vmap over a batch of keys of shape [n, 2]) and on every backend.
 *
 * Read first: `threefryBits` (the counter scheme: element i of a draw of shape S is
 * threefry2x32(key, (hi(i), lo(i))) for the 64-bit flat index i, JAX's `iota_2x32_shape`), then
 * `uniformImpl` (the mantissa trick every float sampler is built on).
 * References: Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC 2011),
 * https://doi.org/10.1145/2063384.2063405; JAX's jax/_src/random.py and jax/_src/prng.py.
 */
import { DType, isFloat, isInt, Shape, shapeSize, shapeStr } from "../autodiff/aval.js";
import { Tracer, Value } from "../autodiff/core.js";
import { ArgumentError, ConcretizationError, DTypeError, ShapeError } from "../autodiff/errors.js";
import { Array, scalar } from "./array.js";
import { checkDType } from "./dtype.js";
import * as lax from "./lax/elementwise.js";
import { threefry2x32 } from "./lax/random-bits.js";
import { reduceSum } from "./lax/reduce.js";
import { sort as laxSort } from "./lax/sort.js";
import { broadcastInDim, concatenate, iota, reshape, slice, sliceInDim } from "./lax/structural.js";
import { range } from "./lax/util.js";
import * as np from "./np.js";
import type { ArrayLike } from "./np.js";

/** A PRNG key: a uint32 array of shape [2] (or a tracer of one). */
export type Key = Value;

const UINT32_MAX = 4294967295;
const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;
const KEY_TIP = "Tip: make a key with random.key(seed) and derive new ones with random.split(key) / random.foldIn(key, i)";

// ---------------------------------------------------------------------------------------------------
// Argument checks

function describe(x: unknown): string {
  if (x instanceof Array || x instanceof Tracer) return `${x.aval.dtype}${shapeStr(x.aval.shape)}`;
  if (globalThis.Array.isArray(x)) return "a JS list";
  return x === null ? "null" : typeof x;
}

/** The key as a Value, or a named error: keys are uint32 arrays of shape [2]. */
function checkKey(name: string, key: unknown): Value {
  if (!(key instanceof Array || key instanceof Tracer)) {
    throw new ArgumentError(`random.${name}: key must be a uint32 array of shape [2], got ${describe(key)}\n${KEY_TIP}`);
  }
  const { dtype, shape } = key.aval;
  if (dtype !== "uint32") {
    throw new DTypeError(
      `random.${name}: key must be a uint32 array of shape [2], got ${describe(key)}\n` +
        `Tip: a seed is not a key; make one with random.key(seed)`,
    );
  }
  if (shape.length > 1 && shape[shape.length - 1] === 2) {
    throw new ShapeError(
      `random.${name}: expects a single key of shape [2], got a batch of keys ${shapeStr(shape)}\n` +
        `Tip: vmap over the batch, e.g. vmap((k) => random.${name}(k, ...))(keys)`,
    );
  }
  if (shape.length !== 1 || shape[0] !== 2) {
    throw new ShapeError(`random.${name}: key must be a uint32 array of shape [2], got ${describe(key)}\n${KEY_TIP}`);
  }
  return key;
}

function shapeArg(name: string, shape: number | Shape): number[] {
  const s = typeof shape === "number" ? [shape] : globalThis.Array.isArray(shape) ? [...shape] : null;
  if (s === null || s.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new ShapeError(`random.${name}: shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  return s;
}

function floatDtype(name: string, dtype: DType | undefined): DType {
  const d = checkDType(`random.${name}`, dtype ?? "float32");
  if (!isFloat(d)) {
    throw new DTypeError(
      `random.${name}: dtype must be a float dtype (float32 or float64), got ${d}` +
        (name === "uniform" ? "\nTip: use random.randint for integers" : ""),
    );
  }
  return d;
}

/** A float parameter (JS numbers become weak scalars of `dtype`), converted to `dtype`. */
function floatParam(name: string, what: string, x: ArrayLike, dtype: DType): Value {
  if (typeof x === "number") return scalar(x, dtype, false);
  const v = np.asArray(x, `random.${name}`);
  if (v.aval.dtype === "bool") throw new DTypeError(`random.${name}: ${what} must be numeric, got ${describe(v)}`);
  return lax.convert(v, dtype);
}

/** JAX's `_check_shape`: the parameter shapes must broadcast to exactly `shape`. */
function checkParamShapes(name: string, shape: Shape, params: Record<string, Shape>): void {
  const entries = Object.entries(params);
  const b = np.broadcastShapes(`random.${name}`, shape, ...entries.map(([, s]) => s));
  if (b.length !== shape.length || b.some((d, i) => d !== shape[i])) {
    throw new ShapeError(
      `random.${name}: parameter shapes (${entries.map(([k, s]) => `${k} ${shapeStr(s)}`).join(", ")}) must broadcast ` +
        `to the requested shape ${shapeStr(shape)}, got ${shapeStr(b)}\nTip: leave shape out to use the parameters' shape`,
    );
  }
}

const full = (shape: Shape, v: number | boolean, dtype: DType): Value => lax.full(shape, v, dtype);
const bcast = (x: Value, shape: Shape): Value => np.broadcastTo(x, shape);

// ---------------------------------------------------------------------------------------------------
// Keys

/**
 * A key from an integer seed, as `jax.random.PRNGKey(seed)` with JAX's default 32-bit integers:
 * [0, seed mod 2^32]. Negative seeds wrap (key(-1) is [0, 4294967295]), as in JAX without
 * `jax_enable_x64` (JAX's default, and its test_prng_seeds_and_keys); only JAX with x64 enabled puts
 * the two's-complement high word 0xffffffff in front. `seed` may be a JS safe integer, a bigint, or an
 * int32 / uint32 scalar array (traced seeds work under jit and vmap).
 */
export function key(seed: number | bigint | Value): Value {
  if (typeof seed === "number") {
    if (!Number.isSafeInteger(seed)) {
      throw new ArgumentError(
        `random.key: seed must be an integer, got ${seed}` +
          (Number.isInteger(seed) ? "\nTip: integers beyond 2^53 lose precision as JS numbers; pass a bigint" : ""),
      );
    }
    return np.array(new Uint32Array([0, seed >>> 0]));
  }
  if (typeof seed === "bigint") {
    if (seed < -(1n << 63n) || seed >= 1n << 64n) {
      throw new ArgumentError(`random.key: seed must fit in 64 bits, got ${seed}`);
    }
    return np.array(new Uint32Array([0, Number(BigInt.asUintN(32, seed))]));
  }
  if (!(seed instanceof Array || seed instanceof Tracer)) {
    throw new ArgumentError(`random.key: seed must be an integer, got ${describe(seed)}`);
  }
  const { dtype, shape } = seed.aval;
  if (shape.length !== 0) {
    throw new ShapeError(`random.key: seed must be a scalar, got ${describe(seed)}\nTip: vmap(random.key)(seeds) makes a batch of keys`);
  }
  if (!isInt(dtype)) {
    throw new DTypeError(`random.key: seed must be an integer, got ${describe(seed)}\nTip: np.astype(seed, "int32")`);
  }
  const lo = dtype === "uint32" ? seed : lax.bitcastConvertType(seed, "uint32");
  return concatenate([full([1], 0, "uint32"), reshape(lo, [1])], 0); // [0, lo]: [2]
}

/** Alias of `key` (JAX's name for raw uint32 keys). */
export const PRNGKey = key;

/** The two uint32 words of a key, as scalars. */
function keyWords(k: Value): [Value, Value] {
  return [reshape(slice(k, [0], [1]), []), reshape(slice(k, [1], [2]), [])]; // [2] -> [1] -> []
}

/**
 * JAX's `iota_2x32_shape`: the high and low 32-bit words of the row-major flat index of every element
 * of `shape`. webgrad arrays hold fewer than 2^32 elements, so the high word is 0.
 */
function iota2x32(shape: Shape): [Value, Value] {
  const n = shapeSize(shape);
  if (n > UINT32_MAX) throw new ShapeError(`random: draws of more than 2^32 - 1 elements are not supported, got ${shapeStr(shape)}`);
  const hi = full(shape, 0, "uint32");
  const lo = shape.length === 0 ? full([], 0, "uint32") : reshape(iota("uint32", [n]), shape); // [n] -> shape
  return [hi, lo];
}

/** threefry2x32(key, iota_2x32_shape(shape)): the two uint32 words behind every draw. */
function threefryBits(k: Value, shape: Shape): [Value, Value] {
  const [k0, k1] = keyWords(k);
  const [hi, lo] = iota2x32(shape);
  return threefry2x32(broadcastInDim(k0, shape, []), broadcastInDim(k1, shape, []), hi, lo);
}

/** Stacks two uint32 arrays of one shape along a new last axis: [...shape] x 2 -> [...shape, 2]. */
function stackLast(a: Value, b: Value): Value {
  const s = a.aval.shape;
  return concatenate([reshape(a, [...s, 1]), reshape(b, [...s, 1])], s.length); // [...s, 1] x 2 -> [...s, 2]
}

/**
 * Splits a key into new keys: `split(key, n)` has shape [n, 2], `split(key, [a, b])` shape [a, b, 2].
 * Key i is threefry2x32(key, (hi(i), lo(i))), so split(key, n)[i] equals foldIn(key, i).
 */
export function split(key: Key, num: number | Shape = 2): Value {
  const k = checkKey("split", key);
  const shape = shapeArg("split", num);
  const [b1, b2] = threefryBits(k, shape);
  return stackLast(b1, b2);
}

/** Folds a 32-bit integer into a key: threefry2x32(key, (0, data)). `data` wraps mod 2^32. */
export function foldIn(key: Key, data: number | Value): Value {
  const k = checkKey("foldIn", key);
  let d: Value;
  if (typeof data === "number") {
    if (!Number.isInteger(data) || data < INT32_MIN || data > UINT32_MAX) {
      throw new ArgumentError(`random.foldIn: data must be a 32-bit integer (in [-2^31, 2^32)), got ${data}`);
    }
    d = scalar(data >>> 0, "uint32", false);
  } else if (data instanceof Array || data instanceof Tracer) {
    if (data.aval.ndim !== 0) {
      throw new ShapeError(`random.foldIn: data must be a scalar, got ${describe(data)}\nTip: vmap over the data to fold in many values`);
    }
    if (!isInt(data.aval.dtype)) throw new DTypeError(`random.foldIn: data must be an integer, got ${describe(data)}`);
    d = data.aval.dtype === "uint32" ? data : lax.bitcastConvertType(data, "uint32");
  } else {
    throw new ArgumentError(`random.foldIn: data must be an integer, got ${describe(data)}`);
  }
  const [k0, k1] = keyWords(k);
  const [o0, o1] = threefry2x32(k0, k1, full([], 0, "uint32"), d);
  return concatenate([reshape(o0, [1]), reshape(o1, [1])], 0); // [o0, o1]: [2]
}

/** 32 random bits per element (JAX's `random.bits` / `random_bits(key, 32, shape)`): bits1 ^ bits2. */
function bitsImpl(k: Value, shape: Shape): Value {
  const [b1, b2] = threefryBits(k, shape);
  return lax.xor(b1, b2);
}

/** Uniform random uint32 values of `shape`. */
export function bits(key: Key, shape: number | Shape = [], opts: { dtype?: DType } = {}): Value {
  const k = checkKey("bits", key);
  const s = shapeArg("bits", shape);
  if (opts.dtype !== undefined && opts.dtype !== "uint32") {
    throw new DTypeError(`random.bits: dtype must be an unsigned int dtype (uint32), got ${opts.dtype}`);
  }
  return bitsImpl(k, s);
}

/** Two keys from one (JAX's internal `_split(key)`), as a pair of [2] arrays. */
function split2(k: Value): [Value, Value] {
  const ks = split(k, 2); // [2, 2]
  return [reshape(sliceInDim(ks, 0, 1, 0), [2]), reshape(sliceInDim(ks, 1, 2, 0), [2])];
}

// ---------------------------------------------------------------------------------------------------
// Continuous distributions

/**
 * JAX's `_uniform`: random mantissa bits under the exponent of 1.0 give a float in [1, 2); minus 1,
 * scaled into [minval, maxval), then `max(minval, ·)` so rounding never leaves the interval's bottom.
 * float32 keeps the top 23 of 32 random bits. float64 keeps the top 52 of the 64 bits
 * (bits1 << 32) | bits2; with no uint64 the mantissa m = bits1·2^20 + (bits2 >>> 12) is assembled in
 * float64 arithmetic, which is exact (m < 2^53), and m / 2^52 is exactly JAX's bitcast(m | 1.0) - 1.
 * `minval` / `maxval` must already have `dtype` and shapes that broadcast to `shape`.
 */
function uniformImpl(k: Value, shape: Shape, dtype: DType, minval: Value, maxval: Value): Value {
  const [b1, b2] = threefryBits(k, shape);
  let floats: Value;
  if (dtype === "float32") {
    const bitsU = lax.xor(b1, b2);
    const mant = lax.or(lax.shiftRight(bitsU, full(shape, 32 - 23, "uint32")), full(shape, 0x3f800000, "uint32"));
    floats = lax.sub(lax.bitcastConvertType(mant, "float32"), full(shape, 1, "float32"));
  } else {
    const hi = lax.convert(b1, "float64");
    const lo = lax.convert(lax.shiftRight(b2, full(shape, 12, "uint32")), "float64");
    floats = lax.add(lax.mul(hi, full(shape, 2 ** -32, "float64")), lax.mul(lo, full(shape, 2 ** -52, "float64")));
  }
  const mn = bcast(minval, shape);
  const mx = bcast(maxval, shape);
  return lax.max(mn, lax.add(lax.mul(floats, lax.sub(mx, mn)), mn));
}

export interface UniformOptions {
  dtype?: DType;
  /** Inclusive lower bound (default 0); broadcasts to `shape`. */
  minval?: ArrayLike;
  /** Exclusive upper bound (default 1); broadcasts to `shape`. */
  maxval?: ArrayLike;
}

/** Uniform floats in [minval, maxval). */
export function uniform(key: Key, shape: number | Shape = [], opts: UniformOptions = {}): Value {
  const k = checkKey("uniform", key);
  const s = shapeArg("uniform", shape);
  const dtype = floatDtype("uniform", opts.dtype);
  const mn = floatParam("uniform", "minval", opts.minval ?? 0, dtype);
  const mx = floatParam("uniform", "maxval", opts.maxval ?? 1, dtype);
  checkParamShapes("uniform", s, { minval: mn.aval.shape, maxval: mx.aval.shape });
  return uniformImpl(k, s, dtype, mn, mx);
}

/** The largest float below -1's successor toward 0: nextafter(-1, 0) = -1 + epsneg. */
const NEG_ONE_PLUS_EPSNEG: Record<string, number> = { float32: -(1 - 2 ** -24), float64: -(1 - 2 ** -53) };
/** The smallest positive normal number (finfo.tiny). */
const TINY: Record<string, number> = { float32: 2 ** -126, float64: 2 ** -1022 };

/** Standard normal samples: sqrt(2)·erf_inv(u) with u uniform in (-1, 1), as JAX. */
export function normal(key: Key, shape: number | Shape = [], opts: { dtype?: DType } = {}): Value {
  const k = checkKey("normal", key);
  const s = shapeArg("normal", shape);
  const dtype = floatDtype("normal", opts.dtype);
  const u = uniformImpl(k, s, dtype, scalar(NEG_ONE_PLUS_EPSNEG[dtype]!, dtype, false), scalar(1, dtype, false));
  return lax.mul(full(s, Math.SQRT2, dtype), lax.erfInv(u));
}

/**
 * The next representable float after x toward +inf (`up`) or -inf, elementwise (lax.nextafter).
 * float32 steps the bit pattern; float64 (no 64-bit integers) adds |x|·2^-53·(1 + 2^-52), which lies
 * strictly between half an ulp and 1.5 ulps on either side and so rounds to the neighbour, floored at
 * the smallest subnormal 2^-1074 (which also handles 0 and subnormals exactly).
 */
function nextafter(x: Value, up: boolean): Value {
  const shape = x.aval.shape;
  const dtype = x.aval.dtype;
  const inf = full(shape, up ? Infinity : -Infinity, dtype);
  const isNan = lax.ne(x, x);
  const atTarget = lax.eq(x, inf);
  let next: Value;
  if (dtype === "float32") {
    const b = lax.bitcastConvertType(x, "int32");
    const away = up ? lax.gt(x, full(shape, 0, dtype)) : lax.lt(x, full(shape, 0, dtype));
    const stepped = lax.select(away, lax.add(b, full(shape, 1, "int32")), lax.sub(b, full(shape, 1, "int32")));
    // ±0 steps to the smallest subnormal of the target's sign: bits 0x00000001 or 0x80000001.
    const fromZero = full(shape, up ? 1 : INT32_MIN + 1, "int32");
    const isZero = lax.eq(x, full(shape, 0, dtype));
    next = lax.bitcastConvertType(lax.select(isZero, fromZero, stepped), "float32");
  } else {
    const step = lax.max(lax.mul(lax.abs(x), full(shape, 2 ** -53 * (1 + 2 ** -52), dtype)), full(shape, 2 ** -1074, dtype));
    next = up ? lax.add(x, step) : lax.sub(x, step);
    // From the far infinity the neighbour is the largest finite float of that sign (inf - inf is NaN).
    const farInf = lax.eq(x, lax.neg(inf));
    next = lax.select(farInf, full(shape, up ? -Number.MAX_VALUE : Number.MAX_VALUE, dtype), next);
  }
  return lax.select(lax.or(isNan, atTarget), x, next);
}

/**
 * Standard normal samples truncated to the open interval (lower, upper), by inverting the CDF:
 * sqrt(2)·erf_inv(u) with u uniform in [erf(lower/√2), erf(upper/√2)), then clipped into
 * (nextafter(lower, +inf), nextafter(upper, -inf)) as JAX. Differentiable in lower and upper.
 */
export function truncatedNormal(
  key: Key,
  lower: ArrayLike,
  upper: ArrayLike,
  shape?: number | Shape,
  opts: { dtype?: DType } = {},
): Value {
  const k = checkKey("truncatedNormal", key);
  const dtype = floatDtype("truncatedNormal", opts.dtype);
  const lo = floatParam("truncatedNormal", "lower", lower, dtype);
  const hi = floatParam("truncatedNormal", "upper", upper, dtype);
  let s: number[];
  if (shape === undefined) s = np.broadcastShapes("random.truncatedNormal", lo.aval.shape, hi.aval.shape);
  else {
    s = shapeArg("truncatedNormal", shape);
    checkParamShapes("truncatedNormal", s, { lower: lo.aval.shape, upper: hi.aval.shape });
  }
  const sqrt2 = (v: Value) => full(v.aval.shape, Math.SQRT2, dtype);
  const a = lax.erf(lax.div(lo, sqrt2(lo)));
  const b = lax.erf(lax.div(hi, sqrt2(hi)));
  const u = uniformImpl(k, s, dtype, a, b);
  const out = lax.mul(full(s, Math.SQRT2, dtype), lax.erfInv(u));
  const loOpen = bcast(nextafter(lax.stopGradient(lo), true), s);
  const hiOpen = bcast(nextafter(lax.stopGradient(hi), false), s);
  return lax.min(hiOpen, lax.max(loOpen, out));
}

/** Gumbel samples: -log(-log(u)) with u uniform in [tiny, 1). */
export function gumbel(key: Key, shape: number | Shape = [], opts: { dtype?: DType } = {}): Value {
  const k = checkKey("gumbel", key);
  const s = shapeArg("gumbel", shape);
  const dtype = floatDtype("gumbel", opts.dtype);
  return gumbelImpl(k, s, dtype);
}

function gumbelImpl(k: Value, s: Shape, dtype: DType): Value {
  const u = uniformImpl(k, s, dtype, scalar(TINY[dtype]!, dtype, false), scalar(1, dtype, false));
  return lax.neg(lax.log(lax.neg(lax.log(u))));
}

/** Exponential(1) samples: -log1p(-u). */
export function exponential(key: Key, shape: number | Shape = [], opts: { dtype?: DType } = {}): Value {
  const k = checkKey("exponential", key);
  const s = shapeArg("exponential", shape);
  const dtype = floatDtype("exponential", opts.dtype);
  const u = uniformImpl(k, s, dtype, scalar(0, dtype, false), scalar(1, dtype, false));
  return lax.neg(lax.log1p(lax.neg(u)));
}

/** Laplace(0, 1) samples: sign(u)·log1p(-|u|) with u uniform in (-1, 1). */
export function laplace(key: Key, shape: number | Shape = [], opts: { dtype?: DType } = {}): Value {
  const k = checkKey("laplace", key);
  const s = shapeArg("laplace", shape);
  const dtype = floatDtype("laplace", opts.dtype);
  const u = uniformImpl(k, s, dtype, scalar(NEG_ONE_PLUS_EPSNEG[dtype]!, dtype, false), scalar(1, dtype, false));
  return lax.mul(lax.sign(u), lax.log1p(lax.neg(lax.abs(u))));
}

/** Logistic(0, 1) samples: log(u / (1 - u)) with u uniform in [eps, 1). */
export function logistic(key: Key, shape: number | Shape = [], opts: { dtype?: DType } = {}): Value {
  const k = checkKey("logistic", key);
  const s = shapeArg("logistic", shape);
  const dtype = floatDtype("logistic", opts.dtype);
  const eps = dtype === "float32" ? 2 ** -23 : 2 ** -52;
  const u = uniformImpl(k, s, dtype, scalar(eps, dtype, false), scalar(1, dtype, false));
  return lax.log(lax.div(u, lax.sub(full(s, 1, dtype), u)));
}

// ---------------------------------------------------------------------------------------------------
// Discrete distributions

/** Booleans that are true with probability p (uniform < p); p broadcasts to `shape`. */
export function bernoulli(key: Key, p: ArrayLike = 0.5, shape?: number | Shape): Value {
  const k = checkKey("bernoulli", key);
  const pv = typeof p === "number" ? scalar(p, "float32", false) : np.asArray(p, "random.bernoulli");
  if (!isFloat(pv.aval.dtype)) {
    throw new DTypeError(`random.bernoulli: p must be a float array or number, got ${describe(pv)}\nTip: np.astype(p, "float32")`);
  }
  let s: number[];
  if (shape === undefined) s = [...pv.aval.shape];
  else {
    s = shapeArg("bernoulli", shape);
    checkParamShapes("bernoulli", s, { p: pv.aval.shape });
  }
  const dtype = pv.aval.dtype;
  const u = uniformImpl(k, s, dtype, scalar(0, dtype, false), scalar(1, dtype, false));
  return lax.lt(u, bcast(lax.convert(pv, dtype), s));
}

/** Rademacher samples: -1 or 1 with equal probability (2·bernoulli(0.5) - 1). */
export function rademacher(key: Key, shape: number | Shape = [], opts: { dtype?: DType } = {}): Value {
  const s = shapeArg("rademacher", shape);
  const dtype = checkDType("random.rademacher", opts.dtype ?? "int32");
  if (dtype === "bool" || dtype === "uint32") throw new DTypeError(`random.rademacher: dtype must be signed, got ${dtype}`);
  const b = lax.convert(bernoulli(key, 0.5, s), dtype);
  return lax.sub(lax.mul(full(s, 2, dtype), b), full(s, 1, dtype));
}

/**
 * Samples from categorical distributions given by unnormalised log-probabilities along `axis`: the
 * Gumbel-max trick argmax(logits + gumbel), as JAX. `shape` (default: logits' shape without `axis`)
 * may add leading axes for several draws per distribution.
 */
export function categorical(key: Key, logits: ArrayLike, opts: { axis?: number; shape?: number | Shape } = {}): Value {
  const k = checkKey("categorical", key);
  const l = np.asArray(logits, "random.categorical");
  if (!isFloat(l.aval.dtype)) {
    throw new DTypeError(`random.categorical: logits must be floats, got ${describe(l)}\nTip: np.astype(logits, "float32")`);
  }
  const nd = l.aval.ndim;
  if (nd === 0) throw new ShapeError(`random.categorical: logits need at least one axis, got ${describe(l)}`);
  const axis0 = opts.axis ?? -1;
  if (!Number.isInteger(axis0) || axis0 < -nd || axis0 >= nd) {
    throw new ShapeError(`random.categorical: axis ${axis0} is out of bounds for logits ${describe(l)}`);
  }
  const axis = axis0 >= 0 ? axis0 - nd : axis0; // negative, as JAX: counts from the end of the sample shape
  const axisPos = axis + nd;
  const batchShape = l.aval.shape.filter((_, i) => i !== axisPos);
  let s: number[];
  if (opts.shape === undefined) s = batchShape;
  else {
    s = shapeArg("categorical", opts.shape);
    checkParamShapes("categorical", s, { "logits without axis": batchShape });
  }
  const prefix = s.slice(0, s.length - batchShape.length);
  const logitsShape = s.slice(s.length - batchShape.length);
  logitsShape.splice(axisPos, 0, l.aval.shape[axisPos]!);
  const g = gumbelImpl(k, [...prefix, ...logitsShape], l.aval.dtype);
  const lx = reshape(l, [...prefix.map(() => 1), ...l.aval.shape]); // [1 x prefix, ...logits.shape]
  return np.argmax(np.add(g, lx), { axis });
}

/** JAX's `_convert_and_clip_integer` for randint bounds, plus whether the bound exceeds dtype's max. */
function intBound(what: string, x: ArrayLike, dtype: DType): { v: Value; tooBig: Value } {
  const [lo, hi] = dtype === "uint32" ? [0, UINT32_MAX] : [INT32_MIN, INT32_MAX];
  if (typeof x === "number") {
    if (!Number.isFinite(x)) throw new ArgumentError(`random.randint: ${what} must be a finite integer, got ${x}`);
    const t = Math.trunc(x);
    return { v: scalar(Math.min(hi, Math.max(lo, t)), dtype, false), tooBig: scalar(t > hi, "bool", false) };
  }
  let v = np.asArray(x, "random.randint");
  if (!isInt(v.aval.dtype)) v = lax.convert(v, "int32"); // floats truncate, as JAX's astype(int)
  const s = v.aval.shape;
  if (v.aval.dtype === dtype) return { v, tooBig: full(s, false, "bool") };
  if (v.aval.dtype === "int32") {
    // int32 -> uint32: negatives clip to 0; nothing exceeds the uint32 max.
    return { v: lax.convert(lax.max(v, full(s, 0, "int32")), "uint32"), tooBig: full(s, false, "bool") };
  }
  // uint32 -> int32: values above INT32_MAX clip.
  const cap = full(s, INT32_MAX, "uint32");
  return { v: lax.convert(lax.min(v, cap), "int32"), tooBig: lax.gt(v, cap) };
}

/** x mod span with XLA's unsigned semantics (x mod 0 = x); the CPU kernel would give 0. */
function remU(x: Value, span: Value): Value {
  const zero = lax.eq(span, lax.zerosLike(span));
  const safe = lax.select(zero, lax.fullLike(span, 1), span);
  return lax.select(zero, x, lax.rem(x, safe));
}

/**
 * Uniform integers in [minval, maxval) (JAX's algorithm): 64 random bits per element reduced modulo
 * span = maxval - minval as (hi mod span)·(2^32 mod span) + (lo mod span), which keeps the bias
 * below 2^-32 for any span. Bounds are clipped to dtype's range; maxval <= minval gives minval.
 */
export function randint(
  key: Key,
  shape: number | Shape,
  minval: ArrayLike,
  maxval: ArrayLike,
  opts: { dtype?: DType } = {},
): Value {
  const k = checkKey("randint", key);
  const s = shapeArg("randint", shape);
  const dtype = checkDType("random.randint", opts.dtype ?? "int32");
  if (!isInt(dtype)) throw new DTypeError(`random.randint: dtype must be int32 or uint32, got ${dtype}\nTip: use random.uniform for floats`);
  const mnB = intBound("minval", minval, dtype);
  const mxB = intBound("maxval", maxval, dtype);
  checkParamShapes("randint", s, { minval: mnB.v.aval.shape, maxval: mxB.v.aval.shape });
  const mn = bcast(mnB.v, s);
  const mx = bcast(mxB.v, s);
  const tooBig = bcast(mxB.tooBig, s);
  const [k1, k2] = split2(k);
  const higher = bitsImpl(k1, s);
  const lower = bitsImpl(k2, s);
  const one = full(s, 1, "uint32");
  let span = lax.convert(lax.sub(mx, mn), "uint32");
  span = lax.select(lax.le(mx, mn), one, span);
  // A maxval above dtype's max was clipped to the max, which is itself a valid draw: widen by one.
  span = lax.select(lax.and(tooBig, lax.gt(mx, mn)), lax.add(span, one), span);
  let multiplier = remU(full(s, 2 ** 16, "uint32"), span);
  multiplier = remU(lax.mul(multiplier, multiplier), span); // 2^32 mod span
  let offset = lax.add(lax.mul(remU(higher, span), multiplier), remU(lower, span));
  offset = remU(offset, span);
  return lax.add(mn, lax.convert(offset, dtype));
}

/**
 * JAX's `_shuffle`: sort by fresh random uint32 keys, repeated for
 * ceil(3·ln(size) / ln(2^32 - 1)) rounds so that key collisions (which a stable sort resolves by
 * position) are negligible.
 */
function shuffle(k: Value, x: Value, axis: number): Value {
  const size = x.aval.size;
  const numRounds = Math.ceil((3 * Math.log(Math.max(1, size))) / Math.log(UINT32_MAX));
  let key = k;
  let out = x;
  for (let r = 0; r < numRounds; r++) {
    const [next, sub] = split2(key);
    key = next;
    const sortKeys = bitsImpl(sub, out.aval.shape);
    out = laxSort([sortKeys, out], axis, 1)[1]!;
  }
  return out;
}

function concreteInt(name: string, x: Value): number {
  if (!(x instanceof Array)) {
    throw new ConcretizationError(
      `random.${name}: needs a concrete integer (it decides the output shape), got a traced ${describe(x)}\n` +
        `Tip: pass a JS number, or close over it instead of passing it through jit`,
    );
  }
  if (!isInt(x.aval.dtype)) throw new DTypeError(`random.${name}: x must be an integer or at least 1-dimensional, got ${describe(x)}`);
  return Number(x.itemSync());
}

/**
 * A random permutation of `arange(x)` (x a non-negative integer) or of an array along `axis`; with
 * `independent`, every slice along `axis` is shuffled separately.
 */
export function permutation(key: Key, x: number | ArrayLike, opts: { axis?: number; independent?: boolean } = {}): Value {
  const k = checkKey("permutation", key);
  let n: number | null = null;
  if (typeof x === "number") n = x;
  const v = n === null ? np.asArray(x, "random.permutation") : null;
  if (v !== null && v.aval.ndim === 0) n = concreteInt("permutation", v);
  if (n !== null) {
    if (!Number.isInteger(n) || n < 0) throw new ArgumentError(`random.permutation: x must be a non-negative integer, got ${n}`);
    if (opts.axis !== undefined && opts.axis !== 0 && opts.axis !== -1) {
      throw new ShapeError(`random.permutation: axis ${opts.axis} is out of bounds for arange(${n})`);
    }
    return shuffle(k, np.arange(n), 0);
  }
  const arr = v!;
  const axis = np.normalizeAxis("random.permutation", opts.axis ?? 0, arr.aval.ndim);
  if (opts.independent || arr.aval.ndim === 1) return shuffle(k, arr, axis);
  const ind = shuffle(k, np.arange(arr.aval.shape[axis]!), 0);
  return np.take(arr, ind, axis);
}

export interface ChoiceOptions {
  /** Output shape (default []): the number of draws. */
  shape?: number | Shape;
  /** Draw with replacement (default true). */
  replace?: boolean;
  /** Probabilities of the entries (default uniform); a 1-D array of a's length along `axis`. */
  p?: ArrayLike;
  axis?: number;
}

/** Random samples from `arange(a)` (a an integer) or from an array's entries along `axis`. */
export function choice(key: Key, a: number | ArrayLike, opts: ChoiceOptions = {}): Value {
  const k = checkKey("choice", key);
  const shape = shapeArg("choice", opts.shape ?? []);
  const replace = opts.replace ?? true;
  const arr = typeof a === "number" ? null : np.asArray(a, "random.choice");
  let nInputs: number;
  let axis = 0;
  if (arr === null || arr.aval.ndim === 0) {
    nInputs = arr === null ? (a as number) : concreteInt("choice", arr);
    if (!Number.isInteger(nInputs)) throw new ArgumentError(`random.choice: a must be an integer or an array, got ${nInputs}`);
  } else {
    axis = np.normalizeAxis("random.choice", opts.axis ?? 0, arr.aval.ndim);
    nInputs = arr.aval.shape[axis]!;
  }
  const fromArray = arr !== null && arr.aval.ndim > 0;
  const outShape = fromArray ? [...arr.aval.shape.slice(0, axis), ...shape, ...arr.aval.shape.slice(axis + 1)] : shape;
  const nDraws = shapeSize(shape);
  if (nDraws === 0) return full(outShape, 0, fromArray ? arr.aval.dtype : "int32");
  if (nInputs <= 0) throw new ArgumentError(`random.choice: a must be greater than 0 unless no samples are taken, got ${nInputs}`);
  if (!replace && nDraws > nInputs) {
    throw new ArgumentError(
      `random.choice: cannot take a larger sample (size ${nDraws}) than the population (size ${nInputs}) without replacement`,
    );
  }
  let result: Value;
  if (opts.p === undefined) {
    if (replace) {
      const ind = randint(k, shape, 0, nInputs);
      result = fromArray ? np.take(arr, ind, axis) : ind;
    } else {
      const perm = permutation(k, fromArray ? arr : nInputs, { axis });
      result = sliceInDim(perm, 0, nDraws, fromArray ? axis : 0);
    }
  } else {
    let p = np.asArray(opts.p, "random.choice");
    if (!isFloat(p.aval.dtype)) p = lax.convert(p, "float32");
    if (p.aval.ndim !== 1 || p.aval.shape[0] !== nInputs) {
      throw new ShapeError(
        `random.choice: p must be a 1-D array with a's length along axis (${nInputs}), got ${describe(p)}`,
      );
    }
    const dtype = p.aval.dtype;
    let ind: Value;
    if (replace) {
      // Inverse CDF: the first index whose cumulative probability reaches r (searchsorted, side left).
      const cuml = np.cumsum(p);
      const total = reshape(sliceInDim(cuml, nInputs - 1, nInputs, 0), []);
      const u = uniformImpl(k, shape, dtype, scalar(0, dtype, false), scalar(1, dtype, false));
      const r = lax.mul(bcast(total, shape), lax.sub(full(shape, 1, dtype), u));
      const n = shape.length;
      const rb = broadcastInDim(r, [...shape, nInputs], range(n)); // [...shape, nInputs]
      const cb = broadcastInDim(cuml, [...shape, nInputs], [n]); // [...shape, nInputs]
      ind = reduceSum(lax.convert(lax.lt(cb, rb), "int32"), [n]);
    } else {
      // Gumbel top-k: the k largest of log p + gumbel are a weighted sample without replacement.
      // https://timvieira.github.io/blog/post/2019/09/16/algorithms-for-sampling-without-replacement/
      const g = lax.add(gumbelImpl(k, [nInputs], dtype), np.log(p));
      ind = np.topK(g, nDraws)[1]!;
    }
    result = fromArray ? np.take(arr, ind, axis) : ind;
  }
  return reshape(result, outShape);
}

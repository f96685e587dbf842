/**
 * @file Language-model datasets: a corpus of token ids, split into a training and a validation part,
 * and batches of random crops drawn deterministically from a `random` key.
 *
 * The split is contiguous (the last `valFraction` of the tokens is validation), so no crop of the
 * training part overlaps a validation crop. Batch `step` of a run is `crops(foldIn(key, step), ...)`:
 * it depends only on the key and the step number, so a run resumed at step s sees exactly the batches
 * an uninterrupted run would have (what the train-lm resume test checks).
 */
import { ArgumentError, ShapeError } from "../autodiff/errors.js";
import { Array } from "../ops/array.js";
import type { Device } from "../ops/array.js";
import * as np from "../ops/np.js";
import * as random from "../ops/random.js";

export type Tokens = Int32Array;

/** Token ids as an Int32Array, checked to be integers in [0, vocabSize) when a size is given. */
export function asTokens(ids: ArrayLike<number>, vocabSize?: number): Tokens {
  const t = Int32Array.from(ids as ArrayLike<number>);
  if (vocabSize !== undefined) {
    for (let i = 0; i < t.length; i++) {
      if (t[i]! < 0 || t[i]! >= vocabSize || t[i] !== (ids as ArrayLike<number>)[i]) {
        throw new ArgumentError(`dataset: token ${i} must be an integer in [0, ${vocabSize}), got ${(ids as ArrayLike<number>)[i]}`);
      }
    }
  }
  return t;
}

/** Splits a corpus into its first (1 - valFraction) and its last valFraction (contiguous). */
export function trainValSplit(tokens: Tokens, valFraction = 0.1): { train: Tokens; val: Tokens } {
  if (!(valFraction >= 0 && valFraction < 1)) throw new ArgumentError(`trainValSplit: valFraction must be in [0, 1), got ${valFraction}`);
  const cut = tokens.length - Math.floor(tokens.length * valFraction);
  return { train: tokens.subarray(0, cut), val: tokens.subarray(cut) };
}

/** Crop start positions in [0, tokens.length - len] for `batch` crops, from the key (host numbers). */
export async function cropStarts(key: random.Key, numTokens: number, batch: number, len: number): Promise<number[]> {
  if (!Number.isInteger(batch) || batch < 1) throw new ArgumentError(`dataset: batch must be a positive integer, got ${batch}`);
  if (!Number.isInteger(len) || len < 1) throw new ArgumentError(`dataset: crop length must be a positive integer, got ${len}`);
  if (numTokens < len) {
    throw new ShapeError(`dataset: crops of ${len} tokens need a corpus of at least ${len} tokens, got ${numTokens}\nTip: use a shorter --seq or more text`);
  }
  const s = random.randint(key, [batch], 0, numTokens - len + 1) as Array;
  return globalThis.Array.from(await s.data(), Number);
}

/** `batch` random crops of `len` tokens: int32 [batch, len]. */
export async function randomCrops(key: random.Key, tokens: Tokens, batch: number, len: number, opts: { device?: Device | string } = {}): Promise<Array> {
  const starts = await cropStarts(key, tokens.length, batch, len);
  const out = new Int32Array(batch * len);
  starts.forEach((s, i) => out.set(tokens.subarray(s, s + len), i * len));
  return np.array(out, { shape: [batch, len], device: opts.device });
}

export interface BatcherOptions {
  batch: number;
  /** Tokens per crop (a model with context n trains on crops of n + 1: inputs and shifted targets). */
  len: number;
  device?: Device | string;
}

/** Deterministic batches: `at(step)` is the same for a given key whenever it is asked for. */
export class Batcher {
  constructor(
    readonly tokens: Tokens,
    readonly key: random.Key,
    readonly opts: BatcherOptions,
  ) {
    if (tokens.length < opts.len) {
      throw new ShapeError(`Batcher: crops of ${opts.len} tokens need at least ${opts.len} tokens, got ${tokens.length}\nTip: use a shorter --seq or more text`);
    }
  }
  /** Batch number `step`: int32 [batch, len]. */
  at(step: number): Promise<Array> {
    if (!Number.isInteger(step) || step < 0) throw new ArgumentError(`Batcher.at: step must be a non-negative integer, got ${step}`);
    return randomCrops(random.foldIn(this.key, step), this.tokens, this.opts.batch, this.opts.len, { device: this.opts.device });
  }
  async *[Symbol.asyncIterator](): AsyncIterator<Array> {
    for (let s = 0; ; s++) yield await this.at(s);
  }
}

/**
 * Non-overlapping windows covering `tokens` from the start (the last partial window is dropped), in
 * batches of up to `batch`: for a fixed, exhaustive validation pass. At most `maxBatches` batches.
 */
export function sequentialBatches(tokens: Tokens, batch: number, len: number, opts: { maxBatches?: number; device?: Device | string } = {}): Array[] {
  const n = Math.floor(tokens.length / len);
  const out: Array[] = [];
  for (let w = 0; w < n && (opts.maxBatches === undefined || out.length < opts.maxBatches); w += batch) {
    const rows = Math.min(batch, n - w);
    out.push(np.array(tokens.slice(w * len, (w + rows) * len), { shape: [rows, len], device: opts.device }));
  }
  return out;
}

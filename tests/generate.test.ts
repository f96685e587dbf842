/**
 * @file Tests of generation (src/nn/generate.ts). Expected values come from outside the code under
 * test: `palm.apply` on the full sequence (a separately written forward pass without a cache) for the
 * cached logits and for greedy decoding, distributions worked out by hand for the top-k / top-p
 * filters and for sampling frequencies, and structural facts (eos stops a row, a key reproduces).
 */
import "../src/index.js";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import type { Value } from "../src/autodiff/core.js";
import { ArgumentError, DTypeError, ShapeError } from "../src/autodiff/errors.js";
import { np, tree } from "../src/index.js";
import type { Array as WArray } from "../src/ops/array.js";
import * as random from "../src/ops/random.js";
import * as lora from "../src/nn/lora.js";
import * as palm from "../src/nn/palm.js";
import type { PalmConfig, PalmParams } from "../src/nn/palm.js";
import { bestOfN, filterTopK, filterTopP, forwardChunk, generate, generateTraceCount, initCache, sampleLogits } from "../src/nn/generate.js";

const data = (v: Value): number[] => globalThis.Array.from((v as WArray).dataSync(), Number);
const i32 = (x: number[][]): Value => np.array(x, { dtype: "int32" });
const scalarI32 = (t: number): Value => np.array(new Int32Array([t]), { shape: [] });

const tiny: PalmConfig = { numTokens: 24, dim: 16, depth: 2, heads: 2, dimHead: 8, ffMult: 2, dtype: "float64" };

/** Params with every weight random (gains too), so no symmetry hides a bug. */
function randomParams(config: PalmConfig, seed: number): PalmParams {
  const p = palm.init(random.key(seed), config);
  let i = 0;
  return tree.map((x: Value) => {
    const noise = random.normal(random.key(1000 + seed * 100 + i++), x.aval.shape, { dtype: x.aval.dtype });
    return x.aval.ndim === 1 ? np.add(1, np.multiply(0.3, noise)) : np.multiply(x.aval.shape[0] === config.numTokens ? 0.5 : 0.4, noise);
  }, p) as PalmParams;
}

function maxRelErr(a: number[], b: number[]): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let k = 0; k < a.length; k++) worst = Math.max(worst, Math.abs(a[k]! - b[k]!) / Math.max(1, Math.abs(b[k]!)));
  return worst;
}

/** Logits of the full forward pass at position `pos` of each row: [batch][vocab]. */
function fullLogitsAt(params: PalmParams, seqs: number[][], pos: number, config: PalmConfig, extra: object = {}): number[] {
  const l = palm.apply(params, i32(seqs.map((s) => s.slice(0, pos + 1))), { config, ...extra }) as Value; // [b, pos+1, V]
  const [b, n, v] = l.aval.shape as [number, number, number];
  const d = data(l);
  const out: number[] = [];
  for (let r = 0; r < b; r++) out.push(...d.slice((r * n + n - 1) * v, (r * n + n) * v));
  return out;
}

/** Greedy decoding by full recomputation (no cache): argmax of palm.apply's last logits, appended. */
function greedyReference(params: PalmParams, prompt: number[], steps: number, config: PalmConfig, eos: number | null = null): number[] {
  const s = [...prompt];
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    const row = fullLogitsAt(params, [s], s.length - 1, config);
    let j = 0;
    row.forEach((v, k) => {
      if (v > row[j]!) j = k;
    });
    out.push(j);
    s.push(j);
    if (j === eos) break;
  }
  return out;
}

describe("KV-cached forward pass", () => {
  const cases: [string, PalmConfig, boolean][] = [
    ["xPos + rotary", tiny, false],
    ["qk RMS norm", { ...tiny, qkRmsNorm: true }, false],
    ["no xPos", { ...tiny, useXpos: false }, false],
    ["LoRA", tiny, true],
  ];
  for (const [name, config, withLora] of cases) {
    it(`prefill + one-token steps give the full forward pass's logits (float64, ${name})`, () => {
      const params = randomParams(config, 3);
      let extra: { lora?: ReturnType<typeof lora.init>; loraScope?: string; loraAlpha?: number } = {};
      if (withLora) {
        const l = lora.init(random.key(9), config, { scopes: "actor", r: 2 });
        // B = 0 at init would make the adapter a no-op; give it weights.
        const lw = tree.map((x: Value) => np.multiply(0.3, random.normal(random.key(x.aval.size), x.aval.shape, { dtype: "float64" })), l) as typeof l;
        extra = { lora: lw, loraScope: "actor", loraAlpha: 4 };
      }
      const seqs = [
        [3, 7, 1, 22, 5, 9, 14, 2, 8, 19],
        [11, 0, 4, 4, 17, 6, 23, 1, 12, 3],
      ];
      const maxLen = 12; // longer than the sequences: the tail of the cache stays unused
      let cache = initCache(params, 2, maxLen);
      const prefill = 4;
      const first = forwardChunk(params, i32(seqs.map((s) => s.slice(0, prefill))), scalarI32(0), cache, { config, ...extra });
      cache = first.cache;
      // Every prefill position matches the full pass at that position.
      const pl = data(first.logits);
      const v = config.numTokens;
      for (let pos = 0; pos < prefill; pos++) {
        const got = [0, 1].flatMap((r) => pl.slice((r * prefill + pos) * v, (r * prefill + pos + 1) * v));
        expect(maxRelErr(got, fullLogitsAt(params, seqs, pos, config, extra))).toBeLessThan(1e-10);
      }
      for (let pos = prefill; pos < seqs[0]!.length; pos++) {
        const step = forwardChunk(params, i32(seqs.map((s) => [s[pos]!])), scalarI32(pos), cache, { config, ...extra });
        cache = step.cache;
        expect(maxRelErr(data(step.logits), fullLogitsAt(params, seqs, pos, config, extra))).toBeLessThan(1e-10);
      }
    });
  }

  it("writes k and v at the position (the rest of the cache is untouched)", () => {
    const params = randomParams(tiny, 4);
    const cache = initCache(params, 1, 6);
    const r = forwardChunk(params, i32([[5]]), scalarI32(3), cache, { config: tiny });
    for (const k of r.cache.k) {
      const d = data(k); // [1, 6, 8]
      for (let pos = 0; pos < 6; pos++) {
        const row = d.slice(pos * 8, pos * 8 + 8);
        if (pos === 3) expect(row.some((x) => x !== 0)).toBe(true);
        else expect(row.every((x) => x === 0)).toBe(true);
      }
    }
  });
});

describe("palm.applyWithCache against PyTorch (tests/fixtures/palm/small.json: dim 32, 4 heads, xPos)", () => {
  interface Small {
    config: PalmConfig;
    params: { path: string; shape: number[]; pid: number; amp: number; offset: number }[];
    tokens: number[][];
    logits: number[][][];
  }
  const fx: Small = JSON.parse(readFileSync(new URL("./fixtures/palm/small.json", import.meta.url), "utf8"));
  const config: PalmConfig = { ...fx.config, dtype: "float64" };
  /** The fixture's weight formula, value[i] = offset + amp·sin(0.37·i + 0.11·pid + 0.3) (see gen_palm.py). */
  function fixtureParams(): PalmParams {
    const root: Record<string, any> = {};
    for (const p of fx.params) {
      const n = p.shape.reduce((a, b) => a * b, 1);
      const v = Float64Array.from({ length: n }, (_, i) => p.offset + p.amp * Math.sin(0.37 * i + 0.11 * p.pid + 0.3));
      const parts = p.path.split(".");
      let o = root;
      parts.slice(0, -1).forEach((k, j) => (o = o[k] ??= /^\d+$/.test(parts[j + 1]!) ? [] : {}));
      o[parts.at(-1)!] = np.array(v, { dtype: "float64", shape: p.shape });
    }
    return root as PalmParams;
  }
  const params = fixtureParams();
  const inputs = fx.tokens.map((r) => r.slice(0, -1)); // [2, 11]: the fixture's logits are of these
  const v = fx.config.numTokens;
  const want = (pos: number): number[] => [0, 1].flatMap((r) => fx.logits[r]![pos]!);

  it("a prefill of 5 then one token at a time reproduces PyTorch's logits at every position (1e-10)", () => {
    let cache = palm.initCache(params, 2, 16);
    const first = palm.applyWithCache(params, i32(inputs.map((r) => r.slice(0, 5))), cache, 0, { config });
    cache = first.cache;
    const pl = data(first.logits); // [2, 5, V]
    for (let pos = 0; pos < 5; pos++) {
      const got = [0, 1].flatMap((r) => pl.slice((r * 5 + pos) * v, (r * 5 + pos + 1) * v));
      expect(maxRelErr(got, want(pos))).toBeLessThan(1e-10);
    }
    for (let pos = 5; pos < inputs[0]!.length; pos++) {
      const step = palm.applyWithCache(params, i32(inputs.map((r) => [r[pos]!])), cache, scalarI32(pos), { config });
      cache = step.cache;
      expect(maxRelErr(data(step.logits), want(pos))).toBeLessThan(1e-10);
    }
  });

  it("rejects what would be a silent wrong answer: out-of-range positions, mismatched caches, non-causal models", () => {
    const cache = palm.initCache(params, 2, 8);
    const two = i32(inputs.map((r) => r.slice(0, 2)));
    expect(() => palm.applyWithCache(params, two, cache, 7, { config })).toThrow(ShapeError); // 7..8 overflows 8 slots
    expect(() => palm.applyWithCache(params, two, cache, -1, { config })).toThrow(ShapeError);
    expect(() => palm.applyWithCache(params, two, palm.initCache(params, 3, 8), 0, { config })).toThrow(/cache entries must be float64\[2, 8, 8\]/);
    expect(() => palm.applyWithCache(params, two, { k: cache.k.slice(1), v: cache.v }, 0, { config })).toThrow(ShapeError);
    expect(() => palm.applyWithCache(params, two, cache, 0, { config: { ...config, causal: false } })).toThrow(ArgumentError);
    expect(() => palm.applyWithCache(params, two, cache, np.array([0, 1], { dtype: "int32" }), { config })).toThrow(ShapeError);
    expect(() => palm.applyWithCache(params, two, cache, np.array(0.5), { config })).toThrow(DTypeError);
    expect(() => palm.applyWithCache(params, np.array([[1, 2], [3, 4]]), cache, 0, { config })).toThrow(DTypeError); // float tokens
  });
});

describe("generate", () => {
  const params = randomParams(tiny, 5);

  it("greedy decoding equals argmax decoding by full recomputation, for prompts of different lengths", async () => {
    const prompts = [[1, 2, 3], [4, 5, 6, 7, 8], [9]];
    const r = await generate(params, prompts, { config: tiny, maxNewTokens: 6, temperature: 0 });
    prompts.forEach((p, i) => expect(r.completions[i]).toEqual(greedyReference(params, p, 6, tiny)));
    expect(r.tokens.shape).toEqual([3, 6]);
    expect(r.sequences.shape).toEqual([3, 5 + 6]);
    // Sequences: the prompt, the new tokens, then padding.
    const seq = r.sequences.toArraySync() as number[][];
    prompts.forEach((p, i) => {
      expect(seq[i]!.slice(0, p.length)).toEqual(p);
      expect(seq[i]!.slice(p.length, p.length + 6)).toEqual(r.completions[i]);
      expect(seq[i]!.slice(p.length + 6)).toEqual(new globalThis.Array(5 - p.length).fill(0));
    });
  });

  it("accepts a padded [batch, promptLen] array with lengths, same result as token lists", async () => {
    const a = await generate(params, [[1, 2, 3], [4, 5, 6, 7, 8]], { config: tiny, maxNewTokens: 4, key: random.key(1) });
    const b = await generate(params, { tokens: i32([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]]), lengths: [3, 5] }, { config: tiny, maxNewTokens: 4, key: random.key(1) });
    expect(b.completions).toEqual(a.completions);
    const c = await generate(params, { tokens: i32([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]]), lengths: np.array([3, 5], { dtype: "int32" }) }, { config: tiny, maxNewTokens: 4, key: random.key(1) });
    expect(c.completions).toEqual(a.completions);
  });

  it("stops each row at eos (kept) and pads after it", async () => {
    const prompts = [[1, 2, 3], [10, 11]];
    const refs = prompts.map((p) => greedyReference(params, p, 8, tiny));
    // eos: a token the first row emits at its 3rd step or later for the first time (found from the reference).
    const k = refs[0]!.findIndex((t, i) => i >= 2 && !refs[0]!.slice(0, i).includes(t));
    expect(k).toBeGreaterThanOrEqual(2); // the test needs such a token
    const eos = refs[0]![k]!;
    const pad = 23 === eos ? 22 : 23;
    const r = await generate(params, prompts, { config: tiny, maxNewTokens: 8, temperature: 0, eosToken: eos, padToken: pad });
    prompts.forEach((p, i) => {
      const e = refs[i]!.indexOf(eos);
      const want = e >= 0 ? refs[i]!.slice(0, e + 1) : refs[i]!;
      expect(r.completions[i]).toEqual(want);
      const row = (r.tokens.toArraySync() as number[][])[i]!;
      expect(row).toEqual([...want, ...new globalThis.Array(8 - want.length).fill(pad)]);
    });
  });

  it("stops early when every row has finished", async () => {
    const ref = greedyReference(params, [1, 2, 3], 1, tiny);
    const r = await generate(params, [[1, 2, 3]], { config: tiny, maxNewTokens: 10, temperature: 0, eosToken: ref[0]! });
    expect(r.completions[0]).toEqual([ref[0]]);
    expect(r.steps).toBe(0); // the prefill decided the only token
  });

  it("is reproducible from a key, and different keys give different samples", async () => {
    const opts = { config: tiny, maxNewTokens: 8, temperature: 1.5 };
    const a = await generate(params, [[1, 2], [3, 4, 5]], { ...opts, key: random.key(42) });
    const b = await generate(params, [[1, 2], [3, 4, 5]], { ...opts, key: random.key(42) });
    const c = await generate(params, [[1, 2], [3, 4, 5]], { ...opts, key: random.key(43) });
    expect(b.completions).toEqual(a.completions);
    expect(c.completions).not.toEqual(a.completions);
  });

  it("draws fresh randomness at every position (uniform model: many distinct tokens per row)", async () => {
    // tokenEmb = 0 makes every logit 0, so each new token is uniform over the 24 ids, independently.
    const flat = { ...params, tokenEmb: np.zerosLike(params.tokenEmb) };
    const r = await generate(flat, [[1], [1], [1]], { config: tiny, maxNewTokens: 40, key: random.key(8) });
    for (const c of r.completions) {
      // 40 uniform draws from 24 ids give ~19 distinct values; reusing one key per row would give 1.
      expect(new Set(c).size).toBeGreaterThanOrEqual(10);
    }
    expect(r.completions[0]).not.toEqual(r.completions[1]);
    const counts = new globalThis.Array(24).fill(0);
    r.completions.flat().forEach((t) => counts[t]++);
    expect(Math.max(...counts)).toBeLessThan(20); // expected 5 per id
  });

  it("traces the decode step once for all steps (jit cache)", async () => {
    const p = randomParams({ ...tiny, dtype: "float32" }, 6);
    const cfg = { ...tiny, dtype: "float32" as const };
    const before = generateTraceCount();
    const r = await generate(p, [[1, 2, 3, 4]], { config: cfg, maxNewTokens: 7, temperature: 0 });
    expect(r.steps).toBe(6);
    expect(generateTraceCount() - before).toBe(2); // the prefill and the one-token step
    await generate(p, [[5, 6, 7, 8]], { config: cfg, maxNewTokens: 7, temperature: 0 });
    expect(generateTraceCount() - before).toBe(2); // same shapes: no new trace
  });

  it("rejects bad arguments with clear errors", async () => {
    await expect(generate(params, [[1, 2]], { config: tiny, maxNewTokens: 3 })).rejects.toThrow(/needs a key/);
    await expect(generate(params, [[]], { config: tiny, maxNewTokens: 3, temperature: 0 })).rejects.toThrow(/empty/);
    await expect(generate(params, [[1, 99]], { config: tiny, maxNewTokens: 3, temperature: 0 })).rejects.toThrow(ArgumentError);
    await expect(generate(params, [[1]], { config: tiny, maxNewTokens: 0, temperature: 0 })).rejects.toThrow(/maxNewTokens/);
    await expect(generate(params, [[1]], { config: tiny, maxNewTokens: 2, temperature: 0, topP: 1.5 })).rejects.toThrow(/topP/);
    await expect(generate(params, [[1]], { config: { ...tiny, causal: false }, maxNewTokens: 2, temperature: 0 })).rejects.toThrow(/causal/);
  });
});

describe("sampling filters", () => {
  // p = [0.1, 0.4, 0.2, 0.3]: by probability the order is 1 (0.4), 3 (0.3), 2 (0.2), 0 (0.1).
  const probs = [0.1, 0.4, 0.2, 0.3];
  const logits = np.array(probs.map(Math.log), { dtype: "float64" });
  const kept = (v: Value): number[] => data(v).flatMap((x, i) => (x === -Infinity ? [] : [i]));

  it("top-k keeps the k largest", () => {
    expect(kept(filterTopK(logits, 1))).toEqual([1]);
    expect(kept(filterTopK(logits, 2))).toEqual([1, 3]);
    expect(kept(filterTopK(logits, 3))).toEqual([1, 2, 3]);
    expect(kept(filterTopK(logits, 4))).toEqual([0, 1, 2, 3]);
    // Unchanged values where kept.
    expect(data(filterTopK(logits, 2))[1]).toBe(Math.log(0.4));
  });

  it("top-p keeps the smallest most-likely set with mass >= p (not the tail)", () => {
    expect(kept(filterTopP(logits, 0.3))).toEqual([1]); // 0.4 >= 0.3
    expect(kept(filterTopP(logits, 0.5))).toEqual([1, 3]); // 0.4 < 0.5 <= 0.7
    expect(kept(filterTopP(logits, 0.75))).toEqual([1, 2, 3]); // 0.7 < 0.75 <= 0.9
    expect(kept(filterTopP(logits, 0.95))).toEqual([0, 1, 2, 3]);
    expect(kept(filterTopP(logits, 1))).toEqual([0, 1, 2, 3]);
  });

  it("filters each row of a batch separately", () => {
    const two = np.array([probs.map(Math.log), [0.7, 0.1, 0.1, 0.1].map(Math.log)], { dtype: "float64" });
    const d = data(filterTopP(two, 0.6));
    expect(d.slice(0, 4).map((x) => x !== -Infinity)).toEqual([false, true, false, true]);
    expect(d.slice(4).map((x) => x !== -Infinity)).toEqual([true, false, false, false]);
  });

  /** Frequencies of 0..3 in n samples (one per row of a batch of identical logits). */
  function frequencies(key: number, opts: Parameters<typeof sampleLogits>[2], n = 4000): number[] {
    const batch = np.broadcastTo(logits, [n, 4]);
    const s = data(sampleLogits(random.key(key), batch, opts));
    const f = [0, 0, 0, 0];
    for (const x of s) f[x]!++;
    return f.map((c) => c / n);
  }
  // Binomial standard deviation with n = 4000 is at most 0.008; 0.03 is > 3.5 sigma.
  const expectNear = (got: number[], want: number[]): void => got.forEach((g, i) => expect(Math.abs(g - want[i]!)).toBeLessThan(0.03));

  it("samples from softmax(logits / T) renormalised over the kept tokens", () => {
    expectNear(frequencies(1, {}), probs);
    expectNear(frequencies(2, { topK: 2 }), [0, 0.4 / 0.7, 0, 0.3 / 0.7]);
    expectNear(frequencies(3, { topP: 0.75 }), [0, 0.4 / 0.9, 0.2 / 0.9, 0.3 / 0.9]);
    const sq = probs.map((p) => p * p);
    const z = sq.reduce((a, b) => a + b);
    expectNear(frequencies(4, { temperature: 0.5 }), sq.map((s) => s / z)); // p^(1/T) normalised
    expect(frequencies(5, { temperature: 0 }, 10)).toEqual([0, 1, 0, 0]); // greedy
  });
});

describe("bestOfN", () => {
  it("keeps the completion with the highest score per prompt", async () => {
    const params = randomParams(tiny, 7);
    const score = (c: number[]): number => c.reduce((a, b) => a + b, 0);
    const r = await bestOfN(params, [[1, 2], [3, 4, 5]], 4, (cands) => cands.completions.map(score), {
      config: tiny,
      maxNewTokens: 5,
      key: random.key(11),
      temperature: 2,
    });
    expect(r.candidates.length).toBe(2);
    r.candidates.forEach((cs, i) => {
      expect(cs.length).toBe(4);
      const scores = cs.map(score);
      expect(r.scores[i]).toEqual(scores);
      const best = scores.indexOf(Math.max(...scores));
      expect(r.bestIndex[i]).toBe(best);
      expect(r.best[i]).toEqual(cs[best]);
    });
    // Scores may also come back as an array.
    const r2 = await bestOfN(params, [[1, 2]], 3, (c) => np.array(c.completions.map((x) => -score(x))), { config: tiny, maxNewTokens: 3, key: random.key(2) });
    const s2 = r2.candidates[0]!.map((x) => -score(x));
    expect(r2.bestIndex[0]).toBe(s2.indexOf(Math.max(...s2)));
    await expect(bestOfN(params, [[1]], 2, () => [1], { config: tiny, maxNewTokens: 2, key: random.key(0) })).rejects.toThrow(/2 scores/);
  });
});

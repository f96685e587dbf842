/**
 * @file Tests of the reward model (src/rl/reward.ts). Expected values are independent of the code under
 * test: Bradley–Terry / MSE / cross-entropy values computed by hand in JS doubles, float64 central finite
 * differences, structural facts (causal attention: a padded row scores like the same row without
 * padding; a bias cancels in Bradley–Terry; fresh LoRA adapters change nothing), and a tiny training
 * run on a toy preference rule that must beat chance on held-out pairs.
 */
import "../src/index.js";
import { describe, expect, it } from "vitest";
import type { Value } from "../src/autodiff/core.js";
import { ArgumentError, DTypeError, ShapeError } from "../src/autodiff/errors.js";
import { grad, jit, np, optim, valueAndGrad, vmap } from "../src/index.js";
import type { Array as WArray } from "../src/ops/array.js";
import * as random from "../src/ops/random.js";
import * as palm from "../src/nn/palm.js";
import * as rm from "../src/rl/reward.js";
import type { PreferencePair, RewardModelConfig, RewardModelParams } from "../src/rl/reward.js";
import { data, expectClose, f64, i32, mean, negLogSigmoid, num } from "./rl-helpers.js";

const palmCfg = { numTokens: 12, dim: 16, depth: 2, heads: 2, dimHead: 8, dtype: "float64" } as const;
const cfg: RewardModelConfig = { palm: palmCfg };

// ---------------------------------------------------------------------------------------------------
// Losses and metrics

describe("Bradley–Terry loss", () => {
  it("matches -log σ(rc - rr) by hand", () => {
    const rc = [1, 0, -2, 3.5];
    const rr = [0, 0, 1, -1];
    const want = mean(rc.map((c, i) => negLogSigmoid(c - rr[i]!)));
    expectClose([num(rm.bradleyTerryLoss(f64(rc), f64(rr)))], [want], 1e-14);
    // Known values: -log σ(0) = log 2.
    expectClose([num(rm.bradleyTerryLoss(f64([0]), f64([0])))], [Math.LN2], 1e-15);
    expectClose(data(rm.bradleyTerryLoss(f64(rc), f64(rr), { reduction: "none" })), rc.map((c, i) => negLogSigmoid(c - rr[i]!)), 1e-14);
  });

  it("subtracts the margin (scalar or per pair)", () => {
    const rc = [1, 2];
    const rr = [0, 0];
    expectClose([num(rm.bradleyTerryLoss(f64(rc), f64(rr), { margin: 0.5 }))], [mean([negLogSigmoid(0.5), negLogSigmoid(1.5)])], 1e-14);
    expectClose([num(rm.bradleyTerryLoss(f64(rc), f64(rr), { margin: f64([1, -1]) }))], [mean([negLogSigmoid(0), negLogSigmoid(3)])], 1e-14);
  });

  it("does not overflow for large reward gaps (float32)", () => {
    const l = data(rm.bradleyTerryLoss(np.array([100, -100], { dtype: "float32" }), np.array([0, 0], { dtype: "float32" }), { reduction: "none" }));
    expect(l[0]).toBeGreaterThanOrEqual(0);
    expect(l[0]).toBeLessThan(1e-30);
    expect(l[1]).toBeCloseTo(100, 4);
  });

  it("has the gradient σ(d) - 1 in rc (finite differences, float64)", () => {
    const rc = [0.3, -1.2, 2];
    const rr = [0.1, 0.4, -0.5];
    const [gc, gr] = grad((a: Value, b: Value) => rm.bradleyTerryLoss(a, b, { margin: 0.2 }), { argnums: [0, 1] })(f64(rc), f64(rr)) as [Value, Value];
    const f = (c: number[]): number => mean(c.map((x, i) => negLogSigmoid(x - rr[i]! - 0.2)));
    const h = 1e-6;
    const fd = rc.map((_, i) => {
      const p = rc.slice();
      const m = rc.slice();
      p[i]! += h;
      m[i]! -= h;
      return (f(p) - f(m)) / (2 * h);
    });
    expectClose(data(gc), fd, 1e-8);
    expectClose(data(gr), fd.map((x) => -x), 1e-8);
  });

  it("jit and vmap agree with the eager batched loss", () => {
    const rc = f64([0.5, -0.3, 1.7, 0]);
    const rr = f64([0.1, 0.2, -1, 0.4]);
    const eager = num(rm.bradleyTerryLoss(rc, rr));
    expectClose([num(jit((a: Value, b: Value) => rm.bradleyTerryLoss(a, b))(rc, rr))], [eager], 1e-14);
    const per = vmap((a: Value, b: Value) => rm.bradleyTerryLoss(a, b))(rc, rr) as Value; // [4]
    expectClose([mean(data(per))], [eager], 1e-14);
  });

  it("rejects bad input with named errors", () => {
    expect(() => rm.bradleyTerryLoss(f64([1, 2]), f64([1]))).toThrow(ShapeError);
    expect(() => rm.bradleyTerryLoss(i32([1, 2]), i32([1, 2]))).toThrow(DTypeError);
    expect(() => rm.bradleyTerryLoss(f64([1, 2]), f64([1, 2]), { margin: f64([1, 2, 3]) })).toThrow(ShapeError);
    expect(() => rm.bradleyTerryLoss(f64([1]), f64([1]), { margin: f64([[1], [2]]) })).toThrow(ShapeError);
    expect(() => rm.bradleyTerryLoss(f64([1]), f64([1]), { reduction: "sum" as "mean" })).toThrow(ArgumentError);
  });
});

describe("rating losses and metrics", () => {
  it("ratingMseLoss is the mean squared error", () => {
    expectClose([num(rm.ratingMseLoss(f64([1, 2, 3]), f64([1.5, 0, 3])))], [(0.25 + 4 + 0) / 3], 1e-15);
    expect(() => rm.ratingMseLoss(f64([1, 2]), f64([1]))).toThrow(ShapeError);
    expect(() => rm.ratingMseLoss(i32([1, 2]), f64([1, 2]))).toThrow(DTypeError);
  });

  it("binnedRatingLoss is the cross-entropy, computed by hand", () => {
    const logits = [
      [0.2, -1, 3],
      [1, 1, 1],
      [-2, 0.5, 0],
    ];
    const bins = [2, 0, 1];
    const ce = logits.map((row, i) => Math.log(row.reduce((a, x) => a + Math.exp(x), 0)) - row[bins[i]!]!);
    expectClose([num(rm.binnedRatingLoss(f64(logits), i32(bins)))], [mean(ce)], 1e-14);
    expectClose([ce[1]!], [Math.log(3)], 1e-15); // uniform logits: log 3 (a check of the hand formula itself)
  });

  it("binnedRatingLoss rejects out-of-range and non-integer bins, and bad shapes", () => {
    expect(() => rm.binnedRatingLoss(f64([[0, 1]]), i32([2]))).toThrow(ArgumentError);
    expect(() => rm.binnedRatingLoss(f64([[0, 1]]), i32([-1]))).toThrow(ArgumentError);
    expect(() => rm.binnedRatingLoss(f64([[0, 1]]), f64([1]))).toThrow(DTypeError);
    expect(() => rm.binnedRatingLoss(f64([[0, 1]]), i32([1, 0]))).toThrow(ShapeError);
    expect(() => rm.binnedRatingLoss(f64(1 as unknown as number[]), i32([]))).toThrow(ShapeError);
  });

  it("pairwiseAccuracy counts strict wins; rewardStats are the mean and population std", () => {
    expect(num(rm.pairwiseAccuracy(f64([1, 2, 0, 5]), f64([0, 3, 0, -1])))).toBeCloseTo(0.5, 15);
    const r = [1, 2, 4, 7];
    const m = mean(r);
    const s = Math.sqrt(mean(r.map((x) => (x - m) ** 2)));
    const st = rm.rewardStats(f64(r));
    expectClose([num(st.mean), num(st.std)], [m, s], 1e-14);
    // A metric: no gradient flows through it.
    expect(num(grad((x: Value) => rm.rewardStats(x).std)(f64(r)) as Value)).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------------
// The model

describe("rewardModel.init / apply", () => {
  const params = rm.init(random.key(1), cfg);

  it("returns [b] rewards (scalar head), [b, bins] logits (binned head) and [] for one row", () => {
    const tokens = i32([
      [1, 2, 3, 4],
      [5, 6, 7, 8],
    ]);
    expect(rm.apply(params, tokens, { config: cfg, promptLengths: i32([1, 2]) }).aval.shape).toEqual([2]);
    const binCfg = { ...cfg, numBins: 5 };
    const pb = rm.init(random.key(1), binCfg);
    expect(rm.apply(pb, tokens, { config: binCfg, promptLengths: i32([1, 2]) }).aval.shape).toEqual([2, 5]);
    const one = rm.apply(params, i32([1, 2, 3, 4]), { config: cfg, promptLengths: np.array(1, { dtype: "int32" }) });
    expect(one.aval.shape).toEqual([]);
    const both = data(rm.apply(params, tokens, { config: cfg, promptLengths: i32([1, 2]) }));
    expectClose([num(one)], [both[0]!], 1e-12);
    // vmap over single rows equals the batched call.
    const v = vmap((t: Value, pl: Value) => rm.apply(params, t, { config: cfg, promptLengths: pl }))(tokens, i32([1, 2])) as Value;
    expectClose(data(v), both, 1e-12);
    // jit of apply equals eager.
    const j = jit((t: Value, pl: Value) => rm.apply(params, t, { config: cfg, promptLengths: pl }))(tokens, i32([1, 2])) as Value;
    expectClose(data(j), both, 1e-12);
  });

  it("the trunk starts as the given PaLM: a fresh reward LoRA scope (B = 0) changes nothing", () => {
    const base = palm.init(random.key(7), palmCfg);
    const withLora = rm.init(random.key(2), cfg, { fromPalm: base });
    expect(withLora.palm).toBe(base);
    const full = { ...withLora, lora: null };
    const fullCfg = { ...cfg, loraScope: null };
    const tokens = i32([[3, 1, 4, 1, 5]]);
    const a = data(rm.apply(withLora, tokens, { config: cfg, promptLengths: i32([2]) }));
    const b = data(rm.apply(full, tokens, { config: fullCfg, promptLengths: i32([2]) }));
    expectClose(a, b, 1e-13);
    expect(() => rm.init(random.key(2), cfg, { fromPalm: palm.init(random.key(7), { ...palmCfg, dim: 32, heads: 4 }) })).toThrow(ShapeError);
  });

  for (const causal of [true, false]) {
    for (const pooling of ["mean", "last"] as const) {
      it(`ignores padding (${causal ? "causal" : "non-causal"}, ${pooling} pooling): a padded row scores like the unpadded row`, () => {
        const c: RewardModelConfig = { palm: { ...palmCfg, causal }, pooling };
        const p = rm.init(random.key(3), c);
        const row = [4, 2, 9, 5, 5];
        const alone = num(rm.apply(p, i32([row]), { config: c, promptLengths: i32([2]) }));
        const padded = (fill: number) => i32([[...row, fill, fill, fill]]);
        const mask = [[1, 1, 1, 1, 1, 0, 0, 0]];
        const r1 = num(rm.apply(p, padded(0), { config: c, promptLengths: i32([2]), mask }));
        const r2 = num(rm.apply(p, padded(7), { config: c, promptLengths: i32([2]), mask }));
        expectClose([r1, r2], [alone, alone], 1e-12);
        // Left padding works too, through the key padding mask (positions shift, so compare two fillings only).
        const leftMask = [[0, 0, 1, 1, 1, 1, 1]];
        const l1 = num(rm.apply(p, i32([[0, 0, ...row]]), { config: c, promptLengths: i32([4]), mask: leftMask }));
        const l2 = num(rm.apply(p, i32([[11, 3, ...row]]), { config: c, promptLengths: i32([4]), mask: leftMask }));
        expectClose([l1], [l2], 1e-12);
        // The test can fail: without the mask, the padding's contents do change the reward.
        const u1 = num(rm.apply(p, padded(0), { config: c, promptLengths: i32([2]) }));
        const u2 = num(rm.apply(p, padded(7), { config: c, promptLengths: i32([2]) }));
        expect(Math.abs(u1 - u2)).toBeGreaterThan(1e-9);
      });
    }
  }

  it("non-causal trunk: negative ids are padding for the pooling too, like a mask", () => {
    for (const pooling of ["mean", "last"] as const) {
      const c: RewardModelConfig = { palm: { ...palmCfg, causal: false }, pooling };
      const p = rm.init(random.key(8), c);
      const neg = num(rm.apply(p, i32([[4, 2, 9, -1, -1]]), { config: c, promptLengths: i32([2]) }));
      const alone = num(rm.apply(p, i32([[4, 2, 9]]), { config: c, promptLengths: i32([2]) }));
      expectClose([neg], [alone], 1e-12);
    }
  });

  it("last-token pooling reads the last valid position: on a causal model, the prefix's reward", () => {
    const c: RewardModelConfig = { palm: palmCfg, pooling: "last" };
    const p = rm.init(random.key(4), c);
    const row = [1, 2, 3, 4, 5, 6];
    // Causal attention: the hidden state at position 3 depends on tokens 0..3 only.
    const prefix = num(rm.apply(p, i32([row.slice(0, 4)]), { config: c, promptLengths: i32([2]) }));
    const masked = num(rm.apply(p, i32([row]), { config: c, promptLengths: i32([2]), mask: [[1, 1, 1, 1, 0, 0]] }));
    expectClose([masked], [prefix], 1e-12);
  });

  it("segment embeddings make the prompt/response split matter; promptMask ≡ promptLengths", () => {
    const tokens = i32([
      [1, 2, 3, 4, 5],
      [1, 2, 3, 4, 5],
    ]);
    const r = data(rm.apply(params, tokens, { config: cfg, promptLengths: i32([1, 3]) }));
    expect(Math.abs(r[0]! - r[1]!)).toBeGreaterThan(1e-6);
    const pm = [
      [true, false, false, false, false],
      [true, true, true, false, false],
    ];
    expectClose(data(rm.apply(params, tokens, { config: cfg, promptMask: pm })), r, 1e-13);
    // With both segment rows equal the split is invisible again (the test above can fail).
    const row0 = np.split(params.segmentEmb, 2, 0)[0]!; // [1, dim]
    const same: RewardModelParams = { ...params, segmentEmb: np.concatenate([row0, row0], 0) }; // [2, dim]
    const r2 = data(rm.apply(same, tokens, { config: cfg, promptLengths: i32([1, 3]) }));
    expectClose([r2[0]!], [r2[1]!], 1e-12);
  });

  it("rejects bad input with named errors", () => {
    const t = i32([[1, 2, 3]]);
    expect(() => rm.apply(params, t, { config: cfg })).toThrow(/exactly one of promptMask/);
    expect(() => rm.apply(params, t, { config: cfg, promptLengths: i32([1]), promptMask: [[true, false, false]] })).toThrow(ArgumentError);
    expect(() => rm.apply(params, f64([[1, 2, 3]]), { config: cfg, promptLengths: i32([1]) })).toThrow(DTypeError);
    expect(() => rm.apply(params, i32([[1, 2, 12]]), { config: cfg, promptLengths: i32([1]) })).toThrow(/tokens must lie in \[0, 11\]/);
    expect(() => rm.apply(params, t, { config: cfg, promptLengths: i32([1, 2]) })).toThrow(ShapeError);
    expect(() => rm.apply(params, t, { config: cfg, promptLengths: i32([4]) })).toThrow(ArgumentError);
    expect(() => rm.apply(params, t, { config: cfg, promptLengths: f64([1]) })).toThrow(DTypeError);
    expect(() => rm.apply(params, t, { config: cfg, promptLengths: i32([1]), mask: [[1, 1]] })).toThrow(ShapeError);
    expect(() => rm.apply(params, i32([[[1]]] as unknown as number[][]), { config: cfg, promptLengths: i32([1]) })).toThrow(ShapeError);
    expect(() => rm.apply(params, t, { config: { ...cfg, numBins: 3 }, promptLengths: i32([1]) })).toThrow(ShapeError); // head is [dim, 1]
    expect(() => rm.apply(params, t, { config: { ...cfg, loraScope: "critic" }, promptLengths: i32([1]) })).toThrow(/loraScope/);
    for (const numBins of [0, -1, 2.5]) expect(() => rm.init(random.key(0), { ...cfg, numBins })).toThrow(ArgumentError);
    expect(() => rm.init(random.key(0), { ...cfg, pooling: "max" as "mean" })).toThrow(ArgumentError);
    expect(() => rm.init(random.key(0), { ...cfg, loraR: 0 })).toThrow(ArgumentError);
    expect(() => rm.apply(params, t, undefined as unknown as rm.RewardApplyOptions)).toThrow(ArgumentError);
  });
});

// ---------------------------------------------------------------------------------------------------
// Batching and the step loss

describe("preferenceBatch", () => {
  const pairs: PreferencePair[] = [
    { prompt: [1, 2], chosen: [3, 4, 5], rejected: [6] },
    { prompt: [7], chosen: [8], rejected: [9, 10] },
  ];

  it("pads chosen rows, then rejected rows, with lengths and a mask", () => {
    const b = rm.preferenceBatch(pairs, { padId: 0 });
    expect(b.numPairs).toBe(2);
    expect((b.tokens as WArray).toArraySync()).toEqual([
      [1, 2, 3, 4, 5],
      [7, 8, 0, 0, 0],
      [1, 2, 6, 0, 0],
      [7, 9, 10, 0, 0],
    ]);
    expect(data(b.promptLengths)).toEqual([2, 1, 2, 1]);
    expect(data(b.totalLengths)).toEqual([5, 2, 3, 3]);
    expect((b.mask as WArray).toArraySync()).toEqual([
      [true, true, true, true, true],
      [true, true, false, false, false],
      [true, true, true, false, false],
      [true, true, true, false, false],
    ]);
    expect(b.margin).toBeUndefined();
    expect(rm.preferenceBatch(pairs, { padTo: 8 }).tokens.aval.shape).toEqual([4, 8]);
  });

  it("truncates responses to maxLen, carries margins, and rejects bad pairs", () => {
    const b = rm.preferenceBatch([{ ...pairs[0]!, margin: 2 }, pairs[1]!], { maxLen: 3 });
    expect((b.tokens as WArray).toArraySync()).toEqual([
      [1, 2, 3],
      [7, 8, 0],
      [1, 2, 6],
      [7, 9, 10],
    ]);
    expect(data(b.margin)).toEqual([2, 0]);
    expect(() => rm.preferenceBatch(pairs, { maxLen: 2 })).toThrow(/no room for a response/);
    expect(() => rm.preferenceBatch([])).toThrow(ArgumentError);
    expect(() => rm.preferenceBatch([{ prompt: [1], chosen: [1.5], rejected: [2] }])).toThrow(ArgumentError);
    expect(() => rm.preferenceBatch(pairs, { padTo: 3 })).toThrow(ArgumentError);
    expect(() => rm.splitPairs(f64([1, 2, 3]))).toThrow(ShapeError);
  });
});

describe("rewardModelLoss", () => {
  const params = rm.init(random.key(5), cfg);
  const batch = rm.preferenceBatch([
    { prompt: [1, 2], chosen: [3, 4, 5], rejected: [6] },
    { prompt: [7], chosen: [8], rejected: [9, 10] },
  ]);
  const [tr, fr] = optim.partition(params, rm.trainableMask(params, cfg));

  it("is Bradley–Terry on the rewards of the chosen and rejected rows", () => {
    const r = data(rm.apply(params, batch.tokens, { config: cfg, promptLengths: batch.promptLengths, mask: batch.mask }));
    const [loss, aux] = rm.rewardModelLoss(tr, fr, batch, cfg);
    expectClose([num(loss)], [mean([negLogSigmoid(r[0]! - r[2]!), negLogSigmoid(r[1]! - r[3]!)])], 1e-13);
    expect(num(aux.accuracy)).toBe([r[0]! > r[2]!, r[1]! > r[3]!].filter(Boolean).length / 2);
    expectClose([num(aux.rewardMean)], [mean(r)], 1e-13);
  });

  it("differentiates only the trainable leaves; the head bias cancels; gradients match finite differences", () => {
    const [, g] = valueAndGrad(rm.rewardModelLoss, { hasAux: true })(tr, fr, batch, cfg) as [unknown, RewardModelParams];
    expect(g.palm.tokenEmb).toBeNull();
    const gB = g.lora!["reward"]![0]!.q.B; // [r, heads·dimHead]
    expect(gB.aval.shape).toEqual([8, 16]);
    expect(Math.max(...data(gB).map(Math.abs))).toBeGreaterThan(1e-8); // B = 0 at init, but its gradient is not
    // r_c - r_r does not depend on a shared bias, so its gradient is exactly 0.
    expect(Math.abs(num(g.head.b))).toBeLessThan(1e-15);
    // Finite differences on a few segment-embedding entries (float64).
    const f = (seg: Value): number => num(rm.rewardModelLoss({ ...tr, segmentEmb: seg }, fr, batch, cfg)[0]);
    const seg = data(params.segmentEmb);
    const gs = data(g.segmentEmb);
    const h = 1e-6;
    for (const i of [0, 5, 16, 27]) {
      const p = seg.slice();
      const m = seg.slice();
      p[i]! += h;
      m[i]! -= h;
      const fd = (f(np.array(p, { dtype: "float64", shape: [2, 16] })) - f(np.array(m, { dtype: "float64", shape: [2, 16] }))) / (2 * h);
      expect(Math.abs(gs[i]! - fd)).toBeLessThan(1e-7 + 1e-5 * Math.abs(fd));
    }
    // Full fine-tuning trains the trunk.
    const fullCfg = { ...cfg, loraScope: null };
    const full = rm.init(random.key(5), fullCfg);
    expect(full.lora).toBeNull();
    const [ft, ff] = optim.partition(full, rm.trainableMask(full, fullCfg));
    const [, gf] = valueAndGrad(rm.rewardModelLoss, { hasAux: true })(ft, ff, batch, fullCfg) as [unknown, RewardModelParams];
    expect(gf.palm.tokenEmb.aval.shape).toEqual([12, 16]);
  });

  it("trains binned heads with cross-entropy and scalar heads with MSE on ratings", () => {
    const binCfg = { ...cfg, numBins: 4 };
    const pb = rm.init(random.key(6), binCfg);
    const tokens = i32([
      [1, 2, 3, 0],
      [4, 5, 6, 7],
      [8, 9, 1, 2],
    ]);
    const mask = [
      [1, 1, 1, 0],
      [1, 1, 1, 1],
      [1, 1, 1, 1],
    ];
    const bins = [3, 0, 2];
    const logits = (rm.apply(pb, tokens, { config: binCfg, promptLengths: i32([1, 2, 1]), mask }) as WArray).toArraySync() as number[][];
    const ce = logits.map((row, i) => Math.log(row.reduce((a, x) => a + Math.exp(x), 0)) - row[bins[i]!]!);
    const [pt, pf] = optim.partition(pb, rm.trainableMask(pb, binCfg));
    const [loss, aux] = rm.rewardModelLoss(pt, pf, { tokens, promptLengths: i32([1, 2, 1]), mask: np.array(mask), ratings: i32(bins) }, binCfg);
    expectClose([num(loss)], [mean(ce)], 1e-13);
    const argmax = logits.map((row) => row.indexOf(Math.max(...row)));
    expect(num(aux.accuracy)).toBeCloseTo(argmax.filter((a, i) => a === bins[i]).length / 3, 15);
    // Expected-bin score.
    const sc = data(rm.score(pb, tokens, { config: binCfg, promptLengths: i32([1, 2, 1]), mask }));
    const want = logits.map((row) => {
      const z = row.reduce((a, x) => a + Math.exp(x), 0);
      return row.reduce((a, x, k) => a + (k * Math.exp(x)) / z, 0);
    });
    expectClose(sc, want, 1e-13);
    expect(() => rm.rewardModelLoss(pt, pf, batch, binCfg)).toThrow(/scalar head/);

    const ratings = [0.5, -1, 2];
    const r = data(rm.apply(params, tokens, { config: cfg, promptLengths: i32([1, 2, 1]), mask }));
    const [mse] = rm.rewardModelLoss(tr, fr, { tokens, promptLengths: i32([1, 2, 1]), mask: np.array(mask), ratings: f64(ratings) }, cfg);
    expectClose([num(mse)], [mean(r.map((x, i) => (x - ratings[i]!) ** 2))], 1e-13);
  });

  it("jit of the step loss equals eager", () => {
    const eager = num(rm.rewardModelLoss(tr, fr, batch, cfg)[0]);
    const j = jit((t: RewardModelParams, tokens: Value, pl: Value, tl: Value, mask: Value) =>
      rm.rewardModelLoss(t, fr, { tokens, promptLengths: pl, totalLengths: tl, mask, numPairs: 2 }, cfg)[0],
    );
    expectClose([num(j(tr, batch.tokens, batch.promptLengths, batch.totalLengths, batch.mask))], [eager], 1e-12);
  });
});

// ---------------------------------------------------------------------------------------------------
// Training on a toy preference rule

describe("reward-model training", () => {
  it("learns 'more 5s is better' from pairs: held-out accuracy well above chance", () => {
    const c: RewardModelConfig = { palm: { numTokens: 8, dim: 16, depth: 1, heads: 2, dimHead: 8 } };
    let s = 12345;
    const rnd = (): number => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const fives = (r: number[]): number => r.filter((t) => t === 5).length;
    const pair = (): PreferencePair => {
      for (;;) {
        const prompt = [1 + Math.floor(rnd() * 7), 1 + Math.floor(rnd() * 7)];
        const resp = (): number[] => globalThis.Array.from({ length: 3 + Math.floor(rnd() * 3) }, () => (rnd() < 0.3 ? 5 : 1 + Math.floor(rnd() * 7)));
        const a = resp();
        const b = resp();
        if (fives(a) === fives(b)) continue;
        return fives(a) > fives(b) ? { prompt, chosen: a, rejected: b } : { prompt, chosen: b, rejected: a };
      }
    };
    const train = globalThis.Array.from({ length: 256 }, pair);
    const test = rm.preferenceBatch(globalThis.Array.from({ length: 128 }, pair), { padTo: 7 });
    const params = rm.init(random.key(0), c);
    const [tr0, fr] = optim.partition(params, rm.trainableMask(params, c));
    const opt = optim.adam(3e-2);
    const accuracy = (tr: RewardModelParams): number => {
      const r = rm.apply(optim.combine(tr, fr), test.tokens, { config: c, promptLengths: test.promptLengths, mask: test.mask });
      const [rc, rr] = rm.splitPairs(r);
      return num(rm.pairwiseAccuracy(rc, rr));
    };
    const before = accuracy(tr0);
    const step = jit((tr: RewardModelParams, st: unknown, tokens: Value, pl: Value, tl: Value, mask: Value) => {
      const batch = { tokens, promptLengths: pl, totalLengths: tl, mask, numPairs: 32 };
      const [[loss], g] = valueAndGrad(rm.rewardModelLoss, { hasAux: true })(tr, fr, batch, c);
      const [u, st2] = opt.update(g, st, tr);
      return [optim.applyUpdates(tr, u), st2, loss];
    });
    let tr = tr0;
    let st = opt.init(tr);
    for (let i = 0; i < 40; i++) {
      const b = rm.preferenceBatch(train.slice((i * 32) % 256, ((i * 32) % 256) + 32), { padTo: 7 });
      [tr, st] = step(tr, st, b.tokens, b.promptLengths, b.totalLengths, b.mask) as [RewardModelParams, unknown, Value];
    }
    const after = accuracy(tr);
    expect(before).toBeLessThan(0.75); // a fresh model is near chance
    expect(after).toBeGreaterThanOrEqual(0.85);
  });
});

/**
 * @file Tests of GRPO (src/rl/grpo.ts): group-relative advantages and the loss against hand values
 * (sample std, per-sequence averaging, the k3 KL in the loss), the loss's gradient against its
 * closed form on-policy, named errors, and a toy task whose true reward must rise.
 */
import "../src/index.js";
import { describe, expect, it } from "vitest";
import { ArgumentError, grad, np, ShapeError } from "../src/index.js";
import type { Value } from "../src/index.js";
import type { Array as WArray } from "../src/ops/array.js";
import * as random from "../src/ops/random.js";
import * as palm from "../src/nn/palm.js";
import type { PalmConfig } from "../src/nn/palm.js";
import { collectGroupRollouts, groupRelativeAdvantages, grpoLossFromOutputs, grpoUpdate, initGrpo, resolveGrpoConfig } from "../src/rl/grpo.js";
import { trainableMask } from "../src/rl/rollout.js";

const data = (v: unknown): number[] => globalThis.Array.from((v as WArray).dataSync(), Number);
const f64 = (x: unknown): Value => np.array(x as number[], { dtype: "float64" });
const close = (got: number[], want: number[], tol = 1e-12): void => {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => expect(Math.abs(g - want[i]!), `entry ${i}: ${g} vs ${want[i]}`).toBeLessThanOrEqual(tol * (1 + Math.abs(want[i]!))));
};

describe("groupRelativeAdvantages", () => {
  it("standardises within each group (sample std + eps); a constant group gets 0", () => {
    // Group [1, 2, 3, 4]: mean 2.5, sample std √(5/3).
    const sd = Math.sqrt(5 / 3) + 1e-4;
    close(data(groupRelativeAdvantages(f64([1, 2, 3, 4, 5, 5, 5, 5]), 4)), [-1.5 / sd, -0.5 / sd, 0.5 / sd, 1.5 / sd, 0, 0, 0, 0]);
    close(data(groupRelativeAdvantages(f64([1, 3, 0, 4]), 2, { scaleRewards: false })), [-1, 1, -2, 2]);
  });

  it("named errors for a group of one and a batch that is not whole groups", () => {
    expect(() => groupRelativeAdvantages(f64([1, 2]), 1)).toThrow(ArgumentError);
    expect(() => groupRelativeAdvantages(f64([1, 2, 3]), 2)).toThrow(ShapeError);
    expect(() => resolveGrpoConfig({ lossAggregation: "row" as "token" })).toThrow(ArgumentError);
    expect(() => resolveGrpoConfig({ groupSize: 1 })).toThrow(ArgumentError);
  });
});

describe("grpoLossFromOutputs", () => {
  // Two sequences: 2 response tokens and 1 response token (plus a masked position).
  const mask = np.array([[true, true], [false, true]], { dtype: "bool" });
  const lp = f64([[Math.log(0.5), Math.log(0.25)], [Math.log(0.9), Math.log(0.5)]]);
  const cfg = { clipEps: 0.2, klCoef: 0.1, entropyCoef: 0, lossAggregation: "sequence" as const };

  it("on-policy with the reference equal to the policy: loss = −mean(A), gradient −A/|o_i|/G per token", () => {
    const batch = { tokens: np.zeros([2, 3], { dtype: "int32" }), actionMask: mask, oldLogProbs: lp, refLogProbs: lp, advantages: f64([2, -1]) };
    const out = { logProbs: lp, entropy: f64([[0, 0], [0, 0]]) };
    const r = grpoLossFromOutputs(out, batch, cfg);
    close(data(r.loss), [-(2 + -1) / 2]);
    close(data(r.stats.kl), [0]);
    const g = grad((x: Value) => grpoLossFromOutputs({ logProbs: x, entropy: out.entropy }, batch, cfg).loss)(lp);
    // d/dlogp of −A·ρ at ρ = 1 is −A; the k3 term's gradient (1 − π_ref/π) is 0 at π = π_ref.
    close(data(g), [-2 / 2 / 2, -2 / 2 / 2, 0, 1 / 1 / 2]);
  });

  it("adds β·k3 to the reference and averages per sequence, or per token", () => {
    const ref = f64([[Math.log(0.25), Math.log(0.25)], [Math.log(0.1), Math.log(0.25)]]);
    const batch = { tokens: np.zeros([2, 3], { dtype: "int32" }), actionMask: mask, oldLogProbs: lp, refLogProbs: ref, advantages: f64([0, 0]) };
    const out = { logProbs: lp, entropy: f64([[0, 0], [0, 0]]) };
    const k3 = (p: number, q: number): number => q / p - 1 - Math.log(q / p); // π_ref/π − 1 − log(π_ref/π)
    const k = [k3(0.5, 0.25), 0, k3(0.5, 0.25)]; // the masked position is left out
    close(data(grpoLossFromOutputs(out, batch, cfg).loss), [0.1 * ((k[0]! + k[1]!) / 2 + k[2]!) / 2]);
    close(data(grpoLossFromOutputs(out, batch, { ...cfg, lossAggregation: "token" }).loss), [(0.1 * (k[0]! + k[1]! + k[2]!)) / 3]);
  });
});

const f32: PalmConfig = { numTokens: 12, dim: 16, depth: 1, heads: 2, dimHead: 8, ffMult: 2 };

describe("grpoUpdate", () => {
  it("raises the true reward of a toy task with no critic (fixed seed, CPU)", async () => {
    const p = palm.init(random.key(0), f32);
    const sft = { ...p, tokenEmb: np.multiply(p.tokenEmb, 8) };
    const cfg = { learningRate: 1e-2, epochs: 2, minibatchSize: 16, klCoef: 0.01, groupSize: 4 };
    let state = initGrpo(random.key(1), sft, f32, cfg);
    expect(state.policy.valueHead).toBeNull();
    expect(trainableMask(state.policy)).toMatchObject({ params: false, lora: { actor: true } });
    const prompts = Array.from({ length: 8 }, (_, i) => (i % 2 ? [1, 3 + (i % 5)] : [1, 2, 3 + (i % 4)]));
    const scoreFn = (_t: unknown, _p: unknown, _l: unknown, info: { completions: number[][] }) => info.completions.map((c) => c.filter((x) => x === 7).length / c.length);
    const scores: number[] = [];
    for (let it = 0; it < 12; it++) {
      const ro = await collectGroupRollouts(random.key(100 + it), { policy: state.policy, reference: state.reference, prompts, groupSize: 4, maxNewTokens: 6, scoreFn });
      expect(ro.tokens.aval.shape[0]).toBe(32);
      const r = await grpoUpdate(state, ro, cfg, random.key(200 + it));
      state = r.state;
      scores.push(r.stats.meanScore);
      for (const k of ["policyLoss", "kl", "entropy", "approxKl", "clipFrac", "gradNorm"]) expect(Number.isFinite(r.stats[k]), k).toBe(true);
      expect(r.stats.steps).toBe(4);
    }
    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(scores.slice(-3))).toBeGreaterThan(mean(scores.slice(0, 3)) + 0.2);
    expect(state.reference).toBe(sft);
  }, 60_000);

  it("rejects a rollout that is not whole groups", async () => {
    const sft = palm.init(random.key(0), f32);
    const state = initGrpo(random.key(1), sft, f32, { groupSize: 2 });
    const ro = await collectGroupRollouts(random.key(2), { policy: state.policy, reference: sft, prompts: [[1], [1, 2]], groupSize: 3, maxNewTokens: 2, scoreFn: () => [0, 1, 0, 1, 0, 1] });
    await expect(grpoUpdate(state, ro, { groupSize: 4 }, random.key(0))).rejects.toThrow(ShapeError);
  });
});

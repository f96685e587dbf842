/**
 * @file Tests of PPO (src/rl/kl.ts, advantages.ts, rollout.ts, ppo.ts). Expected values come from
 * outside the code under test: estimators, controller steps, rewards, GAE and the loss worked out by
 * hand; rollout log-probs recomputed row by row with `palm.apply` on each row's own tokens; and a
 * toy task whose true reward (the share of one token in the response) must rise under PPO.
 */
import "../src/index.js";
import { describe, expect, it } from "vitest";
import { ArgumentError, np, ShapeError, tree } from "../src/index.js";
import type { Value } from "../src/index.js";
import type { Array as WArray } from "../src/ops/array.js";
import * as random from "../src/ops/random.js";
import * as palm from "../src/nn/palm.js";
import type { PalmConfig, PalmParams } from "../src/nn/palm.js";
import { AdaptiveKlController, FixedKlController, klEstimate } from "../src/rl/kl.js";
import { gae } from "../src/rl/advantages.js";
import { collectRollouts, policyOutputs, splitPolicy, trainableMask } from "../src/rl/rollout.js";
import type { PolicyModel, Rollout } from "../src/rl/rollout.js";
import { initPolicy, initPpo, ppoLossFromOutputs, ppoUpdate, processScores, resolvePpoConfig, tokenRewards } from "../src/rl/ppo.js";
import type { PpoConfig } from "../src/rl/ppo.js";

const data = (v: unknown): number[] => globalThis.Array.from((v as WArray).dataSync(), Number);
const f64 = (x: unknown): Value => np.array(x as number[], { dtype: "float64" });
const close = (got: number[], want: number[], tol = 1e-12): void => {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => expect(Math.abs(g - want[i]!), `entry ${i}: ${g} vs ${want[i]}`).toBeLessThanOrEqual(tol * (1 + Math.abs(want[i]!))));
};

describe("klEstimate", () => {
  it("k1, k2, k3 by hand", () => {
    // logp − ref = [0.5, −1]: k1 = logp − ref, k2 = ½(logp − ref)², k3 = e^(ref−logp) − 1 − (ref − logp).
    const lp = f64([-1, -2]);
    const rp = f64([-1.5, -1]);
    close(data(klEstimate(lp, rp, "k1")), [0.5, -1]);
    close(data(klEstimate(lp, rp, "k2")), [0.125, 0.5]);
    close(data(klEstimate(lp, rp, "k3")), [Math.exp(-0.5) - 1 + 0.5, Math.exp(1) - 1 - 1]);
  });

  it("named errors for a bad kind, shapes or dtypes", () => {
    expect(() => klEstimate(f64([1]), f64([1]), "k4" as "k1")).toThrow(ArgumentError);
    expect(() => klEstimate(f64([1, 2]), f64([1]), "k1")).toThrow(ShapeError);
    expect(() => klEstimate(np.array([1], { dtype: "int32" }), f64([1]), "k1")).toThrow(/float/);
  });
});

describe("AdaptiveKlController", () => {
  it("moves β by the clipped proportional error (Ziegler et al.)", () => {
    const c = new AdaptiveKlController({ init: 0.2, target: 6, horizon: 10000 });
    c.update(9, 100); // error 9/6 − 1 = 0.5, clipped to 0.2: β·(1 + 0.2·100/10000)
    expect(c.value).toBeCloseTo(0.2 * 1.002, 15);
    c.update(6, 5000); // on target: unchanged
    expect(c.value).toBeCloseTo(0.2 * 1.002, 15);
    c.update(5.4, 1000); // error −0.1: β·(1 − 0.01)
    expect(c.value).toBeCloseTo(0.2 * 1.002 * 0.99, 15);
    c.update(0, 10000); // error −1 clipped to −0.2: β·0.8
    expect(c.value).toBeCloseTo(0.2 * 1.002 * 0.99 * 0.8, 15);
  });

  it("checks its options; the fixed controller never moves", () => {
    expect(() => new AdaptiveKlController({ init: 0.1, target: 0, horizon: 10 })).toThrow(ArgumentError);
    expect(() => new AdaptiveKlController({ init: -1, target: 1, horizon: 10 })).toThrow(ArgumentError);
    expect(() => new AdaptiveKlController({ init: 0.1, target: 1, horizon: 10 }).update(NaN, 1)).toThrow(ArgumentError);
    const f = new FixedKlController(0.3);
    f.update(100, 100);
    expect(f.value).toBe(0.3);
  });
});

describe("tokenRewards / processScores / gae", () => {
  it("pays −β·KL per response token and the score at the last response token", () => {
    const mask = np.array([[false, true, true, false], [false, false, true, true]], { dtype: "bool" });
    const { rewards, kl } = tokenRewards(f64([2, 1]), f64([[-1, -1, -2, -3], [-2, -2, -1, -1]]), f64([[-1, -1.5, -1, -3], [-1, -1, -1, -0.5]]), mask, { klCoef: 0.5 });
    // k1 = logp − ref, masked: [0, 0.5, −1, 0] and [0, 0, 0, −0.5].
    close(data(kl), [0, 0.5, -1, 0, 0, 0, 0, -0.5]);
    close(data(rewards), [0, -0.25, 0.5 + 2, 0, 0, 0, 0, 0.25 + 1]);
    expect(() => tokenRewards(f64([1]), f64([[0, 0]]), f64([[0, 0]]), mask, { klCoef: 0.1 })).toThrow(ShapeError);
    expect(() => tokenRewards(f64([1]), f64([[0]]), f64([[0]]), np.ones([1, 1], { dtype: "bool" }), { klCoef: -1 })).toThrow(ArgumentError);
  });

  it("normalises (sample std) and clips scores", () => {
    // [1, 2, 3]: mean 2, sample std 1.
    close(data(processScores(f64([1, 2, 3]), { normalizeRewards: true, rewardClip: null })), [-1, 0, 1], 1e-7);
    close(data(processScores(f64([-5, 0.5, 20]), { normalizeRewards: false, rewardClip: 2 })), [-2, 0.5, 2]);
  });

  it("gae by hand (γ 0.9, λ 0.5), with a prompt position and padding", () => {
    const { advantages, returns } = gae(f64([[1, 0, 2, 5], [0, 1, 1, 0]]), f64([[0.5, 0.5, 0.5, 9], [1, 1, 1, 1]]), f64([[1, 1, 1, 0], [0, 1, 1, 1]]), { gamma: 0.9, lambda: 0.5 });
    // Row 0: A2 = 2 − 0.5 = 1.5; A1 = (0 + 0.45 − 0.5) + 0.45·1.5 = 0.625; A0 = (1 + 0.45 − 0.5) + 0.45·0.625 = 1.23125.
    // Row 1: A3 = 0 − 1 = −1; A2 = (1 + 0.9 − 1) + 0.45·(−1) = 0.45; A1 = (1 + 0.9 − 1) + 0.45·0.45 = 1.1025.
    close(data(advantages), [1.23125, 0.625, 1.5, 0, 0, 1.1025, 0.45, -1]);
    close(data(returns), [1.73125, 1.125, 2, 0, 0, 2.1025, 1.45, 0]);
    expect(() => gae(f64([[1]]), f64([[1]]), f64([[1]]), { gamma: 1.5, lambda: 0.9 })).toThrow(ArgumentError);
    expect(() => gae(f64([[1, 2]]), f64([[1]]), f64([[1, 1]]), { gamma: 1, lambda: 0.9 })).toThrow(ShapeError);
  });
});

describe("ppoLossFromOutputs", () => {
  it("matches a hand computation (clipped ratio, clipped values, entropy bonus, stats)", () => {
    const out = { logProbs: f64([[Math.log(0.5), Math.log(0.5)]]), entropy: f64([[1, 2]]), values: f64([[1, 0]]) };
    const batch = {
      tokens: np.zeros([1, 3], { dtype: "int32" }),
      actionMask: np.ones([1, 2], { dtype: "bool" }),
      oldLogProbs: f64([[Math.log(0.25), Math.log(0.5)]]), // ratios 2 and 1
      oldValues: f64([[0, 0]]),
      advantages: f64([[1, -1]]),
      returns: f64([[2, 0]]),
    };
    const r = ppoLossFromOutputs(out, batch, { clipEps: 0.2, valueClip: 0.5, vfCoef: 0.5, entropyCoef: 0.01 });
    // Policy: max(−2, −1.2) = −1.2 and max(1, 1) = 1 → mean −0.1. Values: max((1−2)², (0.5−2)²) = 2.25
    // and 0 → ½·mean = 0.5625. Entropy mean 1.5. Loss −0.1 + 0.5·0.5625 − 0.01·1.5.
    close(data(r.stats.policyLoss), [-0.1]);
    close(data(r.stats.valueLoss), [0.5625]);
    close(data(r.stats.entropy), [1.5]);
    close(data(r.loss), [-0.1 + 0.28125 - 0.015]);
    close(data(r.stats.approxKl), [(1 - Math.log(2)) / 2]);
    close(data(r.stats.clipFrac), [0.5]);
  });
});

// ---------------------------------------------------------------------------------------------------
// Models

const tiny: PalmConfig = { numTokens: 12, dim: 16, depth: 1, heads: 2, dimHead: 8, ffMult: 2, dtype: "float64" };

/** A random model with every weight random (so no symmetry hides a bug). */
function randomParams(config: PalmConfig, seed: number): PalmParams {
  const p = palm.init(random.key(seed), config);
  let i = 0;
  return tree.map((x: Value) => {
    const noise = random.normal(random.key(1000 + seed * 100 + i++), x.aval.shape, { dtype: x.aval.dtype });
    return x.aval.ndim === 1 ? np.add(1, np.multiply(0.3, noise)) : np.multiply(0.5, noise);
  }, p) as PalmParams;
}

/** A policy whose LoRA adapters are non-zero (so actor, critic and reference all differ). */
function randomPolicy(sft: PalmParams, opts: Parameters<typeof initPolicy>[3] = {}): PolicyModel {
  const p = initPolicy(random.key(5), sft, tiny, opts);
  let i = 0;
  const noisy = (x: Value): Value => np.multiply(0.3, random.normal(random.key(500 + i++), x.aval.shape, { dtype: x.aval.dtype }));
  return { ...p, lora: p.lora === null ? null : (tree.map(noisy, p.lora) as typeof p.lora), valueHead: p.valueHead && { w: noisy(p.valueHead.w), b: f64(0.3) } };
}

const tokenScore = (target: number) => (_t: unknown, _p: unknown, _l: unknown, info: { completions: number[][] }) =>
  info.completions.map((c) => c.filter((x) => x === target).length / c.length);

describe("collectRollouts", () => {
  it("aligns each row's log-probs, reference log-probs and values with its own tokens (prompts of different lengths, eos)", async () => {
    const sft = randomParams(tiny, 1);
    const policy = randomPolicy(sft);
    const prompts = [[1], [1, 5, 6], [1, 7]];
    const ro = await collectRollouts(random.key(3), { policy, reference: sft, prompts, maxNewTokens: 5, eosToken: 2, scoreFn: tokenScore(4) });
    const n = 3 + 5;
    expect(ro.tokens.aval.shape).toEqual([3, n]);
    const pl = data(ro.promptLengths);
    const tl = data(ro.totalLengths);
    expect(pl).toEqual([1, 3, 2]);
    expect(tl).toEqual(ro.completions.map((c, i) => pl[i]! + c.length));
    const tok = data(ro.tokens);
    const mask = data(ro.actionMask);
    const lp = data(ro.logProbs);
    const rlp = data(ro.refLogProbs);
    const vals = data(ro.values);
    const { spec } = splitPolicy(policy);
    for (let i = 0; i < 3; i++) {
      const own = np.array(tok.slice(i * n, i * n + tl[i]!), { dtype: "int32", shape: [1, tl[i]!] }); // just this row, no padding
      const logits = data(palm.apply(policy.params, own, { config: tiny, lora: policy.lora, loraScope: "actor" }));
      const refLogits = data(palm.apply(sft, own, { config: tiny }));
      const emb = data(palm.embed(policy.params, own, { config: tiny, lora: policy.lora, loraScope: "critic" }));
      const w = data(policy.valueHead!.w);
      const logSoftmaxAt = (lg: number[], pos: number, y: number): number => {
        const row = lg.slice(pos * 12, pos * 12 + 12);
        const m = Math.max(...row);
        return row[y]! - m - Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0));
      };
      for (let t = 0; t < n - 1; t++) {
        const isAction = t + 1 >= pl[i]! && t + 1 < tl[i]!;
        expect(mask[i * (n - 1) + t] ? 1 : 0).toBe(isAction ? 1 : 0);
        if (!isAction) {
          expect(lp[i * (n - 1) + t]).toBe(0);
          expect(vals[i * (n - 1) + t]).toBe(0);
          continue;
        }
        const y = tok[i * n + t + 1]!;
        expect(Math.abs(lp[i * (n - 1) + t]! - logSoftmaxAt(logits, t, y))).toBeLessThan(1e-10);
        expect(Math.abs(rlp[i * (n - 1) + t]! - logSoftmaxAt(refLogits, t, y))).toBeLessThan(1e-10);
        const v = emb.slice(t * 16, t * 16 + 16).reduce((a, e, k) => a + e * w[k]!, 0.3);
        expect(Math.abs(vals[i * (n - 1) + t]! - v)).toBeLessThan(1e-10);
      }
    }
    expect(spec.actorScope).toBe("actor");
    close(data(ro.scores), ro.completions.map((c) => c.filter((x) => x === 4).length / c.length));
  });

  it("critic sharing the actor's scope reuses its embeddings; a separate critic uses its own network", () => {
    const sft = randomParams(tiny, 2);
    const tokens = np.array([[1, 3, 4, 5]], { dtype: "int32" });
    const shared = randomPolicy(sft, { criticScope: "actor" });
    const s = splitPolicy(shared);
    const out = policyOutputs(s.weights, tokens, s.spec);
    const e = data(palm.embed(sft, tokens, { config: tiny, lora: shared.lora, loraScope: "actor" }));
    const w = data(shared.valueHead!.w);
    close(data(out.values), [0, 1, 2].map((t) => e.slice(t * 16, t * 16 + 16).reduce((a, x, k) => a + x * w[k]!, 0.3)), 1e-10);
    const critic = randomParams(tiny, 3);
    const sep = { ...randomPolicy(sft, { criticScope: null }), critic };
    const s2 = splitPolicy(sep);
    const e2 = data(palm.embed(critic, tokens, { config: tiny }));
    const w2 = data(sep.valueHead!.w);
    close(data(policyOutputs(s2.weights, tokens, s2.spec).values), [0, 1, 2].map((t) => e2.slice(t * 16, t * 16 + 16).reduce((a, x, k) => a + x * w2[k]!, 0.3)), 1e-10);
    expect(trainableMask(sep)).toMatchObject({ critic: true, params: false, lora: { actor: true } });
  });

  it("rejects a missing LoRA scope, a scoreFn of the wrong length, a reference of another architecture", async () => {
    const sft = randomParams(tiny, 4);
    const policy = randomPolicy(sft);
    expect(() => splitPolicy({ ...policy, actorScope: "nope" })).toThrow(ArgumentError);
    await expect(collectRollouts(random.key(0), { policy, reference: sft, prompts: [[1], [1]], maxNewTokens: 2, scoreFn: () => [1] })).rejects.toThrow(ShapeError);
    const other = randomParams({ ...tiny, dim: 8, dimHead: 4 }, 1);
    await expect(collectRollouts(random.key(0), { policy, reference: other, prompts: [[1]], maxNewTokens: 2, scoreFn: () => [1] })).rejects.toThrow(ShapeError);
  });
});

// ---------------------------------------------------------------------------------------------------
// Updates

const f32: PalmConfig = { numTokens: 12, dim: 16, depth: 1, heads: 2, dimHead: 8, ffMult: 2 };
/** An "SFT" model: fresh PaLM with embeddings scaled up, so its next-token distributions are not flat. */
function sftModel(seed: number, scale = 12): PalmParams {
  const p = palm.init(random.key(seed), f32);
  return { ...p, tokenEmb: np.multiply(p.tokenEmb, scale) };
}
const PROMPTS = Array.from({ length: 16 }, (_, i) => (i % 2 ? [1, 3 + (i % 5)] : [1, 2, 3 + (i % 4)]));

async function runPpo(cfg: Partial<PpoConfig>, iters: number, opts: Parameters<typeof initPpo>[4] = {}, seed = 0) {
  const sft = sftModel(seed);
  const before = tree.leaves<WArray>(sft).map((x) => data(x));
  let state = initPpo(random.key(1), sft, f32, cfg, opts);
  const history: Record<string, number>[] = [];
  for (let it = 0; it < iters; it++) {
    const ro: Rollout = await collectRollouts(random.key(100 + it), { policy: state.policy, reference: state.reference, prompts: PROMPTS, maxNewTokens: 6, scoreFn: tokenScore(7) });
    const r = await ppoUpdate(state, ro, cfg, random.key(200 + it));
    state = r.state;
    history.push(r.stats);
  }
  return { state, history, sft, before };
}

const meanOf = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

describe("ppoUpdate", () => {
  it("raises the true reward of a toy task (LoRA actor and critic, fixed seed, CPU)", async () => {
    const cfg = { learningRate: 1e-2, epochs: 4, minibatchSize: 8, klCoef: 0.01 };
    const { history, state, sft, before } = await runPpo(cfg, 12);
    const scores = history.map((h) => h.meanScore);
    expect(meanOf(scores.slice(-3))).toBeGreaterThan(meanOf(scores.slice(0, 3)) + 0.25); // measured: ~0.07 -> ~0.6
    for (const h of history) {
      for (const k of ["policyLoss", "valueLoss", "entropy", "approxKl", "clipFrac", "meanReward", "meanScore", "kl", "gradNorm"]) expect(Number.isFinite(h[k]), k).toBe(true);
      expect(h.clipFrac).toBeGreaterThanOrEqual(0);
      expect(h.clipFrac).toBeLessThanOrEqual(1);
      expect(h.steps).toBe(8); // 4 epochs × 16/8 minibatches
    }
    // The reference and the base params stay frozen (LoRA training), bit for bit.
    expect(state.reference).toBe(sft);
    expect(tree.leaves<WArray>(state.policy.params).map((x) => data(x))).toEqual(before);
    expect(tree.leaves<WArray>(sft).map((x) => data(x))).toEqual(before);
    expect(state.step).toBe(12);
  }, 60_000);

  it("full fine-tuning trains the params but leaves the reference untouched; the adaptive β moves towards the target", async () => {
    const cfg = { learningRate: 3e-3, epochs: 2, minibatchSize: 16, klCoef: 0.05, adaptiveKl: { target: 100, horizon: 64 } };
    const { history, state, sft, before } = await runPpo(cfg, 3, { actorScope: null });
    expect(tree.leaves<WArray>(sft).map((x) => data(x))).toEqual(before);
    expect(data(state.policy.params.tokenEmb)).not.toEqual(before[tree.leaves(sft).indexOf(sft.tokenEmb)]);
    // KL ≪ target: error −0.2 per update, β·(1 − 0.2·16/64) = 0.95β each time.
    expect(history[0]!.klCoef).toBe(0.05);
    expect(history[1]!.klCoef).toBeCloseTo(0.05 * 0.95, 12);
    expect(state.klCoef).toBeCloseTo(0.05 * 0.95 ** 3, 12);
  }, 30_000);

  it("rejects bad configs and mismatched rollouts with named errors", async () => {
    expect(() => resolvePpoConfig({ clipEps: 0 })).toThrow(ArgumentError);
    expect(() => resolvePpoConfig({ epochs: 1.5 })).toThrow(ArgumentError);
    expect(() => resolvePpoConfig({ klEstimator: "k9" as "k1" })).toThrow(ArgumentError);
    expect(() => resolvePpoConfig({ adaptiveKl: { target: -1, horizon: 10 } })).toThrow(ArgumentError);
    const sft = sftModel(0);
    const state = initPpo(random.key(1), sft, f32, {});
    const ro = await collectRollouts(random.key(2), { policy: state.policy, reference: sft, prompts: [[1], [1, 2]], maxNewTokens: 2, scoreFn: () => [0, 1] });
    await expect(ppoUpdate(state, { ...ro, scores: np.zeros([3]) }, {}, random.key(0))).rejects.toThrow(ShapeError);
    await expect(ppoUpdate(state, ro, { vfCoef: -1 }, random.key(0))).rejects.toThrow(ArgumentError);
  });
});

/**
 * @file Tests of DPO (src/rl/dpo.ts). Expected values are independent of the code under test: the DPO,
 * cDPO and IPO losses and the implicit rewards computed by hand (JS doubles), float64 central finite
 * differences, response log-probs re-derived from the model's logits with a log-softmax written here,
 * structural facts (a policy equal to its reference has h = 0, so loss log 2 for DPO and 1/(4β²) for
 * IPO), and a few optimisation steps that must raise the preference margin.
 */
import "../src/index.js";
import { describe, expect, it } from "vitest";
import type { Value } from "../src/autodiff/core.js";
import { ArgumentError, DTypeError, ShapeError } from "../src/autodiff/errors.js";
import { grad, jit, np, optim, valueAndGrad, vmap } from "../src/index.js";
import type { Array as WArray } from "../src/ops/array.js";
import * as random from "../src/ops/random.js";
import * as lora from "../src/nn/lora.js";
import * as palm from "../src/nn/palm.js";
import * as dpo from "../src/rl/dpo.js";
import type { DpoConfig, DpoParams } from "../src/rl/dpo.js";
import { preferenceBatch } from "../src/rl/reward.js";
import { data, expectClose, f64, i32, mean, negLogSigmoid, num } from "./rl-helpers.js";

// Log-probs: policy chosen / rejected, reference chosen / rejected (two pairs).
const pc = [-3, -5];
const pr = [-4, -2];
const rc = [-3.5, -4];
const rr = [-3.8, -2.5];
// h = (pc - rc) - (pr - rr) = [0.5 + 0.2, -1 - 0.5] = [0.7, -1.5]
const h = [0.7, -1.5];

describe("dpoLoss", () => {
  it("sigmoid loss, implicit rewards and accuracy by hand", () => {
    const out = dpo.dpoLoss(f64(pc), f64(pr), f64(rc), f64(rr), { beta: 0.5 });
    expectClose([num(out.loss)], [mean(h.map((x) => negLogSigmoid(0.5 * x)))], 1e-14);
    expectClose(data(out.chosenReward), [0.25, -0.5], 1e-15); // β·(pc - rc)
    expectClose(data(out.rejectedReward), [-0.1, 0.25], 1e-15); // β·(pr - rr)
    expect(num(out.accuracy)).toBe(0.5);
    // Default β = 0.1.
    expectClose([num(dpo.dpoLoss(f64(pc), f64(pr), f64(rc), f64(rr)).loss)], [mean(h.map((x) => negLogSigmoid(0.1 * x)))], 1e-14);
  });

  it("cDPO mixes the flipped label with weight ε; IPO is (h - 1/(2β))²", () => {
    const eps = 0.1;
    const c = dpo.dpoLoss(f64(pc), f64(pr), f64(rc), f64(rr), { beta: 0.5, labelSmoothing: eps });
    expectClose([num(c.loss)], [mean(h.map((x) => (1 - eps) * negLogSigmoid(0.5 * x) + eps * negLogSigmoid(-0.5 * x)))], 1e-14);
    const ipo = dpo.dpoLoss(f64(pc), f64(pr), f64(rc), f64(rr), { beta: 0.5, kind: "ipo" });
    expectClose([num(ipo.loss)], [(0.09 + 6.25) / 2], 1e-14); // (0.7 - 1)², (-1.5 - 1)²
  });

  it("swapping chosen and rejected negates h (the loss becomes -log σ(-βh))", () => {
    const a = dpo.dpoLoss(f64(pc), f64(pr), f64(rc), f64(rr), { beta: 0.5, reduction: "none" });
    const b = dpo.dpoLoss(f64(pr), f64(pc), f64(rr), f64(rc), { beta: 0.5, reduction: "none" });
    expectClose(data(b.loss), h.map((x) => negLogSigmoid(-0.5 * x)), 1e-14);
    // log σ(z) - log σ(-z) = z: the two losses differ by βh exactly.
    expectClose(
      data(b.loss).map((x, i) => x - data(a.loss)[i]!),
      h.map((x) => 0.5 * x),
      1e-14,
    );
  });

  for (const kind of ["sigmoid", "ipo"] as const) {
    it(`${kind}: gradients match finite differences (float64)`, () => {
      const opts = { beta: 0.3, kind, labelSmoothing: kind === "sigmoid" ? 0.2 : 0 };
      const args = [pc, pr, rc, rr];
      const g = grad((...xs: Value[]) => dpo.dpoLoss(xs[0]!, xs[1]!, xs[2]!, xs[3]!, opts).loss, { argnums: [0, 1, 2, 3] })(...args.map(f64)) as Value[];
      const f = (xs: number[][]): number => num(dpo.dpoLoss(f64(xs[0]!), f64(xs[1]!), f64(xs[2]!), f64(xs[3]!), opts).loss);
      const eps = 1e-6;
      for (let a = 0; a < 4; a++) {
        for (let i = 0; i < 2; i++) {
          const p = args.map((x) => x.slice());
          const m = args.map((x) => x.slice());
          p[a]![i]! += eps;
          m[a]![i]! -= eps;
          const fd = (f(p) - f(m)) / (2 * eps);
          expect(Math.abs(data(g[a])[i]! - fd)).toBeLessThan(1e-8 + 1e-6 * Math.abs(fd));
        }
      }
      // The implicit rewards are metrics: no gradient flows through them.
      expect(data(grad((x: Value) => np.sum(dpo.dpoLoss(x, f64(pr), f64(rc), f64(rr), opts).chosenReward))(f64(pc)) as Value)).toEqual([0, 0]);
    });
  }

  it("jit and vmap agree with the eager loss", () => {
    const eager = num(dpo.dpoLoss(f64(pc), f64(pr), f64(rc), f64(rr)).loss);
    const f = (a: Value, b: Value, c: Value, d: Value): Value => dpo.dpoLoss(a, b, c, d).loss;
    expectClose([num(jit(f)(f64(pc), f64(pr), f64(rc), f64(rr)))], [eager], 1e-14);
    expectClose([mean(data(vmap(f)(f64(pc), f64(pr), f64(rc), f64(rr))))], [eager], 1e-14);
  });

  it("rejects bad options and shapes", () => {
    const args = [f64(pc), f64(pr), f64(rc), f64(rr)] as const;
    expect(() => dpo.dpoLoss(...args, { beta: 0 })).toThrow(ArgumentError);
    expect(() => dpo.dpoLoss(...args, { beta: -1 })).toThrow(ArgumentError);
    expect(() => dpo.dpoLoss(...args, { labelSmoothing: 0.5 })).toThrow(/labelSmoothing/);
    expect(() => dpo.dpoLoss(...args, { kind: "ipo", labelSmoothing: 0.1 })).toThrow(ArgumentError);
    expect(() => dpo.dpoLoss(...args, { kind: "hinge" as "ipo" })).toThrow(ArgumentError);
    expect(() => dpo.dpoLoss(f64(pc), f64([1]), f64(rc), f64(rr))).toThrow(ShapeError);
    expect(() => dpo.dpoLoss(i32(pc), f64(pr), f64(rc), f64(rr))).toThrow(DTypeError);
  });
});

// ---------------------------------------------------------------------------------------------------
// Response log-probs from a model

const palmCfg = { numTokens: 10, dim: 16, depth: 1, heads: 2, dimHead: 8, dtype: "float64" } as const;

/** Σ_{t=p}^{T-1} log softmax(logits[t-1])[tok[t]], by hand from the model's logits. */
function handLogProb(logits: number[][], tokens: number[], p: number, total: number): number {
  let s = 0;
  for (let t = p; t < total; t++) {
    const row = logits[t - 1]!;
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0));
    s += row[tokens[t]!]! - lse;
  }
  return s;
}

describe("responseLogProb", () => {
  const params = palm.init(random.key(11), palmCfg);

  it("sums the response tokens' log-probs (by hand from the logits); padding changes nothing", () => {
    const tokens = [
      [1, 2, 3, 4, 5, 0],
      [6, 7, 8, 9, 0, 0],
    ];
    const pl = [2, 1];
    const tl = [5, 4];
    const got = data(dpo.responseLogProb(params, i32(tokens), { promptLengths: i32(pl), totalLengths: i32(tl), config: palmCfg }));
    const want = tokens.map((row, i) => {
      const lg = (palm.apply(params, i32([row.slice(0, tl[i])]), { config: palmCfg }) as WArray).toArraySync() as number[][][];
      return handLogProb(lg[0]!, row, pl[i]!, tl[i]!);
    });
    expectClose(got, want, 1e-12);
    // Other padding contents, same result.
    const other = data(dpo.responseLogProb(params, i32([[1, 2, 3, 4, 5, 9], [6, 7, 8, 9, 3, 3]]), { promptLengths: i32(pl), totalLengths: i32(tl), config: palmCfg }));
    expectClose(other, got, 1e-12);
    // average: divided by the number of response tokens (3 and 3).
    const avg = data(dpo.responseLogProb(params, i32(tokens), { promptLengths: i32(pl), totalLengths: i32(tl), config: palmCfg, average: true }));
    expectClose(avg, [want[0]! / 3, want[1]! / 3], 1e-12);
  });

  it("rejects bad input", () => {
    const t = i32([[1, 2, 3]]);
    expect(() => dpo.responseLogProb(params, t, { promptLengths: i32([0]), config: palmCfg })).toThrow(ArgumentError);
    expect(() => dpo.responseLogProb(params, t, { promptLengths: i32([1, 1]), config: palmCfg })).toThrow(ShapeError);
    expect(() => dpo.responseLogProb(params, t, { promptLengths: i32([1]), totalLengths: i32([4]), config: palmCfg })).toThrow(ArgumentError);
    expect(() => dpo.responseLogProb(params, np.array([[1, 2, 3]], { dtype: "float32" }), { promptLengths: i32([1]), config: palmCfg })).toThrow(DTypeError);
    expect(() => dpo.responseLogProb(params, i32([[1]]), { promptLengths: i32([1]), config: palmCfg })).toThrow(ShapeError);
    expect(() => dpo.responseLogProb(params, t, {} as dpo.ResponseLogProbOptions)).toThrow(ArgumentError);
    expect(() => dpo.responseLogProb(params, t, { promptLengths: i32([1]), config: { ...palmCfg, causal: false } })).toThrow(/causal/);
  });
});

// ---------------------------------------------------------------------------------------------------
// The step loss and a few training steps

describe("dpoStepLoss", () => {
  const pairs = [
    { prompt: [1, 2], chosen: [5, 5, 5], rejected: [3, 3] },
    { prompt: [2, 1], chosen: [5, 6, 5], rejected: [4, 3, 4] },
    { prompt: [7], chosen: [5, 5], rejected: [3, 4] },
  ];
  const batch = preferenceBatch(pairs);
  const base = palm.init(random.key(21), palmCfg);
  const loraCfg: DpoConfig = { palm: palmCfg, beta: 0.1, loraScope: "actor" };
  const policy: DpoParams = { palm: base, lora: lora.init(random.key(22), palmCfg, { scopes: ["actor"], r: 4 }) };

  it("starts at log 2 (DPO) and 1/(4β²) (IPO) when the policy is its reference", () => {
    const [t, f] = optim.partition(policy, dpo.trainableMask(policy, loraCfg));
    const [loss, aux] = dpo.dpoStepLoss(t, f, batch, loraCfg);
    expectClose([num(loss)], [Math.LN2], 1e-12);
    expect(num(aux.accuracy)).toBe(0);
    expect(Math.abs(num(aux.margin))).toBeLessThan(1e-12);
    const [ipo] = dpo.dpoStepLoss(t, f, batch, { ...loraCfg, kind: "ipo" });
    expectClose([num(ipo)], [25], 1e-12); // (0 - 1/(2·0.1))²
  });

  it("full fine-tuning uses batch.refLogProbs (and requires them)", () => {
    const fullCfg: DpoConfig = { palm: palmCfg, beta: 0.2 };
    const full: DpoParams = { palm: palm.init(random.key(23), palmCfg), lora: null };
    const [t, f] = optim.partition(full, dpo.trainableMask(full, fullCfg));
    expect(() => dpo.dpoStepLoss(t, f, batch, fullCfg)).toThrow(/refLogProbs/);
    const ref = dpo.referenceLogProbs(base, batch, fullCfg); // [6]
    const lp = data(dpo.responseLogProb(full.palm, batch.tokens, { promptLengths: batch.promptLengths, totalLengths: batch.totalLengths, config: palmCfg }));
    const r = data(ref);
    const want = mean([0, 1, 2].map((i) => negLogSigmoid(0.2 * (lp[i]! - r[i]! - (lp[i + 3]! - r[i + 3]!)))));
    const [loss] = dpo.dpoStepLoss(t, f, { ...batch, refLogProbs: ref }, fullCfg);
    expectClose([num(loss)], [want], 1e-12);
    expect(() => dpo.dpoStepLoss(t, f, { ...batch, refLogProbs: f64([1, 2]) }, fullCfg)).toThrow(ShapeError);
    // Gradients reach the whole trunk.
    const [, g] = valueAndGrad(dpo.dpoStepLoss, { hasAux: true })(t, f, { ...batch, refLogProbs: ref }, fullCfg) as [unknown, DpoParams];
    expect(g.palm.tokenEmb.aval.shape).toEqual([10, 16]);
  });

  it("a few Adam steps on the LoRA scope raise the implicit-reward margin and the accuracy", () => {
    const [t0, f] = optim.partition(policy, dpo.trainableMask(policy, loraCfg));
    const opt = optim.adam(2e-2);
    const step = jit((t: DpoParams, st: unknown) => {
      const [[loss, aux], g] = valueAndGrad(dpo.dpoStepLoss, { hasAux: true })(t, f, batch, loraCfg);
      const [u, st2] = opt.update(g, st, t);
      return [optim.applyUpdates(t, u), st2, loss, aux.margin, aux.accuracy];
    });
    let t = t0;
    let st = opt.init(t);
    let out: Value[] = [];
    for (let i = 0; i < 15; i++) {
      [t, st, ...out] = step(t, st) as [DpoParams, unknown, Value, Value, Value];
    }
    const [loss, aux] = dpo.dpoStepLoss(t, f, batch, loraCfg);
    expect(num(loss)).toBeLessThan(Math.LN2 - 0.05);
    expect(num(aux.margin)).toBeGreaterThan(0.1);
    expect(num(aux.accuracy)).toBe(1);
    expect(out.length).toBe(3);
  });

  it("rejects bad configs and batches", () => {
    const [t, f] = optim.partition(policy, dpo.trainableMask(policy, loraCfg));
    expect(() => dpo.trainableMask(policy, { ...loraCfg, loraScope: "critic" })).toThrow(ArgumentError);
    expect(() => dpo.dpoStepLoss(t, f, { tokens: batch.tokens } as dpo.DpoBatch, loraCfg)).toThrow(ArgumentError);
    expect(() => dpo.dpoStepLoss(t, f, batch, { ...loraCfg, beta: 0 })).toThrow(ArgumentError);
  });
});

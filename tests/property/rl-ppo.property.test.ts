/**
 * @file Properties of PPO's building blocks (src/rl/advantages.ts, kl.ts, ppo.ts, grpo.ts), float64,
 * fast-check (FC_SEED / FC_RUNS_SCALE as in harness.ts). Expectations come from plain JS written here:
 * GAE against a backward loop over each row, the clipped surrogate's gradient against its case
 * analysis (0 where the ratio is clipped in the advantage's direction, −A·ρ elsewhere), the KL
 * estimators against the exact KL of full distributions, and invariances (masked positions change
 * nothing; vmap over examples gives the batch's loss).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { grad, np, vmap } from "../../src/index.js";
import type { Value } from "../../src/index.js";
import { gae } from "../../src/rl/advantages.js";
import { klEstimate } from "../../src/rl/kl.js";
import { clippedSurrogate, ppoLossFromOutputs } from "../../src/rl/ppo.js";
import type { PpoBatch } from "../../src/rl/ppo.js";
import { grpoLossFromOutputs } from "../../src/rl/grpo.js";
import type { GrpoBatch } from "../../src/rl/grpo.js";
import { assertClose, build, fcParams, fromLib, HostArray, Rng, seedArb, toLib } from "./harness.js";

const TIGHT = { rtol: 1e-10, atol: 1e-12 };
const h = (v: unknown): HostArray => fromLib(v as Value);
const rand = (shape: number[], rng: Rng, lo = -2, hi = 2): HostArray => build(shape, "float64", () => rng.uniform(lo, hi));
const randMask = (shape: number[], rng: Rng, p = 0.7): HostArray => build(shape, "float64", () => (rng.next() < p ? 1 : 0));
const lib = (x: HostArray): Value => toLib(x);
const boolLib = (m: HostArray): Value => np.notEqual(toLib(m), 0);

/** GAE by a plain backward loop over each row; masked-out positions are skipped (not time steps). */
function gaeLoop(r: HostArray, v: HostArray, m: HostArray, gamma: number, lambda: number): { adv: HostArray; ret: HostArray } {
  const [b, T] = r.shape as [number, number];
  const adv = new Float64Array(b * T);
  const ret = new Float64Array(b * T);
  for (let i = 0; i < b; i++) {
    let nextV = 0;
    let nextA = 0;
    for (let t = T - 1; t >= 0; t--) {
      const k = i * T + t;
      if (m.data[k] === 0) continue;
      const delta = r.data[k]! + gamma * nextV - v.data[k]!;
      const a = delta + gamma * lambda * nextA;
      adv[k] = a;
      ret[k] = a + v.data[k]!;
      nextV = v.data[k]!;
      nextA = a;
    }
  }
  return { adv: { shape: [b, T], dtype: "float64", data: adv }, ret: { shape: [b, T], dtype: "float64", data: ret } };
}

const gaeCase = fc.record({
  seed: seedArb,
  b: fc.integer({ min: 1, max: 4 }),
  T: fc.integer({ min: 1, max: 9 }),
  gamma: fc.double({ min: 0, max: 1, noNaN: true }),
  lambda: fc.double({ min: 0, max: 1, noNaN: true }),
  contiguous: fc.boolean(),
});

/** A mask: random bits, or one contiguous block per row (a prompt then a response then padding). */
function makeMask(b: number, T: number, rng: Rng, contiguous: boolean): HostArray {
  if (!contiguous) return randMask([b, T], rng);
  const starts = Array.from({ length: b }, () => rng.int(0, T - 1));
  const ends = starts.map((s) => rng.int(s, T));
  return build([b, T], "float64", ([i, t]) => (t! >= starts[i!]! && t! < ends[i!]! ? 1 : 0));
}

describe("gae", () => {
  it("equals a plain backward loop on random rewards, values and masks", () => {
    fc.assert(
      fc.property(gaeCase, ({ seed, b, T, gamma, lambda, contiguous }) => {
        const rng = new Rng(seed);
        const r = rand([b, T], rng);
        const v = rand([b, T], rng);
        const m = makeMask(b, T, rng, contiguous);
        const want = gaeLoop(r, v, m, gamma, lambda);
        const got = gae(lib(r), lib(v), boolLib(m), { gamma, lambda });
        assertClose(h(got.advantages), want.adv, TIGHT, "advantages");
        assertClose(h(got.returns), want.ret, TIGHT, "returns");
      }),
      fcParams(60),
    );
  });

  it("is unchanged by the rewards and values at masked-out positions, and is 0 there", () => {
    fc.assert(
      fc.property(gaeCase, ({ seed, b, T, gamma, lambda, contiguous }) => {
        const rng = new Rng(seed);
        const r = rand([b, T], rng);
        const v = rand([b, T], rng);
        const m = makeMask(b, T, rng, contiguous);
        const junk = (x: HostArray): HostArray => build(x.shape, "float64", (idx) => (m.data[idx[0]! * T + idx[1]!] ? x.data[idx[0]! * T + idx[1]!]! : rng.uniform(-50, 50)));
        const a = gae(lib(r), lib(v), lib(m), { gamma, lambda });
        const c = gae(lib(junk(r)), lib(junk(v)), lib(m), { gamma, lambda });
        assertClose(h(c.advantages), h(a.advantages), TIGHT, "advantages");
        assertClose(h(c.returns), h(a.returns), TIGHT, "returns");
        const adv = h(a.advantages);
        m.data.forEach((mk, k) => {
          if (mk === 0) expect(adv.data[k]).toBe(0);
        });
      }),
      fcParams(40),
    );
  });

  it("vmap over rows equals the batched call (rows are independent episodes)", () => {
    fc.assert(
      fc.property(gaeCase, ({ seed, b, T, gamma, lambda }) => {
        const rng = new Rng(seed);
        const r = lib(rand([b, T], rng));
        const v = lib(rand([b, T], rng));
        const m = lib(randMask([b, T], rng));
        const batched = gae(r, v, m, { gamma, lambda });
        const perRow = vmap((ri: Value, vi: Value, mi: Value) => gae(ri, vi, mi, { gamma, lambda }))(r, v, m);
        assertClose(h(perRow.advantages), h(batched.advantages), TIGHT, "advantages");
      }),
      fcParams(20),
    );
  });
});

describe("klEstimate", () => {
  it("k2 and k3 are >= 0 everywhere, and all three are 0 for equal log-probs", () => {
    fc.assert(
      fc.property(seedArb, fc.integer({ min: 1, max: 20 }), (seed, n) => {
        const rng = new Rng(seed);
        const lp = rand([n], rng, -8, 0);
        const rp = rand([n], rng, -8, 0);
        for (const k of ["k2", "k3"] as const) {
          h(klEstimate(lib(lp), lib(rp), k)).data.forEach((x) => expect(x).toBeGreaterThanOrEqual(0));
        }
        for (const k of ["k1", "k2", "k3"] as const) {
          h(klEstimate(lib(lp), lib(lp), k)).data.forEach((x) => expect(x === 0).toBe(true)); // +0 or -0
        }
      }),
      fcParams(50),
    );
  });

  it("k1 and k3 are unbiased: their expectation under p is the exact KL(p‖q) of full distributions", () => {
    fc.assert(
      fc.property(seedArb, fc.integer({ min: 2, max: 8 }), (seed, V) => {
        const rng = new Rng(seed);
        const softmax = (z: number[]): number[] => {
          const e = z.map(Math.exp);
          const s = e.reduce((a, x) => a + x, 0);
          return e.map((x) => x / s);
        };
        const p = softmax(Array.from({ length: V }, () => rng.uniform(-2, 2)));
        const q = softmax(Array.from({ length: V }, () => rng.uniform(-2, 2)));
        const exact = p.reduce((a, pi, i) => a + pi * Math.log(pi / q[i]!), 0);
        const lp = np.array(p.map(Math.log), { dtype: "float64" });
        const lq = np.array(q.map(Math.log), { dtype: "float64" });
        for (const k of ["k1", "k3"] as const) {
          const est = h(klEstimate(lp, lq, k)).data.reduce((a, x, i) => a + p[i]! * x, 0);
          expect(Math.abs(est - exact)).toBeLessThan(1e-12 + 1e-10 * exact);
        }
      }),
      fcParams(50),
    );
  });
});

describe("clippedSurrogate", () => {
  it("has zero gradient where the ratio is clipped in the advantage's direction, −A·ρ elsewhere", () => {
    fc.assert(
      fc.property(seedArb, fc.integer({ min: 1, max: 24 }), fc.double({ min: 0.05, max: 0.5, noNaN: true }), (seed, n, eps) => {
        const rng = new Rng(seed);
        const lp = rand([n], rng, -3, 0);
        const old = build([n], "float64", ([i]) => lp.data[i!]! + rng.uniform(-0.6, 0.6));
        const adv = rand([n], rng, -2, 2);
        const ratio = Array.from(lp.data, (x, i) => Math.exp(x - old.data[i]!));
        const g = h(grad((x: Value) => np.sum(clippedSurrogate(x, lib(old), lib(adv), eps)))(lib(lp)));
        ratio.forEach((rho, i) => {
          if (Math.abs(rho - (1 + eps)) < 1e-9 || Math.abs(rho - (1 - eps)) < 1e-9) return; // the kink itself
          const a = adv.data[i]!;
          const clippedAway = (a > 0 && rho > 1 + eps) || (a < 0 && rho < 1 - eps);
          const want = clippedAway ? 0 : -a * rho; // d(−A·exp(lp − old))/dlp
          expect(Math.abs(g.data[i]! - want)).toBeLessThan(1e-12 + 1e-10 * Math.abs(want));
        });
      }),
      fcParams(60),
    );
  });
});

/** Random per-token data for the loss tests: [b, T] each, a mask, and the tokens' placeholder [b, T+1]. */
function lossData(rng: Rng, b: number, T: number) {
  const lp = rand([b, T], rng, -3, 0);
  return {
    logProbs: lp,
    entropy: rand([b, T], rng, 0, 2),
    values: rand([b, T], rng),
    old: build([b, T], "float64", ([i, t]) => lp.data[i! * T + t!]! + rng.uniform(-0.5, 0.5)),
    oldValues: rand([b, T], rng),
    adv: rand([b, T], rng),
    ret: rand([b, T], rng),
    ref: rand([b, T], rng, -3, 0),
    seqAdv: rand([b], rng),
    mask: build([b, T], "float64", ([, t]) => (t === 0 ? 1 : rng.next() < 0.6 ? 1 : 0)), // every row has a token
  };
}

const lossCase = fc.record({ seed: seedArb, b: fc.integer({ min: 1, max: 5 }), T: fc.integer({ min: 1, max: 7 }) });
const cfg = { clipEps: 0.2, valueClip: 0.2, vfCoef: 0.5, entropyCoef: 0.01 };

function ppoParts(d: ReturnType<typeof lossData>) {
  const [b, T] = d.logProbs.shape as [number, number];
  const batch: PpoBatch = {
    tokens: np.zeros([b, T + 1], { dtype: "int32" }), // unused by ppoLossFromOutputs
    actionMask: lib(d.mask),
    oldLogProbs: lib(d.old),
    oldValues: lib(d.oldValues),
    advantages: lib(d.adv),
    returns: lib(d.ret),
  };
  return { out: { logProbs: lib(d.logProbs), entropy: lib(d.entropy), values: lib(d.values) }, batch };
}

describe("ppo loss", () => {
  it("vmap of per-example (summed) losses adds up to the batch's; the mean is the sum over the token count", () => {
    fc.assert(
      fc.property(lossCase, ({ seed, b, T }) => {
        const d = lossData(new Rng(seed), b, T);
        const { out, batch } = ppoParts(d);
        const per = vmap((o: typeof out, bt: PpoBatch) => ppoLossFromOutputs(o, bt, cfg, { reduction: "sum" }).loss)(out, batch);
        const sum = ppoLossFromOutputs(out, batch, cfg, { reduction: "sum" }).loss;
        const meanLoss = ppoLossFromOutputs(out, batch, cfg).loss;
        const perH = h(per);
        expect(perH.shape).toEqual([b]);
        const total = perH.data.reduce((a, x) => a + x, 0);
        const count = d.mask.data.reduce((a, x) => a + x, 0);
        expect(Math.abs(total - h(sum).data[0]!)).toBeLessThan(1e-10 * (1 + Math.abs(total)));
        expect(Math.abs(total / count - h(meanLoss).data[0]!)).toBeLessThan(1e-10 * (1 + Math.abs(total)));
      }),
      fcParams(30),
    );
  });

  it("masked positions contribute nothing: junk there changes neither the loss nor the stats, and their gradient is 0", () => {
    fc.assert(
      fc.property(lossCase, ({ seed, b, T }) => {
        const rng = new Rng(seed);
        const d = lossData(rng, b, T);
        const junk = (x: HostArray): HostArray => build(x.shape, "float64", ([i, t]) => (d.mask.data[i! * T + t!] ? x.data[i! * T + t!]! : rng.uniform(-5, 5)));
        const d2 = { ...d, logProbs: junk(d.logProbs), entropy: junk(d.entropy), values: junk(d.values), old: junk(d.old), oldValues: junk(d.oldValues), adv: junk(d.adv), ret: junk(d.ret) };
        const a = ppoParts(d);
        const c = ppoParts(d2);
        const ra = ppoLossFromOutputs(a.out, a.batch, cfg);
        const rc = ppoLossFromOutputs(c.out, c.batch, cfg);
        for (const [k, v] of Object.entries({ loss: ra.loss, ...ra.stats })) {
          const w = k === "loss" ? rc.loss : rc.stats[k as keyof typeof rc.stats];
          expect(Math.abs(h(v).data[0]! - h(w).data[0]!), k).toBeLessThan(1e-12);
        }
        const g = grad((o: typeof a.out) => ppoLossFromOutputs(o, c.batch, cfg).loss)(c.out) as Record<string, Value>;
        for (const k of ["logProbs", "entropy", "values"]) {
          h(g[k]).data.forEach((x, i) => {
            if (d.mask.data[i] === 0) expect(x === 0, k).toBe(true); // +0 or -0
          });
        }
      }),
      fcParams(30),
    );
  });

  it("GRPO (sequence aggregation): the mean of vmapped per-example losses is the batch loss; masked positions change nothing", () => {
    fc.assert(
      fc.property(lossCase, ({ seed, b, T }) => {
        const rng = new Rng(seed);
        const d = lossData(rng, b, T);
        const gcfg = { clipEps: 0.2, klCoef: 0.05, entropyCoef: 0.01, lossAggregation: "sequence" as const };
        const out = { logProbs: lib(d.logProbs), entropy: lib(d.entropy) };
        const batch: GrpoBatch = { tokens: np.zeros([b, T + 1], { dtype: "int32" }), actionMask: lib(d.mask), oldLogProbs: lib(d.old), refLogProbs: lib(d.ref), advantages: lib(d.seqAdv) };
        const per = h(vmap((o: typeof out, bt: GrpoBatch) => grpoLossFromOutputs(o, bt, gcfg).loss)(out, batch));
        const want = per.data.reduce((a, x) => a + x, 0) / b;
        const got = h(grpoLossFromOutputs(out, batch, gcfg).loss).data[0]!;
        expect(Math.abs(got - want)).toBeLessThan(1e-10 * (1 + Math.abs(want)));
        const junk = (x: HostArray): Value => lib(build(x.shape, "float64", ([i, t]) => (d.mask.data[i! * T + t!] ? x.data[i! * T + t!]! : rng.uniform(-5, 0))));
        const got2 = h(grpoLossFromOutputs({ logProbs: junk(d.logProbs), entropy: junk(d.entropy) }, { ...batch, oldLogProbs: junk(d.old), refLogProbs: junk(d.ref) }, gcfg).loss).data[0]!;
        expect(Math.abs(got2 - got)).toBeLessThan(1e-12);
      }),
      fcParams(30),
    );
  });
});

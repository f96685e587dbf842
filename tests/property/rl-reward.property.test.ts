/**
 * @file Properties of the reward-model and DPO losses (src/rl/reward.ts, src/rl/dpo.ts), float64,
 * fast-check (runs scaled by FC_RUNS_SCALE, seeded by FC_SEED; see harness.ts):
 *  - Bradley–Terry equals -log σ(rc - rr - m) computed on the host, and is antisymmetric the way the
 *    logistic is: swapping chosen and rejected gives -log σ of the negated margin, so
 *    loss(rc, rr) - loss(rr, rc) = -(rc - rr) per pair;
 *  - its gradient matches central finite differences;
 *  - vmap of the per-example losses (scalar inputs) equals the batched loss, and jit equals eager;
 *  - DPO depends on the log-ratios only (shifting a policy log-prob and its reference together changes
 *    nothing) and swapping the pair negates h;
 *  - masked positions contribute nothing to the reward model: whatever tokens masked positions hold
 *    (any mask, causal or not, mean or last pooling), the rewards are the same.
 * Expectations are computed on the host with plain JS (never from the code under test).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { grad, jit, np, vmap } from "../../src/index.js";
import type { Value } from "../../src/index.js";
import * as random from "../../src/ops/random.js";
import * as dpo from "../../src/rl/dpo.js";
import * as rm from "../../src/rl/reward.js";
import type { RewardModelConfig, RewardModelParams } from "../../src/rl/reward.js";
import { fcParams, fromLib } from "./harness.js";

const host = (v: unknown): number[] => globalThis.Array.from(fromLib(v as Value).data);
const f64 = (x: number[]): Value => np.array(x, { dtype: "float64" });
const negLogSigmoid = (d: number): number => (d >= 0 ? Math.log1p(Math.exp(-d)) : -d + Math.log1p(Math.exp(d)));
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

function close(got: number[], want: number[], rtol: number, atol: number, what: string): void {
  expect(got.length, what).toBe(want.length);
  got.forEach((g, i) => {
    if (!(Math.abs(g - want[i]!) <= atol + rtol * Math.abs(want[i]!))) throw new Error(`${what}[${i}]: got ${g}, want ${want[i]}`);
  });
}

const real = (lim = 8): fc.Arbitrary<number> => fc.double({ min: -lim, max: lim, noNaN: true, noDefaultInfinity: true });
/** Equal-length vectors (1..6 entries). */
const vectors = (k: number, lim = 8): fc.Arbitrary<number[][]> =>
  fc.integer({ min: 1, max: 6 }).chain((n) => fc.tuple(...globalThis.Array.from({ length: k }, () => fc.array(real(lim), { minLength: n, maxLength: n }))));

describe("Bradley–Terry properties", () => {
  it("equals -log σ(rc - rr - m) and swapping gives -log σ of the negated margin", () => {
    fc.assert(
      fc.property(vectors(3), ([rc, rr, m]) => {
        const fwd = host(rm.bradleyTerryLoss(f64(rc!), f64(rr!), { margin: f64(m!), reduction: "none" }));
        close(fwd, rc!.map((c, i) => negLogSigmoid(c - rr![i]! - m![i]!)), 1e-12, 1e-14, "forward");
        const a = host(rm.bradleyTerryLoss(f64(rc!), f64(rr!), { reduction: "none" }));
        const b = host(rm.bradleyTerryLoss(f64(rr!), f64(rc!), { reduction: "none" }));
        close(b, rc!.map((c, i) => negLogSigmoid(-(c - rr![i]!))), 1e-12, 1e-14, "swapped");
        // log σ(d) - log σ(-d) = d
        close(a.map((x, i) => x - b[i]!), rc!.map((c, i) => -(c - rr![i]!)), 1e-10, 1e-10, "antisymmetry");
        close(host(rm.bradleyTerryLoss(f64(rc!), f64(rr!))), [mean(a)], 1e-12, 1e-14, "mean");
      }),
      fcParams(60),
    );
  });

  it("its gradient matches central finite differences (float64)", () => {
    fc.assert(
      fc.property(vectors(3, 5), ([rc, rr, m]) => {
        const [gc, gr, gm] = (grad((a: Value, b: Value, mm: Value) => rm.bradleyTerryLoss(a, b, { margin: mm }), { argnums: [0, 1, 2] })(f64(rc!), f64(rr!), f64(m!)) as Value[]).map(host);
        const f = (c: number[], r: number[], mm: number[]): number => mean(c.map((x, i) => negLogSigmoid(x - r[i]! - mm[i]!)));
        const eps = 1e-6;
        const fd = (which: 0 | 1 | 2): number[] =>
          rc!.map((_, i) => {
            const p = [rc!, rr!, m!].map((x) => x.slice());
            const q = [rc!, rr!, m!].map((x) => x.slice());
            p[which]![i]! += eps;
            q[which]![i]! -= eps;
            return (f(p[0]!, p[1]!, p[2]!) - f(q[0]!, q[1]!, q[2]!)) / (2 * eps);
          });
        close(gc!, fd(0), 1e-5, 1e-8, "d/drc");
        close(gr!, fd(1), 1e-5, 1e-8, "d/drr");
        close(gm!, fd(2), 1e-5, 1e-8, "d/dmargin");
      }),
      fcParams(40),
    );
  });
});

describe("per-example losses: vmap equals the batched loss, jit equals eager", () => {
  it("Bradley–Terry, rating MSE, binned cross-entropy and DPO", () => {
    fc.assert(
      fc.property(
        vectors(4),
        fc.integer({ min: 2, max: 5 }),
        fc.integer({ min: 0, max: 0x7fffffff }),
        fc.constantFrom<"sigmoid" | "ipo">("sigmoid", "ipo"),
        ([a, b, c, d], bins, seed, kind) => {
          const n = a!.length;
          const A = f64(a!);
          const B = f64(b!);
          const C = f64(c!);
          const D = f64(d!);
          const bt = (x: Value, y: Value): Value => rm.bradleyTerryLoss(x, y);
          close([mean(host(vmap(bt)(A, B)))], host(bt(A, B)), 1e-12, 1e-14, "BT vmap");
          close(host(jit(bt)(A, B)), host(bt(A, B)), 1e-12, 1e-14, "BT jit");
          const mse = (x: Value, y: Value): Value => rm.ratingMseLoss(x, y);
          close([mean(host(vmap(mse)(A, B)))], host(mse(A, B)), 1e-12, 1e-14, "MSE vmap");
          close(host(mse(A, B)), [mean(a!.map((x, i) => (x - b![i]!) ** 2))], 1e-12, 1e-14, "MSE value");
          // Binned: logits [n, bins] from a seeded PRNG, labels in range.
          let s = seed;
          const rnd = (): number => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
          const logits = globalThis.Array.from({ length: n * bins }, () => rnd() * 8 - 4);
          const labels = globalThis.Array.from({ length: n }, () => Math.floor(rnd() * bins));
          const L = np.array(logits, { dtype: "float64", shape: [n, bins] });
          const Y = np.array(labels, { dtype: "int32", shape: [n] });
          const ce = (x: Value, y: Value): Value => rm.binnedRatingLoss(x, y);
          const want = mean(
            labels.map((y, i) => {
              const row = logits.slice(i * bins, (i + 1) * bins);
              return Math.log(row.reduce((acc, x) => acc + Math.exp(x), 0)) - row[y]!;
            }),
          );
          close(host(ce(L, Y)), [want], 1e-12, 1e-14, "CE value");
          close([mean(host(vmap(ce)(L, Y)))], [want], 1e-12, 1e-14, "CE vmap");
          close(host(jit(ce)(L, Y)), [want], 1e-12, 1e-14, "CE jit");
          const dl = (p: Value, q: Value, r: Value, t: Value): Value => dpo.dpoLoss(p, q, r, t, { beta: 0.3, kind }).loss;
          close([mean(host(vmap(dl)(A, B, C, D)))], host(dl(A, B, C, D)), 1e-12, 1e-14, "DPO vmap");
          close(host(jit(dl)(A, B, C, D)), host(dl(A, B, C, D)), 1e-12, 1e-14, "DPO jit");
        },
      ),
      fcParams(25),
    );
  });
});

describe("DPO properties", () => {
  it("depends on the log-ratios only; swapping the pair negates h", () => {
    fc.assert(
      fc.property(vectors(5), fc.double({ min: 0.01, max: 2, noNaN: true }), ([pc, pr, rc, rr, shift], beta) => {
        const base = dpo.dpoLoss(f64(pc!), f64(pr!), f64(rc!), f64(rr!), { beta, reduction: "none" });
        const h = pc!.map((x, i) => x - rc![i]! - (pr![i]! - rr![i]!));
        close(host(base.loss), h.map((x) => negLogSigmoid(beta * x)), 1e-10, 1e-12, "value");
        const shifted = dpo.dpoLoss(
          f64(pc!.map((x, i) => x + shift![i]!)),
          f64(pr!),
          f64(rc!.map((x, i) => x + shift![i]!)),
          f64(rr!),
          { beta, reduction: "none" },
        );
        close(host(shifted.loss), host(base.loss), 1e-9, 1e-12, "shift invariance");
        const swapped = dpo.dpoLoss(f64(pr!), f64(pc!), f64(rr!), f64(rc!), { beta, reduction: "none" });
        close(host(swapped.loss), h.map((x) => negLogSigmoid(-beta * x)), 1e-10, 1e-12, "swapped");
        close(host(base.chosenReward), pc!.map((x, i) => beta * (x - rc![i]!)), 1e-12, 1e-12, "implicit reward");
      }),
      fcParams(50),
    );
  });
});

describe("reward model: masked positions contribute nothing", () => {
  const models = new Map<string, [RewardModelParams, RewardModelConfig]>();
  const model = (causal: boolean, pooling: "mean" | "last"): [RewardModelParams, RewardModelConfig] => {
    const k = `${causal}/${pooling}`;
    if (!models.has(k)) {
      const c: RewardModelConfig = { palm: { numTokens: 9, dim: 8, depth: 1, heads: 2, dimHead: 4, causal, dtype: "float64" }, pooling };
      models.set(k, [rm.init(random.key(causal ? 1 : 2), c), c]);
    }
    return models.get(k)!;
  };

  it("any mask, any contents at masked positions: the same rewards", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 2, max: 7 }),
        fc.boolean(),
        fc.constantFrom<"mean" | "last">("mean", "last"),
        fc.integer({ min: 0, max: 0x7fffffff }),
        (b, n, causal, pooling, seed) => {
          const [params, config] = model(causal, pooling);
          let s = seed;
          const rnd = (): number => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
          const tokens = globalThis.Array.from({ length: b * n }, () => Math.floor(rnd() * 9));
          const mask = globalThis.Array.from({ length: b * n }, () => rnd() < 0.6);
          for (let i = 0; i < b; i++) mask[i * n + Math.floor(rnd() * n)] = true; // at least one valid token per row
          const other = tokens.map((t, i) => (mask[i] ? t : Math.floor(rnd() * 9)));
          const pl = globalThis.Array.from({ length: b }, () => Math.floor(rnd() * (n + 1)));
          const run = (t: number[]): number[] =>
            host(
              rm.apply(params, np.array(t, { dtype: "int32", shape: [b, n] }), {
                config,
                promptLengths: np.array(pl, { dtype: "int32", shape: [b] }),
                mask: np.array(mask, { dtype: "bool", shape: [b, n] }),
              }),
            );
          close(run(other), run(tokens), 1e-10, 1e-12, "rewards");
        },
      ),
      fcParams(30),
    );
  });
});

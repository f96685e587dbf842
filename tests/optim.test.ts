/**
 * @file Tests of the optax-style optimisers and schedules (src/nn/optim.ts). Every expected value is
 * computed by hand here, in JS doubles, from the published update rules (Adam, AdamW, Lion, SGD with
 * (Nesterov) momentum, global-norm clipping, optax's MultiSteps and schedule formulas), on float64
 * params so that the comparison is tight.
 */
import "../src/index.js";
import { describe, expect, it } from "vitest";
import type { Value } from "../src/autodiff/core.js";
import { ArgumentError, TreeMismatchError } from "../src/autodiff/errors.js";
import { grad, jit, np, tree } from "../src/index.js";
import type { Array as WArray } from "../src/ops/array.js";
import * as random from "../src/ops/random.js";
import * as optim from "../src/nn/optim.js";
import * as palm from "../src/nn/palm.js";

const data = (v: Value): number[] => globalThis.Array.from((v as WArray).dataSync(), Number);
const f64 = (x: number[]): Value => np.array(x, { dtype: "float64" });
const num = (v: Value): number => data(v)[0]!;

function expectClose(actual: number[], expected: number[], tol = 1e-14): void {
  expect(actual.length).toBe(expected.length);
  actual.forEach((a, i) => expect(Math.abs(a - expected[i]!), `index ${i}: ${a} vs ${expected[i]}`).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(expected[i]!))));
}

/** Params {w: [4], b: [2]} and two gradient trees, as plain numbers and as float64 arrays. */
const P = { w: [0.5, -1.5, 2.0, 0.0], b: [3.0, -0.25] };
const G1 = { w: [0.2, -0.7, 1e-3, 3.0], b: [-2.0, 0.05] };
const G2 = { w: [-0.1, 0.4, 2.0, -1.0], b: [1.5, 0.0] };
const asTree = (t: { w: number[]; b: number[] }) => ({ w: f64(t.w), b: f64(t.b) });
const flatOf = (t: { w: Value; b: Value }): number[] => [...data(t.b), ...data(t.w)]; // sorted keys: b, w
const flatNum = (t: { w: number[]; b: number[] }): number[] => [...t.b, ...t.w];

/** Runs `opt` for the given gradient trees, returning the update of each step (flattened b then w). */
function run(opt: optim.GradientTransformation, grads: { w: number[]; b: number[] }[], params = P): number[][] {
  let p = asTree(params);
  let s = opt.init(p);
  const out: number[][] = [];
  for (const g of grads) {
    const [u, s2] = opt.update(asTree(g), s, p);
    out.push(flatOf(u));
    p = optim.applyUpdates(p, u);
    s = s2;
  }
  return out;
}

describe("optimisers: closed-form steps", () => {
  const p = flatNum(P);
  const g1 = flatNum(G1);
  const g2 = flatNum(G2);

  it("sgd: -lr·g", () => {
    const [u] = run(optim.sgd(0.1), [G1]);
    expectClose(u!, g1.map((g) => -0.1 * g));
  });

  it("sgd with momentum: two steps", () => {
    const [u1, u2] = run(optim.sgd(0.1, { momentum: 0.9 }), [G1, G2]);
    expectClose(u1!, g1.map((g) => -0.1 * g));
    expectClose(u2!, g2.map((g, i) => -0.1 * (g + 0.9 * g1[i]!)));
  });

  it("sgd with Nesterov momentum: two steps", () => {
    const [u1, u2] = run(optim.sgd(0.1, { momentum: 0.9, nesterov: true }), [G1, G2]);
    expectClose(u1!, g1.map((g) => -0.1 * (g + 0.9 * g)));
    expectClose(u2!, g2.map((g, i) => -0.1 * (g + 0.9 * (g + 0.9 * g1[i]!))));
  });

  it("adam: the first step moves each weight by -lr·sign(g) (up to eps), the second by the bias-corrected ratio", () => {
    const lr = 0.01;
    const eps = 1e-8;
    const [u1, u2] = run(optim.adam(lr), [G1, G2]);
    expectClose(u1!, g1.map((g) => (-lr * g) / (Math.abs(g) + eps)));
    // the sign part: every |update| is lr unless g is tiny next to eps
    u1!.forEach((u, i) => expect(Math.abs(Math.abs(u) - lr)).toBeLessThan(lr * 1e-5 + (g1[i] === 0 ? lr : 0)));
    const want2 = g2.map((g, i) => {
      const m = 0.9 * (0.1 * g1[i]!) + 0.1 * g;
      const v = 0.999 * (0.001 * g1[i]! ** 2) + 0.001 * g * g;
      const mHat = m / (1 - 0.9 ** 2);
      const vHat = v / (1 - 0.999 ** 2);
      return (-lr * mHat) / (Math.sqrt(vHat) + eps);
    });
    expectClose(u2!, want2, 1e-12);
  });

  it("adamw: decoupled weight decay -lr·(adam + wd·p), only where the mask says", () => {
    const lr = 0.01;
    const wd = 0.1;
    const [u] = run(optim.adamw(lr, { weightDecay: wd }), [G1]);
    expectClose(u!, g1.map((g, i) => -lr * (g / (Math.abs(g) + 1e-8) + wd * p[i]!)));
    const [um] = run(optim.adamw(lr, { weightDecay: wd, mask: { w: true, b: false } }), [G1]);
    expectClose(um!, g1.map((g, i) => -lr * (g / (Math.abs(g) + 1e-8) + (i >= 2 ? wd * p[i]! : 0))));
    const [uf] = run(optim.adamw(lr, { weightDecay: wd, mask: (t: { w: unknown; b: unknown }) => ({ w: false, b: t.b !== undefined }) }), [G1]);
    expectClose(uf!, g1.map((g, i) => -lr * (g / (Math.abs(g) + 1e-8) + (i < 2 ? wd * p[i]! : 0))));
    expect(() => optim.adamw(lr).update(asTree(G1), optim.adamw(lr).init(asTree(P)))).toThrow(ArgumentError);
  });

  it("lion: sign updates from interpolated momentum", () => {
    const lr = 1e-3;
    const wd = 0.01;
    const g2b = { w: [-0.05, 0.4, 2.0, -1.0], b: [1.5, 0.0] };
    const [u1, u2] = run(optim.lion(lr, { weightDecay: wd }), [{ w: [10, -0.7, 1e-3, 3.0], b: [-2.0, 0.05] }, g2b]);
    const ga = [-2.0, 0.05, 10, -0.7, 1e-3, 3.0];
    expectClose(u1!, ga.map((g, i) => -lr * (Math.sign(g) + wd * p[i]!)));
    const p1 = p.map((x, i) => x + u1![i]!);
    const gb = flatNum(g2b);
    const want2 = gb.map((g, i) => -lr * (Math.sign(0.1 * g + 0.9 * (0.01 * ga[i]!)) + wd * p1[i]!));
    expectClose(u2!, want2);
    // w[0]: g2 = -0.05 but the momentum from g1 = 10 keeps the step positive-direction (sign +1)
    expect(Math.sign(want2[2]!)).toBe(-1);
  });

  it("clipByGlobalNorm scales to exactly maxNorm and leaves small gradients alone", () => {
    const clip = optim.clipByGlobalNorm(1);
    const g = { a: f64([3, 0]), b: [f64([4])] };
    const [u] = clip.update(g, clip.init(g));
    expectClose([...data(u.a), ...data(u.b[0])], [0.6, 0, 0.8]);
    expect(Math.abs(num(optim.globalNorm(u)) - 1)).toBeLessThan(1e-15);
    const [same] = optim.clipByGlobalNorm(10).update(g, {});
    expectClose([...data(same.a), ...data(same.b[0])], [3, 0, 4]);
  });

  it("chain applies in order: clip then sgd", () => {
    const opt = optim.chain(optim.clipByGlobalNorm(1), optim.sgd(0.5));
    const [u] = run(opt, [G1]);
    const n = Math.sqrt(g1.reduce((a, x) => a + x * x, 0));
    expectClose(u!, g1.map((g) => (-0.5 * g) / n));
  });

  it("masked applies the inner transformation to selected leaves only", () => {
    const opt = optim.masked(optim.sgd(0.1), { w: true, b: false });
    const [u] = run(opt, [G1]);
    expectClose(u!, [...G1.b, ...G1.w.map((g) => -0.1 * g)]);
  });

  it("multiSteps(k = 3) emits the inner update of the mean gradient every 3rd call, zeros otherwise", () => {
    const G3 = { w: [0.3, 0.25, -0.3, 0.5], b: [0.7, 1.0] }; // no window mean is 0 (adam at g ≈ 0 is ill-conditioned)
    const g3 = flatNum(G3);
    const us = run(optim.multiSteps(optim.adam(0.01), 3), [G1, G2, G3, G2, G1, G3]);
    expectClose(us[0]!, [0, 0, 0, 0, 0, 0]);
    expectClose(us[1]!, [0, 0, 0, 0, 0, 0]);
    const mean = g1.map((x, i) => (x + g2[i]! + g3[i]!) / 3);
    expectClose(us[2]!, mean.map((g) => (-0.01 * g) / (Math.abs(g) + 1e-8)), 1e-12); // adam's first step
    expectClose(us[4]!, [0, 0, 0, 0, 0, 0]);
    // the second window's update is adam's *second* step: the inner state advanced exactly once
    const mean2 = g2.map((x, i) => (x + g1[i]! + g3[i]!) / 3);
    const want = mean2.map((g, i) => {
      const m = 0.9 * 0.1 * mean[i]! + 0.1 * g;
      const v = 0.999 * 0.001 * mean[i]! ** 2 + 0.001 * g * g;
      return (-0.01 * (m / (1 - 0.81))) / (Math.sqrt(v / (1 - 0.999 ** 2)) + 1e-8);
    });
    expectClose(us[5]!, want, 1e-12);
  });

  it("applyUpdates keeps each param's dtype; states count steps as int32 arrays", () => {
    const p32 = { w: np.array([1, 2], { dtype: "float32" }) };
    const opt = optim.adam(0.1);
    const s = opt.init(p32);
    const [u, s2] = opt.update({ w: np.array([1, -1], { dtype: "float32" }) }, s, p32);
    expect(optim.applyUpdates(p32, u).w.aval.dtype).toBe("float32");
    expect(s2[0].count.aval.dtype).toBe("int32");
    expect(num(s2[0].count)).toBe(1);
  });

  it("rejects bad arguments and mismatched masks", () => {
    expect(() => optim.sgd(0.1, { nesterov: true })).toThrow(ArgumentError);
    expect(() => optim.multiSteps(optim.sgd(1), 0)).toThrow(ArgumentError);
    expect(() => optim.clipByGlobalNorm(0)).toThrow(ArgumentError);
    expect(() => run(optim.adamw(0.1, { mask: { w: true } }), [G1])).toThrow(TreeMismatchError);
  });
});

describe("schedules", () => {
  const at = (s: optim.Schedule, steps: number[]) => steps.map((t) => num(s(t)));

  it("constant and linear", () => {
    expectClose(at(optim.constantSchedule(0.3), [0, 10]), [0.3, 0.3], 1e-7);
    expectClose(at(optim.linearSchedule(1, 0, 10), [0, 5, 10, 15]), [1, 0.5, 0, 0], 1e-7);
    expectClose(at(optim.linearSchedule(0, 2, 4, 3), [0, 3, 5, 7, 9]), [0, 0, 1, 2, 2], 1e-7);
    expectClose(at(optim.linearWarmup(1e-3, 100), [0, 25, 100, 1000]), [0, 2.5e-4, 1e-3, 1e-3], 1e-7);
  });

  it("cosine decay", () => {
    const s = optim.cosineDecaySchedule(2, 100, { alpha: 0.1 });
    // 2·((1-α)·½(1+cos(πt/T)) + α)
    const want = (t: number) => 2 * (0.9 * 0.5 * (1 + Math.cos((Math.PI * Math.min(t, 100)) / 100)) + 0.1);
    expectClose(at(s, [0, 25, 50, 100, 200]), [0, 25, 50, 100, 200].map(want), 1e-6);
    expectClose(at(s, [50, 100]), [1.1, 0.2], 1e-6);
  });

  it("warmup + cosine: linear to the peak, then cosine to the end value over decaySteps (which include the warm-up)", () => {
    const s = optim.warmupCosineDecaySchedule({ initValue: 0, peakValue: 1, warmupSteps: 10, decaySteps: 110, endValue: 0.1 });
    const cos = (t: number) => 0.9 * 0.5 * (1 + Math.cos((Math.PI * t) / 100)) + 0.1;
    expectClose(at(s, [0, 5, 10, 35, 60, 110, 500]), [0, 0.5, 1, cos(25), cos(50), 0.1, 0.1], 1e-6);
    expect(() => optim.warmupCosineDecaySchedule({ peakValue: 1, warmupSteps: 10, decaySteps: 10 })).toThrow(ArgumentError);
  });

  it("a schedule as the learning rate is evaluated at the step count", () => {
    const us = run(optim.sgd(optim.linearSchedule(1, 0, 4)), [G1, G1, G1]);
    const g1 = flatNum(G1);
    [1, 0.75, 0.5].forEach((lr, k) => expectClose(us[k]!, g1.map((g) => -lr * g), 1e-7));
  });
});

describe("under jit", () => {
  it("a jitted adamw / multiSteps / schedule step equals the eager step", () => {
    const opt = optim.chain(
      optim.clipByGlobalNorm(2),
      optim.multiSteps(optim.adamw(optim.warmupCosineDecaySchedule({ peakValue: 0.1, warmupSteps: 2, decaySteps: 8 }), { weightDecay: 0.1 }), 2),
    );
    const step = (p: any, s: any, g: any) => {
      const [u, s2] = opt.update(g, s, p);
      return [optim.applyUpdates(p, u), s2];
    };
    const jstep = jit(step);
    let pe: any = asTree(P);
    let pj: any = asTree(P);
    let se = opt.init(pe);
    let sj = opt.init(pj);
    for (const g of [G1, G2, G1, G2, G2]) {
      [pe, se] = step(pe, se, asTree(g));
      [pj, sj] = jstep(pj, sj, asTree(g));
    }
    expectClose(flatOf(pj), flatOf(pe), 1e-13);
    expect(tree.leaves(sj).length).toBe(tree.leaves(se).length);
  });

  it("end to end: jitted adamw steps on a tiny PaLM lower the loss", () => {
    const config: palm.PalmConfig = { numTokens: 16, dim: 16, depth: 1, heads: 2, dimHead: 8 };
    let params: any = palm.init(random.key(0), config);
    const tokens = np.array([[1, 2, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1]], { dtype: "int32" });
    const opt = optim.adamw(3e-3, { weightDecay: 0.01, mask: { tokenEmb: false, layers: true, norm: false } });
    const lossFn = (p: any) => palm.loss(p, tokens, { config });
    const step = jit((p: any, s: any) => {
      const g = grad(lossFn)(p);
      const [u, s2] = opt.update(g, s, p);
      return [optim.applyUpdates(p, u), s2];
    });
    let state = opt.init(params);
    const first = num(lossFn(params));
    for (let i = 0; i < 15; i++) [params, state] = step(params, state);
    const last = num(lossFn(params));
    expect(last).toBeLessThan(first - 0.3);
  });
});

/**
 * @file The jit compiler's backend-neutral half (src/ops/compile/): kernel graphs recorded from the
 * primitives' `lower` rules, fusion, and the static memory plan, on jaxprs from `makeJaxpr` (no device
 * needed). Kernel counts are asserted on programs whose fusion is known: an MLP forward with a bias add
 * and a GELU is one kernel per matmul (the epilogue fuses); softmax, logsumexp and layer norm are one
 * reduce kernel; chains of elementwise ops through broadcasts, transposes and casts are one map kernel.
 * The memory plan of a PaLM block's forward and backward pass needs less than the sum of its
 * intermediates.
 */
import { describe, expect, it } from "vitest";
import { grad, jit, lax, makeJaxpr, nn, np, palm, random, type Array as WArray, type Value } from "../src/index.js";
import { planJaxpr, planMemory } from "../src/ops/compile/index.js";
import { kernelWrites } from "../src/ops/compile/memory-plan.js";

const cfg = { numTokens: 32, dim: 16, depth: 1, heads: 2, dimHead: 8 };

const zeros = (shape: number[], dtype: "float32" | "int32" = "float32") => np.zeros(shape, { dtype });
const plan = (f: (...xs: Value[]) => unknown, ...args: unknown[]) => planJaxpr(makeJaxpr(f)(...args).jaxpr);

describe("fusion of known programs", () => {
  it("elementwise chains with broadcasts, casts, where and transposes are one map kernel", () => {
    const f = (x: Value, b: Value, y: Value) => {
      const h = np.tanh(np.add(np.multiply(x, 2), b)); // b broadcast along rows
      const m = np.where(np.greater(h, 0), h, np.multiply(h, 0.1));
      return np.add(np.exp(np.transpose(m)), np.astype(y, "float32"));
    };
    const p = plan(f, zeros([8, 16]), zeros([16]), zeros([16, 8], "int32"));
    expect(p.kernels).toBe(1);
    expect(p.byKind.map).toBe(1);
  });

  it("sin and cos of small angles broadcast into a large kernel are computed once, not per element", () => {
    // RoPE-like: [seq, d] angles, their sin and cos read by a [batch, seq, d] kernel (32x larger), and
    // reused by several consumers (the case the rematerialisation would otherwise inline).
    const f = (x: Value, a: Value) => {
      const s = np.sin(np.multiply(a, 0.5));
      const c = np.cos(np.multiply(a, 0.5));
      return [np.add(np.multiply(x, c), np.multiply(np.flip(x, -1), s)), np.subtract(np.multiply(x, s), c)];
    };
    const p = plan(f, zeros([32, 16, 8]), zeros([16, 8]));
    const big = p.text.split("\n").filter((l) => /^k\d+: map \[32,16,8\]/.test(l));
    expect(big.length, p.text).toBeGreaterThan(0);
    // The trigonometric nodes run in kernels over the [16, 8] angles only.
    const small = p.text.split("\n").filter((l) => /^k\d+: map \[16,8\]/.test(l));
    expect(small.length, p.text).toBeGreaterThan(0);
    // And the results equal the unfused arithmetic (eager) exactly: same float32 ops either way.
    const x = np.array(Float32Array.from({ length: 32 * 16 * 8 }, (_, i) => Math.sin(i)), { shape: [32, 16, 8] });
    const a = np.array(Float32Array.from({ length: 16 * 8 }, (_, i) => i / 7), { shape: [16, 8] });
    const got = jit(f)(x, a) as Value[];
    const want = f(x, a) as Value[];
    for (let k = 0; k < 2; k++) expect(Array.from((got[k] as WArray).dataSync())).toEqual(Array.from((want[k] as WArray).dataSync()));
  });

  it("a costly function of a scalar read by a large kernel (Adam's b^t) is computed once, in its own kernel", () => {
    // Adam's bias corrections: m / (1 - b1^t) with t the step count. Fused into the [64, 64] kernel,
    // pow (and exp) would run once per element (and keep that kernel off the Wasm SIMD path: pow has no
    // SIMD form); computed once, they cost one scalar kernel.
    const f = (m: Value, v: Value, t: Value) => {
      const mHat = np.divide(m, np.subtract(1, np.power(np.full([], 0.9), t)));
      const vHat = np.divide(v, np.subtract(1, np.exp(np.multiply(t, -0.001))));
      return np.divide(mHat, np.add(np.sqrt(vHat), 1e-8));
    };
    const p = plan(f, zeros([64, 64]), zeros([64, 64]), zeros([]));
    const lines = p.text.split("\n");
    expect(lines.filter((l) => /^k\d+: map \[64,64\]/.test(l)).length, p.text).toBe(1);
    expect(lines.filter((l) => /^k\d+: map \[\]/.test(l)).length, p.text).toBe(1);
    expect(p.kernels, p.text).toBe(2);
    // The same float32 operations as eagerly, so the same bits.
    const m = np.array(Float32Array.from({ length: 64 * 64 }, (_, i) => Math.sin(i)), { shape: [64, 64] });
    const v = np.array(Float32Array.from({ length: 64 * 64 }, (_, i) => 1 + Math.cos(i)), { shape: [64, 64] });
    const t = np.array(7);
    expect(Array.from((jit(f)(m, v, t) as WArray).dataSync())).toEqual(Array.from((f(m, v, t) as WArray).dataSync()));
  });

  it("an MLP forward with bias adds and GELUs: one kernel per matmul (epilogue fused)", () => {
    const mlp = (x: Value, w1: Value, b1: Value, w2: Value, b2: Value, w3: Value, b3: Value) => {
      const h1 = nn.gelu(np.add(np.matmul(x, w1), b1));
      const h2 = nn.gelu(np.add(np.matmul(h1, w2), b2));
      return np.add(np.matmul(h2, w3), b3);
    };
    const p = plan(mlp, zeros([32, 64]), zeros([64, 128]), zeros([128]), zeros([128, 128]), zeros([128]), zeros([128, 10]), zeros([10]));
    expect(p.byKind.dot).toBe(3);
    expect(p.kernels).toBe(3);
  });

  it("softmax, logsumexp, layer norm: one reduce kernel each (at most two allowed)", () => {
    const x = zeros([16, 100]);
    const sm = plan((v: Value) => nn.softmax(v, { axis: -1 }), x);
    expect(sm.kernels).toBeLessThanOrEqual(2);
    expect(sm.kernels).toBe(1);
    const lse = plan((v: Value) => np.logsumexp(v, { axis: 1 }), x);
    expect(lse.kernels).toBe(1);
    const ln = plan((v: Value, g: Value) => palm.layerNorm(v, g), x, zeros([100]));
    expect(ln.kernels).toBe(1);
  });

  it("cross-entropy from logits is at most two kernels (per-row, then the mean)", () => {
    const ce = plan(
      (logits: Value, labels: Value) => np.mean(nnLoss(logits, labels)),
      zeros([16, 10]),
      zeros([16], "int32"),
    );
    expect(ce.kernels - ce.byKind.opaque).toBeLessThanOrEqual(2);
  });

  it("transpose(dot) is computed as the swapped dot (no copy kernel)", () => {
    const p = plan((a: Value, b: Value) => np.transpose(np.matmul(a, b)), zeros([64, 32]), zeros([32, 48]));
    expect(p.kernels).toBe(1);
    expect(p.byKind.dot).toBe(1);
  });

  it("the gradient of an MLP loss fuses to far fewer kernels than primitives", () => {
    const loss = (w1: Value, b1: Value, w2: Value, x: Value, y: Value) =>
      np.mean(np.square(np.subtract(np.matmul(nn.gelu(np.add(np.matmul(x, w1), b1)), w2), y)));
    const g = (...a: Value[]) => grad(loss, { argnums: [0, 1, 2] })(...(a as [Value, Value, Value, Value, Value]));
    const cj = makeJaxpr(g)(zeros([16, 32]), zeros([32]), zeros([32, 8]), zeros([4, 16]), zeros([4, 8]));
    const p = planJaxpr(cj.jaxpr);
    const prims = cj.jaxpr.eqns.length;
    expect(p.byKind.dot).toBe(5); // forward 2, backward 3 (no input gradient)
    expect(p.kernels).toBeLessThanOrEqual(8);
    expect(p.kernels * 4).toBeLessThan(prims);
  });

  it("higher-order primitives split the program and run through bind", () => {
    expect(plan((x: Value) => np.sin(x), zeros([3])).boundEqns).toBe(0);
    const s = plan((x: Value) => lax.scan((c: Value, v: Value) => [np.add(c, v), np.sin(c)], np.sum(x), x)[1] as Value, zeros([5]));
    expect(s.boundEqns).toBe(1);
  });

  it("unfused planning (fuse: false) has one kernel per compute op", () => {
    const f = (x: Value) => np.exp(np.sin(np.cos(x)));
    const cj = makeJaxpr(f)(zeros([4]));
    expect(planJaxpr(cj.jaxpr, { fuse: false }).kernels).toBe(3);
    expect(planJaxpr(cj.jaxpr).kernels).toBe(1);
  });
});

function nnLoss(logits: Value, labels: Value): Value {
  const lse = np.logsumexp(logits, { axis: -1 });
  const picked = np.sum(np.multiply(logits, nn.oneHot(labels, logits.shape[1]!)), { axis: -1 });
  return np.subtract(lse, picked);
}

describe("static memory plan", () => {
  it("a PaLM block's forward and backward pass peaks below the sum of its intermediates", () => {
    const config = { numTokens: 64, dim: 32, depth: 1, heads: 2, dimHead: 16 };
    const params = palm.init(random.key(0), config);
    const tokens = np.zeros([2, 16], { dtype: "int32" });
    const lossGrad = grad((p: palm.PalmParams) => palm.loss(p, tokens, { config }));
    const cj = makeJaxpr(lossGrad)(params);
    const p = planJaxpr(cj.jaxpr);
    expect(p.intermediateBytes).toBeGreaterThan(0);
    expect(p.peakBytes).toBeLessThan(p.intermediateBytes);
  });

  it("slots are never shared by two intermediates alive at once", () => {
    const f = (x: Value) => {
      const a = np.sum(np.exp(x), { axis: 0 }); // intermediate kept until the end
      const b = np.sum(np.sin(x), { axis: 1 });
      const c = np.sum(np.cos(b));
      return np.add(np.sum(a), c);
    };
    for (const cj of [
      makeJaxpr(f)(zeros([8, 8])),
      makeJaxpr(grad((p: palm.PalmParams) => palm.loss(p, np.zeros([2, 8], { dtype: "int32" }), { config: cfg })))(
        palm.init(random.key(1), cfg),
      ),
    ]) {
      for (const fp of planJaxpr(cj.jaxpr, { merge: false }).plans) {
        const mem = planMemory(fp, () => 4);
        // Live range of each intermediate: [kernel writing it, last kernel reading it].
        const range = new Map<number, [number, number]>();
        fp.kernels.forEach((k, i) => {
          for (const n of kernelWrites(k)) if (mem.slotOf.has(n)) range.set(n, [i, mem.lastUse.get(n) ?? i]);
        });
        const nodes = [...range.keys()];
        for (const a of nodes) {
          for (const b of nodes) {
            if (a >= b || mem.slotOf.get(a) !== mem.slotOf.get(b)) continue;
            const [a0, a1] = range.get(a)!;
            const [b0, b1] = range.get(b)!;
            expect(a1 < b0 || b1 < a0, `intermediates %${a} [${a0},${a1}] and %${b} [${b0},${b1}] share slot ${mem.slotOf.get(a)}`).toBe(true);
          }
          // A slot holds its largest tenant.
          const bytes = fp.graph.node(a).shape.reduce((x, y) => x * y, 1) * 4;
          expect(mem.slotBytes[mem.slotOf.get(a)!]!).toBeGreaterThanOrEqual(bytes);
        }
      }
    }
  });
});

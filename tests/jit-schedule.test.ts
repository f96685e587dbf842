/**
 * @file The jit compiler's kernel schedule and donation (src/ops/compile/fusion.ts `donationEdges`,
 * memory-plan.ts `planDonation`), and the targets' dot-operand repacking switch (`repackDots`).
 *
 * - An MLP training step jitted with its params donated: every param's update is written into the
 *   donated storage (checked on the arrays' CPU storage and on the memory plan's `donations`, for the
 *   CPU target's plan and for a WebGPU-like plan with repacked operands), and three steps equal a
 *   float64 reference written out by hand (forward, backward, SGD in plain loops).
 * - A program whose update is computed before a matmul that still reads the old parameter: the
 *   schedule moves the update after that read, so the donated buffer is written in place.
 * - Property (fast-check, the shared random programs of tests/property/random-programs.ts): updates of
 *   donated inputs computed first, then a random program reading those inputs, then more updates; jit
 *   with donation equals eager without donation, donated caller arrays are disposed (unless returned
 *   as they are), and with the donation known to the planner no donated input is left without an
 *   output it could take: checked by a search of its own over the plan's data dependencies (and the
 *   orders the other donations need), not by the planner's code.
 * - Kernels over the buffer limit (WebGPU's binding limit): independent ones are split in the same
 *   re-plans, so three take as many planning passes as one.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Var } from "../src/autodiff/jaxpr.js";
import { CpuBuffer } from "../src/ops/backend/cpu/buffer.js";
import { installCpuJitTarget } from "../src/ops/backend/cpu/compile/index.js";
import { cpuInPlaceSafe, cpuJitTarget } from "../src/ops/backend/cpu/compile/target.js";
import { buildSegments, flattenJaxpr, installJitCompiler, planFusion, planMemory, resetJitStats, lastJitStats, uninstallJitCompiler } from "../src/ops/compile/index.js";
import { describePlan, type FusionOptions, type FusionPlan } from "../src/ops/compile/fusion.js";
import { kernelReads, kernelWrites, type MemoryPlan } from "../src/ops/compile/memory-plan.js";
import { shapeSize } from "../src/autodiff/aval.js";
import { devices, dispose, grad, jit, makeJaxpr, nn, np, tree, Array as WArray, type Value } from "../src/index.js";
import { assertClose, fcParams, Rng, type HostArray } from "./property/harness.js";
import { progArb, programData, runProgram, type Prog } from "./property/random-programs.js";

beforeAll(() => {
  installJitCompiler();
  installCpuJitTarget();
});
afterAll(() => uninstallJitCompiler());

const cpu = () => devices().find((d) => d.id === "cpu")!;
/** The CPU storage of an array (tests only). */
const storage = (a: Value): unknown => ((a as WArray).buffer as CpuBuffer).data;
const host = (v: Value): HostArray => ({
  shape: [...v.shape],
  dtype: v.dtype,
  data: Float64Array.from((v as WArray).dataSync() as ArrayLike<number>, Number),
});
const CPU_OPTS: FusionOptions = cpuJitTarget.fusionOptions(cpu());
/** What the WebGPU target asks for (vec4 repacking of dot operands), without needing an adapter. */
const GPU_OPTS: FusionOptions = { maxBuffers: 8, repackDots: true };

/**
 * Donations the memory plan reports for `f` at `args` (one compiled segment), with the donated
 * arguments known to the planner as they are to a target. `donate[i]`: whether flat argument i is.
 */
function plannedDonations(f: (...a: any[]) => unknown, args: unknown[], donate: (i: number) => boolean, opts: FusionOptions, safe = cpuInPlaceSafe) {
  const cj = makeJaxpr(f)(...args);
  const flat = flattenJaxpr(cj.jaxpr);
  // (captured constants are the jaxpr's constvars, apart from its invars: the arguments)
  const donatedVars = new Set<Var>(flat.invars.filter((_, i) => donate(i)));
  const { segments } = buildSegments(flat);
  const graphs = segments.filter((s) => s.kind === "graph");
  expect(graphs.length).toBe(1);
  const s = graphs[0]!;
  const donated = s.inVars.map((v) => donatedVars.has(v));
  const plan = planFusion(s.graph, { ...opts, donated });
  const mem = planMemory(plan, () => 4, 16, { donated, inPlaceSafe: safe });
  return { plan, mem, donated };
}

/**
 * Checks the schedule's donation property on a plan: for every donated input that takes no output,
 * each output it could take (same dtype and size, stored by a generated kernel W, not taken by another
 * input) is impossible whatever the order: W reads the input other than in place, or another reader
 * of the input depends on W (through data, or the orders the other donations need).
 */
function expectNoMissedDonation(plan: FusionPlan, mem: MemoryPlan, donated: readonly boolean[], safe = cpuInPlaceSafe): void {
  const g = plan.graph;
  const writer = new Map<number, number>();
  plan.kernels.forEach((k, i) => {
    if (k.kind === "opaque") for (const n of g.nodes) if (n.op.kind === "proj" && n.inputs[0] === k.node) writer.set(n.id, i);
    for (const r of kernelWrites(k)) writer.set(r, i);
  });
  const readers = (x: number) => plan.kernels.flatMap((k, i) => (kernelReads(k).includes(x) ? [i] : []));
  const deps = plan.kernels.map((k) => new Set(kernelReads(k).flatMap((n) => (writer.has(n) ? [writer.get(n)!] : []))));
  for (const d of mem.donations) for (const r of readers(d.node)) if (r !== d.kernel) deps[d.kernel]!.add(r);
  const dependsOn = (a: number, b: number): boolean => {
    const stack = [a];
    const seen = new Set<number>();
    while (stack.length) {
      const x = stack.pop()!;
      if (x === b) return true;
      if (seen.has(x)) continue;
      seen.add(x);
      stack.push(...deps[x]!);
    }
    return false;
  };
  const paired = new Set(mem.donations.map((d) => d.node));
  const used = new Set(mem.donations.map((d) => d.output));
  const donatedNodes = g.nodes.filter((n) => n.op.kind === "input" && donated[n.op.index] === true);
  for (const x of donatedNodes) {
    if (paired.has(x.id) || shapeSize(x.shape) === 0) continue;
    for (const o of g.outputs) {
      const on = g.node(o);
      const w = writer.get(o);
      if (used.has(o) || w === undefined || plan.kernels[w]!.kind === "opaque") continue;
      if (on.dtype !== x.dtype || shapeSize(on.shape) !== shapeSize(x.shape)) continue;
      const rs = readers(x.id);
      if (rs.includes(w) && !safe(plan.kernels[w]!, x.id, o)) continue;
      expect(rs.some((r) => r !== w && dependsOn(r, w)), `donated input %${x.id} could take output %${o}:\n${describePlan(plan)}`).toBe(true);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// MLP training step, float64 reference by hand

const B = 64;
const W = 64;
const C = 10;
const LR = 0.05;
type Params = Record<"w1" | "b1" | "w2" | "b2" | "w3" | "b3", Value>;

const mlpLoss = (p: Params, x: Value, labels: Value): Value => {
  const h1 = nn.gelu(np.add(np.matmul(x, p.w1), p.b1));
  const h2 = nn.gelu(np.add(np.matmul(h1, p.w2), p.b2));
  const logits = np.add(np.matmul(h2, p.w3), p.b3);
  const lse = np.logsumexp(logits, { axis: -1 });
  return np.mean(np.subtract(lse, np.sum(np.multiply(logits, labels), { axis: -1 })));
};
const sgd = (p: Params, x: Value, labels: Value): Params => {
  const g = grad(mlpLoss)(p, x, labels) as Params;
  return tree.map((a: Value, b: Value) => np.subtract(a, np.multiply(b, LR)), p, g) as Params;
};

type H = Record<keyof Params, Float64Array>;
/** y[m, n] = Σ_k a[m, k] b[k, n] with a read as aᵀ when `ta` (a stored [k, m]), b as bᵀ when `tb`. */
function mm(a: Float64Array, b: Float64Array, m: number, k: number, n: number, ta = false, tb = false): Float64Array {
  const y = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let q = 0; q < k; q++) s += (ta ? a[q * m + i]! : a[i * k + q]!) * (tb ? b[j * k + q]! : b[q * n + j]!);
      y[i * n + j] = s;
    }
  return y;
}
const GC = Math.sqrt(2 / Math.PI);
const geluF = (z: number) => 0.5 * z * (1 + Math.tanh(GC * (z + 0.044715 * z ** 3)));
/** d/dz of the tanh-form GELU. */
const geluD = (z: number) => {
  const t = Math.tanh(GC * (z + 0.044715 * z ** 3));
  return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * GC * (1 + 3 * 0.044715 * z * z);
};

/** One SGD step of the MLP in float64: forward, backward by the chain rule, update. */
function sgdRef(p: H, x: Float64Array, labels: Float64Array): H {
  const addBias = (z: Float64Array, b: Float64Array, n: number) => z.map((v, i) => v + b[i % n]!);
  const z1 = addBias(mm(x, p.w1, B, W, W), p.b1, W);
  const h1 = z1.map(geluF);
  const z2 = addBias(mm(h1, p.w2, B, W, W), p.b2, W);
  const h2 = z2.map(geluF);
  const logits = addBias(mm(h2, p.w3, B, W, C), p.b3, C);
  // d mean(lse - Σ logits·labels) / d logits = (softmax - labels) / B
  const dl = new Float64Array(B * C);
  for (let i = 0; i < B; i++) {
    const row = logits.subarray(i * C, i * C + C);
    const mx = Math.max(...row);
    const e = Array.from(row, (v) => Math.exp(v - mx));
    const s = e.reduce((a, b) => a + b, 0);
    for (let j = 0; j < C; j++) dl[i * C + j] = (e[j]! / s - labels[i * C + j]!) / B;
  }
  const colSum = (g: Float64Array, n: number) => {
    const out = new Float64Array(n);
    g.forEach((v, i) => (out[i % n] += v));
    return out;
  };
  const dw3 = mm(h2, dl, W, B, C, true);
  const db3 = colSum(dl, C);
  const dz2 = mm(dl, p.w3, B, C, W, false, true).map((v, i) => v * geluD(z2[i]!));
  const dw2 = mm(h1, dz2, W, B, W, true);
  const db2 = colSum(dz2, W);
  const dz1 = mm(dz2, p.w2, B, W, W, false, true).map((v, i) => v * geluD(z1[i]!));
  const dw1 = mm(x, dz1, W, B, W, true);
  const db1 = colSum(dz1, W);
  const upd = (a: Float64Array, g: Float64Array) => a.map((v, i) => v - LR * g[i]!);
  return { w1: upd(p.w1, dw1), b1: upd(p.b1, db1), w2: upd(p.w2, dw2), b2: upd(p.b2, db2), w3: upd(p.w3, dw3), b3: upd(p.b3, db3) };
}

const SHAPES: Record<keyof Params, number[]> = { w1: [W, W], b1: [W], w2: [W, W], b2: [W], w3: [W, C], b3: [C] };
const KEYS = Object.keys(SHAPES) as (keyof Params)[];

describe("donation in an MLP training step", () => {
  const rng = new Rng(7);
  // float32-representable data, so the float64 reference starts from the very same numbers
  const init = (n: number, scale: number) => Float64Array.from({ length: n }, () => Math.fround(rng.uniform(-scale, scale)));
  const p0 = Object.fromEntries(KEYS.map((k) => [k, init(SHAPES[k].reduce((a, b) => a * b, 1), 0.2)])) as H;
  const xData = init(B * W, 1);
  const labelData = Float64Array.from({ length: B * C }, (_, i) => (i % C === (Math.floor(i / C) * 7) % C ? 1 : 0));
  const arrays = (h: H) => Object.fromEntries(KEYS.map((k) => [k, np.array(Float32Array.from(h[k]), { shape: SHAPES[k] })])) as unknown as Params;

  // The params' order decides the program order of the updates: last layer first puts the updates of
  // w3 and w2 before the backward matmuls that read the old w3 and w2.
  const ORDERS: Record<string, (keyof Params)[]> = { "layer order": KEYS, "last layer first": ["w3", "b3", "w2", "b2", "w1", "b1"] };
  /** The step over a list of params in `order` (gradient of the list, updates in list order). */
  const listStep = (order: (keyof Params)[]) => (ps: Value[], x: Value, labels: Value): Value[] => {
    const loss = (qs: Value[]) => mlpLoss(Object.fromEntries(order.map((k, i) => [k, qs[i]!])) as Params, x, labels);
    const g = grad(loss)(ps) as Value[];
    return ps.map((a, i) => np.subtract(a, np.multiply(g[i]!, LR)));
  };

  for (const [name, order] of Object.entries(ORDERS)) {
    it(`writes every param's update into its donated storage (${name}); three steps equal a float64 reference`, () => {
      const x = np.array(Float32Array.from(xData), { shape: [B, W] });
      const labels = np.array(Float32Array.from(labelData), { shape: [B, C] });
      const step = jit(listStep(order), { donateArgnums: 0 });
      const start = arrays(p0);
      let p: Value[] = order.map((k) => start[k]);
      let ref = p0;
      for (let call = 0; call < 3; call++) {
        const before = p.map(storage);
        resetJitStats();
        const next = step(p, x, labels);
        expect(lastJitStats(), "the step ran compiled").not.toBeNull();
        expect(lastJitStats()!.donatedOutputs, "every param is planned into its donated buffer").toBe(order.length);
        order.forEach((k, i) => expect(storage(next[i]!), `${k}'s update is written in place (call ${call})`).toBe(before[i]));
        order.forEach((k, i) => {
          expect((p[i] as WArray).isDisposed, `the donated ${k} is consumed`).toBe(true);
          expect(() => np.add(p[i]!, 1)).toThrow(/dispose|donated/);
        });
        p = next;
        ref = sgdRef(ref, xData, labelData);
      }
      order.forEach((k, i) => {
        assertClose(host(p[i]!), { shape: SHAPES[k], dtype: "float32", data: ref[k] }, { rtol: 2e-4, atol: 2e-5 }, `${k} after 3 steps`, false);
      });
      dispose([p, x, labels]);
    });
  }

  it("the memory plan pairs every param with its update, in place, on the CPU and the WebGPU-like plan", () => {
    const start = arrays(p0);
    for (const order of Object.values(ORDERS)) {
      const args = [order.map((k) => start[k]), np.zeros([B, W]), np.zeros([B, C])];
      for (const [opts, safe, what] of [
        [CPU_OPTS, cpuInPlaceSafe, "cpu"],
        [GPU_OPTS, undefined, "webgpu (repacked operands, strict in-place rule)"],
      ] as const) {
        const { mem } = plannedDonations(listStep(order), args, (i) => i < KEYS.length, opts, safe);
        expect(mem.donations.length, what).toBe(KEYS.length);
        expect(
          mem.donations.every((d) => d.inPlace),
          what,
        ).toBe(true);
      }
      dispose(args.slice(1));
    }
    dispose(start);
  });

  it("the CPU plan reads dot operands as they are; the WebGPU-like plan repacks them", () => {
    const args = [arrays(p0), np.zeros([B, W]), np.zeros([B, C])];
    const copies = (opts: FusionOptions) => {
      const { plan } = plannedDonations(sgd, args, () => false, opts);
      // copies stored by any kernel (a repacking copy may be merged into another kernel of its shape)
      const roots = plan.kernels.flatMap((k) => (k.kind === "map" || k.kind === "dot" ? k.roots : k.kind === "reduce" ? [...k.rowRoots, ...k.elemRoots] : []));
      return roots.filter((r) => plan.graph.node(r).op.kind === "copy").length;
    };
    expect(copies(CPU_OPTS)).toBe(0);
    // dW·ᵀ operands (activations read transposed) and the weights read transposed by the input gradients
    expect(copies(GPU_OPTS)).toBeGreaterThan(0);
    dispose(args);
  });
});

// ---------------------------------------------------------------------------------------------------
// An update computed before the last read of the old value

describe("an update scheduled after the old value's last reader", () => {
  const N = 48;
  const M = 24;
  // The update of w comes first in program order; the matmul reading the old w comes after it.
  const f = (w: Value, x: Value) => {
    const wNew = np.subtract(w, np.multiply(0.01, np.matmul(np.transpose(x), x))); // [N, N]
    const y = np.matmul(x, w); // [M, N]
    return [wNew, y];
  };
  const rng = new Rng(3);
  const wData = Float64Array.from({ length: N * N }, () => Math.fround(rng.uniform(-1, 1)));
  const xData = Float64Array.from({ length: M * N }, () => Math.fround(rng.uniform(-1, 1)));

  it("writes the donated parameter in place and computes both results from the old value", () => {
    const w = np.array(Float32Array.from(wData), { shape: [N, N] });
    const x = np.array(Float32Array.from(xData), { shape: [M, N] });
    const old = storage(w);
    resetJitStats();
    const [wNew, y] = jit(f, { donateArgnums: 0 })(w, x) as Value[];
    expect(lastJitStats()).not.toBeNull();
    expect(storage(wNew!)).toBe(old);
    expect(w.isDisposed).toBe(true);
    expect(x.isDisposed).toBe(false);
    // float64 by hand: w - 0.01·xᵀx and x·w (the old w)
    const xtx = mm(xData, xData, N, M, N, true);
    const xw = mm(xData, wData, M, N, N);
    assertClose(host(wNew!), { shape: [N, N], dtype: "float32", data: wData.map((v, i) => v - 0.01 * xtx[i]!) }, { rtol: 1e-5, atol: 1e-5 }, "w - 0.01·xᵀx", false);
    assertClose(host(y!), { shape: [M, N], dtype: "float32", data: xw }, { rtol: 1e-5, atol: 1e-4 }, "x·w", false);
    dispose([wNew, y, x]);
  });

  it("the plan orders the update's kernel after the matmul reading w (both targets' options)", () => {
    const args = [np.zeros([N, N]), np.zeros([M, N])];
    for (const opts of [CPU_OPTS, GPU_OPTS]) {
      const { plan, mem } = plannedDonations(f, args, (i) => i === 0, opts);
      expect(mem.donations.length).toBe(1);
      const d = mem.donations[0]!;
      const readers = plan.kernels.map((k, i) => [k, i] as const).filter(([k]) => k.kind === "dot" && (k.lhs.node === d.node || k.rhs.node === d.node));
      expect(readers.length).toBe(1);
      expect(readers[0]![1]).toBeLessThan(d.kernel);
    }
    dispose(args);
  });
});

// ---------------------------------------------------------------------------------------------------
// Property: random programs reading donated inputs after their updates are computed

describe("random programs with donated inputs (fast-check)", () => {
  const arb = fc.tuple(progArb({ concat: "flip", pad: false, dtypes: ["float32"] }), fc.nat(1 << 30), fc.subarray([0, 3], { minLength: 1 }));

  /**
   * Updates of inputs 0 and 3 (both [rows, cols]) first, then the random program reading every input
   * (through views, matmuls, reductions, ...) after them, and a result that depends on everything.
   */
  const stepOf = (prog: Prog) => (a: Value, b: Value, c: Value, d: Value) => {
    const ua = np.subtract(a, np.multiply(np.tanh(d), 0.1));
    const ud = np.add(np.multiply(d, 0.5), np.sin(a));
    const outs = runProgram(prog, [a, b, c, d]);
    const s = outs.reduce((acc: Value, o) => np.add(acc, np.mean(np.sin(o))), np.mean(ud));
    return [ua, ud, ...outs, s];
  };

  it("jit with donation == eager without donation; donated arrays consumed; no donated input misses an output it could take", () => {
    fc.assert(
      fc.property(arb, ([prog, seed, donate]) => {
        const data = programData(prog, seed);
        const make = () => data.map((v, i) => np.array(Float32Array.from(v), { shape: prog.shapes[i] }));
        const f = stepOf(prog);
        const eagerIns = make();
        const want = f(...(eagerIns as unknown as [Value, Value, Value, Value]));
        const ins = make();
        resetJitStats();
        const got = jit(f, { donateArgnums: donate })(...(ins as unknown as [Value, Value, Value, Value])) as WArray[];
        try {
          expect(lastJitStats()).not.toBeNull();
          expect(got.length).toBe(want.length);
          want.forEach((w, k) => assertClose(host(got[k]!), host(w), { rtol: 2e-5, atol: 2e-5 }, `output ${k}`));
          // Donated arguments are consumed unless returned as they are (jit's documented contract).
          ins.forEach((a, i) => expect(a.isDisposed, `argument ${i}`).toBe(donate.includes(i) && !got.includes(a)));
          // With the donation known to the planner: no donated input is left without an output that
          // the schedule could have let it take.
          const args = make();
          const { plan, mem, donated } = plannedDonations(f, args, (i) => donate.includes(i), CPU_OPTS);
          expectNoMissedDonation(plan, mem, donated);
          dispose(args);
        } finally {
          dispose([eagerIns, want, got.filter((g) => !g.isDisposed), ins.filter((a) => !a.isDisposed)]);
        }
      }),
      fcParams(25),
    );
  }, 60_000);
});

describe("kernels over the buffer limit", () => {
  /** The fusion plan of `f` at `args` (one compiled segment) under `opts`. */
  const planOf = (f: (...a: any[]) => unknown, args: unknown[], opts: FusionOptions): FusionPlan => {
    const { segments } = buildSegments(flattenJaxpr(makeJaxpr(f)(...args).jaxpr));
    const graphs = segments.filter((s) => s.kind === "graph");
    expect(graphs.length).toBe(1);
    return planFusion(graphs[0]!.graph, opts);
  };
  /** tanh of a sum of 10 inputs: one elementwise chain reading 10 buffers. */
  const wide = (xs: Value[]): Value => np.tanh(xs.reduce((a, b) => np.add(a, b)));
  // Small values, so that the three sums (0.55, 1.55, 2.55) land where tanh still tells them apart.
  const inputs = (n: number) => Array.from({ length: n }, (_, i) => np.full([64], (i + 1) / 100));

  it("are all split in the same re-plans: k independent wide chains take as many passes as one", () => {
    const opts: FusionOptions = { ...GPU_OPTS, merge: false };
    const one = planOf((...xs: Value[]) => wide(xs), inputs(10), opts);
    expect(one.attempts, describePlan(one)).toBeGreaterThan(1); // it does need splitting at 8 buffers
    const three = planOf((...xs: Value[]) => [wide(xs.slice(0, 10)), wide(xs.slice(10, 20)), wide(xs.slice(20))], inputs(30), opts);
    expect(three.attempts, describePlan(three)).toBe(one.attempts);
    // Every kernel within the limit: its buffers read (materialised nodes) and written, plus one.
    for (const k of three.kernels) expect(new Set(kernelReads(k)).size + kernelWrites(k).length + 1, describePlan(three)).toBeLessThanOrEqual(8);
    // And the values are right: output i is tanh of (10i + 1 + ... + 10i + 10) / 100, by hand
    // 0.55, 1.55, 2.55 (float32 sums and tanh: within a few ulps).
    const got = jit((...xs: Value[]) => [wide(xs.slice(0, 10)), wide(xs.slice(10, 20)), wide(xs.slice(20))])(...inputs(30)) as Value[];
    [0.55, 1.55, 2.55].forEach((sum, i) => {
      for (const v of (got[i] as WArray).dataSync()) expect(Math.abs(v - Math.tanh(sum))).toBeLessThan(1e-6);
    });
  });
});

/**
 * @file The jit compiler on whole programs on WebGPU, against the same programs run eagerly on the CPU:
 * an MLP training step (with donated params: their buffers must really be reused), a PaLM block's loss
 * gradient (the memory plan's peak below the sum of intermediates), every transform around and inside
 * jit (jit∘grad, grad∘jit, vmap∘jit, nested jits, a scan inside jit), kernel counts of known programs at
 * run time, one queue.submit per call, and WEBGRAD_DEBUG output.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  dispose,
  grad,
  jit,
  lax,
  nn,
  np,
  palm,
  random,
  setDefaultDevice,
  tree,
  vmap,
  Array as WArray,
  type Value,
} from "../../src/index.js";
import { installJitCompiler, lastJitStats, profileJit, resetJitStats, uninstallJitCompiler } from "../../src/ops/compile/index.js";
import type { GpuHandle, WebGpuBackend } from "../../src/ops/backend/webgpu/index.js";
import { device, noGpu, Rng } from "./helpers.js";

const GPU = "webgpu:0";

function rand(shape: number[], rng: Rng, scale = 0.5): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  return Float32Array.from({ length: n }, () => rng.uniform(-scale, scale));
}

/** The same host data on both devices. */
function both(shape: number[], rng: Rng, scale = 0.5): { c: WArray; g: WArray } {
  const d = rand(shape, rng, scale);
  return { c: np.array(d, { shape, device: "cpu" }), g: np.array(d, { shape, device: GPU }) };
}

async function expectClose(got: unknown, want: unknown, tol: { rtol: number; atol: number }, what: string): Promise<void> {
  const [gl] = tree.flatten(got);
  const [wl] = tree.flatten(want);
  expect(gl.length, what).toBe(wl.length);
  for (let k = 0; k < wl.length; k++) {
    const g = gl[k] as WArray;
    const w = wl[k] as WArray;
    expect(g.device.id, `${what}: leaf ${k} device`).toBe(GPU);
    expect(g.shape, `${what}: leaf ${k} shape`).toEqual(w.shape);
    const [gd, wd] = [await g.data(), await w.data()];
    for (let i = 0; i < wd.length; i++) {
      const a = Number(wd[i]);
      const b = Number(gd[i]);
      if (!(Math.abs(a - b) <= tol.atol + tol.rtol * Math.abs(a))) {
        throw new Error(`${what}: leaf ${k} element ${i}: ${b} on webgpu (jit), ${a} on cpu (eager)`);
      }
    }
  }
}

const TOL = { rtol: 1e-4, atol: 1e-5 };

describe.skipIf(noGpu)("jit compiler: whole programs on webgpu", () => {
  const backend = () => device!.backend as unknown as WebGpuBackend;
  beforeAll(() => installJitCompiler());
  afterAll(() => {
    uninstallJitCompiler();
    setDefaultDevice("cpu");
  });

  const loss = (p: Record<string, Value>, x: Value, y: Value) =>
    np.mean(np.square(np.subtract(np.add(np.matmul(nn.gelu(np.add(np.matmul(x, p.w1!), p.b1!)), p.w2!), p.b2!), y)));
  const sgd = (p: Record<string, Value>, x: Value, y: Value) => {
    const g = grad(loss)(p, x, y) as Record<string, Value>;
    return tree.map((a: Value, b: Value) => np.subtract(a, np.multiply(b, 0.05)), p, g) as Record<string, Value>;
  };

  it("an MLP training step with donated params: values, buffer reuse, one submit, no new buffers", async () => {
    const rng = new Rng(1);
    const w1 = both([24, 40], rng), b1 = both([40], rng), w2 = both([40, 6], rng), b2 = both([6], rng);
    const x = both([16, 24], rng, 1), y = both([16, 6], rng, 1);
    let pc: Record<string, Value> = { w1: w1.c, b1: b1.c, w2: w2.c, b2: b2.c };
    let pg: Record<string, Value> = { w1: w1.g, b1: b1.g, w2: w2.g, b2: b2.g };
    const step = jit(sgd, { donateArgnums: 0 });
    const rt = backend().rt;
    let buffersAfterFirst = -1;
    for (let it = 0; it < 3; it++) {
      const keys = Object.keys(pg);
      const old = keys.map((k) => pg[k] as WArray);
      const storages = old.map((a) => (a.buffer as GpuHandle).storage.buffer);
      await rt.flush();
      const s0 = rt.stats();
      resetJitStats();
      const next = step(pg, x.g, y.g);
      const s1 = rt.stats();
      const stats = lastJitStats()!;
      expect(stats).not.toBeNull();
      expect(s1.submits - s0.submits, "one queue.submit per call").toBe(1);
      expect(s1.dispatches - s0.dispatches).toBe(stats.dispatches);
      // 4 dots forward+backward (no input gradient) plus the bias reductions, all updates fused.
      expect(stats.kernels).toBeLessThanOrEqual(8);
      const fresh = keys.map((k) => next[k] as WArray);
      fresh.forEach((a, i) => expect((a.buffer as GpuHandle).storage.buffer, `param ${i} reuses its donated buffer`).toBe(storages[i]));
      expect(old.every((a) => a.isDisposed)).toBe(true);
      if (it === 0) buffersAfterFirst = s1.buffers;
      else expect(s1.buffers, "steady state allocates no GPU buffers").toBeLessThanOrEqual(buffersAfterFirst);
      pg = next;
      pc = sgd(pc, x.c, y.c);
    }
    await expectClose(pg, pc, TOL, "three SGD steps");
    dispose([pg, pc, x, y]);
  });

  it("an MLP forward with bias + GELU runs one kernel per matmul; softmax and layer norm one kernel", async () => {
    const rng = new Rng(2);
    const x = both([32, 48], rng, 1), w1 = both([48, 64], rng), b1 = both([64], rng), w2 = both([64, 16], rng), b2 = both([16], rng);
    const mlp = (x: Value, w1: Value, b1: Value, w2: Value, b2: Value) =>
      nn.gelu(np.add(np.matmul(nn.gelu(np.add(np.matmul(x, w1), b1)), w2), b2));
    const got = jit(mlp)(x.g, w1.g, b1.g, w2.g, b2.g);
    expect(lastJitStats()!.kernels).toBe(2);
    await expectClose(got, mlp(x.c, w1.c, b1.c, w2.c, b2.c), TOL, "mlp forward");
    const sm = jit((v: Value) => nn.softmax(v, { axis: -1 }))(x.g);
    expect(lastJitStats()!.kernels).toBeLessThanOrEqual(2);
    await expectClose(sm, nn.softmax(x.c, { axis: -1 }), TOL, "softmax");
    const gamma = both([48], rng);
    const ln = jit((v: Value, g: Value) => palm.layerNorm(v, g))(x.g, gamma.g);
    expect(lastJitStats()!.kernels).toBe(1);
    await expectClose(ln, palm.layerNorm(x.c, gamma.c), TOL, "layer norm");
    dispose([x, w1, b1, w2, b2, got, sm, gamma, ln]);
  });

  it("long reductions (a workgroup per row): softmax, layer norm, column sums, full sums, max", async () => {
    const rng = new Rng(7);
    const x = both([6, 300], rng, 3), c = both([300, 5], rng, 1), big = both([40, 50], rng, 1), gamma = both([300], rng);
    const progs: [string, (...v: Value[]) => Value | Value[], WArray[], WArray[]][] = [
      ["softmax", (v) => nn.softmax(v, { axis: -1 }), [x.g], [x.c]],
      ["layer norm and its statistics", (v, g) => [palm.layerNorm(v, g), np.mean(v, { axis: -1 }), np.max(np.abs(v), { axis: -1 })], [x.g, gamma.g], [x.c, gamma.c]],
      ["column sums", (v) => np.sum(np.multiply(v, v), { axis: 0 }), [c.g], [c.c]],
      ["full sum and mean", (v) => [np.sum(np.exp(v)), np.mean(np.square(v))], [big.g], [big.c]],
      ["logsumexp over rows then mean", (v) => np.mean(np.logsumexp(v, { axis: 1 })), [x.g], [x.c]],
    ];
    for (const [name, f, gi, ci] of progs) {
      const got = jit(f)(...gi);
      expect(lastJitStats(), name).not.toBeNull();
      await expectClose(got, f(...ci), { rtol: 2e-5, atol: 2e-5 }, name);
      dispose(got);
    }
    dispose([x, c, big, gamma]);
  });

  it("a PaLM block's loss gradient: equal to eager CPU, memory plan peak below the sum of intermediates", async () => {
    const config = { numTokens: 40, dim: 32, depth: 1, heads: 2, dimHead: 16 };
    const pc = palm.init(random.key(3), config);
    const pg = tree.map((a: WArray) => np.array(a.dataSync(), { shape: a.shape, dtype: a.dtype, device: GPU }), pc) as palm.PalmParams;
    const toks = Int32Array.from({ length: 2 * 12 }, (_, i) => (i * 7 + 3) % 40);
    const tc = np.array(toks, { shape: [2, 12], dtype: "int32" });
    const tg = np.array(toks, { shape: [2, 12], dtype: "int32", device: GPU });
    const f = (p: palm.PalmParams, t: Value) => grad((q: palm.PalmParams) => palm.loss(q, t, { config }))(p);
    resetJitStats();
    const got = jit(f)(pg, tg);
    const s = lastJitStats()!;
    expect(s).not.toBeNull();
    expect(s.peakBytes).toBeLessThan(s.intermediateBytes);
    await expectClose(got, f(pc, tc), { rtol: 2e-3, atol: 2e-5 }, "palm loss gradient");
    dispose([pc, pg, tc, tg, got]);
  }, 60_000);

  it("transforms around and inside jit: jit∘grad, grad∘jit, vmap∘jit, nested jit, scan inside jit", async () => {
    const rng = new Rng(4);
    const x = both([5, 7], rng, 1), w = both([7, 3], rng);
    const f = (w: Value, x: Value) => np.sum(np.tanh(np.matmul(x, w)));
    const cases: [string, (w: Value, x: Value) => unknown][] = [
      ["jit(grad)", jit(grad(f))],
      ["grad(jit)", grad(jit(f))],
      ["vmap(jit)", vmap(jit((w: Value, row: Value) => np.tanh(np.matmul(row, w))), { inAxes: [null, 0] })],
      ["nested jit", jit((w: Value, x: Value) => np.exp(jit((a: Value, b: Value) => np.matmul(a, b))(x, w)))],
      [
        "scan in jit",
        jit((w: Value, x: Value) => lax.scan((c: Value, row: Value) => [np.add(c, np.tanh(np.matmul(row, w))), np.sum(c)], np.zeros([3]), x)),
      ],
    ];
    for (const [name, fn] of cases) {
      setDefaultDevice(GPU);
      let got: unknown;
      try {
        got = fn(w.g, x.g);
      } finally {
        setDefaultDevice("cpu");
      }
      await expectClose(got, fn(w.c, x.c), TOL, name);
      dispose(got);
    }
    dispose([x, w]);
  });

  it("a scan inside jit runs its compiled body as a loop of dispatches, all in one submit", async () => {
    const rng = new Rng(6);
    const x = both([7, 5], rng, 1), w = both([5, 5], rng);
    const f = (w: Value, x: Value) =>
      lax.scan((c: Value, row: Value) => [np.tanh(np.add(np.matmul(row, w), c)), np.sum(np.square(c))], np.zeros([5]), x, { reverse: true });
    const rt = backend().rt;
    await rt.flush();
    const s0 = rt.stats();
    setDefaultDevice(GPU);
    let got: unknown;
    try {
      got = jit(f)(w.g, x.g);
    } finally {
      setDefaultDevice("cpu");
    }
    const s1 = rt.stats();
    const st = lastJitStats()!;
    expect(st.boundEqns, "the scan is compiled, not run through bind").toBe(0);
    expect(s1.submits - s0.submits).toBe(1);
    expect(s1.dispatches - s0.dispatches).toBeGreaterThanOrEqual(7);
    await expectClose(got, f(w.c, x.c), TOL, "scan");
    dispose([x, w, got]);
  });

  it("cond inside jit compiles (every branch computed, the index selects), with its gradient", async () => {
    const rng = new Rng(8);
    const x = both([4, 6], rng, 1);
    const f = (i: Value, v: Value) =>
      np.sum(lax.switch(i, [(a: Value) => np.sin(a), (a: Value) => np.exp(np.multiply(a, 0.5)), (a: Value) => np.square(a)], v) as Value);
    for (const k of [-1, 0, 1, 2, 5]) {
      const ic = np.array(k, { dtype: "int32" });
      const ig = np.array(k, { dtype: "int32", device: GPU });
      for (const [name, fn] of [["value", f], ["grad", grad(f, { argnums: 1 })]] as const) {
        resetJitStats();
        const got = jit(fn)(ig, x.g);
        expect(lastJitStats()!.boundEqns, `${name} ${k}: cond compiled`).toBe(0);
        await expectClose(got, fn(ic, x.c), TOL, `switch(${k}) ${name}`);
        dispose(got);
      }
      dispose([ic, ig]);
    }
    dispose(x);
  });

  it("profileJit times every kernel of a compiled call", async () => {
    const rng = new Rng(5);
    const x = both([64, 32], rng), w = both([32, 16], rng);
    const f = (x: Value, w: Value) => nn.softmax(nn.gelu(np.matmul(x, w)), { axis: -1 });
    const prof = await profileJit(f, x.g, w.g);
    jit(f)(x.g, w.g);
    expect(prof.kernels.length).toBe(lastJitStats()!.kernels);
    expect(prof.kernels.every((k) => k.ms >= 0 && /^k\d+: /.test(k.kernel))).toBe(true);
    expect(prof.totalMs).toBeGreaterThan(0);
    dispose([x, w]);
  });

  it("WEBGRAD_DEBUG=1 prints the kernel graph, the fused kernels and the WGSL", () => {
    const log = vi.spyOn(console, "log").mockImplementation(() => {});
    const prev = process.env.WEBGRAD_DEBUG;
    process.env.WEBGRAD_DEBUG = "1";
    try {
      const x = np.array([1, 2, 3], { device: GPU });
      const out = jit((v: Value) => np.exp(np.sin(np.multiply(v, 3.5))))(x);
      const text = log.mock.calls.map((c) => String(c[0])).join("\n");
      expect(text).toMatch(/kernel graph/);
      expect(text).toMatch(/fused kernels \(1,/);
      expect(text).toMatch(/@compute/);
      dispose([x, out]);
    } finally {
      process.env.WEBGRAD_DEBUG = prev;
      log.mockRestore();
    }
  });
});

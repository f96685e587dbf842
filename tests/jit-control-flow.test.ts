/**
 * @file Control flow under the jit compiler (src/ops/compile/index.ts): compiled `scan` (`runScan`) and
 * compiled `whileLoop` (`runWhile`) equal jit's interpreter (`uninstallJitCompiler()`), eager
 * evaluation, and hand-computed references (cumulative sums / products written as plain JS loops in
 * float64), on the CPU and — when an adapter exists — on WebGPU.
 *
 * Scans: forward and reverse, several xs and ys, carries that are also ys, length 1 and 0, a matmul
 * body whose carry is a y (a matmul operand in the buffer the step writes), non-contiguous xs. On
 * both targets the stats must show no per-step slice copy and no final concatenation (`scanCopies` 0), and
 * the device must have run exactly the dispatches the stats count, in one submit.
 * Whiles: 0, 1 and many iterations, tuple carries, nested in a scan, under vmap (a batched predicate);
 * on WebGPU the compiled loop keeps the interpreter's contract (a device predicate cannot be read
 * synchronously: the same error).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dispose, jit, lax, np, setDefaultDevice, vmap, Array as WArray, type Value } from "../src/index.js";
import { installJitCompiler, lastJitStats, resetJitStats, uninstallJitCompiler } from "../src/ops/compile/index.js";
import type { WebGpuBackend } from "../src/ops/backend/webgpu/index.js";
import { device as gpuDevice, noGpu } from "./webgpu/helpers.js";

beforeAll(() => installJitCompiler());
afterAll(() => {
  installJitCompiler();
  setDefaultDevice("cpu");
});

const DEVICES = noGpu ? ["cpu"] : ["cpu", gpuDevice!.id];

async function flat(v: unknown): Promise<number[]> {
  return Array.from((await (v as WArray).data()) as ArrayLike<number>, Number);
}

/** Runs `fn` with the interpreter as jit's executor. */
function interpreted<T>(fn: () => T): T {
  uninstallJitCompiler();
  try {
    return fn();
  } finally {
    installJitCompiler();
  }
}

function expectNear(got: number[], want: number[], what: string, tol = 1e-5): void {
  expect(got.length, `${what}: length`).toBe(want.length);
  got.forEach((g, i) => {
    if (!(Math.abs(g - want[i]!) <= tol * (1 + Math.abs(want[i]!)))) throw new Error(`${what}[${i}]: got ${g}, want ${want[i]}`);
  });
}

async function expectSameArrays(got: unknown[], want: unknown[], what: string): Promise<void> {
  expect(got.length, what).toBe(want.length);
  for (let k = 0; k < want.length; k++) {
    expect((got[k] as WArray).shape, `${what}: leaf ${k} shape`).toEqual((want[k] as WArray).shape);
    expectNear(await flat(got[k]), await flat(want[k]), `${what}: leaf ${k}`);
  }
}

// ---------------------------------------------------------------------------------------------------
// The scan under test: carry (s, p); ys (s', p', 2·x1 + s) — two carries that are also ys, two xs.

const L = 4;
const W = 3;
const X1 = Array.from({ length: L * W }, (_, i) => i + 1); // rows [1,2,3], [4,5,6], ...
const X2 = Array.from({ length: L * W }, (_, i) => [0.5, 2, 1.5, -1][i % 4]!);

function body(c: [Value, Value], x: [Value, Value]): [[Value, Value], [Value, Value, Value]] {
  const s = np.add(c[0], x[0]);
  const p = np.multiply(c[1], x[1]);
  return [[s, p], [s, p, np.add(np.multiply(x[0], 2), c[0])]];
}

const scanFn = (reverse: boolean) => (x1: Value, x2: Value) => lax.scan(body, [np.zeros([W]), np.ones([W])], [x1, x2], { reverse });

/** The same recurrence as plain float64 loops: the hand-computed reference. */
function reference(x1: number[], x2: number[], n: number, reverse: boolean) {
  const s = new Array<number>(W).fill(0);
  const p = new Array<number>(W).fill(1);
  const ys = [new Array<number>(n * W), new Array<number>(n * W), new Array<number>(n * W)];
  for (let i = 0; i < n; i++) {
    const t = reverse ? n - 1 - i : i;
    for (let j = 0; j < W; j++) {
      const prev = s[j]!;
      s[j] = prev + x1[t * W + j]!;
      p[j] = p[j]! * x2[t * W + j]!;
      ys[0]![t * W + j] = s[j]!;
      ys[1]![t * W + j] = p[j]!;
      ys[2]![t * W + j] = 2 * x1[t * W + j]! + prev;
    }
  }
  return { carry: [s, p], ys };
}

function leaves(out: unknown): WArray[] {
  const [[s, p], [a, b, c]] = out as [[WArray, WArray], [WArray, WArray, WArray]];
  return [s, p, a, b, c];
}

/** The device's runtime counters (WebGPU only). */
function rtOf(dev: string) {
  return dev === "cpu" ? null : (gpuDevice!.backend as unknown as WebGpuBackend).rt;
}

describe.each(DEVICES)("compiled scan on %s", (dev) => {
  for (const reverse of [false, true]) {
    for (const n of [L, 1]) {
      it(`${reverse ? "reverse" : "forward"} scan of length ${n}: == interpreter, == eager, == the hand-computed recurrence`, async () => {
        const x1 = np.array(X1.slice(0, n * W), { shape: [n, W], device: dev });
        const x2 = np.array(X2.slice(0, n * W), { shape: [n, W], device: dev });
        const f = scanFn(reverse);
        const rt = rtOf(dev);
        await rt?.flush();
        const s0 = rt?.stats();
        resetJitStats();
        const got = leaves(jit(f)(x1, x2));
        const s1 = rt?.stats();
        const st = lastJitStats();
        expect(st, "the call was compiled").not.toBeNull();
        expect(st!.boundEqns, "the scan is compiled, not run through bind").toBe(0);
        // Both targets read xs slices in place and write ys into the stacked result.
        expect(st!.scanCopies, "no per-step slice copy, no final concatenation").toBe(0);
        if (rt) {
          // Every dispatch the device ran is one the stats count: no hidden slice copies or concatenates.
          expect(s1!.dispatches - s0!.dispatches, "dispatches run == dispatches counted").toBe(st!.dispatches);
          expect(s1!.submits - s0!.submits, "one submit").toBe(1);
        }
        const want = interpreted(() => leaves(jit(f)(x1, x2)));
        await expectSameArrays(got, want, "compiled vs interpreted");
        const eager = leaves(f(x1, x2));
        await expectSameArrays(got, eager, "compiled vs eager");
        const ref = reference(X1, X2, n, reverse);
        expectNear(await flat(got[0]), ref.carry[0]!, "final s");
        expectNear(await flat(got[1]), ref.carry[1]!, "final p");
        for (let k = 0; k < 3; k++) {
          expect(got[2 + k]!.shape).toEqual([n, W]);
          expectNear(await flat(got[2 + k]), ref.ys[k]!, `ys[${k}]`);
        }
        dispose([got, want, eager, x1, x2]);
      });
    }
  }

  it("a scan of length 0 (run through bind) gives the init carry and empty ys", async () => {
    const x1 = np.array(new Float32Array(0), { shape: [0, W], device: dev });
    const x2 = np.array(new Float32Array(0), { shape: [0, W], device: dev });
    const got = leaves(jit(scanFn(false))(x1, x2));
    expectNear(await flat(got[0]), [0, 0, 0], "s");
    expectNear(await flat(got[1]), [1, 1, 1], "p");
    for (let k = 2; k < 5; k++) expect(got[k]!.shape).toEqual([0, W]);
    dispose([got, x1, x2]);
  });

  it("an RNN step (the carry is a y and a matmul operand) and an exclusive cumulative product", async () => {
    const n = 5;
    const xsData = Array.from({ length: n * 4 }, (_, i) => Math.sin(i + 1));
    const wData = Array.from({ length: 16 }, (_, i) => Math.cos(i) * 0.5);
    const xs = np.array(xsData, { shape: [n, 4], device: dev });
    const w = np.array(wData, { shape: [4, 4], device: dev });
    const rnn = (w: Value, xs: Value) =>
      lax.scan(
        (c: [Value, Value], x: Value): [[Value, Value], [Value, Value]] => {
          const h = np.tanh(np.add(np.matmul(c[0], w), x));
          return [[h, np.multiply(c[1], 2)], [h, c[1]]];
        },
        [np.zeros([4]), np.ones([])],
        xs,
        { reverse: true },
      );
    const got = (jit(rnn)(w, xs) as [Value[], Value[]]).flat() as unknown as WArray[];
    // Hand-computed: h_t = tanh(h_{t+1} W + x_t), backwards; q doubles each step, y is the old q.
    let h = [0, 0, 0, 0];
    const hs = new Array<number>(n * 4);
    const qs: number[] = new Array<number>(n);
    let q = 1;
    for (let t = n - 1; t >= 0; t--) {
      h = [0, 1, 2, 3].map((j) => Math.tanh(h.reduce((a, hi, i) => a + hi * wData[i * 4 + j]!, 0) + xsData[t * 4 + j]!));
      h.forEach((v, j) => (hs[t * 4 + j] = v));
      qs[t] = q;
      q *= 2;
    }
    expectNear(await flat(got[0]), h, "final h");
    expectNear(await flat(got[1]), [q], "final q");
    expectNear(await flat(got[2]), hs, "hs");
    expectNear(await flat(got[3]), qs, "qs");
    const want = interpreted(() => (jit(rnn)(w, xs) as [Value[], Value[]]).flat());
    await expectSameArrays(got, want, "compiled vs interpreted");
    dispose([got, want, xs, w]);
  });

  it("nested scans (the inner scan's ys are the outer scan's ys) == interpreter == hand-computed", async () => {
    // Outer over rows, inner over the row's entries: inner ys are the row's running sums, the outer
    // carry adds each row's total.
    const f = (xs: Value) =>
      lax.scan(
        (acc: Value, row: Value): [Value, [Value, Value]] => {
          const [tot, run] = lax.scan((c: Value, v: Value): [Value, Value] => {
            const n = np.add(c, v);
            return [n, n];
          }, np.zeros([]), row) as [Value, Value];
          return [np.add(acc, tot), [run, np.multiply(tot, 2)]];
        },
        np.zeros([]),
        xs,
      );
    const xs = np.array(X1, { shape: [L, W], device: dev });
    resetJitStats();
    const got = (jit(f)(xs) as [Value, Value[]]).flat() as WArray[];
    expect(lastJitStats()!.boundEqns).toBe(0);
    // The inner scan stacks its ys straight into the outer scan's stacked ys.
    expect(lastJitStats()!.scanCopies).toBe(0);
    const runs: number[] = [];
    const tots: number[] = [];
    for (let t = 0; t < L; t++) {
      let c = 0;
      for (let j = 0; j < W; j++) runs.push((c += X1[t * W + j]!));
      tots.push(2 * c);
    }
    expectNear(await flat(got[0]), [X1.reduce((a, b) => a + b, 0)], "acc");
    expect(got[1]!.shape).toEqual([L, W]);
    expectNear(await flat(got[1]), runs, "running sums");
    expectNear(await flat(got[2]), tots, "row totals");
    const want = interpreted(() => (jit(f)(xs) as [Value, Value[]]).flat());
    await expectSameArrays(got, want, "compiled vs interpreted");
    dispose([got, want, xs]);
  });

  it("ys no kernel writes in place (a backend-run sort, an xs slice passed through) are moved there", async () => {
    const f = (xs: Value) =>
      lax.scan((c: Value, x: Value): [Value, [Value, Value, Value]] => [np.add(c, 1), [np.sort(x), x, c]], np.zeros([]), xs, { reverse: true });
    const data = [3, 1, 2, -1, 5, 0, 9, 9, -4, 2, 8, 7];
    const xs = np.array(data, { shape: [L, W], device: dev });
    resetJitStats();
    const got = (jit(f)(xs) as [Value, Value[]]).flat() as WArray[];
    // Three moved ys per step: the sort's result, and the two body inputs returned as ys.
    expect(lastJitStats()!.scanCopies).toBe(3 * L);
    const sorted: number[] = [];
    for (let t = 0; t < L; t++) sorted.push(...data.slice(t * W, t * W + W).sort((a, b) => a - b));
    expectNear(await flat(got[0]), [L], "carry");
    expectNear(await flat(got[1]), sorted, "sorted rows");
    expectNear(await flat(got[2]), data, "xs passed through");
    expectNear(await flat(got[3]), [3, 2, 1, 0], "the carry before each (reverse) step");
    const want = interpreted(() => (jit(f)(xs) as [Value, Value[]]).flat());
    await expectSameArrays(got, want, "compiled vs interpreted");
    dispose([got, want, xs]);
  });

  it("non-contiguous xs (a transposed argument) are read correctly", async () => {
    const base = np.array(X1, { shape: [W, L], device: dev });
    const xt = np.transpose(base); // [L, W], a strided view
    const x2 = np.array(X2, { shape: [L, W], device: dev });
    const got = leaves(jit(scanFn(false))(xt, x2));
    const ref = reference(Array.from(await flat(np.array(await xt.toArray(), { device: "cpu" }))), X2, L, false);
    expectNear(await flat(got[2]), ref.ys[0]!, "ys[0]");
    expectNear(await flat(got[4]), ref.ys[2]!, "ys[2]");
    dispose([got, base, xt, x2]);
  });
});

// ---------------------------------------------------------------------------------------------------
// whileLoop

const i32 = (v: number) => np.array(v, { dtype: "int32" });

/** Counts to n, doubling a vector and accumulating a sum of i: a tuple carry of three. */
const countTo = (n: Value, x: Value) =>
  lax.whileLoop(
    (c: [Value, Value, Value]) => np.less(c[0], n),
    (c: [Value, Value, Value]): [Value, Value, Value] => [np.add(c[0], 1), np.multiply(c[1], 2), np.add(c[2], c[0])],
    [i32(0), x, i32(0)],
  );

describe("compiled whileLoop on the CPU", () => {
  setDefaultDevice("cpu");
  for (const n of [0, 1, 7]) {
    it(`${n} iterations: == interpreter, == the hand-computed loop`, async () => {
      const x = np.array([1, -3, 0.5]);
      resetJitStats();
      const got = jit(countTo)(i32(n), x) as unknown as WArray[];
      const st = lastJitStats();
      expect(st, "compiled").not.toBeNull();
      expect(st!.boundEqns, "the while is compiled, not run through bind").toBe(0);
      expect(await flat(got[0])).toEqual([n]);
      expectNear(await flat(got[1]), [1, -3, 0.5].map((v) => v * 2 ** n), "x·2^n");
      expect(await flat(got[2])).toEqual([n * (n - 1) / 2 + 0]); // +0: not -0 for n = 0
      const want = interpreted(() => jit(countTo)(i32(n), x) as unknown as WArray[]);
      await expectSameArrays(got, want, "compiled vs interpreted");
      dispose([got, want, x]);
    });
  }

  it("nested in a scan: per step, a loop whose trip count depends on the xs", async () => {
    const f = (xs: Value) =>
      lax.scan(
        (acc: Value, k: Value) => {
          const [, v] = lax.whileLoop((c: [Value, Value]) => np.less(c[0], k), (c: [Value, Value]): [Value, Value] => [np.add(c[0], 1), np.add(c[1], 3)], [
            i32(0),
            i32(0),
          ]) as [Value, Value];
          return [np.add(acc, v), v];
        },
        i32(0),
        xs,
      );
    const ks = [2, 0, 5, 1];
    const xs = np.array(ks, { dtype: "int32" });
    resetJitStats();
    const [acc, ys] = jit(f)(xs) as [WArray, WArray];
    expect(lastJitStats()!.boundEqns).toBe(0);
    expect(await flat(ys)).toEqual(ks.map((k) => 3 * k));
    expect(await flat(acc)).toEqual([3 * ks.reduce((a, b) => a + b, 0)]);
    const want = interpreted(() => jit(f)(xs) as unknown as WArray[]);
    await expectSameArrays([acc, ys], want, "compiled vs interpreted");
    dispose([acc, ys, want, xs]);
  });

  it("under vmap: a batched predicate (lanes stop at different steps)", async () => {
    const g = (n: Value) => lax.whileLoop((c: [Value, Value]) => np.less(c[0], n), (c: [Value, Value]): [Value, Value] => [np.add(c[0], 1), np.multiply(c[1], 3)], [i32(0), i32(1)]);
    const ns = np.array([0, 4, 1, 2], { dtype: "int32" });
    resetJitStats();
    const got = jit(vmap(g))(ns) as unknown as WArray[];
    expect(lastJitStats()!.boundEqns).toBe(0);
    expect(await flat(got[0])).toEqual([0, 4, 1, 2]);
    expect(await flat(got[1])).toEqual([1, 81, 3, 9]);
    const want = interpreted(() => jit(vmap(g))(ns) as unknown as WArray[]);
    await expectSameArrays(got, want, "compiled vs interpreted");
    dispose([got, want, ns]);
  });

  it("a loop returning a literal and passing an argument through keeps both alive", async () => {
    const f = (x: Value) => lax.whileLoop((c: [Value, Value]) => np.less(c[0], 3), (c: [Value, Value]): [Value, Value] => [np.add(c[0], 1), c[1]], [i32(0), x]);
    const x = np.array([2, 5]);
    const [i, y] = jit(f)(x) as unknown as WArray[];
    expect(await flat(i)).toEqual([3]);
    expect(await flat(y)).toEqual([2, 5]);
    expect(await flat(x), "the argument is alive").toEqual([2, 5]);
    dispose([i, y, x]);
  });
});

describe.skipIf(noGpu)("compiled whileLoop on WebGPU", () => {
  it("keeps the interpreter's contract: a device predicate cannot be read synchronously (the same error)", () => {
    const x = np.array([1, 2], { device: gpuDevice!.id });
    const n = np.array(3, { dtype: "int32", device: gpuDevice!.id });
    let compiledError = "";
    let interpError = "";
    try {
      jit(countTo)(n, x);
    } catch (e) {
      compiledError = (e as Error).message;
    }
    try {
      interpreted(() => jit(countTo)(n, x));
    } catch (e) {
      interpError = (e as Error).message;
    }
    expect(compiledError).toMatch(/read its predicate synchronously/);
    expect(compiledError).toBe(interpError);
    dispose([x, n]);
  });
});

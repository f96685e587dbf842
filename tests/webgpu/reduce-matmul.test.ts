/**
 * @file WebGPU reductions, arg reductions, scans and dot_general against the CPU backend, on random
 * shapes, axes and views. Both reduction strategies are reached (one invocation per output; workgroup
 * trees over chunks for few long reductions), and dot_general's three kernels (vec4 "nn", vec4 "nt",
 * strided "gen") plus the packing copies.
 *
 * float32 tolerances: the CPU sums in float64 and rounds once; the GPU sums float32 in blocks, so sums
 * are compared with |err| <= 2^-20 · Σ|x| (a bound independent of cancellation), products of n factors
 * with n·4 ulp, dot products with 2^-20 · Σ|a||b| per output element. max/min/argmax and integer ops are
 * exact.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { DType } from "../../src/autodiff/aval.js";
import type { CpuBuffer } from "../../src/ops/backend/cpu/index.js";
import type { DotDims } from "../../src/ops/backend/kernel.js";
import type { GpuHandle } from "../../src/ops/backend/webgpu/index.js";
import { Arena, bigShapeArb, check, cpu, EXACT, expectMatch, gpu, layoutArb, noGpu, operand, Rng, seedArb, upload } from "./helpers.js";

const DTYPES: readonly DType[] = ["float32", "int32", "uint32", "bool"];

/** Random sorted unique subset of 0..n-1. */
function axesOf(n: number, rng: Rng): number[] {
  return [...Array(n).keys()].filter(() => rng.next() < 0.5);
}

/**
 * Compares float sums against a bound scaled by the sum of absolute values (computed on the CPU):
 * 2^-20 of it, or, for `terms` products summed in float32 on both sides (dot products: the CPU GEMM and
 * the WGSL kernel each accumulate K products in order), twice the standard dot-product bound
 * γ_K = K·u / (1 - K·u), u = 2^-24 (N. Higham, "Accuracy and Stability of Numerical Algorithms", §3.1),
 * when that is larger. 2^-20 alone is 16 u: two sequential sums of K = 130 products can differ by more
 * without either being wrong, and on random data they occasionally did.
 */
async function expectSumClose(c: CpuBuffer, g: GpuHandle, absSum: CpuBuffer, what: string, terms = 0): Promise<void> {
  const gd = await gpu.read(g);
  const cd = cpu.readSync(c);
  const sd = cpu.readSync(absSum);
  expect(gd.length).toBe(cd.length);
  const u = 2 ** -24;
  const rel = Math.max(2 ** -20, (2 * terms * u) / (1 - terms * u));
  for (let i = 0; i < cd.length; i++) {
    const bound = rel * (sd[i]! + 1e-30);
    if (!(Math.abs(gd[i]! - cd[i]!) <= bound)) throw new Error(`${what}: element ${i} is ${gd[i]} on webgpu, ${cd[i]} on cpu (bound ${bound})`);
  }
}

// Skipped only without an adapter: helpers.ts printed why (and fails instead under WEBGRAD_REQUIRE_WEBGPU=1).
describe.skipIf(noGpu)("webgpu reductions and dot_general vs cpu", () => {
  it("reduce sum / prod / max / min over random axes of views", async () => {
    await check(
      fc.tuple(bigShapeArb, layoutArb, fc.constantFrom(...DTYPES), fc.constantFrom("sum", "prod", "max", "min" as const), seedArb),
      async ([shape, layout, dtype, op, seed]) => {
        const a = new Arena();
        const rng = new Rng(seed);
        // Products stay finite and exact-ish with factors near 1; ints wrap identically on both.
        const range = op === "prod" && dtype === "float32" ? { lo: 0.9, hi: 1.1 } : undefined;
        const x = operand(shape, dtype, layout, rng, a, range);
        const axes = axesOf(shape.length, rng);
        const out = { shape: shape.filter((_, d) => !axes.includes(d)), dtype };
        const c = cpu.reduce(op, x.c, axes, out);
        const g = a.g(gpu.reduce(op, x.g, axes, out));
        if (dtype === "float32" && op === "sum") {
          await expectSumClose(c, g, cpu.reduce("sum", cpu.unary("abs", x.c, x.c), axes, out), `sum ${layout} axes ${axes}`);
        } else if (dtype === "float32" && op === "prod") {
          const n = axes.reduce((m, d) => m * shape[d]!, 1);
          await expectMatch(c, g, { rtol: 4 * n * 2 ** -23, atol: 0 }, `prod axes ${axes}`);
        } else {
          await expectMatch(c, g, EXACT, `reduce_${op} ${dtype} ${layout} axes ${axes}`);
        }
        a.release();
      },
      25,
    );
  });

  it("long reductions (workgroup trees over chunks) and empty reductions", async () => {
    const a = new Arena();
    const rng = new Rng(7);
    for (const [shape, axes] of [
      [[100_003], [0]],
      [[3, 70_001], [1]],
      [[257, 300], [0]],
      [[20, 30, 40], [0, 2]],
      [[5, 0, 3], [1]],
      [[0, 4], [0]],
    ] as const) {
      for (const dtype of ["float32", "int32"] as const) {
        const x = operand([...shape], dtype, "plain", rng, a);
        const out = { shape: shape.filter((_, d) => !(axes as readonly number[]).includes(d)), dtype };
        for (const op of ["sum", "max", "min", "prod"] as const) {
          const c = cpu.reduce(op, x.c, [...axes], out);
          const g = a.g(gpu.reduce(op, x.g, [...axes], out));
          if (dtype === "float32" && op === "sum") {
            await expectSumClose(c, g, cpu.reduce("sum", cpu.unary("abs", x.c, x.c), [...axes], out), `sum [${shape}]`);
          } else if (dtype === "float32" && op === "prod") {
            continue; // products of 1e5 uniform factors under/overflow; covered above
          } else {
            await expectMatch(c, g, EXACT, `${op} ${dtype} [${shape}] axes ${axes}`);
          }
        }
      }
    }
    a.release();
  });

  it("float sums are accurate on long, cancelling rows", async () => {
    // Σ of n copies of 0.1 and n copies of -0.1 plus 1: exactly 1 in real arithmetic (float32 0.1
    // cancels exactly). A naive float32 loop drifts far more than the blocked sum.
    const a = new Arena();
    const n = 200_000;
    const xs = new Float32Array(2 * n + 1);
    for (let i = 0; i < n; i++) (xs[2 * i] = 0.1), (xs[2 * i + 1] = i < n / 2 ? 1e-3 : -1e-3);
    xs[2 * n] = 1;
    const x = upload(xs, [xs.length], "float32", a);
    const want = cpu.readSync(cpu.reduce("sum", x.c, [0], { shape: [], dtype: "float32" }))[0]!;
    const got = (await gpu.read(a.g(gpu.reduce("sum", x.g, [0], { shape: [], dtype: "float32" }))))[0]!;
    expect(Math.abs(got - want) / want).toBeLessThan(1e-5);
    a.release();
  });

  it("max / min propagate NaN; bool reductions are any / all", async () => {
    const a = new Arena();
    const x = upload(Float32Array.from([1, NaN, 3, -1, 2, 5]), [2, 3], "float32", a);
    for (const op of ["max", "min"] as const) {
      const out = { shape: [2], dtype: "float32" as const };
      await expectMatch(cpu.reduce(op, x.c, [1], out), a.g(gpu.reduce(op, x.g, [1], out)), EXACT, `${op} NaN`);
    }
    const b = upload(Uint8Array.from([0, 0, 1, 1, 1, 1]), [2, 3], "bool", a);
    for (const op of ["sum", "prod", "max", "min"] as const) {
      const out = { shape: [2], dtype: "bool" as const };
      await expectMatch(cpu.reduce(op, b.c, [1], out), a.g(gpu.reduce(op, b.g, [1], out)), EXACT, `bool ${op}`);
    }
    a.release();
  });

  it("argmax / argmin: first index of the extreme, NaN first", async () => {
    await check(
      fc.tuple(bigShapeArb.filter((s) => s.length > 0), layoutArb, fc.constantFrom("float32", "int32", "uint32" as const), fc.constantFrom("argmax", "argmin" as const), fc.boolean(), seedArb),
      async ([shape, layout, dtype, op, nan, seed]) => {
        const a = new Arena();
        const rng = new Rng(seed);
        // Few distinct values so ties are common (first index must win).
        const x0 = operand(shape, dtype, layout, rng, a, dtype === "float32" ? { lo: -3, hi: 3, integer: true } : { lo: 0, hi: 5 });
        let x = x0;
        if (nan && dtype === "float32") {
          // NaN where x == 2 (through the backends' own ops).
          const two = upload(Float32Array.from([2]), [], "float32", a);
          const b2 = { c: cpu.broadcastInDim(two.c, shape, []), g: a.g(gpu.broadcastInDim(two.g, shape, [])) };
          const isTwo = { c: cpu.binary("eq", x0.c, b2.c, { shape, dtype: "bool" }), g: a.g(gpu.binary("eq", x0.g, b2.g, { shape, dtype: "bool" })) };
          const n = upload(Float32Array.from([NaN]), [], "float32", a);
          const nb = { c: cpu.broadcastInDim(n.c, shape, []), g: a.g(gpu.broadcastInDim(n.g, shape, [])) };
          x = { c: cpu.select(isTwo.c, nb.c, x0.c), g: a.g(gpu.select(isTwo.g, nb.g, x0.g)) };
        }
        const axis = rng.int(0, shape.length - 1);
        const out = { shape: shape.filter((_, d) => d !== axis), dtype: "int32" as const };
        await expectMatch(cpu.argReduce(op, x.c, axis, out), a.g(gpu.argReduce(op, x.g, axis, out)), EXACT, `${op} ${dtype} axis ${axis}`);
        a.release();
      },
      20,
    );
  });

  it("argmax over long rows (workgroup kernel)", async () => {
    const a = new Arena();
    const rng = new Rng(3);
    for (const shape of [[3, 5000], [1, 70_000], [2, 300]]) {
      const x = operand(shape, "float32", "plain", rng, a, { lo: -50, hi: 50, integer: true });
      const out = { shape: [shape[0]!], dtype: "int32" as const };
      for (const op of ["argmax", "argmin"] as const) {
        await expectMatch(cpu.argReduce(op, x.c, 1, out), a.g(gpu.argReduce(op, x.g, 1, out)), EXACT, `${op} [${shape}]`);
      }
    }
    a.release();
  });

  it("cumulative sum / prod / max / min, forward and reverse, on views", async () => {
    await check(
      fc.tuple(bigShapeArb.filter((s) => s.length > 0), layoutArb, fc.constantFrom(...DTYPES), fc.constantFrom("sum", "prod", "max", "min" as const), fc.boolean(), seedArb),
      async ([shape, layout, dtype, op, reverse, seed]) => {
        const a = new Arena();
        const rng = new Rng(seed);
        const range = op === "prod" && dtype === "float32" ? { lo: 0.9, hi: 1.1 } : dtype === "float32" ? { lo: 0, hi: 2 } : undefined;
        const x = operand(shape, dtype, layout, rng, a, range);
        const axis = rng.int(0, shape.length - 1);
        const n = shape[axis]!;
        // Non-negative float summands: relative error of a prefix sum <= (64 + k/64)·eps.
        const tol = dtype !== "float32" || op === "max" || op === "min" ? EXACT : { rtol: (8 + 2 * n) * 2 ** -23, atol: 0 };
        await expectMatch(cpu.cumulative(op, x.c, axis, reverse), a.g(gpu.cumulative(op, x.g, axis, reverse)), tol, `cum${op} ${dtype} axis ${axis} rev ${reverse}`);
        a.release();
      },
      20,
    );
  });

  /** Random dot_general dims: batch, lhs free, contracting, rhs free sizes, operand axis orders. */
  const dotArb = fc.record({
    nb: fc.integer({ min: 0, max: 2 }),
    nm: fc.integer({ min: 0, max: 2 }),
    nk: fc.integer({ min: 0, max: 2 }),
    nn: fc.integer({ min: 0, max: 2 }),
    sizes: fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 8, maxLength: 8 }),
    big: fc.constantFrom(false, false, true),
    seed: seedArb,
    layoutA: layoutArb,
    layoutB: layoutArb,
    dtype: fc.constantFrom("float32", "float32", "int32", "uint32" as const),
  });

  it("dot_general with random batch / contracting dims, transposed and broadcast operands", async () => {
    await check(
      dotArb,
      async ({ nb, nm, nk, nn, sizes, big, seed, layoutA, layoutB, dtype }) => {
        const a = new Arena();
        const rng = new Rng(seed);
        // Small: up to 2 dims per group (all kernels' index paths). Big: one dim per group of 20..130,
        // which reaches the vec4 "nn" kernel and the packing copies (<= 2.2·10^6 multiply-adds).
        const B = big ? sizes.slice(0, Math.min(nb, 1)) : sizes.slice(0, nb);
        const M = big ? [rng.int(20, 130)] : sizes.slice(2, 2 + nm);
        const K = big ? [rng.int(8, 130)] : sizes.slice(4, 4 + nk);
        const N = big ? [rng.int(20, 130)] : sizes.slice(6, 6 + nn);
        // lhs axes: a random order of [batch, M, K]; rhs: a random order of [batch, K, N].
        const lhsDims = [...B.map((_, i) => ["b", i] as const), ...M.map((_, i) => ["m", i] as const), ...K.map((_, i) => ["k", i] as const)].sort(() => rng.next() - 0.5);
        const rhsDims = [...B.map((_, i) => ["b", i] as const), ...K.map((_, i) => ["k", i] as const), ...N.map((_, i) => ["n", i] as const)].sort(() => rng.next() - 0.5);
        const size = (t: string, i: number): number => (t === "b" ? B[i]! : t === "m" ? M[i]! : t === "k" ? K[i]! : N[i]!);
        const lhsShape = lhsDims.map(([t, i]) => size(t, i));
        const rhsShape = rhsDims.map(([t, i]) => size(t, i));
        const pos = (dims: readonly (readonly [string, number])[], t: string, i: number): number => dims.findIndex(([u, j]) => u === t && j === i);
        const dims: DotDims = {
          contracting: [K.map((_, i) => pos(lhsDims, "k", i)), K.map((_, i) => pos(rhsDims, "k", i))],
          batch: [B.map((_, i) => pos(lhsDims, "b", i)), B.map((_, i) => pos(rhsDims, "b", i))],
        };
        const range = dtype === "float32" ? { lo: -1, hi: 1 } : dtype === "int32" ? { lo: -1000, hi: 1000 } : { lo: 0, hi: 100000 };
        const x = operand(lhsShape, dtype, layoutA, rng, a, range);
        const y = operand(rhsShape, dtype, layoutB, rng, a, range);
        const lFree = lhsDims.map((_, d) => d).filter((d) => !dims.contracting[0].includes(d) && !dims.batch[0].includes(d));
        const rFree = rhsDims.map((_, d) => d).filter((d) => !dims.contracting[1].includes(d) && !dims.batch[1].includes(d));
        const outShape = [...B, ...lFree.map((d) => lhsShape[d]!), ...rFree.map((d) => rhsShape[d]!)];
        const out = { shape: outShape, dtype };
        const c = cpu.dotGeneral(x.c, y.c, dims, out);
        const g = a.g(gpu.dotGeneral(x.g, y.g, dims, out));
        if (dtype === "float32") {
          const ax = cpu.unary("abs", x.c, { shape: lhsShape, dtype });
          const ay = cpu.unary("abs", y.c, { shape: rhsShape, dtype });
          const terms = K.reduce((p, n) => p * n, 1);
          await expectSumClose(c, g, cpu.dotGeneral(ax, ay, dims, out), `dot ${layoutA}/${layoutB} [${lhsShape}]x[${rhsShape}]`, terms);
        } else {
          await expectMatch(c, g, EXACT, `dot ${dtype} [${lhsShape}]x[${rhsShape}]`);
        }
        a.release();
      },
      40,
    );
  });

  it("matmul of odd and aligned sizes in every layout (nn, nt, tn, tt), batched", async () => {
    const a = new Arena();
    const rng = new Rng(11);
    for (const [b, m, k, n] of [
      [1, 64, 64, 64],
      [2, 33, 17, 65],
      [1, 130, 7, 3],
      [3, 5, 260, 9],
      [1, 1, 300, 1],
    ]) {
      for (const ta of [false, true]) {
        for (const tb of [false, true]) {
          const xs = [b, ta ? k : m, ta ? m : k];
          const ys = [b, tb ? n : k, tb ? k : n];
          const x = operand(xs, "float32", "plain", rng, a, { lo: -1, hi: 1 });
          const y = operand(ys, "float32", "plain", rng, a, { lo: -1, hi: 1 });
          const dims: DotDims = { contracting: [[ta ? 1 : 2], [tb ? 2 : 1]], batch: [[0], [0]] };
          const out = { shape: [b, m, n], dtype: "float32" as const };
          const ax = cpu.unary("abs", x.c, { shape: xs, dtype: "float32" });
          const ay = cpu.unary("abs", y.c, { shape: ys, dtype: "float32" });
          await expectSumClose(
            cpu.dotGeneral(x.c, y.c, dims, out),
            a.g(gpu.dotGeneral(x.g, y.g, dims, out)),
            cpu.dotGeneral(ax, ay, dims, out),
            `matmul ${b}x${m}x${k}x${n} ta=${ta} tb=${tb}`,
            k,
          );
        }
      }
    }
    a.release();
  });

  it("matmul with more rows than one dispatch grid covers (row chunks)", async () => {
    // 600,000 rows need 75,000 workgroup rows (limit 65,535). Small integers: every product is exact,
    // so the reference is a plain loop (independent of both backends).
    const a = new Arena();
    const [M, K, N] = [600_000, 4, 8];
    const xs = Float32Array.from({ length: M * K }, (_, i) => (i % 13) - 6);
    const ys = Float32Array.from({ length: K * N }, (_, i) => (i % 5) - 2);
    const x = a.g(gpu.fromHost(xs, { shape: [M, K], dtype: "float32" }));
    const y = a.g(gpu.fromHost(ys, { shape: [K, N], dtype: "float32" }));
    const got = await gpu.read(a.g(gpu.dotGeneral(x, y, { contracting: [[1], [0]], batch: [[], []] }, { shape: [M, N], dtype: "float32" })));
    let bad = 0;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += xs[i * K + k]! * ys[k * N + j]!;
        if (got[i * N + j] !== s) bad++;
      }
    }
    expect(bad).toBe(0);
    a.release();
  });

  it("rejects bad dot_general dims like the CPU", () => {
    const a = new Arena();
    const x = upload(new Float32Array(6), [2, 3], "float32", a);
    const dims: DotDims = { contracting: [[1], [1]], batch: [[], []] };
    expect(() => gpu.dotGeneral(x.g, x.g, dims, { shape: [2, 2], dtype: "float32" })).not.toThrow();
    expect(() => gpu.dotGeneral(x.g, x.g, { contracting: [[0], [1]], batch: [[], []] }, { shape: [3, 2], dtype: "float32" })).toThrow(
      /dot_general: equal contracting sizes/,
    );
    a.release();
  });
});

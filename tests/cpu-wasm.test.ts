/**
 * @file Tests of the CPU backend's WebAssembly fast path (src/ops/backend/cpu/wasm): the binary
 * emitter (LEB128 against the format's published examples, generated modules validate and compute),
 * the SIMD GEMM against the plain-TypeScript reference kernel (`dotGeneralReference`, which sums in
 * float64) on random shapes and operand views with 1 and 2 threads, and the worker pool's life cycle
 * (shutdown, restart, a process with live workers still exits, the unshared-memory fallback).
 *
 * Tolerance (float32): the fast path sums K products in float32, so by the standard dot-product error
 * bound (N. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., §3.1) its error is at
 * most γ_K·(|A|·|B|)_ij with γ_K = K·u / (1 − K·u), u = 2⁻²⁴; the reference adds at most one rounding
 * of its result (u·|C_ij|). For float64 both sides err by γ_K·(|A|·|B|) with u = 2⁻⁵³. The bound is
 * rigorous (a correct kernel cannot exceed it) and far below the error of any wrong element.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cpuBackend as cpu, type CpuBuffer } from "../src/ops/backend/cpu/index.js";
import { dotGeneralReference } from "../src/ops/backend/cpu/matmul.js";
import { ModuleBuilder, sleb, uleb } from "../src/ops/backend/cpu/wasm/emitter.js";
import { gemmModuleBytes } from "../src/ops/backend/cpu/wasm/gemm-kernels.js";
import {
  configureCpuWasm,
  cpuWasmInfo,
  cpuWasmOptions,
  setCpuThreads,
  shutdownCpuWasmPool,
  wasmBinaryF32,
  type WasmBinaryOp,
} from "../src/ops/backend/cpu/wasm/index.js";
import type { DotDims } from "../src/ops/backend/kernel.js";

interface WasmForTests {
  validate(b: Uint8Array): boolean;
  Module: new (b: Uint8Array) => object;
  Instance: new (m: object, i: object) => { exports: Record<string, (...a: number[]) => number> };
  Memory: new (d: { initial: number; maximum?: number; shared?: boolean }) => { buffer: ArrayBuffer };
}
const ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)), "..");
const WA = (globalThis as unknown as { WebAssembly: WasmForTests }).WebAssembly;

// ---------------------------------------------------------------------------------------------------
describe("wasm emitter", () => {
  it("encodes LEB128 as the format's published examples", () => {
    const u: number[] = [];
    uleb(624485, u); // the DWARF / Wikipedia example: 0xE5 0x8E 0x26
    expect(u).toEqual([0xe5, 0x8e, 0x26]);
    const s: number[] = [];
    sleb(-123456, s); // 0xC0 0xBB 0x78
    expect(s).toEqual([0xc0, 0xbb, 0x78]);
    const edge: number[] = [];
    for (const v of [0, 63, 64, -64, -65, 127]) sleb(v, edge);
    expect(edge).toEqual([0x00, 0x3f, 0xc0, 0x00, 0x40, 0xbf, 0x7f, 0xff, 0x00]);
    const big: number[] = [];
    uleb(2 ** 32, big);
    expect(big).toEqual([0x80, 0x80, 0x80, 0x80, 0x10]);
  });

  it("builds a SIMD module that validates and computes x·y + z on f32x4 lanes", () => {
    const m = new ModuleBuilder().importMemory({ module: "env", field: "memory", initial: 1 });
    const f = m.declare(["i32"]);
    const c = m.code(f);
    const p = c.params[0]!;
    // mem[p+48..] = mem[p..] * mem[p+16..] + mem[p+32..]
    c.get(p).get(p).simdMem("v128.load", 0).get(p).simdMem("v128.load", 16).simd("f32x4.mul");
    c.get(p).simdMem("v128.load", 32).simd("f32x4.add").simdMem("v128.store", 48);
    m.export("f", f);
    const bytes = m.build();
    expect(WA.validate(bytes)).toBe(true);
    const memory = new WA.Memory({ initial: 1 });
    const inst = new WA.Instance(new WA.Module(bytes), { env: { memory } });
    const v = new Float32Array(memory.buffer);
    v.set([1, 2, 3, 4, 10, 20, 30, 40, 0.5, 0.25, -1, 7], 4);
    inst.exports.f!(16);
    expect(Array.from(v.subarray(16, 20))).toEqual([10.5, 40.25, 89, 167]);
  });

  it("generates GEMM modules that validate for several tile shapes, shared or not", () => {
    for (const [mr, nr, unroll, fenceRows] of [[2, 16, 4, 0], [4, 8, 1, 0], [3, 12, 2, 1], [1, 4, 3, 0]] as const) {
      for (const shared of [false, true]) {
        const bytes = gemmModuleBytes({
          f32: { mr, nr, unroll, fenceRows },
          f64: { mr, nr: nr / 2, unroll, fenceRows },
          relaxed: false,
          shared,
          zeroAddr: 256,
          scratchAddr: 512,
          initialPages: 2,
          maximumPages: 1024,
        });
        expect(WA.validate(bytes), `${mr}x${nr} unroll ${unroll} shared ${shared}`).toBe(true);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// GEMM against the reference kernel.

type Layout = "contiguous" | "transposed" | "broadcast" | "reversed" | "sliced";
const LAYOUTS: readonly Layout[] = ["contiguous", "transposed", "broadcast", "reversed", "sliced"];

let seed = 12345;
function random(): number {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed / 2 ** 32;
}

function host(dtype: "float32" | "float64", shape: readonly number[]): CpuBuffer {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = dtype === "float32" ? new Float32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) d[i] = random() * 2 - 1;
  return cpu.fromHost(d, { shape, dtype });
}

/** An operand of logical shape [...batch, rows, cols] stored as `layout`. */
function operand(dtype: "float32" | "float64", batch: readonly number[], rows: number, cols: number, layout: Layout): CpuBuffer {
  const nb = batch.length;
  switch (layout) {
    case "contiguous":
      return host(dtype, [...batch, rows, cols]);
    case "transposed": {
      const t = host(dtype, [...batch, cols, rows]);
      return cpu.transpose(t, [...batch.map((_, i) => i), nb + 1, nb]); // [...batch, rows, cols]
    }
    case "broadcast": {
      if (nb > 0) {
        // One matrix shared by every batch entry (batch stride 0).
        const t = host(dtype, [rows, cols]);
        return cpu.broadcastInDim(t, [...batch, rows, cols], [nb, nb + 1]);
      }
      const t = host(dtype, [1, cols]); // one row repeated (row stride 0)
      return cpu.broadcastInDim(t, [rows, cols], [0, 1]);
    }
    case "reversed": {
      const t = host(dtype, [...batch, rows, cols]);
      return cpu.reverse(t, [nb, nb + 1]);
    }
    case "sliced": {
      // Every 2nd row and 3rd column of a larger array: a sparse view (gathered, not span-copied).
      const t = host(dtype, [...batch, 2 * rows + 1, 3 * cols + 2]);
      return cpu.slice(t, [...batch.map(() => 0), 1, 2], [...batch, 2 * rows + 1, 3 * cols + 2], [...batch.map(() => 1), 2, 3]);
    }
  }
}

/** Largest violation of the error bound (≤ 0 passes) and the largest plain difference. */
function compare(x: CpuBuffer, y: CpuBuffer, dims: DotDims, outShape: number[], k: number): { excess: number; diff: number } {
  const dtype = x.dtype as "float32" | "float64";
  const out = { shape: outShape, dtype };
  const fast = cpu.readSync(cpu.dotGeneral(x, y, dims, out));
  const ref = cpu.readSync(dotGeneralReference(x, y, dims, out));
  const absX = cpu.unary("abs", x, { shape: x.shape, dtype });
  const absY = cpu.unary("abs", y, { shape: y.shape, dtype });
  const mag = cpu.readSync(dotGeneralReference(absX, absY, dims, out));
  const u = dtype === "float32" ? 2 ** -24 : 2 ** -53;
  const gamma = ((k + 1) * u) / (1 - (k + 1) * u);
  let excess = -Infinity;
  let diff = 0;
  expect(fast.length).toBe(ref.length);
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(fast[i]! - ref[i]!);
    const tol = (dtype === "float32" ? gamma : 2 * gamma) * mag[i]! + u * Math.abs(ref[i]!);
    if (!(d <= tol)) excess = Math.max(excess, Number.isNaN(d) ? Infinity : d - tol);
    diff = Math.max(diff, d);
  }
  return { excess: ref.length === 0 ? -Infinity : excess, diff };
}

const dimArb = fc.oneof(fc.constantFrom(0, 1, 2, 3, 15, 16, 17, 33), fc.integer({ min: 1, max: 70 }));
const caseArb = fc.record({
  batch: fc.oneof(fc.constant([] as number[]), fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 2 })),
  m: dimArb,
  k: dimArb,
  n: dimArb,
  lhs: fc.constantFrom(...LAYOUTS),
  rhs: fc.constantFrom(...LAYOUTS),
  dtype: fc.constantFrom("float32" as const, "float32" as const, "float64" as const),
});

describe("wasm gemm vs the TypeScript reference", () => {
  const saved = { ...cpuWasmOptions };
  beforeAll(() => {
    // Force the fast path (and the task split) on every shape, however small, on exactly the threads
    // asked for (no fallback to one thread when this machine is busy).
    configureCpuWasm({ enabled: true, minMacs: 0, parallelMinMacs: 0, adaptiveThreads: false });
  });
  afterAll(async () => {
    configureCpuWasm(saved);
    await setCpuThreads(undefined);
    await shutdownCpuWasmPool();
  });

  it("the fast path is available on this engine (Wasm SIMD)", () => {
    expect(cpuWasmInfo().available).toBe(true);
  });

  for (const [threads, mainTakesPart] of [[1, true], [2, true], [2, false]] as const) {
    const who = mainTakesPart ? "" : ", every task on the worker";
    it(`matches on random shapes and views, ${threads} thread(s)${who}`, async () => {
      await setCpuThreads(threads);
      configureCpuWasm({ mainTakesPart });
      const before = cpuWasmInfo().workerTasks;
      fc.assert(
        fc.property(caseArb, ({ batch, m, k, n, lhs, rhs, dtype }) => {
          const nb = batch.length;
          const x = operand(dtype, batch, m, k, lhs); // [...batch, m, k]
          const y = operand(dtype, batch, k, n, rhs); // [...batch, k, n]
          const bAxes = batch.map((_, i) => i);
          const dims: DotDims = { contracting: [[nb + 1], [nb]], batch: [bAxes, bAxes] };
          const { excess } = compare(x, y, dims, [...batch, m, n], k);
          expect(excess).toBeLessThanOrEqual(0);
        }),
        { numRuns: 150, seed: 42 + threads + (mainTakesPart ? 0 : 10) },
      );
      configureCpuWasm({ mainTakesPart: true });
      if (threads === 2) expect(cpuWasmInfo().workersRunning).toBe(1);
      if (!mainTakesPart) expect(cpuWasmInfo().workerTasks).toBeGreaterThan(before + 100);
    });
  }

  it("handles dimension numbers beyond [batch, m, k] x [batch, k, n] (two contracting axes, batch in the middle)", async () => {
    await setCpuThreads(2);
    // lhs [k1, b, m, k2], rhs [b, k2, n, k1]: contract (k1, k2), batch b.
    const x = host("float32", [5, 3, 37, 7]);
    const y = host("float32", [3, 7, 41, 5]);
    const dims: DotDims = { contracting: [[0, 3], [3, 1]], batch: [[1], [0]] };
    expect(compare(x, y, dims, [3, 37, 41], 35).excess).toBeLessThanOrEqual(0);
  });

  it("large products on the default thresholds agree with the reference (1 and 2 threads)", async () => {
    configureCpuWasm(saved);
    try {
      for (const threads of [1, 2]) {
        await setCpuThreads(threads);
        const x = host("float32", [300, 257]);
        const y = host("float32", [257, 301]);
        const dims: DotDims = { contracting: [[1], [0]], batch: [[], []] };
        expect(compare(x, y, dims, [300, 301], 257).excess).toBeLessThanOrEqual(0);
        // Batched with a shared right operand, the attention / MLP shape.
        const a = host("float32", [4, 64, 96]);
        const w = cpu.broadcastInDim(host("float32", [96, 200]), [4, 96, 200], [1, 2]);
        const bd: DotDims = { contracting: [[2], [1]], batch: [[0], [0]] };
        expect(compare(a, w, bd, [4, 64, 200], 96).excess).toBeLessThanOrEqual(0);
      }
    } finally {
      configureCpuWasm({ enabled: true, minMacs: 0, parallelMinMacs: 0 });
    }
  });

  it("computes float64 in float64 (a float32 product would lose the 2^-40 terms)", () => {
    const e = 2 ** -40;
    const x = cpu.fromHost(new Float64Array([1 + e, e, 2, 1 - e]), { shape: [2, 2], dtype: "float64" });
    const y = cpu.fromHost(new Float64Array([3, 1, 1, 5]), { shape: [2, 2], dtype: "float64" });
    const c = cpu.readSync(cpu.dotGeneral(x, y, { contracting: [[1], [0]], batch: [[], []] }, { shape: [2, 2], dtype: "float64" }));
    // By hand: [[3 + 3e + e, 1 + e + 5e], [6 + 1 - e, 2 + 5 - 5e]], all exact in float64.
    expect(Array.from(c)).toEqual([3 + 4 * e, 1 + 6 * e, 7 - e, 7 - 5 * e]);
    expect(c).toBeInstanceOf(Float64Array);
  });

  it("propagates NaN and infinity like the reference", () => {
    const x = cpu.fromHost(new Float32Array([NaN, 1, Infinity, 2, 0, 3]), { shape: [3, 2], dtype: "float32" });
    const y = cpu.fromHost(new Float32Array([1, 2, 3, 4]), { shape: [2, 2], dtype: "float32" });
    const dims: DotDims = { contracting: [[1], [0]], batch: [[], []] };
    const c = Array.from(cpu.readSync(cpu.dotGeneral(x, y, dims, { shape: [3, 2], dtype: "float32" })));
    // Row 0: NaN; row 1: [inf, inf]; row 2: [9, 12] by hand.
    expect(c.slice(0, 2).every(Number.isNaN)).toBe(true);
    expect(c.slice(2)).toEqual([Infinity, Infinity, 9, 12]);
  });
});

// ---------------------------------------------------------------------------------------------------
describe("wasm float32 elementwise binary ops", () => {
  // The scalar definitions: one float32 rounding of the exact result (fround of the double result is
  // that, for + − × ÷), Math.max / Math.min for NaN and signed zeros.
  const scalar: Record<WasmBinaryOp, (a: number, b: number) => number> = {
    add: (a, b) => Math.fround(a + b),
    sub: (a, b) => Math.fround(a - b),
    mul: (a, b) => Math.fround(a * b),
    div: (a, b) => Math.fround(a / b),
    max: (a, b) => Math.max(a, b),
    min: (a, b) => Math.min(a, b),
  };
  const specials = [NaN, Infinity, -Infinity, 0, -0, 1, -1, 3.4e38, 1e-45, 0.1];
  const values = (n: number): Float32Array => {
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = i % 7 === 0 ? specials[(i / 7) % specials.length]! : (random() - 0.5) * 2 ** Math.floor(random() * 40 - 20);
    return v;
  };
  const same = (a: number, b: number): boolean => Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));

  it("is bit-identical to the scalar definition, vector-vector and with a scalar on either side", () => {
    for (const n of [1, 3, 4, 5, 17, 1000, 16384, 16389, 40000]) {
      const x = values(n);
      const y = values(n);
      for (const op of Object.keys(scalar) as WasmBinaryOp[]) {
        for (const [a, b] of [[x, y], [x, -2.5], [0.75, y]] as const) {
          const got = wasmBinaryF32(op, a, b);
          expect(got).not.toBeNull();
          for (let i = 0; i < n; i++) {
            const av = typeof a === "number" ? a : a[i]!;
            const bv = typeof b === "number" ? b : b[i]!;
            const want = scalar[op](av, bv);
            if (!same(got![i]!, want)) expect.fail(`${op}(${av}, ${bv}) at ${i} of ${n}: got ${got![i]}, want ${want}`);
          }
        }
      }
    }
  });

  it("declines mismatched lengths", () => {
    expect(wasmBinaryF32("add", new Float32Array(5), new Float32Array(6))).toBeNull();
  });
});

// ---------------------------------------------------------------------------------------------------
describe("worker pool life cycle", () => {
  const saved = { ...cpuWasmOptions };
  afterAll(async () => {
    configureCpuWasm(saved);
    await setCpuThreads(undefined);
    await shutdownCpuWasmPool();
  });

  it("starts lazily, shuts down, and restarts on the next large product", async () => {
    // Thread counts exactly as asked (no fallback to one thread when this machine is busy).
    configureCpuWasm({ enabled: true, minMacs: 0, parallelMinMacs: 0, adaptiveThreads: false });
    await setCpuThreads(2);
    await shutdownCpuWasmPool();
    expect(cpuWasmInfo().workersRunning).toBe(0);
    const x = host("float32", [64, 64]);
    const dims: DotDims = { contracting: [[1], [0]], batch: [[], []] };
    expect(compare(x, x, dims, [64, 64], 64).excess).toBeLessThanOrEqual(0);
    expect(cpuWasmInfo().workersRunning).toBe(1);
    await shutdownCpuWasmPool();
    expect(cpuWasmInfo().workersRunning).toBe(0);
    expect(compare(x, x, dims, [64, 64], 64).excess).toBeLessThanOrEqual(0);
    expect(cpuWasmInfo().workersRunning).toBe(1);
    // Below parallelMinMacs the workers take no task (counted by the runtime); above, they do.
    configureCpuWasm({ parallelMinMacs: 1 << 20 });
    const before = cpuWasmInfo().workerTasks;
    for (let i = 0; i < 20; i++) expect(compare(x, x, dims, [64, 64], 64).excess).toBeLessThanOrEqual(0);
    expect(cpuWasmInfo().workerTasks).toBe(before);
    configureCpuWasm({ parallelMinMacs: 0 });
    await setCpuThreads(1); // fewer threads stop the workers
    expect(cpuWasmInfo().workersRunning).toBe(0);
    expect(compare(x, x, dims, [64, 64], 64).excess).toBeLessThanOrEqual(0);
  });

  /** Runs a script in a fresh Node process (with tsx); returns its exit status, output and wall time. */
  function child(body: string, env: Record<string, string>): { status: number | null; out: string; ms: number } {
    const dir = mkdtempSync(join(tmpdir(), "webgrad-wasm-"));
    const file = join(dir, "child.mts");
    const src = (p: string): string => pathToFileURL(resolve(ROOT, p)).href;
    writeFileSync(
      file,
      `import { cpuBackend as cpu } from ${JSON.stringify(src("src/ops/backend/cpu/index.ts"))};\n` +
        `import { cpuWasmInfo } from ${JSON.stringify(src("src/ops/backend/cpu/wasm/index.ts"))};\n` +
        body,
    );
    const t0 = Date.now();
    const r = spawnSync(process.execPath, ["--import", "tsx", file], {
      env: { ...process.env, ...env },
      encoding: "utf8",
      timeout: 30_000,
      cwd: ROOT,
    });
    return { status: r.status, out: `${r.stdout}${r.stderr}`, ms: Date.now() - t0 };
  }

  const productScript = `
const n = 200;
const a = new Float32Array(n * n).map((_, i) => (i % 7) - 3);
const x = cpu.fromHost(a, { shape: [n, n], dtype: "float32" });
const c = cpu.readSync(cpu.dotGeneral(x, x, { contracting: [[1], [0]], batch: [[], []] }, { shape: [n, n], dtype: "float32" }));
// c[0][0] = sum_k a[0][k] * a[k][0]: integers, exact in float32.
let s = 0; for (let k = 0; k < n; k++) s += a[k] * a[k * n];
console.log(JSON.stringify({ ok: c[0] === s, info: cpuWasmInfo() }));
`;

  it("a process with live workers exits on its own (workers are unref'd)", () => {
    const r = child(productScript, { WEBGRAD_THREADS: "2" });
    expect(r.status, r.out).toBe(0);
    const line = JSON.parse(r.out.trim().split("\n").pop()!) as { ok: boolean; info: { workersRunning: number } };
    expect(line.ok).toBe(true);
    expect(line.info.workersRunning).toBe(1);
    expect(r.ms).toBeLessThan(25_000);
  });

  // C = A·B with K = 2, by hand: every entry is -(1 + 2^-11)·1 + (1 + 2^-12)·(1 + 2^-12) = 2^-24 exactly.
  // A separate multiply rounds (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24 to float32 (a tie, to even: 1 + 2^-11),
  // and the sum is 0; a fused multiply-add (k = 1 after k = 0) keeps the 2^-24. 64 x 64 x 2 is above the
  // Wasm path's threshold (4096 multiply-adds).
  const fmaScript = `
const n = 64, u = 2 ** -11, v = 2 ** -12;
const a = new Float32Array(n * 2).map((_, i) => (i % 2 === 0 ? -(1 + u) : 1 + v));
const b = new Float32Array(2 * n).map((_, i) => (i < n ? 1 : 1 + v));
const x = cpu.fromHost(a, { shape: [n, 2], dtype: "float32" });
const y = cpu.fromHost(b, { shape: [2, n], dtype: "float32" });
const c = cpu.readSync(cpu.dotGeneral(x, y, { contracting: [[1], [0]], batch: [[], []] }, { shape: [n, n], dtype: "float32" }));
console.log(JSON.stringify({ values: [...new Set(c)], info: cpuWasmInfo() }));
`;
  const cpuHasFma = (): boolean => {
    try {
      return process.arch === "x64" && /^flags\s*:.*\bfma\b/m.test(readFileSync("/proc/cpuinfo", "utf8"));
    } catch {
      return false;
    }
  };

  it("uses the fused multiply-add where the engine has relaxed SIMD (Node 20: turned on at run time); WEBGRAD_RELAXED_SIMD=0 keeps mul + add", () => {
    const fused = child(fmaScript, {});
    expect(fused.status, fused.out).toBe(0);
    const f = JSON.parse(fused.out.trim().split("\n").pop()!) as { values: number[]; info: { relaxedSimd: boolean } };
    // Node 20's V8 has the feature behind a flag, which the runtime sets; later versions ship it.
    expect(f.info.relaxedSimd).toBe(true);
    // relaxed_madd may round once or twice; on x64 with FMA3 V8 emits vfmadd231ps.
    if (cpuHasFma()) expect(f.values).toEqual([2 ** -24]);
    else expect([[0], [2 ** -24]]).toContainEqual(f.values);

    const plain = child(fmaScript, { WEBGRAD_RELAXED_SIMD: "0" });
    expect(plain.status, plain.out).toBe(0);
    expect(JSON.parse(plain.out.trim().split("\n").pop()!)).toMatchObject({ values: [0], info: { relaxedSimd: false } });
  });

  it("falls back to one thread without shared memory, and honours WEBGRAD_THREADS", () => {
    const r = child(productScript, { WEBGRAD_CPU_SHARED: "0", WEBGRAD_THREADS: "2" });
    expect(r.status, r.out).toBe(0);
    const line = JSON.parse(r.out.trim().split("\n").pop()!) as {
      ok: boolean;
      info: { sharedMemory: boolean; threads: number; workersRunning: number };
    };
    expect(line).toMatchObject({ ok: true, info: { sharedMemory: false, threads: 1, workersRunning: 0 } });
    const one = child(productScript, { WEBGRAD_THREADS: "1" });
    expect(JSON.parse(one.out.trim().split("\n").pop()!)).toMatchObject({ ok: true, info: { threads: 1, workersRunning: 0 } });
  });
});

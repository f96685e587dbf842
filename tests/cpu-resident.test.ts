/**
 * @file Resident CPU storage (src/ops/backend/cpu/wasm/storage.ts, arena.ts): the arena allocator
 * against a model, the lifetime rules (the last counted holder frees, views keep storage alive, the
 * collector frees what is never disposed), and every kernel that runs in place on resident operands
 * against the same kernel on ordinary storage and against independent references.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { devicePut, dispose, jit, np, type Array as WArray } from "../src/index.js";
import { cpuBackend as cpu, type CpuBuffer } from "../src/ops/backend/cpu/index.js";
import { dotGeneralReference } from "../src/ops/backend/cpu/matmul.js";
import { ALIGN, alignUp, Arena } from "../src/ops/backend/cpu/wasm/arena.js";
import { allocateUninit } from "../src/ops/backend/cpu/buffer.js";
import { compileScalarProgram, fusedStats } from "../src/ops/backend/cpu/wasm/fused.js";
import type { ScalarNode } from "../src/ops/compile/scalar-program.js";
import { configureCpuWasm, cpuWasmInfo } from "../src/ops/backend/cpu/wasm/index.js";
import { getRuntime } from "../src/ops/backend/cpu/wasm/pool.js";
import {
  ARENA_MIN_BYTES, residentAddress, residentStats, setResidentStorage,
} from "../src/ops/backend/cpu/wasm/storage.js";

import { device as gpuDevice, noGpu } from "./webgpu/helpers.js";

const ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)), "..");
const F32 = "float32" as const;

afterEach(() => setResidentStorage(true));

/** A repository file's URL, quoted, for a child script's imports. */
const src = (p: string): string => JSON.stringify(pathToFileURL(resolve(ROOT, p)).href);

/** Runs `body` as a fresh Node process (with tsx); returns the JSON its last output line holds. */
function child<T>(body: string, flags: readonly string[], env: Record<string, string> = {}): T {
  const file = join(mkdtempSync(join(tmpdir(), "webgrad-resident-")), "child.mts");
  writeFileSync(file, body);
  const r = spawnSync(process.execPath, [...flags, "--import", "tsx", file], {
    encoding: "utf8", timeout: 30_000, cwd: ROOT, env: { ...process.env, ...env },
  });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as T;
}

/** A deterministic float32 array of `n` values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 31 - 1;
  }
  return a;
}

function host(x: CpuBuffer): Float32Array {
  return cpu.readSync(x) as Float32Array;
}

describe("Arena", () => {
  it("never hands out overlapping blocks, coalesces what is freed, and accounts for every byte", () => {
    type Op = { alloc: number } | { free: number };
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ alloc: fc.integer({ min: 1, max: 5000 }) }),
      fc.record({ free: fc.nat() }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 120 }), (ops) => {
        const start = 4096;
        const limit = start + 200_000;
        let grownTo = start;
        const arena = new Arena(start, limit, (end) => {
          grownTo = Math.max(grownTo, end);
          return true;
        });
        const live = new Map<number, number>(); // addr -> requested bytes
        for (const o of ops) {
          if ("alloc" in o) {
            const a = arena.alloc(o.alloc);
            const size = alignUp(o.alloc);
            const usedBefore = [...live.values()].reduce((s, b) => s + alignUp(b), 0);
            if (a < 0) {
              // Only when no free range fits and the top cannot grow that far.
              expect(usedBefore + size).toBeGreaterThan(0);
              expect(arena.freeRanges().every(([, b]) => b < size)).toBe(true);
              continue;
            }
            expect(a % ALIGN).toBe(0);
            expect(a).toBeGreaterThanOrEqual(start);
            expect(a + size).toBeLessThanOrEqual(limit);
            expect(a + size).toBeLessThanOrEqual(grownTo);
            for (const [b, n] of live) expect(a + size <= b || b + alignUp(n) <= a).toBe(true);
            live.set(a, o.alloc);
          } else if (live.size > 0) {
            const addr = [...live.keys()][o.free % live.size]!;
            arena.free(addr, live.get(addr)!);
            live.delete(addr);
          }
          // Live and free ranges tile [start, start + reserved) exactly; free ranges are coalesced.
          const st = arena.stats;
          const used = [...live.values()].reduce((s, b) => s + alignUp(b), 0);
          expect(st.used).toBe(used);
          expect(st.blocks).toBe(live.size);
          const free = arena.freeRanges();
          for (let i = 1; i < free.length; i++) expect(free[i]![0]).toBeGreaterThan(free[i - 1]![0] + free[i - 1]![1]);
          const all = [...[...live].map(([a, b]) => [a, alignUp(b)] as const), ...free].sort((x, y) => x[0] - y[0]);
          let at = start;
          for (const [a, n] of all) {
            expect(a).toBe(at);
            at += n;
          }
          expect(at).toBe(start + st.reserved);
        }
      }),
      { numRuns: 150 },
    );
  });

  it("reuses a freed block for the next allocation of its size, and refuses double frees and sizes <= 0", () => {
    const arena = new Arena(0, 1 << 20, () => true);
    const a = arena.alloc(1000);
    const b = arena.alloc(1000);
    arena.alloc(64);
    arena.free(a, 1000);
    expect(arena.alloc(1000)).toBe(a);
    arena.free(b, 1000);
    expect(() => arena.free(b, 1000)).toThrow(RangeError);
    expect(() => arena.alloc(0)).toThrow(RangeError);
  });

  it("returns -1 past its limit or when the memory cannot grow", () => {
    const tight = new Arena(0, 4096, () => true);
    expect(tight.alloc(4096)).toBe(0);
    expect(tight.alloc(1)).toBe(-1);
    const stuck = new Arena(0, 1 << 20, () => false);
    expect(stuck.alloc(64)).toBe(-1);
  });
});

describe("resident storage: lifetime", () => {
  const n = ARENA_MIN_BYTES / 4; // the smallest resident float32 array

  it("places large arrays in the arena and small ones on the heap", () => {
    const big = cpu.fromHost(values(n, 1), { shape: [n], dtype: F32 });
    const small = cpu.fromHost(values(n - 1, 2), { shape: [n - 1], dtype: F32 });
    expect(residentAddress(big.data)).toBeGreaterThan(0);
    expect(residentAddress(small.data)).toBe(-1);
    expect(host(big)).toEqual(values(n, 1));
    cpu.release(big);
    cpu.release(small);
  });

  it("returns a block with its last holder, and hands the same block to the next array of that size", () => {
    const x = cpu.fromHost(values(n, 3), { shape: [n], dtype: F32 });
    const at = residentAddress(x.data);
    const freed = residentStats.freedByRelease;
    cpu.release(x);
    cpu.release(x); // idempotent
    expect(residentStats.freedByRelease).toBe(freed + 1);
    const y = cpu.fromHost(values(n, 4), { shape: [n], dtype: F32 });
    expect(residentAddress(y.data)).toBe(at);
    expect(host(y)).toEqual(values(n, 4));
    cpu.release(y);
  });

  it("keeps storage alive while a view of it is held, whatever is allocated meanwhile", () => {
    const x = cpu.fromHost(values(2 * n, 5), { shape: [2, n], dtype: F32 });
    const v = cpu.transpose(x, [1, 0]); // a view sharing x's storage
    cpu.release(x);
    expect(residentAddress(v.data)).toBeGreaterThan(0);
    // Arrays of the same size would take x's block if it had been freed.
    const others = [0, 1, 2].map((s) => cpu.fromHost(values(2 * n, 10 + s), { shape: [2 * n], dtype: F32 }));
    const t = host(v);
    const want = values(2 * n, 5);
    for (let i = 0; i < n; i++) for (let j = 0; j < 2; j++) expect(t[i * 2 + j]).toBe(want[j * n + i]);
    const freed = residentStats.freedByRelease;
    cpu.release(v);
    expect(residentStats.freedByRelease).toBe(freed + 1);
    for (const o of others) cpu.release(o);
  });

  it("arrays disposed in a loop reuse the same blocks (the arena does not grow)", () => {
    const rt = getRuntime()!;
    const size = 4 << 20; // 16 MiB per array
    const a = np.array(values(size, 6));
    const b = np.array(values(size, 7));
    (np.add(a, b) as WArray).dispose();
    const reserved = rt.arena.stats.reserved;
    for (let i = 0; i < 30; i++) (np.add(a, b) as WArray).dispose();
    expect(rt.arena.stats.reserved).toBe(reserved);
    dispose([a, b]);
  });

  it("falls back to ordinary storage when turned off", () => {
    setResidentStorage(false);
    const x = cpu.fromHost(values(n, 8), { shape: [n], dtype: F32 });
    expect(residentAddress(x.data)).toBe(-1);
    expect(x.data.buffer instanceof SharedArrayBuffer).toBe(false);
    cpu.release(x);
  });

  it("past its budget, a synchronous loop that never disposes gets ordinary storage with the right values", () => {
    const out = child<{ bad: number; fallbacks: number; live: number }>(
      `import { np } from ${src("src/index.ts")};\n` +
        `import { residentStats } from ${src("src/ops/backend/cpu/wasm/storage.ts")};\n` +
        `const n = 1 << 18; // 1 MiB of float32 per array; the budget is 8 MiB\n` +
        `const x = np.array(Float32Array.from({ length: n }, (_, i) => i % 1000));\n` +
        `let bad = 0;\n` +
        `for (let i = 0; i < 40; i++) { const y = np.add(x, i).dataSync(); if (y[999] !== 999 + i || y[1000] !== i) bad++; }\n` +
        `console.log(JSON.stringify({ bad, fallbacks: residentStats.fallbacks, live: residentStats.liveBytes }));\n`,
      [],
      { WEBGRAD_CPU_ARENA_MB: "8" },
    );
    expect(out.bad).toBe(0);
    expect(out.fallbacks).toBeGreaterThan(0);
    expect(out.live).toBeLessThanOrEqual(8 * 2 ** 20);
  });

  it("frees what is never disposed once the collector reclaims it (child process with --expose-gc)", () => {
    const out = child<{ live: number; after: number; gc: number }>(
      `import { cpuBackend as cpu } from ${src("src/ops/backend/cpu/index.ts")};\n` +
        `import { residentStats } from ${src("src/ops/backend/cpu/wasm/storage.ts")};\n` +
        `for (let i = 0; i < 20; i++) cpu.fromHost(new Float32Array(1 << 16), { shape: [1 << 16], dtype: "float32" });\n` +
        `const live = residentStats.liveBytes;\n` +
        `for (let i = 0; i < 5 && residentStats.freedByGc < 20; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 20)); }\n` +
        `console.log(JSON.stringify({ live, after: residentStats.liveBytes, gc: residentStats.freedByGc }));\n`,
      ["--expose-gc"],
    );
    expect(out.live).toBe(20 * 4 * (1 << 16));
    expect(out.gc).toBe(20);
    expect(out.after).toBe(0);
  });
});

describe("resident storage: kernels in place", () => {
  /** Runs `f` with resident storage on and off; returns both results read back. */
  function both(f: () => CpuBuffer): [Float32Array, Float32Array] {
    const r: Float32Array[] = [];
    for (const on of [true, false]) {
      setResidentStorage(on);
      const out = f();
      r.push(host(out));
      cpu.release(out);
    }
    setResidentStorage(true);
    return [r[0]!, r[1]!];
  }

  it("elementwise ops run in place and equal float32 arithmetic done by hand", () => {
    fc.assert(
      fc.property(fc.integer({ min: 8192, max: 40000 }), fc.integer({ min: 0, max: 5 }), (size, cut) => {
        setResidentStorage(true);
        const av = values(size + cut, size);
        const bv = values(size, size + 1);
        const a0 = cpu.fromHost(av, { shape: [size + cut], dtype: F32 });
        const a = cpu.slice(a0, [cut], [size + cut], [1]); // an offset view
        const b = cpu.fromHost(bv, { shape: [size], dtype: F32 });
        const direct = fusedStats.direct;
        const s = cpu.binary("add", a, b, { shape: [size], dtype: F32 });
        expect(fusedStats.direct).toBe(direct + 1);
        const got = host(s);
        for (let i = 0; i < size; i++) if (got[i] !== Math.fround(av[i + cut]! + bv[i]!)) expect(got[i]).toBe(Math.fround(av[i + cut]! + bv[i]!));
        const m = cpu.binary("mul", s, s, { shape: [size], dtype: F32 });
        const gm = host(m);
        for (let i = 0; i < size; i++) if (gm[i] !== Math.fround(got[i]! * got[i]!)) expect(gm[i]).toBe(Math.fround(got[i]! * got[i]!));
        for (const x of [a0, a, b, s, m]) cpu.release(x);
      }),
      { numRuns: 12 },
    );
  });

  it("broadcasting elementwise ops run in place row by row, and equal the arithmetic by hand", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 16, max: 40 }), fc.integer({ min: 32, max: 40 }), fc.constantFrom(16, 32, 64, 66, 68), fc.constantFrom("row", "col", "mid"),
        fc.boolean(),
        (a, b, c, kind, residentBias) => {
          const xv = values(a * b * c, a * b + c);
          const bShape = kind === "row" ? [c] : kind === "col" ? [a, 1, 1] : [1, b, c];
          const bSize = bShape.reduce((p, q) => p * q, 1);
          const bv = values(bSize, c + 3);
          // A resident bias is sliced out of a larger array; a small one stays ordinary storage (and is
          // copied to scratch once by the row mode).
          const pad = residentBias ? ARENA_MIN_BYTES / 4 : 0;
          const x = np.array(xv, { shape: [a, b, c] });
          const bBig = np.array(Float32Array.from([...bv, ...new Float32Array(pad)]));
          const bias = np.reshape(np.slice(bBig, [0], [bSize]), bShape);
          const direct = fusedStats.direct;
          const y = np.add(x, bias) as WArray;
          const got = y.dataSync() as Float32Array;
          // Rows of whole vectors go in place; a row of 66 (not whole vectors) is staged.
          if (c % 4 === 0) expect(fusedStats.direct).toBeGreaterThan(direct);
          for (let i = 0; i < a; i++) {
            for (let j = 0; j < b; j++) {
              for (let k = 0; k < c; k++) {
                const bb = kind === "row" ? bv[k]! : kind === "col" ? bv[i]! : bv[j * c + k]!;
                const want = Math.fround(xv[(i * b + j) * c + k]! + bb);
                const g = got[(i * b + j) * c + k]!;
                if (g !== want) expect(g).toBe(want);
              }
            }
          }
          dispose([x, bBig, bias, y]);
        },
      ),
      { numRuns: 24 },
    );
  });

  it("fused kernels reading index views (iota) on resident data equal the arithmetic by hand", () => {
    // out[i, j] = (j < 5 + i) ? x[i, j] * i : -x[i, j]  with i, j iotas (one constant per row, one counting).
    const nodes: ScalarNode[] = [
      { op: "load", input: 0, dtype: F32 }, // 0: x
      { op: "iota", dim: 0, dtype: "int32" }, // 1: i
      { op: "iota", dim: 1, dtype: "int32" }, // 2: j
      { op: "const", value: 5, dtype: "int32" }, // 3
      { op: "binary", fn: "add", x: 1, y: 3, dtype: "int32" }, // 4: i + 5
      { op: "binary", fn: "lt", x: 2, y: 4, dtype: "bool" }, // 5: j < i + 5
      { op: "cast", x: 1, dtype: F32 }, // 6: float(i)
      { op: "binary", fn: "mul", x: 0, y: 6, dtype: F32 }, // 7: x * i
      { op: "unary", fn: "neg", x: 0, dtype: F32 }, // 8: -x
      { op: "select", pred: 5, onTrue: 7, onFalse: 8, dtype: F32 }, // 9
    ];
    const rows = 40;
    const cols = 256;
    const kernel = compileScalarProgram({ shape: [rows, cols], inputs: [{ dtype: F32 }], nodes, outputs: [9] });
    const xv = values(rows * cols, 51);
    const run = (): Float32Array => {
      const x = cpu.fromHost(xv, { shape: [rows, cols], dtype: F32 });
      const out = allocateUninit(F32, rows * cols);
      kernel([x], [rows, cols], [out]);
      cpu.release(x);
      return Float32Array.from(out as Float32Array);
    };
    const got = run();
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        const x = xv[i * cols + j]!;
        const want = j < i + 5 ? Math.fround(x * i) : -x;
        if (got[i * cols + j] !== want) expect(got[i * cols + j]).toBe(want);
      }
    }
    setResidentStorage(false);
    expect(run()).toEqual(got);
  });

  it("large in-place kernels run on all threads, the workers included, and still equal the arithmetic by hand", () => {
    const rt = getRuntime()!;
    const size = 3 * 65536 + 7;
    const av = values(size, 31);
    const bv = values(size, 32);
    const a = cpu.fromHost(av, { shape: [size], dtype: F32 });
    const b = cpu.fromHost(bv, { shape: [size], dtype: F32 });
    // On exactly the threads asked for: not paused by a busy machine (pool.ts, straggle.ts).
    configureCpuWasm({ adaptiveThreads: false });
    for (const mainTakesPart of [true, false]) {
      configureCpuWasm({ mainTakesPart });
      const parallel = fusedStats.parallel;
      const workerTasks = cpuWasmInfo().workerTasks;
      const s = cpu.binary("sub", a, b, { shape: [size], dtype: F32 });
      const t = cpu.unary("tanh", s, { shape: [size], dtype: F32 });
      configureCpuWasm({ mainTakesPart: true });
      const got = host(s);
      for (let i = 0; i < size; i++) if (got[i] !== Math.fround(av[i]! - bv[i]!)) expect(got[i]).toBe(Math.fround(av[i]! - bv[i]!));
      // tanh: the staged single-threaded kernel is the reference here (the same SIMD code, proven
      // against Math.tanh in cpu-fused.test.ts); threads must not change a single bit.
      setResidentStorage(false);
      const s0 = cpu.fromHost(got, { shape: [size], dtype: F32 });
      const t0 = cpu.unary("tanh", s0, { shape: [size], dtype: F32 });
      setResidentStorage(true);
      expect(host(t)).toEqual(host(t0));
      if (rt.shared && rt.threads > 1) {
        expect(fusedStats.parallel).toBe(parallel + 2);
        if (!mainTakesPart) expect(cpuWasmInfo().workerTasks).toBeGreaterThan(workerTasks);
      }
      for (const x of [s, t, s0, t0]) cpu.release(x);
    }
    configureCpuWasm({ adaptiveThreads: true });
    cpu.release(a);
    cpu.release(b);
  });

  it("transcendental ops give the same bits in place as staged", () => {
    const size = 33333; // not a multiple of the lanes: the tail is staged
    const xv = values(size, 9).map((v) => v * 4);
    for (const op of ["tanh", "exp", "erf", "log1p"] as const) {
      const [r, o] = both(() => {
        const x = cpu.fromHost(xv, { shape: [size], dtype: F32 });
        const y = cpu.unary(op, x, { shape: [size], dtype: F32 });
        cpu.release(x);
        return y;
      });
      expect(r).toEqual(o);
    }
  });

  it("matmuls read resident operands and write resident results in place: same bits as staged, close to the reference", () => {
    fc.assert(
      fc.property(
        // n a multiple of the register tile's 16 columns half of the time (then m even gives a result
        // written in place when it is large enough to be resident).
        fc.integer({ min: 1, max: 140 }),
        fc.oneof(fc.integer({ min: 1, max: 140 }), fc.integer({ min: 4, max: 9 }).map((t) => 16 * t)),
        fc.integer({ min: 1, max: 200 }),
        fc.boolean(),
        (m, n, k, transposeB) => {
          const av = values(m * k, m + 7 * k);
          const bv = values(k * n, n + 3 * k);
          const dims = { contracting: [[1], [transposeB ? 1 : 0]], batch: [[], []] } as const;
          const out = { shape: [m, n], dtype: F32 };
          // Big enough to be resident: pad the operands into larger storage and slice them out.
          const pad = ARENA_MIN_BYTES / 4;
          const run = (): CpuBuffer => {
            const aBig = cpu.fromHost(Float32Array.from([...new Float32Array(pad), ...av]), { shape: [pad + m * k], dtype: F32 });
            const a = cpu.reshape(cpu.slice(aBig, [pad], [pad + m * k], [1]), [m, k]);
            const bRaw = transposeB ? (() => { const t = new Float32Array(k * n); for (let i = 0; i < k; i++) for (let j = 0; j < n; j++) t[j * k + i] = bv[i * n + j]!; return t; })() : bv;
            const bBig = cpu.fromHost(Float32Array.from([...bRaw, ...new Float32Array(pad)]), { shape: [k * n + pad], dtype: F32 });
            const b = cpu.reshape(cpu.slice(bBig, [0], [k * n], [1]), transposeB ? [n, k] : [k, n]);
            const c = cpu.dotGeneral(a, b, dims as never, out);
            for (const x of [aBig, a, bBig, b]) cpu.release(x);
            return c;
          };
          const [r, o] = both(run);
          expect(r).toEqual(o);
          const ref = dotGeneralReference(
            cpu.fromHost(av, { shape: [m, k], dtype: F32 }),
            cpu.fromHost(bv, { shape: [k, n], dtype: F32 }),
            { contracting: [[1], [0]], batch: [[], []] },
            out,
          );
          const rv = host(ref);
          for (let i = 0; i < m * n; i++) expect(Math.abs(r[i]! - rv[i]!)).toBeLessThanOrEqual(1e-5 * k);
        },
      ),
      { numRuns: 25 },
    );
  });

  it("a product whose rows are whole register tiles is written straight into resident storage", () => {
    const a = cpu.fromHost(values(128 * 96, 21), { shape: [128, 96], dtype: F32 });
    const b = cpu.fromHost(values(96 * 128, 22), { shape: [96, 128], dtype: F32 });
    const dims = { contracting: [[1], [0]], batch: [[], []] } as never;
    const c = cpu.dotGeneral(a, b, dims, { shape: [128, 128], dtype: F32 });
    expect(residentAddress(c.data)).toBeGreaterThan(0);
    const ref = host(dotGeneralReference(a, b, dims, { shape: [128, 128], dtype: F32 }));
    const got = host(c);
    for (let i = 0; i < ref.length; i++) expect(Math.abs(got[i]! - ref[i]!)).toBeLessThanOrEqual(1e-4);
    for (const x of [a, b, c]) cpu.release(x);
  });

  it("reductions over rows and columns of an offset view give the same bits in place as staged", () => {
    const rows = 130;
    const cols = 257;
    const xv = values(rows * cols + 5, 11);
    for (const op of ["sum", "max", "min"] as const) {
      for (const axes of [[1], [0]]) {
        const kept = axes[0] === 1 ? [rows] : [cols];
        const [r, o] = both(() => {
          const x0 = cpu.fromHost(xv, { shape: [rows * cols + 5], dtype: F32 });
          const x = cpu.reshape(cpu.slice(x0, [5], [rows * cols + 5], [1]), [rows, cols]);
          const y = cpu.reduce(op, x, axes, { shape: kept, dtype: F32 });
          cpu.release(x0);
          cpu.release(x);
          return y;
        });
        expect(r).toEqual(o);
        // Independent check of one entry: a float64 fold rounded once (the reference's contract for sum).
        const i = 3;
        let want = op === "sum" ? 0 : op === "max" ? -Infinity : Infinity;
        const len = axes[0] === 1 ? cols : rows;
        for (let t = 0; t < len; t++) {
          const v = axes[0] === 1 ? xv[5 + i * cols + t]! : xv[5 + t * cols + i]!;
          want = op === "sum" ? want + v : op === "max" ? Math.max(want, v) : Math.min(want, v);
        }
        expect(Math.abs(r[i]! - Math.fround(want))).toBeLessThanOrEqual(op === "sum" ? 2e-6 * len : 0);
      }
    }
  });

  it("a jitted training step with donated resident parameters equals the same steps on ordinary storage", () => {
    const step = jit((w: WArray, x: WArray) => np.subtract(w, np.multiply(0.01, np.matmul(np.transpose(x), np.tanh(np.matmul(x, w))))), { donateArgnums: [0] });
    const run = (on: boolean): Float32Array => {
      setResidentStorage(on);
      let w = np.array(values(128 * 128, 12).map((v) => v * 0.1));
      w = np.reshape(w, [128, 128]) as WArray;
      const x = np.reshape(np.array(values(64 * 128, 13)), [64, 128]) as WArray;
      for (let i = 0; i < 5; i++) {
        const next = step(w, x) as WArray;
        w.dispose();
        w = next;
      }
      const out = w.dataSync() as Float32Array;
      dispose([w, x]);
      return out;
    };
    const r = run(true);
    const o = run(false);
    expect(r).toEqual(o);
    expect(r.every(Number.isFinite)).toBe(true);
  });
});

describe.skipIf(noGpu)("resident storage: handing arrays to other devices", () => {
  it("a resident CPU array (contiguous or a transposed view) copies to WebGPU with its values", async () => {
    const rows = 3;
    const cols = ARENA_MIN_BYTES / 4; // resident
    const v = values(rows * cols, 41);
    const c = np.array(v, { shape: [rows, cols], device: "cpu" });
    expect(residentAddress((c as unknown as { buffer: CpuBuffer }).buffer.data)).toBeGreaterThan(0);
    for (const x of [c, np.transpose(c)] as WArray[]) {
      const g = await devicePut(x, gpuDevice!.id);
      const got = (await g.data()) as Float32Array;
      const want = x.dataSync() as Float32Array;
      expect(want.buffer instanceof SharedArrayBuffer, "host copies are ordinary arrays").toBe(false);
      expect(got).toEqual(want);
      dispose([g, x]);
    }
  });
});

/**
 * @file Tests of the CPU target of fused elementwise kernels (src/ops/backend/cpu/wasm/fused.ts) and
 * of the float32 SIMD transcendental functions it uses (src/ops/backend/cpu/wasm/simd-math.ts).
 *
 * - Random programs (fast-check seeds drive a generator of programs, shapes and input layouts:
 *   broadcast, transposed, reversed, offset views, empty and odd sizes, chunk-crossing sizes) are run
 *   on the JavaScript path and on the Wasm SIMD path and compared with evaluating the same program
 *   node by node with the eager CPU kernels (elementwise.ts): bit for bit, every dtype (NaN payloads
 *   aside: any NaN equals any NaN).
 * - exp, log, tanh, logistic, sin, cos on f32x4 lanes against float64 `Math` rounded to float32, on a
 *   dense sweep plus edge cases (±0, ±Inf, NaN, subnormal inputs and results, huge arguments):
 *   special values exact, the rest within a few float32 ulps (bounds below per function).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import type { DType, Shape } from "../src/autodiff/aval.js";
import { DTypeError, ShapeError } from "../src/autodiff/errors.js";
import type { ScalarNode, ScalarProgram } from "../src/ops/compile/scalar-program.js";
import { cpuBackend as cpu, CpuBuffer } from "../src/ops/backend/cpu/index.js";
import { binary, bitcast, cast, select, unary } from "../src/ops/backend/cpu/elementwise.js";
import { compileScalarProgram, configureFused, fusedOptions, fusedStats } from "../src/ops/backend/cpu/wasm/fused.js";
import { cpuWasmInfo } from "../src/ops/backend/cpu/wasm/index.js";
import type { BinaryOp, UnaryOp } from "../src/ops/backend/kernel.js";
import { erf as erfRef } from "../src/ops/backend/cpu/math.js";

const saved = { ...fusedOptions };
afterEach(() => configureFused(saved));

// ---- a small deterministic generator (seeded by fast-check) ----

function rng(seed: number): { int(n: number): number; pick<T>(xs: readonly T[]): T; chance(p: number): boolean } {
  let s = seed >>> 0 || 1;
  const next = (): number => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
  return {
    int: (n) => Math.floor(next() * n),
    pick: (xs) => xs[Math.floor(next() * xs.length)]!,
    chance: (p) => next() < p,
  };
}
type R = ReturnType<typeof rng>;

const F_SPECIAL = [0, -0, 1, -1, 0.5, -2.5, 3.5, Infinity, -Infinity, NaN, 1e30, -1e-40, 1e-45, 2 ** 31, -(2 ** 31), 4e9];
const I_SPECIAL = [0, 1, -1, 2, 31, 32, 33, -2147483648, 2147483647, 7, -7, 100];

function value(r: R, dtype: DType): number {
  switch (dtype) {
    case "float32":
    case "float64":
      return r.chance(0.3) ? r.pick(F_SPECIAL) : (r.int(2001) - 1000) / 64 + r.int(1000) / 1e4;
    case "int32":
      return r.chance(0.3) ? r.pick(I_SPECIAL) : r.int(201) - 100;
    case "uint32":
      return r.chance(0.3) ? r.pick(I_SPECIAL) >>> 0 : r.int(201);
    case "bool":
      return r.int(2);
  }
}

/** A random view of `shape`: storage in a random axis order, broadcast and reversed axes, an offset. */
function randomView(r: R, shape: Shape, dtype: DType): CpuBuffer {
  const rank = shape.length;
  const bcast = shape.map((n) => n > 1 && r.chance(0.25));
  const perm = [...Array(rank).keys()].sort(() => r.int(3) - 1);
  const storeShape = perm.map((d) => (bcast[d] ? 1 : shape[d]!));
  const stStrides: number[] = new Array(rank).fill(0);
  let acc = 1;
  for (let i = rank - 1; i >= 0; i--) {
    stStrides[i] = acc;
    acc *= storeShape[i]!;
  }
  const pad = r.int(3);
  const size = acc + pad;
  const data = cpu.full({ shape: [size], dtype }, 0).data;
  for (let i = 0; i < size; i++) data[i] = value(r, dtype);
  const strides: number[] = new Array(rank).fill(0);
  let offset = pad;
  perm.forEach((d, i) => {
    if (bcast[d]) return;
    const rev = r.chance(0.2);
    strides[d] = rev ? -stStrides[i]! : stStrides[i]!;
    if (rev) offset += (shape[d]! - 1) * stStrides[i]!;
  });
  return new CpuBuffer(data, dtype, shape, strides, offset, false);
}

const DTYPES: readonly DType[] = ["float32", "int32", "uint32", "bool"];
const APPROX = new Set<UnaryOp>(["exp", "log", "tanh", "logistic", "sin", "cos", "erf", "expm1", "log1p"]);
const FLOAT_UNARY: readonly UnaryOp[] = [
  "neg", "abs", "sqrt", "rsqrt", "floor", "ceil", "round", "sign", "is_finite", "exp", "log", "tanh", "logistic",
  "sin", "cos", "log1p", "expm1", "tan", "atan", "asin", "sinh", "erf", "erf_inv",
];
const INT_UNARY: readonly UnaryOp[] = ["neg", "abs", "sign", "floor", "ceil", "round", "not", "is_finite"];
const CMP: readonly BinaryOp[] = ["eq", "ne", "lt", "le", "gt", "ge"];
const FLOAT_BINARY: readonly BinaryOp[] = ["add", "sub", "mul", "div", "max", "min", "rem", "pow", "atan2", ...CMP];
const INT_BINARY: readonly BinaryOp[] = ["add", "sub", "mul", "max", "min", "and", "or", "xor", "div", "rem", "pow", "shl", "shr", ...CMP];
const BOOL_BINARY: readonly BinaryOp[] = ["add", "mul", "max", "min", "and", "or", "xor", ...CMP];

/**
 * A random program over `nIn` inputs. `approx` allows the float32 ops that the SIMD path computes
 * within ulps rather than exactly; `f64` adds float64 values (which run on the JavaScript path).
 */
function randomProgram(r: R, shape: Shape, approx: boolean, f64: boolean | "only"): ScalarProgram {
  const dts: readonly DType[] = f64 === "only" ? ["float64"] : f64 ? [...DTYPES, "float64"] : DTYPES;
  const nIn = 1 + r.int(3);
  const inputs = Array.from({ length: nIn }, () => ({ dtype: r.pick(dts) }));
  const nodes: ScalarNode[] = inputs.map((x, i) => ({ op: "load", input: i, dtype: x.dtype }));
  /** Nodes whose float value may be a NaN with a payload that differs between paths. */
  const noisy = new Set<number>();
  if (r.chance(0.5)) {
    const dtype = r.pick(dts);
    nodes.push({ op: "const", value: value(r, dtype), dtype });
  }
  if (shape.length > 0 && r.chance(0.3)) nodes.push({ op: "iota", dim: r.int(shape.length), dtype: r.pick(["int32", "float32"] as const) });
  const steps = 2 + r.int(8);
  for (let s = 0; s < steps; s++) {
    const x = r.int(nodes.length);
    const dt = nodes[x]!.dtype;
    const float = dt === "float32" || dt === "float64";
    const kind = r.int(10);
    const sameAs = (i: number): number => {
      const cands = nodes.map((n, j) => (n.dtype === nodes[i]!.dtype ? j : -1)).filter((j) => j >= 0);
      return r.pick(cands);
    };
    if (kind < 3) {
      let fns = float ? FLOAT_UNARY : dt === "bool" ? (["not", "is_finite"] as UnaryOp[]) : INT_UNARY;
      if (!approx) fns = fns.filter((f) => !APPROX.has(f) || dt === "float64");
      const fn = r.pick(fns);
      nodes.push({ op: "unary", fn, x, dtype: fn === "is_finite" ? "bool" : dt });
      if (float) noisy.add(nodes.length - 1);
    } else if (kind < 7) {
      const fn = r.pick(float ? FLOAT_BINARY : dt === "bool" ? BOOL_BINARY : INT_BINARY);
      const y = sameAs(x);
      nodes.push({ op: "binary", fn, x, y, dtype: CMP.includes(fn) ? "bool" : dt });
      if (float) noisy.add(nodes.length - 1);
    } else if (kind < 8) {
      const preds = nodes.map((n, j) => (n.dtype === "bool" ? j : -1)).filter((j) => j >= 0);
      if (preds.length === 0) continue;
      const y = sameAs(x);
      nodes.push({ op: "select", pred: r.pick(preds), onTrue: x, onFalse: y, dtype: dt });
      if (noisy.has(x) || noisy.has(y)) noisy.add(nodes.length - 1);
    } else if (kind < 9) {
      nodes.push({ op: "cast", x, dtype: r.pick(dts) });
      if (float) noisy.add(nodes.length - 1);
    } else {
      const four = ["float32", "int32", "uint32"] as const;
      if (!(four as readonly DType[]).includes(dt)) continue;
      const to = r.pick(four);
      // float -> int bits only of values whose NaN payload is well defined (inputs and constants).
      if (dt === "float32" && to !== "float32" && noisy.has(x)) continue;
      nodes.push({ op: "bitcast", x, dtype: to });
      if (to === "float32") noisy.add(nodes.length - 1);
    }
  }
  const outputs = [nodes.length - 1];
  if (r.chance(0.5)) outputs.push(r.int(nodes.length));
  return { shape, inputs, nodes, outputs };
}

/** The program evaluated node by node with the eager CPU kernels. */
function reference(p: ScalarProgram, inputs: readonly CpuBuffer[]): CpuBuffer[] {
  const shape = p.shape;
  const v: CpuBuffer[] = [];
  for (const x of p.nodes) {
    const out = { shape, dtype: x.dtype };
    switch (x.op) {
      case "load":
        v.push(inputs[x.input]!);
        break;
      case "const":
        v.push(cpu.full(out, x.value));
        break;
      case "iota":
        v.push(cpu.iota(out, x.dim));
        break;
      case "unary":
        v.push(unary(x.fn, v[x.x]!, out));
        break;
      case "binary":
        v.push(binary(x.fn, v[x.x]!, v[x.y]!, out));
        break;
      case "select":
        v.push(select(v[x.pred]!, v[x.onTrue]!, v[x.onFalse]!));
        break;
      case "cast":
        v.push(cast(v[x.x]!, x.dtype));
        break;
      case "bitcast":
        v.push(bitcast(v[x.x]!, x.dtype));
        break;
    }
  }
  return p.outputs.map((o) => v[o]!);
}

/** First mismatch of two buffers' elements (NaN equals NaN; ±0 distinguished), or null. */
function mismatch(a: CpuBuffer, b: CpuBuffer): string | null {
  if (a.dtype !== b.dtype) return `dtype ${a.dtype} vs ${b.dtype}`;
  const x = cpu.readSync(a);
  const y = cpu.readSync(b);
  if (x.length !== y.length) return `length ${x.length} vs ${y.length}`;
  for (let i = 0; i < x.length; i++) {
    const u = x[i]!;
    const w = y[i]!;
    if (!(Object.is(u, w) || (Number.isNaN(u) && Number.isNaN(w)))) return `element ${i}: ${u} vs ${w}`;
  }
  return null;
}

function randomShape(r: R): number[] {
  if (r.chance(0.1)) return r.pick([[4099], [3, 1367], [2, 2, 1031], [4096], [4097]]);
  const rank = r.int(4);
  return Array.from({ length: rank }, () => r.pick([0, 1, 1, 2, 3, 4, 5, 7, 9, 16, 17]));
}

function checkProgram(seed: number, approx: boolean, f64: boolean | "only", paths: readonly ("js" | "wasm")[]): void {
  const r = rng(seed);
  const shape = randomShape(r);
  const p = randomProgram(r, shape, approx, f64);
  const inputs = p.inputs.map((x) => randomView(r, shape, x.dtype));
  const want = reference(p, inputs);
  for (const path of paths) {
    configureFused(path === "js" ? { wasm: false } : { wasm: true, wasmMinSize: 0 });
    const got = compileScalarProgram(p)(inputs);
    got.forEach((g, j) => {
      expect(g.shape).toEqual(shape);
      const m = mismatch(g, want[j]!);
      if (m !== null) {
        throw new Error(`${path} path, output ${j}: ${m}\nprogram ${JSON.stringify(p)}\nviews ${JSON.stringify(inputs.map((x) => [x.strides, x.offset]))}`);
      }
    });
  }
}

describe("fused elementwise kernels: random programs against the eager kernels", () => {
  it("float32 / int32 / uint32 / bool programs: both paths bit-identical to the eager kernels", () => {
    const before = { ...fusedStats };
    fc.assert(fc.property(fc.integer(), (seed) => checkProgram(seed, false, false, ["js", "wasm"])), { numRuns: 400 });
    // Every generated module validates, and most programs have a SIMD form (the rest use the JS path).
    expect(fusedStats.wasmBuildFailures).toBe(before.wasmBuildFailures);
    if (cpuWasmInfo().available) expect(fusedStats.wasm - before.wasm).toBeGreaterThan(100);
  });

  it("a float -> int32 -> float cast chain gives +0, never -0, for values in (-1, 0) (a seed that once failed)", () => {
    checkProgram(265234825, true, true, ["js", "wasm"]);
  });

  it("programs with float64 and every float op: the JavaScript path is bit-identical", () => {
    fc.assert(fc.property(fc.integer(), (seed) => checkProgram(seed, true, true, ["js"])), { numRuns: 300 });
  });

  it("float64 programs: both paths (f64x2 lanes where the ops allow) bit-identical to the eager kernels", () => {
    const before = { ...fusedStats };
    fc.assert(fc.property(fc.integer(), (seed) => checkProgram(seed, false, "only", ["js", "wasm"])), { numRuns: 300 });
    expect(fusedStats.wasmBuildFailures).toBe(before.wasmBuildFailures);
    // Most random float64 programs hold an op without an f64x2 form (they run on the JS path).
    if (cpuWasmInfo().available) expect(fusedStats.wasm - before.wasm).toBeGreaterThan(5);
  });

  it("a program with float64 values runs in float64 even when forced onto the Wasm path", () => {
    configureFused({ wasm: true, wasmMinSize: 0 });
    const n = 1000;
    const x = new Float64Array(n).map((_, i) => 1 + i * 1e-12);
    const p: ScalarProgram = {
      shape: [n],
      inputs: [{ dtype: "float64" }],
      nodes: [
        { op: "load", input: 0, dtype: "float64" },
        { op: "const", value: 1, dtype: "float64" },
        { op: "binary", fn: "sub", x: 0, y: 1, dtype: "float64" },
      ],
      outputs: [2],
    };
    const before = fusedStats.wasm;
    const [y] = compileScalarProgram(p)([new CpuBuffer(x, "float64", [n])]);
    expect(y!.dtype).toBe("float64");
    if (cpuWasmInfo().available) expect(fusedStats.wasm).toBe(before + 1); // on f64x2 lanes
    // In float32, 1 + i·1e-12 - 1 would be 0 for every i; in float64 it is i·1e-12 to ~1e-4 relative.
    for (let i = 1; i < n; i += 37) expect(Math.abs((y!.data[i]! - i * 1e-12) / (i * 1e-12))).toBeLessThan(1e-3);
  });

  it("serves every shape and layout of a program from one compiled kernel", () => {
    const p = (shape: Shape): ScalarProgram => ({
      shape,
      inputs: [{ dtype: "float32" }, { dtype: "float32" }],
      nodes: [
        { op: "load", input: 0, dtype: "float32" },
        { op: "load", input: 1, dtype: "float32" },
        { op: "binary", fn: "mul", x: 0, y: 1, dtype: "float32" },
      ],
      outputs: [2],
    });
    configureFused({ wasm: true, wasmMinSize: 0 });
    // A bias [3] broadcast over rows of [2, 3], then the same kernel on a [5] shape.
    const k = compileScalarProgram(p([2, 3]));
    const a = new CpuBuffer(new Float32Array([1, 2, 3, 4, 5, 6]), "float32", [2, 3]);
    const b = new CpuBuffer(new Float32Array([10, 20, 30]), "float32", [2, 3], [0, 1], 0, false);
    expect(Array.from(k([a, b])[0]!.data)).toEqual([10, 40, 90, 40, 100, 180]);
    const c = new CpuBuffer(new Float32Array([1, 2, 3, 4, 5]), "float32", [5]);
    const s = new CpuBuffer(new Float32Array([2]), "float32", [5], [0], 0, false);
    expect(Array.from(compileScalarProgram(p([5]))(
      [c, s],
    )[0]!.data)).toEqual([2, 4, 6, 8, 10]);
  });

  it("writes into given output storage, in place over a contiguous input on both paths", () => {
    const p: ScalarProgram = {
      shape: [5000],
      inputs: [{ dtype: "float32" }],
      nodes: [
        { op: "load", input: 0, dtype: "float32" },
        { op: "const", value: 2, dtype: "float32" },
        { op: "binary", fn: "mul", x: 0, y: 1, dtype: "float32" },
        { op: "binary", fn: "gt", x: 0, y: 1, dtype: "bool" },
      ],
      outputs: [2, 3],
    };
    for (const wasm of [false, true]) {
      configureFused({ wasm, wasmMinSize: 0 });
      const data = Float32Array.from({ length: 5000 }, (_, i) => i);
      const mask = new Uint8Array(5000);
      const [y, m] = compileScalarProgram(p)([new CpuBuffer(data, "float32", [5000])], undefined, [data, mask]);
      expect(y!.data).toBe(data);
      expect(y!.owned).toBe(false);
      for (const i of [0, 1, 2, 3, 4095, 4096, 4999]) {
        expect(data[i]).toBe(2 * i);
        expect(mask[i]).toBe(i > 2 ? 1 : 0);
      }
      expect(m!.data).toBe(mask);
    }
    const k = compileScalarProgram(p);
    const x = new CpuBuffer(new Float32Array(5000), "float32", [5000]);
    expect(() => k([x], undefined, [new Float32Array(10), new Uint8Array(5000)])).toThrow(ShapeError);
    expect(() => k([x], undefined, [new Int32Array(5000), new Uint8Array(5000)])).toThrow(ShapeError);
  });

  it("reads index views (data null) as offset + Σ index·stride in the input's dtype, on both paths", () => {
    for (const dtype of ["int32", "float32", "uint32", "bool", "float64"] as const) {
      const p: ScalarProgram = {
        shape: [40, 50],
        inputs: [{ dtype }],
        nodes: [{ op: "load", input: 0, dtype }],
        outputs: [0],
      };
      for (const wasm of [false, true]) {
        configureFused({ wasm, wasmMinSize: 0 });
        const [y] = compileScalarProgram(p)([{ data: null, strides: [3, -1], offset: 30 }]);
        const d = y!.data;
        // Offsets from -19 (wrapping for uint32) through 0 to 147.
        for (const [i, j] of [[0, 0], [0, 49], [0, 30], [13, 7], [39, 49], [3, 49], [39, 0]] as const) {
          const v = 30 + 3 * i - j;
          expect(d[i * 50 + j]).toBe(dtype === "bool" ? +(v !== 0) : dtype === "uint32" ? v >>> 0 : v);
        }
      }
    }
  });

  it("rejects ill-formed programs and inputs with named errors", () => {
    const load = { op: "load", input: 0, dtype: "float32" } as const;
    expect(() =>
      compileScalarProgram({ shape: [2], inputs: [{ dtype: "float32" }], nodes: [load, { op: "unary", fn: "not", x: 0, dtype: "float32" }], outputs: [1] }),
    ).toThrow(DTypeError);
    expect(() =>
      compileScalarProgram({ shape: [2], inputs: [{ dtype: "float32" }], nodes: [load, { op: "unary", fn: "neg", x: 5, dtype: "float32" }], outputs: [1] }),
    ).toThrow(ShapeError);
    const k = compileScalarProgram({ shape: [2], inputs: [{ dtype: "float32" }], nodes: [load], outputs: [0] });
    expect(() => k([new CpuBuffer(new Int32Array(2), "int32", [2])])).toThrow(/input 0 of dtype float32, got int32/);
    expect(() => k([])).toThrow(ShapeError);
  });
});

// ---- SIMD transcendental functions ----

/** Distance in float32 ulps between float32 `got` and the exact value `want` (a double). */
function ulps(got: number, want: number): number {
  if (Number.isNaN(want)) return Number.isNaN(got) ? 0 : Infinity;
  if (got === want || got === Math.fround(want)) return 0;
  if (!Number.isFinite(want) || !Number.isFinite(got)) return Infinity;
  const a = Math.abs(want);
  // ulp of the float32 binade holding `want` (subnormals: 2^-149).
  const ulp = a < 2 ** -126 ? 2 ** -149 : 2 ** (Math.floor(Math.log2(a)) - 23);
  return Math.abs(got - want) / ulp;
}

function runUnary(fn: UnaryOp, xs: Float32Array): Float32Array {
  configureFused({ wasm: true, wasmMinSize: 0 });
  const p: ScalarProgram = {
    shape: [xs.length],
    inputs: [{ dtype: "float32" }],
    nodes: [{ op: "load", input: 0, dtype: "float32" }, { op: "unary", fn, x: 0, dtype: "float32" }],
    outputs: [1],
  };
  return compileScalarProgram(p)([new CpuBuffer(xs, "float32", [xs.length])])[0]!.data as Float32Array;
}

const logistic = (x: number): number => 1 / (1 + Math.exp(-x));
/** float64 references: Math, and math.ts's erf (W. J. Cody's rational approximations, ~1 float64 ulp). */
const EXACT: Record<string, (x: number) => number> = {
  exp: Math.exp, log: Math.log, tanh: Math.tanh, logistic, sin: Math.sin, cos: Math.cos, erf: erfRef,
  expm1: Math.expm1, log1p: Math.log1p,
};
/** Largest error allowed, float32 ulps (measured maxima are 1-2; the bound leaves a margin). */
const MAX_ULPS: Record<string, number> = { exp: 2, log: 2, tanh: 3, logistic: 4, sin: 2, cos: 2, erf: 3, expm1: 4, log1p: 4 };

function sweep(lo: number, hi: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => lo + ((hi - lo) * i) / (n - 1));
}

describe("float32 SIMD transcendental functions", () => {
  const available = cpuWasmInfo().available;
  const edges = [
    0, -0, Infinity, -Infinity, NaN, 1e-45, -1e-45, 1e-40, -1e-40, 1.1754942e-38, 1.1754944e-38, 3.4028235e38,
    -3.4028235e38, 1, -1, 0.5, 2, 88.7, 88.8, -87.3, -103.9, -104, 89, 709, 8191, 8192, 8193, 1e5, -1e5, 1e10,
    3.14159265, 1.5707964, 0.625, -0.625, 2.44e-4, 9, -9, 20, -20,
  ];

  for (const fn of Object.keys(EXACT)) {
    it.runIf(available)(`${fn}: within ${MAX_ULPS[fn]} ulps of float64 Math, IEEE special values exact`, () => {
      const pts = [
        ...edges,
        ...sweep(-10, 10, 20001),
        ...sweep(-110, 110, 4001),
        ...sweep(-1e4, 1e4, 4001),
        ...Array.from({ length: 2000 }, (_, i) => 2 ** (-149 + (i * 277) / 2000)),
        ...Array.from({ length: 2000 }, (_, i) => -(2 ** (-149 + (i * 277) / 2000))),
      ];
      const xs = Float32Array.from(pts);
      const got = runUnary(fn as UnaryOp, xs);
      let worst = 0;
      let at = 0;
      for (let i = 0; i < xs.length; i++) {
        const want = EXACT[fn]!(xs[i]!);
        const u = ulps(got[i]!, want);
        if (u > worst) {
          worst = u;
          at = i;
        }
        // Signed zeros and infinities exactly.
        if (want === 0 || !Number.isFinite(want)) {
          if (Math.fround(want) === want && !Object.is(got[i], Math.fround(want)) && !(Number.isNaN(want) && Number.isNaN(got[i]!))) {
            // Rounding to 0 / Inf must agree in sign.
            if (!(got[i] === want)) throw new Error(`${fn}(${xs[i]}) = ${got[i]}, want ${want}`);
          }
        }
      }
      if (worst > MAX_ULPS[fn]!) throw new Error(`${fn}: ${worst} ulps at x = ${xs[at]} (got ${got[at]}, want ${EXACT[fn]!(xs[at]!)})`);
    });
  }

  it.runIf(available)("keeps the sign of zero where the function is odd", () => {
    const xs = Float32Array.from([0, -0]);
    for (const fn of ["tanh", "sin"] as const) {
      const y = runUnary(fn, xs);
      expect(Object.is(y[0], 0)).toBe(true);
      expect(Object.is(y[1], -0)).toBe(true);
    }
  });
});

describe("eager float32 ops on the Wasm path (CpuBackend.unary / binary on large arrays)", () => {
  const shape = [130, 129]; // 16770 elements: above the eager Wasm thresholds, not a multiple of 4
  const n = shape[0]! * shape[1]!;
  const data = (seed: number): Float32Array => {
    const r = rng(seed);
    return Float32Array.from({ length: n }, () => value(r, "float32"));
  };
  const a = new CpuBuffer(data(1), "float32", shape);
  // A transposed view of a [129, 130] array, and a row broadcast.
  const b = new CpuBuffer(data(2), "float32", shape, [1, 130], 0, false);
  const row = new CpuBuffer(data(3).subarray(0, 129), "float32", shape, [0, 1], 0, false);

  it("binary ops are bit-identical to the TypeScript kernels, on contiguous, transposed and broadcast operands", () => {
    for (const op of ["add", "sub", "mul", "div", "max", "min", "lt", "ge", "eq", "ne"] as const) {
      const out = { shape, dtype: (CMP.includes(op) ? "bool" : "float32") as DType };
      for (const [x, y] of [[a, b], [b, row], [row, a]] as const) {
        const m = mismatch(cpu.binary(op, x, y, out), binary(op, x, y, out));
        if (m !== null) throw new Error(`${op}: ${m}`);
      }
    }
  });

  it("unary ops match the TypeScript kernels: exactly, or within the SIMD functions' ulp bounds", () => {
    for (const op of ["neg", "abs", "sqrt", "rsqrt", "floor", "ceil", "round", "sign", "exp", "log", "tanh", "logistic", "sin", "cos", "erf", "expm1", "log1p"] as const) {
      const out = { shape, dtype: "float32" as DType };
      for (const x of [a, b]) {
        const got = cpu.readSync(cpu.unary(op, x, out));
        const want = cpu.readSync(unary(op, x, out));
        const bound = MAX_ULPS[op] ?? 0;
        for (let i = 0; i < n; i++) {
          // The reference is float64 Math rounded once, so within 0.5 ulp of exact: allow bound + 0.5.
          const u = ulps(got[i]!, want[i]!);
          if (!(u <= bound + 0.5) && !(Number.isNaN(got[i]!) && Number.isNaN(want[i]!))) {
            throw new Error(`${op}: element ${i}: ${got[i]} vs ${want[i]}`);
          }
          if (bound === 0 && !Object.is(got[i], want[i]) && !Number.isNaN(want[i]!)) throw new Error(`${op}: element ${i}: ${got[i]} vs ${want[i]}`);
        }
      }
    }
  });
});

describe("fused kernels across memory growth", () => {
  const ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)), "..");
  // A fused kernel, then a large product that grows the runtime's memory (an unshared memory detaches
  // its old buffer on grow), then the kernel again: it must read and write through the new buffer.
  const script = `
const f = "float32";
const k = compileScalarProgram({ shape: [], inputs: [{ dtype: f }, { dtype: f }], nodes: [
  { op: "load", input: 0, dtype: f }, { op: "load", input: 1, dtype: f }, { op: "binary", fn: "mul", x: 0, y: 1, dtype: f }], outputs: [2] });
const n = 10000;
const x = new CpuBuffer(new Float32Array(n).map((_, i) => i), f, [n]);
const ok1 = k([x, x], [n])[0].data[99] === 99 * 99;
const m = 700;
const a = cpu.fromHost(new Float32Array(m * m).fill(1), { shape: [m, m], dtype: f });
const c = cpu.readSync(cpu.dotGeneral(a, a, { contracting: [[1], [0]], batch: [[], []] }, { shape: [m, m], dtype: f }));
const y = k([x, x], [n])[0].data;
console.log(JSON.stringify({ ok: ok1 && c[0] === m && y[99] === 99 * 99 && y[n - 1] === Math.fround((n - 1) * (n - 1)), stats: fusedStats, info: cpuWasmInfo() }));
`;
  for (const shared of ["1", "0"]) {
    it(`keeps working after the memory grows (shared memory: ${shared === "1"})`, () => {
      const dir = mkdtempSync(join(tmpdir(), "webgrad-fused-"));
      const file = join(dir, "child.mts");
      const src = (p: string): string => JSON.stringify(pathToFileURL(resolve(ROOT, p)).href);
      writeFileSync(
        file,
        `import { cpuBackend as cpu, CpuBuffer } from ${src("src/ops/backend/cpu/index.ts")};\n` +
          `import { cpuWasmInfo, compileScalarProgram, fusedStats, configureFused } from ${src("src/ops/backend/cpu/wasm/index.ts")};\n` +
          `configureFused({ wasmMinSize: 0 });\n` +
          script,
      );
      const r = spawnSync(process.execPath, ["--import", "tsx", file], {
        env: { ...process.env, WEBGRAD_CPU_SHARED: shared },
        encoding: "utf8",
        timeout: 30_000,
        cwd: ROOT,
      });
      const line = `${r.stdout}`.trim().split("\n").pop() ?? "";
      const res = JSON.parse(line) as { ok: boolean; stats: { wasm: number }; info: { sharedMemory: boolean } };
      expect(res.ok).toBe(true);
      expect(res.stats.wasm).toBe(2);
      expect(res.info.sharedMemory).toBe(shared === "1");
    });
  }
});

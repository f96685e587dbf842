/**
 * @file Tests of the CPU backend's kernels (src/ops/backend/cpu) against simple references written
 * here with float64 / BigInt arithmetic and naive index loops. Operands are random views (transposed,
 * sliced with steps, reversed, broadcast, and compositions of these) so every kernel's strided path is
 * exercised, with odd, size-0 and size-1 dims. Start with the helpers, then one describe per op family.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { DType } from "../src/autodiff/aval.js";
import { BackendError, DTypeError, ShapeError } from "../src/autodiff/errors.js";
import { cpuBackend as cpu, CpuBuffer, erf, erfInv } from "../src/ops/backend/cpu/index.js";
import {
  BINARY_OPS,
  UNARY_OPS,
  type AnyTypedArray,
  type BinaryOp,
  type DotDims,
  type UnaryOp,
} from "../src/ops/backend/kernel.js";

// ---------------------------------------------------------------------------------------------------
// Reference tensors: shape + C-order values as plain numbers.

interface Ref {
  readonly shape: readonly number[];
  readonly data: number[];
}

const sizeOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = i % shape[d]!;
    i = Math.floor(i / shape[d]!);
  }
  return idx;
}

function ravel(idx: readonly number[], shape: readonly number[]): number {
  let i = 0;
  for (let d = 0; d < shape.length; d++) i = i * shape[d]! + idx[d]!;
  return i;
}

const at = (t: Ref, idx: readonly number[]): number => t.data[ravel(idx, t.shape)]!;

function build(shape: readonly number[], f: (idx: number[]) => number): Ref {
  const data: number[] = [];
  for (let i = 0; i < sizeOf(shape); i++) data.push(f(unravel(i, shape)));
  return { shape, data };
}

const refTranspose = (t: Ref, perm: readonly number[]): Ref =>
  build(
    perm.map((p) => t.shape[p]!),
    (idx) => {
      const src = new Array<number>(perm.length);
      perm.forEach((p, i) => (src[p] = idx[i]!));
      return at(t, src);
    },
  );

const refSlice = (t: Ref, starts: readonly number[], limits: readonly number[], steps: readonly number[]): Ref =>
  build(
    starts.map((s, d) => Math.ceil((limits[d]! - s) / steps[d]!)),
    (idx) => at(t, idx.map((i, d) => starts[d]! + i * steps[d]!)),
  );

const refReverse = (t: Ref, axes: readonly number[]): Ref =>
  build(t.shape, (idx) => at(t, idx.map((i, d) => (axes.includes(d) ? t.shape[d]! - 1 - i : i))));

const refBroadcast = (t: Ref, shape: readonly number[], dims: readonly number[]): Ref =>
  build(shape, (idx) => at(t, dims.map((od, i) => (t.shape[i] === 1 ? 0 : idx[od]!))));

// ---------------------------------------------------------------------------------------------------
// Random data and random views.

/** mulberry32: a small seeded PRNG, so fast-check only has to draw a seed. */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed | 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) | 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
  shuffle<T>(xs: readonly T[]): T[] {
    const a = [...xs];
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(0, i);
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
    return a;
  }
}

type ValueGen = (rng: Rng) => number;

const SPECIAL_FLOATS = [NaN, Infinity, -Infinity, 0, -0, 0.5, -0.5, 1.5, 2.5, -2.5, 1e30, -1e-30, 1, -1];
const SPECIAL_INT32 = [0, 1, -1, 2, 2147483647, -2147483648, 65536, -65537, 46341];
const SPECIAL_UINT32 = [0, 1, 2, 4294967295, 2147483648, 2147483647, 65536];

/** Random values of a dtype, with a share of edge cases when `special`. */
function valuesOf(dtype: DType, special = true): ValueGen {
  switch (dtype) {
    case "float32":
    case "float64":
      return (r) => (special && r.next() < 0.15 ? r.pick(SPECIAL_FLOATS) : (r.next() * 8 - 4));
    case "int32":
      return (r) =>
        special && r.next() < 0.25
          ? r.pick(SPECIAL_INT32)
          : r.next() < 0.5
            ? r.int(-20, 20)
            : r.int(-2147483648, 2147483647);
    case "uint32":
      return (r) =>
        special && r.next() < 0.25 ? r.pick(SPECIAL_UINT32) : r.next() < 0.5 ? r.int(0, 40) : r.int(0, 4294967295);
    case "bool":
      return (r) => r.int(0, 1);
  }
}

function typedOf(dtype: DType, values: readonly number[]): AnyTypedArray {
  switch (dtype) {
    case "float32":
      return Float32Array.from(values);
    case "float64":
      return Float64Array.from(values);
    case "int32":
      return Int32Array.from(values);
    case "uint32":
      return Uint32Array.from(values);
    case "bool":
      return Uint8Array.from(values);
  }
}

interface Operand {
  readonly buf: CpuBuffer;
  readonly ref: Ref;
}

function plain(shape: readonly number[], dtype: DType, values: readonly number[]): Operand {
  const typed = typedOf(dtype, values);
  return { buf: cpu.fromHost(typed, { shape, dtype }), ref: { shape, data: Array.from(typed) } };
}

type ViewKind = "plain" | "transpose" | "slice" | "reverse" | "broadcast";
const VIEW_KINDS: readonly ViewKind[] = ["plain", "transpose", "slice", "reverse", "broadcast"];

/**
 * A random operand of `shape`: plain, or a view (transpose / strided slice / reverse / broadcast) of a
 * recursively generated base, with its reference values computed by the naive reference view ops.
 */
function operand(rng: Rng, shape: readonly number[], dtype: DType, gen: ValueGen, depth = 2): Operand {
  const nd = shape.length;
  const kind: ViewKind = depth === 0 ? "plain" : rng.pick(VIEW_KINDS);
  switch (kind) {
    case "plain":
      return plain(shape, dtype, Array.from({ length: sizeOf(shape) }, () => gen(rng)));
    case "transpose": {
      const perm = rng.shuffle([...shape.keys()]);
      const baseShape = new Array<number>(nd);
      perm.forEach((p, i) => (baseShape[p] = shape[i]!));
      const base = operand(rng, baseShape, dtype, gen, depth - 1);
      return { buf: cpu.transpose(base.buf, perm), ref: refTranspose(base.ref, perm) };
    }
    case "slice": {
      const steps = shape.map(() => rng.int(1, 3));
      const starts = shape.map(() => rng.int(0, 2));
      const limits = shape.map((n, d) => (n === 0 ? starts[d]! : starts[d]! + (n - 1) * steps[d]! + 1));
      const baseShape = limits.map((l) => l + rng.int(0, 2));
      const base = operand(rng, baseShape, dtype, gen, depth - 1);
      return { buf: cpu.slice(base.buf, starts, limits, steps), ref: refSlice(base.ref, starts, limits, steps) };
    }
    case "reverse": {
      const axes = [...shape.keys()].filter(() => rng.next() < 0.6);
      const base = operand(rng, shape, dtype, gen, depth - 1);
      return { buf: cpu.reverse(base.buf, axes), ref: refReverse(base.ref, axes) };
    }
    case "broadcast": {
      // Some dims are absent from the base (rank expansion), some are size 1 (stride 0).
      const dims = [...shape.keys()].filter(() => rng.next() < 0.7);
      const baseShape = dims.map((d) => (rng.next() < 0.4 ? 1 : shape[d]!));
      const base = operand(rng, baseShape, dtype, gen, depth - 1);
      return { buf: cpu.broadcastInDim(base.buf, shape, dims), ref: refBroadcast(base.ref, shape, dims) };
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Comparison.

const sameNumber = (a: number, b: number): boolean => a === b || (a !== a && b !== b);

/** Exact equality (NaN equals NaN, -0 equals 0), with the first mismatch in the message. */
function expectValues(actual: AnyTypedArray, expected: readonly number[], what = ""): void {
  expect(actual.length, `${what} length`).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (!sameNumber(actual[i]!, expected[i]!)) {
      expect.fail(`${what} element ${i}: got ${actual[i]}, expected ${expected[i]}`);
    }
  }
}

/** Equality within `tol(i)` absolute (exact for infinities and NaN). */
function expectClose(actual: AnyTypedArray, expected: readonly number[], tol: (i: number) => number, what = ""): void {
  expect(actual.length, `${what} length`).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (sameNumber(a, e)) continue;
    if (!(Math.abs(a - e) <= tol(i))) {
      expect.fail(`${what} element ${i}: got ${a}, expected ${e} (tolerance ${tol(i)})`);
    }
  }
}

function expectBuffer(x: CpuBuffer, ref: Ref, what = ""): void {
  expect(x.shape, `${what} shape`).toEqual(ref.shape);
  expectValues(cpu.readSync(x), ref.data, what);
}

// ---------------------------------------------------------------------------------------------------
// Arbitraries.

const dimArb = fc.oneof(
  { arbitrary: fc.constant(0), weight: 1 },
  { arbitrary: fc.constant(1), weight: 2 },
  { arbitrary: fc.integer({ min: 2, max: 5 }), weight: 6 },
);
const shapeArb = (maxRank = 4): fc.Arbitrary<number[]> => fc.array(dimArb, { maxLength: maxRank });
const nonScalarArb = shapeArb(4).filter((s) => s.length > 0);
const nonEmptyArb = nonScalarArb.filter((s) => !s.includes(0));
const numericArb = fc.constantFrom<DType>("float32", "float64", "int32", "uint32");
const reducerArb = fc.constantFrom<Reducer>("sum", "prod", "max", "min");
const seedArb = fc.integer();
const DTYPES: readonly DType[] = ["float32", "float64", "int32", "uint32", "bool"];
const RUNS = { numRuns: 200 };

// Integer references in BigInt, wrapped to 32 bits.
const i32 = (v: bigint): number => Number(BigInt.asIntN(32, v));
const u32 = (v: bigint): number => Number(BigInt.asUintN(32, v));
const wrapFor = (dtype: DType): ((v: bigint) => number) => (dtype === "uint32" ? u32 : i32);

// ---------------------------------------------------------------------------------------------------

describe("cpu backend: buffers and host transfer", () => {
  it("round-trips every dtype and reads fresh copies", async () => {
    for (const dtype of DTYPES) {
      const values = [0, 1, 1, 0, 1, 7].map((v) => (dtype === "bool" ? Math.min(v, 1) : v));
      const x = cpu.fromHost(typedOf(dtype, values), { shape: [2, 3], dtype });
      const a = cpu.readSync(x);
      expectValues(a, values);
      a[0] = 99;
      expectValues(cpu.readSync(x), values, "after mutating a read");
      expectValues(await cpu.read(x), values, "async read");
      expect(cpu.typeOf(x)).toEqual({ shape: [2, 3], dtype });
    }
  });

  it("converts host data of another type by value, and checks its length", () => {
    const x = cpu.fromHost(new Float64Array([1.1, -2, 0]), { shape: [3], dtype: "float32" });
    expectValues(cpu.readSync(x), [Math.fround(1.1), -2, 0]);
    expect(cpu.readSync(x)).toBeInstanceOf(Float32Array);
    expectValues(cpu.readSync(cpu.constant(new Float64Array([0, 2, NaN]), { shape: [3], dtype: "bool" })), [0, 1, 1]);
    expect(() => cpu.constant(new Float32Array(5), { shape: [2, 3], dtype: "float32" })).toThrow(ShapeError);
  });

  it("counts bytes of owned buffers only, and releases", () => {
    const x = cpu.full({ shape: [4, 5], dtype: "float64" }, 2);
    expect(cpu.bytesOf(x)).toBe(160);
    const v = cpu.transpose(x, [1, 0]);
    expect(cpu.bytesOf(v)).toBe(0);
    expect(cpu.bytesOf(cpu.full({ shape: [3], dtype: "bool" }, 1))).toBe(3);
    cpu.release(x);
    cpu.release(x);
    expect(cpu.bytesOf(x)).toBe(0);
    expect(() => cpu.readSync(x)).toThrow(BackendError);
    expect(() => cpu.unary("neg", x, { shape: [4, 5], dtype: "float64" })).toThrow(BackendError);
    expectValues(cpu.readSync(v), new Array<number>(20).fill(2), "a view outlives its base's release");
  });

  it("full and iota", () => {
    expectValues(cpu.readSync(cpu.full({ shape: [2, 2], dtype: "int32" }, -3)), [-3, -3, -3, -3]);
    expectValues(cpu.readSync(cpu.full({ shape: [], dtype: "float32" }, 0.1)), [Math.fround(0.1)]);
    expectValues(cpu.readSync(cpu.full({ shape: [0, 3], dtype: "float32" }, 1)), []);
    fc.assert(
      fc.property(nonScalarArb, fc.nat(), fc.constantFrom<DType>("int32", "float32", "uint32"), (shape, d, dtype) => {
        const dim = d % shape.length;
        const x = cpu.iota({ shape, dtype }, dim);
        expectBuffer(x, build(shape, (idx) => idx[dim]!));
      }),
      RUNS,
    );
  });
});

describe("cpu backend: views", () => {
  it("random view chains read back as their naive references", () => {
    fc.assert(
      fc.property(shapeArb(), seedArb, fc.constantFrom(...DTYPES), (shape, seed, dtype) => {
        const x = operand(new Rng(seed), shape, dtype, valuesOf(dtype), 3);
        expectBuffer(x.buf, x.ref);
      }),
      { numRuns: 300 },
    );
  });

  it("transpose, slice, reverse and broadcastInDim share storage", () => {
    const x = cpu.fromHost(Float32Array.from({ length: 24 }, (_, i) => i), { shape: [2, 3, 4], dtype: "float32" });
    const views = [
      cpu.transpose(x, [2, 0, 1]),
      cpu.slice(x, [0, 1, 0], [2, 3, 4], [1, 1, 3]),
      cpu.reverse(x, [0, 2]),
      cpu.broadcastInDim(x, [5, 2, 3, 4], [1, 2, 3]),
      cpu.reshape(x, [6, 4]),
    ];
    for (const v of views) {
      expect(v.owned).toBe(false);
      expect(cpu.bytesOf(v)).toBe(0);
      expect(v.data).toBe(x.data);
    }
  });

  it("reshape keeps C order, as a view whenever the strides allow", () => {
    fc.assert(
      fc.property(shapeArb(), seedArb, fc.array(fc.integer({ min: 1, max: 4 }), { maxLength: 3 }), (shape, seed, cuts) => {
        const x = operand(new Rng(seed), shape, "float32", valuesOf("float32"));
        // A random factorisation of the size: split off prime factors, then pad with 1s at random.
        let rest = sizeOf(shape);
        const target: number[] = [];
        for (const c of cuts) {
          if (rest > 0 && rest % c === 0) {
            target.push(c);
            rest /= c;
          }
        }
        target.push(rest);
        if (seed % 3 === 0) target.unshift(1);
        const y = cpu.reshape(x.buf, target);
        expectBuffer(y, { shape: target, data: x.ref.data });
        if (x.buf.contiguous) expect(y.owned).toBe(false);
      }),
      RUNS,
    );
    // A transposed split that needs no copy, and one that does.
    const base = cpu.fromHost(Float32Array.from({ length: 24 }, (_, i) => i), { shape: [4, 6], dtype: "float32" });
    const t = cpu.transpose(base, [1, 0]); // [6, 4], strides [1, 6]
    expect(cpu.reshape(t, [2, 3, 4]).owned).toBe(false);
    expect(cpu.reshape(t, [24]).owned).toBe(true);
    expect(() => cpu.reshape(base, [5, 5])).toThrow(ShapeError);
  });

  it("rejects bad structural arguments", () => {
    const x = cpu.full({ shape: [2, 3], dtype: "float32" }, 0);
    expect(() => cpu.slice(x, [0, 0], [3, 3], [1, 1])).toThrow(ShapeError);
    expect(() => cpu.slice(x, [0, 2], [2, 1], [1, 1])).toThrow(ShapeError);
    expect(() => cpu.slice(x, [0, 0], [2, 3], [1, 0])).toThrow(ShapeError);
    expect(() => cpu.transpose(x, [0, 0])).toThrow(ShapeError);
    expect(() => cpu.broadcastInDim(x, [2, 4], [0, 1])).toThrow(ShapeError);
    expect(() => cpu.reverse(x, [2])).toThrow(ShapeError);
  });
});

// ---------------------------------------------------------------------------------------------------
// Elementwise.

/** Float references (computed in float64; float32 results are these rounded once). */
const FLOAT_UNARY: Record<Exclude<UnaryOp, "not">, (x: number) => number> = {
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  log1p: Math.log1p,
  expm1: Math.expm1,
  sqrt: Math.sqrt,
  rsqrt: (x) => 1 / Math.sqrt(x),
  sin: Math.sin,
  cos: Math.cos,
  tan: Math.tan,
  tanh: Math.tanh,
  asin: Math.asin,
  acos: Math.acos,
  atan: Math.atan,
  sinh: Math.sinh,
  cosh: Math.cosh,
  asinh: Math.asinh,
  acosh: Math.acosh,
  atanh: Math.atanh,
  abs: Math.abs,
  sign: (x) => (x !== x ? NaN : x > 0 ? 1 : x < 0 ? -1 : 0),
  floor: Math.floor,
  ceil: Math.ceil,
  round: (x) => {
    const f = Math.floor(x);
    const d = x - f;
    return d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
  },
  erf, // checked against tables below
  erf_inv: erfInv,
  logistic: (x) => (x < -700 ? Math.exp(x) : 1 / (1 + Math.exp(-x))),
  is_finite: (x) => (Number.isFinite(x) ? 1 : 0),
};

const INT_UNARY: Partial<Record<UnaryOp, (x: bigint, dtype: DType) => bigint>> = {
  neg: (x) => -x,
  abs: (x) => (x < 0n ? -x : x),
  sign: (x) => (x > 0n ? 1n : x < 0n ? -1n : 0n),
  floor: (x) => x,
  ceil: (x) => x,
  round: (x) => x,
  not: (x) => ~x,
  is_finite: () => 1n,
};

const BOOL_UNARY: Partial<Record<UnaryOp, (x: number) => number>> = {
  not: (x) => 1 - x,
  is_finite: () => 1,
};

type Num2 = (a: number, b: number) => number;
type Big2 = (a: bigint, b: bigint, dtype: DType) => bigint;

const cmp: Record<"eq" | "ne" | "lt" | "le" | "gt" | "ge", Num2> = {
  eq: (a, b) => +(a === b),
  ne: (a, b) => +(a !== b),
  lt: (a, b) => +(a < b),
  le: (a, b) => +(a <= b),
  gt: (a, b) => +(a > b),
  ge: (a, b) => +(a >= b),
};

const FLOAT_BINARY: Partial<Record<BinaryOp, Num2>> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  rem: (a, b) => a % b,
  pow: (a, b) => (a === 1 || (a === -1 && Math.abs(b) === Infinity) ? 1 : Math.pow(a, b)),
  max: (a, b) => (a !== a || b !== b ? NaN : a > b ? a : b),
  min: (a, b) => (a !== a || b !== b ? NaN : a < b ? a : b),
  atan2: Math.atan2,
  ...cmp,
};

const shiftAmount = (b: bigint, dtype: DType): number => (dtype === "uint32" ? Number(b) : Number(BigInt.asUintN(32, b)));
const INT_BINARY: Partial<Record<BinaryOp, Big2>> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => (b === 0n ? 0n : a / b),
  rem: (a, b) => (b === 0n ? 0n : a % b),
  pow: (a, b, dtype) => {
    if (b < 0n) return a === 1n ? 1n : a === -1n ? (b % 2n === 0n ? 1n : -1n) : 0n;
    let r = 1n;
    for (let i = 0n; i < b; i++) r = dtype === "uint32" ? BigInt.asUintN(32, r * a) : BigInt.asIntN(32, r * a);
    return r;
  },
  max: (a, b) => (a > b ? a : b),
  min: (a, b) => (a < b ? a : b),
  and: (a, b) => a & b,
  or: (a, b) => a | b,
  xor: (a, b) => a ^ b,
  shl: (a, b, dtype) => (shiftAmount(b, dtype) >= 32 ? 0n : a << BigInt(shiftAmount(b, dtype))),
  shr: (a, b, dtype) => (shiftAmount(b, dtype) >= 32 ? (a < 0n ? -1n : 0n) : a >> BigInt(shiftAmount(b, dtype))),
};

const BOOL_BINARY: Partial<Record<BinaryOp, Num2>> = {
  add: (a, b) => a | b,
  mul: (a, b) => a & b,
  max: Math.max,
  min: Math.min,
  and: (a, b) => a & b,
  or: (a, b) => a | b,
  xor: (a, b) => a ^ b,
  ...cmp,
};

const COMPARISON = new Set<BinaryOp>(["eq", "ne", "lt", "le", "gt", "ge"]);

describe("cpu backend: unary", () => {
  it("has a reference for every unary op", () => {
    for (const op of UNARY_OPS) expect(op in FLOAT_UNARY || op in INT_UNARY || op in BOOL_UNARY, op).toBe(true);
  });

  for (const dtype of DTYPES) {
    it(`matches the references on ${dtype} views`, () => {
      const ops = UNARY_OPS.filter((op) =>
        dtype === "bool" ? op in BOOL_UNARY : dtype === "int32" || dtype === "uint32" ? op in INT_UNARY : op !== "not",
      );
      fc.assert(
        fc.property(shapeArb(3), seedArb, (shape, seed) => {
          const rng = new Rng(seed);
          for (const op of ops) {
            const x = operand(rng, shape, dtype, valuesOf(dtype));
            const outDType: DType = op === "is_finite" ? "bool" : dtype;
            const y = cpu.unary(op, x.buf, { shape, dtype: outDType });
            expect(y.dtype).toBe(outDType);
            let expected: number[];
            if (dtype === "bool") expected = x.ref.data.map(BOOL_UNARY[op]!);
            else if (dtype === "int32" || dtype === "uint32") {
              const wrap = op === "is_finite" ? Number : wrapFor(dtype);
              expected = x.ref.data.map((v) => wrap(INT_UNARY[op]!(BigInt(v), dtype)));
            } else {
              const f = FLOAT_UNARY[op as Exclude<UnaryOp, "not">];
              expected = x.ref.data.map((v) => (dtype === "float32" && op !== "is_finite" ? Math.fround(f(v)) : f(v)));
            }
            // Float references may differ from the kernel's formula in the last bits (logistic).
            const eps = dtype === "float32" ? 2 ** -23 : dtype === "float64" ? 2 ** -51 : 0;
            expectClose(cpu.readSync(y), expected, (i) => eps * Math.abs(expected[i]!), `${op} ${dtype}`);
          }
        }),
        { numRuns: 150 },
      );
    });
  }

  it("rounds half to even and keeps signs of zero and NaN", () => {
    const x = cpu.fromHost(new Float64Array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999999999999996, 4503599627370497, NaN]), {
      shape: [9],
      dtype: "float64",
    });
    const rounded = cpu.readSync(cpu.unary("round", x, { shape: [9], dtype: "float64" }));
    expectValues(rounded, [0, 2, 2, -0, -2, -2, 2, 4503599627370497, NaN]);
    const f = cpu.fromHost(new Float32Array([-0, 0, NaN, -3, 2]), { shape: [5], dtype: "float32" });
    const s = cpu.readSync(cpu.unary("sign", f, { shape: [5], dtype: "float32" }));
    expect(Object.is(s[0], -0) || s[0] === 0).toBe(true);
    expectValues(s, [0, 0, NaN, -1, 1]);
  });

  it("logistic is stable for large |x|", () => {
    const x = cpu.fromHost(new Float64Array([-1000, -50, 0, 50, 1000]), { shape: [5], dtype: "float64" });
    const y = cpu.readSync(cpu.unary("logistic", x, { shape: [5], dtype: "float64" }));
    const want = [0, 1.9287498479639178e-22, 0.5, 1, 1];
    expectClose(y, want, (i) => 1e-16 * Math.abs(want[i]!));
  });

  it("erf matches tabulated values to float64 precision", () => {
    // Reference values of erf(x), correctly rounded.
    const table: [number, number][] = [
      [0, 0],
      [1e-10, 1.1283791670955126e-10],
      [0.1, 0.1124629160182849],
      [0.3, 0.3286267594591274],
      [0.5, 0.5204998778130465],
      [1, 0.8427007929497149],
      [1.5, 0.9661051464753108],
      [2, 0.9953222650189527],
      [3, 0.9999779095030014],
      [4.5, 0.9999999998033839],
      [6, 1],
    ];
    for (const [x, e] of table) {
      expect(Math.abs(erf(x) - e), `erf(${x})`).toBeLessThanOrEqual(2 * Number.EPSILON * e);
      expect(Math.abs(erf(-x) + e), `erf(-${x})`).toBeLessThanOrEqual(2 * Number.EPSILON * e);
    }
    expect(erf(Infinity)).toBe(1);
    expect(erf(-Infinity)).toBe(-1);
    expect(erf(NaN)).toBeNaN();
  });

  it("erf_inv matches tabulated values and inverts erf", () => {
    const table: [number, number][] = [
      [0.1, 0.08885599049425769],
      [0.5, 0.4769362762044699],
      [0.9, 1.1630871536766743],
      [0.99, 1.8213863677184496],
      [0.999999, 3.458910737275499],
      [1 - 2 ** -52, 5.805018683193453],
    ];
    for (const [y, e] of table) {
      expect(Math.abs(erfInv(y) - e) / e, `erf_inv(${y})`).toBeLessThanOrEqual(4 * Number.EPSILON);
      expect(Math.abs(erfInv(-y) + e) / e, `erf_inv(-${y})`).toBeLessThanOrEqual(4 * Number.EPSILON);
    }
    expect(erfInv(1)).toBe(Infinity);
    expect(erfInv(-1)).toBe(-Infinity);
    expect(erfInv(1.0000001)).toBeNaN();
    expect(erfInv(NaN)).toBeNaN();
    expect(Object.is(erfInv(-0), -0)).toBe(true);
    fc.assert(
      fc.property(fc.double({ min: -1, max: 1, noNaN: true }), (y) => {
        const r = erf(erfInv(y));
        expect(Math.abs(r - y)).toBeLessThanOrEqual(4 * Number.EPSILON * Math.max(Math.abs(y), 1e-300));
      }),
      { numRuns: 2000 },
    );
  });

  it("rejects ops a dtype does not have", () => {
    const i = cpu.full({ shape: [2], dtype: "int32" }, 1);
    const f = cpu.full({ shape: [2], dtype: "float32" }, 1);
    expect(() => cpu.unary("exp", i, { shape: [2], dtype: "int32" })).toThrow(DTypeError);
    expect(() => cpu.unary("not", f, { shape: [2], dtype: "float32" })).toThrow(DTypeError);
    expect(() => cpu.unary("neg", f, { shape: [3], dtype: "float32" })).toThrow(ShapeError);
  });
});

describe("cpu backend: binary and select", () => {
  it("has a reference for every binary op", () => {
    for (const op of BINARY_OPS) expect(op in FLOAT_BINARY || op in INT_BINARY || op in BOOL_BINARY, op).toBe(true);
  });

  for (const dtype of DTYPES) {
    it(`matches the references on ${dtype} views`, () => {
      const intLike = dtype === "int32" || dtype === "uint32";
      const table = dtype === "bool" ? BOOL_BINARY : intLike ? INT_BINARY : FLOAT_BINARY;
      const ops = BINARY_OPS.filter((op) => op in table || (intLike && COMPARISON.has(op)));
      fc.assert(
        fc.property(shapeArb(3), seedArb, (shape, seed) => {
          const rng = new Rng(seed);
          for (const op of ops) {
            const x = operand(rng, shape, dtype, valuesOf(dtype));
            // Small exponents / shift amounts so the BigInt references stay cheap and meaningful.
            const yGen: ValueGen =
              intLike && op === "pow"
                ? (r) => r.int(dtype === "uint32" ? 0 : -3, 40)
                : intLike && (op === "shl" || op === "shr")
                  ? (r) => r.int(dtype === "uint32" ? 0 : -2, 40)
                  : valuesOf(dtype);
            const y = operand(rng, shape, dtype, yGen);
            const outDType: DType = COMPARISON.has(op) ? "bool" : dtype;
            const z = cpu.binary(op, x.buf, y.buf, { shape, dtype: outDType });
            const expected = x.ref.data.map((a, i) => {
              const b = y.ref.data[i]!;
              if (intLike && COMPARISON.has(op)) return cmp[op as keyof typeof cmp](a, b);
              if (intLike) return wrapFor(dtype)(INT_BINARY[op]!(BigInt(a), BigInt(b), dtype));
              const r = (table[op] as Num2)(a, b);
              return dtype === "float32" && !COMPARISON.has(op) ? Math.fround(r) : r;
            });
            expectValues(cpu.readSync(z), expected, `${op} ${dtype}`);
          }
        }),
        { numRuns: 150 },
      );
    });
  }

  it("integer division truncates, and x / 0 = x % 0 = 0", () => {
    const a = cpu.fromHost(new Int32Array([7, -7, 7, -7, 5, -2147483648]), { shape: [6], dtype: "int32" });
    const b = cpu.fromHost(new Int32Array([2, 2, -2, -2, 0, -1]), { shape: [6], dtype: "int32" });
    expectValues(cpu.readSync(cpu.binary("div", a, b, { shape: [6], dtype: "int32" })), [3, -3, -3, 3, 0, -2147483648]);
    expectValues(cpu.readSync(cpu.binary("rem", a, b, { shape: [6], dtype: "int32" })), [1, -1, 1, -1, 0, 0]);
  });

  it("max / min propagate NaN; float pow follows C", () => {
    const a = cpu.fromHost(new Float32Array([NaN, 1, -0, 1, -1]), { shape: [5], dtype: "float32" });
    const b = cpu.fromHost(new Float32Array([1, NaN, 0, NaN, Infinity]), { shape: [5], dtype: "float32" });
    expectValues(cpu.readSync(cpu.binary("max", a, b, { shape: [5], dtype: "float32" })).subarray(0, 3), [NaN, NaN, 0]);
    expectValues(cpu.readSync(cpu.binary("min", a, b, { shape: [5], dtype: "float32" })).subarray(0, 2), [NaN, NaN]);
    expectValues(cpu.readSync(cpu.binary("pow", a, b, { shape: [5], dtype: "float32" })).subarray(3), [1, 1]);
  });

  it("checks shapes and dtypes", () => {
    const a = cpu.full({ shape: [3], dtype: "float32" }, 1);
    const b = cpu.full({ shape: [4], dtype: "float32" }, 1);
    const c = cpu.full({ shape: [3], dtype: "int32" }, 1);
    const out = { shape: [3], dtype: "float32" } as const;
    expect(() => cpu.binary("add", a, b, out)).toThrow(/add: operands of identical shape.*\[3\] and \[4\]/);
    expect(() => cpu.binary("add", a, b, { shape: [3], dtype: "float32" })).toThrow(ShapeError);
    expect(() => cpu.binary("add", a, c, { shape: [3], dtype: "float32" })).toThrow(DTypeError);
    expect(() => cpu.binary("atan2", c, c, { shape: [3], dtype: "int32" })).toThrow(DTypeError);
    expect(() => cpu.binary("and", a, a, { shape: [3], dtype: "float32" })).toThrow(DTypeError);
    expect(() => cpu.binary("lt", a, a, { shape: [3], dtype: "float32" })).toThrow(DTypeError);
  });

  it("select picks per element from views", () => {
    fc.assert(
      fc.property(shapeArb(), seedArb, fc.constantFrom(...DTYPES), (shape, seed, dtype) => {
        const rng = new Rng(seed);
        const p = operand(rng, shape, "bool", valuesOf("bool"));
        const t = operand(rng, shape, dtype, valuesOf(dtype));
        const f = operand(rng, shape, dtype, valuesOf(dtype));
        const z = cpu.select(p.buf, t.buf, f.buf);
        expectBuffer(z, { shape, data: p.ref.data.map((c, i) => (c ? t.ref.data[i]! : f.ref.data[i]!)) });
      }),
      RUNS,
    );
  });
});

describe("cpu backend: cast and bitcast", () => {
  const refCast = (v: number, from: DType, to: DType): number => {
    if (to === "bool") return v !== 0 ? 1 : 0;
    if (to === "float32") return Math.fround(v);
    if (to === "float64") return v;
    const float = from === "float32" || from === "float64";
    if (to === "int32") {
      if (!float) return i32(BigInt(v));
      return v !== v ? 0 : Math.max(-2147483648, Math.min(2147483647, Math.trunc(v)));
    }
    if (!float) return u32(BigInt(v));
    return v !== v ? 0 : Math.max(0, Math.min(4294967295, Math.trunc(v)));
  };

  it("converts values between every pair of dtypes", () => {
    const edge = [NaN, Infinity, -Infinity, -0, 0.5, -0.7, 2.9, -2.9, 1e10, -1e10, 2147483647.5, -2147483648.5, 4294967295.5];
    fc.assert(
      fc.property(shapeArb(3), seedArb, fc.constantFrom(...DTYPES), fc.constantFrom(...DTYPES), (shape, seed, from, to) => {
        const base = valuesOf(from);
        const float = from === "float32" || from === "float64";
        const gen: ValueGen = float ? (r) => (r.next() < 0.4 ? r.pick(edge) : base(r)) : base;
        const x = operand(new Rng(seed), shape, from, gen);
        const y = cpu.cast(x.buf, to);
        expect(y.dtype).toBe(to);
        expectBuffer(y, { shape, data: x.ref.data.map((v) => refCast(v, from, to)) }, `${from} -> ${to}`);
      }),
      { numRuns: 300 },
    );
  });

  it("reinterprets bits", () => {
    const f = cpu.fromHost(new Float32Array([1, -2, -0]), { shape: [3], dtype: "float32" });
    expectValues(cpu.readSync(cpu.bitcast(f, "int32")), [0x3f800000, -0x40000000, -0x80000000]);
    expectValues(cpu.readSync(cpu.bitcast(f, "uint32")), [0x3f800000, 0xc0000000, 0x80000000]);
    // NaN payloads survive a strided (transposed, reversed) view.
    const bits = Int32Array.from([0x7fc00001, 0x7f800001, -1, 0x3f800000, 0x00000001, 0x7fffffff]);
    const x = cpu.fromHost(bits, { shape: [2, 3], dtype: "int32" });
    const asF = cpu.reverse(cpu.transpose(cpu.bitcast(x, "float32"), [1, 0]), [0]);
    const back = cpu.bitcast(asF, "int32");
    const want = refReverse(refTranspose({ shape: [2, 3], data: Array.from(bits) }, [1, 0]), [0]);
    expectBuffer(back, want);
    expect(() => cpu.bitcast(f, "float64")).toThrow(DTypeError);
  });
});

// ---------------------------------------------------------------------------------------------------
// Reductions.

type Reducer = "sum" | "prod" | "max" | "min";

function refReduce(op: Reducer, t: Ref, axes: readonly number[], dtype: DType): { ref: Ref; scale: number[] } {
  const kept = t.shape.map((_, d) => d).filter((d) => !axes.includes(d));
  const outShape = kept.map((d) => t.shape[d]!);
  const n = sizeOf(outShape);
  const intLike = dtype === "int32" || dtype === "uint32";
  const init =
    dtype === "bool"
      ? op === "sum" || op === "max" ? 0 : 1
      : op === "sum" ? 0 : op === "prod" ? 1 : op === "max"
        ? dtype === "int32" ? -2147483648 : dtype === "uint32" ? 0 : -Infinity
        : dtype === "int32" ? 2147483647 : dtype === "uint32" ? 4294967295 : Infinity;
  const acc = new Array<number>(n).fill(init);
  const big = new Array<bigint>(n).fill(BigInt(Number.isFinite(init) ? init : 0));
  const scale = new Array<number>(n).fill(0);
  t.data.forEach((v, i) => {
    const idx = unravel(i, t.shape);
    const j = ravel(kept.map((d) => idx[d]!), outShape);
    scale[j] += Math.abs(v);
    if (dtype === "bool") acc[j] = op === "sum" || op === "max" ? acc[j]! | v : acc[j]! & v;
    else if (intLike && (op === "sum" || op === "prod")) big[j] = op === "sum" ? big[j]! + BigInt(v) : big[j]! * BigInt(v);
    else if (op === "max") acc[j] = v !== v || acc[j]! !== acc[j]! ? NaN : Math.max(acc[j]!, v);
    else if (op === "min") acc[j] = v !== v || acc[j]! !== acc[j]! ? NaN : Math.min(acc[j]!, v);
    else if (op === "sum") acc[j] += v;
    else acc[j] *= v;
  });
  const data = intLike && (op === "sum" || op === "prod") ? big.map(wrapFor(dtype)) : acc;
  return { ref: { shape: outShape, data: dtype === "float32" ? data.map(Math.fround) : data }, scale };
}

const subsetArb = (shape: readonly number[], rng: Rng): number[] => shape.map((_, d) => d).filter(() => rng.next() < 0.5);

describe("cpu backend: reductions", () => {
  it("reduce over random axes of random views matches the reference", () => {
    fc.assert(
      fc.property(shapeArb(4), seedArb, fc.constantFrom(...DTYPES), reducerArb, (shape, seed, dtype, op) => {
        const rng = new Rng(seed);
        // Products of values near 1 stay finite; sums avoid NaN / Inf so tolerances mean something.
        const floatProd = op === "prod" && dtype.startsWith("float");
        const gen: ValueGen = floatProd ? (r) => 0.5 + r.next() : valuesOf(dtype, op !== "sum");
        const x = operand(rng, shape, dtype, gen);
        const axes = subsetArb(shape, rng);
        const { ref, scale } = refReduce(op, x.ref, axes, dtype);
        const y = cpu.reduce(op, x.buf, axes, { shape: ref.shape, dtype });
        expect(y.shape).toEqual(ref.shape);
        const eps = dtype === "float32" ? 2 ** -23 : 2 ** -50;
        const tol = (i: number): number =>
          op === "sum" ? eps * (scale[i]! + Math.abs(ref.data[i]!)) : op === "prod" ? 64 * eps * Math.abs(ref.data[i]!) : 0;
        expectClose(cpu.readSync(y), ref.data, tol, `${op} ${dtype} axes [${axes}]`);
      }),
      { numRuns: 400 },
    );
  });

  it("uses identities for empty reductions, any / all for bool", () => {
    const e = (dtype: DType) => cpu.full({ shape: [2, 0], dtype }, 0);
    const r = (op: Reducer, dtype: DType) => Array.from(cpu.readSync(cpu.reduce(op, e(dtype), [1], { shape: [2], dtype })));
    expect(r("sum", "float32")).toEqual([0, 0]);
    expect(r("prod", "float64")).toEqual([1, 1]);
    expect(r("max", "float32")).toEqual([-Infinity, -Infinity]);
    expect(r("min", "float64")).toEqual([Infinity, Infinity]);
    expect(r("max", "int32")).toEqual([-2147483648, -2147483648]);
    expect(r("min", "uint32")).toEqual([4294967295, 4294967295]);
    expect(r("max", "bool")).toEqual([0, 0]);
    expect(r("min", "bool")).toEqual([1, 1]);
  });

  it("sums float64 with compensation and float32 in double", () => {
    const x = cpu.fromHost(new Float64Array([1e16, 1, -1e16, 1]), { shape: [4], dtype: "float64" });
    expectValues(cpu.readSync(cpu.reduce("sum", x, [0], { shape: [], dtype: "float64" })), [2]);
    const n = 100_000;
    const y = cpu.broadcastInDim(cpu.fromHost(new Float32Array([0.1]), { shape: [], dtype: "float32" }), [n], []);
    const s = cpu.readSync(cpu.reduce("sum", y, [0], { shape: [], dtype: "float32" }))[0]!;
    expect(s).toBe(Math.fround(n * Math.fround(0.1)));
  });

  it("argmax / argmin return the first extreme, NaN first", () => {
    fc.assert(
      fc.property(nonEmptyArb, seedArb, numericArb, fc.boolean(), (shape, seed, dtype, isMax) => {
        const rng = new Rng(seed);
        // Few distinct values, so ties are common; NaN sometimes.
        const gen: ValueGen = dtype.startsWith("float") ? (r) => (r.next() < 0.05 ? NaN : r.int(-2, 2)) : (r) => r.int(0, 3);
        const x = operand(rng, shape, dtype, gen);
        const axis = rng.int(0, shape.length - 1);
        const outShape = shape.filter((_, d) => d !== axis);
        const y = cpu.argReduce(isMax ? "argmax" : "argmin", x.buf, axis, { shape: outShape, dtype: "int32" });
        const ref = build(outShape, (idx) => {
          let best = 0;
          let bestV = NaN;
          for (let k = 0; k < shape[axis]!; k++) {
            const full = [...idx.slice(0, axis), k, ...idx.slice(axis)];
            const v = at(x.ref, full);
            if (k === 0) bestV = v;
            else if (bestV !== bestV) break;
            else if (v !== v || (isMax ? v > bestV : v < bestV)) {
              best = k;
              bestV = v;
            }
            if (bestV !== bestV) break;
          }
          return best;
        });
        expectBuffer(y, ref);
      }),
      { numRuns: 300 },
    );
  });

  it("cumulative sums / products / max / min, forward and reverse", () => {
    fc.assert(
      fc.property(nonScalarArb, seedArb, fc.constantFrom(...DTYPES), reducerArb, fc.boolean(), (shape, seed, dtype, op, rev) => {
        const rng = new Rng(seed);
        const x = operand(rng, shape, dtype, dtype.startsWith("float") ? (r) => 0.5 + r.next() : valuesOf(dtype));
        const axis = rng.int(0, shape.length - 1);
        const y = cpu.cumulative(op, x.buf, axis, rev);
        const intLike = dtype === "int32" || dtype === "uint32";
        const ref = build(shape, (idx) => {
          const n = shape[axis]!;
          const i = idx[axis]!;
          const ks = rev ? Array.from({ length: n - i }, (_, j) => n - 1 - j) : Array.from({ length: i + 1 }, (_, j) => j);
          const vals = ks.map((k) => at(x.ref, idx.map((v, d) => (d === axis ? k : v))));
          if (dtype === "bool") return vals.reduce((a, b) => (op === "sum" || op === "max" ? a | b : a & b));
          if (intLike && (op === "sum" || op === "prod")) {
            return wrapFor(dtype)(vals.map(BigInt).reduce((a, b) => (op === "sum" ? a + b : a * b)));
          }
          const combine: Record<Reducer, (a: number, b: number) => number> = {
            sum: (a, b) => a + b,
            prod: (a, b) => a * b,
            max: Math.max,
            min: Math.min,
          };
          const r = vals.reduce((a, b) => combine[op](a, b));
          return dtype === "float32" ? Math.fround(r) : r;
        });
        expectBuffer(y, ref, `cum${op} ${dtype} axis ${axis}${rev ? " reverse" : ""}`);
      }),
      { numRuns: 300 },
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// dot_general.

interface DotCase {
  lhsShape: number[];
  rhsShape: number[];
  dims: DotDims;
}

/** Random dot_general dims: roles (batch / free / contracting) placed at random axes of each side. */
function randomDot(rng: Rng, maxDim: number, maxPerRole = 2): DotCase {
  const nb = rng.int(0, maxPerRole);
  const nc = rng.int(0, maxPerRole);
  const nl = rng.int(0, maxPerRole);
  const nr = rng.int(0, maxPerRole);
  const dim = (): number => (rng.next() < 0.15 ? rng.int(0, 1) : rng.int(1, maxDim));
  const batch = Array.from({ length: nb }, () => rng.int(1, 3));
  const contract = Array.from({ length: nc }, dim);
  const lFree = Array.from({ length: nl }, dim);
  const rFree = Array.from({ length: nr }, dim);
  const place = (roles: { size: number; tag: string }[]) => {
    const order = rng.shuffle(roles.map((_, i) => i));
    const shape = new Array<number>(roles.length);
    const axisOf = new Map<string, number>();
    order.forEach((r, axis) => {
      shape[axis] = roles[r]!.size;
      axisOf.set(roles[r]!.tag, axis);
    });
    return { shape, axisOf };
  };
  const L = place([
    ...batch.map((size, i) => ({ size, tag: `b${i}` })),
    ...contract.map((size, i) => ({ size, tag: `c${i}` })),
    ...lFree.map((size, i) => ({ size, tag: `f${i}` })),
  ]);
  const R = place([
    ...batch.map((size, i) => ({ size, tag: `b${i}` })),
    ...contract.map((size, i) => ({ size, tag: `c${i}` })),
    ...rFree.map((size, i) => ({ size, tag: `f${i}` })),
  ]);
  return {
    lhsShape: L.shape,
    rhsShape: R.shape,
    dims: {
      contracting: [contract.map((_, i) => L.axisOf.get(`c${i}`)!), contract.map((_, i) => R.axisOf.get(`c${i}`)!)],
      batch: [batch.map((_, i) => L.axisOf.get(`b${i}`)!), batch.map((_, i) => R.axisOf.get(`b${i}`)!)],
    },
  };
}

/** Naive dot_general in float64 (or BigInt for ints), plus Σ|x·y| per output for tolerances. */
function refDot(x: Ref, y: Ref, dims: DotDims, dtype: DType): { ref: Ref; scale: number[] } {
  const [lc, rc] = dims.contracting;
  const [lb, rb] = dims.batch;
  const lFree = x.shape.map((_, d) => d).filter((d) => !lc.includes(d) && !lb.includes(d));
  const rFree = y.shape.map((_, d) => d).filter((d) => !rc.includes(d) && !rb.includes(d));
  const outShape = [...lb.map((d) => x.shape[d]!), ...lFree.map((d) => x.shape[d]!), ...rFree.map((d) => y.shape[d]!)];
  const cShape = lc.map((d) => x.shape[d]!);
  const scale: number[] = [];
  const intLike = dtype === "int32" || dtype === "uint32";
  const ref = build(outShape, (o) => {
    const xi = new Array<number>(x.shape.length);
    const yi = new Array<number>(y.shape.length);
    lb.forEach((d, i) => ((xi[d] = o[i]!), (yi[rb[i]!] = o[i]!)));
    lFree.forEach((d, i) => (xi[d] = o[lb.length + i]!));
    rFree.forEach((d, i) => (yi[d] = o[lb.length + lFree.length + i]!));
    let s = 0;
    let sb = 0n;
    let abs = 0;
    for (let c = 0; c < sizeOf(cShape); c++) {
      const ci = unravel(c, cShape);
      lc.forEach((d, i) => ((xi[d] = ci[i]!), (yi[rc[i]!] = ci[i]!)));
      const a = at(x, xi);
      const b = at(y, yi);
      if (intLike) sb += BigInt(a) * BigInt(b);
      s += a * b;
      abs += Math.abs(a * b);
    }
    scale.push(abs);
    return intLike ? wrapFor(dtype)(sb) : dtype === "float32" ? Math.fround(s) : s;
  });
  return { ref, scale };
}

function checkDot(rng: Rng, c: DotCase, dtype: DType): void {
  const gen = dtype.startsWith("float") ? (r: Rng) => r.next() * 2 - 1 : valuesOf(dtype, false);
  const x = operand(rng, c.lhsShape, dtype, gen);
  const y = operand(rng, c.rhsShape, dtype, gen);
  const { ref, scale } = refDot(x.ref, y.ref, c.dims, dtype);
  const z = cpu.dotGeneral(x.buf, y.buf, c.dims, { shape: ref.shape, dtype });
  expect(z.shape).toEqual(ref.shape);
  // float32 may accumulate in float32 (the Wasm kernel does, as BLAS does): the standard bound for a
  // K-term float32 dot product is γ_K·Σ|ab| ≈ K·2⁻²⁴·Σ|ab|, plus the final rounding 2⁻²⁴·|c|.
  const K = c.dims.contracting[0].reduce((n, a) => n * c.lhsShape[a]!, 1);
  const tol =
    dtype === "float32"
      ? (i: number) => (K + 2) * 2 ** -24 * scale[i]! + 2 ** -24 * Math.abs(ref.data[i]!)
      : (i: number) => 2 ** -48 * (scale[i]! + Math.abs(ref.data[i]!));
  expectClose(cpu.readSync(z), ref.data, tol, `dot ${JSON.stringify(c)}`);
}

const MATMUL: DotDims = { contracting: [[1], [0]], batch: [[], []] };

describe("cpu backend: dot_general", () => {
  it("matches a naive product for random batch / contracting dims and views", () => {
    fc.assert(
      fc.property(seedArb, fc.constantFrom<DType>("float32", "float64", "int32", "uint32"), (seed, dtype) => {
        const rng = new Rng(seed);
        checkDot(rng, randomDot(rng, 4), dtype);
      }),
      { numRuns: 800 },
    );
  });

  it("matches on sizes that use the packed kernel (edge tiles, K blocking, views)", () => {
    const rng = new Rng(7);
    const mm = MATMUL;
    for (const dtype of ["float32", "float64"] as const) {
      checkDot(rng, { lhsShape: [37, 70], rhsShape: [70, 45], dims: mm }, dtype);
      checkDot(rng, { lhsShape: [67, 300], rhsShape: [300, 9], dims: mm }, dtype);
      // lhs contracting on dim 0 (transposed A), rhs contracting on dim 1 (transposed B), batch in the middle.
      const dims: DotDims = { contracting: [[0], [2]], batch: [[1], [1]] };
      checkDot(rng, { lhsShape: [50, 2, 23], rhsShape: [19, 2, 50], dims }, dtype);
      // N above the N block (2048), so B is packed in two column blocks.
      checkDot(rng, { lhsShape: [5, 3], rhsShape: [3, 2100], dims: mm }, dtype);
    }
    for (let i = 0; i < 20; i++) checkDot(rng, randomDot(rng, 40, 1), rng.pick(["float32", "float64"] as const));
  });

  it("handles K = 0, empty outputs and size-1 dims", () => {
    const matmul = (a: number[], b: number[], dtype: DType, av = 1, bv = 1): CpuBuffer =>
      cpu.dotGeneral(cpu.full({ shape: a, dtype }, av), cpu.full({ shape: b, dtype }, bv), MATMUL, {
        shape: [a[0]!, b[1]!],
        dtype,
      });
    expectValues(cpu.readSync(matmul([3, 0], [0, 2], "float32")), [0, 0, 0, 0, 0, 0]);
    expect(matmul([0, 4], [4, 2], "float64").shape).toEqual([0, 2]);
    expectValues(cpu.readSync(matmul([1, 5], [5, 1], "float32", 2, 3)), [30]);
  });

  it("wraps int32 products", () => {
    const a = cpu.fromHost(new Int32Array([65536, 3]), { shape: [1, 2], dtype: "int32" });
    const b = cpu.fromHost(new Int32Array([65536, 2147483647]), { shape: [2, 1], dtype: "int32" });
    const z = cpu.dotGeneral(a, b, { contracting: [[1], [0]], batch: [[], []] }, { shape: [1, 1], dtype: "int32" });
    expectValues(cpu.readSync(z), [i32(65536n * 65536n + 3n * 2147483647n)]);
  });

  it("rejects mismatched dims", () => {
    const a = cpu.full({ shape: [2, 3], dtype: "float32" }, 1);
    const b = cpu.full({ shape: [4, 2], dtype: "float32" }, 1);
    const out = { shape: [2, 2], dtype: "float32" } as const;
    const c = cpu.full({ shape: [3, 2], dtype: "float64" }, 1);
    expect(() => cpu.dotGeneral(a, b, MATMUL, out)).toThrow(ShapeError);
    expect(() => cpu.dotGeneral(a, b, { contracting: [[1], [0, 1]], batch: [[], []] }, out)).toThrow(ShapeError);
    expect(() => cpu.dotGeneral(a, c, MATMUL, out)).toThrow(DTypeError);
  });
});

// ---------------------------------------------------------------------------------------------------
// pad, concatenate, gather, scatterAdd, dynamic slices, sort.

describe("cpu backend: pad and concatenate", () => {
  it("pad with negative, positive and interior widths matches the reference", () => {
    fc.assert(
      fc.property(shapeArb(3), seedArb, fc.constantFrom(...DTYPES), (shape, seed, dtype) => {
        const rng = new Rng(seed);
        const lo = shape.map(() => rng.int(-3, 3));
        const hi = shape.map(() => rng.int(-3, 3));
        const interior = shape.map(() => rng.int(0, 2));
        const outShape = shape.map((n, d) => lo[d]! + hi[d]! + n + Math.max(n - 1, 0) * interior[d]!);
        const x = operand(rng, shape, dtype, valuesOf(dtype));
        const value = dtype === "bool" ? 1 : dtype === "uint32" ? 9 : -9;
        if (outShape.some((n) => n < 0)) {
          expect(() => cpu.pad(x.buf, value, lo, hi, interior)).toThrow(ShapeError);
          return;
        }
        const ref = build(outShape, (idx) => {
          const src: number[] = [];
          for (let d = 0; d < shape.length; d++) {
            const t = idx[d]! - lo[d]!;
            const step = interior[d]! + 1;
            if (t < 0 || t % step !== 0 || t / step >= shape[d]!) return value;
            src.push(t / step);
          }
          return at(x.ref, src);
        });
        expectBuffer(cpu.pad(x.buf, value, lo, hi, interior), ref);
      }),
      { numRuns: 300 },
    );
  });

  it("concatenate joins views along any axis", () => {
    fc.assert(
      fc.property(shapeArb(3).filter((s) => s.length > 0), seedArb, fc.constantFrom(...DTYPES), (shape, seed, dtype) => {
        const rng = new Rng(seed);
        const axis = rng.int(0, shape.length - 1);
        const parts = Array.from({ length: rng.int(1, 4) }, () =>
          operand(rng, shape.map((n, d) => (d === axis ? rng.int(0, 3) : n)), dtype, valuesOf(dtype)),
        );
        const total = parts.reduce((s, p) => s + p.ref.shape[axis]!, 0);
        const ref = build(shape.map((n, d) => (d === axis ? total : n)), (idx) => {
          let k = idx[axis]!;
          for (const p of parts) {
            const n = p.ref.shape[axis]!;
            if (k < n) return at(p.ref, idx.map((v, d) => (d === axis ? k : v)));
            k -= n;
          }
          throw new Error("unreachable");
        });
        expectBuffer(cpu.concatenate(parts.map((p) => p.buf), axis), ref);
      }),
      RUNS,
    );
    const a = cpu.full({ shape: [2, 3], dtype: "float32" }, 0);
    expect(() => cpu.concatenate([a, cpu.full({ shape: [3, 3], dtype: "float32" }, 0)], 1)).toThrow(ShapeError);
    expect(() => cpu.concatenate([a, cpu.full({ shape: [2, 3], dtype: "int32" }, 0)], 0)).toThrow(DTypeError);
  });
});

describe("cpu backend: gather and scatterAdd", () => {
  /** Random gather layout: x = [batch..., pre..., len, post...], idx = [batch..., ind...]. */
  const layout = (rng: Rng) => {
    const batch = Array.from({ length: rng.int(0, 1) }, () => rng.int(1, 3));
    const pre = Array.from({ length: rng.int(0, 1) }, () => rng.int(0, 3));
    const len = rng.int(1, 5);
    const post = Array.from({ length: rng.int(0, 2) }, () => rng.int(0, 3));
    const ind = Array.from({ length: rng.int(0, 2) }, () => rng.int(0, 4));
    return { batch, pre, len, post, ind, axis: batch.length + pre.length };
  };
  const indexOf = (L: ReturnType<typeof layout>, out: number[], idxRef: Ref): { src: number[]; raw: number } => {
    const nb = L.batch.length;
    const np = L.pre.length;
    const ni = L.ind.length;
    const b = out.slice(0, nb);
    const i = out.slice(nb + np, nb + np + ni);
    const raw = at(idxRef, [...b, ...i]);
    const clamped = Math.min(Math.max(raw, 0), L.len - 1);
    return { src: [...b, ...out.slice(nb, nb + np), clamped, ...out.slice(nb + np + ni)], raw };
  };

  it("gather reads clamped indices from views", () => {
    fc.assert(
      fc.property(seedArb, fc.constantFrom(...DTYPES), fc.constantFrom<DType>("int32", "uint32"), (seed, dtype, idxType) => {
        const rng = new Rng(seed);
        const L = layout(rng);
        const x = operand(rng, [...L.batch, ...L.pre, L.len, ...L.post], dtype, valuesOf(dtype));
        const idx = operand(rng, [...L.batch, ...L.ind], idxType, (r) => r.int(idxType === "int32" ? -2 : 0, L.len + 2));
        const outShape = [...L.batch, ...L.pre, ...L.ind, ...L.post];
        const y = cpu.gather(x.buf, idx.buf, L.axis, L.batch.length, { shape: outShape, dtype });
        expectBuffer(y, build(outShape, (o) => at(x.ref, indexOf(L, o, idx.ref).src)));
      }),
      { numRuns: 300 },
    );
  });

  it("gather copies long contiguous rows in bulk", () => {
    const table = cpu.fromHost(Float32Array.from({ length: 10 * 40 }, (_, i) => i), { shape: [10, 40], dtype: "float32" });
    const idx = cpu.fromHost(new Int32Array([3, 0, 9, 3]), { shape: [4], dtype: "int32" });
    const y = cpu.gather(table, idx, 0, 0, { shape: [4, 40], dtype: "float32" });
    expectBuffer(y, build([4, 40], ([i, j]) => [3, 0, 9, 3][i!]! * 40 + j!));
  });

  it("scatterAdd accumulates duplicates in index order (the transpose of gather)", () => {
    fc.assert(
      fc.property(seedArb, fc.constantFrom(...DTYPES), (seed, dtype) => {
        const rng = new Rng(seed);
        const L = layout(rng);
        const xShape = [...L.batch, ...L.pre, L.len, ...L.post];
        const gen = dtype.startsWith("float") ? (r: Rng) => r.next() * 2 - 1 : valuesOf(dtype);
        const x = operand(rng, xShape, dtype, gen);
        const idx = operand(rng, [...L.batch, ...L.ind], "int32", (r) => r.int(-2, L.len + 2));
        const uShape = [...L.batch, ...L.pre, ...L.ind, ...L.post];
        const u = operand(rng, uShape, dtype, gen);
        const out = [...x.ref.data];
        for (let k = 0; k < u.ref.data.length; k++) {
          const j = ravel(indexOf(L, unravel(k, uShape), idx.ref).src, xShape);
          const v = u.ref.data[k]!;
          if (dtype === "bool") out[j] = out[j]! | v;
          else if (dtype === "float32") out[j] = Math.fround(out[j]! + v);
          else if (dtype === "float64") out[j] = out[j]! + v;
          else out[j] = wrapFor(dtype)(BigInt(out[j]!) + BigInt(v));
        }
        expectBuffer(cpu.scatterAdd(x.buf, idx.buf, u.buf, L.axis, L.batch.length), { shape: xShape, data: out });
      }),
      { numRuns: 300 },
    );
  });

  it("rejects bad gather arguments", () => {
    const x = cpu.full({ shape: [2, 3], dtype: "float32" }, 0);
    const i = cpu.full({ shape: [4], dtype: "int32" }, 0);
    expect(() => cpu.gather(x, i, 2, 0, { shape: [4], dtype: "float32" })).toThrow(ShapeError);
    const fi = cpu.full({ shape: [4], dtype: "float32" }, 0);
    expect(() => cpu.gather(x, fi, 0, 0, { shape: [4, 3], dtype: "float32" })).toThrow(DTypeError);
    expect(() => cpu.gather(x, i, 0, 0, { shape: [4, 2], dtype: "float32" })).toThrow(ShapeError);
  });
});

describe("cpu backend: dynamic slices", () => {
  const scalar = (v: number): CpuBuffer => cpu.fromHost(new Int32Array([v]), { shape: [], dtype: "int32" });

  it("dynamicSlice and dynamicUpdateSlice clamp starts so the window fits", () => {
    fc.assert(
      fc.property(shapeArb(3), seedArb, fc.constantFrom(...DTYPES), (shape, seed, dtype) => {
        const rng = new Rng(seed);
        const x = operand(rng, shape, dtype, valuesOf(dtype));
        const sizes = shape.map((n) => rng.int(0, n));
        const starts = shape.map((n) => rng.int(-3, n + 3));
        const clamped = starts.map((s, d) => Math.min(Math.max(s, 0), shape[d]! - sizes[d]!));
        const ones = shape.map(() => 1);
        const ds = cpu.dynamicSlice(x.buf, starts.map(scalar), sizes);
        expect(ds.owned).toBe(true);
        expectBuffer(ds, refSlice(x.ref, clamped, clamped.map((s, d) => s + sizes[d]!), ones));
        const u = operand(rng, sizes, dtype, valuesOf(dtype));
        const ref = build(shape, (idx) => {
          const inside = idx.every((v, d) => v >= clamped[d]! && v < clamped[d]! + sizes[d]!);
          return inside ? at(u.ref, idx.map((v, d) => v - clamped[d]!)) : at(x.ref, idx);
        });
        expectBuffer(cpu.dynamicUpdateSlice(x.buf, u.buf, starts.map(scalar)), ref);
      }),
      RUNS,
    );
  });

  it("rejects windows larger than the operand", () => {
    const x = cpu.full({ shape: [2, 3], dtype: "float32" }, 0);
    expect(() => cpu.dynamicSlice(x, [scalar(0), scalar(0)], [3, 1])).toThrow(ShapeError);
    expect(() => cpu.dynamicSlice(x, [scalar(0)], [1])).toThrow(ShapeError);
  });
});

describe("cpu backend: sort", () => {
  const compareRef = (a: number, b: number): number =>
    a !== a ? (b !== b ? 0 : 1) : b !== b ? -1 : a < b ? -1 : a > b ? 1 : 0;

  it("stably sorts by several keys along any axis, NaN last, -0 == 0", () => {
    fc.assert(
      fc.property(shapeArb(3).filter((s) => s.length > 0), seedArb, fc.constantFrom(...DTYPES), (shape, seed, dtype) => {
        const rng = new Rng(seed);
        const axis = rng.int(0, shape.length - 1);
        const nOps = rng.int(1, 3);
        const numKeys = rng.int(1, nOps);
        const keyGen: ValueGen = dtype.startsWith("float")
          ? (r) => r.pick([NaN, -0, 0, 1, -1, 2, Infinity, -Infinity])
          : dtype === "bool"
            ? valuesOf("bool")
            : (r) => r.pick(dtype === "int32" ? [-2147483648, -1, 0, 1, 2147483647] : [0, 1, 4294967295]);
        const ops = Array.from({ length: nOps }, (_, k) =>
          operand(rng, shape, k < numKeys ? dtype : "int32", k < numKeys ? keyGen : (r) => r.int(0, 1000)),
        );
        const outs = cpu.sort(ops.map((o) => o.buf), axis, numKeys);
        const n = shape[axis]!;
        const refs = ops.map((o) => ({ shape, data: [...o.ref.data] }));
        const lineShape = shape.filter((_, d) => d !== axis);
        for (let l = 0; l < sizeOf(lineShape); l++) {
          const li = unravel(l, lineShape);
          const full = (k: number) => [...li.slice(0, axis), k, ...li.slice(axis)];
          const perm = Array.from({ length: n }, (_, k) => k).sort((p, q) => {
            for (let k = 0; k < numKeys; k++) {
              const c = compareRef(at(ops[k]!.ref, full(p)), at(ops[k]!.ref, full(q)));
              if (c !== 0) return c;
            }
            return 0;
          });
          ops.forEach((o, k) => perm.forEach((p, j) => (refs[k]!.data[ravel(full(j), shape)] = at(o.ref, full(p)))));
        }
        outs.forEach((y, k) => {
          expect(y.shape).toEqual(shape);
          const got = cpu.readSync(y);
          refs[k]!.data.forEach((v, i) => {
            // Exact, including the sign of zero: stability must keep -0 and 0 in input order.
            if (!Object.is(got[i], v) && !(v !== v && got[i] !== got[i])) {
              expect.fail(`operand ${k} element ${i}: got ${got[i]}, expected ${v}`);
            }
          });
        });
      }),
      { numRuns: 300 },
    );
  });

  it("sorts long rows", () => {
    const n = 1000;
    const rng = new Rng(3);
    const v = Float64Array.from({ length: n }, () => rng.int(0, 50));
    const keys = cpu.fromHost(v, { shape: [n], dtype: "float64" });
    const [k, i] = cpu.sort([keys, cpu.iota({ shape: [n], dtype: "int32" }, 0)], 0, 1);
    const ref = Array.from({ length: n }, (_, j) => j).sort((a, b) => v[a]! - v[b]!);
    expectValues(cpu.readSync(i!), ref);
    expectValues(cpu.readSync(k!), ref.map((j) => v[j]!));
  });
});

describe("cpu backend: threefry2x32", () => {
  const u = (...v: number[]): CpuBuffer => cpu.fromHost(Uint32Array.from(v), { shape: [v.length], dtype: "uint32" });
  const run = (k0: number, k1: number, x0: number, x1: number): number[] => {
    const [a, b] = cpu.threefry2x32(u(k0), u(k1), u(x0), u(x1));
    return [cpu.readSync(a)[0]!, cpu.readSync(b)[0]!];
  };

  it("matches the Random123 known answers", () => {
    expect(run(0x13198a2e, 0x03707344, 0x243f6a88, 0x85a308d3)).toEqual([0xc4923a9c, 0x483df7a0]);
    expect(run(0, 0, 0, 0)).toEqual([0x6b200159, 0x99ba4efe]);
    expect(run(0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff)).toEqual([0x1cb996fc, 0xbb002be7]);
  });

  it("accepts broadcast and reversed views", () => {
    const key0 = cpu.broadcastInDim(cpu.fromHost(Uint32Array.of(0x13198a2e), { shape: [], dtype: "uint32" }), [2, 3], []);
    const key1 = cpu.broadcastInDim(u(0x03707344, 7, 0xffffffff), [2, 3], [1]);
    const x0 = cpu.reshape(cpu.iota({ shape: [6], dtype: "uint32" }, 0), [2, 3]);
    const x1 = cpu.reverse(cpu.reshape(u(1, 2, 3, 4, 5, 0x85a308d3), [2, 3]), [0, 1]);
    const [a, b] = cpu.threefry2x32(key0, key1, x0, x1);
    const k1 = [0x03707344, 7, 0xffffffff];
    const c1 = [0x85a308d3, 5, 4, 3, 2, 1];
    const ra = cpu.readSync(a);
    const rb = cpu.readSync(b);
    for (let i = 0; i < 6; i++) expect([ra[i], rb[i]]).toEqual(run(0x13198a2e, k1[i % 3]!, i, c1[i]!));
    expect(() => cpu.threefry2x32(u(1), u(1), u(1), cpu.full({ shape: [1], dtype: "int32" }, 0))).toThrow(DTypeError);
  });
});

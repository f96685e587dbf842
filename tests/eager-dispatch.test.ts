/**
 * @file The eager fast paths (src/ops/primitive.ts, array.ts, memory.ts, np.ts, dtype.ts, aval.ts) keep
 * every observable behaviour: promotion results (checked against JAX's type-promotion table, worked out
 * by hand from https://jax.readthedocs.io/en/latest/type_promotion.html), the order of staged
 * equations, the release of a lowering's intermediates, exact live-array accounting with dispose() and
 * scopes, and the garbage-collection safety net (run in a child process with --expose-gc).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { grad, keep, linearize, makeJaxpr, memoryStats, np, scope, ShapedArray, vjp, Array as WArray } from "../src/index.js";
import type { DType, Value } from "../src/index.js";
import { shapeEq, shapeSize } from "../src/autodiff/aval.js";
import { promoteTypes } from "../src/ops/dtype.js";
import { definePrimitive } from "../src/ops/primitive.js";
import { bind1 } from "../src/autodiff/core.js";
import type { CpuBuffer } from "../src/ops/backend/cpu/index.js";

const host = (v: Value) => (v as WArray).dataSync();

describe("avals", () => {
  it("share frozen shapes, copy mutable ones, and know their size", () => {
    const frozen = Object.freeze([2, 3]);
    expect(new ShapedArray(frozen, "float32").shape).toBe(frozen);
    const mutable = [4, 5];
    const a = new ShapedArray(mutable, "int32");
    mutable[0] = 9; // the caller's array may be reused
    expect(a.shape).toEqual([4, 5]);
    expect(Object.isFrozen(a.shape)).toBe(true);
    expect(a.size).toBe(20);
    expect(new ShapedArray([], "bool").size).toBe(1);
    expect(new ShapedArray([3, 0, 2], "float32").size).toBe(0);
  });

  it("shapeSize and shapeEq", () => {
    expect(shapeSize([])).toBe(1);
    expect(shapeSize([2, 3, 4])).toBe(24);
    expect(shapeEq([2, 3], [2, 3])).toBe(true);
    expect(shapeEq([2, 3], [3, 2])).toBe(false);
    expect(shapeEq([2], [2, 1])).toBe(false);
    expect(shapeEq([], [])).toBe(true);
  });
});

describe("two-operand promotion table", () => {
  // [a, a weak, b, b weak, result dtype, result weak], from JAX's lattice with 64-bit types disabled
  // (i* / f*: weak int / float; int32 ⊔ uint32 reaches int64 there, which is int32 without x64).
  const cases: [DType, boolean, DType, boolean, DType, boolean][] = [
    ["bool", false, "int32", true, "int32", true], // bool ⊔ i* = i*
    ["int32", false, "int32", true, "int32", false], // i32 ⊔ i* = i32
    ["uint32", false, "int32", true, "uint32", false], // u32 ⊔ i* = u32
    ["float32", false, "int32", true, "float32", false],
    ["float64", false, "float32", true, "float64", false], // f64 ⊔ f* = f64
    ["int32", false, "float32", true, "float32", true], // i32 ⊔ f* = f*
    ["bool", false, "float32", true, "float32", true],
    ["int32", false, "uint32", false, "int32", false],
    ["float32", false, "int32", false, "float32", false],
    ["int32", true, "float32", true, "float32", true], // i* ⊔ f* = f*
    ["bool", false, "bool", false, "bool", false],
    ["float32", false, "float64", false, "float64", false],
    ["uint32", false, "float32", true, "float32", true], // u32 ⊔ f* = f*
  ];
  it.each(cases)("%s(weak %s) with %s(weak %s) -> %s(weak %s), both orders", (a, aw, b, bw, d, w) => {
    expect(promoteTypes(a, aw, b, bw)).toEqual({ dtype: d, weakType: w });
    expect(promoteTypes(b, bw, a, aw)).toEqual({ dtype: d, weakType: w });
  });
});

describe("np binary functions with JS numbers", () => {
  const i32 = np.array([1, 2, 3], { dtype: "int32" });
  const f64 = np.array([1, 2, 3], { dtype: "float64" });

  it("promote as JAX does and keep the operand order", () => {
    const a = np.add(i32, 1);
    expect([a.dtype, a.weakType]).toEqual(["int32", false]);
    expect([...host(a)]).toEqual([2, 3, 4]);
    const b = np.multiply(i32, 0.5); // i32 ⊔ f* = weak float32
    expect([b.dtype, b.weakType]).toEqual(["float32", true]);
    expect([...host(b)]).toEqual([0.5, 1, 1.5]);
    const c = np.subtract(10, f64); // the number is the left operand
    expect([c.dtype, c.weakType]).toEqual(["float64", false]);
    expect([...host(c)]).toEqual([9, 8, 7]);
    const d = np.divide(i32, 2); // true division of ints: float32, not weak (i32 ⊔ i* = i32)
    expect([d.dtype, d.weakType]).toEqual(["float32", false]);
    expect([...host(d)]).toEqual([0.5, 1, 1.5]);
    const e = np.power(2, np.array([1, 2, 3]));
    expect([...host(e)]).toEqual([2, 4, 8]);
    const s = np.add(np.array(1.5), 2); // scalar operand: no broadcast
    expect(s.shape).toEqual([]);
    expect(Number(host(s)[0])).toBe(3.5);
  });

  it("keeps +0 and -0 apart in the scalar cache", () => {
    const x = np.array([1, -1]);
    const signs = (v: Value) => [...host(v)].map((z) => Object.is(z, -0) ? "-0" : Object.is(z, 0) ? "+0" : String(z));
    expect(signs(np.multiply(x, 0))).toEqual(["+0", "-0"]);
    expect(signs(np.multiply(x, -0))).toEqual(["-0", "+0"]);
    expect(signs(np.multiply(x, 0))).toEqual(["+0", "-0"]);
    const nan = np.add(x, NaN);
    expect([...host(nan)].every(Number.isNaN)).toBe(true);
    expect([...host(np.add(x, NaN))].every(Number.isNaN)).toBe(true);
  });

  it("stages the same equations in the same order", () => {
    const x = np.array([1, 2, 3], { dtype: "int32" });
    // 2.5 - x: the scalar (weak f32) is broadcast first, then x is converted to weak f32.
    expect(String(makeJaxpr((v: Value) => np.subtract(2.5, v))(x))).toBe(
      [
        "{ lambda a:i32[3]. let",
        "    b:f32[3] = broadcast_in_dim[broadcast_dimensions=() shape=(3,)] 2.5:f32[]",
        "    c:f32[3] = convert_element_type[new_dtype=float32 weak_type=True] a",
        "    d:f32[3] = sub b c",
        "  in (d,) }",
      ].join("\n"),
    );
    expect(String(makeJaxpr((v: Value) => np.subtract(v, 2.5))(x))).toBe(
      [
        "{ lambda a:i32[3]. let",
        "    b:f32[3] = convert_element_type[new_dtype=float32 weak_type=True] a",
        "    c:f32[3] = broadcast_in_dim[broadcast_dimensions=() shape=(3,)] 2.5:f32[]",
        "    d:f32[3] = sub b c",
        "  in (d,) }",
      ].join("\n"),
    );
  });
});

describe("promotion temporaries", () => {
  it("are disposed at once in eager code: one live array per binary op", () => {
    const x = np.array([1, 2, 3]);
    const col = np.array([[1], [2]], { dtype: "int32" });
    const i32 = np.array([1, 2, 3], { dtype: "int32" });
    const ops = [
      () => np.multiply(x, 0.5), // the 0.5 broadcast to [3]
      () => np.subtract(4, x),
      () => np.add(col, x), // both operands broadcast to [2, 3], col converted too
      () => np.add(x, [1, 2, 3]), // the list becomes an array
      () => np.multiply(i32, 0.5), // i32 converted to float32
      () => np.divide(i32, i32), // both converted
    ];
    for (const op of ops) op(); // JS-number scalars are cached (and counted) on first use
    for (const op of ops) {
      const before = memoryStats();
      const y = op() as WArray;
      expect(memoryStats().liveArrays).toBe(before.liveArrays + 1);
      expect(memoryStats().liveBytes).toBe(before.liveBytes + y.size * 4);
      y.dispose();
      expect(memoryStats()).toEqual(before);
    }
    expect([...host(np.add(col, x))]).toEqual([2, 3, 4, 3, 4, 5]);
    expect([...host(np.multiply(i32, 0.5))]).toEqual([0.5, 1, 1.5]);
  });

  it("are kept where a transform may still need them", () => {
    const c = np.array([1, 2, 3]);
    const x = np.array([0.5, 1.5, 2.5]);
    // f(v) = (v + 1.5) * sum(c): a concrete scalar broadcast inside the transform is a residual.
    const f = (v: Value) => np.sum(np.multiply(np.add(v, 1.5), np.sum(c)));
    const [y, pullback] = vjp(f, x);
    expect(Number(host(y)[0])).toBeCloseTo((2 + 3 + 4) * 6, 5);
    expect([...host(pullback(np.array(2))[0]!)]).toEqual([12, 12, 12]); // 2 · sum(c)
    expect([...host(grad(f)(x))]).toEqual([6, 6, 6]);
    const [, lin] = linearize(f, x);
    expect(Number(host(lin(np.array([1, 1, 1])))[0])).toBe(18);
  });
});

describe("eager lowering", () => {
  let intermediate: CpuBuffer | null = null;
  // out = -x + x, through an intermediate handle that the eager path must release.
  const viaTemp = definePrimitive<{}>({
    name: "test_eager_via_temp",
    abstractEval: ([x]) => [x!],
    jvp: () => {
      throw new Error("unused");
    },
    transpose: "nonlinear",
    vmap: () => {
      throw new Error("unused");
    },
    lower: (b, [x], _p, _ai, [out]) => {
      const t = b.unary("neg", x!, out!);
      intermediate = t as unknown as CpuBuffer;
      expect(b.typeOf(t)).toEqual({ shape: out!.shape, dtype: out!.dtype });
      return [b.binary("add", t, x!, out!)];
    },
  });
  // Hands its input handle back: the output must be a distinct handle (each Array owns its own).
  const identity = definePrimitive<{}>({
    name: "test_eager_identity",
    abstractEval: ([x]) => [x!],
    jvp: () => {
      throw new Error("unused");
    },
    transpose: "nonlinear",
    vmap: () => {
      throw new Error("unused");
    },
    lower: (_b, [x]) => [x!],
  });

  it("releases intermediates, never inputs or outputs", () => {
    const x = np.array([1, 2, 3]);
    const y = bind1(viaTemp, [x], {}) as WArray;
    expect(intermediate).not.toBeNull();
    expect(intermediate!.released).toBe(true);
    expect([...y.dataSync()]).toEqual([0, 0, 0]);
    expect((x.buffer as CpuBuffer).released).toBe(false);
    const z = bind1(identity, [x], {}) as WArray;
    expect(z.buffer).not.toBe(x.buffer);
    z.dispose();
    expect([...x.dataSync()]).toEqual([1, 2, 3]);
  });
});

describe("live-array accounting", () => {
  it("is exact through nested scopes, keep(), dispose() and errors", () => {
    const x = np.array([1, 2, 3]);
    // JS numbers become cached scalars (permanent, counted as live) on first use: make them first.
    scope(() => [1, 2, 3, 4].map((k) => np.add(x, k)));
    const base = memoryStats();
    let kept: Value | undefined;
    const out = scope(() => {
      const inner = scope(() => {
        const a = np.add(x, 1);
        kept = keep(np.multiply(a, 2)); // moves to the outer scope
        return np.subtract(a, 1);
      });
      expect(memoryStats().liveArrays).toBe(base.liveArrays + 2); // inner's result and the kept one
      return np.add(inner, kept!);
    });
    expect(memoryStats().liveArrays).toBe(base.liveArrays + 1);
    expect([...host(out)]).toEqual([5, 8, 11]); // (x + 1 - 1) + 2(x + 1)
    (out as WArray).dispose();
    expect(memoryStats()).toEqual(base);
    expect(() =>
      scope(() => {
        np.add(x, 1);
        throw new Error("boom");
      }),
    ).toThrow("boom");
    expect(memoryStats()).toEqual(base);
    const y = np.add(x, x) as WArray;
    expect(memoryStats().liveArrays).toBe(base.liveArrays + 1);
    y.dispose();
    y.dispose(); // idempotent
    expect(memoryStats()).toEqual(base);
  });

  it("keep() only moves arrays the innermost scope owns", () => {
    const x = np.array([1, 2, 3]);
    np.add(x, x); // warm-up
    const base = memoryStats();
    let fromOuter: WArray | undefined;
    scope(() => {
      fromOuter = np.add(x, x) as WArray; // owned by the outer scope
      scope(() => {
        keep(fromOuter); // not the inner scope's: nothing moves
        keep(np.add(x, x)); // the inner scope's: moves to the outer one
      });
      expect(fromOuter.isDisposed).toBe(false);
      expect(memoryStats().liveArrays).toBe(base.liveArrays + 2);
    });
    expect(fromOuter!.isDisposed).toBe(true); // the outer scope still disposed it
    expect(memoryStats()).toEqual(base);
  });

  it("the garbage-collection safety net uncounts dropped arrays exactly once", () => {
    const dir = mkdtempSync(join(tmpdir(), "webgrad-gc-"));
    const script = join(dir, "gc.mts");
    const index = resolve("src/index.ts");
    writeFileSync(
      script,
      `
import { keep, memoryStats, np, scope } from ${JSON.stringify(index)};
const gc = (globalThis as any).gc as () => void;
const x = np.array([1, 2, 3, 4]);
const settle = async () => {
  for (let i = 0; i < 100; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 5));
  }
};
const make = () => {
  let y: any = x;
  for (let i = 0; i < 200; i++) y = np.add(y, 1); // dropped without dispose
  const r = scope(() => np.multiply(np.add(x, 1), 2)); // escapes the outermost scope
  let k: any;
  scope(() => { k = keep(np.add(x, 3)); }); // kept out of the outermost scope
  const d = np.add(x, 4); d.dispose(); // disposed, must not be uncounted twice
  try { scope(() => { np.add(x, 5); return Promise.resolve(1) as any; }); } catch {} // a misused scope
  return [y, r, k];
};
make(); // warms the cache of JS-number scalars (permanent arrays, counted as live)
await settle();
const base = memoryStats();
let held: any = make();
const during = memoryStats();
held = null;
await settle();
console.log(JSON.stringify({ base, during, after: memoryStats() }));
`,
    );
    try {
      const r = spawnSync(process.execPath, ["--expose-gc", "--import", "tsx", script], { encoding: "utf8", timeout: 60_000 });
      expect(r.stderr.replace(/npm warn[^\n]*\n?/g, "")).toBe("");
      const { base, during, after } = JSON.parse(r.stdout.trim().split("\n").pop()!);
      // While held: 200 chained results (199 garbage) + r + k + the 1-element temps of r's scope were
      // disposed; at least the three held arrays are live.
      expect(during.liveArrays).toBeGreaterThanOrEqual(base.liveArrays + 3);
      // Everything made in make() is unreachable now: the counts are back exactly (not below).
      expect(after).toEqual(base);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

/**
 * @file Tests of `random` (src/ops/random.ts). Expected values come from outside the library:
 * Random123's published Threefry-2x32 known answers, values JAX publishes in its own test suite
 * (fold_in, and the legacy split scheme, which shares the cipher), and a Threefry written here from the
 * spec in plain uint32 JS arithmetic. The distributions are checked statistically with fixed seeds:
 * Kolmogorov–Smirnov against CDFs computed here (erf by series / continued fraction) and chi-square
 * against exact probabilities, with thresholds at significance ~0.001.
 */
import "../src/index.js";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ArgumentError, DTypeError, ShapeError } from "../src/autodiff/errors.js";
import type { Value } from "../src/autodiff/core.js";
import { grad, jit, lax, np, vmap } from "../src/index.js";
import type { Array as WArray } from "../src/ops/array.js";
import * as random from "../src/ops/random.js";

// ---------------------------------------------------------------------------------------------------
// Helpers and independent references

const data = (v: Value): number[] => globalThis.Array.from((v as WArray).dataSync(), Number);
const shapeOf = (v: Value): number[] => [...v.aval.shape];
const u32 = (xs: number[]): Value => np.array(new Uint32Array(xs));
const rawKey = (a: number, b: number): Value => u32([a, b]);

/**
 * Threefry-2x32 with 20 rounds, from the spec (Salmon et al. 2011, and Random123's threefry.h): key
 * schedule (k0, k1, k0 ^ k1 ^ 0x1BD11BDA), injections after every 4 rounds with the injection count
 * added to the second word, rotation constants R_{2x32} = [13, 15, 26, 6, 17, 29, 16, 24].
 */
function threefryRef(k0: number, k1: number, x0: number, x1: number): [number, number] {
  const R = [13, 15, 26, 6, 17, 29, 16, 24];
  const ks = [k0 >>> 0, k1 >>> 0, (k0 ^ k1 ^ 0x1bd11bda) >>> 0];
  let a = (x0 + ks[0]!) >>> 0;
  let b = (x1 + ks[1]!) >>> 0;
  for (let round = 0; round < 20; round++) {
    const r = R[round % 8]!;
    a = (a + b) >>> 0;
    b = (((b << r) | (b >>> (32 - r))) ^ a) >>> 0;
    if (round % 4 === 3) {
      const s = (round + 1) / 4; // injection number 1..5
      a = (a + ks[s % 3]!) >>> 0;
      b = (b + ks[(s + 1) % 3]! + s) >>> 0;
    }
  }
  return [a, b];
}

/** erf by its Maclaurin series (|x| < 3) or Lentz's continued fraction for erfc (|x| >= 3). */
function erfRef(x: number): number {
  const ax = Math.abs(x);
  let r: number;
  if (ax < 3) {
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= (-ax * ax) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    // erfc(x) = exp(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
    let f = ax;
    let c = ax;
    let d = 0;
    for (let n = 1; n < 300; n++) {
      const an = n / 2;
      d = ax + an * d;
      d = 1 / d;
      c = ax + an / c;
      const delta = c * d;
      f *= delta;
      if (Math.abs(delta - 1) < 1e-16) break;
    }
    r = 1 - Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  }
  return x < 0 ? -r : r;
}
const normalCdf = (x: number): number => 0.5 * (1 + erfRef(x / Math.SQRT2));

/** erf⁻¹ by bisection on erfRef (monotone), to double precision. */
function erfInvRef(u: number): number {
  let [lo, hi] = [-7, 7];
  for (let i = 0; i < 64; i++) {
    const mid = (lo + hi) / 2;
    if (erfRef(mid) < u) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** Kolmogorov–Smirnov statistic of samples against a CDF. */
function ksStatistic(xs: number[], cdf: (x: number) => number): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  let d = 0;
  for (let i = 0; i < n; i++) {
    const f = cdf(s[i]!);
    d = Math.max(d, f - i / n, (i + 1) / n - f);
  }
  return d;
}
/** KS critical value at significance ~0.001 (Smirnov's asymptotic c(α) = 1.95). */
const ksBound = (n: number): number => 1.95 / Math.sqrt(n);

/** Pearson's chi-square statistic of observed counts against expected counts. */
function chiSquare(observed: number[], expected: number[]): number {
  return observed.reduce((acc, o, i) => acc + (o - expected[i]!) ** 2 / expected[i]!, 0);
}
/** Chi-square critical values at significance 0.001 by degrees of freedom (standard tables). */
const CHI2_001: Record<number, number> = { 1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 9: 27.88, 81: 124.84 };

const counts = (xs: number[], k: number, offset = 0): number[] => {
  const c = new globalThis.Array<number>(k).fill(0);
  for (const x of xs) c[x - offset]!++;
  return c;
};

const fround = Math.fround;

// ---------------------------------------------------------------------------------------------------
// The cipher

describe("threefry2x32", () => {
  const run = (k: [number, number], x: [number, number]): [number, number] => {
    const [a, b] = lax.threefry2x32(u32([k[0]]), u32([k[1]]), u32([x[0]]), u32([x[1]]));
    return [data(a!)[0]!, data(b!)[0]!];
  };

  it("matches Random123's known-answer vectors", () => {
    expect(run([0, 0], [0, 0])).toEqual([0x6b200159, 0x99ba4efe]);
    expect(run([0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff])).toEqual([0x1cb996fc, 0xbb002be7]);
    expect(run([0x13198a2e, 0x03707344], [0x243f6a88, 0x85a308d3])).toEqual([0xc4923a9c, 0x483df7a0]);
  });

  it("the reference written here matches the same vectors", () => {
    expect(threefryRef(0, 0, 0, 0)).toEqual([0x6b200159, 0x99ba4efe]);
    expect(threefryRef(0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff)).toEqual([0x1cb996fc, 0xbb002be7]);
    expect(threefryRef(0x13198a2e, 0x03707344, 0x243f6a88, 0x85a308d3)).toEqual([0xc4923a9c, 0x483df7a0]);
  });

  it("matches values JAX publishes for PRNGKey(0)", () => {
    // JAX's testPRNGValues (legacy split scheme: counters (i, i + 4) for split(key, 4)).
    expect(run([0, 0], [0, 4])).toEqual([2285895361, 433833334]);
    expect(run([0, 0], [1, 5])).toEqual([1501764800, 4221794875]);
    expect(run([0, 0], [2, 6])).toEqual([1518642379, 839183663]);
    expect(run([0, 0], [3, 7])).toEqual([4090693311, 3740430601]);
  });

  it("agrees with the reference on random inputs", () => {
    const w = fc.integer({ min: 0, max: 0xffffffff });
    fc.assert(
      fc.property(fc.array(fc.tuple(w, w, w, w), { minLength: 1, maxLength: 16 }), (rows) => {
        const col = (j: number) => u32(rows.map((r) => r[j]!));
        const [a, b] = lax.threefry2x32(col(0), col(1), col(2), col(3));
        const ref = rows.map((r) => threefryRef(r[0], r[1], r[2], r[3]));
        expect(data(a!)).toEqual(ref.map((p) => p[0]));
        expect(data(b!)).toEqual(ref.map((p) => p[1]));
      }),
      { numRuns: 30 },
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// Keys

describe("key", () => {
  it("makes [0, seed mod 2^32] as JAX does with 32-bit integers", () => {
    // Cases from JAX's test_prng_seeds_and_keys (jax_enable_x64 off, JAX's default).
    expect(data(random.key(0))).toEqual([0, 0]);
    expect(data(random.key(1))).toEqual([0, 1]);
    expect(data(random.key(-1))).toEqual([0, 4294967295]);
    expect(data(random.key(2147483647 + 100))).toEqual([0, 2147483747]);
    expect(data(random.key(-2147483648 - 100))).toEqual([0, 2147483548]);
    expect(data(random.key(np.array(-2, { dtype: "int32" })))).toEqual([0, 4294967294]);
    expect(data(random.key(np.array(2147483647 + 101, { dtype: "uint32" })))).toEqual([0, 2147483748]);
    expect(data(random.key(2n ** 40n + 7n))).toEqual([0, 7]);
    expect(random.key(3).aval.dtype).toBe("uint32");
    expect(shapeOf(random.key(3))).toEqual([2]);
    expect(random.PRNGKey).toBe(random.key);
  });

  it("works on traced seeds", () => {
    const seeds = np.array([5, -3, 0], { dtype: "int32" });
    expect(data(vmap((s: Value) => random.key(s))(seeds))).toEqual([0, 5, 0, 4294967293, 0, 0]);
    expect(data(jit((s: Value) => random.key(s))(np.array(9, { dtype: "int32" })))).toEqual([0, 9]);
  });

  it("rejects seeds that are not integer scalars", () => {
    expect(() => random.key(3.5)).toThrow(ArgumentError);
    expect(() => random.key(3.5)).toThrow(/random.key: seed must be an integer/);
    expect(() => random.key(2 ** 60)).toThrow(/Tip/);
    expect(() => random.key(np.array(1.5))).toThrow(DTypeError);
    expect(() => random.key(np.array([1, 2], { dtype: "int32" }))).toThrow(ShapeError);
  });

  it("validates keys everywhere with named errors and a tip", () => {
    const fns: [string, (k: any) => unknown][] = [
      ["split", (k) => random.split(k)],
      ["foldIn", (k) => random.foldIn(k, 1)],
      ["bits", (k) => random.bits(k, [2])],
      ["uniform", (k) => random.uniform(k, [2])],
      ["normal", (k) => random.normal(k, [2])],
      ["truncatedNormal", (k) => random.truncatedNormal(k, -1, 1, [2])],
      ["bernoulli", (k) => random.bernoulli(k, 0.5, [2])],
      ["gumbel", (k) => random.gumbel(k, [2])],
      ["categorical", (k) => random.categorical(k, np.zeros([3]))],
      ["randint", (k) => random.randint(k, [2], 0, 3)],
      ["permutation", (k) => random.permutation(k, 4)],
      ["choice", (k) => random.choice(k, 4)],
      ["exponential", (k) => random.exponential(k, [2])],
      ["laplace", (k) => random.laplace(k, [2])],
    ];
    for (const [name, f] of fns) {
      expect(() => f(np.array([0, 1]))).toThrow(DTypeError); // float32, not a key
      expect(() => f(np.array([0, 1]))).toThrow(new RegExp(`random.${name}: key must be a uint32 array`));
      expect(() => f(u32([1, 2, 3]))).toThrow(ShapeError);
      expect(() => f(random.split(random.key(0), 4))).toThrow(/single key.*\n.*Tip: vmap/s);
      expect(() => f([0, 1])).toThrow(ArgumentError);
      expect(() => f(7)).toThrow(/Tip: make a key with random.key/);
    }
  });
});

describe("split, foldIn, bits", () => {
  const word = fc.integer({ min: 0, max: 0xffffffff });

  it("split(key, n)[i] = threefry(key, (0, i))", () => {
    fc.assert(
      fc.property(word, word, fc.integer({ min: 1, max: 6 }), (a, b, n) => {
        const ks = random.split(rawKey(a, b), n);
        expect(shapeOf(ks)).toEqual([n, 2]);
        const want = globalThis.Array.from({ length: n }, (_, i) => threefryRef(a, b, 0, i)).flat();
        expect(data(ks)).toEqual(want);
      }),
      { numRuns: 25 },
    );
  });

  it("split with a shape numbers keys by their row-major flat index", () => {
    const ks = random.split(rawKey(7, 11), [2, 3]);
    expect(shapeOf(ks)).toEqual([2, 3, 2]);
    expect(data(ks)).toEqual(globalThis.Array.from({ length: 6 }, (_, i) => threefryRef(7, 11, 0, i)).flat());
    expect(shapeOf(random.split(rawKey(1, 2), 0))).toEqual([0, 2]);
  });

  it("split of PRNGKey(0) contains the keys JAX's legacy split put at counters (0, 2)", () => {
    // JAX's documented split(PRNGKey(0)) under the legacy scheme paired counters (0, 2) and (1, 3).
    expect(data(random.split(random.key(0), 4)).slice(4, 6)).toEqual([4146024105, 2718843009]);
  });

  it("foldIn(key, d) = threefry(key, (0, d)), and JAX's published fold_in(PRNGKey(0), 4)", () => {
    expect(data(random.foldIn(random.key(0), 4))).toEqual([2285895361, 433833334]);
    fc.assert(
      fc.property(word, word, word, (a, b, d) => {
        expect(data(random.foldIn(rawKey(a, b), d))).toEqual(threefryRef(a, b, 0, d));
      }),
      { numRuns: 25 },
    );
    // Negative data wraps like an int32 -> uint32 cast; int32 arrays are reinterpreted the same way.
    expect(data(random.foldIn(rawKey(3, 4), -1))).toEqual(threefryRef(3, 4, 0, 0xffffffff));
    expect(data(random.foldIn(rawKey(3, 4), np.array(-1, { dtype: "int32" })))).toEqual(threefryRef(3, 4, 0, 0xffffffff));
    expect(() => random.foldIn(rawKey(3, 4), 0.5)).toThrow(ArgumentError);
    expect(() => random.foldIn(rawKey(3, 4), np.array([1, 2], { dtype: "int32" }))).toThrow(ShapeError);
  });

  it("foldIn(key, i) equals split(key, n)[i] (JAX's fold-in/split symmetry)", () => {
    const k = random.key(72);
    const s = data(random.split(k, 3));
    for (let i = 0; i < 3; i++) expect(data(random.foldIn(k, i))).toEqual(s.slice(2 * i, 2 * i + 2));
    // The same under vmap over the data (JAX's test_threefry_split_vmapped_fold_in_symmetry).
    const idx = np.arange(3);
    expect(data(vmap((i: Value) => random.foldIn(k, i))(idx))).toEqual(s);
  });

  it("bits(key, shape)[i] = bits1 ^ bits2 of threefry(key, (0, i))", () => {
    fc.assert(
      fc.property(word, word, fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }), (a, b, shape) => {
        const out = random.bits(rawKey(a, b), shape);
        expect(shapeOf(out)).toEqual(shape);
        expect(out.aval.dtype).toBe("uint32");
        const n = shape.reduce((x, y) => x * y, 1);
        const want = globalThis.Array.from({ length: n }, (_, i) => {
          const [p, q] = threefryRef(a, b, 0, i);
          return (p ^ q) >>> 0;
        });
        expect(data(out)).toEqual(want);
      }),
      { numRuns: 25 },
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// Exact float constructions

describe("uniform and normal, bit for bit", () => {
  const word = fc.integer({ min: 0, max: 0xffffffff });
  const refBits = (a: number, b: number, n: number) => globalThis.Array.from({ length: n }, (_, i) => threefryRef(a, b, 0, i));

  it("float32 uniform is (bits >>> 9) · 2^-23", () => {
    fc.assert(
      fc.property(word, word, (a, b) => {
        const u = random.uniform(rawKey(a, b), [7]);
        expect(u.aval.dtype).toBe("float32");
        expect(data(u)).toEqual(refBits(a, b, 7).map(([p, q]) => ((p ^ q) >>> 9) * 2 ** -23));
      }),
      { numRuns: 20 },
    );
  });

  it("float64 uniform keeps the top 52 of the 64 bits (bits1 << 32) | bits2", () => {
    fc.assert(
      fc.property(word, word, (a, b) => {
        const u = random.uniform(rawKey(a, b), [7], { dtype: "float64" });
        expect(u.aval.dtype).toBe("float64");
        const want = refBits(a, b, 7).map(([p, q]) => (p * 2 ** 20 + (q >>> 12)) / 2 ** 52);
        expect(data(u)).toEqual(want);
      }),
      { numRuns: 20 },
    );
  });

  it("scales into [minval, maxval) in float32 arithmetic, clamped at minval", () => {
    const [a, b] = [123, 456];
    const u = random.uniform(rawKey(a, b), [6], { minval: -2, maxval: 3 });
    const want = refBits(a, b, 6).map(([p, q]) => {
      const f = ((p ^ q) >>> 9) * 2 ** -23;
      return Math.max(-2, fround(fround(f * 5) + -2));
    });
    expect(data(u)).toEqual(want);
    // Array bounds broadcast against the shape.
    const v = random.uniform(rawKey(a, b), [2, 3], { minval: np.array([0, 10, 20]), maxval: np.array([1, 11, 21]) });
    const d = data(v);
    for (let i = 0; i < 6; i++) expect(d[i]! >= [0, 10, 20][i % 3]! && d[i]! < [1, 11, 21][i % 3]!).toBe(true);
    expect(() => random.uniform(rawKey(a, b), [2], { minval: np.zeros([3]) })).toThrow(ShapeError);
    expect(() => random.uniform(rawKey(a, b), [2], { dtype: "int32" })).toThrow(DTypeError);
  });

  it("normal is √2·erfinv(u) with u uniform on [nextafter(-1, 0), 1)", () => {
    const [a, b] = [9, 99];
    const z = data(random.normal(rawKey(a, b), [64]));
    const lo = -(1 - 2 ** -24);
    refBits(a, b, 64).forEach(([p, q], i) => {
      const f = ((p ^ q) >>> 9) * 2 ** -23;
      const u = Math.max(lo, fround(fround(f * fround(1 - lo)) + lo));
      const want = Math.SQRT2 * erfInvRef(u);
      expect(Math.abs(z[i]! - want)).toBeLessThan(2e-6 * Math.max(1, Math.abs(want)));
    });
  });

  it("same key gives the same stream; jit gives the eager bits", () => {
    fc.assert(
      fc.property(word, word, (a, b) => {
        const k = rawKey(a, b);
        expect(data(random.normal(k, [5]))).toEqual(data(random.normal(k, [5])));
        expect(data(jit((kk: Value) => random.normal(kk, [5]))(k))).toEqual(data(random.normal(k, [5])));
      }),
      { numRuns: 10 },
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// Properties of keys and streams

describe("properties", () => {
  const seed = fc.integer({ min: -(2 ** 31), max: 2 ** 32 - 1 });

  it("split keys are pairwise distinct and distinct from the parent", () => {
    fc.assert(
      fc.property(seed, fc.integer({ min: 2, max: 12 }), (s, n) => {
        const parent = random.key(s);
        const d = data(random.split(parent, n));
        const seen = new Set<string>([data(parent).join(",")]);
        for (let i = 0; i < n; i++) seen.add(`${d[2 * i]},${d[2 * i + 1]}`);
        expect(seen.size).toBe(n + 1);
      }),
      { numRuns: 60 },
    );
  });

  it("streams from different subkeys differ", () => {
    fc.assert(
      fc.property(seed, (s) => {
        const ks = random.split(random.key(s), 3);
        const streams = [0, 1, 2].map((i) => data(random.bits(np.reshape(np.take(ks, i, 0), [2]), [8])).join(","));
        expect(new Set(streams).size).toBe(3);
      }),
      { numRuns: 30 },
    );
  });

  it("vmap over a batch of keys equals a loop over the keys", () => {
    const keys = random.split(random.key(2024), 5);
    const fs: [string, (k: Value) => Value][] = [
      ["normal", (k) => random.normal(k, [3])],
      ["uniform", (k) => random.uniform(k, [2, 2], { minval: -1, maxval: 2 })],
      ["randint", (k) => random.randint(k, [4], -5, 50)],
      ["bernoulli", (k) => random.bernoulli(k, np.array([0.2, 0.8]))],
      ["split", (k) => random.split(k, 3)],
      ["foldIn", (k) => random.foldIn(k, 17)],
      ["truncatedNormal", (k) => random.truncatedNormal(k, -0.5, 1.5, [3])],
      ["categorical", (k) => random.categorical(k, np.array([[0, 1, 2], [2, 1, 0]]))],
      ["permutation", (k) => random.permutation(k, 6)],
      ["gumbel", (k) => random.gumbel(k, [3])],
      ["choice", (k) => random.choice(k, 9, { shape: [3], replace: false })],
    ];
    for (const [, f] of fs) {
      const batched = data(vmap(f)(keys));
      const looped = [0, 1, 2, 3, 4].flatMap((i) => data(f(np.reshape(np.take(keys, i, 0), [2]))));
      expect(batched).toEqual(looped);
    }
  });

  it("vmap works with the key batch on another axis", () => {
    const keys = random.split(random.key(5), 4); // [4, 2]
    const t = np.transpose(keys); // [2, 4]
    const a = data(vmap((k: Value) => random.uniform(k, [3]), { inAxes: 1 })(t));
    const b = data(vmap((k: Value) => random.uniform(k, [3]))(keys));
    expect(a).toEqual(b);
  });

  it("jit equals eager for every sampler", () => {
    const k = random.key(31337);
    const fs: ((k: Value) => Value)[] = [
      (k) => random.split(k, 4),
      (k) => random.foldIn(k, 3),
      (k) => random.bits(k, [5]),
      (k) => random.uniform(k, [5], { dtype: "float64", minval: 1, maxval: 4 }),
      (k) => random.normal(k, [5]),
      (k) => random.truncatedNormal(k, np.array([-1, 0]), 2, [3, 2]),
      (k) => random.bernoulli(k, 0.3, [6]),
      (k) => random.gumbel(k, [4]),
      (k) => random.categorical(k, np.array([0.5, 1, 2]), { shape: [5] }),
      (k) => random.randint(k, [6], -3, 7),
      (k) => random.permutation(k, np.arange(8)),
      (k) => random.choice(k, 10, { shape: [2, 2], p: np.linspace(0.1, 1, 10) }),
      (k) => random.exponential(k, [3]),
      (k) => random.laplace(k, [3]),
    ];
    for (const f of fs) expect(data(jit(f)(k))).toEqual(data(f(k)));
  });

  it("truncatedNormal is differentiable in its bounds (implicit reparameterisation)", () => {
    // x = √2·erfinv(a + (b - a)·f), a = erf(l/√2), so dx/dl = (1 - f)·φ(l)/φ(x) with φ the normal pdf.
    const [ka, kb] = [77, 78];
    const l = 0.25;
    const x = data(random.truncatedNormal(rawKey(ka, kb), l, 2, [6]));
    const phi = (t: number) => Math.exp(-t * t / 2) / Math.sqrt(2 * Math.PI);
    let want = 0;
    for (let i = 0; i < 6; i++) {
      const [p, q] = threefryRef(ka, kb, 0, i);
      const f = ((p ^ q) >>> 9) * 2 ** -23;
      want += ((1 - f) * phi(l)) / phi(x[i]!);
    }
    const g = grad((lo: Value) => np.sum(random.truncatedNormal(rawKey(ka, kb), lo, 2, [6])))(np.array(l)) as WArray;
    expect(Math.abs(Number(g) - want)).toBeLessThan(1e-3 * Math.abs(want));
  });

  it("uniform is differentiable in its bounds", () => {
    const k = random.key(8);
    const u = data(random.uniform(k, [5]));
    // d/dmaxval Σ (u·(max - min) + min) = Σ u; d/dminval = Σ (1 - u).
    const dMax = grad((m: Value) => np.sum(random.uniform(k, [5], { minval: 0, maxval: m })))(np.array(2)) as WArray;
    expect(Number(dMax)).toBeCloseTo(u.reduce((s, x) => s + x, 0), 5);
    const dMin = grad((m: Value) => np.sum(random.uniform(k, [5], { minval: m, maxval: 3 })))(np.array(-1)) as WArray;
    expect(Number(dMin)).toBeCloseTo(u.reduce((s, x) => s + 1 - x, 0), 5);
  });
});

// ---------------------------------------------------------------------------------------------------
// Statistics (fixed seeds, thresholds at significance ~0.001)

describe("distributions", () => {
  const N = 20000;

  it("uniform: KS against U(0, 1) in float32 and float64", () => {
    const u32s = data(random.uniform(random.key(1), [N]));
    expect(Math.min(...u32s)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...u32s)).toBeLessThan(1);
    expect(ksStatistic(u32s, (x) => Math.min(1, Math.max(0, x)))).toBeLessThan(ksBound(N));
    const u64s = data(random.uniform(random.key(2), [N], { dtype: "float64", minval: -3, maxval: 5 }));
    expect(ksStatistic(u64s, (x) => Math.min(1, Math.max(0, (x + 3) / 8)))).toBeLessThan(ksBound(N));
  });

  it("normal: KS against the exact normal CDF", () => {
    const z = data(random.normal(random.key(3), [N]));
    expect(ksStatistic(z, normalCdf)).toBeLessThan(ksBound(N));
    const z64 = data(random.normal(random.key(4), [N], { dtype: "float64" }));
    expect(ksStatistic(z64, normalCdf)).toBeLessThan(ksBound(N));
    // A sanity check that the test can fail: a scaled normal is rejected.
    expect(ksStatistic(z.map((x) => 1.1 * x), normalCdf)).toBeGreaterThan(ksBound(N));
  });

  it("truncatedNormal: inside the open interval and KS against the truncated CDF", () => {
    for (const [lo, hi] of [
      [-0.3, 0.3],
      [0, 2],
      [1, Infinity],
    ] as const) {
      const x = data(random.truncatedNormal(random.key(5), lo, hi, [N]));
      expect(x.every((v) => v > lo && v < hi)).toBe(true);
      const [fa, fb] = [normalCdf(lo), hi === Infinity ? 1 : normalCdf(hi)];
      expect(ksStatistic(x, (v) => (normalCdf(v) - fa) / (fb - fa))).toBeLessThan(ksBound(N));
    }
    // Bounds equal to the float edges still give values strictly inside (the clip to nextafter).
    const tight = data(random.truncatedNormal(random.key(6), 1, fround(1 + 2 ** -22), [100]));
    expect(tight.every((v) => v > 1 && v < fround(1 + 2 ** -22))).toBe(true);
    const tight64 = data(random.truncatedNormal(random.key(6), 1, 1 + 2 ** -51, [100], { dtype: "float64" }));
    expect(tight64.every((v) => v > 1 && v < 1 + 2 ** -51)).toBe(true);
    // Array bounds broadcast with the shape.
    const b = random.truncatedNormal(random.key(7), np.array([-1, 0, 1]), np.array([0, 1, 2]));
    expect(shapeOf(b)).toEqual([3]);
    data(b).forEach((v, i) => expect(v > i - 1 && v < i).toBe(true));
  });

  it("bernoulli: mean and variance", () => {
    for (const p of [0.1, 0.5, 0.83]) {
      const x = data(random.bernoulli(random.key(8), p, [N]));
      const mean = x.reduce((a, b) => a + b, 0) / N;
      const variance = x.reduce((a, b) => a + (b - mean) ** 2, 0) / N;
      const sd = Math.sqrt((p * (1 - p)) / N);
      expect(Math.abs(mean - p)).toBeLessThan(4 * sd);
      expect(Math.abs(variance - p * (1 - p))).toBeLessThan(0.01);
    }
    const b = random.bernoulli(random.key(9), np.array([0, 1]), [3, 2]);
    expect(b.aval.dtype).toBe("bool");
    expect(data(b)).toEqual([0, 1, 0, 1, 0, 1]);
    expect(() => random.bernoulli(random.key(9), np.array([1, 0], { dtype: "int32" }))).toThrow(DTypeError);
  });

  it("categorical: frequencies match softmax(logits) (chi-square)", () => {
    const p = [0.1, 0.2, 0.3, 0.4];
    const logits = np.array(p.map((x) => Math.log(x) - 42)); // unnormalised
    const x = data(random.categorical(random.key(10), logits, { shape: [N] }));
    expect(chiSquare(counts(x, 4), p.map((q) => q * N))).toBeLessThan(CHI2_001[3]!);
    // Batched distributions along axis 0: column j is a distribution over 2 categories.
    const P = [
      [0.5, 0.1],
      [0.5, 0.9],
    ];
    const l2 = np.log(np.array(P));
    const y = random.categorical(random.key(11), l2, { axis: 0, shape: [N / 2, 2] });
    expect(shapeOf(y)).toEqual([N / 2, 2]);
    const yd = data(y);
    for (let j = 0; j < 2; j++) {
      const col = yd.filter((_, i) => i % 2 === j);
      expect(chiSquare(counts(col, 2), [P[0]![j]! * (N / 2), P[1]![j]! * (N / 2)])).toBeLessThan(CHI2_001[1]!);
    }
    // Extra leading axes are draws; the trailing ones must match the logits' batch shape.
    expect(shapeOf(random.categorical(random.key(1), np.zeros([3]), { shape: [4, 2] }))).toEqual([4, 2]);
    expect(() => random.categorical(random.key(1), np.zeros([2, 3]), { shape: [4, 3] })).toThrow(ShapeError);
  });

  it("randint: range and near-uniform counts", () => {
    const x = data(random.randint(random.key(12), [N], -3, 7));
    expect(x.every((v) => Number.isInteger(v) && v >= -3 && v < 7)).toBe(true);
    expect(chiSquare(counts(x, 10, -3), new globalThis.Array(10).fill(N / 10))).toBeLessThan(CHI2_001[9]!);
    // Huge spans: the whole int32 range and the whole uint32 range.
    const all = data(random.randint(random.key(13), [4000], -(2 ** 31), 2 ** 31));
    expect(Math.min(...all)).toBeLessThan(-(2 ** 30));
    expect(Math.max(...all)).toBeGreaterThan(2 ** 30);
    const allU = random.randint(random.key(13), [4000], 0, 2 ** 32, { dtype: "uint32" });
    expect(allU.aval.dtype).toBe("uint32");
    expect(Math.max(...data(allU))).toBeGreaterThan(2 ** 31 + 2 ** 30);
    // maxval <= minval gives minval; bounds broadcast.
    expect(data(random.randint(random.key(14), [3], 5, 5))).toEqual([5, 5, 5]);
    const per = data(random.randint(random.key(15), [1000, 2], np.array([0, 100], { dtype: "int32" }), np.array([2, 103], { dtype: "int32" })));
    expect(per.every((v, i) => (i % 2 === 0 ? v >= 0 && v < 2 : v >= 100 && v < 103))).toBe(true);
    expect(() => random.randint(random.key(1), [2], 0, 3, { dtype: "float32" })).toThrow(DTypeError);
  });

  it("permutation: a permutation, and every element reaches every position", () => {
    const n = 10;
    const reps = 400;
    const perms = data(vmap((k: Value) => random.permutation(k, n))(random.split(random.key(16), reps)));
    const hits = new globalThis.Array(n * n).fill(0);
    for (let r = 0; r < reps; r++) {
      const row = perms.slice(r * n, (r + 1) * n);
      expect([...row].sort((a, b) => a - b)).toEqual([...globalThis.Array(n).keys()]);
      row.forEach((v, pos) => hits[v * n + pos]++);
    }
    expect(hits.every((h) => h > 0)).toBe(true);
    expect(chiSquare(hits, new globalThis.Array(n * n).fill(reps / n))).toBeLessThan(CHI2_001[81]!);
    // Arrays are permuted along an axis (rows stay intact); larger n takes two sort rounds.
    const m = np.reshape(np.arange(12), [4, 3]);
    const pm = data(random.permutation(random.key(17), m));
    for (let r = 0; r < 4; r++) expect(pm[3 * r + 1]! - pm[3 * r]!).toBe(1);
    const big = data(random.permutation(random.key(18), 3000));
    expect([...big].sort((a, b) => a - b)).toEqual([...globalThis.Array(3000).keys()]);
    expect(() => random.permutation(random.key(1), 2.5)).toThrow(ArgumentError);
  });

  it("choice: without replacement is distinct; weights give the right frequencies", () => {
    const d = data(random.choice(random.key(19), 20, { shape: [15], replace: false }));
    expect(new Set(d).size).toBe(15);
    const p = [0.5, 0, 0.25, 0.25];
    const x = data(random.choice(random.key(20), 4, { shape: [N], p: np.array(p) }));
    const c = counts(x, 4);
    expect(c[1]).toBe(0);
    expect(chiSquare([c[0]!, c[2]!, c[3]!], [0.5 * N, 0.25 * N, 0.25 * N])).toBeLessThan(CHI2_001[2]!);
    const w = data(random.choice(random.key(21), 6, { shape: [3], replace: false, p: np.array([1, 1, 0, 1, 1, 1]) }));
    expect(new Set(w).size).toBe(3);
    expect(w.includes(2)).toBe(false);
    const rows = random.choice(random.key(22), np.reshape(np.arange(12), [4, 3]), { shape: [5] });
    expect(shapeOf(rows)).toEqual([5, 3]);
    expect(() => random.choice(random.key(1), 3, { shape: [4], replace: false })).toThrow(ArgumentError);
  });

  it("gumbel, exponential, laplace: KS against their CDFs", () => {
    const g = data(random.gumbel(random.key(23), [N]));
    expect(ksStatistic(g, (x) => Math.exp(-Math.exp(-x)))).toBeLessThan(ksBound(N));
    const e = data(random.exponential(random.key(24), [N]));
    expect(e.every((v) => v >= 0)).toBe(true);
    expect(ksStatistic(e, (x) => (x < 0 ? 0 : 1 - Math.exp(-x)))).toBeLessThan(ksBound(N));
    const l = data(random.laplace(random.key(25), [N]));
    expect(ksStatistic(l, (x) => (x < 0 ? 0.5 * Math.exp(x) : 1 - 0.5 * Math.exp(-x)))).toBeLessThan(ksBound(N));
  });
});

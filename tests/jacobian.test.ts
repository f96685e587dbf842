/**
 * @file Tests for jacfwd / jacrev / hessian: hand-derived Jacobians and Hessians (computed on the host
 * with JS Math), agreement of the two modes with each other and with float64 finite differences on
 * random shapes, pytree layouts, argnums, hasAux and dtype errors.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DTypeError, grad, jit, nn, np, vmap } from "../src/index.js";
import type { Array as WArray } from "../src/index.js";
import { hessian, jacfwd, jacrev } from "../src/ops/jacobian.js";

const f64 = (data: any) => np.array(data, { dtype: "float64" });

/** Host values of an array (flat) and its shape. */
function host(x: unknown): { shape: number[]; data: number[] } {
  const a = x as WArray;
  return { shape: [...a.shape], data: Array.from(a.dataSync() as ArrayLike<number>) };
}

function expectClose(x: unknown, shape: number[], want: number[], tol = 1e-12): void {
  const h = host(x);
  expect(h.shape).toEqual(shape);
  expect(h.data.length).toBe(want.length);
  h.data.forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThanOrEqual(tol * (1 + Math.abs(want[i]!))));
}

/** Deterministic pseudo-random values in [-1, 1). */
function values(n: number, seed: number): number[] {
  let s = seed >>> 0 || 1;
  return Array.from({ length: n }, () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s / 4294967296) * 2 - 1;
  });
}

const modes = [
  ["jacfwd", jacfwd],
  ["jacrev", jacrev],
] as const;

describe.each(modes)("%s on hand-derived Jacobians", (_name, jac) => {
  it("f(x) = A·x gives A", () => {
    const A = [
      [1, -2, 0.5],
      [3, 0.25, -1],
    ];
    const J = jac((x: any) => np.matmul(f64(A), x))(f64([0.3, -0.7, 1.1]));
    expectClose(J, [2, 3], A.flat());
  });

  it("elementwise sin gives diag(cos x)", () => {
    const xs = [0.3, -1.2, 2.0, 0.0];
    const J = jac(np.sin)(f64(xs));
    const want = xs.flatMap((xi, i) => xs.map((_, j) => (i === j ? Math.cos(xi) : 0)));
    expectClose(J, [4, 4], want);
  });

  it("softmax gives diag(p) - p pᵀ", () => {
    const xs = [0.5, -1, 2, 0.1];
    const m = Math.max(...xs);
    const e = xs.map((v) => Math.exp(v - m));
    const s = e.reduce((a, b) => a + b, 0);
    const p = e.map((v) => v / s);
    const want = p.flatMap((pi, i) => p.map((pj, j) => (i === j ? pi : 0) - pi * pj));
    expectClose(jac((x: any) => nn.softmax(x))(f64(xs)), [4, 4], want, 1e-12);
  });

  it("matrix input and output: f(X) = X·B has blocks [i, j, k, l] = δ_ik B_lj", () => {
    const B = [
      [1, 2],
      [3, 4],
      [5, 6],
    ]; // [3, 2]
    const J = jac((x: any) => np.matmul(x, f64(B)))(np.reshape(f64(values(6, 3)), [2, 3]));
    const want: number[] = [];
    for (let i = 0; i < 2; i++)
      for (let j = 0; j < 2; j++)
        for (let k = 0; k < 2; k++) for (let l = 0; l < 3; l++) want.push(i === k ? B[l]![j]! : 0);
    expectClose(J, [2, 2, 2, 3], want);
  });

  it("scalar input and output", () => {
    // f(x) = x³ -> 3x²
    expectClose(jac((x: any) => np.multiply(x, np.multiply(x, x)))(f64(1.5)), [], [3 * 1.5 ** 2]);
    // vector -> scalar: gradient shape
    expectClose(jac((x: any) => np.sum(np.multiply(x, x)))(f64([1, -2, 3])), [3], [2, -4, 6]);
    // scalar -> vector: [x, x²] -> [1, 2x]
    expectClose(jac((x: any) => np.stack([x, np.multiply(x, x)]))(f64(0.75)), [2], [1, 1.5]);
  });

  it("pytree input and output: output tree of input trees", () => {
    const a = [0.5, -1, 2];
    const b = [1.5, 0.25, -3];
    const J = jac((p: any) => [np.multiply(p.a, p.b), { s: np.sum(p.a) }])({ a: f64(a), b: f64(b) });
    const diag = (v: number[]) => v.flatMap((vi, i) => v.map((_, j) => (i === j ? vi : 0)));
    expect(Object.keys(J[0]).sort()).toEqual(["a", "b"]);
    expectClose(J[0].a, [3, 3], diag(b));
    expectClose(J[0].b, [3, 3], diag(a));
    expectClose(J[1].s.a, [3], [1, 1, 1]);
    expectClose(J[1].s.b, [3], [0, 0, 0]);
  });

  it("argnums list gives one block per listed argument; other arguments stay fixed", () => {
    // f(x, c, y) = c·x·y (elementwise) for scalars
    const f = (x: any, c: any, y: any) => np.multiply(c, np.multiply(x, y));
    const J = jac(f, { argnums: [0, 2] })(f64(2), f64(5), f64(3));
    expect(Array.isArray(J) && J.length).toBe(2);
    expectClose(J[0], [], [15]);
    expectClose(J[1], [], [10]);
    // Negative argnums count from the end, a number gives the block itself.
    expectClose(jac(f, { argnums: -1 })(f64(2), f64(5), f64(3)), [], [10]);
    // A list of one still gives a list.
    const J1 = jac(f, { argnums: [1] })(f64(2), f64(5), f64(3));
    expect(J1.length).toBe(1);
    expectClose(J1[0], [], [6]);
  });

  it("hasAux returns [jac, aux] with aux untouched", () => {
    const [J, aux] = jac((x: any) => [np.multiply(x, 3), { n: np.sum(x), tag: np.array([1, 2], { dtype: "int32" }) }], {
      hasAux: true,
    })(f64([1, 2]));
    expectClose(J, [2, 2], [3, 0, 0, 3]);
    expectClose(aux.n, [], [3]);
    expect(host(aux.tag).data).toEqual([1, 2]);
    expect((aux.tag as WArray).dtype).toBe("int32");
  });

  it("outputs that do not depend on the input give zero blocks", () => {
    expectClose(jac((_x: any) => np.ones([2], { dtype: "float64" }))(f64([1, 2, 3])), [2, 3], new Array(6).fill(0));
  });

  it("empty inputs and outputs give empty blocks", () => {
    expect(host(jac((x: any) => np.sum(x))(np.zeros([0], { dtype: "float64" }))).shape).toEqual([0]);
    expect(host(jac((x: any) => x)(np.zeros([0, 2], { dtype: "float64" }))).shape).toEqual([0, 2, 0, 2]);
  });

  it("integer inputs and outputs are DTypeErrors", () => {
    const xi = np.array([1, 2], { dtype: "int32" });
    expect(() => jac((x: any) => np.multiply(x, 2))(xi)).toThrow(DTypeError);
    expect(() => jac((x: any) => np.multiply(x, 2))(xi)).toThrow(/float arguments.*int32/);
    expect(() => jac((x: any) => np.argmax(x))(f64([1, 2]))).toThrow(DTypeError);
    // The message names the positional argument holding the integer leaf.
    expect(() => jac((x: any, p: any) => np.multiply(x, p.k), { argnums: [0, 1] })(f64(1), { k: xi })).toThrow(
      /int32 in argument 1/,
    );
  });

  it("keeps float32 as float32", () => {
    const J = jac(np.sin)(np.array([0.5, 1]));
    expect((J as WArray).dtype).toBe("float32");
  });
});

/** Float64 central-difference Jacobian of a single-array function, on the host (independent of autodiff). */
function fdJacobian(f: (x: any) => any, x0: number[], shape: number[]): { outShape: number[]; data: number[] } {
  const h = 1e-6;
  const n = x0.length;
  let outShape: number[] = [];
  const cols: number[][] = [];
  for (let k = 0; k < n; k++) {
    const p = [...x0];
    const m = [...x0];
    p[k]! += h;
    m[k]! -= h;
    const yp = host(f(np.reshape(f64(p), shape)));
    const ym = host(f(np.reshape(f64(m), shape)));
    outShape = yp.shape;
    cols.push(yp.data.map((v, i) => (v - ym.data[i]!) / (2 * h)));
  }
  const mOut = cols[0]?.length ?? 0;
  const data: number[] = [];
  for (let i = 0; i < mOut; i++) for (let k = 0; k < n; k++) data.push(cols[k]![i]!);
  return { outShape, data };
}

describe("jacfwd and jacrev on random shapes", () => {
  const shapeArb = fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 0, maxLength: 3 });
  it("agree with each other and with float64 finite differences", () => {
    fc.assert(
      fc.property(shapeArb, fc.integer({ min: 1, max: 1000 }), (shape, seed) => {
        const n = shape.reduce((a, b) => a * b, 1);
        const x0 = values(n, seed);
        // Mixes elementwise, reductions and a broadcast, so the Jacobian is dense-ish: [2, ...shape, ...shape].
        const f = (x: any) =>
          np.stack([np.multiply(np.sin(x), np.sum(np.multiply(x, x))), np.tanh(np.add(x, np.mean(x)))]);
        const x = np.reshape(f64(x0), shape);
        const Jf = host(jacfwd(f)(x));
        const Jr = host(jacrev(f)(x));
        expect(Jf.shape).toEqual([2, ...shape, ...shape]);
        expect(Jr.shape).toEqual(Jf.shape);
        Jf.data.forEach((v, i) => expect(Math.abs(v - Jr.data[i]!)).toBeLessThan(1e-12));
        const fd = fdJacobian(f, x0, shape);
        expect(fd.outShape).toEqual([2, ...shape]);
        Jf.data.forEach((v, i) => expect(Math.abs(v - fd.data[i]!)).toBeLessThan(1e-6));
      }),
      { numRuns: 25, seed: 42 },
    );
  });

  it("agree on pytrees of two arguments with argnums [0, 1]", () => {
    fc.assert(
      fc.property(shapeArb, shapeArb, fc.integer({ min: 1, max: 1000 }), (s1, s2, seed) => {
        const n1 = s1.reduce((a, b) => a * b, 1);
        const n2 = s2.reduce((a, b) => a * b, 1);
        const x = np.reshape(f64(values(n1, seed)), s1);
        const y = { w: np.reshape(f64(values(n2, seed + 7)), s2) };
        const f = (x: any, y: any) => ({ u: np.multiply(np.sin(x), np.sum(y.w)), v: [np.exp(np.multiply(y.w, np.sum(x)))] });
        const Jf = jacfwd(f, { argnums: [0, 1] })(x, y);
        const Jr = jacrev(f, { argnums: [0, 1] })(x, y);
        const pairs: [any, any, number[]][] = [
          [Jf.u[0], Jr.u[0], [...s1, ...s1]],
          [Jf.u[1].w, Jr.u[1].w, [...s1, ...s2]],
          [Jf.v[0][0], Jr.v[0][0], [...s2, ...s1]],
          [Jf.v[0][1].w, Jr.v[0][1].w, [...s2, ...s2]],
        ];
        for (const [a, b, shape] of pairs) {
          const ha = host(a);
          const hb = host(b);
          expect(ha.shape).toEqual(shape);
          expect(hb.shape).toEqual(shape);
          ha.data.forEach((v, i) => expect(Math.abs(v - hb.data[i]!)).toBeLessThan(1e-12 * (1 + Math.abs(v))));
        }
      }),
      { numRuns: 15, seed: 7 },
    );
  });
});

describe("hessian", () => {
  it("of the quadratic form xᵀAx is A + Aᵀ", () => {
    const A = [
      [1, 2, -1],
      [0.5, -3, 4],
      [2, 0, 1],
    ];
    const H = hessian((x: any) => np.dot(x, np.matmul(f64(A), x)))(f64([0.3, -0.2, 0.9]));
    const want = A.flatMap((row, i) => row.map((_, j) => A[i]![j]! + A[j]![i]!));
    expectClose(H, [3, 3], want, 1e-12);
  });

  it("of sum(sin(x)) is diag(-sin x)", () => {
    const xs = [0.4, -1.3, 2.2];
    const H = hessian((x: any) => np.sum(np.sin(x)))(f64(xs));
    expectClose(
      H,
      [3, 3],
      xs.flatMap((xi, i) => xs.map((_, j) => (i === j ? -Math.sin(xi) : 0))),
    );
  });

  it("is symmetric for a non-separable function of a matrix, and matches second finite differences", () => {
    const x0 = values(6, 11);
    const W = f64([
      [0.3, -0.5],
      [1.1, 0.2],
      [-0.7, 0.9],
    ]);
    const f = (x: any) => np.sum(np.tanh(np.matmul(x, W))); // x: [2, 3]
    const H = host(hessian(f)(np.reshape(f64(x0), [2, 3])));
    expect(H.shape).toEqual([2, 3, 2, 3]);
    for (let i = 0; i < 6; i++) for (let j = 0; j < 6; j++) expect(Math.abs(H.data[i * 6 + j]! - H.data[j * 6 + i]!)).toBeLessThan(1e-12);
    // Second differences of the host-evaluated f (float64, h = 1e-4): error O(h²).
    const fh = (v: number[]) => host(f(np.reshape(f64(v), [2, 3]))).data[0]!;
    const h = 1e-4;
    for (const [i, j] of [
      [0, 0],
      [0, 4],
      [2, 3],
      [5, 5],
    ] as const) {
      const e = (di: number, dj: number) => {
        const v = [...x0];
        v[i]! += di * h;
        v[j]! += dj * h;
        return fh(v);
      };
      const fd = (e(1, 1) - e(1, -1) - e(-1, 1) + e(-1, -1)) / (4 * h * h);
      expect(Math.abs(H.data[i * 6 + j]! - fd)).toBeLessThan(1e-5);
    }
  });

  it("with argnums a list gives the blocks ∂²f/∂xᵢ∂xⱼ", () => {
    // f(x, y) = x² y: [[2y, 2x], [2x, 0]]
    const H = hessian((x: any, y: any) => np.multiply(np.multiply(x, x), y), { argnums: [0, 1] })(f64(2), f64(3));
    expectClose(H[0][0], [], [6]);
    expectClose(H[0][1], [], [4]);
    expectClose(H[1][0], [], [4]);
    expectClose(H[1][1], [], [0]);
  });

  it("of a pytree argument nests input tree in input tree, shapes [...I, ...J]", () => {
    // f({a, b}) = sum(a)² · b  (a: [2], b scalar)
    const H = hessian((p: any) => np.multiply(np.square(np.sum(p.a)), p.b))({ a: f64([1, 2]), b: f64(0.5) });
    expectClose(H.a.a, [2, 2], [1, 1, 1, 1]); // 2b
    expectClose(H.a.b, [2], [6, 6]); // 2 sum(a)
    expectClose(H.b.a, [2], [6, 6]);
    expectClose(H.b.b, [], [0]);
  });

  it("passes hasAux through", () => {
    const [H, aux] = hessian((x: any) => [np.sum(np.multiply(x, np.multiply(x, x))), np.multiply(x, 2)], { hasAux: true })(
      f64([1, -2]),
    );
    expectClose(H, [2, 2], [6, 0, 0, -12]);
    expectClose(aux, [2], [2, -4]);
  });
});

describe("composition with other transforms", () => {
  // f(x) = sin(x)·sum(x): J_ij = δ_ij cos(x_i) sum(x) + sin(x_i) (hand derivative).
  const f = (x: any) => np.multiply(np.sin(x), np.sum(x));
  const handJ = (x: number[]) => {
    const s = x.reduce((a, b) => a + b, 0);
    return x.flatMap((xi, i) => x.map((_, j) => (i === j ? Math.cos(xi) * s : 0) + Math.sin(xi)));
  };
  const rows = [
    [0.1, 0.2],
    [0.3, -0.4],
    [1.5, 0.6],
  ];

  it.each(modes)("vmap(%s) gives per-example Jacobians", (_n, jac) => {
    expectClose(vmap(jac(f))(f64(rows)), [3, 2, 2], rows.flatMap(handJ));
  });

  it.each(modes)("jit(%s) matches the hand Jacobian", (_n, jac) => {
    expectClose(jit(jac(f))(f64(rows[1])), [2, 2], handJ(rows[1]!));
  });

  it("grad through jacrev: ∂/∂x_k Σ_ij J_ij", () => {
    // Σ_ij J_ij = Σ_i cos(x_i) s + n Σ_i sin(x_i), with s = Σ x, n = 2.
    // ∂/∂x_k = -sin(x_k) s + Σ_i cos(x_i) + n cos(x_k).
    const x = rows[2]!;
    const s = x[0]! + x[1]!;
    const sc = Math.cos(x[0]!) + Math.cos(x[1]!);
    const want = x.map((xk) => -Math.sin(xk) * s + sc + 2 * Math.cos(xk));
    expectClose(grad((v: any) => np.sum(jacrev(f)(v)))(f64(x)), [2], want);
    expectClose(jit(hessian((v: any) => np.sum(np.sin(v))))(f64(x)), [2, 2], [-Math.sin(x[0]!), 0, 0, -Math.sin(x[1]!)]);
  });
});

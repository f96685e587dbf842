/**
 * @file The transforms' API contracts (options, pytrees, caching, errors), with expected values derived
 * by hand. Per-primitive numerics live in tests/property/.
 */
import { describe, expect, it } from "vitest";
import {
  ArgumentError,
  checkpoint,
  customJvp,
  customVjp,
  DTypeError,
  grad,
  jit,
  jvp,
  linearize,
  makeJaxpr,
  memoryStats,
  np,
  scope,
  ShapeError,
  stopGradient,
  tree,
  TreeMismatchError,
  valueAndGrad,
  vjp,
  vmap,
  Array as WArray,
} from "../src/index.js";
import type { Value } from "../src/index.js";

const f64 = (x: any) => np.array(x, { dtype: "float64" });
const arr = (v: Value) => (v as WArray).toArraySync();
const close = (a: Value, b: number[] | number, tol = 1e-9) => {
  const got = (v: any): number[] => (Array.isArray(v) ? v.flat(Infinity) : [v]);
  const g = got(arr(a));
  const e = got(b);
  expect(g.length).toBe(e.length);
  g.forEach((x, i) => expect(Math.abs(x - e[i]!)).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(e[i]!))));
};

describe("grad and valueAndGrad", () => {
  it("differentiates a polynomial (d/dx x^3 + 2x = 3x^2 + 2)", () => {
    const g = grad((x: Value) => np.add(np.power(x, 3), np.multiply(2, x)));
    close(g(f64(2)), 14);
    close(g(f64(-1.5)), 3 * 2.25 + 2);
  });
  it("takes argnums as a number or a list", () => {
    const f = (x: Value, y: Value) => np.sum(np.multiply(np.square(x), y)); // d/dx = 2xy, d/dy = x^2
    const x = f64([1, 2]);
    const y = f64([3, 4]);
    close(grad(f, { argnums: 1 })(x, y), [1, 4]);
    const [gx, gy] = grad(f, { argnums: [0, 1] })(x, y);
    close(gx, [6, 16]);
    close(gy, [1, 4]);
    close(grad(f, { argnums: -1 })(x, y), [1, 4]);
  });
  it("returns aux untouched with hasAux", () => {
    const [g, aux] = grad((x: Value) => [np.sum(np.square(x)), { n: 3, x2: np.multiply(x, 2) }], { hasAux: true })(f64([1, 2]));
    close(g, [2, 4]);
    expect(aux.n).toBe(3);
    close(aux.x2, [2, 4]);
    const [[v, a2], g2] = valueAndGrad((x: Value) => [np.sum(x), "tag"], { hasAux: true })(f64([1, 2]));
    close(v, 3);
    expect(a2).toBe("tag");
    close(g2, [1, 1]);
  });
  it("differentiates with respect to pytrees", () => {
    const p = { w: f64([[1, 2], [3, 4]]), b: [f64([1]), null] };
    const g = grad((q: typeof p) => np.sum(np.add(np.matmul(q.w, q.w), q.b[0] as Value)))(p);
    // d/dW sum(W W) = 1ᵀ Wᵀ + Wᵀ 1 pattern: G_ij = sum_k W_jk + sum_k W_ki
    close(g.w, [[3 + 4, 7 + 6], [3 + 6, 7 + 4]].map((r, i) => r.map((_, j) => [3, 7][j]! + [4, 6][i]!)).flat());
    close(g.b[0], [4]);
    expect(g.b[1]).toBeNull();
  });
  it("rejects non-scalar outputs, int inputs and bad argnums with named errors", () => {
    expect(() => grad((x: Value) => np.multiply(x, 2))(f64([1, 2]))).toThrow(ShapeError);
    expect(() => grad((x: Value) => np.sum(x))(np.array([1, 2], { dtype: "int32" }))).toThrow(DTypeError);
    expect(() => grad((x: Value) => np.sum(x), { argnums: 2 })(f64([1]))).toThrow(ArgumentError);
  });
  it("composes to second and third order (d^3/dx^3 sin = -cos)", () => {
    const d3 = grad(grad(grad((x: Value) => np.sin(x))));
    close(d3(f64(0.7)), -Math.cos(0.7), 1e-12);
  });
});

describe("vjp, jvp, linearize", () => {
  it("vjp returns one cotangent per primal", () => {
    const [out, fn] = vjp((x: Value, y: Value) => np.multiply(x, y), f64([1, 2]), f64([3, 4]));
    close(out, [3, 8]);
    const [cx, cy] = fn(f64([1, 10]));
    close(cx, [3, 40]);
    close(cy, [1, 20]);
  });
  it("jvp pushes pytree tangents", () => {
    const [p, t] = jvp((a: { x: Value }) => np.exp(a.x), [{ x: f64([0, 1]) }], [{ x: f64([1, 2]) }]);
    close(p, [1, Math.E]);
    close(t, [1, 2 * Math.E]);
  });
  it("jvp rejects mismatched trees and shapes", () => {
    expect(() => jvp((x: Value) => x, [f64([1])], [[f64([1])]])).toThrow(TreeMismatchError);
    expect(() => jvp((x: Value) => x, [f64([1, 2])], [f64([1])])).toThrow(ShapeError);
  });
  it("linearize evaluates the JVP without re-running the primal", () => {
    const [y, lin] = linearize((x: Value) => np.multiply(np.sin(x), 3), f64([0.5]));
    close(y, [3 * Math.sin(0.5)]);
    close(lin(f64([2])), [6 * Math.cos(0.5)]);
  });
  it("jvp of grad gives Hessian-vector products", () => {
    const f = (x: Value) => np.sum(np.multiply(np.square(x), np.array([1, 2, 3], { dtype: "float64" })));
    const [, hv] = jvp(grad(f), [f64([1, 1, 1])], [f64([1, 0, 2])]);
    close(hv, [2, 0, 12]); // H = diag(2, 4, 6)
  });
});

describe("vmap", () => {
  it("maps over inAxes per argument, null for unbatched", () => {
    const f = (x: Value, w: Value) => np.dot(w, x);
    const xs = f64([[1, 2], [3, 4], [5, 6]]);
    const w = f64([1, -1]);
    close(vmap(f, { inAxes: [0, null] })(xs, w), [-1, -1, -1]);
    close(vmap(f, { inAxes: [1, null] })(np.transpose(xs), w), [-1, -1, -1]);
    close(vmap(f, { inAxes: [-1, null] })(np.transpose(xs), w), [-1, -1, -1]);
  });
  it("places outputs per outAxes", () => {
    const f = (x: Value) => np.multiply(x, 2);
    const xs = f64([[1, 2, 3], [4, 5, 6]]);
    const out = vmap(f, { outAxes: 1 })(xs) as Value;
    expect(out.shape).toEqual([3, 2]);
    close(out, [2, 8, 4, 10, 6, 12]);
    const unb = vmap((_x: Value) => f64(7), { outAxes: 0 })(xs) as Value;
    expect(unb.shape).toEqual([2]);
  });
  it("takes pytree inAxes", () => {
    const f = (p: { a: Value; b: Value }) => np.add(p.a, p.b);
    const out = vmap(f, { inAxes: [{ a: 0, b: null }] })({ a: f64([1, 2]), b: f64(10) });
    close(out, [11, 12]);
  });
  it("nests (vmap of vmap is an outer product here)", () => {
    const f = vmap(vmap((x: Value, y: Value) => np.multiply(x, y), { inAxes: [null, 0] }), { inAxes: [0, null] });
    close(f(f64([1, 2]), f64([3, 4, 5])), [3, 4, 5, 6, 8, 10]);
  });
  it("reports axis-size mismatches and bad axes", () => {
    expect(() => vmap((x: Value, y: Value) => np.add(x, y))(f64([1, 2]), f64([1, 2, 3]))).toThrow(ShapeError);
    expect(() => vmap((x: Value) => x, { inAxes: 2 })(f64([1, 2]))).toThrow(ShapeError);
    expect(() => vmap((x: Value) => x, { inAxes: [0, 0] })(f64([1, 2]))).toThrow(TreeMismatchError);
  });
  it("per-example gradients equal a loop of grad", () => {
    const loss = (w: Value, x: Value) => np.sum(np.tanh(np.multiply(w, x)));
    const w = f64([0.5, -0.3]);
    const xs = f64([[1, 2], [3, 4], [-1, 0.5]]);
    const batched = vmap(grad(loss), { inAxes: [null, 0] })(w, xs) as Value;
    const rows = [[1, 2], [3, 4], [-1, 0.5]].map((x) => grad(loss)(w, f64(x)));
    close(batched, rows.flatMap((r) => (arr(r) as number[])));
  });
});

describe("jit", () => {
  it("matches eager and caches per signature", () => {
    let traces = 0;
    const f = jit((x: Value) => {
      traces++;
      return np.sum(np.sin(x));
    });
    close(f(f64([1, 2])), Math.sin(1) + Math.sin(2));
    close(f(f64([3, 4])), Math.sin(3) + Math.sin(4));
    expect(traces).toBe(1);
    f(f64([1, 2, 3]));
    expect(traces).toBe(2);
  });
  it("treats static arguments as compile-time constants", () => {
    let traces = 0;
    const f = jit(
      (x: Value, n: number) => {
        traces++;
        let y = x;
        for (let i = 0; i < n; i++) y = np.multiply(y, 2);
        return y;
      },
      { staticArgnums: 1 },
    );
    close(f(f64([1]), 3), [8]);
    close(f(f64([1]), 3), [8]);
    close(f(f64([1]), 2), [4]);
    expect(traces).toBe(2);
  });
  it("donated arguments are consumed", () => {
    const step = jit((p: Value, g: Value) => np.subtract(p, g), { donateArgnums: 0 });
    const p = f64([1, 2]);
    close(step(p, f64([1, 1])), [0, 1]);
    expect(() => np.add(p, 1)).toThrow(/dispose|donated/);
  });
  it("composes with grad and vmap in every order", () => {
    const f = (x: Value) => np.sum(np.multiply(np.sin(x), x));
    const x = f64([0.3, 1.1]);
    const want = [0.3, 1.1].map((v) => Math.sin(v) + v * Math.cos(v));
    close(jit(grad(f))(x), want);
    close(grad(jit(f))(x), want);
    close(jit(vmap(grad(f)))(np.reshape(x, [2, 1])), want);
    close(vmap(jit(grad(f)))(np.reshape(x, [2, 1])), want);
    close(jit(jit(grad(jit(f))))(x), want);
  });
  it("makeJaxpr prints a readable IR", () => {
    const s = makeJaxpr((x: Value, w: Value) => np.sum(np.tanh(np.matmul(x, w))))(np.ones([2, 3]), np.ones([3, 4])).toString();
    expect(s).toContain("{ lambda ");
    expect(s).toContain("a:f32[2,3] b:f32[3,4]");
    expect(s).toMatch(/c:f32\[2,4\] = dot_general\[dimension_numbers=\(\(\(1,\), \(0,\)\), \(\(\), \(\)\)\)\] a b/);
    expect(s).toContain("tanh c");
    expect(s).toContain("reduce_sum[axes=(0, 1)]");
  });
});

describe("custom rules, checkpoint, stopGradient", () => {
  it("customJvp's rule is used by jvp and (transposed) by grad", () => {
    // A deliberately different derivative shows the rule is used: d/dx f = 5.
    const f = customJvp((x: Value) => np.sin(x)).defjvp(([x], [t]) => [np.sin(x), np.multiply(t, 5)]);
    close(grad(f)(f64(0.2)), 5);
    close(jvp(f, [f64(0.2)], [f64(2)])[1], 10);
    close(vmap(grad(f))(f64([1, 2])), [5, 5]);
  });
  it("customVjp's bwd is used by grad, under vmap and jit", () => {
    const f = customVjp((x: Value) => np.exp(x)).defvjp(
      (x: Value) => [np.exp(x), x],
      (_res: Value, ct: Value) => [np.multiply(ct, 3)],
    );
    close(grad((x: Value) => np.sum(f(x)))(f64([1, 2])), [3, 3]);
    close(jit(vmap(grad(f)))(f64([1, 2])), [3, 3]);
    expect(() => jvp(f, [f64(1)], [f64(1)])).toThrow(/forward-mode/);
  });
  it("checkpoint gives the same gradients to second order", () => {
    const g = (x: Value) => np.sum(np.sin(np.cos(x)));
    const h = checkpoint(g);
    const x = f64([0.4, -1.3]);
    close(grad(h)(x), arr(grad(g)(x)) as number[]);
    close(grad((y: Value) => np.sum(grad(h)(y)))(x), arr(grad((y: Value) => np.sum(grad(g)(y)))(x)) as number[]);
  });
  it("stopGradient blocks the derivative", () => {
    close(grad((x: Value) => np.multiply(x, stopGradient(x)))(f64(3)), 3);
  });
});

describe("tree", () => {
  it("flattens in sorted key order and keeps null/undefined as empty nodes", () => {
    const t = { b: [1, null, { c: 2 }], a: undefined, d: 3 };
    const [leaves, def] = tree.flatten(t);
    expect(leaves).toEqual([1, 2, 3]);
    expect(tree.unflatten(def, [4, 5, 6])).toEqual({ a: undefined, b: [4, null, { c: 5 }], d: 6 });
    expect(tree.map((x: number, y: number) => x + y, { a: 1, b: [2] }, { a: 10, b: [20] })).toEqual({ a: 11, b: [22] });
    expect(() => tree.map((x: number) => x, { a: 1 }, { b: 1 })).toThrow(TreeMismatchError);
  });
});

describe("memory", () => {
  it("scope releases everything but the result", () => {
    const x = f64([1, 2, 3]);
    const before = memoryStats().liveArrays;
    let kept: Value | undefined;
    for (let i = 0; i < 50; i++) {
      kept = scope(() => np.sum(np.multiply(np.add(x, 1), 2)));
      (kept as WArray).dispose();
    }
    expect(memoryStats().liveArrays).toBe(before);
  });
});

/**
 * @file Tests for checkGrads / numericalJvp: correct functions pass at orders 1 and 2 (float64 and
 * float32), deliberately wrong custom derivatives fail with a report that names the check, the
 * argument (index and path) and the wrong elements, and the options behave as documented.
 */
import { describe, expect, it } from "vitest";
import { ArgumentError, customJvp, customVjp, np, stopGradient, WebgradError } from "../src/index.js";
import type { Array as WArray } from "../src/index.js";
import { checkGrads, checkGradsAsync, GradCheckError, numericalJvp } from "../src/ops/check-grads.js";

const f64 = (data: any) => np.array(data, { dtype: "float64" });

function host(x: unknown): number[] {
  return Array.from((x as WArray).dataSync() as ArrayLike<number>);
}

/** Runs f, expecting a GradCheckError; returns it. */
function failure(f: () => unknown): GradCheckError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(GradCheckError);
    return e as GradCheckError;
  }
  throw new Error("expected checkGrads to fail, it passed");
}

const x4 = () => f64([0.3, -0.8, 1.1, 0.45]);

describe("checkGrads passes on correct functions", () => {
  it("polynomial, orders 1 and 2 in float64, with every check recorded", () => {
    const poly = (x: any) => np.sum(np.add(np.multiply(np.power(x, 3), 2), np.multiply(x, -1.5)));
    const s1 = checkGrads(poly, [x4()]);
    expect(s1.checks.map((c) => `${c.check}/${c.quantity}`)).toEqual([
      "JVP/primal",
      "JVP/tangent",
      "VJP/primal",
      "VJP/inner product",
    ]);
    const s2 = checkGrads(poly, [x4()], { order: 2 });
    const names = new Set(s2.checks.map((c) => c.check));
    expect([...names].sort()).toEqual(["JVP", "JVP of JVP", "JVP of VJP", "VJP", "VJP of JVP", "VJP of VJP"]);
    expect(s2.checks.every((c) => c.atol === 1e-5 && c.rtol === 1e-5)).toBe(true);
    expect(s2.maxRelErr).toBeLessThan(1e-7);
  });

  it("an MLP (matmul + tanh) with a params pytree, order 2", () => {
    const params = {
      w1: f64([
        [0.2, -0.4, 0.7],
        [0.5, 0.1, -0.3],
      ]),
      b1: f64([0.1, -0.2, 0.05]),
      w2: f64([[0.3], [-0.6], [0.9]]),
    };
    const xb = f64([
      [0.5, -1.0],
      [1.5, 0.3],
    ]);
    const mlp = (p: any, x: any) => np.matmul(np.tanh(np.add(np.matmul(x, p.w1), p.b1)), p.w2);
    const s = checkGrads(mlp, [params, xb], { order: 2 });
    expect(s.checks.length).toBe(12);
    expect(s.maxRelErr).toBeLessThan(1e-6);
  });

  it("logsumexp with a pytree output, order 2", () => {
    const f = (x: any) => ({ lse: np.logsumexp(x, { axis: 1 }), sq: [np.multiply(x, x)] });
    const s = checkGrads(f, [f64([[0.1, 2.0, -1.0], [0.5, 0.5, 3.0]])], { order: 2 });
    expect(s.maxRelErr).toBeLessThan(1e-6);
  });

  it("float32 inputs pass with float32 tolerances and eps", () => {
    const W = np.array([
      [0.2, -0.4],
      [0.5, 0.1],
    ]);
    const s = checkGrads((x: any) => np.tanh(np.matmul(x, W)), [np.array([[0.3, -0.7]])], { order: 2 });
    expect(s.checks.every((c) => c.atol === 2e-3 && c.rtol === 2e-3)).toBe(true);
  });

  it("non-float arguments are held fixed", () => {
    const f = (x: any, k: any) => np.multiply(np.sin(x), np.astype(k, "float64"));
    checkGrads(f, [x4(), np.array([1, 2, 3, 4], { dtype: "int32" })], { order: 2 });
  });

  it("modes ['rev'] checks a customVjp function, which has no forward mode", () => {
    const good = customVjp((x: any) => np.sin(x)).defvjp(
      (x: any) => [np.sin(x), x],
      (x: any, ct: any) => [np.multiply(np.cos(x), ct)],
    );
    const s = checkGrads((x: any) => good(x), [x4()], { modes: ["rev"] });
    expect(s.checks.map((c) => c.check)).toEqual(["VJP", "VJP"]);
    // The forward-mode check does not apply: the error from jvp surfaces as is.
    expect(() => checkGrads((x: any) => good(x), [x4()])).toThrow(/forward-mode/);
  });

  it("checkGradsAsync gives the same result", async () => {
    const f = (x: any) => np.exp(np.multiply(x, 0.5));
    const a = await checkGradsAsync(f, [x4()], { order: 2 });
    const b = checkGrads(f, [x4()], { order: 2 });
    expect(a).toEqual(b);
  });
});

describe("checkGrads reports wrong derivatives", () => {
  // sin with derivative 1.01·cos: wrong everywhere, by 1%.
  const sloppySin = customJvp((x: any) => np.sin(x)).defjvp(([x]: any[], [t]: any[]) => [
    np.sin(x),
    np.multiply(np.multiply(np.cos(x), 1.01), t),
  ]);

  it("a customJvp with derivative 1.01·cos fails the JVP check, naming the argument and elements", () => {
    const e = failure(() => checkGrads((a: any, p: any) => np.multiply(a, sloppySin(p.w)), [f64(2), { w: x4() }]));
    expect(e).toBeInstanceOf(WebgradError);
    expect(e.message).toMatch(/^checkGrads: JVP \(order 1\) does not match finite differences/);
    expect(e.message).toContain("argument 1 (args[1].w, f64[4]) disagrees");
    expect(e.message).not.toContain("argument 0");
    expect(e.failure.check).toBe("JVP");
    expect(e.failure.arguments.map((a) => [a.index, a.path])).toEqual([[1, "args[1].w"]]);
    // Every element is wrong by 1%: expected is 2·cos(x) (hand formula), got 2·1.01·cos(x).
    const xs = [0.3, -0.8, 1.1, 0.45];
    const els = e.failure.arguments[0]!.elements;
    expect(els.length).toBe(4);
    for (const el of els) {
      const x = xs[el.index[0]!]!;
      expect(el.expected).toBeCloseTo(2 * Math.cos(x), 8);
      expect(el.got).toBeCloseTo(2 * 1.01 * Math.cos(x), 8);
    }
    expect(e.message).toContain("Tip:");
  });

  it("a derivative wrong in one element is pinned to that element of a 2-D leaf", () => {
    // d/dx of f is right except at flat position 4 = index [1, 1], where it is 10% off.
    const mask = f64([
      [1, 1, 1],
      [1, 1.1, 1],
    ]);
    const f = customJvp((x: any) => np.multiply(x, x)).defjvp(([x]: any[], [t]: any[]) => [
      np.multiply(x, x),
      np.multiply(np.multiply(np.multiply(x, 2), mask), t),
    ]);
    const X = f64([
      [0.5, -1.0, 2.0],
      [1.5, 0.7, -0.3],
    ]);
    const e = failure(() => checkGrads((x: any) => f(x), [X], { modes: ["fwd"] }));
    expect(e.failure.arguments.length).toBe(1);
    const els = e.failure.arguments[0]!.elements;
    expect(els.map((el) => el.index)).toEqual([[1, 1]]);
    expect(els[0]!.output).toBe("out at [1, 1]");
    expect(els[0]!.expected).toBeCloseTo(2 * 0.7, 8);
    expect(els[0]!.got).toBeCloseTo(2 * 0.7 * 1.1, 8);
    expect(e.message).toContain("element [1, 1] → out at [1, 1]");
    expect(e.message).toContain("1 of the 6 elements checked disagree");
    // Reverse mode is derived by transposing the same rule, so it is wrong at the same element.
    const r = failure(() => checkGrads((x: any) => f(x), [X], { modes: ["rev"] }));
    expect(r.failure.check).toBe("VJP");
    expect(r.failure.arguments[0]!.elements.map((el) => el.index)).toEqual([[1, 1]]);
  });

  it("a customVjp that drops one element fails the VJP check at that element", () => {
    const drop = f64([
      [1, 1],
      [1, 0],
      [1, 1],
    ]); // zeroes the cotangent at [1, 1]
    const lossy = customVjp((w: any) => np.sin(w)).defvjp(
      (w: any) => [np.sin(w), w],
      (w: any, ct: any) => [np.multiply(np.multiply(np.cos(w), ct), drop)],
    );
    const W = f64([
      [0.1, 0.5],
      [-0.3, 1.2],
      [0.7, -0.2],
    ]);
    const e = failure(() =>
      checkGrads((s: any, p: any) => np.sum(np.multiply(s, lossy(p.w))), [f64(3), { w: W }], { modes: ["rev"] }),
    );
    expect(e.failure.check).toBe("VJP");
    expect(e.failure.quantity).toBe("inner product");
    expect(e.message).toMatch(/VJP \(order 1\) does not match finite differences/);
    expect(e.message).toContain("argument 1 (args[1].w, f64[3,2]) disagrees");
    expect(e.message).toContain("element [1, 1]");
    const [arg] = e.failure.arguments;
    expect(arg!.path).toBe("args[1].w");
    expect(arg!.elements.length).toBe(1);
    expect(arg!.elements[0]!.index).toEqual([1, 1]);
    // Expected: ∂/∂w sum(3 sin w) = 3 cos(1.2) (hand formula); got: the dropped 0.
    expect(arg!.elements[0]!.expected).toBeCloseTo(3 * Math.cos(1.2), 7);
    expect(arg!.elements[0]!.got).toBe(0);
  });

  it("in a leaf larger than 64 elements, bisection finds a wrong element far from the start", () => {
    // [10, 10] leaf whose VJP zeroes the cotangent at flat 83 = [8, 3].
    const maskData = new Float64Array(100).fill(1);
    maskData[83] = 0;
    const mask = np.reshape(f64(maskData), [10, 10]);
    const lossy = customVjp((w: any) => np.sin(w)).defvjp(
      (w: any) => [np.sin(w), w],
      (w: any, ct: any) => [np.multiply(np.multiply(np.cos(w), ct), mask)],
    );
    const wData = Array.from({ length: 100 }, (_, i) => Math.sin(i + 1));
    const e = failure(() =>
      checkGrads((w: any) => np.sum(lossy(w)), [np.reshape(f64(wData), [10, 10])], { modes: ["rev"] }),
    );
    const els = e.failure.arguments[0]!.elements;
    expect(els.map((el) => el.index)).toEqual([[8, 3]]);
    expect(els[0]!.expected).toBeCloseTo(Math.cos(wData[83]!), 7);
    expect(els[0]!.got).toBe(0);
    expect(e.message).toContain("found by bisection over the 100 elements");
  });

  it("a leaf wrong everywhere lists a few elements and says the search stopped", () => {
    const x = f64(Array.from({ length: 200 }, (_, i) => 0.01 * i));
    const e = failure(() => checkGrads((v: any) => sloppySin(v), [x], { modes: ["fwd"] }));
    const els = e.failure.arguments[0]!.elements;
    expect(els.length).toBe(5);
    for (const el of els) expect(el.got / el.expected).toBeCloseTo(1.01, 6);
    expect(e.message).toContain("search stopped early");
  });

  it("float32 checks catch a 1% error too", () => {
    const e = failure(() => checkGrads((v: any) => sloppySin(v), [np.array([0.3, -0.8, 1.1])], { modes: ["fwd"] }));
    expect(e.failure.arguments[0]!.elements.length).toBe(3);
  });

  it("for non-scalar outputs the VJP report compares Jᵀ·ct for the random ct", () => {
    const drop = f64([1, 0, 1]);
    const lossy = customVjp((w: any) => np.exp(w)).defvjp(
      (w: any) => [np.exp(w), w],
      (w: any, ct: any) => [np.multiply(np.multiply(np.exp(w), ct), drop)],
    );
    const e = failure(() => checkGrads((w: any) => lossy(w), [f64([0.1, 0.2, 0.3])], { modes: ["rev"] }));
    expect(e.message).toContain("element [1]: Jᵀ·ct (ct random)");
    expect(e.failure.arguments[0]!.elements.map((el) => [el.index, el.got])).toEqual([[[1], 0]]);
  });

  it("a first derivative that is right but not differentiable correctly fails only at order 2", () => {
    // jvp rule cos(stopGradient(x))·t: right value, but its own derivative in x is 0 instead of -sin(x)·t.
    const frozen = customJvp((x: any) => np.sin(x)).defjvp(([x]: any[], [t]: any[]) => [
      np.sin(x),
      np.multiply(np.cos(stopGradient(x)), t),
    ]);
    const f = (x: any) => frozen(x);
    checkGrads(f, [x4()], { order: 1 });
    const e = failure(() => checkGrads(f, [x4()], { order: 2, modes: ["fwd"] }));
    expect(e.failure.check).toBe("JVP of JVP");
    expect(e.failure.order).toBe(2);
    expect(e.message).toContain("args[0] (as primal)");
    expect(e.failure.arguments.map((a) => a.path)).toEqual(["args[0] (as primal)"]);
  });

  it("tolerances: a 0.01% error fails in float64 by default and passes with rtol 1e-3", () => {
    const slightly = customJvp((x: any) => np.exp(x)).defjvp(([x]: any[], [t]: any[]) => [
      np.exp(x),
      np.multiply(np.multiply(np.exp(x), 1.0001), t),
    ]);
    failure(() => checkGrads((x: any) => slightly(x), [x4()]));
    const s = checkGrads((x: any) => slightly(x), [x4()], { rtol: 1e-3 });
    expect(s.checks.every((c) => c.rtol === 1e-3)).toBe(true);
    // The measured relative error is the 1e-4 put in (finite differences are far more precise).
    const tangent = s.checks.find((c) => c.quantity === "tangent")!;
    expect(tangent.maxRelErr).toBeGreaterThan(0.9e-4);
    expect(tangent.maxRelErr).toBeLessThan(1.1e-4);
  });

  it("a wrong primal output of a custom rule is reported as such", () => {
    const off = customJvp((x: any) => np.sin(x)).defjvp(([x]: any[], [t]: any[]) => [
      np.add(np.sin(x), 0.5),
      np.multiply(np.cos(x), t),
    ]);
    const e = failure(() => checkGrads((x: any) => off(x), [x4()]));
    expect(e.failure.quantity).toBe("primal");
    expect(e.message).toMatch(/primal output of JVP differs from the function's output at out at \[0\]/);
  });
});

describe("numericalJvp", () => {
  it("is central differences: f(x) = x³ gives 3x²·t up to O(eps²)", () => {
    const xs = [0.5, -1.5, 2];
    const ts = [1, 0.5, -2];
    const out = host(numericalJvp((x: any) => np.power(x, 3), [f64(xs)], [f64(ts)], 1e-4));
    // Central differences of x³ are exactly 3x²t + eps²t³ (hand algebra).
    out.forEach((v, i) => expect(v).toBeCloseTo(3 * xs[i]! ** 2 * ts[i]! + 1e-8 * ts[i]! ** 3, 10));
  });

  it("keeps the output structure and leaves non-float arguments alone", () => {
    const out = numericalJvp(
      (x: any, k: any) => ({ y: np.multiply(x, np.astype(k, "float64")) }),
      [f64([1, 2]), np.array([3, 4], { dtype: "int32" })],
      [f64([1, 1]), np.array([0, 0], { dtype: "int32" })],
    );
    host(out.y).forEach((v, i) => expect(v).toBeCloseTo([3, 4][i]!, 8));
  });
});

describe("checkGrads argument errors", () => {
  it("rejects bad options and traced arguments", () => {
    const f = (x: any) => np.sin(x);
    expect(() => checkGrads(f, [x4()], { order: 0 })).toThrow(ArgumentError);
    expect(() => checkGrads(f, [x4()], { modes: [] })).toThrow(/modes/);
    expect(() => checkGrads(f, [x4()], { modes: ["backward" as any] })).toThrow(/modes/);
    expect(() => checkGrads(f, [x4()], { eps: -1 })).toThrow(/eps/);
    expect(() => checkGrads(f, x4() as any)).toThrow(/list of positional arguments/);
  });
});

/**
 * @file Composition laws of the transforms (float64, fast-check): grad∘vmap == vmap∘grad, per-example
 * gradients, Hessian symmetry (library hessian vs one built here from jvp∘grad vs finite differences),
 * grad∘grad of polynomials against hand derivatives, jit commuting with grad and vmap, vmap∘vmap
 * against a double loop, linearize == jvp, customJvp / customVjp / checkpoint against the plain
 * function (and proof that their rules are actually used), stopGradient, and JAX's tie rule for max.
 *
 * This file is also where the spec table's higher-order rows (jit, custom_jvp_call, custom_vjp_call,
 * custom_lin, checkpoint) are exercised.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  checkpoint,
  customJvp,
  customVjp,
  grad,
  hessian,
  jacfwd,
  jacrev,
  jit,
  jvp,
  linearize,
  np,
  stopGradient,
  valueAndGrad,
  vjp,
  vmap,
} from "../../src/index.js";
import type { Value } from "../../src/index.js";
import {
  assertClose,
  axpy,
  build,
  centralDiff,
  fcParams,
  fromLib,
  HostArray,
  noise,
  Rng,
  seedArb,
  stack,
  toLib,
  Tol,
} from "./harness.js";

const TIGHT: Tol = { rtol: 1e-10, atol: 1e-12 };
const EPS = 1e-6;

const h = (v: unknown): HostArray => fromLib(v as Value);
const rand = (shape: number[], rng: Rng, lo = -1.5, hi = 1.5): HostArray => build(shape, "float64", () => rng.uniform(lo, hi));
const close = (got: unknown, want: unknown, what: string, tol: Tol = TIGHT) => assertClose(h(got), h(want), tol, what);

// ---------------------------------------------------------------------------------------------------
// Test functions (float64 in, float64 out)

/** Scalar function of a vector: Σ sin(x)·x² + log(1 + Σ x²) + (Σ x)³ / 10. */
function f1(x: Value): Value {
  const s = np.sum(np.multiply(np.sin(x), np.square(x)));
  const l = np.log(np.add(1, np.sum(np.square(x))));
  return np.add(np.add(s, l), np.divide(np.power(np.sum(x), 3), 10));
}

/** Vector function of a vector: tanh(W x) ⊙ exp(x / 4) with a fixed W. */
function f2(w: Value) {
  return (x: Value): Value => np.multiply(np.tanh(np.matmul(w, x)), np.exp(np.divide(x, 4)));
}

interface Params {
  w: Value;
  b: Value;
  v: Value;
}

/** A one-hidden-layer regression loss for one example: (v · tanh(x W + b) - y)². */
function loss(p: Params, x: Value, y: Value): Value {
  const hid = np.tanh(np.add(np.matmul(x, p.w), p.b));
  return np.square(np.subtract(np.sum(np.multiply(hid, p.v)), y));
}

function makeParams(d: number, k: number, rng: Rng): Params {
  return { w: toLib(rand([d, k], rng)), b: toLib(rand([k], rng)), v: toLib(rand([k], rng)) };
}

const dims = fc.record({ n: fc.integer({ min: 1, max: 5 }), seed: seedArb });

// ---------------------------------------------------------------------------------------------------

describe("grad and vmap commute", () => {
  it("vmap(grad(f))(X) == grad(X => Σ vmap(f)(X))(X), any batch axis", () => {
    fc.assert(
      fc.property(dims, fc.integer({ min: 0, max: 4 }), fc.constantFrom(0, 1, -1, -2), ({ n, seed }, batch, axis) => {
        const rng = new Rng(seed);
        const xs = rand(axis === 0 || axis === -2 ? [batch, n] : [n, batch], rng);
        const X = toLib(xs);
        const a = vmap(grad(f1), { inAxes: axis, outAxes: axis })(X);
        const b = grad((Z: Value) => np.sum(vmap(f1, { inAxes: axis })(Z)))(X);
        close(a, b, "vmap∘grad vs grad∘vmap");
        // And both equal the loop of grad over the examples.
        const ax = axis < 0 ? axis + 2 : axis;
        const loop = [...Array(batch).keys()].map((i) => {
          const xi = build([n], "float64", ([k]) => xs.data[ax === 0 ? i * n + k! : k! * batch + i]!);
          return h(grad(f1)(toLib(xi)));
        });
        assertClose(h(a), stack(loop, ax, [n], "float64"), TIGHT, "vmap∘grad vs loop of grad");
      }),
      fcParams(40),
    );
  });

  it("per-example gradients: vmap(grad(loss), inAxes [null, 0, 0]) == loop of grad(loss)", () => {
    fc.assert(
      fc.property(
        fc.record({ d: fc.integer({ min: 1, max: 4 }), k: fc.integer({ min: 1, max: 4 }), batch: fc.integer({ min: 0, max: 5 }), seed: seedArb }),
        ({ d, k, batch, seed }) => {
          const rng = new Rng(seed);
          const p = makeParams(d, k, rng);
          const xs = rand([batch, d], rng);
          const ys = rand([batch], rng);
          const g = vmap(grad(loss), { inAxes: [null, 0, 0] })(p, toLib(xs), toLib(ys)) as Params;
          for (const key of ["w", "b", "v"] as const) {
            const loop = [...Array(batch).keys()].map((i) => {
              const xi = build([d], "float64", ([j]) => xs.data[i * d + j!]!);
              const yi = build([], "float64", () => ys.data[i]!);
              return h((grad(loss)(p, toLib(xi), toLib(yi)) as Params)[key]);
            });
            assertClose(h(g[key]), stack(loop, 0, h(p[key]).shape, "float64"), TIGHT, `per-example grad of ${key}`);
          }
          // The gradient itself against finite differences, along a random direction of w.
          if (batch > 0) {
            const x0 = toLib(build([d], "float64", ([j]) => xs.data[j!]!));
            const y0 = toLib(build([], "float64", () => ys.data[0]!));
            const t = noise(h(p.w).shape, rng);
            const lw = (w: HostArray) => h(loss({ ...p, w: toLib(w) }, x0, y0)).data[0]!;
            const fd = (lw(axpy(h(p.w), EPS, t)) - lw(axpy(h(p.w), -EPS, t))) / (2 * EPS);
            const gw = h((grad(loss)(p, x0, y0) as Params).w);
            let dot = 0;
            gw.data.forEach((v, i) => (dot += v * t.data[i]!));
            expect(Math.abs(dot - fd)).toBeLessThan(1e-6 * (1 + Math.abs(fd)));
          }
        },
      ),
      fcParams(30),
    );
  });
});

describe("second order", () => {
  it("hessian is symmetric and equals jvp∘grad columns and finite differences of grad", () => {
    fc.assert(
      fc.property(dims, ({ n, seed }) => {
        const rng = new Rng(seed);
        const x = rand([n], rng);
        const H = h(hessian(f1)(toLib(x)));
        expect(H.shape).toEqual([n, n]);
        const Ht = build([n, n], "float64", ([i, j]) => H.data[j! * n + i!]!);
        assertClose(H, Ht, TIGHT, "hessian symmetry");
        // Column j of the Hessian: jvp of grad along e_j, and central differences of grad.
        const cols: HostArray[] = [];
        const fdCols: HostArray[] = [];
        for (let j = 0; j < n; j++) {
          const e = build([n], "float64", ([i]) => (i === j ? 1 : 0));
          cols.push(h((jvp(grad(f1), [toLib(x)], [toLib(e)]) as [Value, Value])[1]));
          fdCols.push(centralDiff(h(grad(f1)(toLib(axpy(x, EPS, e)))), h(grad(f1)(toLib(axpy(x, -EPS, e)))), EPS));
        }
        assertClose(H, stack(cols, 1, [n], "float64"), TIGHT, "hessian vs jvp(grad) columns");
        assertClose(H, stack(fdCols, 1, [n], "float64"), { rtol: 1e-5, atol: 1e-6 }, "hessian vs finite differences of grad");
      }),
      fcParams(25),
    );
  });

  it("jacfwd == jacrev, and both match vjp rows / jvp columns", () => {
    fc.assert(
      fc.property(dims, ({ n, seed }) => {
        const rng = new Rng(seed);
        const f = f2(toLib(rand([n, n], rng)));
        const x = toLib(rand([n], rng));
        const jf = h(jacfwd(f)(x));
        const jr = h(jacrev(f)(x));
        assertClose(jf, jr, TIGHT, "jacfwd vs jacrev");
        const [, vjpFn] = vjp(f, x);
        for (let i = 0; i < n; i++) {
          const e = toLib(build([n], "float64", ([k]) => (k === i ? 1 : 0)));
          const row = h(vjpFn(e)[0]);
          assertClose(row, build([n], "float64", ([k]) => jf.data[i * n + k!]!), TIGHT, `jacobian row ${i} vs vjp`);
        }
      }),
      fcParams(20),
    );
  });

  /** Σ c_k x^k and its derivatives by hand. */
  const polyDeriv = (coef: readonly number[], x0: number, order: number) =>
    coef.reduce((acc, c, k) => {
      if (k < order) return acc;
      let f = 1;
      for (let j = 0; j < order; j++) f *= k - j;
      return acc + c * f * Math.pow(x0, k - order);
    }, 0);

  function checkPoly(name: string, p: (x: Value) => Value, coef: readonly number[], x0: number): void {
    const x = np.array(x0, { dtype: "float64" });
    const got = [grad(p)(x), grad(grad(p))(x), grad(grad(grad(p)))(x)].map((v) => h(v).data[0]!);
    got.forEach((g, i) => {
      const want = polyDeriv(coef, x0, i + 1);
      if (!(Math.abs(g - want) <= 1e-9 * (1 + Math.abs(want)))) {
        throw new Error(`${name}: derivative ${i + 1} at ${x0} is ${g}, expected ${want} (coefficients ${JSON.stringify(coef)})`);
      }
    });
  }

  const coefArb = fc.array(fc.double({ min: -2, max: 2, noNaN: true }), { minLength: 1, maxLength: 6 });
  const pointArb = fc.oneof(fc.double({ min: -2, max: 2, noNaN: true }), fc.constantFrom(0, 1, -1));

  it("grad∘grad (and grad∘grad∘grad) of a polynomial in Horner form match the hand derivatives", () => {
    fc.assert(
      fc.property(coefArb, pointArb, (coef, x0) => {
        const p = (x: Value) => coef.reduceRight<Value>((acc, c) => np.add(np.multiply(acc, x), c), np.zerosLike(x));
        checkPoly("horner", p, coef, x0);
      }),
      fcParams(60),
    );
  });

  it("the same with np.power(x, k) for JS integers k (exact at x = 0, as JAX's integer_pow)", () => {
    fc.assert(
      fc.property(coefArb, pointArb, (coef, x0) => {
        const p = (x: Value) => coef.reduce<Value>((acc, c, k) => np.add(acc, np.multiply(c, np.power(x, k))), np.zerosLike(x));
        checkPoly("power", p, coef, x0);
      }),
      fcParams(60),
    );
  });
});

describe("jit commutes with grad and vmap", () => {
  it("jit(grad(f)) == grad(f) == grad(jit(f)) == jit(grad(jit(f)))", () => {
    fc.assert(
      fc.property(dims, ({ n, seed }) => {
        const x = toLib(rand([n], new Rng(seed)));
        const g = grad(f1)(x);
        close(jit(grad(f1))(x), g, "jit(grad(f))");
        close(grad(jit(f1))(x), g, "grad(jit(f))");
        close(jit(grad(jit(f1)))(x), g, "jit(grad(jit(f)))");
        close(grad(grad(jit(f1)))(np.array(0.3, { dtype: "float64" })), grad(grad(f1))(np.array(0.3, { dtype: "float64" })), "grad(grad(jit(f)))");
        const [v, gv] = valueAndGrad(jit(f1))(x);
        close(v, f1(x), "valueAndGrad(jit(f)) value");
        close(gv, g, "valueAndGrad(jit(f)) grad");
      }),
      fcParams(30),
    );
  });

  it("vmap(jit(f)) == jit(vmap(f)) == vmap(f)", () => {
    fc.assert(
      fc.property(dims, fc.integer({ min: 0, max: 4 }), ({ n, seed }, batch) => {
        const rng = new Rng(seed);
        const f = f2(toLib(rand([n, n], rng)));
        const X = toLib(rand([batch, n], rng));
        const want = vmap(f)(X);
        close(vmap(jit(f))(X), want, "vmap(jit(f))");
        close(jit(vmap(f))(X), want, "jit(vmap(f))");
        close(vmap(grad(jit(f1)))(X), vmap(grad(f1))(X), "vmap(grad(jit(f)))");
      }),
      fcParams(30),
    );
  });
});

describe("vmap of vmap", () => {
  it("vmap(vmap(f)) with random axes == double loop", () => {
    fc.assert(
      fc.property(
        fc.record({
          b1: fc.integer({ min: 0, max: 3 }),
          b2: fc.integer({ min: 0, max: 3 }),
          n: fc.integer({ min: 1, max: 3 }),
          oa: fc.integer({ min: -3, max: 2 }),
          ia: fc.integer({ min: -2, max: 1 }),
          oo: fc.integer({ min: -3, max: 2 }),
          io: fc.integer({ min: -2, max: 1 }),
          seed: seedArb,
        }),
        ({ b1, b2, n, oa, ia, oo, io, seed }) => {
          const rng = new Rng(seed);
          // f(x, y) = sin(x) · Σ y + x², per example: x [n], y [n] -> [n]
          const f = (x: Value, y: Value) => np.add(np.multiply(np.sin(x), np.sum(y)), np.square(x));
          const xs = [...Array(b1).keys()].map(() => [...Array(b2).keys()].map(() => rand([n], rng)));
          const ys = [...Array(b1).keys()].map(() => rand([n], rng));
          const norm = (a: number, r: number) => (a < 0 ? a + r : a);
          const X = stack(xs.map((row) => stack(row, norm(ia, 2), [n], "float64")), norm(oa, 3), norm(ia, 2) === 0 ? [b2, n] : [n, b2], "float64");
          const Y = stack(ys, 0, [n], "float64");
          const got = vmap(vmap(f, { inAxes: [ia, null], outAxes: io }), { inAxes: [oa, 0], outAxes: oo })(toLib(X), toLib(Y));
          const inner = (i: number) => stack(xs[i]!.map((x) => h(f(toLib(x), toLib(ys[i]!)))), norm(io, 2), [n], "float64");
          const want = stack([...Array(b1).keys()].map(inner), norm(oo, 3), norm(io, 2) === 0 ? [b2, n] : [n, b2], "float64");
          assertClose(h(got), want, TIGHT, `vmap∘vmap (inAxes ${oa}/${ia}, outAxes ${oo}/${io})`);
        },
      ),
      fcParams(40),
    );
  });
});

describe("linearize", () => {
  it("linearize(f, x) gives f(x) and the same tangents as jvp", () => {
    fc.assert(
      fc.property(dims, ({ n, seed }) => {
        const rng = new Rng(seed);
        const f = f2(toLib(rand([n, n], rng)));
        const x = toLib(rand([n], rng));
        const [y, fLin] = linearize(f, x);
        close(y, f(x), "linearize primal");
        for (let k = 0; k < 2; k++) {
          const t = toLib(noise([n], rng));
          close(fLin(t), (jvp(f, [x], [t]) as [Value, Value])[1], "linearize tangent vs jvp");
        }
      }),
      fcParams(30),
    );
  });
});

describe("customJvp, customVjp and checkpoint", () => {
  /** Σ sin(x)·eˣ and its hand derivative (cos x + sin x)·eˣ. */
  const base = (x: Value): Value => np.sum(np.multiply(np.sin(x), np.exp(x)));
  const dBase = (x: Value): Value => np.multiply(np.add(np.cos(x), np.sin(x)), np.exp(x));

  /** customJvp / customVjp whose rules return `scale` times the true derivative. */
  const withJvp = (scale: number) =>
    customJvp(base).defjvp(([x], [t]) => [base(x), np.multiply(scale, np.sum(np.multiply(dBase(x), t)))]);
  const withVjp = (scale: number) =>
    customVjp(base).defvjp(
      (x: Value) => [base(x), x],
      (x: Value, ct: Value) => [np.multiply(scale, np.multiply(ct, dBase(x)))],
    );
  const variants: [string, (x: Value) => Value][] = [
    ["customJvp", withJvp(1)],
    ["customVjp", withVjp(1)],
    ["checkpoint", checkpoint(base)],
  ];

  it("same values and gradients as the plain function (eager, jit, vmap) and the hand derivative", () => {
    fc.assert(
      fc.property(dims, fc.integer({ min: 0, max: 3 }), ({ n, seed }, batch) => {
        const rng = new Rng(seed);
        const x = toLib(rand([n], rng));
        const X = toLib(rand([batch, n], rng));
        close(grad(base)(x), dBase(x), "grad of the plain function vs hand derivative");
        for (const [name, g] of variants) {
          close(g(x), base(x), `${name} value`);
          close(grad(g)(x), dBase(x), `grad(${name})`);
          close(jit(grad(g))(x), dBase(x), `jit(grad(${name}))`);
          close(grad(jit(g))(x), dBase(x), `grad(jit(${name}))`);
          close(vmap(grad(g))(X), vmap(dBase)(X), `vmap(grad(${name}))`);
          close(vmap(g)(X), vmap(base)(X), `vmap(${name})`);
        }
      }),
      fcParams(25),
    );
  });

  it("jvp through customJvp and checkpoint equals jvp of the plain function", () => {
    fc.assert(
      fc.property(dims, ({ n, seed }) => {
        const rng = new Rng(seed);
        const x = toLib(rand([n], rng));
        const t = toLib(noise([n], rng));
        const want = (jvp(base, [x], [t]) as [Value, Value])[1];
        close((jvp(withJvp(1), [x], [t]) as [Value, Value])[1], want, "jvp(customJvp)");
        close((jvp(checkpoint(base), [x], [t]) as [Value, Value])[1], want, "jvp(checkpoint)");
        close((jvp(jit(checkpoint(base)), [x], [t]) as [Value, Value])[1], want, "jvp(jit(checkpoint))");
      }),
      fcParams(25),
    );
  });

  it("second order through customJvp, customVjp and checkpoint (hessian-vector products)", () => {
    fc.assert(
      fc.property(dims, ({ n, seed }) => {
        const rng = new Rng(seed);
        const x = toLib(rand([n], rng));
        const t = toLib(noise([n], rng));
        const want = (jvp(grad(base), [x], [t]) as [Value, Value])[1];
        for (const [name, g] of variants) {
          close((jvp(grad(g), [x], [t]) as [Value, Value])[1], want, `jvp(grad(${name}))`);
          // Reverse-over-reverse: grad of <grad g, t>.
          const rr = grad((y: Value) => np.sum(np.multiply(grad(g)(y), t)))(x);
          close(rr, want, `grad(grad(${name}))·t`);
        }
      }),
      fcParams(15),
    );
  });

  it("the custom rules are the ones used (a rule giving 3× the derivative gives 3× the gradient)", () => {
    const x = np.array([0.1, -0.7, 1.2], { dtype: "float64" });
    const three = np.multiply(3, dBase(x));
    close(grad(withJvp(3))(x), three, "grad(customJvp with 3× rule)");
    close((jvp(withJvp(3), [x], [np.onesLike(x)]) as [Value, Value])[1], np.sum(three), "jvp(customJvp with 3× rule)");
    close(grad(withVjp(3))(x), three, "grad(customVjp with 3× bwd)");
    close(vmap(grad(withVjp(3)))(np.stack([x, x])), np.stack([three, three]), "vmap(grad(customVjp with 3× bwd))");
    close(jit(grad(withVjp(3)))(x), three, "jit(grad(customVjp with 3× bwd))");
  });
});

describe("stopGradient", () => {
  it("d/dx Σ x·sg(x) = sg(x) = x, d/dx Σ sg(x)² = 0, under jit and vmap too", () => {
    fc.assert(
      fc.property(dims, ({ n, seed }) => {
        const x = toLib(rand([n], new Rng(seed)));
        const f = (y: Value) => np.sum(np.multiply(y, stopGradient(y)));
        close(grad(f)(x), x, "grad of x·sg(x)");
        close(jit(grad(f))(x), x, "jit(grad(x·sg(x)))");
        close(vmap(grad(f))(np.stack([x, x])), np.stack([x, x]), "vmap(grad(x·sg(x)))");
        close(grad((y: Value) => np.sum(np.square(stopGradient(y))))(x), np.zerosLike(x), "grad of sg(x)²");
        close(stopGradient(x), x, "stopGradient value");
        close(grad(grad((y: Value) => np.sum(np.multiply(np.square(y), stopGradient(y)))))(np.array(0.7, { dtype: "float64" })), np.array(1.4, { dtype: "float64" }), "second derivative of x²·sg(x) is 2·sg(x)");
      }),
      fcParams(20),
    );
  });
});

describe("ties in max (JAX's rule: the derivative is shared equally)", () => {
  it("grad of max / maximum at ties", () => {
    const x = np.array([1, 3, 3, -2], { dtype: "float64" });
    close(grad((y: Value) => np.max(y))(x), np.array([0, 0.5, 0.5, 0], { dtype: "float64" }), "grad(max) with a tie");
    const a = np.array(2, { dtype: "float64" });
    const [ga, gb] = grad((u: Value, v: Value) => np.maximum(u, v), { argnums: [0, 1] })(a, a) as Value[];
    close(ga, np.array(0.5, { dtype: "float64" }), "d maximum(a, a) / da");
    close(gb, np.array(0.5, { dtype: "float64" }), "d maximum(a, a) / db");
    close(grad((y: Value) => np.min(y))(np.array([4, 4, 4, 5], { dtype: "float64" })), np.array([1 / 3, 1 / 3, 1 / 3, 0], { dtype: "float64" }), "grad(min) with a three-way tie");
  });
});

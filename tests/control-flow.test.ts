/**
 * @file Control flow (scan, whileLoop, cond, switch, fori): values against plain JS loops over JS
 * numbers, derivatives against central finite differences in float64 and against the derivative of the
 * unrolled loop, batching against per-example loops, and the error cases.
 */
import { describe, expect, it } from "vitest";
import "../src/index.js";
import {
  ArgumentError,
  BackendError,
  checkpoint,
  DTypeError,
  grad,
  jit,
  jvp,
  linearize,
  makeJaxpr,
  memoryStats,
  np,
  ShapeError,
  TreeMismatchError,
  valueAndGrad,
  vjp,
  vmap,
  Array as WArray,
} from "../src/index.js";
import type { Value } from "../src/index.js";
import { cond, fori, scan, switchCase, whileLoop } from "../src/ops/control-flow.js";

const f64 = (x: any) => np.array(x, { dtype: "float64" });
const arr = (v: unknown) => (v as WArray).toArraySync();
const flat = (v: unknown): number[] => {
  const a = arr(v);
  return Array.isArray(a) ? ((a as any[]).flat(Infinity) as number[]) : [a as number];
};
const num = (v: unknown) => Number((v as WArray).itemSync());
function close(a: unknown, b: number | readonly unknown[], tol = 1e-9): void {
  const g = flat(a);
  const e: number[] = Array.isArray(b) ? ((b as any[]).flat(Infinity) as number[]) : [b as number];
  expect(g.length).toBe(e.length);
  g.forEach((x, i) => {
    if (Math.abs(x - e[i]!) > tol * Math.max(1, Math.abs(e[i]!))) {
      throw new Error(`element ${i}: got ${x}, want ${e[i]} (tol ${tol})\n got  ${g}\n want ${e}`);
    }
  });
}

/** Central finite difference of a scalar function of one float64 array, per element. */
function fdGrad(f: (x: Value) => Value, x: number[], h = 1e-6): number[] {
  return x.map((_, i) => {
    const xp = [...x];
    const xm = [...x];
    xp[i]! += h;
    xm[i]! -= h;
    return (num(f(f64(xp))) - num(f(f64(xm)))) / (2 * h);
  });
}

// A small RNN: h' = tanh(W h + U x), loss = sum of hidden states. Reference in plain JS numbers.
const W = [
  [0.5, -0.3, 0.2],
  [0.1, 0.4, -0.6],
  [-0.2, 0.3, 0.1],
];
const U = [
  [1.0, -0.5],
  [0.3, 0.8],
  [-0.7, 0.2],
];
const XS = [
  [0.5, -1.0],
  [1.5, 0.25],
  [-0.75, 0.6],
  [0.1, -0.2],
];
const H0 = [0.1, -0.2, 0.3];
const matvec = (m: number[][], v: number[]) => m.map((r) => r.reduce((s, x, j) => s + x * v[j]!, 0));
function rnnJs(w: number[][], h0: number[], xs: number[][], reverse = false): { h: number[]; hs: number[][] } {
  let h = h0;
  const hs: number[][] = new Array(xs.length);
  for (let t = 0; t < xs.length; t++) {
    const i = reverse ? xs.length - 1 - t : t;
    const wh = matvec(w, h);
    const ux = matvec(U, xs[i]!);
    h = wh.map((v, k) => Math.tanh(v + ux[k]!));
    hs[i] = h;
  }
  return { h, hs };
}
const rnnStep = (w: Value) => (h: Value, x: Value) => {
  const n = np.tanh(np.add(np.matmul(w, h), np.matmul(f64(U), x)));
  return [n, n] as [Value, Value];
};
const rnnLoss = (w: Value) => {
  const [, hs] = scan(rnnStep(w), f64(H0), f64(XS));
  return np.sum(np.square(hs));
};
const rnnLossUnrolled = (w: Value) => {
  let h: Value = f64(H0);
  let s: Value = f64(0);
  for (const x of XS) {
    h = rnnStep(w)(h, f64(x))[0];
    s = np.add(s, np.sum(np.square(h)));
  }
  return s;
};

describe("scan: values", () => {
  it("computes cumulative sums like a JS loop, forward and reverse", () => {
    const xs = [3, -1, 4, 1, -5, 9];
    const step = (c: Value, x: Value) => {
      const n = np.add(c, x);
      return [n, n] as [Value, Value];
    };
    const [c, ys] = scan(step, f64(0), f64(xs));
    let acc = 0;
    const want = xs.map((x) => (acc += x));
    close(c, 11);
    close(ys, want);
    const [cr, ysr] = scan(step, f64(0), f64(xs), { reverse: true });
    acc = 0;
    const wantR = [...xs].reverse().map((x) => (acc += x)).reverse();
    close(cr, 11);
    close(ysr, wantR);
  });

  it("runs an RNN-style tanh recurrence with a matmul, forward and reverse", () => {
    for (const reverse of [false, true]) {
      const [h, hs] = scan(rnnStep(f64(W)), f64(H0), f64(XS), { reverse });
      const ref = rnnJs(W, H0, XS, reverse);
      close(h, ref.h, 1e-12);
      expect((hs as WArray).shape).toEqual([4, 3]);
      close(hs, ref.hs, 1e-12);
    }
  });

  it("carries pytrees and stacks pytree ys on a new leading axis", () => {
    const init: { sum: Value; prod: Value; hist: Value[] } = { sum: f64(0), prod: f64(1), hist: [f64([0, 0])] };
    const xs = { a: f64([1, 2, 3]), b: f64([[1, 0], [0, 2], [3, 3]]) };
    const [c, ys] = scan(
      (c: typeof init, x: { a: Value; b: Value }) => {
        const next = { sum: np.add(c.sum, x.a), prod: np.multiply(c.prod, x.a), hist: [np.add(c.hist[0]!, x.b)] };
        return [next, { s: next.sum, twice: [np.multiply(x.b, 2)] }] as const;
      },
      init,
      xs,
    );
    close(c.sum, 6);
    close(c.prod, 6);
    close(c.hist[0], [4, 5]);
    close(ys.s, [1, 3, 6]);
    expect((ys.twice[0] as WArray).shape).toEqual([3, 2]);
    close(ys.twice[0], [2, 0, 0, 4, 6, 6]);
  });

  it("runs `length` steps when xs is null, and passes null as x", () => {
    let seen: unknown = "unset";
    const [c, ys] = scan(
      (c: Value, x: unknown) => {
        seen = x;
        return [np.multiply(c, 2), c] as [Value, Value];
      },
      f64(1),
      null,
      { length: 5 },
    );
    expect(seen).toBeNull();
    close(c, 32);
    close(ys, [1, 2, 4, 8, 16]);
    const [c0, ys0] = scan((c: Value) => [c, c] as [Value, Value], f64(7), null, { length: 0 });
    close(c0, 7);
    expect((ys0 as WArray).shape).toEqual([0]);
  });

  it("promotes weakly typed carries: JS numbers in the carry take the init leaf's dtype", () => {
    const [c] = scan((c: Value, x: Value) => [np.add(c, 1), x] as [Value, Value], np.array(0, { dtype: "int32" }), null, { length: 3 });
    expect((c as WArray).dtype).toBe("int32");
    close(c, 3);
    // init given as a JS number (weak float32) meets a float64 body: the init is promoted.
    const [c2] = scan((c: Value, x: Value) => [np.add(c, x), null] as [Value, null], 0 as unknown as Value, f64([0.5, 0.25]));
    expect((c2 as WArray).dtype).toBe("float64");
    close(c2, 0.75);
  });

  it("nests: a scan inside a scan body (a matrix of partial sums)", () => {
    const xs = [
      [1, 2, 3],
      [4, 5, 6],
    ];
    const [tot, rows] = scan(
      (c: Value, row: Value) => {
        const [s, cum] = scan((a: Value, x: Value) => [np.add(a, x), np.add(a, x)] as [Value, Value], f64(0), row);
        return [np.add(c, s), cum] as [Value, Value];
      },
      f64(0),
      f64(xs),
    );
    close(tot, 21);
    close(rows, [1, 3, 6, 4, 9, 15]);
  });

  it("prints as a scan equation with its body, and jit traces the body once", () => {
    const j = makeJaxpr((w: Value) => scan(rnnStep(w), f64(H0), f64(XS))[0])(f64(W));
    const s = String(j);
    expect(s).toContain("scan[jaxpr={ lambda");
    expect(s).toContain("length=4");
    expect(s).toContain("num_carry=1");
    expect(s).toContain("tanh");
    let traces = 0;
    const f = jit((w: Value) => {
      const [h] = scan(
        (h: Value, x: Value) => {
          traces++;
          return rnnStep(w)(h, x);
        },
        f64(H0),
        f64(XS),
      );
      return h;
    });
    close(f(f64(W)), rnnJs(W, H0, XS).h, 1e-12);
    close(f(f64(W)), rnnJs(W, H0, XS).h, 1e-12);
    const w2 = W.map((r) => r.map((x) => x * 0.5));
    close(f(f64(w2)), rnnJs(w2, H0, XS).h, 1e-12);
    expect(traces).toBe(1);
  });
});

describe("scan: eager memory", () => {
  it("frees each step's intermediates and dead carries: live arrays do not grow with the length", () => {
    const live = (n: number) => {
      const x0 = np.zeros([50], { dtype: "float64" });
      const xs = np.ones([n, 50], { dtype: "float64" });
      const before = memoryStats().liveArrays;
      const [c, ys] = scan((c: Value, x: Value) => [np.add(np.multiply(c, 0.5), x), np.sum(c)] as [Value, Value], x0, xs);
      const delta = memoryStats().liveArrays - before;
      close(np.sum(c), 50 * (2 - 2 ** (1 - n)), 1e-12);
      expect((ys as WArray).shape).toEqual([n]);
      const lim = np.array(n, { dtype: "int32" });
      const b2 = memoryStats().liveArrays;
      whileLoop(([i]: [Value, Value]) => np.less(i, lim), ([i, v]: [Value, Value]) => [np.add(i, 1), np.add(v, 1)] as [Value, Value], [
        np.array(0, { dtype: "int32" }),
        x0,
      ] as [Value, Value]);
      return [delta, memoryStats().liveArrays - b2];
    };
    live(5); // warm-up: lazily created library constants
    expect(live(200)).toEqual(live(20));
  });
});

describe("scan: derivatives", () => {
  const w0 = W.flat();
  const lossFlat = (f: (w: Value) => Value) => (w: Value) => f(np.reshape(w, [3, 3]));

  it("grad of an RNN loss matches central finite differences and the unrolled loop (float64)", () => {
    const g = grad(rnnLoss)(f64(W));
    close(g, fdGrad(lossFlat(rnnLoss), w0), 1e-7);
    close(g, flat(grad(rnnLossUnrolled)(f64(W))), 1e-12);
    const [v] = valueAndGrad(rnnLoss)(f64(W));
    close(v, num(rnnLossUnrolled(f64(W))), 1e-12);
  });

  it("differentiates with respect to init, xs and closed-over values, in reverse scans too", () => {
    for (const reverse of [false, true]) {
      const f = (h0: Value, xs: Value, w: Value) => {
        const [h, hs] = scan(rnnStep(w), h0, xs, { reverse });
        return np.add(np.sum(np.multiply(h, f64([1, 2, 3]))), np.sum(np.sin(hs)));
      };
      const [gh, gx, gw] = grad(f, { argnums: [0, 1, 2] })(f64(H0), f64(XS), f64(W));
      close(gh, fdGrad((h) => f(h, f64(XS), f64(W)), H0), 1e-7);
      close(gx, fdGrad((x) => f(f64(H0), np.reshape(x, [4, 2]), f64(W)), XS.flat()), 1e-7);
      close(gw, fdGrad((w) => f(f64(H0), f64(XS), np.reshape(w, [3, 3])), W.flat()), 1e-7);
    }
  });

  it("jit(grad(scan)) and grad(jit(scan)) equal grad(scan)", () => {
    const want = flat(grad(rnnLossUnrolled)(f64(W)));
    close(jit(grad(rnnLoss))(f64(W)), want, 1e-12);
    close(grad(jit(rnnLoss))(f64(W)), want, 1e-12);
  });

  it("jvp and linearize of scan match finite differences", () => {
    const t = [0.3, -0.1, 0.2, 0.5, 0.1, -0.4, 0.2, 0.2, -0.3];
    const h = 1e-6;
    const wp = W.flat().map((x, i) => x + h * t[i]!);
    const wm = W.flat().map((x, i) => x - h * t[i]!);
    const fd = (num(rnnLoss(np.reshape(f64(wp), [3, 3]))) - num(rnnLoss(np.reshape(f64(wm), [3, 3])))) / (2 * h);
    const [y, yDot] = jvp(rnnLoss, [f64(W)], [np.reshape(f64(t), [3, 3])]);
    close(y, num(rnnLossUnrolled(f64(W))), 1e-12);
    close(yDot, fd, 1e-7);
    const [, fLin] = linearize(rnnLoss, f64(W));
    close(fLin(np.reshape(f64(t), [3, 3])), fd, 1e-7);
  });

  it("second order: grad(grad(scan)) matches finite differences of the first derivative", () => {
    // f(a) = c_final with c' = sin(a c + x): a scalar parameter in a nonlinear recurrence.
    const xs = [0.3, -0.2, 0.5, 0.1];
    const f = (a: Value) => scan((c: Value, x: Value) => [np.sin(np.add(np.multiply(a, c), x)), null] as [Value, null], f64(0.7), f64(xs))[0];
    const g = grad(f);
    const h = 1e-5;
    for (const a of [0.4, 1.3]) {
      const fd2 = (num(g(f64(a + h))) - num(g(f64(a - h)))) / (2 * h);
      close(grad(g)(f64(a)), fd2, 1e-7);
      const fd1 = (num(f(f64(a + 1e-6))) - num(f(f64(a - 1e-6)))) / 2e-6;
      close(g(f64(a)), fd1, 1e-7);
    }
    // Third order through jvp of grad of grad, against finite differences of the second derivative.
    const gg = grad(g);
    const [, d3] = jvp(gg, [f64(0.9)], [f64(1)]);
    close(d3, (num(gg(f64(0.9 + h))) - num(gg(f64(0.9 - h)))) / (2 * h), 1e-6);
  });

  it("vmap(grad(scan)) equals a loop of grad", () => {
    const ws = [W, W.map((r) => r.map((x) => -x)), W.map((r) => r.map((x) => 0.5 * x + 0.1))];
    const batched = vmap(grad(rnnLoss))(f64(ws));
    const want = ws.flatMap((w) => flat(grad(rnnLossUnrolled)(f64(w))));
    close(batched, want, 1e-12);
  });

  it("vmap of scan: batched xs, and an unbatched carry that the body makes batched", () => {
    const xsB = [
      [1, 2, 3],
      [10, 20, 30],
    ];
    const [c, ys] = vmap((xs: Value) => scan((c: Value, x: Value) => [np.add(c, x), np.multiply(c, x)] as [Value, Value], f64(1), xs))(f64(xsB));
    close(c, [7, 61]);
    // ys[b][i] = c_before_i * x_i
    close(ys, [1 * 1, 2 * 2, 4 * 3, 1 * 10, 11 * 20, 31 * 30]);
    // in_axes over axis 1 of xs and a batched closed-over scale
    const scaled = vmap(
      (s: Value, xs: Value) => scan((c: Value, x: Value) => [np.add(np.multiply(c, s), x), null] as [Value, null], f64(0), xs)[0],
      { inAxes: [0, 1] },
    )(f64([2, 3]), f64([[1, 1], [2, 2]]));
    // c = (0*s + 1)*s + 2 = s + 2
    close(scaled, [4, 5]);
  });

  it("differentiates nested scans and a cond inside a scan", () => {
    const f = (a: Value) =>
      scan(
        (c: Value, row: Value) => {
          const [s] = scan((acc: Value, x: Value) => [np.add(np.multiply(acc, a), np.sin(x)), null] as [Value, null], c, row);
          const picked = cond(np.greater(s, 0), (v: Value) => np.multiply(v, v), (v: Value) => np.multiply(v, -3), s);
          return [picked, null] as [Value, null];
        },
        f64(0.5),
        f64([
          [0.1, 0.7],
          [-0.4, 0.2],
          [0.9, -0.8],
        ]),
      )[0];
    const unrolled = (a: number) => {
      let c = 0.5;
      for (const row of [
        [0.1, 0.7],
        [-0.4, 0.2],
        [0.9, -0.8],
      ]) {
        let s = c;
        for (const x of row) s = s * a + Math.sin(x);
        c = s > 0 ? s * s : -3 * s;
      }
      return c;
    };
    close(f(f64(0.8)), unrolled(0.8), 1e-12);
    const h = 1e-6;
    close(grad(f)(f64(0.8)), (unrolled(0.8 + h) - unrolled(0.8 - h)) / (2 * h), 1e-7);
    close(jit(grad(f))(f64(1.1)), (unrolled(1.1 + h) - unrolled(1.1 - h)) / (2 * h), 1e-7);
  });

  it("composes: grad(vmap(scan)), jvp(vmap(scan)), vmap(jvp(scan)) agree with per-example derivatives", () => {
    const ws = [W, W.map((r) => r.map((x) => 0.7 * x - 0.05))];
    const want = ws.map((w) => flat(grad(rnnLossUnrolled)(f64(w))));
    close(grad((b: Value) => np.sum(vmap(rnnLoss)(b)))(f64(ws)), want.flat(), 1e-12);
    const t = np.reshape(f64(ws.map((_, k) => W.flat().map((_, i) => ((i + k) % 3) - 1))), [2, 3, 3]);
    const tl = flat(t);
    const wantDot = want.map((g, k) => g.reduce((s, gi, i) => s + gi * tl[9 * k + i]!, 0));
    close(jvp(vmap(rnnLoss), [f64(ws)], [t])[1], wantDot, 1e-12);
    close(vmap((w: Value, tw: Value) => jvp(rnnLoss, [w], [tw])[1])(f64(ws), t), wantDot, 1e-12);
  });

  it("differentiates bodies that call jit, checkpoint and an independent whileLoop", () => {
    const xs = [0.3, -0.2, 0.5];
    const ref = (a: number) => xs.reduce((c, x) => Math.sin(a * c + x) + 3, 0.7);
    const dref = (a: number) => (ref(a + 1e-6) - ref(a - 1e-6)) / 2e-6;
    const three = () => np.astype(whileLoop((i: Value) => np.less(i, 3), (i: Value) => np.add(i, 1), np.array(0, { dtype: "int32" })), "float64");
    for (const wrap of [jit, checkpoint, (g: any) => g]) {
      const f = (a: Value) =>
        scan(wrap((c: Value, x: Value) => [np.add(np.sin(np.add(np.multiply(a, c), x)), three()), null]) as any, f64(0.7), f64(xs))[0] as Value;
      close(f(f64(0.4)), ref(0.4), 1e-12);
      close(grad(f)(f64(0.4)), dref(0.4), 1e-7);
    }
  });

  it("integer carries ride along untouched under grad (a step counter)", () => {
    const f = (a: Value) => {
      const [[n, v]] = scan(
        ([n, v]: [Value, Value], x: Value) => [[np.add(n, 1), np.multiply(v, np.add(a, x))], null] as [[Value, Value], null],
        [np.array(0, { dtype: "int32" }), f64(1)] as [Value, Value],
        f64([1, 2]),
      );
      expect(n.dtype).toBe("int32");
      return v;
    };
    // v = (a+1)(a+2); dv/da = 2a + 3
    close(grad(f)(f64(0.5)), 4);
  });
});

describe("fori", () => {
  it("with static bounds is a scan: values and reverse-mode derivatives", () => {
    // x_{k+1} = x_k * a + i for i in [2, 5)
    const f = (a: Value) => fori(2, 5, (i: Value, x: Value) => np.add(np.multiply(x, a), np.astype(i, "float64")), f64(1));
    const ref = (a: number) => {
      let x = 1;
      for (let i = 2; i < 5; i++) x = x * a + i;
      return x;
    };
    close(f(f64(1.5)), ref(1.5), 1e-12);
    // x = a^3 + 2a^2 + 3a + 4 -> dx/da = 3a^2 + 4a + 3
    close(grad(f)(f64(1.5)), 3 * 2.25 + 6 + 3, 1e-12);
    close(f(f64(2)), 1 * 8 + 2 * 4 + 3 * 2 + 4, 1e-12);
    expect(String(makeJaxpr(f)(f64(1.5)))).toContain("scan[");
    close(fori(3, 3, (_i: Value, x: Value) => np.add(x, 1), f64(7)), 7);
  });

  it("with array bounds is a whileLoop (forward mode works, reverse mode errors)", () => {
    const f = (a: Value, n: Value) => fori(0, n, (_i: Value, x: Value) => np.multiply(x, a), f64(1));
    const n = np.array(4, { dtype: "int32" });
    close(f(f64(1.5), n), 1.5 ** 4, 1e-12);
    expect(String(makeJaxpr(f)(f64(1.5), n))).toContain("while[");
    const [, t] = jvp((a: Value) => f(a, n), [f64(1.5)], [f64(1)]);
    close(t, 4 * 1.5 ** 3, 1e-12);
    expect(() => grad((a: Value) => f(a, n))(f64(1.5))).toThrow(/whileLoop.*reverse-mode/s);
  });
});

describe("cond and switch", () => {
  const tf = (x: Value) => np.multiply(np.sin(x), 3); // d/dx = 3 cos x
  const ff = (x: Value) => np.multiply(x, x); // d/dx = 2x

  it("takes either branch and differentiates through the one taken", () => {
    const f = (p: unknown, x: Value) => cond(p, tf, ff, x);
    close(f(true, f64(0.5)), 3 * Math.sin(0.5), 1e-12);
    close(f(false, f64(0.5)), 0.25, 1e-12);
    close(f(np.array(2), f64(0.5)), 3 * Math.sin(0.5), 1e-12); // numbers: non-zero is true
    close(f(0, f64(0.5)), 0.25, 1e-12);
    close(grad((x: Value) => f(true, x))(f64(0.5)), 3 * Math.cos(0.5), 1e-12);
    close(grad((x: Value) => f(false, x))(f64(0.5)), 1, 1e-12);
    // pred computed from the differentiated value: |x| via cond
    const absv = (x: Value) => cond(np.greater(x, 0), (v: Value) => v, (v: Value) => np.negative(v), x);
    close(grad(absv)(f64(-2)), -1);
    close(grad(absv)(f64(3)), 1);
    const [, t] = jvp((x: Value) => f(false, x), [f64(0.5)], [f64(2)]);
    close(t, 2);
  });

  it("passes pytree operands, closes over values, and a branch may ignore its input", () => {
    const k = f64(10);
    const g = (p: boolean) =>
      grad((a: Value) =>
        cond(
          p,
          (o: { a: Value; b: Value }) => np.add(np.multiply(o.a, o.b), k),
          (_o: { a: Value; b: Value }) => np.multiply(k, 2),
          { a, b: f64(4) },
        ),
      )(f64(3));
    close(g(true), 4);
    close(g(false), 0);
  });

  it("switch picks by index, clamping out-of-range indices", () => {
    const branches = [(x: Value) => np.add(x, 1), (x: Value) => np.multiply(x, 10), (x: Value) => np.square(x)];
    close(switchCase(0, branches, f64(3)), 4);
    close(switchCase(1, branches, f64(3)), 30);
    close(switchCase(np.array(2, { dtype: "int32" }), branches, f64(3)), 9);
    close(switchCase(7, branches, f64(3)), 9);
    close(switchCase(-4, branches, f64(3)), 4);
    const jf = jit((i: Value, x: Value) => switchCase(i, branches, x));
    close(jf(np.array(5, { dtype: "int32" }), f64(3)), 9);
    close(jf(np.array(-1, { dtype: "int32" }), f64(3)), 4);
    close(grad((x: Value) => switchCase(2, branches, x))(f64(3)), 6);
    close(grad((x: Value) => switchCase(1, branches, x))(f64(3)), 10);
  });

  it("vmap with a batched predicate equals a per-example loop", () => {
    const f = (p: Value, x: Value) => cond(p, tf, ff, x);
    const ps = [true, false, false, true];
    const xs = [0.5, -1.5, 2, 3];
    const want = xs.map((x, i) => (ps[i] ? 3 * Math.sin(x) : x * x));
    close(vmap(f)(np.array(ps), f64(xs)), want, 1e-12);
    // batched predicate, unbatched operand
    close(vmap(f, { inAxes: [0, null] })(np.array(ps), f64(0.5)), ps.map((p) => (p ? 3 * Math.sin(0.5) : 0.25)), 1e-12);
    // grad under vmap with a batched predicate
    const gs = vmap(grad((x: Value, p: Value) => f(p, x)))(f64(xs), np.array(ps));
    close(gs, xs.map((x, i) => (ps[i] ? 3 * Math.cos(x) : 2 * x)), 1e-12);
    // batched switch index
    const branches = [(x: Value) => np.add(x, 1), (x: Value) => np.multiply(x, 10), (x: Value) => np.square(x)];
    const idx = np.array([2, 0, 1, 9], { dtype: "int32" });
    close(vmap((i: Value, x: Value) => switchCase(i, branches, x))(idx, f64(xs)), [0.25, -0.5, 20, 9], 1e-12);
    // unbatched predicate, batched operand
    close(vmap((x: Value) => cond(true, tf, ff, x))(f64(xs)), xs.map((x) => 3 * Math.sin(x)), 1e-12);
  });

  it("works under jit, and jit(grad(cond)) matches the hand derivative", () => {
    const f = jit((p: Value, x: Value) => cond(p, tf, ff, x));
    close(f(np.array(true), f64(0.5)), 3 * Math.sin(0.5), 1e-12);
    close(f(np.array(false), f64(0.5)), 0.25, 1e-12);
    const g = jit(grad((x: Value, p: Value) => cond(p, tf, ff, x)));
    close(g(f64(0.5), np.array(true)), 3 * Math.cos(0.5), 1e-12);
    close(g(f64(0.5), np.array(false)), 1, 1e-12);
    const s = String(makeJaxpr((p: Value, x: Value) => cond(p, tf, ff, x))(np.array(true), f64(0.5)));
    expect(s).toContain("cond[branches=(");
  });

  it("second order through cond", () => {
    const f = (x: Value) => cond(np.greater(x, 0), (v: Value) => np.multiply(np.sin(v), v), (v: Value) => np.power(v, 3), x);
    // x>0: (x sin x)'' = 2cos x - x sin x ; x<0: (x^3)'' = 6x
    close(grad(grad(f))(f64(0.7)), 2 * Math.cos(0.7) - 0.7 * Math.sin(0.7), 1e-10);
    close(grad(grad(f))(f64(-0.7)), -4.2, 1e-10);
  });

  it("rejects non-scalar predicates and branches that disagree", () => {
    expect(() => cond(np.array([true, false]), tf, ff, f64(1))).toThrow(ShapeError);
    expect(() => cond(np.array([true, false]), tf, ff, f64(1))).toThrow(/pred must be a scalar, got bool\[2\]/);
    expect(() => switchCase(f64(1), [tf, ff], f64(1))).toThrow(DTypeError);
    expect(() => cond(true, (x: Value) => [x, x], (x: Value) => x, f64(1))).toThrow(TreeMismatchError);
    expect(() => cond(true, (x: Value) => np.stack([x, x]), (x: Value) => x, f64(1))).toThrow(ShapeError);
    expect(() => cond(true, (x: Value) => np.stack([x, x]), (x: Value) => x, f64(1))).toThrow(/trueFn returns output of shape f64\[2\], but falseFn returns f64\[\]/);
    expect(() => cond(true, (x: Value) => x, (x: Value) => np.astype(x, "float32"), f64(1))).toThrow(DTypeError);
    // a JS number in one branch takes the other branch's dtype
    const out = cond(false, (x: Value) => x, () => 2, f64(1));
    expect((out as WArray).dtype).toBe("float64");
    close(out, 2);
  });
});

describe("whileLoop", () => {
  it("runs Newton iterations for sqrt(2) and counts steps like a JS loop", () => {
    type C = { x: Value; n: Value };
    const newton = (a: Value) =>
      whileLoop(
        (c: C) => np.greater(np.abs(np.subtract(np.multiply(c.x, c.x), a)), 1e-12),
        (c: C) => ({ x: np.multiply(0.5, np.add(c.x, np.divide(a, c.x))), n: np.add(c.n, 1) }),
        { x: f64(1), n: np.array(0, { dtype: "int32" }) } as C,
      );
    let x = 1;
    let n = 0;
    while (Math.abs(x * x - 2) > 1e-12) {
      x = 0.5 * (x + 2 / x);
      n++;
    }
    const r = newton(f64(2));
    close(r.x, Math.SQRT2, 1e-15);
    expect(num(r.n)).toBe(n);
    expect((r.n as WArray).dtype).toBe("int32");
    // zero iterations when the predicate starts false
    const z = whileLoop((i: Value) => np.less(i, 0), (i: Value) => np.add(i, 1), np.array(5, { dtype: "int32" }));
    expect(num(z)).toBe(5);
  });

  it("jvp matches finite differences (the trip count is locally constant)", () => {
    // x <- x * a while x < 100, from x = 1.3: x_final = 1.3 a^k
    const f = (a: Value) => whileLoop((x: Value) => np.less(x, 100), (x: Value) => np.multiply(x, a), f64(1.3));
    const a = 1.7;
    const [y, t] = jvp(f, [f64(a)], [f64(1)]);
    let k = 0;
    let xv = 1.3;
    while (xv < 100) {
      xv *= a;
      k++;
    }
    close(y, xv, 1e-12);
    const h = 1e-7;
    close(t, (num(f(f64(a + h))) - num(f(f64(a - h)))) / (2 * h), 1e-6);
    close(t, 1.3 * k * a ** (k - 1), 1e-12);
    // jit(jvp) and linearize agree
    close(jit((v: Value) => jvp(f, [v], [f64(1)])[1])(f64(a)), 1.3 * k * a ** (k - 1), 1e-12);
    const [, fl] = linearize(f, f64(a));
    close(fl(f64(2)), 2 * 1.3 * k * a ** (k - 1), 1e-12);
  });

  it("vmap with per-lane trip counts keeps finished lanes fixed", () => {
    // Collatz steps to reach 1, per lane.
    const collatz = (n0: Value) =>
      whileLoop(
        ([n]: [Value, Value]) => np.greater(n, 1),
        ([n, k]: [Value, Value]) => [np.where(np.equal(np.remainder(n, 2), 0), np.floorDivide(n, 2), np.add(np.multiply(n, 3), 1)), np.add(k, 1)] as [Value, Value],
        [n0, np.array(0, { dtype: "int32" })] as [Value, Value],
      );
    const starts = [1, 6, 7, 27, 2];
    const steps = starts.map((s) => {
      let n = s;
      let k = 0;
      while (n > 1) {
        n = n % 2 === 0 ? n / 2 : 3 * n + 1;
        k++;
      }
      return k;
    });
    const [ns, ks] = vmap(collatz)(np.array(starts, { dtype: "int32" }));
    expect(flat(ns)).toEqual(starts.map(() => 1));
    expect(flat(ks)).toEqual(steps);
    // per-lane stopping with a float carry, and jvp under vmap
    const f = (a: Value) => whileLoop((x: Value) => np.less(x, 10), (x: Value) => np.multiply(x, a), f64(1));
    const as = [1.5, 3, 11];
    const want = as.map((a) => {
      let x = 1;
      while (x < 10) x *= a;
      return x;
    });
    close(vmap(f)(f64(as)), want, 1e-12);
    // an unbatched predicate (a shared counter) with a batched carry
    const pow3 = vmap((a: Value) =>
      whileLoop(
        ([i]: [Value, Value]) => np.less(i, 3),
        ([i, x]: [Value, Value]) => [np.add(i, 1), np.multiply(x, a)] as [Value, Value],
        [np.array(0, { dtype: "int32" }), f64(1)] as [Value, Value],
      )[1],
    );
    close(pow3(f64([2, 3])), [8, 27]);
    const [, ts] = vmap((a: Value) => jvp(f, [a], [f64(1)]))(f64(as));
    const kOf = (a: number) => Math.round(Math.log(want[as.indexOf(a)]!) / Math.log(a));
    close(ts, as.map((a) => kOf(a) * a ** (kOf(a) - 1)), 1e-10);
  });

  it("reverse mode raises a clear error pointing to scan / fori", () => {
    const f = (a: Value) => whileLoop((x: Value) => np.less(x, 100), (x: Value) => np.multiply(x, a), f64(1.3));
    expect(() => grad(f)(f64(1.7))).toThrow(ArgumentError);
    expect(() => grad(f)(f64(1.7))).toThrow(/reverse-mode differentiation.*does not work for whileLoop.*Tip: use scan, or fori with static/s);
    expect(() => vjp(f, f64(1.7))[1](f64(1))).toThrow(/whileLoop/);
    // inside a scan body, the same error
    const g = (a: Value) => scan((c: Value) => [f(np.multiply(a, c)), null] as [Value, null], f64(1), null, { length: 2 })[0];
    expect(() => grad(g)(f64(1.7))).toThrow(/does not work for whileLoop/);
    // a loop whose carry does not depend on the differentiated value is fine
    const count = () => whileLoop((i: Value) => np.less(i, 3), (i: Value) => np.add(i, 1), np.array(0, { dtype: "int32" }));
    const h = (a: Value) => np.multiply(a, np.astype(count(), "float64"));
    close(grad(h)(f64(2)), 3);
  });

  it("rejects a non-bool or non-scalar predicate and carry changes", () => {
    expect(() => whileLoop((x: Value) => x, (x: Value) => x, f64(1))).toThrow(DTypeError);
    expect(() => whileLoop((x: Value) => np.less(x, f64([1, 2])), (x: Value) => x, f64(1))).toThrow(ShapeError);
    expect(() => whileLoop((x: Value) => np.less(x, 1), (x: Value) => np.stack([x, x]), f64(1))).toThrow(ShapeError);
    expect(() => whileLoop((x: Value) => np.less(x, 1), ((x: Value) => [x]) as any, f64(1))).toThrow(TreeMismatchError);
  });
});

describe("devices without synchronous reads", () => {
  it("eager cond selects between all branches on the device; whileLoop raises a BackendError naming it", async () => {
    // A stand-in for a lazy device (WebGPU): the CPU backend with synchronous reads switched off.
    const cpu = (f64(1) as WArray).device;
    const lazy = { ...cpu, id: "lazy-test", backend: Object.create(cpu.backend, { readSync: { value: undefined } }) };
    const onLazy = (x: Value) => new WArray((x as WArray).aval, lazy, (x as WArray).buffer);
    const pred = onLazy(np.array(true));
    const x = onLazy(f64(0.5));
    // cond cannot read the predicate, so it evaluates both branches and selects on the device.
    const out = cond(pred, (v: Value) => v, (v: Value) => np.negative(v), x) as WArray;
    expect(out.device.id).toBe("lazy-test");
    expect(Array.from(await out.data())).toEqual([0.5]);
    const outF = cond(onLazy(np.array(false)), (v: Value) => v, (v: Value) => np.negative(v), x) as WArray;
    expect(Array.from(await outF.data())).toEqual([-0.5]);
    const [three, one] = [onLazy(f64(3)), onLazy(f64(1))];
    expect(() => whileLoop((v: Value) => np.less(v, three), (v: Value) => np.add(v, one), x)).toThrow(/whileLoop: eager control flow/);
    // scan reads nothing: it runs on such a device
    const [c] = scan((c: Value, y: Value) => [np.add(c, y), null] as [Value, null], onLazy(f64(0)), onLazy(f64([1, 2, 3])));
    expect((c as WArray).device.id).toBe("lazy-test");
  });
});

describe("scan: error cases", () => {
  it("names the carry leaf whose structure, shape or dtype changed", () => {
    const init = { h: f64([0, 0]), n: np.array(0, { dtype: "int32" }) };
    expect(() => scan((c: any) => [{ h: c.h }, null], init, null, { length: 2 })).toThrow(TreeMismatchError);
    expect(() => scan((c: any) => [{ h: c.h }, null], init, null, { length: 2 })).toThrow(/init's structure \{h: \*, n: \*\}, got \{h: \*\}/);
    expect(() => scan((c: any) => [{ h: np.concatenate([c.h, c.h]), n: c.n }, null], init, null, { length: 2 })).toThrow(ShapeError);
    expect(() => scan((c: any) => [{ h: np.concatenate([c.h, c.h]), n: c.n }, null], init, null, { length: 2 })).toThrow(
      /carry output carry\.h must keep the input's shape f64\[2\], got f64\[4\]/,
    );
    expect(() => scan((c: any) => [{ h: c.h, n: np.astype(c.n, "float32") }, null], init, null, { length: 2 })).toThrow(DTypeError);
    expect(() => scan((c: any) => [{ h: c.h, n: np.astype(c.n, "float32") }, null], init, null, { length: 2 })).toThrow(/carry\.n.*int32, got float32/);
  });

  it("checks xs and the body's return value", () => {
    expect(() => scan((c: Value) => [c, null], f64(0), { a: f64([1, 2]), b: f64([1, 2, 3]) })).toThrow(ShapeError);
    expect(() => scan((c: Value) => [c, null], f64(0), f64([1, 2]), { length: 3 })).toThrow(/leading size 3/);
    expect(() => scan((c: Value) => [c, null], f64(0), f64(1))).toThrow(ShapeError);
    expect(() => scan((c: Value) => [c, null], f64(0), null)).toThrow(/Tip: pass \{length: n\}/);
    expect(() => scan(((c: Value) => c) as any, f64(0), null, { length: 1 })).toThrow(/must return a pair \[carry, y\]/);
  });
});

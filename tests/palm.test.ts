/**
 * @file Tests of PaLM (src/nn/palm.ts), LoRA (src/nn/lora.ts) and the losses (src/nn/losses.ts).
 * Expected values come from outside the code under test: an independent PyTorch implementation
 * (tests/fixtures/palm/tiny.json, written by scripts/fixtures/gen_palm.py, with weights from a formula
 * recomputed here), float64 central finite differences, cross-entropies computed by hand in JS doubles,
 * and structural properties (causality, RoPE's relative positions, LoRA's B = 0 identity).
 */
import "../src/index.js";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import type { Value } from "../src/autodiff/core.js";
import { ArgumentError, DTypeError, ShapeError, TreeMismatchError } from "../src/autodiff/errors.js";
import { grad, jit, np, optim, tree, valueAndGrad, vmap } from "../src/index.js";
import type { Array as WArray } from "../src/ops/array.js";
import * as random from "../src/ops/random.js";
import * as lora from "../src/nn/lora.js";
import * as losses from "../src/nn/losses.js";
import * as palm from "../src/nn/palm.js";
import type { LoraParams, PalmConfig, PalmParams } from "../src/nn/palm.js";

// ---------------------------------------------------------------------------------------------------
// Helpers

const data = (v: Value): number[] => globalThis.Array.from((v as WArray).dataSync(), Number);
const i32 = (x: number[][] | number[]): Value => np.array(x, { dtype: "int32" });
const f64 = (x: number[] | number[][]): Value => np.array(x, { dtype: "float64" });

function expectClose(actual: number[], expected: number[], tol: number): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i]! - expected[i]!) / Math.max(1, Math.abs(expected[i]!));
    if (!(err <= worst)) worst = err;
  }
  expect(worst).toBeLessThanOrEqual(tol);
}

const flat = (x: unknown): number[] => (globalThis.Array.isArray(x) ? x.flatMap(flat) : [x as number]);

const tiny: PalmConfig = { numTokens: 20, dim: 16, depth: 2, heads: 2, dimHead: 8, ffMult: 4, dtype: "float64" };

// ---------------------------------------------------------------------------------------------------
// Golden values from PyTorch

interface Fixture {
  config: { numTokens: number; dim: number; depth: number; heads: number; dimHead: number; ffMult: number; loraR: number };
  params: { path: string; shape: number[]; pid: number; amp: number; offset: number }[];
  tokens: number[][];
  paddedTokens: number[][];
  logits: number[][][];
  logitsQkRmsNorm: number[][][];
  logitsLora: number[][][];
  logitsNonCausal: number[][][];
  loss: number;
  lossLora: number;
  grads: { path: string; index: number[]; value: number }[];
}

const fixture: Fixture = JSON.parse(readFileSync(new URL("./fixtures/palm/tiny.json", import.meta.url), "utf8"));

/** The fixture's formula: value[i] = offset + amp·sin(0.37·i + 0.11·pid + 0.3), row-major over [in, out]. */
function fill(shape: number[], pid: number, amp: number, offset: number): Value {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float64Array(n);
  for (let i = 0; i < n; i++) v[i] = offset + amp * Math.sin(0.37 * i + 0.11 * pid + 0.3);
  return np.array(v, { dtype: "float64", shape });
}

function setPath(root: Record<string, any>, path: string[], value: unknown): void {
  let o = root;
  for (let i = 0; i < path.length - 1; i++) {
    const k = path[i]!;
    const nextIsIndex = /^\d+$/.test(path[i + 1]!);
    o[k] ??= nextIsIndex ? [] : {};
    o = o[k];
  }
  o[path[path.length - 1]!] = value;
}

/** Base params (optionally with qk-RMSNorm scales) and the LoRA scope "tiny", from the formula. */
function fixtureParams(qk: boolean): { params: PalmParams; lora: LoraParams } {
  const params: Record<string, any> = {};
  const lr: Record<string, any> = {};
  for (const p of fixture.params) {
    const parts = p.path.split(".");
    if (!qk && (parts.at(-1) === "qScale" || parts.at(-1) === "kScale")) continue;
    const v = fill(p.shape, p.pid, p.amp, p.offset);
    if (parts[0] === "lora") setPath(lr, ["tiny", ...parts.slice(1)], v);
    else setPath(params, parts, v);
  }
  return { params: params as PalmParams, lora: lr as LoraParams };
}

function getPath(root: any, path: string): Value {
  return path.split(".").reduce((o, k) => o[k], root);
}

describe("PaLM against PyTorch (tests/fixtures/palm/tiny.json)", () => {
  const cfg: PalmConfig = { ...fixture.config, dtype: "float64" };
  const tokens = i32(fixture.tokens);

  it("logits, causal with xPos", () => {
    const { params } = fixtureParams(false);
    expectClose(data(palm.apply(params, tokens, { config: cfg })), flat(fixture.logits), 1e-10);
  });

  it("logits with qk-RMSNorm (learned scales, attention scale 8)", () => {
    const { params } = fixtureParams(true);
    expectClose(data(palm.apply(params, tokens, { config: { ...cfg, qkRmsNorm: true } })), flat(fixture.logitsQkRmsNorm), 1e-10);
  });

  it("logits and loss with a LoRA scope on q, k, v and the output projection", () => {
    const { params, lora: lp } = fixtureParams(false);
    const opts = { config: cfg, lora: lp, loraScope: "tiny" };
    expectClose(data(palm.apply(params, tokens, opts)), flat(fixture.logitsLora), 1e-10);
    expectClose(data(palm.loss(params, tokens, opts)), [fixture.lossLora], 1e-10);
  });

  it("logits, non-causal with negative ids as padding (no xPos)", () => {
    const { params } = fixtureParams(false);
    const out = palm.apply(params, i32(fixture.paddedTokens), { config: { ...cfg, causal: false } });
    expectClose(data(out), flat(fixture.logitsNonCausal), 1e-10);
  });

  it("next-token loss with ignore index 0, and its gradient entries", () => {
    const { params } = fixtureParams(false);
    const lossFn = (p: PalmParams) => palm.loss(p, tokens, { config: cfg });
    expectClose(data(lossFn(params)), [fixture.loss], 1e-10);
    const g = grad(lossFn)(params);
    for (const e of fixture.grads) {
      const gv = getPath(g, e.path);
      const shape = gv.aval.shape;
      let flatIdx = 0;
      e.index.forEach((ix, d) => (flatIdx = flatIdx * shape[d]! + ix));
      expect(Math.abs(data(gv)[flatIdx]! - e.value), `${e.path}[${e.index}]`).toBeLessThan(1e-10 * Math.max(1, Math.abs(e.value)));
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// The dim-32 model against PyTorch, every gradient entry (tests/fixtures/palm/small.json)

interface SmallFixture {
  config: { numTokens: number; dim: number; depth: number; heads: number; dimHead: number; ffMult: number };
  params: { path: string; shape: number[]; pid: number; amp: number; offset: number }[];
  tokens: number[][];
  logits: number[][][];
  loss: number;
  grads: Record<string, number[]>;
}

const small: SmallFixture = JSON.parse(readFileSync(new URL("./fixtures/palm/small.json", import.meta.url), "utf8"));

/** The small fixture's params from the formula, computed in float64 and then cast to `dtype`. */
function smallParams(dtype: "float32" | "float64"): PalmParams {
  const params: Record<string, any> = {};
  for (const p of small.params) setPath(params, p.path.split("."), np.astype(fill(p.shape, p.pid, p.amp, p.offset), dtype));
  return params as PalmParams;
}

/**
 * allclose with an absolute floor scaled to the array: |a - e| <= rtol·|e| + atol·max|e|. The floor is
 * what float rounding allows for entries that are small by cancellation (a gradient entry 1e-4 of the
 * largest in its array is known only to ~eps·max).
 */
function expectAllClose(what: string, actual: number[], expected: number[], rtol: number, atol: number): void {
  expect(actual.length, what).toBe(expected.length);
  const floor = atol * Math.max(...expected.map(Math.abs));
  let worst = -1;
  let worstAt = -1;
  for (let i = 0; i < actual.length; i++) {
    const excess = Math.abs(actual[i]! - expected[i]!) / (rtol * Math.abs(expected[i]!) + floor);
    if (!(excess <= worst)) [worst, worstAt] = [excess, i];
  }
  expect(worst, `${what}[${worstAt}]: ${actual[worstAt]} vs ${expected[worstAt]}`).toBeLessThanOrEqual(1);
}

describe("PaLM dim 32, depth 2, 4 heads of 8, causal with xPos, against PyTorch (tests/fixtures/palm/small.json)", () => {
  const tokens = i32(small.tokens); // [2, 12]
  const inputs = i32(small.tokens.map((r) => r.slice(0, -1))); // [2, 11]: the loss's inputs
  // float64: both sides compute in float64, only summation order differs. float32: the params are rounded
  // to float32 and everything runs in float32 (eps 1.2e-7), against PyTorch's float64 values. The
  // fixture's weights make some gradient entries small differences of large terms, so the float32
  // gradient's floor is wider: PyTorch's own float32 gradient lies up to 5.8e-5 of each array's largest
  // entry from its float64 one over this formula at 12 phases (4.8e-6 at the fixture's phase;
  // scripts/fixtures/calibrate_palm_float32.py). A wrong gradient is off by O(1) of that entry.
  const tolerances = {
    float64: { rtol: 1e-10, atol: 1e-12, gradAtol: 1e-12 },
    float32: { rtol: 1e-4, atol: 1e-5, gradAtol: 1e-4 },
  } as const;

  for (const dtype of ["float64", "float32"] as const) {
    const { rtol, atol, gradAtol } = tolerances[dtype];
    const cfg: PalmConfig = { ...small.config, dtype };

    it(`${dtype}: logits and loss (rtol ${rtol}, atol ${atol}·max)`, () => {
      const params = smallParams(dtype);
      const logits = palm.apply(params, inputs, { config: cfg });
      expect(logits.aval.dtype).toBe(dtype);
      expectAllClose("logits", data(logits), flat(small.logits), rtol, atol);
      expectAllClose("loss", data(palm.loss(params, tokens, { config: cfg })), [small.loss], rtol, 0);
    });

    it(`${dtype}: the gradient of the loss, every entry of every parameter (rtol ${rtol}, atol ${gradAtol}·max per array)`, () => {
      const params = smallParams(dtype);
      const g = grad((p: PalmParams) => palm.loss(p, tokens, { config: cfg }))(params);
      expect(Object.keys(small.grads).sort()).toEqual(small.params.map((p) => p.path).sort());
      expect(tree.leaves(g).length).toBe(small.params.length);
      for (const p of small.params) {
        const gv = getPath(g, p.path);
        expect([...gv.aval.shape], p.path).toEqual(p.shape);
        expect(gv.aval.dtype).toBe(dtype);
        expectAllClose(p.path, data(gv), small.grads[p.path]!, rtol, gradAtol);
      }
    });
  }
});

// ---------------------------------------------------------------------------------------------------
// Structure and properties

describe("palm.init / apply", () => {
  const params = palm.init(random.key(0), tiny);
  const tokens = i32([
    [1, 2, 3, 4, 5, 6, 7],
    [3, 0, 5, 1, 1, 2, 9],
  ]);

  it("makes params of the documented shapes", () => {
    expect([...params.tokenEmb.aval.shape]).toEqual([20, 16]);
    expect(params.layers).toHaveLength(2);
    const l0 = params.layers[0]!;
    expect([...l0.fusedAttnFfProj.aval.shape]).toEqual([16, 2 * 8 + 8 + 8 + 2 * 64]);
    expect([...l0.attnOut.aval.shape]).toEqual([16, 16]);
    expect([...l0.ffOut.aval.shape]).toEqual([64, 16]);
    expect(l0.qScale).toBeUndefined();
    expect(data(l0.norm.gamma)).toEqual(new globalThis.Array(16).fill(1));
    expect(palm.numParams(params)).toBe(20 * 16 + 2 * (16 + 16 * 160 + 16 * 16 + 64 * 16) + 16);
    const withQk = palm.init(random.key(0), { ...tiny, qkRmsNorm: true });
    expect([...withQk.layers[1]!.qScale!.aval.shape]).toEqual([8]);
    expect(params.tokenEmb.aval.dtype).toBe("float64");
  });

  it("initialises token embeddings N(0, 0.02) and linears within ±1/√fanIn", () => {
    const big = palm.init(random.key(1), { numTokens: 256, dim: 64, depth: 1, heads: 2, dimHead: 16 });
    const e = data(big.tokenEmb);
    const mean = e.reduce((a, b) => a + b, 0) / e.length;
    const sd = Math.sqrt(e.reduce((a, b) => a + (b - mean) ** 2, 0) / e.length);
    expect(Math.abs(mean)).toBeLessThan(0.001);
    expect(Math.abs(sd - 0.02)).toBeLessThan(0.001);
    const w = data(big.layers[0]!.fusedAttnFfProj);
    expect(Math.max(...w.map(Math.abs))).toBeLessThanOrEqual(1 / 8);
    expect(Math.max(...w.map(Math.abs))).toBeGreaterThan(0.12);
  });

  it("returns logits [batch, seq, numTokens], embeddings on request, and handles a single [seq]", () => {
    const logits = palm.apply(params, tokens, { config: tiny });
    expect([...logits.aval.shape]).toEqual([2, 7, 20]);
    const both = palm.apply(params, tokens, { config: tiny, returnEmbeddings: true });
    expect([...both.embeddings.aval.shape]).toEqual([2, 7, 16]);
    expectClose(data(both.logits), data(logits), 0);
    // embeddings are LayerNorm outputs with gain 1: each row has mean 0 and variance ≈ 1.
    const e = data(both.embeddings).slice(0, 16);
    const m = e.reduce((a, b) => a + b, 0) / 16;
    expect(Math.abs(m)).toBeLessThan(1e-12);
    expect(Math.abs(e.reduce((a, b) => a + (b - m) ** 2, 0) / 16 - 1)).toBeLessThan(1e-3);
    expectClose(data(palm.embed(params, tokens, { config: tiny })), data(both.embeddings), 0);
    const single = palm.apply(params, i32([3, 0, 5, 1, 1, 2, 9]), { config: tiny });
    expect([...single.aval.shape]).toEqual([7, 20]);
    expectClose(data(single), data(logits).slice(140), 1e-12);
  });

  it("is causal: changing a token changes no logits before it", () => {
    const a = data(palm.apply(params, tokens, { config: tiny }));
    const changed = i32([
      [1, 2, 3, 4, 11, 6, 7],
      [3, 0, 5, 1, 1, 2, 9],
    ]);
    const b = data(palm.apply(params, changed, { config: tiny }));
    const row = (x: number[], bi: number, t: number) => x.slice((bi * 7 + t) * 20, (bi * 7 + t + 1) * 20);
    for (let t = 0; t < 4; t++) expectClose(row(b, 0, t), row(a, 0, t), 1e-13);
    for (let t = 4; t < 7; t++) expect(Math.max(...row(b, 0, t).map((v, i) => Math.abs(v - row(a, 0, t)[i]!)))).toBeGreaterThan(1e-6);
    for (let t = 0; t < 7; t++) expectClose(row(b, 1, t), row(a, 1, t), 1e-13); // the other sequence is untouched
  });

  it("non-causal: padding (negative ids or the mask) hides tokens from every position", () => {
    const nc = { ...tiny, causal: false };
    const p1 = data(palm.apply(params, i32([[4, 9, 2, -1, -1]]), { config: nc }));
    const p2 = data(palm.apply(params, i32([[4, 9, 2, 7, 13]]), { config: nc, mask: np.array([[true, true, true, false, false]]) }));
    expectClose(p2.slice(0, 60), p1.slice(0, 60), 1e-12);
    // and a real future token does change earlier positions when not masked (it is not causal)
    const p3 = data(palm.apply(params, i32([[4, 9, 2, 7, 13]]), { config: nc }));
    expect(Math.abs(p3[0]! - p1[0]!)).toBeGreaterThan(1e-8);
  });

  it("without a config, shapes come from the params and PaLM's defaults apply", () => {
    const dflt = data(palm.apply(params, tokens));
    expectClose(dflt, data(palm.apply(params, tokens, { config: tiny })), 0);
    const nc = data(palm.apply(params, tokens, { config: { ...tiny, causal: false } }));
    expect(Math.max(...nc.map((v, i) => Math.abs(v - dflt[i]!)))).toBeGreaterThan(1e-6);
  });

  it("vmap(grad) gives per-example gradients whose mean is the batch gradient", () => {
    const seqs = i32([
      [1, 2, 3, 4, 5],
      [6, 7, 8, 9, 10],
      [11, 12, 13, 14, 15],
    ]); // no ignored targets, so every sequence has the same weight in the batch mean
    const lossFn = (p: PalmParams, t: Value) => palm.loss(p, t, { config: tiny });
    const per = vmap(grad(lossFn), { inAxes: [null, 0] })(params, seqs);
    const batch = grad(lossFn)(params, seqs);
    const perL = tree.leaves<Value>(per);
    tree.leaves<Value>(batch).forEach((bg, k) => expectClose(data(np.mean(perL[k]!, { axis: 0 })), data(bg), 1e-12));
  });

  it("jit(apply) equals apply, and vmap over single sequences equals the batch", () => {
    const f = (p: PalmParams, t: Value) => palm.apply(p, t, { config: tiny });
    const eager = data(f(params, tokens));
    expectClose(data(jit(f)(params, tokens)), eager, 1e-12);
    expectClose(data(vmap(f, { inAxes: [null, 0] })(params, tokens)), eager, 1e-12);
  });

  it("dropout runs only with a key, and is deterministic given the key", () => {
    const cfg = { ...tiny, attnDropout: 0.3, ffDropout: 0.3 };
    const plain = data(palm.apply(params, tokens, { config: cfg }));
    expectClose(plain, data(palm.apply(params, tokens, { config: tiny })), 0);
    const k = random.key(7);
    const d1 = data(palm.apply(params, tokens, { config: cfg, key: k }));
    const d2 = data(palm.apply(params, tokens, { config: cfg, key: k }));
    expectClose(d1, d2, 0);
    expect(Math.max(...d1.map((v, i) => Math.abs(v - plain[i]!)))).toBeGreaterThan(1e-4);
    const d3 = data(palm.apply(params, tokens, { config: cfg, key: random.key(8) }));
    expect(Math.max(...d1.map((v, i) => Math.abs(v - d3[i]!)))).toBeGreaterThan(1e-4);
  });

  it("grad of the loss matches central finite differences (float64)", () => {
    const lossFn = (p: PalmParams) => palm.loss(p, tokens, { config: tiny });
    const g = grad(lossFn)(params);
    const probes: [string, number][] = [
      ["tokenEmb", 37],
      ["layers.0.fusedAttnFfProj", 5],
      ["layers.0.fusedAttnFfProj", 16 * 160 - 3],
      ["layers.1.fusedAttnFfProj", 900],
      ["layers.1.attnOut", 100],
      ["layers.0.ffOut", 333],
      ["layers.1.norm.gamma", 4],
      ["norm.gamma", 11],
    ];
    const h = 1e-5;
    for (const [path, idx] of probes) {
      const base = getPath(params, path);
      const perturb = (d: number) => {
        const v = Float64Array.from(data(base));
        v[idx]! += d;
        const p2: any = tree.map((x: Value) => x, params);
        const parts = path.split(".");
        setPath(p2, parts, np.array(v, { dtype: "float64", shape: base.aval.shape }));
        return data(lossFn(p2))[0]!;
      };
      const fd = (perturb(h) - perturb(-h)) / (2 * h);
      const an = data(getPath(g, path))[idx]!;
      expect(Math.abs(an - fd), `${path}[${idx}]: ${an} vs ${fd}`).toBeLessThan(1e-7 + 1e-6 * Math.abs(fd));
    }
  });

  it("rejects bad input with named errors", () => {
    expect(() => palm.apply(params, np.array([[1, 2]]), { config: tiny })).toThrow(DTypeError);
    expect(() => palm.apply(params, i32([1, 2]), { config: { ...tiny, heads: 4, dimHead: 4 } })).toThrow(ShapeError);
    expect(() => palm.apply(params, i32([1, 2]), { config: tiny, lora: {}, loraScope: "actor" })).toThrow(ArgumentError);
    expect(() => palm.init(random.key(0), { ...tiny, dimHead: 7 })).toThrow(/even/);
    expect(() => palm.apply(params, i32([[1, 2]]), { config: tiny, mask: np.array([[true]]) })).toThrow(ShapeError);
  });
});

// ---------------------------------------------------------------------------------------------------
// vmap: per-example models against the batched model and a loop

describe("PaLM under vmap", () => {
  const params = palm.init(random.key(11), tiny);
  // Label 0 is ignored by the loss, and the rows have different numbers of ignored targets, so the batch
  // gradient is not simply the mean of the per-example ones: only a loop can check them.
  const rows = [
    [1, 2, 0, 4, 5, 6],
    [7, 0, 0, 9, 3, 12],
    [13, 14, 15, 16, 17, 18],
    [2, 2, 2, 0, 19, 1],
  ];
  const lossFn = (p: PalmParams, t: Value) => palm.loss(p, t, { config: tiny });

  it("a per-example model ([seq] in, [seq, vocab] out) under vmap equals the batched model, jitted or not", () => {
    const single = (p: PalmParams, t: Value) => palm.apply(p, t, { config: tiny }); // [seq] -> [seq, vocab]
    const batched = data(palm.apply(params, i32(rows), { config: tiny })); // [4, 6, 20]
    expectClose(data(vmap(single, { inAxes: [null, 0] })(params, i32(rows))), batched, 1e-12);
    expectClose(data(jit(vmap(single, { inAxes: [null, 0] }))(params, i32(rows))), batched, 1e-12);
    // and both equal one call per row
    rows.forEach((r, i) => expectClose(data(single(params, i32(r))), batched.slice(i * 120, (i + 1) * 120), 1e-12));
  });

  it("per-example loss gradients: vmap(grad) equals grad in a loop over the examples", () => {
    const per = vmap(grad(lossFn), { inAxes: [null, 0] })(params, i32(rows)); // every leaf [4, ...]
    const perLeaves = tree.leaves<Value>(per);
    rows.forEach((r, i) => {
      const gi = tree.leaves<Value>(grad(lossFn)(params, i32(r)));
      expect(gi.length).toBe(perLeaves.length);
      gi.forEach((g, k) => {
        const n = g.aval.size;
        expect(perLeaves[k]!.aval.shape[0]).toBe(rows.length);
        expectClose(data(perLeaves[k]!).slice(i * n, (i + 1) * n), data(g), 1e-12);
      });
    });
    // the rows' weights differ (5, 3, 5, 4 counted targets), so the batch gradient is the weighted mean
    const counts = rows.map((r) => r.slice(1).filter((t) => t !== 0).length);
    const total = counts.reduce((a, b) => a + b, 0);
    tree.leaves<Value>(grad(lossFn)(params, i32(rows))).forEach((bg, k) => {
      const n = bg.aval.size;
      const pl = data(perLeaves[k]!);
      const weighted = data(bg).map((_, j) => counts.reduce((a, c, i) => a + (c / total) * pl[i * n + j]!, 0));
      expectClose(data(bg), weighted, 1e-12);
    });
  });

  it("vmap over both params and tokens (an ensemble of models) equals a loop", () => {
    const models = [palm.init(random.key(21), tiny), palm.init(random.key(22), tiny)];
    const stacked = tree.map((a: Value, b: Value) => np.stack([a, b]), models[0]!, models[1]!) as PalmParams;
    const toks = i32(rows.slice(0, 2)); // model i sees row i
    const got = data(vmap((p: PalmParams, t: Value) => palm.apply(p, t, { config: tiny }))(stacked, toks)); // [2, 6, 20]
    const gotLoss = data(vmap(lossFn)(stacked, toks)); // [2]
    models.forEach((m, i) => {
      expectClose(got.slice(i * 120, (i + 1) * 120), data(palm.apply(m, i32(rows[i]!), { config: tiny })), 1e-12);
      expectClose([gotLoss[i]!], data(lossFn(m, i32(rows[i]!))), 1e-12);
    });
  });
});

// ---------------------------------------------------------------------------------------------------
// Training

describe("training", () => {
  it("jit(valueAndGrad) + adam drives the loss on periodic text ('abcabc…' bytes) below 0.01 in 300 steps", () => {
    // Each byte determines the next one, so a perfect model has loss 0; at init the loss is ≈ ln(128).
    const config: PalmConfig = { numTokens: 128, dim: 32, depth: 1, heads: 2, dimHead: 16, ffMult: 2, crossEntropyIgnoreIndex: null };
    const text = Buffer.from("abc".repeat(20), "latin1");
    const seq = 16;
    const batch = i32([0, 1, 2, 4].map((o) => globalThis.Array.from(text.subarray(o, o + seq)))); // [4, 16], all three phases
    const lossFn = (p: PalmParams, t: Value) => palm.loss(p, t, { config });
    const opt = optim.adam(1e-2);
    const step = jit(
      (p: PalmParams, st: unknown, t: Value): [PalmParams, unknown, Value] => {
        const [l, g] = valueAndGrad(lossFn)(p, t) as [Value, PalmParams];
        const [u, st2] = opt.update(g, st);
        return [optim.applyUpdates(p, u), st2, l];
      },
      { donateArgnums: [0, 1] },
    );
    let params = palm.init(random.key(0), config);
    let state = opt.init(params);
    const first = data(lossFn(params, batch))[0]!;
    expect(Math.abs(first - Math.log(128))).toBeLessThan(0.1);
    for (let i = 0; i < 300; i++) [params, state] = step(params, state, batch);
    const last = data(lossFn(params, batch))[0]!;
    expect(last).toBeLessThan(0.01);
    // and the trained model continues the pattern on a phase and length it was not given
    const logits = data(palm.apply(params, i32([globalThis.Array.from(Buffer.from("cabcabcab", "latin1"))]), { config })); // [1, 9, 128]
    const argmaxAt = (t: number) => {
      const row = logits.slice(t * 128, (t + 1) * 128);
      return row.indexOf(Math.max(...row));
    };
    expect(String.fromCharCode(...[0, 1, 2, 3, 4, 5, 6, 7, 8].map(argmaxAt))).toBe("abcabcabc");
  });
});

describe("rotary embeddings", () => {
  const d = 8;
  const n = 12;
  const q = f64([0.3, -1.2, 0.5, 0.9, -0.4, 0.7, 1.1, -0.2]);
  const k = f64([-0.6, 0.2, 0.8, -1.0, 0.3, 0.4, -0.9, 0.5]);
  /** [n, n]: score of q rotated to position i against k rotated to position j. */
  const scores = (xpos: boolean): number[] => {
    const r = palm.rotaryEmbedding(n, d, { xpos, dtype: "float64" });
    const qs = palm.applyRotary(r.freqs, np.broadcastTo(q, [n, d]), r.scale); // [n, d]
    const ks = palm.applyRotary(r.freqs, np.broadcastTo(k, [n, d]), r.invScale); // [n, d]
    return data(np.matmul(qs, np.transpose(ks))); // [n, n]
  };

  for (const xpos of [false, true]) {
    it(`q·k depends only on the position difference (xPos ${xpos ? "on" : "off"})`, () => {
      const s = scores(xpos);
      for (let i = 0; i + 3 < n; i++) {
        for (let j = 0; j + 3 < n; j++) expect(Math.abs(s[(i + 3) * n + j + 3]! - s[i * n + j]!)).toBeLessThan(1e-12);
      }
      // and it does depend on the difference
      expect(Math.abs(s[5 * n + 2]! - s[5 * n + 3]!)).toBeGreaterThan(1e-3);
    });
  }

  it("at offset 0 without xPos the score is the plain dot product; rotation keeps norms", () => {
    const s = scores(false);
    const qv = data(q);
    const kv = data(k);
    const dot = qv.reduce((a, x, i) => a + x * kv[i]!, 0);
    for (let i = 0; i < n; i++) expect(Math.abs(s[i * n + i]! - dot)).toBeLessThan(1e-12);
    const r = palm.rotaryEmbedding(n, d, { dtype: "float64" });
    const rq = data(palm.applyRotary(r.freqs, np.broadcastTo(q, [n, d])));
    const nq = qv.reduce((a, x) => a + x * x, 0);
    for (let i = 0; i < n; i++) expect(Math.abs(rq.slice(i * d, i * d + d).reduce((a, x) => a + x * x, 0) - nq)).toBeLessThan(1e-12);
  });

  it("xPos decays scores with distance by ζ^(Δ/512) per frequency", () => {
    // With q = k = e_0 (first channel only), the score at offset Δ is cos(Δ·θ_0)·ζ_0^(Δ/512), θ_0 = 1, ζ_0 = 0.4/1.4.
    const e0 = f64([1, 0, 0, 0, 0, 0, 0, 0]);
    const r = palm.rotaryEmbedding(n, d, { xpos: true, dtype: "float64" });
    const qs = palm.applyRotary(r.freqs, np.broadcastTo(e0, [n, d]), r.scale);
    const ks = palm.applyRotary(r.freqs, np.broadcastTo(e0, [n, d]), r.invScale);
    const s = data(np.matmul(qs, np.transpose(ks)));
    const zeta = 0.4 / 1.4;
    for (const [i, j] of [[5, 2], [9, 0], [3, 3]] as const) {
      expect(Math.abs(s[i * n + j]! - Math.cos(i - j) * zeta ** ((i - j) / 512))).toBeLessThan(1e-12);
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// LoRA

describe("LoRA", () => {
  const params = palm.init(random.key(3), tiny);
  const tokens = i32([
    [1, 2, 3, 4, 5, 6],
    [7, 8, 9, 10, 11, 12],
  ]);

  it("has A [in, r] ~ N(0, 1) and B = 0 per scope, and leaves logits unchanged at init", () => {
    const lp = lora.init(random.key(4), tiny, { scopes: ["actor", "critic"], r: 4 });
    expect(Object.keys(lp).sort()).toEqual(["actor", "critic"]);
    const a0 = lp.actor![0]!;
    expect([...a0.q.A.aval.shape]).toEqual([16, 4]);
    expect([...a0.q.B.aval.shape]).toEqual([4, 16]);
    expect([...a0.k.B.aval.shape]).toEqual([4, 8]);
    expect([...a0.o.A.aval.shape]).toEqual([16, 4]);
    expect(data(a0.v.B).every((x) => x === 0)).toBe(true);
    const base = data(palm.apply(params, tokens, { config: tiny }));
    expectClose(data(palm.apply(params, tokens, { config: tiny, lora: lp, loraScope: "actor" })), base, 1e-14);
    const big = lora.init(random.key(5), { ...tiny, dim: 64, heads: 4 }, { r: 8 });
    const a = data(big.default![0]!.q.A);
    const sd = Math.sqrt(a.reduce((s, x) => s + x * x, 0) / a.length);
    expect(Math.abs(sd - 1)).toBeLessThan(0.15);
  });

  it("mergeLora equals applying the adapter; scopes are independent", () => {
    let lp = lora.init(random.key(6), tiny, { scopes: ["actor", "critic"], r: 4 });
    // give every B a non-zero value so the adapters do something
    lp = tree.map((x: Value) => (x.aval.shape[0] === 4 ? random.normal(random.key(x.aval.shape[1]!), x.aval.shape, { dtype: "float64" }) : x), lp);
    const withActor = data(palm.apply(params, tokens, { config: tiny, lora: lp, loraScope: "actor" }));
    const base = data(palm.apply(params, tokens, { config: tiny }));
    expect(Math.max(...withActor.map((v, i) => Math.abs(v - base[i]!)))).toBeGreaterThan(1e-3);
    const merged = lora.mergeLora(params, lp, "actor");
    expectClose(data(palm.apply(merged, tokens, { config: tiny })), withActor, 1e-11);
    const withCritic = data(palm.apply(params, tokens, { config: tiny, lora: lp, loraScope: "critic" }));
    expect(Math.max(...withCritic.map((v, i) => Math.abs(v - withActor[i]!)))).toBeGreaterThan(1e-3);
    // alpha scales the adapter: alpha = 2r doubles the update, in apply and in mergeLora alike
    const a2 = data(palm.apply(params, tokens, { config: tiny, lora: lp, loraScope: "actor", loraAlpha: 8 }));
    expectClose(data(palm.apply(lora.mergeLora(params, lp, "actor", { alpha: 8 }), tokens, { config: tiny })), a2, 1e-11);
  });

  it("addScope / removeScope", () => {
    const lp = lora.init(random.key(6), tiny, { scopes: "actor" });
    const two = lora.addScope(lp, random.key(1), tiny, "reward", { r: 2 });
    expect(Object.keys(two).sort()).toEqual(["actor", "reward"]);
    expect(two.reward![1]!.q.A.aval.shape[1]).toBe(2);
    expect(Object.keys(lora.removeScope(two, "actor"))).toEqual(["reward"]);
    expect(() => lora.addScope(two, random.key(1), tiny, "actor")).toThrow(ArgumentError);
  });

  it("partition / combine: grads only for the trainable scope", () => {
    const lp = lora.init(random.key(6), tiny, { scopes: ["actor", "critic"], r: 2 });
    const all = { palm: params, lora: lp };
    const [trainable, frozen] = lora.partition(all, { palm: false, lora: { actor: true, critic: false } });
    expect(trainable.palm.tokenEmb).toBeNull();
    expect(frozen.lora.actor![0]!.q.A).toBeNull();
    expect(trainable.lora.actor![1]!.o.B).toBe(lp.actor![1]!.o.B);
    const back = lora.combine(trainable, frozen);
    const lb = tree.leaves(back);
    const la = tree.leaves(all);
    expect(lb.length).toBe(la.length);
    expect(lb.every((x, i) => x === la[i])).toBe(true);
    const lossFn = (t: typeof all) => {
      const full = lora.combine(t, frozen);
      return palm.loss(full.palm, tokens, { config: tiny, lora: full.lora, loraScope: "actor" });
    };
    const g = grad(lossFn)(trainable);
    expect(g.palm.tokenEmb).toBeNull();
    expect(g.lora.critic[0].q.A).toBeNull();
    // B starts at 0, so dL/dA = 0 and dL/dB ≠ 0 at init
    expect(data(g.lora.actor[0].q.A).every((x: number) => x === 0)).toBe(true);
    expect(Math.max(...data(g.lora.actor[0].q.B).map(Math.abs))).toBeGreaterThan(1e-8);
    expect(() => lora.partition(all, { palm: false })).toThrow(TreeMismatchError);
    expect(() => lora.combine(all, all)).toThrow(TreeMismatchError);
  });
});

// ---------------------------------------------------------------------------------------------------
// Losses

/** -log softmax(row)[label] in JS doubles. */
function ceRef(row: number[], label: number): number {
  const m = Math.max(...row);
  const lse = m + Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0));
  return lse - row[label]!;
}

describe("losses", () => {
  const logitsRows = [
    [1.5, -0.3, 0.2, 2.0],
    [0.1, 0.1, -1.0, 3.0],
    [-2.0, 0.5, 0.4, 0.3],
    [0.0, 1.0, 2.0, 3.0],
    [9.0, -9.0, 0.0, 1.0],
    [0.3, 0.2, 0.1, 0.0],
  ];
  const logits = np.reshape(f64(logitsRows), [2, 3, 4]);

  it("tokenCrossEntropy: mean over non-ignored labels, masks, and 0 when nothing counts", () => {
    const labels = [3, 0, 1, 2, 0, 0];
    const got = data(losses.tokenCrossEntropy(logits, i32([labels.slice(0, 3), labels.slice(3)])))[0]!;
    const kept = [0, 2, 3];
    const want = kept.reduce((a, i) => a + ceRef(logitsRows[i]!, labels[i]!), 0) / kept.length;
    expect(Math.abs(got - want)).toBeLessThan(1e-14);
    const none = data(losses.tokenCrossEntropy(logits, i32([labels.slice(0, 3), labels.slice(3)]), { ignoreIndex: null }))[0]!;
    expect(Math.abs(none - labels.reduce((a, l, i) => a + ceRef(logitsRows[i]!, l), 0) / 6)).toBeLessThan(1e-14);
    const masked = data(
      losses.tokenCrossEntropy(logits, i32([labels.slice(0, 3), labels.slice(3)]), { mask: np.array([[true, true, false], [true, true, true]]) }),
    )[0]!;
    expect(Math.abs(masked - (ceRef(logitsRows[0]!, 3) + ceRef(logitsRows[3]!, 2)) / 2)).toBeLessThan(1e-14);
    // -100 style ignore labels outside [0, C) are fine
    const ign = data(losses.tokenCrossEntropy(logits, i32([[3, -100, 1], [2, -100, -100]]), { ignoreIndex: -100 }))[0]!;
    expect(Math.abs(ign - want)).toBeLessThan(1e-14);
    expect(data(losses.tokenCrossEntropy(logits, i32([[0, 0, 0], [0, 0, 0]])))[0]).toBe(0);
  });

  it("the ignored tokens get no gradient", () => {
    const labels = i32([[3, 0, 1], [2, 0, 0]]);
    const g = data(grad((l: Value) => losses.tokenCrossEntropy(l, labels))(logits));
    for (const i of [1, 4, 5]) expect(g.slice(i * 4, i * 4 + 4).every((x) => x === 0)).toBe(true);
    // for kept rows: (softmax - onehot) / count
    const row = logitsRows[0]!;
    const z = row.reduce((a, x) => a + Math.exp(x), 0);
    expectClose(g.slice(0, 4), row.map((x, c) => (Math.exp(x) / z - (c === 3 ? 1 : 0)) / 3), 1e-14);
  });

  it("palm.loss ignores label 0: changing logits at ignored targets does not matter", () => {
    const params = palm.init(random.key(9), tiny);
    // targets 0 at positions 2 and 3 of the first row; the prediction made at position 2 (for target 0)
    // is ignored, so the token *at* position 2 only matters through later positions.
    const a = data(palm.loss(params, i32([[1, 5, 0, 0, 7]]), { config: tiny }))[0]!;
    const logitsAll = palm.apply(params, i32([[1, 5, 0, 0]]), { config: tiny });
    const rows = data(logitsAll);
    const row = (t: number) => rows.slice(t * 20, t * 20 + 20);
    const want = (ceRef(row(0), 5) + ceRef(row(3), 7)) / 2; // targets 5 (from pos 0) and 7 (from pos 3)
    expect(Math.abs(a - want)).toBeLessThan(1e-12);
  });

  it("nextTokenCrossEntropy shifts logits against tokens", () => {
    const toks = i32([[1, 3, 2], [0, 2, 1]]);
    const got = data(losses.nextTokenCrossEntropy(logits, toks, { ignoreIndex: null }))[0]!;
    const want = (ceRef(logitsRows[0]!, 3) + ceRef(logitsRows[1]!, 2) + ceRef(logitsRows[3]!, 2) + ceRef(logitsRows[4]!, 1)) / 4;
    expect(Math.abs(got - want)).toBeLessThan(1e-14);
  });

  it("softmaxCrossEntropy with distributions and integer labels; stable at large logits", () => {
    const lg = f64([[1000, 0, -1000], [0.5, 0.25, -0.5]]);
    const probs = f64([[0.5, 0.5, 0], [0.2, 0.3, 0.5]]);
    const got = data(losses.softmaxCrossEntropy(lg, probs));
    expect(Math.abs(got[0]! - 0.5 * 1000)).toBeLessThan(1e-9); // -(0.5·0 + 0.5·(-1000))
    const r = [0.5, 0.25, -0.5];
    const lse = Math.log(r.reduce((a, x) => a + Math.exp(x), 0));
    expect(Math.abs(got[1]! - (0.2 * (lse - 0.5) + 0.3 * (lse - 0.25) + 0.5 * (lse + 0.5)))).toBeLessThan(1e-14);
    const gi = data(losses.softmaxCrossEntropy(lg, i32([2, 1])));
    expect(gi[0]).toBe(2000);
    expect(Math.abs(gi[1]! - (lse - 0.25))).toBeLessThan(1e-14);
    expect(() => losses.softmaxCrossEntropy(lg, i32([1, 2, 0]))).toThrow(ShapeError);
  });

  it("sigmoidBinaryCrossEntropy matches -y·log σ(x) - (1-y)·log(1-σ(x)) and does not overflow", () => {
    const xs = [-3, -0.5, 0, 0.7, 4];
    const ys = [0, 1, 0.5, 1, 0.2];
    const got = data(losses.sigmoidBinaryCrossEntropy(f64(xs), f64(ys)));
    xs.forEach((x, i) => {
      const s = 1 / (1 + Math.exp(-x));
      const want = -ys[i]! * Math.log(s) - (1 - ys[i]!) * Math.log(1 - s);
      expect(Math.abs(got[i]! - want)).toBeLessThan(1e-14);
    });
    const big = data(losses.sigmoidBinaryCrossEntropy(f64([100, -100, 100]), f64([0, 1, 1])));
    expect(big[0]).toBeCloseTo(100, 12);
    expect(big[1]).toBeCloseTo(100, 12);
    expect(big[2]).toBeLessThan(1e-40);
  });
});

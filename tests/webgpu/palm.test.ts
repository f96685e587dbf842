/**
 * @file The dim-32 PaLM fixture (tests/fixtures/palm/small.json, from PyTorch via
 * scripts/fixtures/gen_palm.py) on the WebGPU device: forward logits, loss, and every parameter gradient
 * in float32, as tests/palm.test.ts checks them on the CPU.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { grad, jit, np, palm, tree } from "../../src/index.js";
import type { Value } from "../../src/index.js";
import { device, noGpu } from "./helpers.js";

interface SmallFixture {
  config: { numTokens: number; dim: number; depth: number; heads: number; dimHead: number; ffMult: number };
  params: { path: string; shape: number[]; pid: number; amp: number; offset: number }[];
  tokens: number[][];
  logits: number[][][];
  loss: number;
  grads: Record<string, number[]>;
}

const small: SmallFixture = JSON.parse(readFileSync(new URL("../fixtures/palm/small.json", import.meta.url), "utf8"));

/** The fixture's formula: value[i] = offset + amp·sin(0.37·i + 0.11·pid + 0.3), computed in float64, stored as float32. */
function fill(shape: number[], pid: number, amp: number, offset: number): Value {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = offset + amp * Math.sin(0.37 * i + 0.11 * pid + 0.3);
  return np.array(v, { shape, device: device!.id });
}

function params(): Record<string, any> {
  const root: Record<string, any> = {};
  for (const p of small.params) {
    const parts = p.path.split(".");
    let o = root;
    for (let i = 0; i < parts.length - 1; i++) {
      o[parts[i]!] ??= /^\d+$/.test(parts[i + 1]!) ? [] : {};
      o = o[parts[i]!];
    }
    o[parts.at(-1)!] = fill(p.shape, p.pid, p.amp, p.offset);
  }
  return root;
}

/** |a - e| <= rtol·|e| + atol·max|e| over the array. */
function expectAllClose(what: string, actual: ArrayLike<number>, expected: number[], rtol: number, atol: number): void {
  expect(actual.length, what).toBe(expected.length);
  const floor = atol * Math.max(...expected.map(Math.abs));
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i]! - expected[i]!);
    if (!(err <= rtol * Math.abs(expected[i]!) + floor)) {
      expect.fail(`${what}[${i}]: ${actual[i]} vs ${expected[i]} (rtol ${rtol}, atol ${atol}·max)`);
    }
  }
}

// float32 on lavapipe: the CPU test's rtol 1e-4 / atol 1e-5, widened 3x for the GPU's exp/log/tanh
// (a few ulp) accumulated through two layers and the backward pass.
const RTOL = 3e-4;
const ATOL = 3e-5;

describe.skipIf(noGpu)("PaLM dim 32 on WebGPU against PyTorch (float32)", () => {
  const cfg = { ...small.config, dtype: "float32" as const };
  const i32 = (x: number[][]) => np.array(x, { dtype: "int32", device: device?.id });

  it("logits and loss", async () => {
    const p = params();
    const inputs = i32(small.tokens.map((r) => r.slice(0, -1))); // [2, 11]
    const logits = jit((q: any, t: Value) => palm.apply(q, t, { config: cfg }))(p, inputs) as any;
    expect(logits.device.id).toBe(device!.id);
    expectAllClose("logits", await logits.data(), small.logits.flat(2), RTOL, ATOL);
    const loss = palm.loss(p as any, i32(small.tokens), { config: cfg }) as any;
    expectAllClose("loss", await loss.data(), [small.loss], RTOL, 0);
  });

  it("every parameter gradient", async () => {
    const p = params();
    const tokens = i32(small.tokens);
    const g = jit(grad((q: any) => palm.loss(q, tokens, { config: cfg })))(p);
    expect(tree.leaves(g).length).toBe(small.params.length);
    for (const spec of small.params) {
      const gv = spec.path.split(".").reduce((o: any, k) => o[k], g) as any;
      expect(gv.device.id).toBe(device!.id);
      expectAllClose(spec.path, await gv.data(), small.grads[spec.path]!, RTOL, ATOL);
    }
  });
});

/**
 * @file Tests of src/rl/common.ts against values worked out by hand (logits chosen so the softmax is
 * exact: [0, ln 3] gives probabilities 1/4 and 3/4), and its named errors.
 */
import "../src/index.js";
import { describe, expect, it } from "vitest";
import { grad, np, ShapeError, vmap } from "../src/index.js";
import type { Value } from "../src/index.js";
import type { Array as WArray } from "../src/ops/array.js";
import { entropyFromLogits, maskedMean, maskedSum, maskedVar, maskedWhiten, responseMask, sequenceLogProbs, tokenLogProbs } from "../src/rl/common.js";

const data = (v: Value): number[] => globalThis.Array.from((v as WArray).dataSync(), Number);
const f64 = (x: unknown): Value => np.array(x as number[], { dtype: "float64" });
const i32 = (x: unknown): Value => np.array(x as number[], { dtype: "int32" });
const close = (got: number[], want: number[], tol = 1e-12): void => {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => expect(Math.abs(g - want[i]!), `entry ${i}: ${g} vs ${want[i]}`).toBeLessThanOrEqual(tol * (1 + Math.abs(want[i]!))));
};
const LN3 = Math.log(3);

describe("tokenLogProbs / sequenceLogProbs", () => {
  it("gives log p of the target under softmax(logits)", () => {
    // p = [1/4, 3/4] for logits [0, ln 3]; p = [1/2, 1/2] for [5, 5].
    close(data(tokenLogProbs(f64([[0, LN3], [5, 5]]), i32([1, 0]))), [Math.log(3 / 4), Math.log(1 / 2)]);
  });

  it("aligns position t's logits with token t+1", () => {
    // One row of 3 tokens [0, 1, 1]; position 0 predicts token 1 (p 3/4), position 1 predicts token 1
    // under logits [ln 3, 0] (p 1/4); position 2's logits are unused.
    const logits = f64([[[0, LN3], [LN3, 0], [100, -100]]]);
    close(data(sequenceLogProbs(logits, i32([[0, 1, 1]]))), [Math.log(3 / 4), Math.log(1 / 4)]);
    // Unbatched ([n, V], [n]) too.
    close(data(sequenceLogProbs(f64([[0, LN3], [LN3, 0]]), i32([0, 0]))), [Math.log(1 / 4)]);
  });

  it("differentiates: d log p_y / d logits = onehot(y) − p", () => {
    const g = grad((l: Value) => np.sum(tokenLogProbs(l, i32([1]))))(f64([[0, LN3]]));
    close(data(g), [-1 / 4, 1 - 3 / 4]);
  });

  it("rejects mismatched shapes with a ShapeError", () => {
    expect(() => tokenLogProbs(f64([[0, 1]]), i32([1, 0]))).toThrow(ShapeError);
    expect(() => sequenceLogProbs(f64([[[0, 1], [1, 0]]]), i32([[0, 1, 1]]))).toThrow(ShapeError);
  });
});

describe("entropyFromLogits", () => {
  it("is ln V for a uniform distribution and −Σ p ln p otherwise", () => {
    const want = -(0.25 * Math.log(0.25) + 0.75 * Math.log(0.75));
    close(data(entropyFromLogits(f64([[1, 1, 1, 1], [0, LN3, -1e300, -1e300]]))), [Math.log(4), want]); // p = [1/4, 3/4, 0, 0]
  });
});

describe("masked reductions", () => {
  const x = f64([[1, 2, 3], [4, 5, 6]]);
  const m = np.array([[true, false, true], [false, false, true]], { dtype: "bool" });

  it("maskedSum and maskedMean count only the masked positions (all axes or one axis)", () => {
    close(data(maskedSum(x, m)), [10]);
    close(data(maskedMean(x, m)), [10 / 3]);
    close(data(maskedMean(x, m, { axis: 1 })), [2, 6]);
    close(data(maskedSum(x, i32([[1, 0, 1], [0, 0, 1]]), { axis: 0 })), [1, 0, 9]); // a 0/1 mask works too
  });

  it("maskedMean of an empty mask is 0, not NaN", () => {
    close(data(maskedMean(x, np.zeros([2, 3], { dtype: "bool" }))), [0]);
    close(data(maskedMean(x, np.array([[false, false, false], [true, true, false]], { dtype: "bool" }), { axis: 1 })), [0, 4.5]);
  });

  it("maskedVar: population and unbiased variance of the masked values", () => {
    // Values 1, 3, 6: mean 10/3; squared deviations 49/9, 1/9, 64/9 sum to 114/9.
    close(data(maskedVar(x, m)), [114 / 9 / 3]);
    close(data(maskedVar(x, m, { unbiased: true })), [114 / 9 / 2]);
  });

  it("maskedWhiten: zero mean, unit (unbiased) variance on the mask, 0 elsewhere; shiftMean false keeps the mean", () => {
    const sd = Math.sqrt(114 / 9 / 2);
    const mu = 10 / 3;
    const w = (v: number) => (v - mu) / Math.sqrt(sd * sd + 1e-8);
    close(data(maskedWhiten(x, m)), [w(1), 0, w(3), 0, 0, w(6)], 1e-10);
    close(data(maskedWhiten(x, m, { shiftMean: false })), [w(1) + mu, 0, w(3) + mu, 0, 0, w(6) + mu], 1e-10);
  });

  it("reject a mask of the wrong shape", () => {
    expect(() => maskedSum(x, np.ones([3, 2], { dtype: "bool" }))).toThrow(ShapeError);
    expect(() => maskedMean(x, np.ones([3], { dtype: "bool" }))).toThrow(ShapeError);
  });
});

describe("responseMask", () => {
  const asBits = (v: Value): number[] => data(v).map((b) => (b ? 1 : 0));

  it("marks promptLength <= t < totalLength", () => {
    const m = responseMask(i32([2, 1]), 5, { totalLengths: i32([4, 5]) });
    expect(m.aval.shape).toEqual([2, 5]);
    expect(asBits(m)).toEqual([0, 0, 1, 1, 0, 0, 1, 1, 1, 1]);
    expect(asBits(responseMask(i32([3]), 4))).toEqual([0, 0, 0, 1]);
  });

  it("forActions shifts by one: entry t is set when token t+1 is a response token", () => {
    const m = responseMask(i32([2, 1]), 5, { totalLengths: i32([4, 5]), forActions: true });
    expect(m.aval.shape).toEqual([2, 4]);
    expect(asBits(m)).toEqual([0, 1, 1, 0, 1, 1, 1, 1]);
  });

  it("works under vmap per row and rejects bad shapes", () => {
    const m = vmap((p: Value) => np.squeeze(responseMask(np.expandDims(p, 0), 3), 0))(i32([0, 2]));
    expect(asBits(m)).toEqual([1, 1, 1, 0, 0, 1]);
    expect(() => responseMask(i32([[1]]), 3)).toThrow(ShapeError);
    expect(() => responseMask(i32([1, 2]), 3, { totalLengths: i32([3]) })).toThrow(ShapeError);
  });
});

/**
 * @file For every differentiable primitive in spec.ts, in float64: jvp ≈ central finite differences,
 * the transpose identity ⟨ct, J·t⟩ = ⟨Jᵀ·ct, t⟩ (jvp against vjp), and second order (jvp of grad ≈
 * finite differences of grad), and vmap of jvp / vjp against a loop. Rows whose derivative is zero by
 * definition check that jvp gives 0.
 */
import fc from "fast-check";
import { describe, it } from "vitest";
import { fcParams } from "./harness.js";
import { adBatchCaseArb, adCaseArb, checkJvpFd, checkSecondOrder, checkTranspose, checkVmapOfDerivatives } from "./properties.js";
import { OP_ROWS } from "./spec.js";

const differentiable = OP_ROWS.filter((r) => r.ad === "fd");
const zeroDerivative = OP_ROWS.filter((r) => r.ad === "zero");

describe("jvp ≈ finite differences (float64)", () => {
  for (const row of differentiable) {
    it(row.name, () => fc.assert(fc.property(adCaseArb(row), (c) => checkJvpFd(row, c)), fcParams(150)));
  }
});

describe("jvp is zero where the derivative is zero by definition", () => {
  for (const row of zeroDerivative) {
    it(row.name, () => fc.assert(fc.property(adCaseArb(row), (c) => checkJvpFd(row, c)), fcParams(60)));
  }
});

describe("transpose identity <ct, J t> = <J^T ct, t> (float64)", () => {
  for (const row of differentiable) {
    it(row.name, () => fc.assert(fc.property(adCaseArb(row), (c) => checkTranspose(row, c)), fcParams(150)));
  }
});

describe("second order: jvp(grad) ≈ finite differences of grad (float64)", () => {
  for (const row of differentiable) {
    it(row.name, () => fc.assert(fc.property(adCaseArb(row), (c) => checkSecondOrder(row, c)), fcParams(60)));
  }
});

describe("vmap of jvp and vjp == loop (float64)", () => {
  for (const row of differentiable) {
    it(row.name, () => fc.assert(fc.property(adBatchCaseArb(row), (c) => checkVmapOfDerivatives(row, c)), fcParams(50)));
  }
});

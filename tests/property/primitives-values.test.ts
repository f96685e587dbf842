/**
 * @file For every primitive in spec.ts: results ≈ the float64 reference (float32, float64, int and
 * bool operands as the row allows), abstract evaluation (evalShape) == the real result's
 * shape/dtype/weak type, and jit(f) == f.
 */
import fc from "fast-check";
import { describe, it } from "vitest";
import { fcParams } from "./harness.js";
import { checkAbstract, checkJit, checkReference, largeCaseArb, valueCaseArb } from "./properties.js";
import { OP_ROWS } from "./spec.js";

describe("result ≈ float64 reference", () => {
  for (const row of OP_ROWS) {
    it(row.name, () => fc.assert(fc.property(valueCaseArb(row), (c) => checkReference(row, c)), fcParams(400)));
  }
});

describe("abstract evaluation == real result", () => {
  for (const row of OP_ROWS) {
    it(row.name, () => fc.assert(fc.property(valueCaseArb(row), (c) => checkAbstract(row, c)), fcParams(100)));
  }
});

describe("jit(f) == f", () => {
  for (const row of OP_ROWS) {
    it(row.name, () => fc.assert(fc.property(valueCaseArb(row), (c) => checkJit(row, c)), fcParams(100)));
  }
});

describe("large operands (backend fast paths) ≈ float64 reference", () => {
  for (const row of OP_ROWS) {
    it(row.name, () => fc.assert(fc.property(largeCaseArb(row), (c) => checkReference(row, c)), fcParams(15)));
  }
});

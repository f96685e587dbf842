/**
 * @file The spec table itself: one row per registered primitive (and no row for an unknown one), rows
 * that are well formed, and self-checks of the hand-written references against published values, so a
 * wrong reference cannot make a wrong primitive pass.
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import "../../src/index.js";
// Control flow registers its primitives (scan, cond, while) when its module loads; src/index.ts does
// not export it yet, so load it here to check its rows against the registry too.
import "../../src/ops/control-flow.js";
import { primitiveRegistry } from "../../src/autodiff/core.js";
import { bitcastRef, convertRef, erfInvRef, erfRef, roundHalfEven, SPEC, threefryRef } from "./spec.js";

describe("spec table", () => {
  it("has exactly one row per registered primitive", () => {
    const registered = [...primitiveRegistry.keys()].sort();
    const rows = SPEC.map((r) => r.name);
    const dupes = rows.filter((n, i) => rows.indexOf(n) !== i);
    expect(dupes, "rows listed twice").toEqual([]);
    const missing = registered.filter((n) => !rows.includes(n));
    expect(missing, "registered primitives without a spec row (add one to tests/property/spec.ts)").toEqual([]);
    const unknown = rows.filter((n) => !primitiveRegistry.has(n));
    expect(unknown, "spec rows naming no registered primitive").toEqual([]);
  });

  it("higher-order rows point to test files that exist", () => {
    for (const r of SPEC) {
      if (r.kind !== "higherOrder") continue;
      expect(r.testedIn.length, r.name).toBeGreaterThan(0);
      for (const f of r.testedIn) expect(existsSync(resolve(__dirname, "../..", f)), `${r.name}: ${f}`).toBe(true);
    }
  });

  it("op rows are well formed", () => {
    for (const r of SPEC) {
      if (r.kind !== "op") continue;
      expect(r.dtypes.length, r.name).toBeGreaterThan(0);
      if (r.ad !== "none") expect(r.dtypes, `${r.name}: AD rows need float64`).toContain("float64");
      if (r.ad === "none") expect(r.diffArgs, r.name).toEqual([]);
    }
  });
});

describe("references against published values", () => {
  it("threefry2x32 matches Random123's known-answer vectors (kat_vectors, threefry2x32_20)", () => {
    // Random123 1.09, examples/kat_vectors: "threefry2x32 20 <ctr> <key> <expected>".
    expect(threefryRef(0, 0, 0, 0)).toEqual([0x6b200159, 0x99ba4efe]);
    expect(threefryRef(0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff)).toEqual([0x1cb996fc, 0xbb002be7]);
    expect(threefryRef(0x13198a2e, 0x03707344, 0x243f6a88, 0x85a308d3)).toEqual([0xc4923a9c, 0x483df7a0]);
  });

  it("erf and erf_inv match tabulated values (Abramowitz & Stegun table 7.1)", () => {
    expect(erfRef(0)).toBe(0);
    expect(erfRef(0.5)).toBeCloseTo(0.520499877813047, 14);
    expect(erfRef(1)).toBeCloseTo(0.842700792949715, 14);
    expect(erfRef(2)).toBeCloseTo(0.995322265018953, 14);
    expect(erfRef(-1.5)).toBeCloseTo(-0.966105146475311, 14);
    for (const y of [-0.95, -0.3, 0, 0.1, 0.5, 0.9]) expect(erfRef(erfInvRef(y))).toBeCloseTo(y, 14);
  });

  it("round is half to even; convert and bitcast follow the documented rules", () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, 2.4, 2.6].map(roundHalfEven)).toEqual([0, 2, 2, -0, -2, 2, 3]);
    expect(convertRef(-1, "int32", "uint32")).toBe(4294967295);
    expect(convertRef(4294967295, "uint32", "int32")).toBe(-1);
    expect(convertRef(-2.7, "float32", "int32")).toBe(-2);
    expect(convertRef(-2.7, "float32", "uint32")).toBe(0);
    expect(convertRef(3e9, "float64", "int32")).toBe(2147483647);
    expect(convertRef(NaN, "float64", "bool")).toBe(1);
    expect(bitcastRef(1, "float32", "uint32")).toBe(0x3f800000);
    expect(bitcastRef(0xbf800000, "uint32", "float32")).toBe(-1);
  });
});

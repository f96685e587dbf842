/**
 * @file For every primitive in spec.ts: vmap(f) == a loop of f, stacked, with random in/out axes
 * (negative ones included), unbatched operands, batch sizes 0 to 3, and no batched operand at all
 * (axisSize).
 */
import fc from "fast-check";
import { describe, it } from "vitest";
import { fcParams } from "./harness.js";
import { checkVmap, vmapCaseArb } from "./properties.js";
import { OP_ROWS } from "./spec.js";

describe("vmap(f) == loop of f", () => {
  for (const row of OP_ROWS) {
    it(row.name, () => fc.assert(fc.property(vmapCaseArb(row), (c) => checkVmap(row, c)), fcParams(300)));
  }
});

/**
 * @file threefry2x32: the counter-based block cipher (Salmon et al. 2011,
 * https://www.thesalmons.org/john/random123/papers/random123sc11.pdf) that JAX's PRNG is built on. A
 * primitive of its own so every backend computes the exact same bits in one kernel.
 */
import { ShapedArray } from "../../autodiff/aval.js";
import { bind, nonlinear, Value } from "../../autodiff/core.js";
import { DTypeError } from "../../autodiff/errors.js";
import { definePrimitive, OpsPrimitive } from "../primitive.js";
import { moveTo0, sameShapeDtype } from "./util.js";

export const threefry2x32P: OpsPrimitive<{}> = definePrimitive<{}>({
  name: "threefry2x32",
  abstractEval: (avals) => {
    const { shape, dtype } = sameShapeDtype("threefry2x32", avals);
    if (dtype !== "uint32") throw new DTypeError(`threefry2x32: operands must be uint32, got ${dtype}`);
    return [new ShapedArray(shape, "uint32"), new ShapedArray(shape, "uint32")];
  },
  jvp: (xs) => [bind(threefry2x32P, xs, {}), [null, null]],
  transpose: nonlinear,
  vmap: (xs, dims, _p, size) => {
    const d0 = dims.find((d) => d !== null)!;
    if (dims.every((d) => d === d0)) return [bind(threefry2x32P, xs, {}), [d0, d0]];
    return [bind(threefry2x32P, xs.map((x, i) => moveTo0(x, dims[i]!, size)), {}), [0, 0]];
  },
  lower: (b, [k0, k1, x0, x1]) => b.threefry2x32(k0!, k1!, x0!, x1!),
});

/** Threefry-2x32 of counters (x0, x1) under key (k0, k1); all uint32 of one shape. */
export function threefry2x32(k0: Value, k1: Value, x0: Value, x1: Value): [Value, Value] {
  const [a, b] = bind(threefry2x32P, [k0, k1, x0, x1], {});
  return [a!, b!];
}

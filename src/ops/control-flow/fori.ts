/**
 * @file `fori(lower, upper, body, init)`: JAX's `lax.fori_loop`. With JS-number bounds the trip count is
 * static and the loop is a `scan` over an (i, carry) pair, so it is reverse-differentiable; with traced
 * bounds it is a `whileLoop` (forward-mode only), as in JAX.
 */
import { isInt } from "../../autodiff/aval.js";
import { hooks, Value } from "../../autodiff/core.js";
import { ArgumentError, DTypeError, ShapeError } from "../../autodiff/errors.js";
import { add, convert, full, lt } from "../lax/elementwise.js";
import { scan } from "./scan.js";
import { whileLoop } from "./while.js";

function bound(what: string, x: unknown): Value {
  const v = hooks().asValue(x, `fori ${what}`);
  if (v.aval.ndim !== 0) throw new ShapeError(`fori: ${what} must be a scalar, got ${v.aval.str()}`);
  if (!isInt(v.aval.dtype)) {
    throw new DTypeError(`fori: ${what} must be an integer, got ${v.aval.dtype}\nTip: cast with np.astype(x, "int32")`);
  }
  return convert(v, "int32");
}

/**
 * `fori(lower, upper, body, init)`: `for (let i = lower; i < upper; i++) carry = body(i, carry)`, with
 * `i` an int32 scalar array. Static (JS number) bounds lower to `scan` (differentiable in both modes);
 * array bounds lower to `whileLoop`.
 */
export function fori<C = any>(lower: number | Value, upper: number | Value, body: (i: Value, carry: C) => C, init: C): C {
  if (typeof body !== "function") throw new ArgumentError(`fori: body must be a function, got ${typeof body}`);
  if (typeof lower === "number" && typeof upper === "number") {
    if (!Number.isInteger(lower) || !Number.isInteger(upper)) {
      throw new ArgumentError(`fori: bounds must be integers, got lower=${lower} upper=${upper}`);
    }
    const length = Math.max(0, upper - lower);
    const one = full([], 1, "int32");
    const [[, out]] = scan(
      ([i, c]: [Value, C]) => [[add(i, one), body(i, c)], null] as [[Value, C], null],
      [full([], lower, "int32"), init] as [Value, C],
      null,
      { length },
    );
    return out;
  }
  const lo = typeof lower === "number" ? full([], lower, "int32") : bound("lower", lower);
  const hi = typeof upper === "number" ? full([], upper, "int32") : bound("upper", upper);
  const one = full([], 1, "int32");
  const [, , out] = whileLoop(
    ([i, u]: [Value, Value, C]) => lt(i, u),
    ([i, u, c]: [Value, Value, C]) => [add(i, one), u, body(i, c)] as [Value, Value, C],
    [lo, hi, init] as [Value, Value, C],
  );
  return out;
}

/**
 * @file Broadcasting and dtype promotion against committed fixtures from independent implementations:
 * tests/fixtures/broadcast.json (numpy's np.broadcast_shapes, scripts/fixtures/gen_broadcast.py) and
 * tests/fixtures/promotion.json (PyTorch, plus JAX's published table for uint32 and weak types,
 * scripts/fixtures/gen_promotion.py). Regenerate the fixtures with those scripts; never edit them to
 * match the library.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { evalShape, np, ShapeError, WebgradError } from "../../src/index.js";
import type { DType, ShapedArray, Value } from "../../src/index.js";
import { assertClose, build, fromLib, ravel, sizeOf, toLib } from "./harness.js";

interface BroadcastCase {
  shapes: number[][];
  result: number[] | null;
}

interface PromotionCase {
  op: string;
  a: string;
  b: string;
  dtype?: DType;
  weak?: boolean;
  shape?: number[];
  error?: string;
  source: string;
}

const fixture = <T>(name: string): { source: string; cases: T[] } =>
  JSON.parse(readFileSync(resolve(__dirname, "../fixtures", name), "utf8"));

const broadcast = fixture<BroadcastCase>("broadcast.json");
const promotion = fixture<PromotionCase>("promotion.json");

const label = (shapes: number[][]) => shapes.map((s) => `[${s.join(",")}]`).join(" ");

/** Runs fn; returns its result, or the error it threw. */
function attempt<T>(fn: () => T): { ok: true; value: T } | { ok: false; error: unknown } {
  try {
    return { ok: true, value: fn() };
  } catch (error) {
    return { ok: false, error };
  }
}

function expectShapeOrError(what: string, shapes: number[][], want: number[] | null, fn: () => readonly number[]): void {
  const r = attempt(fn);
  if (want === null) {
    expect(r.ok, `${what} ${label(shapes)} should fail (numpy cannot broadcast)`).toBe(false);
    if (!r.ok) expect(r.error, `${what} ${label(shapes)}`).toBeInstanceOf(ShapeError);
  } else {
    if (!r.ok) throw new Error(`${what} ${label(shapes)}: threw ${String(r.error)}; numpy gives [${want.join(",")}]`);
    expect([...r.value], `${what} ${label(shapes)}`).toEqual(want);
  }
}

describe(`broadcasting (${broadcast.source})`, () => {
  it("fixture is non-trivial", () => {
    expect(broadcast.cases.length).toBeGreaterThan(300);
    expect(broadcast.cases.some((c) => c.result === null)).toBe(true);
  });

  it("np.broadcastShapes", () => {
    for (const c of broadcast.cases) expectShapeOrError("broadcastShapes", c.shapes, c.result, () => np.broadcastShapes("test", ...c.shapes));
  });

  it("np.add (pairs) and np.where (triples): result shapes, and ShapeError where numpy fails", () => {
    for (const c of broadcast.cases) {
      if (c.shapes.length === 2) {
        expectShapeOrError("np.add", c.shapes, c.result, () => np.add(np.zeros(c.shapes[0]!), np.zeros(c.shapes[1]!)).shape);
      } else {
        const [a, b, d] = c.shapes as [number[], number[], number[]];
        expectShapeOrError("np.where", c.shapes, c.result, () => np.where(np.zeros(a, { dtype: "bool" }), np.zeros(b), np.zeros(d)).shape);
      }
    }
  });

  it("abstract evaluation (evalShape) agrees", () => {
    for (const c of broadcast.cases.filter((k) => k.shapes.length === 2)) {
      expectShapeOrError("evalShape(np.add)", c.shapes, c.result, () =>
        (evalShape((x: Value, y: Value) => np.add(x, y), np.zeros(c.shapes[0]!), np.zeros(c.shapes[1]!)) as ShapedArray).shape,
      );
    }
  });

  it("broadcast values: (x + y)[i] = x[i'] + y[i''] with numpy's index rule", () => {
    for (const c of broadcast.cases) {
      if (c.shapes.length !== 2 || c.result === null || sizeOf(c.result) > 200) continue;
      const [sa, sb] = c.shapes as [number[], number[]];
      const x = build(sa, "float32", (i) => 1 + i.reduce((acc, v, k) => acc * 5 + v + k, 0));
      const y = build(sb, "float32", (i) => 100 * (1 + i.reduce((acc, v, k) => acc * 7 + v + 2 * k, 0)));
      const out = c.result;
      // numpy: align trailing axes; a size-1 axis reads index 0.
      const pick = (s: number[], j: number[]) => s.map((d, k) => (d === 1 ? 0 : j[out.length - s.length + k]!));
      const want = build(out, "float32", (j) => x.data[ravel(pick(sa, j), sa)]! + y.data[ravel(pick(sb, j), sb)]!);
      assertClose(fromLib(np.add(toLib(x), toLib(y))), want, { rtol: 0, atol: 0 }, `np.add values ${label(c.shapes)}`);
      for (const [s, v] of [[sa, x], [sb, y]] as const) {
        const bt = fromLib(np.broadcastTo(toLib(v), out));
        assertClose(bt, build(out, "float32", (j) => v.data[ravel(pick(s, j), s)]!), { rtol: 0, atol: 0 }, `np.broadcastTo [${s}] -> [${out}]`);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------------

/** The JS value a fixture operand kind stands for (see gen_promotion.py). */
function operand(kind: string): Value | number | boolean {
  switch (kind) {
    case "py_int":
      return 3;
    case "py_float":
      return 2.5;
    case "py_bool":
      return true;
    case "bool":
      return np.array([true, false]);
    default:
      return np.array([1, 2], { dtype: kind as DType });
  }
}

const OPS: Record<string, (a: any, b: any) => Value> = {
  add: np.add,
  subtract: np.subtract,
  multiply: np.multiply,
  divide: np.divide,
  maximum: np.maximum,
  power: np.power,
  equal: np.equal,
  where: (a, b) => np.where(np.array([true, false]), a, b),
  concatenate: (a, b) => np.concatenate([a, b]),
};

describe(`dtype promotion (${promotion.source})`, () => {
  it("fixture covers every op and kind", () => {
    expect(new Set(promotion.cases.map((c) => c.op))).toEqual(new Set(Object.keys(OPS)));
    expect(promotion.cases.length).toBeGreaterThan(400);
  });

  for (const op of Object.keys(OPS)) {
    it(`np.${op}`, () => {
      const problems: string[] = [];
      for (const c of promotion.cases.filter((k) => k.op === op)) {
        const what = `np.${op}(${c.a}, ${c.b}) [${c.source}]`;
        const r = attempt(() => OPS[op]!(operand(c.a), operand(c.b)));
        if (c.error !== undefined) {
          if (r.ok) problems.push(`${what}: expected an error (${c.error}), got ${r.value.aval.str()}`);
          else if (!(r.error instanceof WebgradError)) problems.push(`${what}: threw a non-webgrad error ${String(r.error)}`);
          continue;
        }
        if (!r.ok) {
          problems.push(`${what}: threw ${String(r.error)}, expected ${c.dtype}`);
          continue;
        }
        const a = r.value.aval;
        if (a.dtype !== c.dtype) problems.push(`${what}: dtype ${a.dtype}, expected ${c.dtype}`);
        if (a.weakType !== c.weak) problems.push(`${what}: weak ${a.weakType}, expected ${c.weak}`);
        if (a.shape.join(",") !== c.shape!.join(",")) problems.push(`${what}: shape [${a.shape}], expected [${c.shape}]`);
      }
      expect(problems).toEqual([]);
    });
  }
});

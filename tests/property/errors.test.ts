/**
 * @file Named errors: each failure mode throws its class from src/autodiff/errors.ts with a message of
 * the form "<op>: <expectation>, got <actual>" that names the offending shapes / dtypes / values, and
 * the library is still usable afterwards (no trace left on the stack). Shape-mismatch cases are also
 * generated at random: every pair of non-broadcastable shapes must raise a ShapeError naming both.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  ArgumentError,
  ConcretizationError,
  customVjp,
  DTypeError,
  grad,
  jit,
  jvp,
  lax,
  linearize,
  np,
  ShapeError,
  TreeMismatchError,
  UnexpectedTracerError,
  vjp,
  vmap,
  WebgradError,
} from "../../src/index.js";
import type { Value } from "../../src/index.js";
import { fcParams } from "./harness.js";

type ErrorClass = new (...args: any[]) => Error;

/** Runs `fn`, expecting an error of class `cls` whose message has the "<op>: ..." form and all `words`. */
function expectError(fn: () => unknown, cls: ErrorClass, words: readonly string[]): Error {
  let caught: unknown = null;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, `expected ${cls.name}, but nothing was thrown`).not.toBeNull();
  const err = caught as Error;
  expect(err.constructor.name, `wrong class; message: ${err.message}`).toBe(cls.name);
  expect(err).toBeInstanceOf(cls);
  expect(err).toBeInstanceOf(WebgradError);
  expect(err.name).toBe(cls.name);
  expect(err.message, "message should start with '<op>: '").toMatch(/^[\w.()\s[\]-]+: /);
  for (const w of words) expect(err.message, `message should mention ${JSON.stringify(w)}`).toContain(w);
  return err;
}

const f32 = (shape: number[]) => np.ones(shape);

/** Works after an error: the trace stack is clean. */
function stillWorks(): void {
  const g = grad((x: Value) => np.sum(np.square(x)))(np.array([1, 2]));
  expect(Array.from((g as any).dataSync())).toEqual([2, 4]);
}

describe("shape errors", () => {
  it("np.add of non-broadcastable shapes names both shapes", () => {
    expectError(() => np.add(f32([3]), f32([4])), ShapeError, ["add", "[3]", "[4]", "broadcast"]);
    expectError(() => np.add(f32([2, 3]), f32([3, 2])), ShapeError, ["add", "[2, 3]", "[3, 2]"]);
    expectError(() => lax.add(f32([2]), f32([3])), ShapeError, ["add", "[2]", "[3]", "Tip:"]);
  });

  it("random non-broadcastable pairs always raise a ShapeError naming both shapes", () => {
    const dim = fc.integer({ min: 0, max: 4 });
    fc.assert(
      fc.property(fc.array(dim, { maxLength: 3 }), fc.array(dim, { maxLength: 3 }), fc.integer({ min: 1, max: 3 }), (a, b, k) => {
        // Force a clash on the last axis: sizes d and d+k, neither 1.
        const d = 2 + (a.length % 2);
        const sa = [...a, d];
        const sb = [...b, d + k];
        const e = expectError(() => np.add(f32(sa), f32(sb)), ShapeError, ["add", `[${sa.join(", ")}]`, `[${sb.join(", ")}]`]);
        expect(e.message).toContain("broadcast");
      }),
      fcParams(30),
    );
    stillWorks();
  });

  it("matmul contraction and batch mismatches", () => {
    expectError(() => np.matmul(f32([2, 3]), f32([4, 5])), ShapeError, ["matmul", "[2, 3]", "[4, 5]", "3", "4"]);
    expectError(() => np.matmul(f32([2, 2, 3]), f32([3, 3, 5])), ShapeError, ["matmul", "broadcast"]);
    expectError(() => np.matmul(f32([]), f32([3])), ShapeError, ["matmul", "scalar", "Tip:"]);
    expectError(() => lax.dotGeneral(f32([2, 3]), f32([4, 5]), { contracting: [[1], [0]], batch: [[], []] }), ShapeError, [
      "dot_general",
      "contracting",
      "3",
      "4",
    ]);
  });

  it("reshape to a different size names the shape and the size", () => {
    expectError(() => np.reshape(f32([2, 3]), [4, 2]), ShapeError, ["reshape", "[2,3]", "6", "[4, 2]"]);
    expectError(() => np.reshape(f32([2, 3]), [4, -1]), ShapeError, ["reshape", "[4, -1]"]);
    expectError(() => lax.reshape(f32([2, 3]), [5]), ShapeError, ["reshape", "6", "[5]"]);
  });

  it("out-of-range axes and mismatched concatenation", () => {
    expectError(() => np.sum(f32([3]), { axis: 3 }), ShapeError, ["sum", "axis 3", "rank 1"]);
    expectError(() => np.concatenate([f32([2, 3]), f32([2, 4])], 0), ShapeError, ["concatenate", "[2,3]", "[2,4]"]);
  });
});

describe("dtype errors", () => {
  it("lax.sin of an int array", () => {
    expectError(() => lax.sin(np.array([1, 2], { dtype: "int32" })), DTypeError, ["sin", "float", "int32"]);
  });

  it("lax binary ops need one dtype", () => {
    expectError(() => lax.add(f32([2]), np.array([1, 2], { dtype: "int32" })), DTypeError, ["add", "float32", "int32"]);
  });

  it("lax.concatenate of different dtypes is a DTypeError", () => {
    expectError(() => lax.concatenate([f32([2]), np.array([1, 2], { dtype: "int32" })], 0), DTypeError, ["concatenate", "float32", "int32"]);
  });

  it("unknown dtype names", () => {
    expectError(() => np.astype(f32([3]), "float16" as never), DTypeError, ["astype", "float16"]);
  });

  it("grad of int inputs or int outputs", () => {
    expectError(() => grad((x: Value) => np.sum(x))(np.array([1, 2], { dtype: "int32" })), DTypeError, ["grad", "float", "int32", "Tip:"]);
    expectError(() => grad((x: Value) => np.sum(np.astype(x, "int32")))(f32([3])), DTypeError, ["grad", "float", "int32"]);
  });

  // float64 where the device does not allow it (WebGPU) is not testable on the CPU backend, which
  // supports float64: that case belongs to the WebGPU suites.
});

describe("transform argument errors", () => {
  const sum = (x: Value) => np.sum(x);

  it("wrong argnums", () => {
    expectError(() => grad(sum, { argnums: 5 })(f32([3])), ArgumentError, ["grad", "argnums", "5"]);
    expectError(() => grad(sum, { argnums: -3 })(f32([3])), ArgumentError, ["grad", "argnums", "-3"]);
    expectError(() => grad(sum, { argnums: 1.5 })(f32([3])), ArgumentError, ["grad", "argnums", "1.5"]);
    expectError(() => grad(sum, { argnums: [] })(f32([3])), ArgumentError, ["grad", "argnums"]);
    expectError(() => jit((x: Value, _n: number) => x, { staticArgnums: 5 })(f32([3]), 1), ArgumentError, ["jit", "staticArgnums", "5"]);
  });

  it("non-scalar output to grad", () => {
    expectError(() => grad((x: Value) => np.sin(x))(f32([3])), ShapeError, ["grad", "scalar", "f32[3]", "Tip:"]);
    expectError(() => grad((x: Value) => [np.sum(x), np.sum(x)])(f32([3])), ShapeError, ["grad", "2 leaves"]);
  });

  it("vmap axis-size mismatch names every mapped leaf", () => {
    expectError(() => vmap((x: Value, y: Value) => np.add(x, y))(f32([3]), f32([4])), ShapeError, ["vmap", "size 3", "size 4"]);
    expectError(() => vmap((x: Value) => x, { inAxes: 2 })(f32([2, 3])), ShapeError, ["vmap", "axis 2", "rank 2"]);
    expectError(() => vmap((x: Value) => x, { inAxes: null })(f32([3])), ArgumentError, ["vmap", "axisSize"]);
  });

  it("forward mode through customVjp", () => {
    const f = customVjp((x: Value) => np.sin(x)).defvjp(
      (x: Value) => [np.sin(x), x],
      (_x: Value, ct: Value) => [ct],
    );
    expectError(() => jvp(f, [f32([3])], [f32([3])]), ArgumentError, ["jvp", "customVjp", "Tip:"]);
    stillWorks();
  });
});

describe("tracers used where a concrete value is needed", () => {
  it("`if (x > 0)` inside grad / jit / vmap is a ConcretizationError", () => {
    const branchy = (x: Value) => ((x as unknown as number) > 0 ? np.sum(x) : np.sum(np.negative(x)));
    expectError(() => grad(branchy)(np.array(1)), ConcretizationError, ["traced", "f32[]", "Tip:", "np.where"]);
    expectError(() => jit(branchy)(np.array(1)), ConcretizationError, ["jit", "traced"]);
    expectError(() => vmap(branchy)(f32([2])), ConcretizationError, ["vmap", "traced"]);
    expectError(() => grad((x: Value) => np.multiply(x, Number(x)))(np.array(1)), ConcretizationError, ["traced"]);
    stillWorks();
  });
});

describe("escaped tracers", () => {
  it("a tracer stored from inside grad and used afterwards is an UnexpectedTracerError", () => {
    let leaked: Value | null = null;
    grad((x: Value) => {
      leaked = np.sin(x);
      return np.sum(x);
    })(f32([3]));
    expectError(() => np.add(leaked!, 1), UnexpectedTracerError, ["tracer", "f32[3]", "after", "Tip:"]);
    expectError(() => grad((x: Value) => np.sum(np.multiply(x, leaked!)))(f32([3])), UnexpectedTracerError, ["tracer", "f32[3]"]);
    stillWorks();
  });

  it("the same for jit and vmap", () => {
    let fromJit: Value | null = null;
    let fromVmap: Value | null = null;
    jit((x: Value) => {
      fromJit = np.sin(x);
      return x;
    })(f32([3]));
    vmap((x: Value) => {
      fromVmap = np.sin(x);
      return x;
    })(f32([2, 3]));
    expectError(() => np.add(fromJit!, 1), UnexpectedTracerError, ["jit", "tracer"]);
    expectError(() => np.exp(fromVmap!), UnexpectedTracerError, ["vmap", "tracer"]);
    stillWorks();
  });
});

describe("tree mismatches", () => {
  it("jvp primals vs tangents", () => {
    expectError(() => jvp((x: Value, y: Value) => np.add(x, y), [f32([3]), f32([3])], [f32([3])]), TreeMismatchError, ["jvp", "structure"]);
    expectError(() => jvp((p: { a: Value }) => np.sum(p.a), [{ a: f32([3]) }], [{ b: f32([3]) }]), TreeMismatchError, ["jvp", "a", "b"]);
    expectError(() => jvp((x: Value) => np.sum(x), [f32([3])], [f32([4])]), ShapeError, ["jvp", "tangent", "f32[3]", "f32[4]"]);
    expectError(() => jvp((x: Value) => np.sum(x), [f32([3])], [np.ones([3], { dtype: "float64" })]), DTypeError, ["jvp", "float32", "float64"]);
  });

  it("vmap inAxes vs arguments", () => {
    expectError(() => vmap((p: { a: Value }) => np.sum(p.a), { inAxes: [{ b: 0 }] })({ a: f32([3]) }), TreeMismatchError, ["vmap", "inAxes", "a", "b"]);
    // One inAxes entry for two positional arguments: a tree mismatch too (errors.ts: "vmap axes vs arguments").
    expectError(() => vmap((x: Value, y: Value) => np.add(x, y), { inAxes: [0] })(f32([3]), f32([3])), TreeMismatchError, ["vmap", "inAxes"]);
  });

  it("vjp cotangent and linearize tangents vs the function's structure", () => {
    expectError(() => vjp((x: Value) => [x, x], f32([3]))[1](f32([3]) as never), TreeMismatchError, ["vjp", "structure"]);
    expectError(() => vjp((x: Value) => x, f32([3]))[1](f32([4])), ShapeError, ["vjp", "cotangent", "f32[3]", "f32[4]"]);
    expectError(() => linearize((x: Value) => x, f32([3]))[1](f32([3]), f32([3])), TreeMismatchError, ["linearize", "structure"]);
    stillWorks();
  });
});

describe("bad host input", () => {
  it("ragged lists and non-array values", () => {
    expectError(() => np.array([[1, 2], [3]] as never), ShapeError, ["np.array", "rectangular"]);
    expectError(() => np.sin("abc" as never), ArgumentError, ["np.sin", "string"]);
  });
});

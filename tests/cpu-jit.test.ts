/**
 * @file The jit compiler's CPU target (src/ops/backend/cpu/compile/): `jit(f)` compiled for the CPU
 * equals the CPU backend run op by op (the interpreter's results) for every op row of the spec table
 * (tests/property/spec.ts) in every dtype the row covers, float64 included; random programs and their
 * gradients (fast-check) too; fused kernel counts on known programs (counted by hand from the fusion
 * rules); float64 kept float64; non-contiguous inputs; scans; and donation (a donated parameter's
 * storage is reused for the updated parameter, never while a view of it is alive elsewhere).
 * The eager CPU results are the oracle here; they are themselves checked against float64 references
 * in tests/property/.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bind, primitiveRegistry } from "../src/autodiff/core.js";
import { scan } from "../src/ops/control-flow/scan.js";
import { sliceInDim } from "../src/ops/lax/structural.js";
import { CpuBuffer } from "../src/ops/backend/cpu/buffer.js";
import { installCpuJitTarget } from "../src/ops/backend/cpu/compile/index.js";
import { installJitCompiler, lastJitStats, resetJitStats, uninstallJitCompiler } from "../src/ops/compile/index.js";
import { dispose, grad, jit, nn, np, Array as WArray, type DType, type Value } from "../src/index.js";
import { assertClose, HostArray, seedArb, Tol } from "./property/harness.js";
import { makeData, OP_ROWS, OpRow, Sig } from "./property/spec.js";
import { progArb as randomProgArb, programData, programLoss, runProgram, type Prog, type ProgramOptions } from "./property/random-programs.js";

const RUNS = Number(process.env.CPU_JIT_FC_RUNS ?? "6") || 6;
const seedOpt = process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {};

function host(v: Value | unknown): HostArray {
  if (!(v instanceof WArray)) throw new Error(`expected a concrete Array, got ${String(v)}`);
  const d = v.dataSync();
  return { shape: [...v.shape], dtype: v.dtype, data: Float64Array.from(d as ArrayLike<number>, Number) };
}

beforeAll(() => {
  installJitCompiler();
  installCpuJitTarget();
});
afterAll(() => uninstallJitCompiler());

/** The CPU storage of an array (tests only). */
const storage = (a: Value): unknown => ((a as WArray).buffer as CpuBuffer).data;

// ---------------------------------------------------------------------------------------------------
// Every primitive

/**
 * Compiled vs op by op on the same backend: the same kernels run (fused elementwise kernels are
 * bit-identical to the eager ones except for the documented few-ulp float32 transcendental
 * approximations, which eager float32 ops of the same size use as well), so float32 gets the row's
 * tolerance and every other dtype must match exactly.
 */
function tolFor(row: OpRow, dtype: DType): Tol {
  if (dtype === "float32") return row.tol32;
  if (dtype === "float64") return { rtol: 1e-13, atol: 1e-15 };
  return { rtol: 0, atol: 0 };
}

function caseArb(row: OpRow) {
  return fc.tuple(row.sig("value"), seedArb).map(([sig, seed]) => {
    const data = makeData(sig, seed, "value");
    const str = () =>
      `params ${JSON.stringify(sig.params)}; operands ${data.map((x) => `${x.dtype}[${x.shape.join(",")}] ${JSON.stringify(Array.from(x.data))}`).join("; ")}`;
    return Object.assign({ sig, data }, { [fc.toStringMethod]: str });
  });
}

function checkRow(row: OpRow, sig: Sig, data: HostArray[]): void {
  const prim = primitiveRegistry.get(row.name)!;
  const f = (...xs: Value[]): Value[] => bind(prim, xs, sig.params);
  const what = `${row.name} (params ${JSON.stringify(sig.params)}; ${sig.operands.map((o) => `${o.dtype}[${o.shape.join(",")}]`).join(", ")})`;
  const ins = data.map((x) => np.array(x.data, { shape: x.shape, dtype: x.dtype }));
  const want = f(...ins);
  resetJitStats();
  const got = jit(f)(...ins) as Value[];
  try {
    expect(lastJitStats(), `${what}: ran compiled`).not.toBeNull();
    expect(got.length).toBe(want.length);
    want.forEach((w, i) => {
      const wh = host(w);
      assertClose(host(got[i]), wh, tolFor(row, wh.dtype), `${what}: jit on cpu vs eager cpu, output ${i}`);
    });
  } finally {
    dispose([ins, want, got]);
  }
}

describe("jit on the CPU target == eager CPU, every spec row", () => {
  for (const row of OP_ROWS) {
    it(row.name, () => {
      fc.assert(fc.property(caseArb(row), (c) => checkRow(row, c.sig, c.data)), { numRuns: RUNS, ...seedOpt });
    });
  }
  it("large operands of the rows with a large scale (Wasm paths)", () => {
    for (const row of OP_ROWS) {
      let arb: fc.Arbitrary<Sig>;
      try {
        arb = row.sig("value", "large");
      } catch {
        continue;
      }
      const cases = fc.sample(fc.tuple(arb, seedArb), { numRuns: 1, ...seedOpt });
      for (const [sig, seed] of cases) checkRow(row, sig, makeData(sig, seed, "value"));
    }
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------------
// Random programs (tests/property/random-programs.ts; as tests/webgpu/jit-random.test.ts, on the CPU target)

const PROGRAMS: ProgramOptions = { concat: "flip", pad: false, dtypes: ["float32", "float64"] };
const progArb = randomProgArb(PROGRAMS);

function checkProg(prog: Prog, seed: number, mode: "value" | "grad"): void {
  const ins = programData(prog, seed).map((d, i) => np.array(d, { shape: prog.shapes[i], dtype: prog.dtype }));
  const g = (...xs: Value[]) => grad(programLoss(prog), { argnums: [0, 1, 2, 3] })(...xs) as Value[];
  const f = (...xs: Value[]) => runProgram(prog, xs);
  const want = mode === "value" ? f(...ins) : g(...ins);
  resetJitStats();
  const got = (mode === "value" ? jit(f) : jit(g))(...ins) as Value[];
  try {
    expect(lastJitStats()).not.toBeNull();
    for (let k = 0; k < want.length; k++) {
      const w = host(want[k]);
      const gk = host(got[k]);
      expect(gk.shape).toEqual(w.shape);
      expect(gk.dtype).toBe(prog.dtype);
      const tol = prog.dtype === "float64" ? 1e-12 : 2e-5;
      assertClose(gk, w, { rtol: tol, atol: tol }, `output ${k} (${mode})`);
    }
  } finally {
    dispose([ins, want, got]);
  }
}

describe("random programs: jit on the CPU target == eager CPU", () => {
  it("elementwise, broadcasts, reductions, matmuls, views, gathers, concatenations", () => {
    fc.assert(fc.property(progArb, fc.nat(1 << 30), (p, s) => checkProg(p, s, "value")), { numRuns: RUNS * 5, ...seedOpt });
  }, 60_000);
  it("gradients of the same programs", () => {
    fc.assert(fc.property(progArb, fc.nat(1 << 30), (p, s) => checkProg(p, s, "grad")), { numRuns: RUNS * 3, ...seedOpt });
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------------
// Known programs

const ramp = (n: number, scale = 1, shift = 0, dtype: DType = "float32") =>
  np.array(Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + shift) * scale), { dtype });

describe("fused kernels on known programs", () => {
  it("an elementwise chain is one kernel, bit-identical to eager", () => {
    const f = (x: Value, y: Value) => np.add(np.multiply(np.exp(np.sin(x)), 2), np.divide(y, 3));
    const x = ramp(5000);
    const y = ramp(5000, 2, 1);
    resetJitStats();
    const got = jit(f)(x, y) as WArray;
    expect(lastJitStats()!.kernels).toBe(1);
    // sin and exp of float32 run on the SIMD approximations (<2.5 ulp) in eager and compiled code alike.
    assertClose(host(got), host(f(x, y)), { rtol: 2e-6, atol: 0 }, "chain");
  });

  it("softmax over rows is one kernel (max, exp-sum and the normalised output)", () => {
    const f = (x: Value) => {
      const e = np.exp(np.subtract(x, np.max(x, { axis: 1, keepdims: true })));
      return np.divide(e, np.sum(e, { axis: 1, keepdims: true }));
    };
    const x = np.reshape(ramp(64 * 33, 4), [64, 33]);
    resetJitStats();
    const got = jit(f)(x) as WArray;
    expect(lastJitStats()!.kernels).toBe(1);
    // Each row of a softmax sums to 1 (independent of the implementation).
    const rows = np.sum(got, { axis: 1 }).dataSync();
    for (const r of rows) expect(Math.abs(r - 1)).toBeLessThan(1e-6);
    assertClose(host(got), host(f(x)), { rtol: 1e-6, atol: 1e-7 }, "softmax");
  });

  it("matmul + bias + GELU: one dot kernel with the epilogue, then the reduction reads it", () => {
    const f = (x: Value, w: Value, b: Value) => nn.gelu(np.add(np.matmul(x, w), b));
    const x = np.reshape(ramp(32 * 16), [32, 16]);
    const w = np.reshape(ramp(16 * 24, 0.5, 2), [16, 24]);
    const b = ramp(24, 0.1, 3);
    resetJitStats();
    const got = jit(f)(x, w, b) as WArray;
    const st = lastJitStats()!;
    expect(st.kernels).toBe(1);
    expect(st.plan).toMatch(/dot/);
    assertClose(host(got), host(f(x, w, b)), { rtol: 1e-5, atol: 1e-6 }, "dense");
  });

  it("an MLP training step with matmuls large enough for the Wasm GEMM and repacked operands", () => {
    const loss = (w1: Value, w2: Value, x: Value, y: Value) =>
      np.mean(np.square(np.subtract(np.matmul(nn.gelu(np.matmul(x, w1)), w2), y)));
    const step = (w1: Value, w2: Value, x: Value, y: Value) => {
      const [g1, g2] = grad(loss, { argnums: [0, 1] })(w1, w2, x, y) as Value[];
      return [np.subtract(w1, np.multiply(0.1, g1!)), np.subtract(w2, np.multiply(0.1, g2!))];
    };
    const w1 = np.reshape(ramp(96 * 80, 0.1), [96, 80]);
    const w2 = np.reshape(ramp(80 * 72, 0.1, 1), [80, 72]);
    const x = np.reshape(ramp(64 * 96, 1, 2), [64, 96]);
    const y = np.reshape(ramp(64 * 72, 1, 3), [64, 72]);
    const want = step(w1, w2, x, y);
    resetJitStats();
    const got = jit(step)(w1, w2, x, y) as Value[];
    expect(lastJitStats()!.plan).toMatch(/dot/);
    want.forEach((w, i) => assertClose(host(got[i]), host(w), { rtol: 1e-5, atol: 1e-6 }, `param ${i}`));
  });

  it("float64 programs stay float64 (a difference float32 would round away)", () => {
    const f = (x: Value) => np.subtract(np.sum(np.multiply(x, np.array([1, 1e-16, 1e-16], { dtype: "float64" }))), 1);
    const x = np.array([1, 1, 1], { dtype: "float64" });
    resetJitStats();
    const got = jit(f)(x) as WArray;
    expect(lastJitStats()).not.toBeNull();
    expect(got.dtype).toBe("float64");
    // 1 + 1e-16 + 1e-16 - 1 in float64 with a compensated sum: 2e-16 within an ulp of 1 (2.2e-16).
    expect(Math.abs(got.dataSync()[0]! - 2e-16)).toBeLessThan(2.3e-16);
    expect(got.dataSync()[0]).not.toBe(0);
  });

  it("non-contiguous and offset inputs (transposed, sliced views)", () => {
    const base = np.reshape(ramp(12 * 10, 1, 0.5), [12, 10]);
    const t = np.transpose(base); // [10, 12], a strided view
    const f = (a: Value, b: Value) => np.add(np.tanh(a), np.transpose(b));
    resetJitStats();
    const got = jit(f)(t, base) as WArray;
    expect(lastJitStats()).not.toBeNull();
    // tanh(base^T) + base^T, computed on the host in float64 (tanh of float32 to within 3 ulp).
    const bd = base.dataSync();
    const gd = got.dataSync();
    for (let i = 0; i < 10; i++) {
      for (let j = 0; j < 12; j++) {
        const v = bd[j * 10 + i]!;
        expect(Math.abs(gd[i * 12 + j]! - (Math.tanh(v) + v))).toBeLessThan(1e-6);
      }
    }
    // Rows 3..11 of `base`: a contiguous view at element offset 30.
    const rows = sliceInDim(base, 3, 12, 0);
    const h = jit((a: Value) => np.multiply(a, 2))(rows) as WArray;
    expect(Array.from(h.dataSync())).toEqual(Array.from(bd.slice(30), (v) => v * 2));
  });

  it("fused pad and concatenate read shifted operands across the Wasm kernel's chunks", () => {
    // 10,000 elements span several 4,096-element chunks; the pad's left edge makes the first chunk's
    // reads start before the operand (those lanes are discarded), which must not disturb the rest.
    const n = 10_000;
    const x = np.multiply(np.arange(0, n, 1, { dtype: "float32" }), 1e-3);
    const f = (a: Value) => np.concatenate([np.pad(np.sin(a), [[200, 300]]), np.tanh(a)]);
    resetJitStats();
    const got = (jit(f)(x) as WArray).dataSync();
    expect(lastJitStats()).not.toBeNull();
    const xd = x.dataSync();
    expect(got.length).toBe(n + 500 + n);
    let worst = 0;
    for (let i = 0; i < got.length; i++) {
      const want = i < 200 ? 0 : i < 200 + n ? Math.sin(xd[i - 200]!) : i < n + 500 ? 0 : Math.tanh(xd[i - n - 500]!);
      worst = Math.max(worst, Math.abs(got[i]! - want));
    }
    expect(worst).toBeLessThan(1e-6);
  });

  it("a compiled scan whose body passes arrays through (as carry and ys, and one y several times)", () => {
    const xs = [[1, 2], [3, 4], [5, 6]];
    const body = (h: Value, x: Value) => {
      const n = np.tanh(np.add(h, x));
      return [n, [n, n, h, x]] as [Value, Value[]];
    };
    const f = (h0: Value) => scan(body, h0, np.array(xs, { dtype: "float64" }));
    resetJitStats();
    const [h, [a, b, c, d]] = jit(f)(np.array([0.5, 0.1], { dtype: "float64" })) as unknown as [WArray, WArray[]];
    expect(lastJitStats()).not.toBeNull();
    // The recurrence on the host, in float64.
    let hj = [0.5, 0.1];
    const ns: number[][] = [];
    const hs: number[][] = [];
    for (const x of xs) {
      hs.push(hj);
      hj = hj.map((v, i) => Math.tanh(v + x[i]!));
      ns.push(hj);
    }
    const close = (got: WArray, want: number[]) => Array.from(got.dataSync()).forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThan(1e-12));
    close(h, hj);
    close(a!, ns.flat());
    close(b!, ns.flat());
    close(c!, hs.flat());
    close(d!, xs.flat());
  });

  it("a cached jit call with captured constants reuses its compiled program (no recompile per call)", () => {
    const table = np.array([1, 2, 3]);
    const f = jit((x: Value) => np.multiply(np.add(x, table), np.array([2, 2, 2]))); // two consts
    resetJitStats();
    expect(Array.from((f(np.array([0, 0, 0])) as WArray).dataSync())).toEqual([2, 4, 6]);
    const first = lastJitStats();
    expect(first).not.toBeNull();
    expect(Array.from((f(np.array([1, 1, 1])) as WArray).dataSync())).toEqual([4, 6, 8]);
    expect(lastJitStats()).toBe(first); // the very same compiled program
  });

  it("a scan inside jit runs its compiled body per step", () => {
    const f = (x: Value) => scan((c: Value, xi: Value) => [np.add(np.multiply(c, 0.5), xi), np.sum(c)] as [Value, Value], np.zeros([3]), x);
    const x = np.reshape(np.arange(0, 12, 1, { dtype: "float32" }), [4, 3]);
    const [c, ys] = jit(f)(x) as [WArray, WArray];
    // c_{t+1} = c_t / 2 + x_t by hand: rows 0,1,2 | 3,4,5 | 6,7,8 | 9,10,11.
    const want = [0, 1, 2].map((j) => ((j / 2 + 3 + j) / 2 + 6 + j) / 2 + 9 + j);
    c.dataSync().forEach((v, j) => expect(v).toBeCloseTo(want[j]!, 5));
    expect(ys.shape).toEqual([4]);
    expect(ys.dataSync()[0]).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------------
// Donation and the memory plan

describe("donation and static buffers", () => {
  const sgd = (p: Value, x: Value) => np.subtract(p, np.multiply(0.5, grad((q: Value) => np.sum(np.square(np.subtract(q, x))))(p)));

  it("a donated parameter's storage holds the updated parameter", () => {
    const step = jit(sgd, { donateArgnums: 0 });
    const x = ramp(4096, 1, 1);
    let p = ramp(4096, 2);
    const pd = p.dataSync();
    const xd = x.dataSync();
    for (let call = 0; call < 3; call++) {
      const before = storage(p);
      const next = step(p, x) as WArray;
      expect(p.isDisposed).toBe(true);
      expect(storage(next)).toBe(before);
      // p - 0.5·2(p - x) = x: after one step the parameter equals x (up to float32 rounding).
      if (call === 0) for (let i = 0; i < 64; i++) expect(Math.abs(next.dataSync()[i]! - xd[i]!)).toBeLessThan(1e-6);
      p = next;
    }
    expect(pd.length).toBe(4096);
    dispose([p, x]);
  });

  it("never reuses donated storage that a live view shares", () => {
    const step = jit(sgd, { donateArgnums: 0 });
    const x = ramp(64, 1, 1);
    const p = ramp(64, 2);
    const v = np.reshape(p, [8, 8]); // shares p's storage on the CPU
    const vd = Float64Array.from(v.dataSync());
    const next = step(p, x) as WArray;
    expect(storage(next)).not.toBe(storage(v));
    expect(Array.from(v.dataSync())).toEqual(Array.from(vd, (z) => Math.fround(z)));
    dispose([next, v, x]);
  });

  it("intermediates live in a plan smaller than all of them, the same across calls", () => {
    const f = (x: Value) => {
      let h = x;
      for (let i = 0; i < 4; i++) h = np.sum(np.reshape(np.tanh(np.matmul(np.reshape(h, [16, 16]), np.reshape(h, [16, 16]))), [256, 1]), { axis: 1 });
      return h;
    };
    const x = ramp(256, 0.1);
    const a = jit(f)(x) as WArray;
    const st = lastJitStats()!;
    expect(st.peakBytes).toBeLessThan(st.intermediateBytes);
    const b = jit(f)(x) as WArray;
    expect(Array.from(b.dataSync())).toEqual(Array.from(a.dataSync()));
    assertClose(host(a), host(f(x)), { rtol: 1e-6, atol: 1e-7 }, "chain of matmuls");
  });
});

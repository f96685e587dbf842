/**
 * @file WebGPU structural and index-driven kernels against the CPU backend: views (reshape, transpose,
 * broadcastInDim, slice, reverse — compared by value, and checked to share storage), pad (negative and
 * interior widths), concatenate, gather / scatterAdd (clamped indices, duplicates accumulated in index
 * order: results equal the CPU's exactly), dynamicSlice / dynamicUpdateSlice (device-scalar starts,
 * clamped as XLA), stable multi-key sort (NaN last), and threefry2x32 bit for bit.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { DType } from "../../src/autodiff/aval.js";
import { Arena, bigShapeArb, check, cpu, EXACT, expectMatch, gpu, layoutArb, noGpu, operand, Rng, seedArb, shapeArb, upload } from "./helpers.js";

const DTYPES: readonly DType[] = ["float32", "int32", "uint32", "bool"];

// Skipped only without an adapter: helpers.ts printed why (and fails instead under WEBGRAD_REQUIRE_WEBGPU=1).
describe.skipIf(noGpu)("webgpu structural and indexing ops vs cpu", () => {
  it("view ops compose on views without copies", async () => {
    await check(fc.tuple(shapeArb(4, 5, 1), layoutArb, fc.constantFrom(...DTYPES), seedArb), async ([shape, layout, dtype, seed]) => {
      const a = new Arena();
      const rng = new Rng(seed);
      const x = operand(shape, dtype, layout, rng, a);
      const before = gpu.stats().buffers;
      const perm = [...shape.keys()].sort(() => rng.next() - 0.5);
      let c = cpu.transpose(x.c, perm);
      let g = a.g(gpu.transpose(x.g, perm));
      const axes = [...shape.keys()].filter(() => rng.next() < 0.5);
      c = cpu.reverse(c, axes);
      g = a.g(gpu.reverse(g, axes));
      const s = c.shape;
      const starts = s.map((n) => rng.int(0, Math.max(0, n - 1)));
      const limits = s.map((n, i) => rng.int(starts[i]!, n));
      const steps = s.map(() => rng.int(1, 3));
      c = cpu.slice(c, starts, limits, steps);
      g = a.g(gpu.slice(g, starts, limits, steps));
      const bshape = [2, ...c.shape];
      const dims = c.shape.map((_, i) => i + 1);
      c = cpu.broadcastInDim(c, bshape, dims);
      g = a.g(gpu.broadcastInDim(g, bshape, dims));
      expect(gpu.bytesOf(g)).toBe(0); // a view
      expect(gpu.stats().buffers).toBe(before); // nothing allocated
      await expectMatch(c, g, EXACT, `views ${layout} perm ${perm} rev ${axes}`);
      // reshape: a view when the layout allows, else a copy; values equal either way.
      const flat = [c.shape.reduce((p, v) => p * v, 1)];
      await expectMatch(cpu.reshape(c, flat), a.g(gpu.reshape(g, flat)), EXACT, "reshape flat");
      await expectMatch(cpu.reshape(x.c, [...shape].reverse()), a.g(gpu.reshape(x.g, [...shape].reverse())), EXACT, "reshape");
      a.release();
    });
  });

  it("views share reference-counted storage: releasing one keeps the others alive", async () => {
    const a = new Arena();
    const x = gpu.fromHost(Float32Array.from([1, 2, 3, 4, 5, 6]), { shape: [2, 3], dtype: "float32" });
    const t = gpu.transpose(x, [1, 0]);
    const r = gpu.reshape(x, [6]);
    expect(gpu.bytesOf(x)).toBe(24);
    expect(gpu.bytesOf(t)).toBe(0);
    const pooled = gpu.stats().pooledBuffers;
    gpu.release(x);
    gpu.release(x); // idempotent
    expect(gpu.stats().pooledBuffers).toBe(pooled); // t and r still hold the storage
    expect([...(await gpu.read(t))]).toEqual([1, 4, 2, 5, 3, 6]);
    gpu.release(t);
    expect([...(await gpu.read(r))]).toEqual([1, 2, 3, 4, 5, 6]);
    gpu.release(r);
    expect(gpu.stats().pooledBuffers).toBe(pooled + 1); // the last view returned it
    await expect(gpu.read(r)).rejects.toThrow(/released/);
    a.release();
  });

  it("pad with negative, zero and interior widths", async () => {
    await check(fc.tuple(shapeArb(3, 5, 1), layoutArb, fc.constantFrom(...DTYPES), seedArb), async ([shape, layout, dtype, seed]) => {
      const a = new Arena();
      const rng = new Rng(seed);
      const x = operand(shape, dtype, layout, rng, a);
      const lo = shape.map(() => rng.int(-2, 3));
      const hi = shape.map(() => rng.int(-2, 3));
      const interior = shape.map(() => rng.int(0, 2));
      const ok = shape.every((n, d) => lo[d]! + hi[d]! + n + Math.max(n - 1, 0) * interior[d]! >= 0);
      if (!ok) return;
      const v = dtype === "float32" ? -1.5 : 1;
      await expectMatch(cpu.pad(x.c, v, lo, hi, interior), a.g(gpu.pad(x.g, v, lo, hi, interior)), EXACT, `pad ${lo}/${hi}/${interior}`);
      a.release();
    });
  });

  it("concatenate views along any axis", async () => {
    await check(
      fc.tuple(shapeArb(3, 4, 1), fc.array(fc.tuple(layoutArb, fc.integer({ min: 0, max: 4 })), { minLength: 1, maxLength: 4 }), fc.constantFrom(...DTYPES), seedArb),
      async ([shape, parts, dtype, seed]) => {
        const a = new Arena();
        const rng = new Rng(seed);
        const axis = rng.int(0, shape.length - 1);
        const xs = parts.map(([layout, n]) => operand(shape.map((d, i) => (i === axis ? n : d)), dtype, layout, rng, a));
        await expectMatch(cpu.concatenate(xs.map((x) => x.c), axis), a.g(gpu.concatenate(xs.map((x) => x.g), axis)), EXACT, `concat axis ${axis}`);
        a.release();
      },
    );
  });

  /** x [b..., pre..., len, post...], idx [b..., ind...] with out-of-range indices (clamped). */
  const gatherArb = fc.record({
    batch: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 1 }),
    pre: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }),
    len: fc.integer({ min: 1, max: 7 }),
    post: fc.array(fc.integer({ min: 1, max: 4 }), { maxLength: 2 }),
    ind: fc.array(fc.integer({ min: 1, max: 5 }), { maxLength: 2 }),
    layoutX: layoutArb,
    layoutI: layoutArb,
    dtype: fc.constantFrom(...DTYPES),
    idxType: fc.constantFrom("int32", "uint32" as const),
    seed: seedArb,
  });

  it("gather and scatterAdd with batch dims, clamped and duplicate indices", async () => {
    await check(
      gatherArb,
      async ({ batch, pre, len, post, ind, layoutX, layoutI, dtype, idxType, seed }) => {
        const a = new Arena();
        const rng = new Rng(seed);
        const xShape = [...batch, ...pre, len, ...post];
        const axis = batch.length + pre.length;
        const x = operand(xShape, dtype, layoutX, rng, a, dtype === "float32" ? { lo: -4, hi: 4 } : undefined);
        const idx = operand([...batch, ...ind], idxType, layoutI, rng, a, idxType === "int32" ? { lo: -2, hi: len + 2 } : { lo: 0, hi: len + 2 });
        const gShape = [...batch, ...pre, ...ind, ...post];
        const out = { shape: gShape, dtype };
        await expectMatch(cpu.gather(x.c, idx.c, axis, batch.length, out), a.g(gpu.gather(x.g, idx.g, axis, batch.length, out)), EXACT, "gather");
        if (dtype !== "bool" || rng.next() < 0.5) {
          const u = operand(gShape, dtype, "plain", rng, a, dtype === "float32" ? { lo: -4, hi: 4 } : undefined);
          // Sequential float32 adds in index order on both backends: bit-identical.
          await expectMatch(
            cpu.scatterAdd(x.c, idx.c, u.c, axis, batch.length),
            a.g(gpu.scatterAdd(x.g, idx.g, u.g, axis, batch.length)),
            EXACT,
            `scatter_add ${dtype}`,
          );
        }
        a.release();
      },
      30,
    );
  });

  it("scatterAdd with many duplicates into a long axis (per-column kernel) and a short one (per-slot)", async () => {
    const a = new Arena();
    const rng = new Rng(5);
    for (const [len, n, post] of [
      [5000, 3000, 3],
      [6, 20000, 1],
      [300, 4000, 16],
    ]) {
      const x = operand([len, post], "float32", "plain", rng, a);
      const idx = operand([n], "int32", "plain", rng, a, { lo: -3, hi: len + 3 });
      const u = operand([n, post], "float32", "plain", rng, a);
      await expectMatch(cpu.scatterAdd(x.c, idx.c, u.c, 0, 0), a.g(gpu.scatterAdd(x.g, idx.g, u.g, 0, 0)), EXACT, `scatter [${len},${post}] n=${n}`);
    }
    a.release();
  });

  it("dynamicSlice / dynamicUpdateSlice clamp device-scalar starts as XLA", async () => {
    await check(
      fc.tuple(shapeArb(3, 6, 1), layoutArb, layoutArb, fc.constantFrom(...DTYPES), fc.constantFrom("int32", "uint32" as const), seedArb),
      async ([shape, lx, lu, dtype, st, seed]) => {
        const a = new Arena();
        const rng = new Rng(seed);
        const x = operand(shape, dtype, lx, rng, a);
        const sizes = shape.map((n) => rng.int(0, n));
        const starts = shape.map(() => {
          const v = st === "int32" ? rng.int(-3, 8) : rng.pick([0, 1, 2, 5, 4294967295]);
          return upload(st === "int32" ? Int32Array.from([v]) : Uint32Array.from([v]), [], st, a);
        });
        // Starts may also be views (a slice of a bigger index vector).
        const viewStart = upload(Int32Array.from([9, 1, 9]), [3], "int32", a);
        const s1 = { c: cpu.reshape(cpu.slice(viewStart.c, [1], [2], [1]), []), g: a.g(gpu.reshape(a.g(gpu.slice(viewStart.g, [1], [2], [1])), [])) };
        if (st === "int32") starts[0] = s1;
        await expectMatch(
          cpu.dynamicSlice(x.c, starts.map((s) => s.c), sizes),
          a.g(gpu.dynamicSlice(x.g, starts.map((s) => s.g), sizes)),
          EXACT,
          `dynamic_slice sizes ${sizes}`,
        );
        const u = operand(sizes, dtype, lu, rng, a);
        await expectMatch(
          cpu.dynamicUpdateSlice(x.c, u.c, starts.map((s) => s.c)),
          a.g(gpu.dynamicUpdateSlice(x.g, u.g, starts.map((s) => s.g))),
          EXACT,
          "dynamic_update_slice",
        );
        a.release();
      },
      20,
    );
  });

  it("stable multi-operand sort (NaN last, -0 == 0) along any axis", async () => {
    await check(
      fc.tuple(bigShapeArb.filter((s) => s.length > 0), layoutArb, fc.constantFrom(...DTYPES), fc.integer({ min: 1, max: 3 }), fc.boolean(), seedArb),
      async ([shape, layout, dtype, nOps, nan, seed]) => {
        const a = new Arena();
        const rng = new Rng(seed);
        const axis = rng.int(0, shape.length - 1);
        // Few distinct keys so stability matters; the payload operand is an iota (positions).
        const keyRange = dtype === "float32" ? { lo: -3, hi: 3, integer: true } : dtype === "int32" ? { lo: -3, hi: 3 } : { lo: 0, hi: 5 };
        let key = operand(shape, dtype, layout, rng, a, keyRange);
        if (nan && dtype === "float32") {
          const z = upload(Float32Array.from([0]), [], "float32", a);
          const zb = { c: cpu.broadcastInDim(z.c, shape, []), g: a.g(gpu.broadcastInDim(z.g, shape, [])) };
          // x / 0 with x == 0 -> NaN, x > 0 -> Inf, x < 0 -> -Inf; and -0 from 0 · -1.
          key = { c: cpu.binary("div", key.c, zb.c, { shape, dtype }), g: a.g(gpu.binary("div", key.g, zb.g, { shape, dtype })) };
        }
        const ops = [key];
        for (let i = 1; i < nOps; i++) ops.push(operand(shape, i === 1 ? "int32" : dtype, "plain", rng, a, { lo: 0, hi: 2 }));
        const payload = { c: cpu.iota({ shape, dtype: "int32" }, axis), g: a.g(gpu.iota({ shape, dtype: "int32" }, axis)) };
        ops.push(payload);
        const numKeys = rng.int(1, nOps);
        const cs = cpu.sort(ops.map((o) => o.c), axis, numKeys);
        const gs = a.gs(gpu.sort(ops.map((o) => o.g), axis, numKeys));
        for (let i = 0; i < cs.length; i++) await expectMatch(cs[i]!, gs[i]!, EXACT, `sort operand ${i} axis ${axis} keys ${numKeys}`);
        a.release();
      },
      20,
    );
  });

  it("sort of long lines (global bitonic stages)", async () => {
    const a = new Arena();
    const rng = new Rng(9);
    for (const shape of [[3000], [2, 1500], [1025, 2]]) {
      const x = operand(shape, "float32", "plain", rng, a, { lo: -100, hi: 100, integer: true });
      const axis = shape.length === 2 && shape[1] === 2 ? 0 : shape.length - 1;
      const p = { c: cpu.iota({ shape, dtype: "int32" }, axis), g: a.g(gpu.iota({ shape, dtype: "int32" }, axis)) };
      const cs = cpu.sort([x.c, p.c], axis, 1);
      const gs = a.gs(gpu.sort([x.g, p.g], axis, 1));
      await expectMatch(cs[0]!, gs[0]!, EXACT, `sort keys [${shape}]`);
      await expectMatch(cs[1]!, gs[1]!, EXACT, `sort payload [${shape}] (stability)`);
    }
    a.release();
  });

  it("threefry2x32 is bit-identical to the CPU on views, and matches the Random123 known-answer test", async () => {
    await check(fc.tuple(bigShapeArb, layoutArb, layoutArb, seedArb), async ([shape, l0, l1, seed]) => {
      const a = new Arena();
      const rng = new Rng(seed);
      const full = { lo: 0, hi: 4294967295 };
      const k0 = operand(shape, "uint32", "broadcast", rng, a, full);
      const k1 = operand(shape, "uint32", l0, rng, a, full);
      const x0 = operand(shape, "uint32", l1, rng, a, full);
      const x1 = operand(shape, "uint32", "plain", rng, a, full);
      const [c0, c1] = cpu.threefry2x32(k0.c, k1.c, x0.c, x1.c);
      const [g0, g1] = a.gs(gpu.threefry2x32(k0.g, k1.g, x0.g, x1.g));
      await expectMatch(c0, g0, EXACT, "threefry y0");
      await expectMatch(c1, g1, EXACT, "threefry y1");
      a.release();
    });
    // Known answer (Random123 kat_vectors, threefry2x32_20): key = ctr = 0.
    const a = new Arena();
    const z = upload(Uint32Array.from([0]), [1], "uint32", a);
    const [y0, y1] = a.gs(gpu.threefry2x32(z.g, z.g, z.g, z.g));
    expect([(await gpu.read(y0))[0], (await gpu.read(y1))[0]]).toEqual([0x6b200159, 0x99ba4efe]);
    a.release();
  });
});

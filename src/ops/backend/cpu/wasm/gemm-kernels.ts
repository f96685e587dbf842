/**
 * @file Generates the Wasm SIMD GEMM kernels (one module, float32 and float64 variants) on the layout
 * of K. Goto and R. van de Geijn, "Anatomy of high-performance matrix multiplication", ACM TOMS 2008
 * (https://doi.org/10.1145/1356052.1356053):
 *
 * - `packA{32,64}(src, rs, cs, mc, kc, dst)`: an mc x kc block of A (element strides rs, cs; any sign)
 *   into MR-row slivers, `dst[s][k][i] = A[s·MR + i, k]`, rows past mc zero-filled.
 * - `packB{32,64}(src, rs, cs, kc, nc, dst)`: a kc x nc block of B into NR-column slivers,
 *   `dst[s][k][j] = B[k, s·NR + j]`, columns past nc zero-filled.
 *   Both have vector paths for row-major and transposed sources (see `emitPack`); measured here, in
 *   G elements/s: A row-major 3.3 -> 8.6, A transposed 0.5 -> 2.9, B transposed 0.4 -> 6.1 (B row-major
 *   3.9) — without them, packing a transposed operand cost ~10% of a 1024² product.
 * - `macro{32,64}(tilesM, tilesN, kc, aPack, bPack, c, ldcBytes, accumulate)`: every MR x NR tile of
 *   C over the packed block (C padded to whole tiles, so there are no edge cases), calling
 * - `micro`: the register-blocked tile: MR·NR/lanes v128 accumulators, per k step NR/lanes vector
 *   loads of B and MR broadcast loads (`v128.load32_splat`) of A, multiply-adds, the k loop unrolled
 *   `unroll` times with the offsets folded into the loads' immediates. At the end the tile is stored
 *   into C (or added to it when `accumulate` != 0).
 *
 * Multiply-add is `f32x4.relaxed_madd` when the engine validates it (Node 20's V8 only under a flag,
 * which `enableRelaxedSimd` sets), else `f32x4.mul` + `f32x4.add`. Both reach the same peak on AMD
 * Zen 4 (two 128-bit FMA pipes, or two multiply and two add pipes), but the separate multiply and add
 * take 8 more operations per k step than the front end can issue at that rate (see `enableRelaxedSimd`).
 * Addresses are byte offsets into the imported memory; `zeroAddr` must point at `2 · 8` bytes that stay
 * zero (packing reads padding rows from there).
 */
import { Code, ModuleBuilder, type Local } from "./emitter.js";
import { wasmApi } from "./wasm-api.js";

/** Register tile and unrolling of one element type's kernels. */
export interface TileShape {
  /** Rows of the register tile (broadcast A values per k step). */
  readonly mr: number;
  /** Columns of the register tile, a multiple of the lanes (16 / element bytes). */
  readonly nr: number;
  /** Unrolling of the micro-kernel's k loop (a scheduling fence between unrolled steps). */
  readonly unroll: number;
  /** Also fence after every this many rows inside a step (0: never). */
  readonly fenceRows: number;
}

/** A value of `accumulate` with this bit set would dump the accumulators to `scratchAddr` (never used). */
const FENCE_BIT = 256;

export interface GemmKernelOptions {
  readonly f32: TileShape;
  readonly f64: TileShape;
  /** Use `relaxed_madd` (only when `relaxedSimdAvailable()`). */
  readonly relaxed: boolean;
  /** Whether the imported memory is shared (threads) or not. */
  readonly shared: boolean;
  /** Byte address of 16 zero bytes. */
  readonly zeroAddr: number;
  /** Byte address of 16·MR·NR bytes that the (never taken) fence branch could write. */
  readonly scratchAddr: number;
  /** Pages of the imported memory (minimum and maximum, 64 KiB each). */
  readonly initialPages: number;
  readonly maximumPages: number;
}

/** Names of the exported functions of each element type. */
export interface GemmExports {
  readonly packA32: (src: number, rs: number, cs: number, mc: number, kc: number, dst: number) => void;
  readonly packB32: (src: number, rs: number, cs: number, kc: number, nc: number, dst: number) => void;
  readonly macro32: (
    tilesM: number, tilesN: number, kc: number, a: number, b: number, c: number, ldc: number, acc: number,
  ) => void;
  readonly packA64: (src: number, rs: number, cs: number, mc: number, kc: number, dst: number) => void;
  readonly packB64: (src: number, rs: number, cs: number, kc: number, nc: number, dst: number) => void;
  readonly macro64: (
    tilesM: number, tilesN: number, kc: number, a: number, b: number, c: number, ldc: number, acc: number,
  ) => void;
}

interface ElemOps {
  readonly bytes: 4 | 8;
  readonly lanes: number;
  readonly load: "f32.load" | "f64.load";
  readonly store: "f32.store" | "f64.store";
  readonly splatLoad: "v128.load32_splat" | "v128.load64_splat";
  readonly add: "f32x4.add" | "f64x2.add";
  readonly mul: "f32x4.mul" | "f64x2.mul";
  readonly madd: "f32x4.relaxed_madd" | "f64x2.relaxed_madd";
}

const F32: ElemOps = {
  bytes: 4, lanes: 4, load: "f32.load", store: "f32.store", splatLoad: "v128.load32_splat",
  add: "f32x4.add", mul: "f32x4.mul", madd: "f32x4.relaxed_madd",
};
const F64: ElemOps = {
  bytes: 8, lanes: 2, load: "f64.load", store: "f64.store", splatLoad: "v128.load64_splat",
  add: "f64x2.add", mul: "f64x2.mul", madd: "f64x2.relaxed_madd",
};

/** micro(kc, ap, bp, cp, ldcBytes, accumulate): one MR x NR tile (see the file comment). */
function emitMicro(c: Code, e: ElemOps, t: TileShape, relaxed: boolean, scratchAddr: number): void {
  const [kc, ap, bp, cp, ldc, accumulate] = c.params as [Local, Local, Local, Local, Local, Local];
  const nv = t.nr / e.lanes;
  const acc: Local[] = [];
  for (let i = 0; i < t.mr * nv; i++) acc.push(c.local("v128"));
  const bv: Local[] = [];
  for (let v = 0; v < nv; v++) bv.push(c.local("v128"));
  const av = c.local("v128");
  for (const a of acc) c.v128Zero().set(a);

  // Scheduling fence: a branch never taken at run time (callers pass accumulate 0 or 1) whose body
  // reads every accumulator, so V8's scheduler must finish a k step's multiply-adds before it starts
  // the next step's loads. Without it TurboFan hoists all loads of an unrolled body to its top and
  // spills the accumulators (x64 V8 allocates only xmm0-xmm14): 44 -> 49 GFLOP/s in-cache here.
  const fence = (): void => {
    c.get(accumulate).i32(FENCE_BIT).op("i32.and").if();
    for (let i = 0; i < acc.length; i++) c.i32(scratchAddr).get(acc[i]!).simdMem("v128.store", 16 * i);
    c.end();
  };
  const step = (u: number): void => {
    for (let v = 0; v < nv; v++) c.get(bp).simdMem("v128.load", (u * t.nr + v * e.lanes) * e.bytes).set(bv[v]!);
    for (let i = 0; i < t.mr; i++) {
      c.get(ap).simdMem(e.splatLoad, (u * t.mr + i) * e.bytes).set(av);
      for (let v = 0; v < nv; v++) {
        const a = acc[i * nv + v]!;
        if (relaxed) c.get(av).get(bv[v]!).get(a).simd(e.madd).set(a);
        else c.get(a).get(av).get(bv[v]!).simd(e.mul).simd(e.add).set(a);
      }
      if (t.fenceRows > 0 && i % t.fenceRows === t.fenceRows - 1 && i + 1 < t.mr) fence();
    }
  };
  // Unrolled main loop: while (kc >= unroll).
  c.block().loop();
  c.get(kc).i32(t.unroll).op("i32.lt_u").brIf(1);
  for (let u = 0; u < t.unroll; u++) {
    step(u);
    if (u + 1 < t.unroll) fence();
  }
  c.addTo(ap, t.unroll * t.mr * e.bytes).addTo(bp, t.unroll * t.nr * e.bytes);
  c.get(kc).i32(t.unroll).op("i32.sub").set(kc);
  c.br(0).end().end();
  // Remainder, one k at a time.
  c.countDown(kc, () => {
    step(0);
    c.addTo(ap, t.mr * e.bytes).addTo(bp, t.nr * e.bytes);
  });
  // Store (or accumulate) row by row.
  const storeRows = (add: boolean): void => {
    for (let i = 0; i < t.mr; i++) {
      for (let v = 0; v < nv; v++) {
        const off = v * 16;
        c.get(cp);
        if (add) c.get(cp).simdMem("v128.load", off).get(acc[i * nv + v]!).simd(e.add);
        else c.get(acc[i * nv + v]!);
        c.simdMem("v128.store", off);
      }
      if (i + 1 < t.mr) c.addLocal(cp, ldc);
    }
  };
  c.get(accumulate).if();
  storeRows(true);
  c.else();
  storeRows(false);
  c.end();
}

/** macro(tilesM, tilesN, kc, aPack, bPack, c, ldcBytes, accumulate): all tiles of a packed block. */
function emitMacro(c: Code, e: ElemOps, t: TileShape, micro: number): void {
  const [tilesM, tilesN, kc, aPack, bPack, cBase, ldc, accumulate] = c.params as Local[] as [
    Local, Local, Local, Local, Local, Local, Local, Local,
  ];
  const jr = c.local("i32");
  const ir = c.local("i32");
  const ap = c.local("i32");
  const cp = c.local("i32");
  const aStep = c.local("i32");
  const rowStep = c.local("i32");
  c.get(kc).i32(t.mr * e.bytes).op("i32.mul").set(aStep);
  c.get(ldc).i32(t.mr).op("i32.mul").set(rowStep);
  c.get(tilesN).set(jr);
  // B sliver outer (stays in L1), A slivers of the block streamed from L2.
  c.countDown(jr, () => {
    c.get(aPack).set(ap).get(cBase).set(cp).get(tilesM).set(ir);
    c.countDown(ir, () => {
      c.get(kc).get(ap).get(bPack).get(cp).get(ldc).get(accumulate).call(micro);
      c.addLocal(ap, aStep).addLocal(cp, rowStep);
    });
    c.get(bPack).get(kc).i32(t.nr * e.bytes).op("i32.mul").op("i32.add").set(bPack);
    c.addTo(cBase, t.nr * e.bytes);
  });
}

/**
 * Per-lane source pointer and step for packing: lane `first + i` reads from `src + (first + i)·stride`
 * and advances by `advance` per k when `first + i < limit`, else it reads the zero word with step 0.
 */
function emitLanePointers(
  c: Code, ptrs: Local[], steps: Local[], first: Local, limit: Local, src: Local, strideBytes: Local,
  advanceBytes: Local, zeroAddr: number,
): void {
  for (let i = 0; i < ptrs.length; i++) {
    c.get(first).i32(i).op("i32.add").get(limit).op("i32.lt_s").if();
    c.get(src).get(first).i32(i).op("i32.add").get(strideBytes).op("i32.mul").op("i32.add").set(ptrs[i]!);
    c.get(advanceBytes).set(steps[i]!);
    c.else();
    c.i32(zeroAddr).set(ptrs[i]!).i32(0).set(steps[i]!);
    c.end();
  }
}

/**
 * packA(src, rs, cs, mc, kc, dst) / packB(src, rs, cs, kc, nc, dst): slivers of `width` lanes along the
 * free dim (rows of A, columns of B); `freeStride` / `kStride` are the byte strides along the free dim
 * and along k. Three paths per sliver, chosen at run time:
 * - lanes contiguous (free stride 1, e.g. B row-major, A transposed): each k copies width·eb bytes
 *   with v128 (or i64) loads and stores;
 * - k contiguous (k stride 1, e.g. A row-major, B transposed), float32, width 2 or a multiple of 4:
 *   4 k at a time, loaded per lane as vectors and transposed with shuffles (2 x 4 interleave, or
 *   4 x 4 blocks), then the k % 4 rest by the scalar path;
 * - otherwise (and for partial slivers) scalar copies, padding lanes reading a zero word.
 */
function emitPack(c: Code, e: ElemOps, width: number, isA: boolean, zeroAddr: number): void {
  const p = c.params as Local[];
  const src = p[0]!;
  const rs = p[1]!;
  const cs = p[2]!;
  const dst = p[5]!;
  const free = isA ? p[3]! : p[4]!; // mc or nc
  const kc = isA ? p[4]! : p[3]!;
  const freeStride = c.local("i32");
  const kStride = c.local("i32");
  const shift = e.bytes === 4 ? 2 : 3;
  c.get(isA ? rs : cs).i32(shift).op("i32.shl").set(freeStride);
  c.get(isA ? cs : rs).i32(shift).op("i32.shl").set(kStride);
  const first = c.local("i32");
  const k = c.local("i32");
  const full = c.local("i32");
  const ptrs: Local[] = [];
  const steps: Local[] = [];
  for (let i = 0; i < width; i++) {
    ptrs.push(c.local("i32"));
    steps.push(c.local("i32"));
  }
  const rowBytes = width * e.bytes;
  const contiguousOk = rowBytes % 16 === 0 || rowBytes === 8;
  const transposeOk = e.bytes === 4 && (width === 2 || width % 4 === 0);
  const v: Local[] = [];
  if (transposeOk) for (let i = 0; i < 8; i++) v.push(c.local("v128"));

  const scalarLoop = (): void => {
    c.countDown(k, () => {
      for (let i = 0; i < width; i++) {
        c.get(dst).get(ptrs[i]!).mem(e.load).mem(e.store, i * e.bytes);
        c.addLocal(ptrs[i]!, steps[i]!);
      }
      c.addTo(dst, rowBytes);
    });
  };
  // Group-outer, k-inner: 4 lanes at a time, so the source lines in flight are 4 (a power-of-two lane
  // stride maps all lanes' lines to one L1 set; 16 at once thrash its 8 ways, 4 do not).
  const transposeLoop = (): void => {
    const k4 = c.local("i32");
    const d = c.local("i32");
    if (width === 2) {
      c.get(k).i32(2).op("i32.shr_u").set(k4);
      c.countDown(k4, () => {
        c.get(ptrs[0]!).simdMem("v128.load", 0).set(v[0]!);
        c.get(ptrs[1]!).simdMem("v128.load", 0).set(v[1]!);
        c.get(dst).get(v[0]!).get(v[1]!).shuffle32([0, 4, 1, 5]).simdMem("v128.store", 0);
        c.get(dst).get(v[0]!).get(v[1]!).shuffle32([2, 6, 3, 7]).simdMem("v128.store", 16);
        c.addTo(ptrs[0]!, 16).addTo(ptrs[1]!, 16).addTo(dst, 4 * rowBytes);
      });
    } else {
      for (let g = 0; g < width / 4; g++) {
        c.get(k).i32(2).op("i32.shr_u").set(k4);
        c.get(dst).i32(16 * g).op("i32.add").set(d);
        c.countDown(k4, () => {
          for (let j = 0; j < 4; j++) c.get(ptrs[4 * g + j]!).simdMem("v128.load", 0).set(v[j]!);
          c.get(v[0]!).get(v[1]!).shuffle32([0, 4, 1, 5]).set(v[4]!); // a0 b0 a1 b1
          c.get(v[0]!).get(v[1]!).shuffle32([2, 6, 3, 7]).set(v[5]!); // a2 b2 a3 b3
          c.get(v[2]!).get(v[3]!).shuffle32([0, 4, 1, 5]).set(v[6]!); // c0 d0 c1 d1
          c.get(v[2]!).get(v[3]!).shuffle32([2, 6, 3, 7]).set(v[7]!); // c2 d2 c3 d3
          const out = (t: number, a: Local, b: Local, lanes: [number, number, number, number]): void => {
            c.get(d).get(a).get(b).shuffle32(lanes).simdMem("v128.store", t * rowBytes);
          };
          out(0, v[4]!, v[6]!, [0, 1, 4, 5]);
          out(1, v[4]!, v[6]!, [2, 3, 6, 7]);
          out(2, v[5]!, v[7]!, [0, 1, 4, 5]);
          out(3, v[5]!, v[7]!, [2, 3, 6, 7]);
          for (let j = 0; j < 4; j++) c.addTo(ptrs[4 * g + j]!, 16);
          c.addTo(d, 4 * rowBytes);
        });
      }
      c.get(dst).get(k).i32(-4).op("i32.and").i32(rowBytes).op("i32.mul").op("i32.add").set(dst);
    }
    c.get(k).i32(3).op("i32.and").set(k);
  };

  // A with unit row stride (a transposed view): each k holds a sliver's rows in rowBytes (8 or 16)
  // bytes, and the source lines are a power-of-two apart, so one sliver at a time would run all kc
  // lines through one L1 set. Instead G slivers (one 64-byte line) are packed together per k.
  const group = isA && (rowBytes === 8 || rowBytes === 16) ? 64 / rowBytes : 0;
  const gDst: Local[] = [];
  const gSrc = c.local("i32");
  for (let j = 0; j < group; j++) gDst.push(c.local("i32"));
  const sliverBytes = c.local("i32");
  c.get(kc).i32(rowBytes).op("i32.mul").set(sliverBytes);

  c.i32(0).set(first);
  c.block().loop();
  c.get(first).get(free).op("i32.ge_s").brIf(1);
  c.get(kc).set(k);
  if (group > 0) {
    c.get(freeStride).i32(e.bytes).op("i32.eq").get(first).i32(group * width).op("i32.add").get(free).op("i32.le_s")
      .op("i32.and").if();
    c.get(src).get(first).get(freeStride).op("i32.mul").op("i32.add").set(gSrc);
    for (let j = 0; j < group; j++) c.get(dst).get(sliverBytes).i32(j).op("i32.mul").op("i32.add").set(gDst[j]!);
    c.countDown(k, () => {
      for (let j = 0; j < group; j++) {
        if (rowBytes === 8) c.get(gDst[j]!).get(gSrc).mem("i64.load", 8 * j).mem("i64.store");
        else c.get(gDst[j]!).get(gSrc).simdMem("v128.load", 16 * j).simdMem("v128.store");
        c.addTo(gDst[j]!, rowBytes);
      }
      c.addLocal(gSrc, kStride);
    });
    c.get(dst).get(sliverBytes).i32(group).op("i32.mul").op("i32.add").set(dst);
    c.addTo(first, group * width);
    c.br(1); // next sliver group (depth 0 is this `if`, 1 the loop)
    c.end();
  }
  c.get(first).i32(width).op("i32.add").get(free).op("i32.le_s").set(full);
  emitLanePointers(c, ptrs, steps, first, free, src, freeStride, kStride, zeroAddr);
  if (contiguousOk) {
    c.get(full).get(freeStride).i32(e.bytes).op("i32.eq").op("i32.and").if();
    c.countDown(k, () => {
      if (rowBytes === 8) c.get(dst).get(ptrs[0]!).mem("i64.load").mem("i64.store");
      for (let o = 0; rowBytes >= 16 && o < rowBytes; o += 16) {
        c.get(dst).get(ptrs[0]!).simdMem("v128.load", o).simdMem("v128.store", o);
      }
      c.addLocal(ptrs[0]!, kStride).addTo(dst, rowBytes);
    });
    c.else();
  }
  if (transposeOk) {
    c.get(full).get(kStride).i32(e.bytes).op("i32.eq").op("i32.and").if();
    transposeLoop();
    c.end();
  }
  scalarLoop();
  if (contiguousOk) c.end();
  c.addTo(first, width);
  c.br(0).end().end();
}

/** The GEMM module's binary (see the file comment for its functions). */
export function gemmModuleBytes(o: GemmKernelOptions): Uint8Array {
  const m = new ModuleBuilder().importMemory({
    module: "env",
    field: "memory",
    initial: o.initialPages,
    maximum: o.maximumPages,
    shared: o.shared,
  });
  const i32x6 = ["i32", "i32", "i32", "i32", "i32", "i32"] as const;
  const i32x8 = [...i32x6, "i32", "i32"] as const;
  for (const [e, t, suffix] of [[F32, o.f32, "32"], [F64, o.f64, "64"]] as const) {
    if (t.nr % e.lanes !== 0 || t.mr < 1 || t.unroll < 1) {
      throw new RangeError(`gemmModuleBytes: nr a multiple of ${e.lanes}, got ${t.mr}x${t.nr} unroll ${t.unroll}`);
    }
    const micro = m.declare(i32x6);
    emitMicro(m.code(micro), e, t, o.relaxed, o.scratchAddr);
    const macro = m.declare(i32x8);
    emitMacro(m.code(macro), e, t, micro);
    const packA = m.declare(i32x6);
    emitPack(m.code(packA), e, t.mr, true, o.zeroAddr);
    const packB = m.declare(i32x6);
    emitPack(m.code(packB), e, t.nr, false, o.zeroAddr);
    m.export(`macro${suffix}`, macro).export(`packA${suffix}`, packA).export(`packB${suffix}`, packB);
  }
  return m.build();
}

/** Whether this engine validates `f32x4.relaxed_madd` (checked once, after `enableRelaxedSimd`). */
let relaxedCache: boolean | undefined;
export function relaxedSimdAvailable(): boolean {
  if (relaxedCache === undefined) {
    const m = new ModuleBuilder();
    const f = m.declare([], ["v128"]);
    m.code(f).v128Zero().v128Zero().v128Zero().simd("f32x4.relaxed_madd");
    try {
      relaxedCache = wasmApi?.validate(m.build()) ?? false;
    } catch {
      relaxedCache = false;
    }
  }
  return relaxedCache ?? false;
}

/**
 * Makes relaxed SIMD available where the engine has it behind a flag, and returns whether it is
 * available now. Node 20's V8 (11.3) implements the proposal (on x64 with FMA3, `relaxed_madd` is one
 * `vfmadd231ps`) but validates it only under `--experimental-wasm-relaxed-simd`; V8 11.4 (Node 22)
 * ships it. V8 reads that flag when it decodes a module, so setting it at run time through
 * `v8.setFlagsFromString` takes effect for every module compiled afterwards and changes nothing else.
 * It is set only when the engine lacks the feature, the caller asks for it (`WEBGRAD_RELAXED_SIMD=0`
 * opts out in pool.ts), and `setFlags` exists (Node; absent in other engines).
 *
 * Why the GEMM wants it: with `f32x4.mul` + `f32x4.add` the micro-kernel issues 22 operations per k
 * step of a 2 x 16 tile (6 loads, 16 arithmetic), at the front end's limit; with the fused multiply-add
 * it issues 14, and a 1024^2 product on one thread went from 42 to 50 GFLOP/s on the bench machine
 * (AMD Zen 4), the in-cache rate of the kernel.
 */
export function enableRelaxedSimd(setFlags: ((flags: string) => void) | undefined): boolean {
  if (relaxedSimdAvailable() || setFlags === undefined) return relaxedSimdAvailable();
  try {
    setFlags("--experimental-wasm-relaxed-simd");
  } catch {
    return false;
  }
  relaxedCache = undefined;
  return relaxedSimdAvailable();
}

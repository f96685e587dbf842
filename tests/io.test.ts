/**
 * @file Tests of src/io: safetensors, checkpoints, tokenizers, datasets. Expected values come from
 * outside the code under test: files assembled byte by byte here from the format's specification, a
 * file written by the reference implementation (tests/fixtures/io/reference.safetensors, made by
 * tests/fixtures/io/gen_reference.py with HuggingFace's `safetensors`), UTF-8 bytes worked out by hand,
 * GPT-2 token ids known from the published vocabulary, and structural facts (crops are substrings).
 */
import "../src/index.js";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DTypeError } from "../src/autodiff/errors.js";
import { evalShape, np } from "../src/index.js";
import type { Array as WArray } from "../src/ops/array.js";
import * as random from "../src/ops/random.js";
import * as optim from "../src/nn/optim.js";
import * as palm from "../src/nn/palm.js";
import { atomicWriteFile } from "../src/io/atomic.js";
import { CheckpointError, loadCheckpoint, saveCheckpoint } from "../src/io/checkpoint.js";
import { Batcher, randomCrops, sequentialBatches, trainValSplit } from "../src/io/dataset.js";
import { deserialize, deserializeTree, load, SafetensorsError, serialize, serializeTree, unflattenNamed } from "../src/io/safetensors.js";
import { bpeTokenizer, BYTE_BOS, BYTE_EOS, BYTE_PAD, byteTokenizer } from "../src/io/tokenizer.js";

const tmp = (): string => mkdtempSync(join(tmpdir(), "webgrad-io-"));
const vals = (a: unknown): number[] => globalThis.Array.from((a as WArray).dataSync(), Number);
const enc = new TextEncoder();

/** A safetensors file from parts, following the spec: u64 LE header length, JSON header, data. */
function assemble(header: object | string, data: Uint8Array): Uint8Array {
  const h = enc.encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, h.length, true); // low word
  dv.setUint32(4, 0, true); // high word
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** Little-endian bytes of values, written with DataView (independent of typed-array byte order). */
function leBytes(kind: "f32" | "f64" | "i32" | "u32", xs: number[]): Uint8Array {
  const size = kind === "f64" ? 8 : 4;
  const b = new Uint8Array(xs.length * size);
  const dv = new DataView(b.buffer);
  xs.forEach((x, i) => {
    if (kind === "f32") dv.setFloat32(i * size, x, true);
    else if (kind === "f64") dv.setFloat64(i * size, x, true);
    else if (kind === "i32") dv.setInt32(i * size, x, true);
    else dv.setUint32(i * size, x, true);
  });
  return b;
}
const cat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};

describe("safetensors: reading", () => {
  it("reads a file assembled from the specification", () => {
    const w = leBytes("f32", [1.5, -2, 0.25, 1e-3]);
    const d = leBytes("f64", [Math.PI, -1e-300]);
    const i = leBytes("i32", [-5, 2147483647]);
    const u = leBytes("u32", [4294967295]);
    const m = Uint8Array.from([1, 0, 1]);
    const bytes = assemble(
      {
        // Deliberately not in offset order, no padding: a reader must use data_offsets.
        "b.d": { dtype: "F64", shape: [2], data_offsets: [16, 32] },
        "a.w": { dtype: "F32", shape: [2, 2], data_offsets: [0, 16] },
        ints: { dtype: "I32", shape: [1, 2], data_offsets: [32, 40] },
        big: { dtype: "U32", shape: [], data_offsets: [40, 44] },
        mask: { dtype: "BOOL", shape: [3], data_offsets: [44, 47] },
        __metadata__: { who: "hand", n: "1" },
      },
      cat(w, d, i, u, m),
    );
    const { tensors, metadata } = deserialize(bytes);
    expect(metadata).toEqual({ who: "hand", n: "1" });
    expect(tensors["a.w"]!.shape).toEqual([2, 2]);
    expect(tensors["a.w"]!.dtype).toBe("float32");
    expect(vals(tensors["a.w"])).toEqual([1.5, -2, 0.25, Math.fround(1e-3)]);
    expect(vals(tensors["b.d"])).toEqual([Math.PI, -1e-300]);
    expect(tensors.ints!.dtype).toBe("int32");
    expect(vals(tensors.ints)).toEqual([-5, 2147483647]);
    expect(tensors.big!.shape).toEqual([]);
    expect(vals(tensors.big)).toEqual([4294967295]);
    expect(tensors.mask!.dtype).toBe("bool");
    expect(tensors.mask!.toArraySync()).toEqual([true, false, true]);
    // Without a stored tree, dotted names become nested objects.
    const t = deserializeTree(bytes).tree as Record<string, Record<string, unknown>>;
    expect(Object.keys(t).sort()).toEqual(["a", "b", "big", "ints", "mask"]);
    expect(vals(t.a!.w)).toEqual(vals(tensors["a.w"]));
  });

  it("reads a file written by the reference implementation (HuggingFace safetensors)", async () => {
    const { tensors, metadata } = await load(new URL("./fixtures/io/reference.safetensors", import.meta.url).pathname);
    expect(metadata).toEqual({ format: "np", note: "written by safetensors.numpy" });
    expect(tensors["layers.0.weight"]!.shape).toEqual([2, 3]);
    expect(vals(tensors["layers.0.weight"])).toEqual([0, 1, 2, 3, 4, 5].map((i) => 0.5 * i - 1));
    expect(vals(tensors["layers.1.bias"])).toEqual([1 / 3, 1e-300, -2.5]);
    expect(vals(tensors.ids)).toEqual([-7, 0, 2147483647, -2147483648]);
    expect(vals(tensors.counts)).toEqual([0, 4294967295, 123456789]);
    expect(tensors.mask!.toArraySync()).toEqual([true, false, true, true]);
    expect(tensors.scalar!.shape).toEqual([]);
    expect(vals(tensors.scalar)).toEqual([3.25]);
    expect(tensors.empty!.shape).toEqual([0, 4]);
  });

  it("unflattens dotted names: digit segments become list indices", () => {
    const a = np.array([1]);
    const b = np.array([2]);
    const c = np.array([3]);
    const t = unflattenNamed({ "layers.0.w": a, "layers.1.w": b, "norm.g": c }) as { layers: { w: unknown }[]; norm: { g: unknown } };
    expect(globalThis.Array.isArray(t.layers)).toBe(true);
    expect(t.layers[1]!.w).toBe(b);
    expect(t.norm.g).toBe(c);
  });
});

describe("safetensors: writing", () => {
  it("writes the format byte for byte: LE length, padded JSON header, contiguous LE data", async () => {
    const bytes = await serialize(
      {
        w: np.array([[1.5, -2]], { dtype: "float32" }),
        d: np.array([Math.E], { dtype: "float64" }),
        m: np.array([true, false]),
        n: np.array([-3], { dtype: "int32" }),
      },
      { note: "x" },
    );
    const dv = new DataView(bytes.buffer, bytes.byteOffset);
    const n = Number(dv.getBigUint64(0, true));
    expect(n % 8).toBe(0); // padded to 8 with spaces, as the reference writer does
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    expect(header.__metadata__).toEqual({ note: "x" });
    expect(header.w).toEqual({ dtype: "F32", shape: [1, 2], data_offsets: [0, 8] });
    expect(header.d).toEqual({ dtype: "F64", shape: [1], data_offsets: [8, 16] });
    expect(header.m).toEqual({ dtype: "BOOL", shape: [2], data_offsets: [16, 18] });
    expect(header.n).toEqual({ dtype: "I32", shape: [1], data_offsets: [18, 22] });
    const data = bytes.subarray(8 + n);
    expect(data.length).toBe(22);
    expect([...data]).toEqual([...cat(leBytes("f32", [1.5, -2]), leBytes("f64", [Math.E]), Uint8Array.from([1, 0]), leBytes("i32", [-3]))]);
  });

  it("round-trips a tree exactly: lists, nulls, JSON leaves, every dtype", async () => {
    const tree = {
      params: { layers: [{ w: np.array([[0.1, 0.2]], { dtype: "float32" }) }, { w: np.array([[1e-40, -0]], { dtype: "float32" }) }] },
      stats: { f64: np.array([1 / 3], { dtype: "float64" }), u: np.array([4294967295], { dtype: "uint32" }), b: np.array([false, true]) },
      nothing: null,
      empty: {},
      list: [],
      step: 7,
      name: "run",
      flag: false,
    };
    const bytes = await serializeTree(tree, { extra: "meta" });
    const back = deserializeTree(bytes);
    expect(back.metadata).toEqual({ extra: "meta" });
    const t = back.tree as typeof tree;
    expect(vals(t.params.layers[0]!.w)).toEqual(vals(tree.params.layers[0]!.w));
    expect(Object.is(vals(t.params.layers[1]!.w)[1], -0)).toBe(true); // bits, not just values
    expect(vals(t.params.layers[1]!.w)[0]).toBe(Math.fround(1e-40)); // a float32 subnormal
    expect(vals(t.stats.f64)).toEqual([1 / 3]);
    expect(vals(t.stats.u)).toEqual([4294967295]);
    expect(t.stats.b.toArraySync()).toEqual([false, true]);
    expect(t.nothing).toBeNull();
    expect(t.empty).toEqual({});
    expect(t.list).toEqual([]);
    expect([t.step, t.name, t.flag]).toEqual([7, "run", false]);
  });

  it("refuses keys with dots and non-array leaves it cannot store", async () => {
    await expect(serializeTree({ "a.b": np.array([1]) })).rejects.toThrow(/contain no "."/);
    await expect(serializeTree({ f: () => 1 })).rejects.toThrow(/must be an array/);
  });
});

describe("safetensors: corrupt files give clear errors", () => {
  const good = assemble({ x: { dtype: "F32", shape: [2], data_offsets: [0, 8] } }, leBytes("f32", [1, 2]));
  const cases: [string, Uint8Array, RegExp][] = [
    ["shorter than 8 bytes", good.subarray(0, 5), /shorter than the 8-byte header length/],
    ["truncated in the header", good.subarray(0, 20), /header of \d+ bytes must fit in the file/],
    ["truncated in the data", good.subarray(0, good.length - 3), /ends at byte 8 of the data buffer, which has only 5 bytes/],
    ["trailing bytes", cat(good, Uint8Array.from([0, 0, 0, 0])), /tensors cover 8 bytes but the data buffer has 12/],
    ["a huge header length", cat(leBytes("u32", [0xffffffff, 0xffffffff]), new Uint8Array(8)), /header length must be at most/],
    ["invalid JSON", assemble("{not json", new Uint8Array(0)), /must be UTF-8 JSON/],
    ["a shape/offset mismatch", assemble({ x: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)), /needs 12 bytes, got data_offsets \[0, 8\]/],
    [
      "overlapping tensors",
      assemble({ x: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, y: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)),
      /overlaps/,
    ],
    ["a gap", assemble({ x: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)), /gap of 4 bytes/],
    ["an unknown dtype", assemble({ x: { dtype: "F33", shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)), /unknown dtype "F33"/],
    ["a BOOL byte of 2", assemble({ x: { dtype: "BOOL", shape: [1], data_offsets: [0, 1] } }, Uint8Array.from([2])), /must hold bytes 0 or 1/],
    ["bad metadata", assemble({ __metadata__: { a: 1 } }, new Uint8Array(0)), /__metadata__ must map strings to strings/],
  ];
  for (const [name, bytes, msg] of cases) {
    it(`rejects ${name}`, () => {
      expect(() => deserialize(bytes)).toThrow(SafetensorsError);
      expect(() => deserialize(bytes)).toThrow(msg);
    });
  }
  it("names dtypes of the format that webgrad does not hold", () => {
    const f16 = assemble({ h: { dtype: "F16", shape: [2], data_offsets: [0, 4] } }, new Uint8Array(4));
    expect(() => deserialize(f16)).toThrow(DTypeError);
    expect(() => deserialize(f16)).toThrow(/dtype F16/);
  });
});

describe("checkpoints", () => {
  const config = { numTokens: 16, dim: 8, depth: 2, heads: 2, dimHead: 4 };
  const fresh = () => {
    const params = palm.init(random.key(0), config);
    const opt = optim.adamw(1e-3);
    return { params, optState: opt.init(params), opt };
  };

  it("round-trips params, optimiser state, step, key, config and extra", async () => {
    const dir = tmp();
    const { params, optState } = fresh();
    const path = join(dir, "ck.safetensors");
    await saveCheckpoint(path, { params, optState, step: 12, key: random.key(5) as WArray, config, extra: { losses: np.array([3.5, 2.25], { dtype: "float64" }), note: "hi" } });
    const ck = await loadCheckpoint(path, { like: { params, optState } });
    expect(ck.step).toBe(12);
    expect(ck.config).toEqual(config);
    expect(ck.metadata.step).toBe("12");
    expect(JSON.parse(ck.metadata.config!)).toEqual(config);
    expect(vals(ck.key)).toEqual(vals(random.key(5)));
    expect(vals((ck.extra as { losses: WArray }).losses)).toEqual([3.5, 2.25]);
    expect((ck.extra as { note: string }).note).toBe("hi");
    expect(vals(ck.params.layers[1].ffOut)).toEqual(vals(params.layers[1]!.ffOut));
    expect(vals(ck.params.tokenEmb)).toEqual(vals(params.tokenEmb));
    // The optimiser state comes back in the template's structure (chain: a list of states).
    expect(globalThis.Array.isArray(ck.optState)).toBe(true);
    expect(vals(ck.optState[0].count)).toEqual([0]);
  });

  it("lists missing / unexpected names and shape / dtype mismatches against the template", async () => {
    const dir = tmp();
    const { params } = fresh();
    const path = join(dir, "ck.safetensors");
    const tampered = {
      ...params,
      tokenEmb: np.zeros([16, 6]), // shape
      norm: { gamma: np.zeros([8], { dtype: "float64" }) }, // dtype
      layers: [params.layers[0]!], // layer 1 missing
      bonus: np.zeros([1]), // unexpected
    };
    await saveCheckpoint(path, { params: tampered });
    const err = await loadCheckpoint(path, { like: { params } }).catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(CheckpointError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/shape mismatch: params\.tokenEmb is \[16, 6\] in the file, the template has \[16, 8\]/);
    expect(msg).toMatch(/dtype mismatch: params\.norm\.gamma is float64 in the file, the template has float32/);
    expect(msg).toMatch(/missing: params\.layers\.1\.ffOut/);
    expect(msg).toMatch(/unexpected: params\.bonus/);
    // A template of shapes only (evalShape, no computation) validates the same way.
    const shapes = evalShape(() => palm.init(random.key(0), config));
    await expect(loadCheckpoint(path, { like: { params: shapes } })).rejects.toThrow(/shape mismatch: params\.tokenEmb/);
    // A matching file loads against the shapes template.
    await saveCheckpoint(path, { params });
    const ok = await loadCheckpoint(path, { like: { params: shapes } });
    expect(vals(ok.params.layers[0].attnOut)).toEqual(vals(params.layers[0]!.attnOut));
  });

  it("gives a clear error for a missing or corrupt file", async () => {
    const dir = tmp();
    await expect(loadCheckpoint(join(dir, "nope.safetensors"))).rejects.toThrow(/cannot read the file \(ENOENT\)/);
    const bad = join(dir, "bad.safetensors");
    writeFileSync(bad, Uint8Array.from([1, 2, 3]));
    await expect(loadCheckpoint(bad)).rejects.toThrow(/shorter than the 8-byte header length/);
  });

  it("an interrupted write leaves the previous checkpoint intact (and no temporary file)", async () => {
    const dir = tmp();
    const path = join(dir, "ck.safetensors");
    const { params } = fresh();
    await saveCheckpoint(path, { params, step: 1 });
    const before = readFileSync(path);
    const changed = { ...params, tokenEmb: np.multiply(params.tokenEmb, 2) };
    let chunks = 0;
    await expect(
      saveCheckpoint(path, { params: changed, step: 2 }, {
        chunkSize: 256,
        afterChunk: () => {
          if (++chunks === 2) throw new Error("simulated crash");
        },
      }),
    ).rejects.toThrow("simulated crash");
    expect(chunks).toBe(2);
    expect(Buffer.compare(readFileSync(path), before)).toBe(0);
    expect(readdirSync(dir)).toEqual(["ck.safetensors"]);
    expect((await loadCheckpoint(path, { like: { params } })).step).toBe(1);
    // The same write without the crash replaces the file.
    await saveCheckpoint(path, { params: changed, step: 2 }, { chunkSize: 256 });
    expect((await loadCheckpoint(path)).step).toBe(2);
  });

  it("atomicWriteFile creates missing directories", async () => {
    const dir = tmp();
    const p = join(dir, "a", "b", "f.bin");
    await atomicWriteFile(p, Uint8Array.from([7, 8, 9]), { chunkSize: 2 });
    expect([...readFileSync(p)]).toEqual([7, 8, 9]);
  });
});

describe("tokenizers", () => {
  it("byte tokenizer: UTF-8 bytes, reversible", () => {
    const t = byteTokenizer();
    expect(t.vocabSize).toBe(256);
    // h, é = C3 A9, space, € = E2 82 AC, 😀 = F0 9F 98 80 (UTF-8 by hand)
    expect(t.encode("hé €😀")).toEqual([0x68, 0xc3, 0xa9, 0x20, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80]);
    for (const s of ["", "plain ascii", "naïve café — ünïcödé 日本語 🚀", "\u0000\n\t"]) expect(t.decode(t.encode(s))).toBe(s);
    expect(t.decode([0x68, 0xc3])).toBe("h\ufffd"); // an incomplete sequence decodes to U+FFFD
    expect(() => t.decode([256])).toThrow(/\[0, 256\)/);
  });

  it("byte tokenizer with special ids above the bytes (pad 256, bos 257, eos 258)", () => {
    const t = byteTokenizer({ special: true });
    expect([t.vocabSize, t.padId, t.bosId, t.eosId]).toEqual([259, 256, 257, 258]);
    expect([BYTE_PAD, BYTE_BOS, BYTE_EOS]).toEqual([256, 257, 258]);
    expect(t.decode([257, 0x68, 0x69, 258, 256])).toBe("hi");
  });

  it("BPE (GPT-2's r50k_base): known ids, reversible, specials in text stay text", async () => {
    const t = await bpeTokenizer();
    expect(t.vocabSize).toBe(50257);
    expect(t.eosId).toBe(50256);
    expect(t.encode("Hello world")).toEqual([15496, 995]); // GPT-2's ids for "Hello", " world"
    const s = "The quick brown fox — jumps. 日本";
    expect(t.decode(t.encode(s))).toBe(s);
    expect(t.encode("<|endoftext|>")).not.toContain(50256);
    expect(t.decode([15496, 50256, 995])).toBe("Hello world");
  });
});

describe("datasets", () => {
  const corpus = Int32Array.from({ length: 1000 }, (_, i) => i);

  it("splits contiguously: the last fraction is validation", () => {
    const { train, val } = trainValSplit(corpus, 0.1);
    expect(train.length).toBe(900);
    expect(val.length).toBe(100);
    expect(train[899]).toBe(899);
    expect(val[0]).toBe(900);
    expect(() => trainValSplit(corpus, 1)).toThrow(/valFraction/);
  });

  it("random crops are contiguous pieces of the corpus, deterministic from the key", async () => {
    const a = await randomCrops(random.key(3), corpus, 16, 10);
    const b = await randomCrops(random.key(3), corpus, 16, 10);
    const c = await randomCrops(random.key(4), corpus, 16, 10);
    expect(a.shape).toEqual([16, 10]);
    expect(a.dtype).toBe("int32");
    const rows = a.toArraySync() as number[][];
    for (const r of rows) {
      expect(r[0]).toBeGreaterThanOrEqual(0);
      expect(r[9]).toBeLessThan(1000);
      r.forEach((x, i) => expect(x).toBe(r[0]! + i)); // corpus[i] = i, so a crop is consecutive
    }
    expect(vals(b)).toEqual(vals(a));
    expect(vals(c)).not.toEqual(vals(a));
    await expect(randomCrops(random.key(0), corpus.subarray(0, 5), 2, 10)).rejects.toThrow(/at least 10 tokens, got 5/);
  });

  it("crop starts cover the whole range (including the last valid start)", async () => {
    const small = Int32Array.from([0, 1, 2, 3]);
    const starts = new Set(vals(await randomCrops(random.key(1), small, 200, 3)).filter((_, i) => i % 3 === 0));
    expect([...starts].sort()).toEqual([0, 1]);
  });

  it("Batcher: batch s depends only on the key and s", async () => {
    const bt = new Batcher(corpus, random.key(7), { batch: 4, len: 5 });
    const s3 = vals(await bt.at(3));
    expect(vals(await new Batcher(corpus, random.key(7), { batch: 4, len: 5 }).at(3))).toEqual(s3);
    expect(vals(await bt.at(4))).not.toEqual(s3);
    const it = bt[Symbol.asyncIterator]();
    expect(vals((await it.next()).value)).toEqual(vals(await bt.at(0)));
  });

  it("sequential batches are the non-overlapping windows in order", () => {
    const bs = sequentialBatches(corpus.subarray(0, 23), 2, 5);
    expect(bs.map((b) => b.shape)).toEqual([
      [2, 5],
      [2, 5],
    ]);
    expect(vals(bs[1])).toEqual([10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
    expect(sequentialBatches(corpus, 4, 10, { maxBatches: 3 }).length).toBe(3);
  });
});

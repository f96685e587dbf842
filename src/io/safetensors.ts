/**
 * @file The safetensors format (https://github.com/huggingface/safetensors, "Format" section), and
 * pytrees of arrays stored in it under dotted names (`layers.0.fusedAttnFfProj`).
 *
 * A file is: 8 bytes, the header's length N as an unsigned little-endian 64-bit integer; N bytes of
 * UTF-8 JSON, `{ name: { dtype, shape, data_offsets: [begin, end] }, ..., "__metadata__": { string:
 * string } }` (the writer pads it with spaces to a multiple of 8 so the data is aligned); then the data
 * buffer, each tensor's bytes in C order, little-endian, at [begin, end) relative to the buffer's start.
 * Tensors must tile the buffer exactly (no gaps, no overlaps), as the reference reader checks.
 * Supported dtypes: F32, F64, I32, U32, BOOL (one byte, 0 or 1) — webgrad's dtypes; others are
 * reported by name.
 *
 * Read first: `serialize` / `deserialize` (bytes <-> named arrays), then `flattenNamed` /
 * `unflattenNamed` (pytree <-> named arrays, with the tree's exact structure kept in the metadata
 * under "webgrad.tree" so nulls, empty nodes and JSON leaves survive), then `saveTree` / `loadTree`.
 * Checkpoints (atomic writes, validation against a template) are in checkpoint.ts.
 */
import { endianness } from "node:os";
import { readFile } from "node:fs/promises";
import { DType, shapeSize, shapeStr } from "../autodiff/aval.js";
import { Tracer } from "../autodiff/core.js";
import { ArgumentError, DTypeError, WebgradError } from "../autodiff/errors.js";
import { isPlainObject } from "../autodiff/tree.js";
import { Array } from "../ops/array.js";
import type { Device } from "../ops/array.js";
import * as np from "../ops/np.js";

/** A file (or byte buffer) that is not valid safetensors, or does not match what the caller expects. */
export class SafetensorsError extends WebgradError {}

export type SafetensorsDType = "F32" | "F64" | "I32" | "U32" | "BOOL";

const TO_ST: Record<DType, SafetensorsDType> = { float32: "F32", float64: "F64", int32: "I32", uint32: "U32", bool: "BOOL" };
const FROM_ST: Record<string, DType> = { F32: "float32", F64: "float64", I32: "int32", U32: "uint32", BOOL: "bool" };
const ITEM: Record<SafetensorsDType, number> = { F32: 4, F64: 8, I32: 4, U32: 4, BOOL: 1 };
/** Every dtype the format defines (for clear "unsupported" errors). */
const KNOWN = new Set(["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"]);

/** The reference implementation refuses headers over 100 MB; so do we (a corrupt length is caught early). */
const MAX_HEADER = 100_000_000;

export const toSafetensorsDType = (d: DType): SafetensorsDType => TO_ST[d];

function checkHost(): void {
  if (endianness() !== "LE") throw new SafetensorsError("safetensors: only little-endian hosts are supported");
}

export interface TensorInfo {
  dtype: SafetensorsDType;
  shape: number[];
  data_offsets: [number, number];
}

// ---------------------------------------------------------------------------------------------------
// Bytes <-> named arrays

/**
 * The file's bytes for named arrays (in the given order) and string metadata. Async because reading an
 * array is (on WebGPU).
 */
export async function serialize(tensors: Readonly<Record<string, Array>>, metadata: Readonly<Record<string, string>> = {}): Promise<Uint8Array> {
  checkHost();
  const header: Record<string, unknown> = {};
  const meta: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== "string") throw new ArgumentError(`safetensors.serialize: metadata values must be strings, got ${typeof v} for "${k}"`);
    meta[k] = v;
  }
  if (Object.keys(meta).length > 0) header.__metadata__ = meta;
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, a] of Object.entries(tensors)) {
    if (name === "__metadata__") throw new ArgumentError('safetensors.serialize: "__metadata__" is reserved and cannot name a tensor');
    if (!(a instanceof Array)) {
      throw new ArgumentError(`safetensors.serialize: "${name}" must be a concrete array, got ${(a as unknown) instanceof Tracer ? "a traced value" : typeof a}`);
    }
    const d = await a.data();
    const bytes = a.dtype === "bool" ? Uint8Array.from(d as ArrayLike<number>, (x) => (x ? 1 : 0)) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    chunks.push(bytes);
    header[name] = { dtype: TO_ST[a.dtype], shape: [...a.shape], data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  const enc = new TextEncoder();
  let jsonBytes = enc.encode(json);
  const pad = (8 - (jsonBytes.byteLength % 8)) % 8;
  if (pad > 0) jsonBytes = enc.encode((json += " ".repeat(pad)));
  const out = new Uint8Array(8 + jsonBytes.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(jsonBytes.byteLength), true);
  out.set(jsonBytes, 8);
  let pos = 8 + jsonBytes.byteLength;
  for (const c of chunks) {
    out.set(c, pos);
    pos += c.byteLength;
  }
  return out;
}

export interface ParsedHeader {
  tensors: Record<string, TensorInfo>;
  metadata: Record<string, string>;
  /** Where the data buffer starts in the file (8 + header length). */
  dataStart: number;
}

/** Parses and validates the header of a safetensors file against its total size. */
export function parseHeader(bytes: Uint8Array, what = "safetensors"): ParsedHeader {
  if (bytes.byteLength < 8) {
    throw new SafetensorsError(`${what}: file is ${bytes.byteLength} bytes, shorter than the 8-byte header length\nTip: the file is truncated or not safetensors`);
  }
  const n = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER)) throw new SafetensorsError(`${what}: header length must be at most ${MAX_HEADER} bytes, got ${n}\nTip: the file is corrupt or not safetensors`);
  const hlen = Number(n);
  if (8 + hlen > bytes.byteLength) {
    throw new SafetensorsError(`${what}: header of ${hlen} bytes must fit in the file (${bytes.byteLength} bytes), got a truncated file`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + hlen)));
  } catch (e) {
    throw new SafetensorsError(`${what}: header must be UTF-8 JSON, got an unparsable header (${(e as Error).message})\nTip: the file is corrupt or not safetensors`);
  }
  if (!isPlainObject(parsed)) throw new SafetensorsError(`${what}: header must be a JSON object, got ${globalThis.Array.isArray(parsed) ? "a list" : typeof parsed}`);
  const dataLen = bytes.byteLength - 8 - hlen;
  const tensors: Record<string, TensorInfo> = {};
  let metadata: Record<string, string> = {};
  const spans: [number, number, string][] = [];
  for (const [name, info] of Object.entries(parsed)) {
    if (name === "__metadata__") {
      if (!isPlainObject(info) || Object.values(info).some((v) => typeof v !== "string")) {
        throw new SafetensorsError(`${what}: __metadata__ must map strings to strings, got ${JSON.stringify(info)}`);
      }
      metadata = info as Record<string, string>;
      continue;
    }
    if (!isPlainObject(info)) throw new SafetensorsError(`${what}: entry "${name}" must be an object, got ${JSON.stringify(info)}`);
    const { dtype, shape, data_offsets: off } = info as Record<string, unknown>;
    if (typeof dtype !== "string" || !KNOWN.has(dtype)) throw new SafetensorsError(`${what}: "${name}" has an unknown dtype ${JSON.stringify(dtype)}`);
    if (!(dtype in FROM_ST)) {
      throw new DTypeError(`${what}: "${name}" has dtype ${dtype}; webgrad reads F32, F64, I32, U32 and BOOL, got ${dtype}\nTip: convert the tensor to F32 before saving`);
    }
    if (!globalThis.Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw new SafetensorsError(`${what}: "${name}" must have a shape of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (!globalThis.Array.isArray(off) || off.length !== 2 || off.some((d) => !Number.isSafeInteger(d) || d < 0) || off[0] > off[1]) {
      throw new SafetensorsError(`${what}: "${name}" must have data_offsets [begin, end] with 0 <= begin <= end, got ${JSON.stringify(off)}`);
    }
    const st = dtype as SafetensorsDType;
    const need = shapeSize(shape as number[]) * ITEM[st];
    if (off[1] - off[0] !== need) {
      throw new SafetensorsError(`${what}: "${name}" is ${st} ${shapeStr(shape as number[])}, which needs ${need} bytes, got data_offsets [${off[0]}, ${off[1]}] (${off[1] - off[0]} bytes)`);
    }
    if (off[1] > dataLen) {
      throw new SafetensorsError(`${what}: "${name}" ends at byte ${off[1]} of the data buffer, which has only ${dataLen} bytes\nTip: the file is truncated`);
    }
    tensors[name] = { dtype: st, shape: shape as number[], data_offsets: [off[0], off[1]] };
    spans.push([off[0], off[1], name]);
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let at = 0;
  for (const [b, e, name] of spans) {
    if (b !== at) {
      throw new SafetensorsError(
        b < at ? `${what}: "${name}" overlaps the previous tensor (starts at ${b}, before ${at})` : `${what}: data buffer has a gap of ${b - at} bytes before "${name}" (at ${at})`,
      );
    }
    at = e;
  }
  if (at !== dataLen) throw new SafetensorsError(`${what}: tensors cover ${at} bytes but the data buffer has ${dataLen}\nTip: trailing bytes mean a corrupt file`);
  return { tensors, metadata, dataStart: 8 + hlen };
}

/** Named arrays and metadata from a safetensors file's bytes (validated; see parseHeader). */
export function deserialize(bytes: Uint8Array, opts: { device?: Device | string; what?: string } = {}): { tensors: Record<string, Array>; metadata: Record<string, string> } {
  checkHost();
  const what = opts.what ?? "safetensors";
  const h = parseHeader(bytes, what);
  const tensors: Record<string, Array> = {};
  for (const [name, info] of Object.entries(h.tensors)) {
    const start = bytes.byteOffset + h.dataStart + info.data_offsets[0];
    const raw = bytes.buffer.slice(start, bytes.byteOffset + h.dataStart + info.data_offsets[1]); // a copy: aligned
    const dtype = FROM_ST[info.dtype]!;
    let data: Float32Array | Float64Array | Int32Array | Uint32Array | Uint8Array;
    switch (info.dtype) {
      case "F32":
        data = new Float32Array(raw);
        break;
      case "F64":
        data = new Float64Array(raw);
        break;
      case "I32":
        data = new Int32Array(raw);
        break;
      case "U32":
        data = new Uint32Array(raw);
        break;
      case "BOOL": {
        data = new Uint8Array(raw);
        const bad = data.findIndex((x) => x > 1);
        if (bad >= 0) throw new SafetensorsError(`${what}: BOOL tensor "${name}" must hold bytes 0 or 1, got ${data[bad]} at element ${bad}`);
        break;
      }
    }
    tensors[name] = np.array(data, { dtype, shape: info.shape, device: opts.device });
  }
  return { tensors, metadata: { ...h.metadata } };
}

// ---------------------------------------------------------------------------------------------------
// Pytrees <-> named arrays

/**
 * The tree's structure as JSON, leaves replaced: an array leaf by `{ t: name }`, a JSON leaf (number,
 * string, boolean) by `{ v: value }`, undefined by `{ u: 1 }`; lists `{ l: [...] }`, objects `{ o: {...} }`.
 */
type Skeleton = null | { t: string } | { v: number | string | boolean } | { u: 1 } | { l: Skeleton[] } | { o: Record<string, Skeleton> };

/**
 * Flattens a pytree into dotted names: object keys and list indices joined by "." (`layers.0.norm.gamma`).
 * Array leaves become tensors; numbers, strings and booleans are kept in the returned skeleton.
 */
export function flattenNamed(tree: unknown, prefix = ""): { tensors: Record<string, Array>; skeleton: Skeleton } {
  const tensors: Record<string, Array> = {};
  const join = (p: string, k: string): string => (p === "" ? k : `${p}.${k}`);
  const walk = (x: unknown, path: string): Skeleton => {
    if (x === null) return null;
    if (x === undefined) return { u: 1 };
    if (x instanceof Array) {
      if (path === "") throw new ArgumentError("safetensors: the tree must be an object or a list of arrays, got a bare array\nTip: wrap it, { x }");
      tensors[path] = x;
      return { t: path };
    }
    if (x instanceof Tracer) throw new ArgumentError(`safetensors: "${path}" is a traced value; only concrete arrays can be saved\nTip: save outside jit / grad`);
    if (typeof x === "number" || typeof x === "string" || typeof x === "boolean") return { v: x };
    if (globalThis.Array.isArray(x)) return { l: x.map((c, i) => walk(c, join(path, String(i)))) };
    if (isPlainObject(x)) {
      const o: Record<string, Skeleton> = {};
      for (const k of Object.keys(x).sort()) {
        if (k.includes(".") || k === "") {
          throw new ArgumentError(`safetensors: object keys must be non-empty and contain no ".", got ${JSON.stringify(k)} at ${path || "the root"}`);
        }
        o[k] = walk(x[k], join(path, k));
      }
      return { o };
    }
    throw new ArgumentError(`safetensors: "${path}" must be an array, a number, a string, a boolean, or a list/object of them, got ${Object.prototype.toString.call(x)}`);
  };
  const skeleton = walk(tree, prefix);
  return { tensors, skeleton };
}

/**
 * Rebuilds a tree from named arrays. With a skeleton (from flattenNamed), exactly; without one, from
 * the names alone: segments that are all digits become list indices, the rest object keys.
 */
export function unflattenNamed(tensors: Readonly<Record<string, Array>>, skeleton?: Skeleton | null, what = "safetensors"): unknown {
  if (skeleton !== undefined) {
    const used = new Set<string>();
    const build = (s: Skeleton): unknown => {
      if (s === null) return null;
      if ("u" in s) return undefined;
      if ("v" in s) return s.v;
      if ("t" in s) {
        const a = tensors[s.t];
        if (a === undefined) throw new SafetensorsError(`${what}: the stored tree names a tensor "${s.t}" that the file does not hold`);
        used.add(s.t);
        return a;
      }
      if ("l" in s) return s.l.map(build);
      if ("o" in s) return Object.fromEntries(Object.entries(s.o).map(([k, c]) => [k, build(c)]));
      throw new SafetensorsError(`${what}: unreadable tree node ${JSON.stringify(s)}`);
    };
    const out = build(skeleton);
    const extra = Object.keys(tensors).filter((k) => !used.has(k));
    if (extra.length > 0) throw new SafetensorsError(`${what}: tensors not in the stored tree: ${extra.join(", ")}`);
    return out;
  }
  const root: Record<string, unknown> = {};
  for (const [name, a] of Object.entries(tensors)) {
    const parts = name.split(".");
    let node: Record<string, unknown> = root;
    parts.forEach((p, i) => {
      if (i === parts.length - 1) {
        if (p in node) throw new SafetensorsError(`${what}: "${name}" is both a tensor and a prefix of other names`);
        node[p] = a;
      } else {
        const next = node[p];
        if (next instanceof Array) throw new SafetensorsError(`${what}: "${parts.slice(0, i + 1).join(".")}" is both a tensor and a prefix of other names`);
        node = (next as Record<string, unknown>) ?? (node[p] = {});
      }
    });
  }
  const listify = (x: unknown): unknown => {
    if (!isPlainObject(x)) return x;
    const keys = Object.keys(x);
    const entries = keys.map((k) => [k, listify(x[k])] as const);
    if (keys.length > 0 && keys.every((k) => /^(0|[1-9]\d*)$/.test(k))) {
      const idx = keys.map(Number).sort((a, b) => a - b);
      if (idx.every((v, i) => v === i)) return idx.map((i) => entries.find(([k]) => Number(k) === i)![1]);
    }
    return Object.fromEntries(entries);
  };
  return listify(root);
}

const TREE_KEY = "webgrad.tree";

/** The bytes of a safetensors file holding `tree` (its arrays) and its exact structure, plus metadata. */
export async function serializeTree(tree: unknown, metadata: Readonly<Record<string, string>> = {}): Promise<Uint8Array> {
  const { tensors, skeleton } = flattenNamed(tree);
  return serialize(tensors, { ...metadata, [TREE_KEY]: JSON.stringify(skeleton) });
}

/** The tree stored by serializeTree (or, for other files, the tree implied by the dotted names) and the metadata. */
export function deserializeTree(bytes: Uint8Array, opts: { device?: Device | string; what?: string } = {}): { tree: unknown; metadata: Record<string, string> } {
  const what = opts.what ?? "safetensors";
  const { tensors, metadata } = deserialize(bytes, opts);
  let skeleton: Skeleton | undefined;
  if (metadata[TREE_KEY] !== undefined) {
    try {
      skeleton = JSON.parse(metadata[TREE_KEY]!) as Skeleton;
    } catch {
      throw new SafetensorsError(`${what}: metadata "${TREE_KEY}" must be JSON, got ${metadata[TREE_KEY]!.slice(0, 80)}`);
    }
    delete metadata[TREE_KEY];
  }
  return { tree: unflattenNamed(tensors, skeleton, what), metadata };
}

/** Reads a safetensors file: named arrays and metadata. */
export async function load(path: string, opts: { device?: Device | string } = {}): Promise<{ tensors: Record<string, Array>; metadata: Record<string, string> }> {
  return deserialize(new Uint8Array(await readFile(path)), { ...opts, what: `safetensors.load(${path})` });
}

/** Reads a safetensors file as a tree. */
export async function loadTree(path: string, opts: { device?: Device | string } = {}): Promise<{ tree: unknown; metadata: Record<string, string> }> {
  return deserializeTree(new Uint8Array(await readFile(path)), { ...opts, what: `safetensors.loadTree(${path})` });
}

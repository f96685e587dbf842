/**
 * @file Training checkpoints: `{ params, optState, step, key, config, extra }` in one safetensors file
 * (see safetensors.ts), written atomically (atomic.ts), and read back validated against a template.
 *
 * Tensor names are the dotted paths under the checkpoint's fields: `params.layers.0.ffOut`,
 * `optState.0.mu.tokenEmb`, `key`, and any arrays inside `extra`. `step`, `config` and the JSON leaves
 * of `extra` are kept in the stored tree (metadata "webgrad.tree"); `step` and `config` are also written
 * as plain metadata strings ("step", "config") for other tools.
 *
 * `loadCheckpoint(path, { like })` checks every array of the template (`like.params`, `like.optState`,
 * ...: a tree of arrays or of ShapedArrays, e.g. from `evalShape`) against the file — missing names,
 * unexpected names, shape and dtype mismatches are all listed in one CheckpointError — and returns the
 * loaded arrays in the template's exact tree structure.
 */
import { DType, ShapedArray, shapeEq, shapeStr } from "../autodiff/aval.js";
import { Tracer } from "../autodiff/core.js";
import { ArgumentError, WebgradError } from "../autodiff/errors.js";
import { isPlainObject } from "../autodiff/tree.js";
import { Array } from "../ops/array.js";
import type { Device } from "../ops/array.js";
import { readFile } from "node:fs/promises";
import { atomicWriteFile, AtomicWriteOptions } from "./atomic.js";
import { deserializeTree, serializeTree } from "./safetensors.js";

/** A checkpoint that cannot be read or does not match the template it is loaded against. */
export class CheckpointError extends WebgradError {}

export interface Checkpoint<P = any, S = any> {
  params: P;
  optState?: S;
  /** Training steps done. */
  step?: number;
  /** The PRNG key to continue from. */
  key?: Array;
  /** The model config (JSON). */
  config?: unknown;
  /** Anything else: arrays are stored as tensors, numbers / strings / booleans in the tree. */
  extra?: unknown;
}

const FIELDS = ["params", "optState", "step", "key", "config", "extra"] as const;

/** Writes a checkpoint atomically: a crash or error mid-write leaves any previous file at `path` intact. */
export async function saveCheckpoint(path: string, ckpt: Checkpoint, opts: AtomicWriteOptions & { metadata?: Record<string, string> } = {}): Promise<void> {
  if (typeof ckpt !== "object" || ckpt === null || ckpt.params === undefined) {
    throw new ArgumentError("saveCheckpoint: needs { params, optState?, step?, key?, config?, extra? }, got no params");
  }
  if (ckpt.step !== undefined && !(Number.isSafeInteger(ckpt.step) && ckpt.step >= 0)) {
    throw new ArgumentError(`saveCheckpoint: step must be a non-negative integer, got ${String(ckpt.step)}`);
  }
  const tree: Record<string, unknown> = {};
  for (const f of FIELDS) if (ckpt[f] !== undefined) tree[f] = ckpt[f];
  const meta: Record<string, string> = { ...(opts.metadata ?? {}), "webgrad.format": "checkpoint/1" };
  if (ckpt.step !== undefined) meta.step = String(ckpt.step);
  if (ckpt.config !== undefined) meta.config = JSON.stringify(ckpt.config);
  const bytes = await serializeTree(tree, meta);
  await atomicWriteFile(path, bytes, opts);
}

export type CheckpointTemplates = Partial<Record<"params" | "optState" | "key" | "extra", unknown>>;

export interface LoadCheckpointOptions {
  /**
   * Templates to validate against (any subset of the fields): trees of arrays or ShapedArrays (or
   * `{ shape, dtype }`) with the structure the loaded values must have. A function receives the stored
   * checkpoint first (e.g. to build the template from its `config`).
   */
  like?: CheckpointTemplates | ((stored: Checkpoint & { metadata: Record<string, string> }) => CheckpointTemplates);
  device?: Device | string;
}

interface Spec {
  shape: readonly number[];
  dtype: DType;
}

function specOf(x: unknown): Spec | null {
  if (x instanceof Array || x instanceof Tracer) return { shape: x.aval.shape, dtype: x.aval.dtype };
  if (x instanceof ShapedArray) return { shape: x.shape, dtype: x.dtype };
  if (isPlainObject(x) && globalThis.Array.isArray(x.shape) && typeof x.dtype === "string" && Object.keys(x).length === 2) {
    return { shape: x.shape as number[], dtype: x.dtype as DType };
  }
  return null;
}

/** Names and specs of the template's array leaves, and a function rebuilding its structure from loaded leaves. */
function templateLeaves(t: unknown, prefix: string): { names: string[]; specs: Spec[]; rebuild: (get: (name: string) => unknown) => unknown } {
  const names: string[] = [];
  const specs: Spec[] = [];
  const walk = (x: unknown, path: string): ((get: (n: string) => unknown) => unknown) => {
    const s = specOf(x);
    if (s !== null) {
      names.push(path);
      specs.push(s);
      return (get) => get(path);
    }
    if (globalThis.Array.isArray(x)) {
      const cs = x.map((c, i) => walk(c, `${path}.${i}`));
      return (get) => cs.map((c) => c(get));
    }
    if (isPlainObject(x)) {
      const ks = Object.keys(x).sort();
      const cs = ks.map((k) => walk(x[k], `${path}.${k}`));
      return (get) => Object.fromEntries(ks.map((k, i) => [k, cs[i]!(get)]));
    }
    return () => x; // null, undefined, JSON leaves: kept from the template
  };
  const rebuild = walk(t, prefix);
  return { names, specs, rebuild };
}

/** Every array leaf of a loaded tree with its dotted name. */
function loadedLeaves(t: unknown, path: string, out: Map<string, Array>): void {
  if (t instanceof Array) out.set(path, t);
  else if (globalThis.Array.isArray(t)) t.forEach((c, i) => loadedLeaves(c, `${path}.${i}`, out));
  else if (isPlainObject(t)) for (const k of Object.keys(t)) loadedLeaves(t[k], `${path}.${k}`, out);
}

/**
 * Reads a checkpoint written by saveCheckpoint (or any safetensors file with `params.` names). With
 * `like`, validates the listed fields and returns them in the template's structure.
 */
export async function loadCheckpoint<P = any, S = any>(path: string, opts: LoadCheckpointOptions = {}): Promise<Checkpoint<P, S> & { metadata: Record<string, string> }> {
  const what = `loadCheckpoint(${path})`;
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch (e) {
    throw new CheckpointError(`${what}: cannot read the file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const { tree, metadata } = deserializeTree(bytes, { device: opts.device, what });
  if (!isPlainObject(tree)) throw new CheckpointError(`${what}: the file must hold an object { params, ... }, got ${globalThis.Array.isArray(tree) ? "a list" : typeof tree}`);
  const out: Record<string, unknown> = { ...tree };
  const problems: string[] = [];
  const like = typeof opts.like === "function" ? opts.like({ ...(tree as unknown as Checkpoint), metadata }) : opts.like ?? {};
  for (const [field, template] of Object.entries(like)) {
    if (template === undefined) continue;
    const tl = templateLeaves(template, field);
    const have = new Map<string, Array>();
    loadedLeaves(tree[field], field, have);
    tl.names.forEach((name, i) => {
      const a = have.get(name);
      const want = tl.specs[i]!;
      if (a === undefined) problems.push(`missing: ${name} (${want.dtype}${shapeStr(want.shape)})`);
      else if (!shapeEq(a.shape, want.shape)) problems.push(`shape mismatch: ${name} is ${shapeStr(a.shape)} in the file, the template has ${shapeStr(want.shape)}`);
      else if (a.dtype !== want.dtype) problems.push(`dtype mismatch: ${name} is ${a.dtype} in the file, the template has ${want.dtype}`);
    });
    const expected = new Set(tl.names);
    for (const name of have.keys()) if (!expected.has(name)) problems.push(`unexpected: ${name} (not in the template)`);
    if (problems.length === 0) out[field] = tl.rebuild((n) => have.get(n));
  }
  if (problems.length > 0) {
    const shown = problems.slice(0, 20);
    throw new CheckpointError(
      `${what}: the checkpoint must match the template, got ${problems.length} problem${problems.length > 1 ? "s" : ""}:\n  ${shown.join("\n  ")}` +
        (problems.length > shown.length ? `\n  ... and ${problems.length - shown.length} more` : "") +
        `\nTip: load with the same model config (and optimiser) the checkpoint was saved with`,
    );
  }
  if (out.params === undefined) throw new CheckpointError(`${what}: the file has no params`);
  return { ...(out as unknown as Checkpoint<P, S>), metadata };
}

/**
 * @file Pytrees: nested plain objects and arrays whose leaves are anything else (arrays, tracers,
 * numbers). `null` and `undefined` are nodes without children, as `None` is in JAX, so optional parts
 * of a params tree survive every transform unchanged. Object keys are visited in sorted order, so two
 * objects with the same keys always have the same structure whatever their insertion order.
 */
import { TreeMismatchError } from "./errors.js";

export type TreeDef =
  | { readonly kind: "leaf" }
  | { readonly kind: "null" }
  | { readonly kind: "undefined" }
  | { readonly kind: "array"; readonly children: readonly TreeDef[] }
  | { readonly kind: "object"; readonly keys: readonly string[]; readonly children: readonly TreeDef[] };

const LEAF: TreeDef = { kind: "leaf" };
const NULL: TreeDef = { kind: "null" };
const UNDEF: TreeDef = { kind: "undefined" };

/** Plain objects (object literals, Object.create(null)) are tree nodes; class instances are leaves. */
export function isPlainObject(x: unknown): x is Record<string, unknown> {
  if (typeof x !== "object" || x === null) return false;
  const proto = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

function flattenInto(x: unknown, leaves: unknown[], isLeaf?: (x: unknown) => boolean): TreeDef {
  if (isLeaf?.(x)) {
    leaves.push(x);
    return LEAF;
  }
  if (x === null) return NULL;
  if (x === undefined) return UNDEF;
  if (Array.isArray(x)) {
    return { kind: "array", children: x.map((c) => flattenInto(c, leaves, isLeaf)) };
  }
  if (isPlainObject(x)) {
    const keys = Object.keys(x).sort();
    return { kind: "object", keys, children: keys.map((k) => flattenInto(x[k], leaves, isLeaf)) };
  }
  leaves.push(x);
  return LEAF;
}

/** Leaves in order, and the structure that `unflatten` needs to rebuild the tree. */
export function flatten<T = unknown>(tree: unknown, isLeaf?: (x: unknown) => boolean): [T[], TreeDef] {
  const leaves: unknown[] = [];
  const def = flattenInto(tree, leaves, isLeaf);
  return [leaves as T[], def];
}

export function leaves<T = unknown>(tree: unknown, isLeaf?: (x: unknown) => boolean): T[] {
  return flatten<T>(tree, isLeaf)[0];
}

export function structure(tree: unknown, isLeaf?: (x: unknown) => boolean): TreeDef {
  return flatten(tree, isLeaf)[1];
}

export function numLeaves(def: TreeDef): number {
  switch (def.kind) {
    case "leaf":
      return 1;
    case "null":
    case "undefined":
      return 0;
    case "array":
    case "object":
      return def.children.reduce((n, c) => n + numLeaves(c), 0);
  }
}

/** Rebuilds a tree of `def`'s structure from `leaves` (exactly `numLeaves(def)` of them). */
export function unflatten<T = unknown>(def: TreeDef, leaves: readonly unknown[]): T {
  const n = numLeaves(def);
  if (leaves.length !== n) {
    throw new TreeMismatchError(`tree.unflatten: structure has ${n} leaves, got ${leaves.length}`);
  }
  let i = 0;
  const build = (d: TreeDef): unknown => {
    switch (d.kind) {
      case "leaf":
        return leaves[i++];
      case "null":
        return null;
      case "undefined":
        return undefined;
      case "array":
        return d.children.map(build);
      case "object": {
        const o: Record<string, unknown> = {};
        d.keys.forEach((k, j) => (o[k] = build(d.children[j]!)));
        return o;
      }
    }
  };
  return build(def) as T;
}

export function treedefEqual(a: TreeDef, b: TreeDef): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === "array" && b.kind === "array") {
    return a.children.length === b.children.length && a.children.every((c, i) => treedefEqual(c, b.children[i]!));
  }
  if (a.kind === "object" && b.kind === "object") {
    return (
      a.keys.length === b.keys.length &&
      a.keys.every((k, i) => k === b.keys[i]) &&
      a.children.every((c, i) => treedefEqual(c, b.children[i]!))
    );
  }
  return true;
}

/** A compact printable form: `{a: *, b: [*, *]}`, `*` for a leaf. Used in error messages and cache keys. */
export function treedefStr(def: TreeDef): string {
  switch (def.kind) {
    case "leaf":
      return "*";
    case "null":
      return "null";
    case "undefined":
      return "undefined";
    case "array":
      return `[${def.children.map(treedefStr).join(", ")}]`;
    case "object":
      return `{${def.keys.map((k, i) => `${k}: ${treedefStr(def.children[i]!)}`).join(", ")}}`;
  }
}

/** Throws TreeMismatchError naming `what` when the structures differ. */
export function assertSameStructure(what: string, a: TreeDef, b: TreeDef, tip?: string): void {
  if (!treedefEqual(a, b)) {
    throw new TreeMismatchError(
      `${what}: tree structures differ, got ${treedefStr(a)} and ${treedefStr(b)}` + (tip ? `\nTip: ${tip}` : ""),
    );
  }
}

/** Applies `f` to corresponding leaves of `tree` and `rest` (which must share its structure). */
export function map<R = unknown>(f: (...xs: any[]) => unknown, tree: unknown, ...rest: unknown[]): R {
  const [ls, def] = flatten(tree);
  const others = rest.map((r) => {
    const [l, d] = flatten(r);
    assertSameStructure("tree.map", def, d);
    return l;
  });
  return unflatten<R>(def, ls.map((x, i) => f(x, ...others.map((o) => o[i]))));
}

/**
 * Broadcasts a prefix tree (e.g. vmap's `inAxes`) to the structure of `full`: each leaf of the prefix
 * (including null) is repeated for every leaf of the corresponding subtree of `full`.
 */
export function broadcastPrefix(what: string, prefix: unknown, full: unknown): unknown[] {
  const out: unknown[] = [];
  const go = (p: unknown, f: unknown): void => {
    const [fl] = flatten(f);
    if (p === null || p === undefined || !(Array.isArray(p) || isPlainObject(p))) {
      for (let i = 0; i < fl.length; i++) out.push(p);
      return;
    }
    if (Array.isArray(p)) {
      if (!Array.isArray(f) || f.length !== p.length) {
        throw new TreeMismatchError(
          `${what}: the axes spec ${JSON.stringify(p)} is not a tree prefix of the arguments, got an argument of structure ${treedefStr(structure(f))}`,
        );
      }
      p.forEach((pc, i) => go(pc, f[i]));
      return;
    }
    if (!isPlainObject(f)) {
      throw new TreeMismatchError(
        `${what}: the axes spec has an object where the argument has ${treedefStr(structure(f))}`,
      );
    }
    const pk = Object.keys(p).sort();
    const fk = Object.keys(f).sort();
    if (pk.length !== fk.length || pk.some((k, i) => k !== fk[i])) {
      throw new TreeMismatchError(`${what}: axes spec keys [${pk}] do not match argument keys [${fk}]`);
    }
    for (const k of pk) go((p as Record<string, unknown>)[k], (f as Record<string, unknown>)[k]);
  };
  go(prefix, full);
  return out;
}

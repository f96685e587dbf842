/**
 * @file A small WebAssembly binary emitter: just enough of the format (type, import, function, export
 * and code sections, LEB128 integers, structured control flow, i32 / f32 / f64 scalar ops and the
 * 128-bit SIMD ops the CPU kernels use) to generate specialised kernels at run time with no external
 * toolchain. Read `ModuleBuilder` (the module) and `Code` (a function body) first; gemm-kernels.ts,
 * fused.ts and reduce.ts are the users. Opcode numbers are those of the WebAssembly core spec 2.0 (binary format, section 5.4)
 * and the relaxed-SIMD proposal.
 */

/** Value types and their binary codes. */
export type ValType = "i32" | "i64" | "f32" | "f64" | "v128";
const VALTYPE: Record<ValType, number> = { i32: 0x7f, i64: 0x7e, f32: 0x7d, f64: 0x7c, v128: 0x7b };

/** Appends `n` (a non-negative integer below 2^53) as unsigned LEB128. */
export function uleb(n: number, out: number[]): void {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`uleb: a non-negative integer, got ${n}`);
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
}

/** Appends `n` (an integer in the int32 range) as signed LEB128. */
export function sleb(n: number, out: number[]): void {
  if (!Number.isInteger(n) || n < -0x80000000 || n > 0x7fffffff) {
    throw new RangeError(`sleb: an int32, got ${n}`);
  }
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    const done = (n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return;
  }
}

function name(s: string, out: number[]): void {
  const bytes = new TextEncoder().encode(s);
  uleb(bytes.length, out);
  for (const b of bytes) out.push(b);
}

/** SIMD opcodes (after the 0xfd prefix) used by the kernels. */
const SIMD = {
  "v128.load": 0x00,
  "v128.load32_splat": 0x09,
  "v128.load64_splat": 0x0a,
  "v128.store": 0x0b,
  "v128.const": 0x0c,
  "i8x16.shuffle": 0x0d,
  "f32x4.splat": 0x13,
  "f64x2.splat": 0x14,
  "f32x4.extract_lane": 0x1f,
  "f32x4.replace_lane": 0x20,
  "f64x2.extract_lane": 0x21,
  "f32x4.add": 0xe4,
  "f32x4.sub": 0xe5,
  "f32x4.mul": 0xe6,
  "f32x4.div": 0xe7,
  "f32x4.min": 0xe8,
  "f32x4.max": 0xe9,
  "f32x4.pmin": 0xea,
  "f32x4.pmax": 0xeb,
  "f64x2.add": 0xf0,
  "f64x2.sub": 0xf1,
  "f64x2.mul": 0xf2,
  "f64x2.div": 0xf3,
  "i32x4.splat": 0x11,
  "i32x4.eq": 0x37,
  "i32x4.ne": 0x38,
  "i32x4.lt_s": 0x39,
  "i32x4.lt_u": 0x3a,
  "i32x4.gt_s": 0x3b,
  "i32x4.gt_u": 0x3c,
  "i32x4.le_s": 0x3d,
  "i32x4.le_u": 0x3e,
  "i32x4.ge_s": 0x3f,
  "i32x4.ge_u": 0x40,
  "f32x4.eq": 0x41,
  "f32x4.ne": 0x42,
  "f32x4.lt": 0x43,
  "f32x4.gt": 0x44,
  "f32x4.le": 0x45,
  "f32x4.ge": 0x46,
  "f64x2.eq": 0x47,
  "f64x2.ne": 0x48,
  "f64x2.lt": 0x49,
  "f64x2.gt": 0x4a,
  "f64x2.le": 0x4b,
  "f64x2.ge": 0x4c,
  "v128.not": 0x4d,
  "v128.and": 0x4e,
  "v128.andnot": 0x4f,
  "v128.or": 0x50,
  "v128.xor": 0x51,
  "v128.bitselect": 0x52,
  "v128.any_true": 0x53,
  "f32x4.demote_f64x2_zero": 0x5e,
  "f64x2.promote_low_f32x4": 0x5f,
  "f32x4.ceil": 0x67,
  "f32x4.floor": 0x68,
  "f32x4.trunc": 0x69,
  "f32x4.nearest": 0x6a,
  "f64x2.ceil": 0x74,
  "f64x2.floor": 0x75,
  "f64x2.nearest": 0x94,
  "i32x4.abs": 0xa0,
  "i32x4.neg": 0xa1,
  "i32x4.shl": 0xab,
  "i32x4.shr_s": 0xac,
  "i32x4.shr_u": 0xad,
  "i32x4.add": 0xae,
  "i32x4.sub": 0xb1,
  "i32x4.mul": 0xb5,
  "i32x4.min_s": 0xb6,
  "i32x4.min_u": 0xb7,
  "i32x4.max_s": 0xb8,
  "i32x4.max_u": 0xb9,
  "f32x4.abs": 0xe0,
  "f32x4.neg": 0xe1,
  "f32x4.sqrt": 0xe3,
  "f64x2.abs": 0xec,
  "f64x2.neg": 0xed,
  "f64x2.sqrt": 0xef,
  "f64x2.min": 0xf4,
  "f64x2.max": 0xf5,
  "i32x4.trunc_sat_f32x4_s": 0xf8,
  "i32x4.trunc_sat_f32x4_u": 0xf9,
  "f32x4.convert_i32x4_s": 0xfa,
  "f32x4.convert_i32x4_u": 0xfb,
  "f32x4.relaxed_madd": 0x105,
  "f64x2.relaxed_madd": 0x107,
} as const;
export type SimdOp = keyof typeof SIMD;

/** Plain (one-byte) opcodes used by the kernels. */
const OP = {
  unreachable: 0x00,
  nop: 0x01,
  return: 0x0f,
  drop: 0x1a,
  select: 0x1b,
  "i32.load": 0x28,
  "i64.load": 0x29,
  "f32.load": 0x2a,
  "f64.load": 0x2b,
  "i32.store": 0x36,
  "i64.store": 0x37,
  "f32.store": 0x38,
  "f64.store": 0x39,
  "i32.eqz": 0x45,
  "i32.eq": 0x46,
  "i32.ne": 0x47,
  "i32.lt_s": 0x48,
  "i32.lt_u": 0x49,
  "i32.gt_s": 0x4a,
  "i32.gt_u": 0x4b,
  "i32.le_s": 0x4c,
  "i32.le_u": 0x4d,
  "i32.ge_s": 0x4e,
  "i32.ge_u": 0x4f,
  "i32.add": 0x6a,
  "i32.sub": 0x6b,
  "i32.mul": 0x6c,
  "i32.div_u": 0x6e,
  "i32.and": 0x71,
  "i32.or": 0x72,
  "i32.shl": 0x74,
  "i32.shr_u": 0x76,
  "f32.add": 0x92,
  "f32.min": 0x96,
  "f32.max": 0x97,
  "f64.promote_f32": 0xbb,
  "f32.demote_f64": 0xb6,
  "f32.mul": 0x94,
  "f64.add": 0xa0,
  "f64.mul": 0xa2,
} as const;
export type PlainOp = keyof typeof OP;

/** Natural alignment (log2 bytes) of each memory op, used as the memarg's alignment hint. */
const NATURAL_ALIGN: Partial<Record<PlainOp | SimdOp, number>> = {
  "i32.load": 2,
  "i64.load": 3,
  "i64.store": 3,
  "f32.load": 2,
  "f64.load": 3,
  "i32.store": 2,
  "f32.store": 2,
  "f64.store": 3,
  "v128.load": 4,
  "v128.store": 4,
  "v128.load32_splat": 2,
  "v128.load64_splat": 3,
};

/** A local variable of a function under construction (parameters come first). */
export interface Local {
  readonly index: number;
  readonly type: ValType;
}

/**
 * A function body under construction: a stack-machine instruction stream with helpers for locals and
 * structured control flow. Branch depths are counted by the caller, as in the text format.
 */
export class Code {
  readonly bytes: number[] = [];
  readonly params: readonly Local[];
  readonly results: readonly ValType[];
  readonly extraLocals: Local[] = [];

  constructor(params: readonly ValType[], results: readonly ValType[] = []) {
    this.params = params.map((type, index) => ({ index, type }));
    this.results = results;
  }

  /** A fresh local of `type`. */
  local(type: ValType): Local {
    const l = { index: this.params.length + this.extraLocals.length, type };
    this.extraLocals.push(l);
    return l;
  }

  op(name: PlainOp): this {
    this.bytes.push(OP[name]);
    return this;
  }

  /** A load or store with a constant byte offset (alignment hint: natural). */
  mem(name: PlainOp, offset = 0): this {
    this.bytes.push(OP[name]);
    uleb(NATURAL_ALIGN[name] ?? 0, this.bytes);
    uleb(offset, this.bytes);
    return this;
  }

  simd(name: SimdOp): this {
    this.bytes.push(0xfd);
    uleb(SIMD[name], this.bytes);
    return this;
  }

  /** A SIMD load or store with a constant byte offset; alignment hint 0 (packed data may be unaligned). */
  simdMem(name: SimdOp, offset = 0): this {
    this.simd(name);
    uleb(0, this.bytes);
    uleb(offset, this.bytes);
    return this;
  }

  /**
   * `i8x16.shuffle` picking 32-bit lanes: `lanes[i]` in 0..7 selects lane i of the result from the
   * concatenation of the two operands (0..3 the first, 4..7 the second).
   */
  shuffle32(lanes: readonly [number, number, number, number]): this {
    this.simd("i8x16.shuffle");
    for (const l of lanes) for (let b = 0; b < 4; b++) this.bytes.push(l * 4 + b);
    return this;
  }

  /** A lane access (`*.extract_lane` / `*.replace_lane`) with its lane index immediate. */
  lane(name: "f32x4.extract_lane" | "f32x4.replace_lane", lane: number): this {
    this.simd(name);
    this.bytes.push(lane);
    return this;
  }

  /** `f64x2.extract_lane` with its lane index immediate. */
  lane64(name: "f64x2.extract_lane", lane: number): this {
    this.simd(name);
    this.bytes.push(lane);
    return this;
  }

  /** `v128.const` with four 32-bit lanes given as int32 bit patterns. */
  v128I32(lanes: readonly [number, number, number, number]): this {
    return this.v128Bytes(new Uint8Array(new Int32Array(lanes.map((x) => x | 0)).buffer));
  }

  /** `v128.const` with every f32 lane equal to `v` (rounded to float32). */
  f32x4Const(v: number): this {
    return this.v128Bytes(new Uint8Array(new Float32Array([v, v, v, v]).buffer));
  }

  /** `v128.const` with both f64 lanes equal to `v`. */
  f64x2Const(v: number): this {
    return this.v128Bytes(new Uint8Array(new Float64Array([v, v]).buffer));
  }

  /** Pushes a 128-bit constant given as its 16 bytes (little-endian lanes). */
  v128Bytes(b: Uint8Array): this {
    this.simd("v128.const");
    for (const x of b) this.bytes.push(x);
    return this;
  }

  /** `v128.const` of all-zero bits (0.0 in every float lane). */
  v128Zero(): this {
    this.simd("v128.const");
    for (let i = 0; i < 16; i++) this.bytes.push(0);
    return this;
  }

  get(l: Local): this {
    this.bytes.push(0x20);
    uleb(l.index, this.bytes);
    return this;
  }

  set(l: Local): this {
    this.bytes.push(0x21);
    uleb(l.index, this.bytes);
    return this;
  }

  tee(l: Local): this {
    this.bytes.push(0x22);
    uleb(l.index, this.bytes);
    return this;
  }

  i32(v: number): this {
    this.bytes.push(0x41);
    sleb(v | 0, this.bytes);
    return this;
  }

  f32(v: number): this {
    this.bytes.push(0x43);
    const b = new Uint8Array(new Float32Array([v]).buffer);
    for (const x of b) this.bytes.push(x);
    return this;
  }

  f64(v: number): this {
    this.bytes.push(0x44);
    const b = new Uint8Array(new Float64Array([v]).buffer);
    for (const x of b) this.bytes.push(x);
    return this;
  }

  /** `l += v` for an i32 local (v a constant). */
  addTo(l: Local, v: number): this {
    if (v === 0) return this;
    return this.get(l).i32(v).op("i32.add").set(l);
  }

  /** `l += m` for i32 locals. */
  addLocal(l: Local, m: Local): this {
    return this.get(l).get(m).op("i32.add").set(l);
  }

  block(): this {
    this.bytes.push(0x02, 0x40);
    return this;
  }

  loop(): this {
    this.bytes.push(0x03, 0x40);
    return this;
  }

  if(): this {
    this.bytes.push(0x04, 0x40);
    return this;
  }

  else(): this {
    this.bytes.push(0x05);
    return this;
  }

  end(): this {
    this.bytes.push(0x0b);
    return this;
  }

  br(depth: number): this {
    this.bytes.push(0x0c);
    uleb(depth, this.bytes);
    return this;
  }

  brIf(depth: number): this {
    this.bytes.push(0x0d);
    uleb(depth, this.bytes);
    return this;
  }

  call(fn: number): this {
    this.bytes.push(0x10);
    uleb(fn, this.bytes);
    return this;
  }

  /**
   * `while (counter != 0) { body; counter -= 1 }` for an i32 counter local (consumed). Inside `body`,
   * depth 0 is the loop (continue) and depth 1 the enclosing block (break).
   */
  countDown(counter: Local, body: () => void): this {
    this.block().loop();
    this.get(counter).op("i32.eqz").brIf(1);
    body();
    this.get(counter).i32(1).op("i32.sub").set(counter);
    this.br(0).end().end();
    return this;
  }
}

/** Memory import description (`shared` needs `maximum`). */
export interface MemoryImport {
  readonly module: string;
  readonly field: string;
  readonly initial: number;
  readonly maximum?: number;
  readonly shared?: boolean;
}

/**
 * A module under construction: imported functions (first indices), an imported memory, then
 * functions (indices in the order added, after the imports), some exported by name.
 */
export class ModuleBuilder {
  #types: string[] = [];
  #typeBytes: number[][] = [];
  #funcs: { type: number; code: Code }[] = [];
  #exports: { name: string; index: number }[] = [];
  #memory: MemoryImport | null = null;
  #funcImports: { module: string; field: string; type: number }[] = [];

  importMemory(mem: MemoryImport): this {
    if (mem.shared && mem.maximum === undefined) throw new RangeError("importMemory: a shared memory needs a maximum");
    this.#memory = mem;
    return this;
  }

  #typeIndex(params: readonly ValType[], results: readonly ValType[]): number {
    const key = `${params.join(",")}->${results.join(",")}`;
    const found = this.#types.indexOf(key);
    if (found >= 0) return found;
    const b: number[] = [0x60];
    uleb(params.length, b);
    for (const p of params) b.push(VALTYPE[p]);
    uleb(results.length, b);
    for (const r of results) b.push(VALTYPE[r]);
    this.#types.push(key);
    this.#typeBytes.push(b);
    return this.#types.length - 1;
  }

  /**
   * Imports a function (e.g. `Math.sin` for a rare slow path); returns its index. Imports take the
   * first function indices, so every import must come before the first `declare`.
   */
  importFunction(module: string, field: string, params: readonly ValType[], results: readonly ValType[] = []): number {
    if (this.#funcs.length > 0) throw new RangeError("importFunction: function imports must precede declared functions");
    this.#funcImports.push({ module, field, type: this.#typeIndex(params, results) });
    return this.#funcImports.length - 1;
  }

  /** Reserves a function index (so bodies can call functions defined later); fill it with `define`. */
  declare(params: readonly ValType[], results: readonly ValType[] = []): number {
    this.#funcs.push({ type: this.#typeIndex(params, results), code: new Code(params, results) });
    return this.#funcImports.length + this.#funcs.length - 1;
  }

  /** The body of a declared function. */
  code(index: number): Code {
    return this.#funcs[index - this.#funcImports.length]!.code;
  }

  export(name: string, index: number): this {
    this.#exports.push({ name, index });
    return this;
  }

  /** The module's binary encoding. */
  build(): Uint8Array {
    const out: number[] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    const section = (id: number, body: number[]): void => {
      out.push(id);
      uleb(body.length, out);
      for (const b of body) out.push(b);
    };
    // 1: types
    const types: number[] = [];
    uleb(this.#typeBytes.length, types);
    for (const t of this.#typeBytes) types.push(...t);
    section(1, types);
    // 2: imports (functions, then the memory)
    if (this.#memory || this.#funcImports.length > 0) {
      const imp: number[] = [];
      uleb(this.#funcImports.length + (this.#memory ? 1 : 0), imp);
      for (const f of this.#funcImports) {
        name(f.module, imp);
        name(f.field, imp);
        imp.push(0x00);
        uleb(f.type, imp);
      }
      if (this.#memory) {
        const m = this.#memory;
        name(m.module, imp);
        name(m.field, imp);
        imp.push(0x02);
        imp.push((m.maximum !== undefined ? 1 : 0) | (m.shared ? 2 : 0));
        uleb(m.initial, imp);
        if (m.maximum !== undefined) uleb(m.maximum, imp);
      }
      section(2, imp);
    }
    // 3: function signatures
    const fns: number[] = [];
    uleb(this.#funcs.length, fns);
    for (const f of this.#funcs) uleb(f.type, fns);
    section(3, fns);
    // 7: exports
    const exps: number[] = [];
    uleb(this.#exports.length, exps);
    for (const e of this.#exports) {
      name(e.name, exps);
      exps.push(0x00);
      uleb(e.index, exps);
    }
    section(7, exps);
    // 10: code (locals as runs of equal type)
    const codes: number[] = [];
    uleb(this.#funcs.length, codes);
    for (const f of this.#funcs) {
      const body: number[] = [];
      const runs: [number, ValType][] = [];
      for (const l of f.code.extraLocals) {
        const last = runs[runs.length - 1];
        if (last && last[1] === l.type) last[0]++;
        else runs.push([1, l.type]);
      }
      uleb(runs.length, body);
      for (const [n, t] of runs) {
        uleb(n, body);
        body.push(VALTYPE[t]);
      }
      for (const b of f.code.bytes) body.push(b);
      body.push(0x0b);
      uleb(body.length, codes);
      for (const b of body) codes.push(b);
    }
    section(10, codes);
    return new Uint8Array(out);
  }
}

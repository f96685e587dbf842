/**
 * @file Resident CPU storage: typed arrays that live in the Wasm runtime's shared memory (an arena
 * block each), so the Wasm kernels read and write them where they are — no copy in before a product
 * or a fused kernel, no copy out after — and worker threads can work on them. To everything else they
 * are ordinary typed arrays (views of a SharedArrayBuffer).
 *
 * Which arrays: `allocate` in ../buffer.ts asks here for any array of at least ARENA_MIN_BYTES when the
 * runtime has shared memory (an unshared memory would detach every view when it grows) and the
 * arena's budget (`WEBGRAD_CPU_ARENA_MB`; default 1 GiB or a sixteenth of the machine's memory,
 * whichever is less; 0 turns resident storage off) has room; otherwise, and for small arrays, storage
 * is an ordinary typed array.
 *
 * Lifetime. A block goes back to the arena at the first of:
 * - the last *counted* holder releasing it: every owned CpuBuffer made on the storage and every view
 *   made by `CpuBuffer.view` counts one reference (`retainStorage`), and `CpuBuffer.release` drops it
 *   (`releaseStorage`). Borrowed CpuBuffers (constructed with owned = false, as kernels and the jit do
 *   for the length of one operation) do not count and must not outlive the storage's holders;
 * - the garbage collector reclaiming the typed array (a FinalizationRegistry), for arrays never
 *   disposed. Its callbacks run only when the event loop gets control: a synchronous loop that never
 *   disposes fills the budget, after which new arrays are ordinary (correct, only slower) until the
 *   loop yields.
 * A released block's typed array still points into the memory, which will be reused: the CpuBuffer
 * layer makes sure nothing reads storage through a released buffer (`CpuBuffer.data` throws).
 */
import { totalmem } from "node:os";
import type { AnyTypedArray } from "../../kernel.js";
import { getRuntime } from "./pool.js";

/** Smallest storage (bytes) placed in the arena: below it a copy costs less than the bookkeeping. */
export const ARENA_MIN_BYTES = 32 * 1024;

interface Block {
  addr: number;
  bytes: number;
  refs: number;
  live: boolean;
}

type Ctor = new (buffer: SharedArrayBuffer, byteOffset: number, length: number) => AnyTypedArray;

const blocks = new WeakMap<AnyTypedArray, Block>();
/** The runtime memory's buffer objects handed out so far (a new one after each grow). */
const memoryBuffers = new WeakSet<ArrayBufferLike>();
const registry = new FinalizationRegistry<Block>((b) => {
  if (!b.live) return;
  freeBlock(b);
  residentStats.freedByGc++;
});

/** Counters of resident storage (for tests and benchmarks; `cpuWasmInfo().resident`). */
export const residentStats = {
  /** Arrays placed in the arena. */
  allocated: 0,
  /** Blocks returned by the last holder's release. */
  freedByRelease: 0,
  /** Blocks returned by the garbage collector. */
  freedByGc: 0,
  /** Allocations that fell back to ordinary storage because the budget or the memory was exhausted. */
  fallbacks: 0,
  /** Bytes of live resident arrays. */
  liveBytes: 0,
};

/** The default budget: 1 GiB, or a sixteenth of the machine's memory if that is less. */
function defaultBudget(): number {
  let total = Infinity;
  try {
    total = totalmem();
  } catch {
    // keep the cap
  }
  return Math.min(2 ** 30, Math.floor(total / 16));
}

function budgetBytes(): number {
  const env = typeof process !== "undefined" ? process.env.WEBGRAD_CPU_ARENA_MB : undefined;
  const mb = env === undefined || env === "" ? NaN : Number(env);
  return Number.isFinite(mb) && mb >= 0 ? mb * 2 ** 20 : defaultBudget();
}

let budget: number | undefined;
let enabled: boolean | undefined;

/** Turns resident storage on or off for arrays allocated from now on (tests compare both paths). */
export function setResidentStorage(on: boolean): void {
  enabled = on;
}

function residentOn(): boolean {
  if (enabled === undefined) {
    const wasmOff = typeof process !== "undefined" && process.env.WEBGRAD_CPU_WASM === "0";
    enabled = !wasmOff && budgetBytes() > 0;
  }
  return enabled;
}

/**
 * A fresh typed array of `ctor` with `length` elements in the arena, or null (caller allocates an
 * ordinary one). Its contents are whatever the block held: `zero` clears them.
 */
export function allocateResident(ctor: Ctor & { BYTES_PER_ELEMENT: number }, length: number, zero: boolean): AnyTypedArray | null {
  const bytes = length * ctor.BYTES_PER_ELEMENT;
  if (bytes < ARENA_MIN_BYTES || !residentOn()) return null;
  const rt = getRuntime();
  if (rt === null || !rt.shared) return null;
  budget ??= budgetBytes();
  if (residentStats.liveBytes + bytes > budget) {
    residentStats.fallbacks++;
    return null;
  }
  const addr = rt.arena.alloc(bytes);
  if (addr < 0) {
    residentStats.fallbacks++;
    return null;
  }
  const sab = rt.memory.buffer as SharedArrayBuffer;
  memoryBuffers.add(sab);
  const data = new ctor(sab, addr, length);
  if (zero) data.fill(0);
  const block: Block = { addr, bytes, refs: 0, live: true };
  blocks.set(data, block);
  registry.register(data, block, block);
  residentStats.allocated++;
  residentStats.liveBytes += bytes;
  return data;
}

function freeBlock(b: Block): void {
  if (!b.live) return;
  b.live = false;
  getRuntime()!.arena.free(b.addr, b.bytes);
  residentStats.liveBytes -= b.bytes;
}

/** One more counted holder of `data` (a no-op for ordinary storage). */
export function retainStorage(data: AnyTypedArray): void {
  if (data.byteLength < ARENA_MIN_BYTES) return;
  const b = blocks.get(data);
  if (b !== undefined) b.refs++;
}

/** One counted holder fewer; the last one returns the block to the arena. */
export function releaseStorage(data: AnyTypedArray): void {
  if (data.byteLength < ARENA_MIN_BYTES) return;
  const b = blocks.get(data);
  if (b === undefined || !b.live) return;
  if (--b.refs > 0) return;
  returnBlock(b);
}

/**
 * Returns `data`'s block now if no counted holder has it (storage a caller took with `takeStorage` and
 * did not hand on). A no-op for ordinary storage or storage some buffer still holds.
 */
export function dropStorage(data: AnyTypedArray): void {
  if (data.byteLength < ARENA_MIN_BYTES) return;
  const b = blocks.get(data);
  if (b === undefined || !b.live || b.refs > 0) return;
  returnBlock(b);
}

/** Returns a block whose last holder let go (the collector need not any more). */
function returnBlock(b: Block): void {
  registry.unregister(b);
  freeBlock(b);
  residentStats.freedByRelease++;
}

/**
 * One counted holder fewer, without returning the block at zero: for a caller that takes the storage
 * of a buffer it made (`CpuBuffer.takeStorage`) and holds it raw until it wraps it again or drops it
 * (then the collector returns it).
 */
export function disownStorage(data: AnyTypedArray): void {
  if (data.byteLength < ARENA_MIN_BYTES) return;
  const b = blocks.get(data);
  if (b !== undefined && b.live && b.refs > 0) b.refs--;
}

/**
 * The byte address of `data`'s first element in the runtime memory, or -1 when it is not there. Any
 * view of resident storage counts (a subarray, a typed view of another element type on the same
 * bytes), as do blocks from `allocateResidentBytes`.
 */
export function residentAddress(data: AnyTypedArray): number {
  return memoryBuffers.has(data.buffer) ? data.byteOffset : -1;
}

/**
 * `bytes` bytes of the arena for a caller that holds them privately (the jit's intermediate buffers):
 * a Uint8Array over the block, freed when the collector reclaims that Uint8Array (keep it referenced
 * while any view of its bytes is in use), or null when storage cannot be resident.
 */
export function allocateResidentBytes(bytes: number): Uint8Array | null {
  return allocateResident(Uint8Array as unknown as Ctor & { BYTES_PER_ELEMENT: number }, bytes, false) as Uint8Array | null;
}

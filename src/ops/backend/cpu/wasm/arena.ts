/**
 * @file `Arena`: a first-fit, address-ordered free-list allocator over byte ranges of the Wasm
 * runtime's memory (pool.ts owns the one instance). It knows nothing about typed arrays or threads:
 * storage.ts puts CPU arrays in it, pool.ts its scratch and packing blocks.
 *
 * Blocks are multiples of ALIGN bytes at ALIGN-aligned addresses. Freeing coalesces with both
 * neighbours, so a freed block is found again by the next allocation of about its size (the common
 * pattern of a training loop: the same shapes every step). The arena grows at its top through `grow`
 * (the memory's `grow`, which the owner maps to pages) and never shrinks: a Wasm memory cannot.
 */

/** Alignment and granularity of every block, in bytes (a cache line; also enough for v128). */
export const ALIGN = 64;

/** Rounds `bytes` up to the block granularity. */
export const alignUp = (bytes: number): number => Math.ceil(bytes / ALIGN) * ALIGN;

export interface ArenaStats {
  /** Bytes in live blocks. */
  used: number;
  /** Most bytes ever live at once. */
  peak: number;
  /** Bytes between the arena's start and its top (live + free). */
  reserved: number;
  /** Live blocks. */
  blocks: number;
}

export class Arena {
  readonly #start: number;
  readonly #limit: number;
  readonly #grow: (end: number) => boolean;
  /** Free ranges as [addr, bytes] pairs, sorted by address, never adjacent (coalesced). */
  #free: number[] = [];
  #top: number;
  #used = 0;
  #peak = 0;
  #blocks = 0;

  /**
   * @param start first byte address the arena may hand out (ALIGN-aligned)
   * @param limit one past the last byte it may ever use
   * @param grow makes [start, end) usable; false when it cannot (the memory's maximum, out of memory)
   */
  constructor(start: number, limit: number, grow: (end: number) => boolean) {
    if (start % ALIGN !== 0) throw new RangeError(`Arena: a start aligned to ${ALIGN}, got ${start}`);
    this.#start = start;
    this.#limit = limit;
    this.#top = start;
    this.#grow = grow;
  }

  /** A block of at least `bytes` (> 0) bytes: its address, or -1 when the arena cannot provide it. */
  alloc(bytes: number): number {
    if (!(bytes > 0)) throw new RangeError(`Arena.alloc: a positive size, got ${bytes}`);
    const size = alignUp(bytes);
    const free = this.#free;
    // First fit by address keeps the low end dense and the top free for growth.
    for (let i = 0; i < free.length; i += 2) {
      const addr = free[i]!;
      const have = free[i + 1]!;
      if (have < size) continue;
      if (have === size) free.splice(i, 2);
      else {
        free[i] = addr + size;
        free[i + 1] = have - size;
      }
      return this.#taken(addr, size);
    }
    // Extend at the top, starting inside a free range that ends there.
    const n = free.length;
    const lastEndsAtTop = n > 0 && free[n - 2]! + free[n - 1]! === this.#top;
    const addr = lastEndsAtTop ? free[n - 2]! : this.#top;
    const end = addr + size;
    if (end > this.#limit || !this.#grow(end)) return -1;
    if (lastEndsAtTop) free.length = n - 2;
    this.#top = end;
    return this.#taken(addr, size);
  }

  /** Returns the block at `addr` of `bytes` bytes (as passed to / rounded by `alloc`). */
  free(addr: number, bytes: number): void {
    const size = alignUp(bytes);
    if (addr < this.#start || addr + size > this.#top || addr % ALIGN !== 0) {
      throw new RangeError(`Arena.free: a block inside [${this.#start}, ${this.#top}), got ${addr}+${size}`);
    }
    const free = this.#free;
    // Binary search for the first free range after addr.
    let lo = 0;
    let hi = free.length / 2;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (free[2 * mid]! < addr) lo = mid + 1;
      else hi = mid;
    }
    const i = 2 * lo;
    const prevEnd = i > 0 ? free[i - 2]! + free[i - 1]! : -1;
    const next = i < free.length ? free[i]! : Infinity;
    if (prevEnd > addr || next < addr + size) {
      throw new RangeError(`Arena.free: block ${addr}+${size} overlaps a free range (freed twice?)`);
    }
    this.#used -= size;
    this.#blocks--;
    const joinPrev = prevEnd === addr;
    const joinNext = next === addr + size;
    if (joinPrev && joinNext) {
      free[i - 1]! += size + free[i + 1]!;
      free.splice(i, 2);
    } else if (joinPrev) free[i - 1]! += size;
    else if (joinNext) {
      free[i] = addr;
      free[i + 1]! += size;
    } else free.splice(i, 0, addr, size);
  }

  get stats(): ArenaStats {
    return { used: this.#used, peak: this.#peak, reserved: this.#top - this.#start, blocks: this.#blocks };
  }

  /** The free ranges as [addr, bytes] pairs (for tests). */
  freeRanges(): [number, number][] {
    const out: [number, number][] = [];
    for (let i = 0; i < this.#free.length; i += 2) out.push([this.#free[i]!, this.#free[i + 1]!]);
    return out;
  }

  #taken(addr: number, size: number): number {
    this.#used += size;
    this.#blocks++;
    if (this.#used > this.#peak) this.#peak = this.#used;
    return addr;
  }
}

/**
 * @file Atomic file writes: the bytes go to a temporary file in the target's directory, which is
 * fsync-ed and then renamed over the target (rename is atomic within a POSIX file system), and the
 * directory is fsync-ed so the rename itself survives a crash. A reader therefore sees the old file or
 * the new one, never a mix; a write that fails half-way removes its temporary file and leaves the old
 * file untouched.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { ArgumentError } from "../autodiff/errors.js";

export interface AtomicWriteOptions {
  /** Bytes per write call (default 4 MiB). */
  chunkSize?: number;
  /**
   * Called after each chunk is written to the temporary file, with the bytes written so far. For tests
   * (throwing here simulates a crash mid-write) and progress reporting.
   */
  afterChunk?: (written: number, total: number) => void | Promise<void>;
}

/** Writes `data` to `path` atomically (see the file comment); creates the directory if needed. */
export async function atomicWriteFile(path: string, data: Uint8Array, opts: AtomicWriteOptions = {}): Promise<void> {
  const chunk = opts.chunkSize ?? 4 << 20;
  if (!Number.isInteger(chunk) || chunk < 1) throw new ArgumentError(`atomicWriteFile: chunkSize must be a positive integer, got ${chunk}`);
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  const fh = await open(tmp, "wx");
  try {
    for (let off = 0; off < data.byteLength; ) {
      const n = Math.min(chunk, data.byteLength - off);
      const { bytesWritten } = await fh.write(data, off, n, off);
      off += bytesWritten;
      await opts.afterChunk?.(off, data.byteLength);
    }
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  // Persist the directory entry; not every platform lets a directory be opened (Windows), so best effort.
  try {
    const d = await open(dir, "r");
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    /* best effort */
  }
}

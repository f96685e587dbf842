/// <reference types="@webgpu/types" />
/**
 * @file The execution engine under the WebGPU backend: lazy batching, the buffer pool, the pipeline
 * cache, kernel parameters, readback and fault handling. Kernels (kernels/*.ts) only call `alloc`,
 * `release`, `dispatch`, `copy`, `clear` and `grid`; `read` is the one place that waits.
 *
 * - Batching: dispatches are encoded into one open compute pass of a shared command encoder. The batch
 *   is submitted when a read needs it, when `batchLimit` dispatches were encoded, when the parameter
 *   arena is full, or when the synchronous JS that encoded it yields (a microtask). Nothing ever blocks
 *   the JS thread.
 * - Parameters (shapes, strides, scalars) of every dispatch go to a CPU-side arena, written to one GPU
 *   buffer right before the submit (queue.writeBuffer is ordered before the command buffer), and bound
 *   at a per-dispatch offset. Shapes are therefore not part of the shader: pipelines are cached by a
 *   key of op, dtypes and ranks only.
 * - Pool: storage buffers come from free lists by size class. A buffer released while the current batch
 *   is being encoded may be reused by later dispatches of the same batch (commands run in order) but not
 *   as the target of a queue.writeBuffer (which would run before the batch), so it waits in
 *   `freeInBatch` until the submit.
 * - Timing (profileJit, WEBGRAD_DEBUG=2): when the device has the `timestamp-query` feature, a
 *   profiled call marks each kernel (`markKernel`); every compute pass opened for it gets timestamp
 *   writes at its begin and end, all in the call's one command buffer; `endProfile` resolves the query
 *   set into a buffer, reads it back and returns GPU nanoseconds per marked kernel.
 * - Faults: every batch runs inside validation and out-of-memory error scopes, and every new shader's
 *   compilation info is checked. Any error (and device loss) is recorded as a BackendError that makes
 *   reads reject and every later operation throw: results of a faulty batch are garbage, and no wrong
 *   number is ever returned silently.
 */
import { BackendError } from "../../../autodiff/errors.js";

const STORAGE_USAGE = 0x0080 | 0x0004 | 0x0008; // STORAGE | COPY_SRC | COPY_DST
const STAGING_USAGE = 0x0001 | 0x0008; // MAP_READ | COPY_DST
const PARAMS_USAGE = 0x0080 | 0x0008; // STORAGE | COPY_DST
const MAP_READ = 0x0001;

/** Options of the runtime (all optional). */
export interface RuntimeOptions {
  /** Dispatches per submitted command buffer (default 64). */
  batchLimit?: number;
  /** Bytes of unused buffers kept for reuse before destroying them (default 256 MiB). */
  poolLimitBytes?: number;
  /**
   * Regenerate each kernel's source on every pipeline-cache hit and throw if it differs from the
   * cached one (a cache key that misses part of the shader's semantics). For tests; default from the
   * environment variable WEBGRAD_CHECK_KERNEL_KEYS=1.
   */
  checkKernelKeys?: boolean;
  /**
   * Time profiled kernels with GPU timestamp queries when the device has the feature (default true;
   * the environment variable WEBGRAD_TIMESTAMPS=0 turns it off). Off: profiling falls back to host
   * timing, one submit per kernel. Also settable later (`Runtime.useTimestamps`).
   */
  timestampQueries?: boolean;
}

/** GPU time of one profiled kernel. */
export interface KernelTiming {
  readonly label: string;
  /** Σ over the kernel's compute passes of (end − begin) timestamps, in nanoseconds. */
  readonly ns: number;
}

/** Whether timestamp queries are wanted (options, then WEBGRAD_TIMESTAMPS). */
export function timestampsWanted(opts: RuntimeOptions = {}): boolean {
  if (opts.timestampQueries !== undefined) return opts.timestampQueries;
  return !(typeof process !== "undefined" && process.env?.WEBGRAD_TIMESTAMPS === "0");
}

/** Queries per profile (begin and end of each timed pass); passes beyond it are not timed. */
const MAX_QUERIES = 4096;

/** A kernel: a cache key and the WGSL source (generated only on a cache miss). */
export interface Kernel {
  readonly key: string;
  readonly source: () => string;
}

/** Workgroup counts of a dispatch. */
export type Grid = readonly [number, number?, number?];

interface Pipeline {
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  /** Kept only when kernel keys are checked. */
  readonly source?: string;
}

/** Counters for tests and benchmarks. */
export interface RuntimeStats {
  /** GPU storage buffers currently allocated (in use or pooled). */
  readonly buffers: number;
  readonly bufferBytes: number;
  /** Of those, pooled (free) ones. */
  readonly pooledBuffers: number;
  readonly pooledBytes: number;
  readonly pipelines: number;
  readonly submits: number;
  readonly dispatches: number;
}

/** Size class of an allocation: 256 B minimum, then 4 classes per power of two (<= 25% slack). */
function sizeClass(bytes: number): number {
  if (bytes <= 256) return 256;
  const p = 2 ** Math.floor(Math.log2(bytes - 1));
  const step = p / 4;
  return Math.ceil(bytes / step) * step;
}

/** WGSL source with line numbers, for compiler messages. */
function numbered(source: string): string {
  return source
    .split("\n")
    .map((l, i) => `${String(i + 1).padStart(4)} | ${l}`)
    .join("\n");
}

export class Runtime {
  readonly device: GPUDevice;
  readonly limits: GPUSupportedLimits;
  /** Largest storage buffer we may allocate and bind whole. */
  readonly maxAlloc: number;
  readonly batchLimit: number;
  readonly poolLimit: number;
  private readonly checkKeys: boolean;

  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private batchDispatches = 0;
  /** Error-scope and compile checks of the batch being encoded. */
  private batchChecks: Promise<void>[] = [];
  private scopesPushed = false;
  /** Settles when the checks of every submitted batch are in. */
  private lastFlush: Promise<void> = Promise.resolve();

  private readonly paramAlign: number; // in u32s
  private readonly arena: Uint32Array;
  private arenaUsed = 0;
  private readonly arenaBuffer: GPUBuffer;

  private readonly pipelines = new Map<string, Pipeline>();
  private readonly free = new Map<number, GPUBuffer[]>();
  private freeInBatch: GPUBuffer[] = [];
  private readonly staging = new Map<number, GPUBuffer[]>();
  private pooledBytes = 0;
  private pooledCount = 0;
  private liveBuffers = 0;
  private liveBytes = 0;
  private submits = 0;
  private dispatches = 0;

  /** The device has `timestamp-query` (requested by createWebGpuBackend when the adapter offers it). */
  readonly hasTimestamps: boolean;
  /** Profiles use timestamps (hasTimestamps and wanted); false: host timing. */
  useTimestamps: boolean;
  private querySet: GPUQuerySet | null = null;
  /** The profile being recorded: kernel labels, and per timed pass its kernel and first query. */
  private profiling: { labels: string[]; passes: { kernel: number; query: number }[]; current: number; truncated: boolean } | null = null;

  /** The first fault (validation / OOM / compile error, device loss); sticky. */
  fault: BackendError | null = null;
  /** Set when the device was lost; the reason names it. */
  lostReason: string | null = null;

  constructor(device: GPUDevice, readonly deviceId: string, opts: RuntimeOptions = {}) {
    this.device = device;
    this.limits = device.limits;
    this.maxAlloc = Math.min(this.limits.maxBufferSize, this.limits.maxStorageBufferBindingSize);
    this.batchLimit = opts.batchLimit ?? 64;
    this.poolLimit = opts.poolLimitBytes ?? 256 * 1024 * 1024;
    this.checkKeys =
      opts.checkKernelKeys ?? (typeof process !== "undefined" && process.env?.WEBGRAD_CHECK_KERNEL_KEYS === "1");
    this.paramAlign = Math.max(4, this.limits.minStorageBufferOffsetAlignment / 4);
    this.hasTimestamps = device.features.has("timestamp-query");
    this.useTimestamps = this.hasTimestamps && timestampsWanted(opts);
    this.arena = new Uint32Array(64 * 1024);
    this.arenaBuffer = device.createBuffer({ size: this.arena.byteLength, usage: PARAMS_USAGE });
    void device.lost.then((info) => {
      this.lostReason = `${info.reason}${info.message ? `: ${info.message}` : ""}`;
      this.fault ??= new BackendError(
        `${deviceId}: the WebGPU device was lost (${this.lostReason})` +
          `\nTip: arrays on it are gone; call initWebGpu() again for a new device`,
      );
    });
  }

  /** Throws the recorded fault, if any. Called at the start of every operation. */
  check(): void {
    if (this.fault) throw this.fault;
  }

  // ---- batches ----

  /** Opens error scopes for the batch being encoded (once per batch). */
  private beginScopes(): void {
    if (this.scopesPushed) return;
    this.device.pushErrorScope("validation");
    this.device.pushErrorScope("out-of-memory");
    this.scopesPushed = true;
  }

  private getEncoder(): GPUCommandEncoder {
    this.beginScopes();
    if (!this.encoder) {
      this.encoder = this.device.createCommandEncoder();
      // Submit when the current synchronous run of JS yields: a batch spans every op issued without
      // an await in between, and work never sits unsubmitted while the program waits on something else.
      queueMicrotask(() => {
        if (this.encoder && !this.fault) void this.flush();
      });
    }
    return this.encoder;
  }

  private getPass(): GPUComputePassEncoder {
    if (this.pass) return this.pass;
    const prof = this.profiling;
    if (prof && prof.current >= 0 && this.querySet) {
      const query = prof.passes.length * 2;
      if (query + 2 <= MAX_QUERIES) {
        prof.passes.push({ kernel: prof.current, query });
        this.pass = this.getEncoder().beginComputePass({
          timestampWrites: { querySet: this.querySet, beginningOfPassWriteIndex: query, endOfPassWriteIndex: query + 1 },
        });
        return this.pass;
      }
      prof.truncated = true;
    }
    this.pass = this.getEncoder().beginComputePass();
    return this.pass;
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  /**
   * Submits the encoded work (no wait). The promise settles (never rejects) once the error checks of
   * this and every earlier batch are in; callers then `check()`.
   */
  flush(): Promise<void> {
    this.check();
    if (!this.encoder && !this.scopesPushed) return this.lastFlush;
    this.endPass();
    const encoder = this.getEncoder();
    if (this.arenaUsed > 0) {
      this.device.queue.writeBuffer(this.arenaBuffer, 0, this.arena.buffer, 0, this.arenaUsed * 4);
    }
    this.device.queue.submit([encoder.finish()]);
    this.submits++;
    this.encoder = null;
    this.batchDispatches = 0;
    this.arenaUsed = 0;
    const oom = this.device.popErrorScope();
    const validation = this.device.popErrorScope();
    this.scopesPushed = false;
    const checks = this.batchChecks;
    this.batchChecks = [];
    checks.push(
      oom.then((e) => this.recordError(e, "out of device memory")),
      validation.then((e) => this.recordError(e, "a WebGPU validation error")),
    );
    // Buffers freed while encoding are now safe for queue.writeBuffer too.
    for (const b of this.freeInBatch) this.putFree(b);
    this.freeInBatch = [];
    this.trimPool();
    this.lastFlush = Promise.all([this.lastFlush, ...checks]).then(
      () => undefined,
      () => undefined,
    );
    return this.lastFlush;
  }

  private recordError(e: GPUError | null, what: string): void {
    if (!e || this.fault) return;
    this.fault = new BackendError(
      `${this.deviceId}: ${what}: ${e.message}` +
        `\nTip: results computed since the last read are invalid; this device cannot be used further`,
    );
  }

  // ---- buffers ----

  /** Throws before any GPU call when `bytes` exceeds what one storage binding can hold. */
  checkSize(op: string, bytes: number): void {
    if (bytes > this.maxAlloc) {
      const which =
        this.limits.maxStorageBufferBindingSize <= this.limits.maxBufferSize ? "maxStorageBufferBindingSize" : "maxBufferSize";
      throw new BackendError(
        `${op}: an allocation within the device limit ${which} = ${this.maxAlloc} bytes, got ${bytes} bytes` +
          `\nTip: split the array, or use the CPU device for arrays this large`,
      );
    }
  }

  /** A storage buffer of at least `bytes` (4-byte multiple), from the pool when possible. */
  alloc(op: string, bytes: number, forUpload = false): GPUBuffer {
    this.check();
    this.checkSize(op, bytes);
    const cls = Math.min(sizeClass(Math.max(bytes, 4)), Math.max(this.maxAlloc, 4));
    if (!forUpload) {
      const i = this.freeInBatch.findIndex((b) => b.size === cls);
      if (i >= 0) {
        const b = this.freeInBatch[i]!;
        this.freeInBatch[i] = this.freeInBatch[this.freeInBatch.length - 1]!;
        this.freeInBatch.pop();
        this.pooledBytes -= b.size;
        this.pooledCount--;
        return b;
      }
    }
    const list = this.free.get(cls);
    if (list && list.length > 0) {
      const b = list.pop()!;
      this.pooledBytes -= b.size;
      this.pooledCount--;
      return b;
    }
    this.beginScopes();
    const b = this.device.createBuffer({ size: cls, usage: STORAGE_USAGE });
    this.liveBuffers++;
    this.liveBytes += cls;
    return b;
  }

  /** Returns a buffer to the pool (it may still be referenced by encoded, unsubmitted commands). */
  release(b: GPUBuffer): void {
    this.pooledBytes += b.size;
    this.pooledCount++;
    if (this.encoder || this.scopesPushed) this.freeInBatch.push(b);
    else {
      this.putFree(b);
      this.trimPool();
    }
  }

  private putFree(b: GPUBuffer): void {
    let list = this.free.get(b.size);
    if (!list) this.free.set(b.size, (list = []));
    list.push(b);
  }

  /** Destroys pooled buffers beyond the pool limit, largest classes first. */
  private trimPool(): void {
    if (this.pooledBytes <= this.poolLimit) return;
    const classes = [...this.free.keys()].sort((a, b) => b - a);
    for (const c of classes) {
      const list = this.free.get(c)!;
      while (list.length > 0 && this.pooledBytes > this.poolLimit) {
        const b = list.pop()!;
        this.pooledBytes -= b.size;
        this.pooledCount--;
        this.liveBuffers--;
        this.liveBytes -= b.size;
        b.destroy();
      }
      if (this.pooledBytes <= this.poolLimit) break;
    }
  }

  /** Writes host data into `b` at byte `offset` (b must not be in use by the batch being encoded). */
  upload(b: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    this.check();
    this.beginScopes();
    // Dawn takes no SharedArrayBuffer (CPU arrays resident in the Wasm memory are views of one).
    if (typeof SharedArrayBuffer !== "undefined" && data.buffer instanceof SharedArrayBuffer) {
      data = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
    }
    this.device.queue.writeBuffer(b, offset, data.buffer, data.byteOffset, data.byteLength);
  }

  /** Encodes a buffer-to-buffer copy (byte offsets and size multiples of 4). */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    if (bytes === 0) return;
    this.endPass();
    this.getEncoder().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
    this.countDispatch();
  }

  /** Encodes a zero fill of `bytes` at byte `offset` (multiples of 4). */
  clear(b: GPUBuffer, offset: number, bytes: number): void {
    if (bytes === 0) return;
    this.endPass();
    this.getEncoder().clearBuffer(b, offset, bytes);
    this.countDispatch();
  }

  private countDispatch(): void {
    this.dispatches++;
    if (++this.batchDispatches >= this.batchLimit && this.holdDepth === 0) void this.flush();
  }

  /** While > 0, the dispatch-count limit does not submit the batch (see `encodeAll`). */
  private holdDepth = 0;

  /**
   * Runs `fn` (which encodes work) without the batch-size limit splitting it, then submits: the work
   * of a compiled jit call goes to the GPU as one command buffer in one `queue.submit`. (Added for the
   * jit compiler, src/ops/backend/webgpu/compile/.)
   */
  encodeAll<T>(fn: () => T): T {
    this.holdDepth++;
    let out: T;
    try {
      out = fn();
    } finally {
      this.holdDepth--;
    }
    if (this.holdDepth === 0 && this.encoder) void this.flush();
    return out;
  }

  // ---- pipelines and dispatch ----

  private pipeline(kernel: Kernel): Pipeline {
    let p = this.pipelines.get(kernel.key);
    if (p) {
      if (this.checkKeys && kernel.source() !== p.source) {
        throw new BackendError(`${this.deviceId}: kernel key "${kernel.key}" names two different shaders`);
      }
      return p;
    }
    this.beginScopes();
    const source = kernel.source();
    const module = this.device.createShaderModule({ code: source, label: kernel.key });
    this.batchChecks.push(
      module.getCompilationInfo().then((info) => {
        const errors = info.messages.filter((m) => m.type === "error");
        if (errors.length === 0 || this.fault) return;
        this.pipelines.delete(kernel.key);
        this.fault = new BackendError(
          `${this.deviceId}: WGSL compilation of kernel "${kernel.key}" failed:\n` +
            errors.map((m) => `  line ${m.lineNum}:${m.linePos}: ${m.message}`).join("\n") +
            `\n${numbered(source)}`,
        );
      }),
    );
    const pipeline = this.device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
    p = { pipeline, layout: pipeline.getBindGroupLayout(0), source: this.checkKeys ? source : undefined };
    this.pipelines.set(kernel.key, p);
    return p;
  }

  /** Compiles a kernel now (tests and warm-up); a compile error surfaces on the next flush/read. */
  compile(kernel: Kernel): void {
    this.check();
    this.pipeline(kernel);
  }

  /**
   * Encodes one dispatch: binding 0 is the parameter block `params` (u32 words), bindings 1.. are
   * `buffers` in order. Nothing runs until the batch is submitted.
   */
  dispatch(kernel: Kernel, params: ArrayLike<number>, buffers: readonly GPUBuffer[], grid: Grid): void {
    this.check();
    const [x, y = 1, z = 1] = grid;
    if (x === 0 || y === 0 || z === 0) return;
    const max = this.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) {
      throw new BackendError(`${kernel.key}: at most ${max} workgroups per dimension, got [${x}, ${y}, ${z}]`);
    }
    const words = Math.max(params.length, 1);
    const padded = Math.ceil(words / this.paramAlign) * this.paramAlign;
    if (padded > this.arena.length) {
      throw new BackendError(`${kernel.key}: at most ${this.arena.length} parameter words, got ${words}`);
    }
    if (this.arenaUsed + padded > this.arena.length) void this.flush();
    const at = this.arenaUsed;
    for (let i = 0; i < params.length; i++) this.arena[at + i] = params[i]! >>> 0;
    this.arenaUsed += padded;
    const { pipeline, layout } = this.pipeline(kernel);
    const entries: GPUBindGroupEntry[] = [
      { binding: 0, resource: { buffer: this.arenaBuffer, offset: at * 4, size: padded * 4 } },
    ];
    buffers.forEach((b, i) => entries.push({ binding: i + 1, resource: { buffer: b } }));
    const group = this.device.createBindGroup({ layout, entries });
    const pass = this.getPass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(x, y, z);
    this.countDispatch();
  }

  /** A 2-D grid of `groups` workgroups (x <= the per-dimension limit); kernels linearise it. */
  grid(groups: number): Grid {
    const max = this.limits.maxComputeWorkgroupsPerDimension;
    if (groups <= max) return [groups, 1];
    const y = Math.ceil(groups / max);
    return [Math.ceil(groups / y), y];
  }

  // ---- readback ----

  /**
   * Copies `bytes` at `offset` of `src` to the host: encodes a copy into a staging buffer, submits, and
   * awaits the mapping and this batch's error checks. Returns a fresh ArrayBuffer.
   */
  async read(src: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    this.check();
    const out = new ArrayBuffer(bytes);
    if (bytes === 0) {
      await this.flush();
      this.check();
      return out;
    }
    const cls = sizeClass(bytes);
    this.beginScopes();
    const stage = this.staging.get(cls)?.pop() ?? this.device.createBuffer({ size: cls, usage: STAGING_USAGE });
    this.copy(src, offset, stage, 0, bytes);
    const done = this.flush();
    try {
      await Promise.all([stage.mapAsync(MAP_READ, 0, bytes), done]);
      this.check();
    } catch (e) {
      this.check();
      throw e instanceof BackendError ? e : new BackendError(`${this.deviceId}: read failed: ${(e as Error).message}`);
    }
    new Uint8Array(out).set(new Uint8Array(stage.getMappedRange(0, bytes)));
    stage.unmap();
    let list = this.staging.get(cls);
    if (!list) this.staging.set(cls, (list = []));
    if (list.length < 4) list.push(stage);
    else stage.destroy();
    return out;
  }

  // ---- timing ----

  /**
   * Starts recording a profile (timestamps must be in use): the work encoded until `endProfile`
   * should stay in one command buffer (run it inside `encodeAll`).
   */
  beginProfile(): void {
    this.check();
    if (!this.useTimestamps) throw new BackendError(`${this.deviceId}: timestamp profiling without timestamp queries (webgrad bug)`);
    this.querySet ??= this.device.createQuerySet({ type: "timestamp", count: MAX_QUERIES });
    this.endPass();
    this.profiling = { labels: [], passes: [], current: -1, truncated: false };
  }

  /** Whether a profile is being recorded (kernels then call `markKernel`). */
  get profilingActive(): boolean {
    return this.profiling !== null;
  }

  /**
   * The work encoded from now on belongs to kernel `label` (null: to no kernel); a new compute pass
   * starts, so passes never span two kernels.
   */
  markKernel(label: string | null): void {
    const prof = this.profiling;
    if (!prof) return;
    this.endPass();
    if (label === null) prof.current = -1;
    else {
      prof.current = prof.labels.length;
      prof.labels.push(label);
    }
  }

  /**
   * Ends the profile: resolves the queries into a buffer, submits, reads them back and returns GPU
   * time per marked kernel (0 for a kernel that dispatched nothing). `truncated`: more passes than
   * the query set holds (the rest were not timed).
   */
  async endProfile(): Promise<{ kernels: KernelTiming[]; truncated: boolean }> {
    const prof = this.profiling;
    if (!prof) throw new BackendError(`${this.deviceId}: endProfile without beginProfile (webgrad bug)`);
    this.endPass();
    this.profiling = null;
    const n = prof.passes.length * 2;
    const ns = new Array<number>(prof.labels.length).fill(0);
    if (n > 0) {
      const bytes = n * 8;
      const resolve = this.device.createBuffer({ size: bytes, usage: 0x0200 | 0x0004 }); // QUERY_RESOLVE | COPY_SRC
      this.getEncoder().resolveQuerySet(this.querySet!, 0, n, resolve, 0);
      try {
        const raw = new BigUint64Array(await this.read(resolve, 0, bytes));
        for (const { kernel, query } of prof.passes) {
          const d = raw[query + 1]! - raw[query]!;
          // Timestamps may be reset between passes on some drivers: a negative span counts as 0.
          ns[kernel] += d > 0n ? Number(d) : 0;
        }
      } finally {
        resolve.destroy();
      }
    } else await this.sync();
    return { kernels: prof.labels.map((label, i) => ({ label, ns: ns[i]! })), truncated: prof.truncated };
  }

  /** Waits until all submitted work is done (benchmarks). */
  async sync(): Promise<void> {
    await this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.check();
  }

  stats(): RuntimeStats {
    return {
      buffers: this.liveBuffers,
      bufferBytes: this.liveBytes,
      pooledBuffers: this.pooledCount,
      pooledBytes: this.pooledBytes,
      pipelines: this.pipelines.size,
      submits: this.submits,
      dispatches: this.dispatches,
    };
  }

  /** Destroys the device (its arrays become unusable; operations then throw). */
  destroy(): void {
    this.device.destroy();
  }
}

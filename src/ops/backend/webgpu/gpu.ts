/// <reference types="@webgpu/types" />
/**
 * @file Getting hold of the standard `GPU` interface, an adapter and a device. Node gets `GPU` from the
 * `webgpu` npm package (Dawn), whose `globals` (GPUBufferUsage, GPUMapMode, ...) are installed onto
 * globalThis where missing; Deno and browsers use `navigator.gpu`. Nothing else in this folder
 * depends on where `GPU` came from.
 *
 * Dawn frees its instance when the object `create()` returned is garbage-collected, even under live
 * devices (later submits then crash at random), so that object is kept in a module-level variable for
 * the life of the process.
 */
/** The object `webgpu`'s create() returned; never released (see the file comment). */
let dawnInstance: GPU | null = null;

/** Why the last attempt to get a GPU / adapter failed (null when it succeeded or was never tried). */
let lastFailure: string | null = null;

export function gpuFailureReason(): string | null {
  return lastFailure;
}

export function setGpuFailure(reason: string | null): void {
  lastFailure = reason;
}

/**
 * Mesa warns on every process start when XDG_RUNTIME_DIR is unset; a private 0700 folder silences it.
 * Node modules are imported here, on the Node path only, so browser bundles never see them.
 */
async function ensureXdgRuntimeDir(): Promise<void> {
  if (process.env.XDG_RUNTIME_DIR) return;
  try {
    const [{ mkdirSync }, { tmpdir }, { join }] = await Promise.all([import("node:fs"), import("node:os"), import("node:path")]);
    const dir = join(tmpdir(), `webgrad-xdg-${process.getuid?.() ?? "user"}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    process.env.XDG_RUNTIME_DIR = dir;
  } catch {
    /* only a warning is at stake */
  }
}

/** The `GPU` interface of this runtime, or null (with `gpuFailureReason()` saying why). */
export async function getGpu(): Promise<GPU | null> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  if (dawnInstance) return dawnInstance;
  if (typeof process === "undefined" || !process.versions?.node) {
    lastFailure = "this runtime has no navigator.gpu (WebGPU is not available here)";
    return null;
  }
  await ensureXdgRuntimeDir();
  let mod: { create: (opts: string[]) => GPU; globals: object };
  try {
    mod = (await import("webgpu")) as unknown as typeof mod;
  } catch (e) {
    lastFailure = `the "webgpu" npm package could not be loaded (${(e as Error).message})\nTip: npm install webgpu`;
    return null;
  }
  for (const [k, v] of Object.entries(mod.globals)) {
    if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  }
  try {
    // Dawn rounds timestamp queries to 2^16 ns by default (a browser fingerprinting guard); profiling
    // under Node wants them exact (profileJit, WEBGRAD_DEBUG=2).
    try {
      dawnInstance = mod.create(["disable-dawn-features=timestamp_quantization"]);
    } catch {
      dawnInstance = mod.create([]); // a Dawn that does not know the toggle
    }
  } catch (e) {
    lastFailure = `Dawn failed to start (${(e as Error).message})`;
    return null;
  }
  return dawnInstance;
}

/** Adapter description as webgrad reports it. */
export interface AdapterInfo {
  /** The adapter's name (`llvmpipe (LLVM 15.0.6, 256 bits)`, `NVIDIA GeForce ...`). */
  readonly name: string;
  readonly vendor: string;
  readonly architecture: string;
  readonly description: string;
  /** A software rasteriser (Mesa lavapipe / llvmpipe, SwiftShader, WARP) or a fallback adapter. */
  readonly isSoftware: boolean;
}

export function describeAdapter(adapter: GPUAdapter): AdapterInfo {
  const info = (adapter as { info?: GPUAdapterInfo }).info;
  const vendor = info?.vendor ?? "";
  const architecture = info?.architecture ?? "";
  const description = info?.description ?? "";
  const name = description || info?.device || [vendor, architecture].filter(Boolean).join(" ") || "WebGPU adapter";
  const fallback = (info as { isFallbackAdapter?: boolean } | undefined)?.isFallbackAdapter === true ||
    (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
  const isSoftware =
    fallback || architecture === "software" || /llvmpipe|lavapipe|swiftshader|warp|software/i.test(`${name} ${vendor}`);
  return { name, vendor, architecture, description, isSoftware };
}

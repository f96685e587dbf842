/// <reference types="@webgpu/types" />
/**
 * @file The WebGPU device: `initWebGpu()` finds an adapter, opens a device with the adapter's limits,
 * wraps it in a `WebGpuBackend` and registers it as device `webgpu:0` (without making it the default).
 * Under Node the `GPU` interface comes from the `webgpu` package (Dawn; on a machine without a GPU it
 * runs on Mesa's lavapipe, see scripts/setup-webgpu.sh); in Deno and browsers from `navigator.gpu`.
 *
 * Read backend.ts for the op implementations and runtime.ts for batching, pooling and faults.
 */
import "../../devices.js"; // the CPU device registers first, so it stays the default
import { registerDevice, unregisterDevice, type Device } from "../../array.js";
import { WebGpuBackend } from "./backend.js";
import { describeAdapter, getGpu, gpuFailureReason, setGpuFailure, type AdapterInfo } from "./gpu.js";
import { Runtime, timestampsWanted, type RuntimeOptions } from "./runtime.js";

export { WebGpuBackend, GpuHandle } from "./backend.js";
export type { AdapterInfo } from "./gpu.js";
export type { RuntimeOptions, RuntimeStats, KernelTiming } from "./runtime.js";

export interface InitWebGpuOptions extends RuntimeOptions {
  /** Adapter preference passed to requestAdapter. */
  powerPreference?: GPUPowerPreference;
}

/** The limits requested from the adapter (its maxima: large buffers and many bindings). */
const LIMITS = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupsPerDimension",
] as const;

const DEVICE_ID = "webgpu:0";
let pending: Promise<Device | null> | null = null;
let info: AdapterInfo | null = null;

const SETUP_TIP = "\nTip: on Debian without a GPU run `npm run setup:webgpu` (installs Mesa lavapipe)";

/**
 * Opens the WebGPU device `webgpu:0` and registers it (it does not become the default device).
 * Returns null when no adapter exists; `webGpuUnavailableReason()` then says why. Concurrent and
 * repeated calls share one device; after a device loss (or a null result) the next call tries again.
 */
export function initWebGpu(opts: InitWebGpuOptions = {}): Promise<Device | null> {
  pending ??= open(opts).then((d) => {
    if (!d) pending = null;
    return d;
  });
  return pending;
}

/**
 * Opens a WebGPU device and its backend without registering anything: for a second device, or tests
 * that must not disturb `webgpu:0` (destroying a device, faulting it). Null when no adapter exists.
 */
export async function createWebGpuBackend(
  opts: InitWebGpuOptions = {},
  id = DEVICE_ID,
): Promise<{ backend: WebGpuBackend; info: AdapterInfo; gpuDevice: GPUDevice } | null> {
  const gpu = await getGpu();
  if (!gpu) return null;
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter(opts.powerPreference ? { powerPreference: opts.powerPreference } : undefined);
  } catch (e) {
    setGpuFailure(`requestAdapter failed: ${(e as Error).message}${SETUP_TIP}`);
    return null;
  }
  if (!adapter) {
    setGpuFailure(`no WebGPU adapter was found (Dawn needs a Vulkan, Metal or D3D12 driver)${SETUP_TIP}`);
    return null;
  }
  const requiredLimits: Record<string, number> = {};
  for (const k of LIMITS) requiredLimits[k] = adapter.limits[k];
  // GPU timestamps for profileJit / WEBGRAD_DEBUG=2, when the adapter offers them (never required).
  const requiredFeatures: GPUFeatureName[] = adapter.features.has("timestamp-query") && timestampsWanted(opts) ? ["timestamp-query"] : [];
  let gpuDevice: GPUDevice;
  try {
    gpuDevice = await adapter.requestDevice({ requiredLimits, requiredFeatures }).catch((e: unknown) => {
      if (requiredFeatures.length === 0) throw e;
      return adapter.requestDevice({ requiredLimits }); // a feature the adapter listed but would not give
    });
  } catch (e) {
    setGpuFailure(`requestDevice failed: ${(e as Error).message}`);
    return null;
  }
  setGpuFailure(null);
  const backend = new WebGpuBackend(new Runtime(gpuDevice, id, opts), id);
  return { backend, info: describeAdapter(adapter), gpuDevice };
}

async function open(opts: InitWebGpuOptions): Promise<Device | null> {
  const made = await createWebGpuBackend(opts, DEVICE_ID);
  if (!made) return null;
  info = made.info;
  const device: Device = {
    id: DEVICE_ID,
    kind: "webgpu",
    description: `${info.name} (${[info.vendor, info.architecture].filter(Boolean).join(", ") || "WebGPU"})`,
    backend: made.backend as Device["backend"],
    supportsFloat64: false,
  };
  void made.gpuDevice.lost.then(() => {
    // Arrays on the lost device keep failing with the loss reason; a new initWebGpu() opens a new one.
    unregisterDevice(DEVICE_ID);
    pending = null;
  });
  registerDevice(device);
  return device;
}

/** Why the last initWebGpu() returned null (null when it succeeded or was not called). */
export function webGpuUnavailableReason(): string | null {
  return gpuFailureReason();
}

/** The adapter behind `webgpu:0` (null before a successful initWebGpu()). */
export function adapterInfo(): AdapterInfo | null {
  return info;
}

/**
 * @file Device registry glue: the CPU device is always present; other backends register theirs.
 */
import os from "node:os";
import { Array, Device, getDefaultDevice, listDevices, memoryStats, registerDevice, resolveDevice, setDefaultDevice, wrapBuffer } from "./array.js";
import { cpuBackend } from "./backend/cpu/index.js";

registerDevice({
  id: "cpu",
  kind: "cpu",
  description: `${os.cpus()[0]?.model ?? "CPU"} (${os.cpus().length} cores)`,
  backend: cpuBackend as Device["backend"],
  supportsFloat64: true,
});

/** All registered devices (the CPU first). */
export function devices(): readonly Device[] {
  return listDevices();
}

export function defaultDevice(): Device {
  return getDefaultDevice();
}

/** Copies an array to `device` (returns x itself when it is already there). */
export async function devicePut(x: Array, device: Device | string): Promise<Array> {
  const dev = resolveDevice(device);
  if (x.device === dev) {
    x.committed = true;
    return x;
  }
  const data = await x.data();
  const out = wrapBuffer(dev.backend.fromHost(data, x.aval), x.aval, dev);
  out.committed = true;
  return out;
}

export { memoryStats, setDefaultDevice };

#!/usr/bin/env bash
# setup-webgpu.sh — makes a WebGPU adapter available to Node (Dawn, via the `webgpu` npm package) on a
# Debian bookworm machine without a GPU, by installing Mesa's lavapipe (a software Vulkan driver).
#
# What it does, step by step:
#   1. If a Vulkan driver is already installed (an ICD json under /usr/share/vulkan/icd.d or
#      /etc/vulkan/icd.d) AND Dawn finds an adapter through it, it prints so and exits: nothing to do.
#   2. Otherwise it adds Debian's bookworm-backports suite, taking the mirror from the machine's own
#      /etc/apt/sources.list.d/debian.sources entry (so no host name is hard-coded here), unless a
#      backports entry already exists.
#   3. It installs `mesa-vulkan-drivers libvulkan1` from bookworm-backports (Mesa 25). Debian stable's
#      lavapipe (Mesa 22) is too old for Dawn, which is why backports is needed.
# Running it twice is safe: the second run finds the adapter and stops at step 1.
#
# Needs root (or sudo) for steps 2-3. Set WEBGPU_SETUP_FORCE=1 to reinstall even when an adapter exists.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'setup-webgpu: %s\n' "$*"; }

# Mesa warns when XDG_RUNTIME_DIR is unset; a private 0700 folder silences it for the probe below.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/webgrad-xdg-$(id -u)"
  mkdir -p "$XDG_RUNTIME_DIR" && chmod 0700 "$XDG_RUNTIME_DIR"
fi

has_icd() {
  compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null || compgen -G '/etc/vulkan/icd.d/*.json' >/dev/null
}

# Asks Dawn for an adapter (prints its description); fails when there is none or `webgpu` is missing.
probe_adapter() {
  [ -d "$here/node_modules/webgpu" ] || return 1
  (cd "$here" && timeout 60 node --input-type=module -e '
    import { create, globals } from "webgpu";
    Object.assign(globalThis, globals);
    const gpu = create([]);
    const a = await gpu.requestAdapter();
    if (!a) process.exit(1);
    const i = a.info ?? {};
    console.log(`${i.vendor ?? "?"} / ${i.architecture ?? "?"} / ${i.description || i.device || "?"}`);
    process.exit(0);
  ' 2>/dev/null)
}

if [ "${WEBGPU_SETUP_FORCE:-0}" != 1 ] && has_icd; then
  if [ ! -d "$here/node_modules/webgpu" ]; then
    say "a Vulkan ICD is installed; run npm install, then this script again to check Dawn finds it."
    exit 0
  fi
  if info=$(probe_adapter); then
    say "a WebGPU adapter already works ($info); nothing to do."
    exit 0
  fi
  say "a Vulkan ICD is installed but Dawn finds no adapter (too old a Mesa?); installing lavapipe from backports."
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    say "needs root to install packages (run as root, or install sudo)."
    exit 1
  fi
fi

src=/etc/apt/sources.list.d/debian.sources
dest=/etc/apt/sources.list.d/backports.sources
if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  say "bookworm-backports is already configured."
else
  [ -f "$src" ] || { say "no $src to derive the Debian mirror from; add bookworm-backports by hand."; exit 1; }
  uri=$(awk '/^URIs:/ { print $2; exit }' "$src")
  [ -n "$uri" ] || { say "no URIs line in $src"; exit 1; }
  say "adding bookworm-backports from $uri to $dest"
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" | $SUDO tee "$dest" >/dev/null
fi

say "installing mesa-vulkan-drivers libvulkan1 from bookworm-backports (quiet)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
$SUDO apt-get install -o DPkg::Lock::Timeout=600 -y -qq -o Dpkg::Use-Pty=0 -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null

if info=$(probe_adapter); then
  say "done: WebGPU adapter $info"
else
  say "installed, but Dawn still finds no adapter; check 'node_modules/webgpu' is installed (npm install)."
  exit 1
fi

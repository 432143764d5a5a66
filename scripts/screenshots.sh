#!/usr/bin/env bash
# Regenerate screenshots/*.svg from real frames: `vdiskview render --format svg` on images
# made here with qemu-img/qemu-io (and the bundled demo image).
# Usage: scripts/screenshots.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --quiet
V=target/debug/vdiskview
out=screenshots
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. VHD overview: the demo image as it opens
$V render assets/demo.vhd --size 160x48 --format svg > "$out/vhd-overview.svg"

# 2. QCOW2 backing chain: three layers, data at each depth, a zero and a compressed cluster
qemu-img create -q -f qcow2 "$tmp/base.qcow2" 64M
qemu-io -f qcow2 -c "write -P 1 0 2M" -c "write -P 1 8M 1M" "$tmp/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$tmp/mid.qcow2" 64M
qemu-io -f qcow2 -c "write -P 2 1M 2M" -c "write -P 2 16M 512k" "$tmp/mid.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$tmp/top.qcow2" 64M
qemu-io -f qcow2 -c "write -P 3 1536k 256k" -c "write -z 8M 128k" -c "write -c -P 4 32M 128k" "$tmp/top.qcow2" >/dev/null
(cd "$tmp" && "$OLDPWD/$V" render top.qcow2 --size 160x48 --format svg --keys 'Tab Tab Right Right Right Right Right Right Right Right Right Right Right Right Right Right Right Right Right Right Right Right Right Right Right') > "$out/qcow2-chain.svg"

# 3. Hex view over metadata: the qcow2 header and its extensions, fields coloured
(cd "$tmp" && "$OLDPWD/$V" render top.qcow2 --size 160x48 --format svg --keys 'Down Down Down Down Down Down') > "$out/hex-metadata.svg"

# 4. Heatmap: a dynamic VHD whose block 0 bitmap has a pattern of present sectors
qemu-img create -q -f vpc -o subformat=dynamic "$tmp/bm.vhd" 32M
qemu-io -f vpc -c "write -P 7 0 2M" -c "write -P 8 6M 64k" "$tmp/bm.vhd" >/dev/null
python3 - "$tmp/bm.vhd" <<'PY'
import sys
# block 0's bitmap sits at BAT entry 0 * 512; write a striped pattern into it
f = open(sys.argv[1], 'r+b')
f.seek(0x600); entry = int.from_bytes(f.read(4), 'big')
f.seek(entry * 512)
f.write(bytes((0xff if (i // 16) % 3 else 0x0f) for i in range(512)))
PY
(cd "$tmp" && "$OLDPWD/$V" render bm.vhd --size 160x48 --format svg --keys 'Tab Tab Tab') > "$out/heatmap.svg"
# 5. The data inspector on the VHD footer's time stamp, and the demo at 120x36 (tabs)
$V render assets/demo.vhd --size 160x48 --format svg --keys 'g f:0x200a18 Enter I' > "$out/inspector.svg"
$V render assets/demo.vhd --size 120x36 --format svg --keys 'I' > "$out/vhd-120x36.svg"
ls -l "$out"

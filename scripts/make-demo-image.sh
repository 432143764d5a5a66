#!/usr/bin/env bash
# Build assets/demo.vhd reproducibly, without root and without mounting.
#
# Layout of the guest disk (8 MiB raw before conversion):
#   - MBR (sfdisk, label-id 0x76647677) with one Linux (0x83) partition
#     starting at sector 2048 (1 MiB) and running to the end of the disk;
#   - an ext2 file system in that partition (mke2fs -d, fixed UUID,
#     hash seed, root owner and timestamps) holding:
#       /test1.txt               "Hello, Sailor!" followed by ONE newline (15 bytes)
#       /README.txt              a short text file
#       /docs/notes.txt          a small text file in a subdirectory
#       /docs/random.bin         102400 pseudo-random bytes (SHA-256 counter mode,
#                                seed "vdiskview-demo", fully deterministic)
#       /docs/empty/             an empty directory
# The raw disk is converted with `qemu-img convert -O vpc -o subformat=dynamic`.
# qemu stamps the VHD footer with the current time and a random unique id, so
# afterwards both footers (offset 0 and the last 512 bytes) get a fixed
# timestamp and unique id and a recomputed checksum. The result is byte-for-byte
# identical on every run with the same tool versions.
#
# qemu's dynamic VHD layout: footer copy at 0x0, dynamic header at 0x200,
# BAT at 0x600 (one 512-byte sector), block 0 bitmap at 0x800 and block 0
# data at 0xa00 (BAT entry 0 = sector 4). The MBR makes block 0 the first one
# allocated, so guest offset 0x1000 lives at file offset 0x1a00.
#
# Usage: scripts/make-demo-image.sh [OUTPUT]   (default: assets/demo.vhd)
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
export LC_ALL=C TZ=UTC

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$here/assets/demo.vhd}"

# 2024-01-01T00:00:00Z
EPOCH=1704067200
export SOURCE_DATE_EPOCH=$EPOCH
export E2FSPROGS_FAKE_TIME=$EPOCH
FS_UUID=5ad1d0e5-0000-4000-8000-766476770001
HASH_SEED=5ad1d0e5-0000-4000-8000-766476770002
# VHD unique id written into the footer (16 bytes, hex)
VHD_UUID=766476770d0e4d6f8000000000000001

for tool in qemu-img sfdisk mke2fs debugfs python3; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool (run .ci/run or apt-get install qemu-utils fdisk e2fsprogs python3)" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

DISK_SIZE=$((8 * 1024 * 1024))
PART_START_SECTOR=2048
PART_SECTORS=$((DISK_SIZE / 512 - PART_START_SECTOR))

# --- file tree --------------------------------------------------------------
root="$work/root"
mkdir -p "$root/docs/empty"
printf 'Hello, Sailor!\n' > "$root/test1.txt"
cat > "$root/README.txt" <<'TXT'
This is the vdiskview demo disk.
It is an 8 MiB MBR disk with one ext2 partition at 1 MiB,
stored as a dynamic VHD made by qemu-img.
TXT
cat > "$root/docs/notes.txt" <<'TXT'
notes:
- test1.txt says hello
- random.bin is 100 KiB of deterministic pseudo-random bytes
TXT
python3 - "$root/docs/random.bin" <<'PY'
import hashlib, sys
out = bytearray()
i = 0
while len(out) < 102400:
    out += hashlib.sha256(b"vdiskview-demo" + i.to_bytes(8, "big")).digest()
    i += 1
open(sys.argv[1], "wb").write(bytes(out[:102400]))
PY
chmod 0644 "$root/test1.txt" "$root/README.txt" "$root/docs/notes.txt" "$root/docs/random.bin"
chmod 0755 "$root" "$root/docs" "$root/docs/empty"
find "$root" -exec touch -h -d "@$EPOCH" {} +

# --- ext2 file system on its own file ---------------------------------------
fs="$work/part.ext2"
truncate -s $((PART_SECTORS * 512)) "$fs"
mke2fs -q -F -t ext2 -b 1024 -L vdvw-demo -U "$FS_UUID" \
  -E "root_owner=0:0,hash_seed=$HASH_SEED" -d "$root" "$fs"

# mke2fs -d copies ctime (and whatever the kernel says) from the source
# files; pin every inode's timestamps so the image is reproducible.
{
  for f in / /lost+found /test1.txt /README.txt /docs /docs/notes.txt /docs/random.bin /docs/empty; do
    for field in atime ctime mtime; do
      echo "sif $f $field @$EPOCH"
    done
    echo "sif $f uid 0"
    echo "sif $f gid 0"
  done
} > "$work/debugfs.cmds"
debugfs -w -f "$work/debugfs.cmds" "$fs" >/dev/null 2>&1
# debugfs may touch the superblock's write time: reset it via fake time + set_super_value
debugfs -w -R "ssv wtime @$EPOCH" "$fs" >/dev/null 2>&1 || true
debugfs -w -R "ssv mtime @$EPOCH" "$fs" >/dev/null 2>&1 || true
debugfs -w -R "ssv lastcheck @$EPOCH" "$fs" >/dev/null 2>&1 || true
debugfs -w -R "ssv mkfs_time @$EPOCH" "$fs" >/dev/null 2>&1 || true
e2fsck -fn "$fs" >/dev/null 2>&1

# --- raw disk with MBR --------------------------------------------------------
raw="$work/disk.raw"
truncate -s "$DISK_SIZE" "$raw"
sfdisk -q --no-reread --no-tell-kernel "$raw" <<SFDISK
label: dos
label-id: 0x76647677
unit: sectors

start=$PART_START_SECTOR, size=$PART_SECTORS, type=83
SFDISK
dd if="$fs" of="$raw" bs=512 seek="$PART_START_SECTOR" conv=notrunc,sparse status=none

# --- dynamic VHD --------------------------------------------------------------
mkdir -p "$(dirname "$out")"
tmpout="$work/demo.vhd"
qemu-img convert -q -f raw -O vpc -o subformat=dynamic "$raw" "$tmpout"

python3 - "$tmpout" "$EPOCH" "$VHD_UUID" <<'PY'
import struct, sys
path, epoch, uid = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z
with open(path, "r+b") as f:
    f.seek(0, 2)
    size = f.tell()
    for off in (0, size - 512):
        f.seek(off)
        foot = bytearray(f.read(512))
        assert foot[0:8] == b"conectix", f"no footer at {off:#x}"
        struct.pack_into(">I", foot, 24, epoch - VHD_EPOCH)   # time stamp
        foot[68:84] = uid                                    # unique id
        struct.pack_into(">I", foot, 64, 0)
        csum = (~sum(foot)) & 0xFFFFFFFF
        struct.pack_into(">I", foot, 64, csum)
        f.seek(off)
        f.write(foot)
PY

# --- sanity checks ------------------------------------------------------------
python3 - "$tmpout" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
hdr = data[0x200:0x200 + 1024]
assert hdr[0:8] == b"cxsparse"
table_off = struct.unpack_from(">Q", hdr, 16)[0]
block_size = struct.unpack_from(">I", hdr, 32)[0]
assert table_off == 0x600, hex(table_off)
assert block_size == 2 * 1024 * 1024, block_size
bat0 = struct.unpack_from(">I", data, 0x600)[0]
assert bat0 == 4, f"BAT[0] = {bat0:#x}, expected 4 (bitmap at 0x800, data at 0xa00)"
PY
mv "$tmpout" "$out"
echo "wrote $out ($(stat -c %s "$out") bytes)"

#!/usr/bin/env bash
# Make the seed corpora of the fuzz targets in fuzz/corpus/TARGET/ (gitignored): small images
# made by qemu-img/qemu-io (qcow2 of every cluster kind, snapshots, bitmaps, backing file),
# VHDs (qemu-made fixed/dynamic, and dynamic/differencing VHDs with 4 KiB blocks written here),
# partition tables by sfdisk/sgdisk, a tiny ext2, compressed clusters, offset expressions,
# VMDK (sparse, zeroed grains, streamOptimized, descriptors), VDI (dynamic, static) and NTFS.
# Needs qemu-utils, fdisk, gdisk, e2fsprogs, zstd, python3, ntfs-3g.
set -euo pipefail
cd "$(dirname "$0")"
C=corpus
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
for t in vhd_footer vhd_header vhd_image qcow2_header qcow2_image qcow2_snapshots qcow2_bitmaps \
    qcow2_decompress partitions expr; do
    mkdir -p "$C/$t"
done

q() { qemu-img "$@" >/dev/null; }
io() { local f=$1; shift; local a=(); for c in "$@"; do a+=(-c "$c"); done; qemu-io -f qcow2 "${a[@]}" "$f" >/dev/null; }

# --- qcow2, small clusters so the files stay small -------------------------------------
q create -f qcow2 -o cluster_size=512 "$W/plain512.qcow2" 1M
io "$W/plain512.qcow2" "write -P 0xab 0 3k" "write -z 8k 4k" "write -c -P 0x11 64k 512" \
   "write -P 0x22 100k 1k" "discard 101k 512" "write -P 0xee 1023k 1k"
q create -f qcow2 -o cluster_size=4096,compat=0.10 "$W/v2-4k.qcow2" 1M
qemu-io -f qcow2 -c "write -P 0x33 4k 12k" -c "write -c -P 0x44 64k 4k" "$W/v2-4k.qcow2" >/dev/null
q create -f qcow2 -o cluster_size=16k,extended_l2=on "$W/extl2.qcow2" 1M
io "$W/extl2.qcow2" "write -P 0x55 1k 2k" "write -z 16k 4k" "write -P 0x66 40k 512"
q create -f qcow2 -o cluster_size=4096,compression_type=zstd "$W/zstd.qcow2" 1M
io "$W/zstd.qcow2" "write -c -P 0x77 0 4k" "write -c -P 0x78 8k 4k"
q create -f qcow2 -o cluster_size=512,refcount_bits=1 "$W/rc1.qcow2" 512k
io "$W/rc1.qcow2" "write -P 1 0 2k"
q create -f qcow2 -o cluster_size=512,refcount_bits=64 "$W/rc64.qcow2" 512k
io "$W/rc64.qcow2" "write -P 2 0 2k"
q create -f qcow2 -o cluster_size=512 "$W/snap.qcow2" 256k
io "$W/snap.qcow2" "write -P 3 0 2k"
q snapshot -c first "$W/snap.qcow2"
io "$W/snap.qcow2" "write -P 4 1k 2k"
q snapshot -c second "$W/snap.qcow2"
q create -f qcow2 -o cluster_size=4096 "$W/bitmaps.qcow2" 1M
q bitmap --add "$W/bitmaps.qcow2" b0
q bitmap --add -g 65536 "$W/bitmaps.qcow2" b1
io "$W/bitmaps.qcow2" "write -P 5 0 8k"
q create -f qcow2 -o cluster_size=512 "$W/base.qcow2" 256k
q create -f qcow2 -o cluster_size=512 -b base.qcow2 -F qcow2 "$W/top.qcow2" 256k
io "$W/top.qcow2" "write -P 6 4k 1k"
for f in "$W"/*.qcow2; do
    n=$(basename "$f" .qcow2)
    cp "$f" "$C/qcow2_image/$n"
    head -c 4096 "$f" > "$C/qcow2_header/$n"
done

# --- VHD ----------------------------------------------------------------------------------
q create -f vpc -o subformat=fixed,force_size=on "$W/fixed.vhd" 64k
q create -f vpc "$W/dynamic-qemu.vhd" 1M
python3 - "$W" "$C" <<'EOF'
import struct, sys, zlib, os
W, C = sys.argv[1], sys.argv[2]

def csum(b, skip):
    return (~sum(x for i, x in enumerate(b) if not skip <= i < skip + 4)) & 0xffffffff

def footer(disk_type, size, data_offset, uid):
    f = bytearray(512)
    f[0:8] = b"conectix"
    struct.pack_into(">IIQ", f, 8, 2, 0x10000, data_offset)
    f[28:32] = b"qem2"
    struct.pack_into(">QQ", f, 40, size, size)
    f[56:60] = bytes([0xff, 0xff, 0x10, 0xff])
    struct.pack_into(">I", f, 60, disk_type)
    f[68:84] = uid
    struct.pack_into(">I", f, 64, csum(f, 64))
    return bytes(f)

def dynamic(size, bs, blocks, parent=None):
    """A dynamic (or differencing, with parent=(name, uid)) VHD with `bs`-byte blocks;
    `blocks` maps block index -> (bitmap byte, data byte)."""
    n = -(-size // bs)
    bm = ((bs // 512 + 7) // 8 + 511) // 512 * 512
    h = bytearray(1024)
    h[0:8] = b"cxsparse"
    struct.pack_into(">QQIII", h, 8, 0xffffffffffffffff, 1536, 0x10000, n, bs)
    loc_data = b""
    if parent:
        h[40:56] = parent[1]
        name = parent[0].encode("utf-16-be")
        h[64:64 + len(name)] = name
        w2ru = (".\\" + parent[0]).encode("utf-16-le")
        struct.pack_into(">4sIII Q", h, 576, b"W2ru", 1, len(w2ru), 0, 0)
    bat_bytes = (n * 4 + 511) // 512 * 512
    pos = 1536 + bat_bytes
    locs = []
    if parent:
        struct.pack_into(">Q", h, 576 + 16, pos)
        locs.append((pos, w2ru.ljust(512, b"\0")))
        pos += 512
        mac = ("file://./" + parent[0]).encode()
        struct.pack_into(">4sIII Q", h, 600, b"MacX", 512, len(mac), 0, pos)
        locs.append((pos, mac.ljust(512, b"\0")))
        pos += 512
    struct.pack_into(">I", h, 36, csum(h, 36))
    bat = [0xffffffff] * n
    body = b""
    for i, (b1, b2) in sorted(blocks.items()):
        bat[i] = pos // 512
        body += bytes([b1]) * bm + bytes([b2]) * bs
        pos += bm + bs
    uid = bytes(range(16)) if not parent else bytes(range(16, 32))
    f = footer(4 if parent else 3, size, 512, uid)
    out = bytearray(f + h + b"".join(struct.pack(">I", x) for x in bat).ljust(bat_bytes, b"\xff"))
    for off, d in locs:
        out += d
    out += body + f
    return bytes(out), f

base, bf = dynamic(64 * 1024, 4096, {0: (0xff, 0x5a), 3: (0xff, 0x3c)})
open(f"{W}/base4k.vhd", "wb").write(base)
diff, _ = dynamic(64 * 1024, 4096, {1: (0xf0, 0x11), 3: (0x0f, 0x22)}, ("base4k.vhd", bf[68:84]))
open(f"{W}/diff4k.vhd", "wb").write(diff)

# vhd_header inputs: [type][size][header][rest of the file between the header and the footer]
for name in ["base4k.vhd", "diff4k.vhd", "dynamic-qemu.vhd"]:
    b = open(f"{W}/{name}", "rb").read()
    kind = 1 if b[-512 + 63] == 4 else 0
    size = b[-512 + 48:-512 + 56]
    open(f"{C}/vhd_header/{name}", "wb").write(bytes([kind]) + size + b[512:1536] + b[1536:-512])
    open(f"{C}/vhd_footer/{name}", "wb").write(b[-512:])

# qcow2_snapshots: [nb][the file from 0x200]: L1 at 0x200 (32 entries), snapshot table at
# 0x400, L1 copies and an L2 table after it.
def snapshot_entry(l1_off, l1_size, sid, name, extra):
    e = struct.pack(">QIHHIIQII", l1_off, l1_size, len(sid), len(name), 1700000000, 5, 123456789, 0, len(extra))
    e += extra + sid + name
    return e + b"\0" * (-len(e) % 8)
body = bytearray(0x1000)
struct.pack_into(">Q", body, 0, 0x8000000000000000 | 0xa00)        # L1[0] -> L2 at 0xa00
table = snapshot_entry(0x200, 32, b"1", b"first", struct.pack(">QQ", 0, 1 << 20))
table += snapshot_entry(0x800, 2, b"2", b"second", struct.pack(">QQQ", 4096, 1 << 20, 2**64 - 1))
body[0x200:0x200 + len(table)] = table
struct.pack_into(">Q", body, 0x600, 0xa00)                           # snapshot 2's L1
struct.pack_into(">Q", body, 0x800, 0x8000000000000000 | 0xc00)      # L2[0] -> data at 0xc00
body[0xa00:0xc00] = b"\x42" * 0x200
open(f"{C}/qcow2_snapshots/two", "wb").write(struct.pack(">H", 2) + bytes(body))
open(f"{C}/qcow2_snapshots/one", "wb").write(struct.pack(">H", 1) + bytes(body))

# qcow2_bitmaps: [nb][directory size][the file from 0x200]: directory at 0x400, tables at
# 0x600/0x800, a data cluster at 0xa00.
def bitmap_entry(table_off, table_size, flags, gran, name):
    e = struct.pack(">QIIBBHI", table_off, table_size, flags, 1, gran, len(name), 0) + name
    return e + b"\0" * (-len(e) % 8)
body = bytearray(0x1000)
d = bitmap_entry(0x600, 1, 2, 16, b"b0") + bitmap_entry(0x800, 2, 0, 9, b"dirty")
body[0x200:0x200 + len(d)] = d
struct.pack_into(">Q", body, 0x400, 0xa00)
struct.pack_into(">QQ", body, 0x600, 1, 0xa00)
body[0x800:0x900] = b"\xf0\x0f" * 128
open(f"{C}/qcow2_bitmaps/two", "wb").write(struct.pack(">HI", 2, len(d)) + bytes(body))

# qcow2_decompress: [type][cluster bits - 9][data]
c = zlib.compressobj(9, zlib.DEFLATED, -15)
raw = bytes(range(256)) * 16
open(f"{C}/qcow2_decompress/deflate-4k", "wb").write(bytes([0, 3]) + c.compress(raw) + c.flush())
c = zlib.compressobj(9, zlib.DEFLATED, -15)
open(f"{C}/qcow2_decompress/deflate-512", "wb").write(bytes([0, 0]) + c.compress(raw[:512]) + c.flush())
open(f"{W}/raw4k", "wb").write(raw)

for e in ["4096", "0x1000", "4K", "1M+512*3", "2*(1M-4K)", "8s", " 1G / 2 ", "0x200+512*3", "3KiB-1", "(1)"]:
    open(f"{C}/expr/" + "".join(ch if ch.isalnum() else "_" for ch in e), "w").write(e)
EOF
zstd -q -19 -c "$W/raw4k" > "$W/zstd4k"
{ printf '\001\003'; cat "$W/zstd4k"; } > "$C/qcow2_decompress/zstd-4k"
for f in fixed.vhd dynamic-qemu.vhd base4k.vhd diff4k.vhd; do cp "$W/$f" "$C/vhd_image/$f"; done
tail -c 512 "$W/fixed.vhd" > "$C/vhd_footer/fixed.vhd"

# --- partition tables and a tiny filesystem -------------------------------------------
truncate -s 256k "$W/mbr"
printf 'label: dos\nstart=8, size=64, type=83, bootable\nstart=80, size=300, type=5\nstart=88, size=40, type=83\nstart=136, size=60, type=7\n' \
    | sfdisk -q "$W/mbr" >/dev/null
cp "$W/mbr" "$C/partitions/mbr-logical"
truncate -s 128k "$W/gpt"
sgdisk -q -n 1:34:100 -t 1:8300 -c 1:root -n 2:101:200 -t 2:ef00 "$W/gpt" >/dev/null
cp "$W/gpt" "$C/partitions/gpt"
truncate -s 128k "$W/ext2"
mke2fs -q -F -t ext2 -b 1024 -N 16 "$W/ext2" >/dev/null 2>&1
echo 'Hello, Sailor!' > "$W/hello"
debugfs -w -R "write $W/hello hello.txt" "$W/ext2" >/dev/null 2>&1
cp "$W/ext2" "$C/partitions/ext2"
# --- VMDK (monolithic: the fuzz target opens one file) and VDI ------------------------------
mkdir -p "$C/vmdk_image" "$C/vdi_image" "$C/vmdk_descriptor"
vio() { local fmt=$1 f=$2; shift 2; local a=(); for c in "$@"; do a+=(-c "$c"); done; qemu-io -f "$fmt" "${a[@]}" "$f" >/dev/null; }
q create -f vmdk "$W/sparse.vmdk" 1M
vio vmdk "$W/sparse.vmdk" "write -P 0x5a 0 4k" "write -P 0x11 512k 64k"
q create -f vmdk -o zeroed_grain=on "$W/zeroed.vmdk" 1M
vio vmdk "$W/zeroed.vmdk" "write -P 1 0 64k" "write -z 64k 128k"
head -c 200000 /dev/urandom > "$W/r.raw"
q convert -f raw -O vmdk -o subformat=streamOptimized "$W/r.raw" "$W/stream.vmdk"
# streamOptimized as qemu-img create makes it (tables in place), grains appended by qemu-io
q create -f vmdk -o subformat=streamOptimized "$W/stream-written.vmdk" 1M
vio vmdk "$W/stream-written.vmdk" "write -P 3 64k 64k" "write -P 4 512k 128k"
q create -f vdi "$W/dynamic.vdi" 3M
vio vdi "$W/dynamic.vdi" "write -P 2 1M 4k"
q create -f vdi -o static=on "$W/static.vdi" 1M
for f in "$W"/*.vmdk; do cp "$f" "$C/vmdk_image/$(basename "$f" .vmdk)"; done
for f in "$W"/*.vdi; do cp "$f" "$C/vdi_image/$(basename "$f" .vdi)"; done
dd if="$W/sparse.vmdk" bs=512 skip=1 count=20 status=none > "$C/vmdk_descriptor/embedded"
q create -f vmdk -o subformat=twoGbMaxExtentSparse "$W/two.vmdk" 3G
cp "$W/two.vmdk" "$C/vmdk_descriptor/two-gb"

# --- NTFS (mkntfs/ntfscp, no mounting): 2 MiB volumes, the smallest mkntfs makes ----------
# `ntfs`: a compressed root (mkntfs -C, 512-byte clusters) with an LZNT1 file, a resident
# file with a named stream, random bytes; and plain 4 KiB clusters. `ntfs_lznt1`: the stored
# clusters of the compressed file's first unit ([4]: a unit of 512 << 4 bytes).
mkdir -p "$C/ntfs" "$C/ntfs_lznt1"
python3 -c "import sys; sys.stdout.write(''.join('line %d of text\\n' % i for i in range(900)))" > "$W/t.txt"
echo small > "$W/sm"
head -c 3000 /dev/urandom > "$W/r3k"
truncate -s 2M "$W/ntfs-c"
mkntfs -F -Q -q -C -c 512 -L SEED "$W/ntfs-c" >/dev/null 2>&1
ntfscp -q "$W/ntfs-c" "$W/t.txt" comp.txt
ntfscp -q "$W/ntfs-c" "$W/sm" small.txt
ntfscp -q -N alt "$W/ntfs-c" "$W/sm" small.txt
ntfscp -q "$W/ntfs-c" "$W/r3k" rand.bin
cp "$W/ntfs-c" "$C/ntfs/compressed-512"
truncate -s 2M "$W/ntfs-p"
mkntfs -F -Q -q "$W/ntfs-p" >/dev/null 2>&1
ntfscp -q "$W/ntfs-p" "$W/t.txt" a.txt
cp "$W/ntfs-p" "$C/ntfs/plain-4k"
lcn=$(ntfscluster -F comp.txt "$W/ntfs-c" 2>/dev/null | awk 'NF == 3 && $1 == "0" { print $2; exit }')
{ printf '\004'; dd if="$W/ntfs-c" bs=512 skip="$lcn" count=16 status=none; } > "$C/ntfs_lznt1/unit-8k"

echo "seeds in $(pwd)/$C:"
for d in "$C"/*; do echo "  $(basename "$d"): $(ls "$d" | wc -l) files, $(du -sk "$d" | cut -f1) KiB"; done

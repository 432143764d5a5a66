#!/usr/bin/env bash
# Benchmark (not a test): `vdiskview cat` of a 100 MiB file from NTFS, FAT32 and btrfs, each
# in an MBR partition (at 1 MiB) inside a dynamic VHD and a qcow2, against `vdiskview read`
# of the same guest bytes: the file's extents as `locate --output json` gives them, one
# `read` per run of adjacent guest bytes (btrfs puts the file in three; NTFS and FAT32 in
# one), less the start-up of the extra processes (the median of a 4 KiB `read`). (Reading the
# partition's first 100 MiB instead compares cat with bytes that are mostly unallocated in
# the image, so zeros that cost no I/O: btrfs puts data past the first 100 MiB.)
# Output to /dev/null; one untimed warm-up each, then RUNS (default 5) interleaved runs
# (cat read, read cat, ...); the medians and their ratio are printed as a markdown table.
# The target (issue 15) is cat <= 1.5x read. The cat output is compared with the source once.
#
#   scripts/bench-fs.sh            (builds: cargo build --release --bin vdiskview)
#   VDISKVIEW=path RUNS=5 scripts/bench-fs.sh
#
# Needs mkntfs/ntfscp (ntfs-3g), mkfs.fat/mcopy (dosfstools, mtools), mkfs.btrfs
# (btrfs-progs), sfdisk, qemu-img and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
if [ -z "${VDISKVIEW:-}" ]; then
    cargo build --release --bin vdiskview >&2
    VDISKVIEW="${CARGO_TARGET_DIR:-target}/release/vdiskview"
fi
V=$VDISKVIEW
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
MIB=$((1024 * 1024))
LEN=$((100 * MIB))
head -c $LEN /dev/urandom > "$T/big.bin"

mkvol() { # fs size -> $T/$fs.fs holding /big.bin
    local fs=$1 size=$2 out="$T/$1.fs"
    rm -f "$out"
    case $fs in
    ntfs)
        truncate -s "$size" "$out"
        mkntfs -F -Q -q "$out" >/dev/null 2>&1
        ntfscp -q "$out" "$T/big.bin" big.bin ;;
    fat32)
        truncate -s "$size" "$out"
        mkfs.fat -F 32 "$out" >/dev/null
        mcopy -i "$out" "$T/big.bin" ::/big.bin ;;
    btrfs)
        mkdir -p "$T/root" && ln -f "$T/big.bin" "$T/root/big.bin"
        truncate -s "$size" "$out"
        mkfs.btrfs -q -f --rootdir "$T/root" "$out" >/dev/null ;;
    esac
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
timeit() { local t0 t1; t0=$(now); "$@" > /dev/null; t1=$(now); echo "$t1 - $t0" | bc -l; }

echo "| filesystem | image | file's guest runs | cat 100 MiB (s) | read of its guest bytes (s) | cat / read |"
echo "|---|---|---:|---:|---:|---:|"
for fs in ntfs fat32 btrfs; do
    size=$((160 * MIB))
    [ $fs = btrfs ] && size=$((256 * MIB))
    mkvol $fs $size
    disk="$T/disk.raw"
    rm -f "$disk"
    truncate -s $((size + 2 * MIB)) "$disk"
    printf 'label: dos\nunit: sectors\n\nstart=2048, size=%d, type=7\n' $((size / 512)) | sfdisk -q "$disk" >/dev/null
    dd if="$T/$fs.fs" of="$disk" bs=1M seek=1 conv=notrunc status=none
    rm -f "$T/$fs.fs"
    for kind in vhd qcow2; do
        img="$T/disk.$kind"
        if [ $kind = vhd ]; then
            qemu-img convert -q -f raw -O vpc -o subformat=dynamic "$disk" "$img"
        else
            qemu-img convert -q -f raw -O qcow2 "$disk" "$img"
        fi
        "$V" cat "$img" /big.bin | cmp - "$T/big.bin"
        # the file's guest bytes: runs of adjacent guest offsets, in file order
        mapfile -t ranges < <("$V" locate "$img" /big.bin --output=json | python3 -c '
import json, sys
runs = []
for e in json.load(sys.stdin)["extents"]:
    if e.get("virtual") is None:
        continue
    if runs and runs[-1][0] + runs[-1][1] == e["virtual"]:
        runs[-1][1] += e["length"]
    else:
        runs.append([e["virtual"], e["length"]])
for v, n in runs:
    print(v, n)')
        read_file() { local r; for r in "${ranges[@]}"; do "$V" read "$img" --offset ${r% *} --length ${r#* }; done; }
        read_file > /dev/null
        cats=() reads=() starts=()
        for i in $(seq 1 "$RUNS"); do
            if [ $((i % 2)) = 1 ]; then
                cats+=("$(timeit "$V" cat "$img" /big.bin)")
                reads+=("$(timeit read_file)")
            else
                reads+=("$(timeit read_file)")
                cats+=("$(timeit "$V" cat "$img" /big.bin)")
            fi
            starts+=("$(timeit "$V" read "$img" --offset $MIB --length 4096)")
        done
        c=$(printf '%s\n' "${cats[@]}" | median)
        st=$(printf '%s\n' "${starts[@]}" | median)
        r=$(printf '%s\n' "${reads[@]}" | median)
        r=$(echo "$r - (${#ranges[@]} - 1) * $st" | bc -l)
        printf '| %s | %s | %d | %.3f | %.3f | %.2f |\n' $fs $kind ${#ranges[@]} "$c" "$r" "$(echo "$c / $r" | bc -l)"
        rm -f "$img"
    done
    rm -f "$disk"
done

#!/usr/bin/env bash
# Benchmark (not a test): vdiskview against qemu-img / qemu-nbd on the same machine, in one run.
#
#   scripts/bench.sh
#
# From a clean clone this builds everything (`cargo build --release --workspace`, which also
# builds the nbdkit plugin target/release/libvdiskview_nbdkit.so), makes its own images with
# qemu-img/qemu-io in temporary directories (removed at the end, also on failure or Ctrl-C),
# times every case with interleaved repetitions (A B, B A, A B, ...; one untimed warm-up
# each) and prints one table of medians, side by side:
#
#   map     `vdiskview map --output json` vs `qemu-img map --output=json`, to /dev/null, on
#           the fragmented images (64 GiB qcow2, 64 GiB dynamic VHD, 1 TiB qcow2, 64 GiB
#           VMDK and VDI)
#   read    `vdiskview read IMG > OUT` vs `qemu-img convert -O raw IMG OUT`, OUT on tmpfs,
#           on the dense 1 GiB qcow2 and VHD and on sparse images (2 TiB qcow2 and VHD with
#           a few writes; a 4 GiB qcow2 with clusters scattered as densely as in the 64 GiB
#           one; the 64 GiB qcow2, VHD, VMDK (sparse and streamOptimized) and VDI). The outputs are compared (`qemu-img compare`,
#           sizes) and their allocated size reported. A first, untimed vdiskview read is
#           watched and stopped when its output passes the virtual size, a fifth of the free
#           memory or a third of the free tmpfs (zeros written instead of holes would fill
#           tmpfs: that is an out-of-memory kill for the whole machine); the case is then
#           reported as not timed.
#   nbd     `nbdcopy URI null:` from the vdiskview nbdkit plugin (nbdkit -U - ... --run) vs
#           from `qemu-nbd -r -f FMT -k SOCK IMG`; only the nbdcopy is timed in both.
#   write   on disk (BENCH_TMPDIR: a flush on tmpfs costs nothing), into a fresh empty image
#           each run (made untimed): `vdiskview write IMG --offset 0 --length N --pattern
#           0xab` (durable on return) vs `qemu-io -f FMT -c 'write -P 0xab 0 N'` (qemu-io's
#           default writethrough: also durable on return), 1 MiB into a qcow2 with 512 B
#           clusters, 64 MiB into a qcow2 with 64 KiB clusters and into a dynamic VHD; then
#           `nbdcopy --flush` of 256 MiB of random data into an empty qcow2 and VHD through
#           the plugin vs through `qemu-nbd -f FMT` (only the nbdcopy is timed). The written
#           images are checked (qemu-img check, qemu-io read -P, qemu-img compare).
#   stream  `vdiskview read` of the dense 1 GiB qcow2 to /dev/null and into a pipe
#           (`| cat >/dev/null`) vs `cat` of the image file to the same place; the same for
#           the dense VHD and VHDX, and for all three into a tmpfs file (vs `cat` of the
#           image file into a tmpfs file).
#   VHDX    (issue 18) the map, read, nbd and stream groups also time the dense 1 GiB VHDX
#           and the 64 GiB VHDX with BENCH_FRAG scattered blocks, against qemu as for VHD.
#           qemu's vhdx driver has no block status: `qemu-img map` reports a whole VHDX as
#           one data extent, so its map JSON is not compared (the read outputs are).
#   render  `vdiskview render IMG --size 160x48 --format text`: wall time (median) and peak
#           RSS (/usr/bin/time -f %M, warm-up run) of the first frame, for every image size.
#   keys    hex page-down (Tabs to the Hex pane, PgDn x K), grid page-down across the whole
#           1M-entry BAT of the 2040 GiB VHD (and as many pages of the 1 TiB qcow2's L2
#           grid), jump near the last byte (`g 0xSIZE-i Enter`, a new place each time), two
#           ways: `render` with K keys minus render without them, / K (medians of paired
#           differences of interleaved runs; render draws once, after all keys, so this is
#           the key's work without its redraw), and the real TUI in tmux (BENCH_SKIP=tui to
#           skip), which redraws after every key: its CPU time with minus without the keys,
#           / K. The screen is checked after the keys (cursor, grid position).
#
# The table is printed and written into BENCHMARKS.md (between its bench markers, with the
# machine it ran on); text outside the markers is kept.
#
# Images (all deterministic):
#   dense.qcow2, dense.vhd   1 GiB, every cluster/block allocated, a different byte pattern in
#                            each 64 KiB (converted from a raw image filled by qemu-io)
#   frag64.qcow2             64 GiB, BENCH_FRAG (6400) 64 KiB clusters, one in each of
#                            BENCH_FRAG equal slots at a pseudo-random place, written in a
#                            scattered order (host order != guest order)
#   frag64.vhd               64 GiB dynamic VHD (2 MiB blocks), the same for BENCH_FRAG blocks
#                            (512 bytes written in each)
#   huge1t.qcow2             1 TiB, BENCH_HUGE (102400) clusters, written whole (64 KiB each)
#                            in guest order through one qemu-io process: the file is ~6.8 GB,
#                            so it is made on disk (BENCH_TMPDIR or /tmp), not on tmpfs.
#                            Whole clusters, not 512 bytes each: qemu then fallocates the rest
#                            of each cluster, the file gets tens of thousands of ext4 extents,
#                            and on a disk mounted with `discard` deleting it takes ~20 minutes
#                            (64 KiB writes: 19 extents per 10,000 clusters, deleted in 0.3 s)
#   dense.vhdx               the dense 1 GiB disk as a dynamic VHDX (qemu-img convert)
#   frag64.vhdx              64 GiB dynamic VHDX with 2 MiB blocks (as the VHD's), 512 bytes
#                            written in BENCH_FRAG blocks like frag64.vhd
#   sparse2t.qcow2           2 TiB, three 64 KiB writes (start, middle, end)
#   sparse2t.vhd             2040 GiB dynamic VHD (the VHD limit, a 1M-entry BAT), the same
#   sparse4g.qcow2           4 GiB, BENCH_FRAG/16 clusters scattered like frag64.qcow2's
#   frag64.vmdk              64 GiB monolithicSparse VMDK (64 KiB grains), BENCH_FRAG grains
#                            scattered like frag64.qcow2's (64 KiB written in each)
#   frag64-stream.vmdk       frag64.vmdk converted to streamOptimized (compressed grains)
#   frag64.vdi               64 GiB dynamic VDI (1 MiB blocks), BENCH_FRAG/3 blocks scattered
#                            (4 KiB written in each: qemu stores the rest of the block as
#                            zeros, so the file is ~BENCH_FRAG/3 MiB; a third, to keep tmpfs
#                            use near 2 GiB)
#   assets/demo.vhd          the bundled 8 MiB demo image
#
# Environment:
#   BENCH_RUNS=7            timed runs per command for map/read/nbd
#   BENCH_RENDER_RUNS=21    timed runs per command for render and keys
#   BENCH_FRAG=6400         clusters/blocks in the 64 GiB images (>= 6000 wanted)
#   BENCH_HUGE=102400       clusters in the 1 TiB image (>= 100000 wanted)
#   BENCH_SKIP_HUGE=        1: skip the 1 TiB image (skipped anyway when the disk is short)
#   BENCH_SKIP=             space-separated groups to skip: map read nbd write stream render keys tui
#   BENCH_TMPDIR=           where the on-disk image goes (default $TMPDIR or /tmp)
#   BENCH_SHMDIR=/dev/shm   tmpfs for the other images and the read outputs
#   BENCH_KEYS_HEX=500      page-downs in the hex case
#   BENCH_KEYS_JUMP=100     jumps in the jump case
#   BENCH_TUI_RUNS=5        timed runs per command of the TUI in tmux (BENCH_SKIP=tui: none)
#   BENCH_MD=BENCHMARKS.md  where to write the table ("" or 0: do not write it)
#   BENCH_NO_INSTALL=       1: never apt-get install anything
#   BENCH_NO_BUILD=         1: use the binaries already in target/release
set -euo pipefail

export LC_ALL=C
export PATH="$PATH:/usr/sbin:/sbin"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

RUNS="${BENCH_RUNS:-7}"
RRUNS="${BENCH_RENDER_RUNS:-21}"
FRAG="${BENCH_FRAG:-6400}"
HUGE="${BENCH_HUGE:-102400}"
SKIP_HUGE="${BENCH_SKIP_HUGE:-}"
SKIP=" ${BENCH_SKIP:-} "
KEYS_HEX="${BENCH_KEYS_HEX:-500}"
KEYS_JUMP="${BENCH_KEYS_JUMP:-100}"
TRUNS="${BENCH_TUI_RUNS:-5}"
MD="${BENCH_MD-BENCHMARKS.md}"
SIZE=160x48
KiB=1024
MiB=$((1024 * KiB))
GiB=$((1024 * MiB))
TiB=$((1024 * GiB))
START=$SECONDS

say() { printf '%s\n' "bench: $*" >&2; }
die() { say "error: $*"; exit 1; }
skipped() { [[ "$SKIP" == *" $1 "* ]]; }

# ---------------------------------------------------------------- tools
apt_updated=""
apt_install() {
  [[ -n "${BENCH_NO_INSTALL:-}" ]] && return 1
  command -v apt-get >/dev/null 2>&1 || return 1
  local sudo=""
  if [[ "$(id -u)" != 0 ]]; then sudo="sudo -n"; fi
  say "installing $* with apt-get"
  if [[ -z "$apt_updated" ]]; then
    $sudo apt-get update -qq </dev/null >&2 || return 1
    apt_updated=1
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null >&2
}
need() { # COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 || apt_install "$2" || die "$1 is needed (Debian package $2)"
}
need qemu-img qemu-utils
need qemu-io qemu-utils
need qemu-nbd qemu-utils
need nbdkit nbdkit
need nbdcopy libnbd-bin
[[ -x /usr/bin/time ]] || apt_install time || die "/usr/bin/time is needed (Debian package time)"
command -v cargo >/dev/null 2>&1 || die "cargo is needed"
((BASH_VERSINFO[0] >= 5)) || die "bash 5 is needed (EPOCHREALTIME)"

# ---------------------------------------------------------------- build
TARGET="${CARGO_TARGET_DIR:-$here/target}/release"
if [[ -z "${BENCH_NO_BUILD:-}" ]]; then
  say "cargo build --release --workspace"
  t0=$SECONDS
  cargo build --release --workspace >&2
  BUILD_S=$((SECONDS - t0))
else
  BUILD_S=0
fi
BIN="$TARGET/vdiskview"
PLUGIN="$TARGET/libvdiskview_nbdkit.so"
[[ -x "$BIN" ]] || die "no binary at $BIN"
[[ -f "$PLUGIN" ]] || die "no nbdkit plugin at $PLUGIN"

# ---------------------------------------------------------------- temp dirs, cleanup
SHM_BASE="${BENCH_SHMDIR:-/dev/shm}"
DISK_BASE="${BENCH_TMPDIR:-${TMPDIR:-/tmp}}"
avail_kib() { df -Pk "$1" 2>/dev/null | awk 'NR==2 {print $4}'; }
mem_avail_kib() { awk '/^MemAvailable:/ {print $2}' /proc/meminfo; }
# tmpfs needs: dense raw + 3 dense images (4 GiB), two read outputs (2 GiB), the sparse 4 GiB
# read output of vdiskview (up to ~2 GiB, see below), the 64 GiB images (~0.5 GiB)
# (+ 1 GiB: the dense VHDX; + 3 GiB: the 64 GiB VDI, ~2.1 GiB of stored blocks, and its read outputs)
SHM_NEED_KIB=$((12 << 20))
if [[ ! -d "$SHM_BASE" || ! -w "$SHM_BASE" ]] || (($(avail_kib "$SHM_BASE") < SHM_NEED_KIB)) \
  || (($(mem_avail_kib) < SHM_NEED_KIB + (2 << 20))); then
  say "WARNING: $SHM_BASE has not $((SHM_NEED_KIB >> 20)) GiB free (or memory is short): everything goes to $DISK_BASE, reads are not to tmpfs"
  SHM_BASE="$DISK_BASE"
fi
WORK=""
DWORK=""
BG_PID="" # the qemu-nbd or nbdkit running in the background, if any
cleanup() {
  local rc=$?
  if [[ -n "${TMUX_USED:-}" ]]; then
    env -u TMUX tmux -L "$TMUX_L" kill-server 2>/dev/null || true
    rm -f -- "${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/$TMUX_L" # kill-server leaves its socket
  fi
  if [[ -n "$BG_PID" ]]; then
    kill "$BG_PID" 2>/dev/null && wait "$BG_PID" 2>/dev/null
  fi
  [[ -n "$WORK" ]] && rm -rf -- "$WORK"
  [[ -n "$DWORK" ]] && rm -rf -- "$DWORK"
  [[ -n "${WDIR:-}" ]] && rm -rf -- "$WDIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
WORK="$(mktemp -d "$SHM_BASE/vdiskview-bench.XXXXXX")"
say "temporary directory $WORK ($(df -P "$WORK" | awk 'NR==2 {print $1}'))"

HUGE_BYTES=$((HUGE * 64 * KiB + 2048 * 64 * KiB + 64 * MiB))
HUGE_NOTE=""
if [[ -n "$SKIP_HUGE" && "$SKIP_HUGE" != 0 ]]; then
  HUGE_NOTE="skipped (BENCH_SKIP_HUGE=$SKIP_HUGE)"
else
  dfree=$(avail_kib "$DISK_BASE")
  say "disk for the 1 TiB image: $DISK_BASE, $((dfree >> 20)) GiB free, $((HUGE_BYTES >> 30)) GiB needed (+ 2 GiB margin)"
  if [[ -z "$dfree" ]] || ((dfree < (HUGE_BYTES >> 10) + (2 << 20))); then
    say "WARNING: not enough free disk in $DISK_BASE for the 1 TiB image: skipping it (set BENCH_TMPDIR)"
    HUGE_NOTE="skipped: only $((dfree >> 20)) GiB free in $DISK_BASE, $(((HUGE_BYTES >> 30) + 2)) GiB needed"
  else
    DWORK="$(mktemp -d "$DISK_BASE/vdiskview-bench-disk.XXXXXX")"
  fi
fi

# ---------------------------------------------------------------- images
# qemu-io reads commands from stdin when there is no -c; it does not fail on a bad command,
# so its output is checked. -t unsafe: no flush after each write (writethrough is the
# default and makes 100k writes take minutes).
qemu_io_script() { # FORMAT IMAGE < commands
  local out
  out="$(qemu-io -t unsafe -f "$1" "$2" 2>&1)" || { printf '%s\n' "$out" | tail -5 >&2; return 1; }
  if grep -qiE 'error|fail|invalid|not found' <<<"$out"; then
    printf '%s\n' "$out" | grep -iE 'error|fail|invalid|not found' | head -5 >&2
    return 1
  fi
}

# scattered N UNITS UNIT_BYTES WRITE_LEN ORDER: one write in each of N equal slots of
# UNITS units, at a pseudo-random unit of the slot (64-bit LCG, fixed seed; bash arithmetic
# wraps mod 2^64). ORDER sorted: in guest order; scattered: slot i*7919 mod N.
scattered() {
  local n=$1 units=$2 ub=$3 len=$4 order=$5 slot j i idx st
  slot=$((units / n))
  ((n % 7919 != 0)) || die "BENCH_FRAG must not be a multiple of 7919"
  for ((j = 0; j < n; j++)); do
    if [[ $order == sorted ]]; then i=$j; else i=$(((j * 7919) % n)); fi
    st=$(((i + 1) * 6364136223846793005 + 1442695040888963407))
    idx=$((i * slot + ((st >> 33) & 0x7fffffff) % slot))
    echo "write -q -P $((i % 255 + 1)) $((idx * ub)) $len"
  done
}

# data_units IMAGE UNIT: allocated data units (sum of qemu-img map's data extents / UNIT)
data_units() {
  qemu-img map --output=json "$1" | awk -v u="$2" '/"data": true/ {
    match($0, /"length": [0-9]+/); s += substr($0, RSTART + 10, RLENGTH - 10) } END {printf "%d\n", s / u}'
}

t0=$SECONDS
DQCOW="$WORK/dense.qcow2"
DVHD="$WORK/dense.vhd"
FQCOW="$WORK/frag64.qcow2"
FVHD="$WORK/frag64.vhd"
S4G="$WORK/sparse4g.qcow2"
S2Q="$WORK/sparse2t.qcow2"
S2V="$WORK/sparse2t.vhd"
HQCOW=""
DEMO="$here/assets/demo.vhd"

say "making the dense 1 GiB qcow2 and VHD"
RAW="$WORK/dense.raw"
qemu-img create -q -f raw "$RAW" $GiB
for ((i = 0; i < GiB / (64 * KiB); i++)); do
  echo "write -q -P $(((i * 37) % 255 + 1)) $((i * 64 * KiB)) 64k"
done | qemu_io_script raw "$RAW" || die "qemu-io failed on $RAW"
qemu-img convert -f raw -O qcow2 "$RAW" "$DQCOW"
qemu-img convert -f raw -O vpc -o subformat=dynamic "$RAW" "$DVHD"
rm -f -- "$RAW"

say "making the 64 GiB qcow2 and VHD with $FRAG scattered clusters/blocks"
qemu-img create -q -f qcow2 "$FQCOW" $((64 * GiB))
scattered "$FRAG" $((64 * GiB / (64 * KiB))) $((64 * KiB)) 64k scattered | qemu_io_script qcow2 "$FQCOW" \
  || die "qemu-io failed on $FQCOW"
qemu-img create -q -f vpc -o subformat=dynamic "$FVHD" $((64 * GiB))
scattered "$FRAG" $((64 * GiB / (2 * MiB))) $((2 * MiB)) 512 scattered | qemu_io_script vpc "$FVHD" \
  || die "qemu-io failed on $FVHD"

say "making the sparse 4 GiB qcow2 ($((FRAG / 16)) clusters) and the 2 TiB qcow2 and VHD"
qemu-img create -q -f qcow2 "$S4G" $((4 * GiB))
scattered $((FRAG / 16)) $((4 * GiB / (64 * KiB))) $((64 * KiB)) 64k scattered | qemu_io_script qcow2 "$S4G" \
  || die "qemu-io failed on $S4G"
qemu-img create -q -f qcow2 "$S2Q" $((2 * TiB))
qemu-img create -q -f vpc -o subformat=dynamic "$S2V" 2040G
for img in "$S2Q" "$S2V"; do
  fmt=qcow2; [[ $img == *.vhd ]] && fmt=vpc
  printf '%s\n' "write -q -P 0xa1 0 64k" "write -q -P 0xb2 1T 64k" "write -q -P 0xc3 2039G 64k" \
    | qemu_io_script "$fmt" "$img" || die "qemu-io failed on $img"
done

if [[ -n "$DWORK" ]]; then
  HQCOW="$DWORK/huge1t.qcow2"
  say "making the 1 TiB qcow2 with $HUGE clusters in $DWORK (one qemu-io, sorted offsets)"
  t1=$SECONDS
  qemu-img create -q -f qcow2 "$HQCOW" $TiB
  scattered "$HUGE" $((TiB / (64 * KiB))) $((64 * KiB)) 64k sorted | qemu_io_script qcow2 "$HQCOW" \
    || die "qemu-io failed on $HQCOW"
  sync "$HQCOW" # written back now, not during the timings
  say "  made in $((SECONDS - t1)) s, $(du -h "$HQCOW" | cut -f1) on disk"
fi
IMG_S=$((SECONDS - t0))

COUNT_FQ=$(data_units "$FQCOW" $((64 * KiB)))
COUNT_FV=$(data_units "$FVHD" $((2 * MiB)))
COUNT_H=""
[[ -n "$HQCOW" ]] && COUNT_H=$(data_units "$HQCOW" $((64 * KiB)))
say "images made in $IMG_S s: 64G qcow2 $COUNT_FQ data clusters, 64G VHD $COUNT_FV data blocks${HQCOW:+, 1T qcow2 $COUNT_H data clusters}"
((COUNT_FQ >= FRAG && COUNT_FV >= FRAG)) || die "the 64 GiB images have fewer allocated units than $FRAG"
[[ -z "$HQCOW" ]] || ((COUNT_H >= HUGE)) || die "the 1 TiB image has fewer clusters than $HUGE"

# VMDK and VDI (issue 14): their own images, made after the others
FVMDK="$WORK/frag64.vmdk"
FVDI="$WORK/frag64.vdi"
FSVMDK="$WORK/frag64-stream.vmdk"
make_vmdk_vdi_images() {
  say "making the 64 GiB VMDK ($FRAG grains) and VDI ($((FRAG / 3)) blocks)"
  qemu-img create -q -f vmdk "$FVMDK" $((64 * GiB))
  scattered "$FRAG" $((64 * GiB / (64 * KiB))) $((64 * KiB)) 64k scattered | qemu_io_script vmdk "$FVMDK" \
    || die "qemu-io failed on $FVMDK"
  qemu-img create -q -f vdi "$FVDI" $((64 * GiB))
  scattered $((FRAG / 3)) $((64 * GiB / MiB)) $MiB 4k scattered | qemu_io_script vdi "$FVDI" \
    || die "qemu-io failed on $FVDI"
  qemu-img convert -f vmdk -O vmdk -o subformat=streamOptimized "$FVMDK" "$FSVMDK"
  COUNT_VMDK=$(data_units "$FVMDK" $((64 * KiB)))
  COUNT_VDI=$(data_units "$FVDI" $MiB)
  say "64G VMDK $COUNT_VMDK data grains, 64G VDI $COUNT_VDI data blocks"
  ((COUNT_VMDK >= FRAG && COUNT_VDI >= FRAG / 3)) || die "the 64 GiB VMDK/VDI have fewer allocated units than wanted"
}
if ! skipped map || ! skipped read; then
  make_vmdk_vdi_images
fi

# ---------------------------------------------------------------- VHDX images (issue 18)
DVHDX="$WORK/dense.vhdx"
FVHDX="$WORK/frag64.vhdx"
make_vhdx_images() {
  local t0=$SECONDS
  say "making the dense 1 GiB VHDX and the 64 GiB VHDX with $FRAG scattered blocks"
  qemu-img convert -f qcow2 -O vhdx -o subformat=dynamic "$DQCOW" "$DVHDX"
  qemu-img create -q -f vhdx -o subformat=dynamic,block_size=2M "$FVHDX" $((64 * GiB))
  scattered "$FRAG" $((64 * GiB / (2 * MiB))) $((2 * MiB)) 512 scattered | qemu_io_script vhdx "$FVHDX" \
    || die "qemu-io failed on $FVHDX"
  IMG_S=$((IMG_S + SECONDS - t0))
}
make_vhdx_images

# the virtual size in bytes (not from the JSON: its first "virtual-size" is the file's)
vsize() { qemu-img info "$1" | sed -n 's/^virtual size: .*(\([0-9]*\) bytes).*/\1/p' | head -1; }

# ---------------------------------------------------------------- timing
# tm CMD...: runs CMD, sets T_US to its wall time in microseconds (EPOCHREALTIME: no fork)
tm() {
  local s=$EPOCHREALTIME e
  "$@" || { say "failed ($?): $*"; return 1; }
  e=$EPOCHREALTIME
  T_US=$((10#${e/./} - 10#${s/./}))
}

# interleave RUNS FN...: runs each FN once untimed (warm-up), then RUNS rounds, the order
# reversed every other round; each FN sets T_US. TIMES[i] gets the times of FN i.
TIMES=()
interleave() {
  local runs=$1 r k i n
  shift
  local fns=("$@")
  n=${#fns[@]}
  WARMUP=1
  for ((i = 0; i < n; i++)); do ${fns[i]} || return 1; done
  WARMUP=""
  TIMES=()
  for ((r = 0; r < runs; r++)); do
    for ((k = 0; k < n; k++)); do
      if ((r % 2)); then i=$((n - 1 - k)); else i=$k; fi
      ${fns[i]} || return 1
      TIMES[i]+="$T_US "
    done
  done
}
median() { printf '%s\n' $1 | sort -n | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
# median of the paired differences (A_r - B_r) of two TIMES strings
median_diff() { paste <(printf '%s\n' $1) <(printf '%s\n' $2) | awk '{print $1 - $2}' | sort -n \
  | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
spread() { printf '%s\n' $1 | sort -n | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.0f-%.0f", lo / 1000, hi / 1000}'; }

# ---------------------------------------------------------------- table
ROWS=()
NOTES=()
note() { NOTES+=("$*"); say "$*"; }
fmt_s() { awk -v u="$1" 'BEGIN {printf "%.3f s", u / 1e6}'; }
fmt_ms() { awk -v u="$1" 'BEGIN {printf "%.1f ms", u / 1e3}'; }
# add_ratio_row CASE VD_US QEMU_US TARGET_RATIO MUST_RATIO [DETAIL]
add_ratio_row() {
  local name=$1 a=$2 b=$3 target=$4 must=$5 ratio met
  ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
  met=$(awk -v r="$ratio" -v t="$target" -v m="$must" 'BEGIN {
    if (r <= t) print "yes"; else if (r <= m) printf "no (must-hold <=%.1fx: yes)", m; else printf "**NO** (must-hold <=%.1fx: no)", m}')
  ROWS+=("$name|$(fmt_s "$a")|$(fmt_s "$b")|${ratio}x|<= ${target}x|$met")
  say "  $name: vdiskview $(fmt_s "$a"), qemu $(fmt_s "$b"), ${ratio}x"
}
skip_row() { ROWS+=("$1|-|-|-|$2|$3"); }

q() { printf '%q' "$1"; }

# ---------------------------------------------------------------- map
CUR_IMG=""
CUR_FMT=""
vd_map() { tm "$BIN" map --output json "$CUR_IMG" >/dev/null; }
qm_map() { tm qemu-img map -f "$CUR_FMT" --output=json "$CUR_IMG" >/dev/null; }
map_case() { # NAME IMAGE FORMAT
  local name=$1 same
  CUR_IMG=$2 CUR_FMT=$3
  "$BIN" map --output json "$CUR_IMG" >"$WORK/map.vd.json" || die "vdiskview map failed on $CUR_IMG"
  qemu-img map -f "$CUR_FMT" --output=json "$CUR_IMG" >"$WORK/map.qm.json"
  same="identical"
  cmp -s "$WORK/map.vd.json" "$WORK/map.qm.json" || same="DIFFERENT ($(diff "$WORK/map.qm.json" "$WORK/map.vd.json" | head -3 | tr '\n' ' '))"
  say "timing: $name ($(wc -l <"$WORK/map.qm.json") map entries)"
  interleave "$RUNS" vd_map qm_map || die "map failed on $CUR_IMG"
  add_ratio_row "$name" "$(median "${TIMES[0]}")" "$(median "${TIMES[1]}")" 0.5 1.0
  note "$name: $(wc -l <"$WORK/map.qm.json") entries; JSON $same; runs (ms) vdiskview $(spread "${TIMES[0]}"), qemu-img $(spread "${TIMES[1]}")"
  rm -f -- "$WORK/map.vd.json" "$WORK/map.qm.json"
}
if ! skipped map; then
  map_case "map 64G qcow2, $COUNT_FQ clusters" "$FQCOW" qcow2
  map_case "map 64G VHD, $COUNT_FV blocks" "$FVHD" vpc
  if [[ -n "$HQCOW" ]]; then
    map_case "map 1T qcow2, $COUNT_H clusters" "$HQCOW" qcow2
  else
    skip_row "map 1T qcow2" "<= 0.5x" "$HUGE_NOTE"
  fi
fi
# VMDK and VDI (issue 14)
if ! skipped map; then
  map_case "map 64G VMDK, $COUNT_VMDK grains" "$FVMDK" vmdk
  map_case "map 64G VDI, $COUNT_VDI blocks" "$FVDI" vdi
fi

# map of a VHDX (issue 18): timed as for VHD; qemu-img map has no block status for VHDX (one
# data extent for the whole disk), so vdiskview's map is checked instead against the blocks
# qemu-io wrote: one data extent per written block
map_vhdx_case() { # NAME IMAGE
  local name=$1 n_vd n_data
  CUR_IMG=$2 CUR_FMT=vhdx
  "$BIN" map --output json "$CUR_IMG" >"$WORK/map.vd.json" || die "vdiskview map failed on $CUR_IMG"
  n_vd=$(wc -l <"$WORK/map.vd.json")
  n_data=$(grep -c '"data": true' "$WORK/map.vd.json" || true)
  say "timing: $name ($n_vd map entries)"
  interleave "$RUNS" vd_map qm_map || die "map failed on $CUR_IMG"
  add_ratio_row "$name" "$(median "${TIMES[0]}")" "$(median "${TIMES[1]}")" 0.5 1.0
  note "$name: vdiskview $n_vd entries, $n_data of them data (qemu-io wrote $FRAG blocks); qemu-img map: $(qemu-img map -f vhdx --output=json "$CUR_IMG" | wc -l) entry (no block status for VHDX); runs (ms) vdiskview $(spread "${TIMES[0]}"), qemu-img $(spread "${TIMES[1]}")"
  rm -f -- "$WORK/map.vd.json"
}
if ! skipped map; then
  map_vhdx_case "map 64G VHDX, $FRAG blocks" "$FVHDX"
fi

# ---------------------------------------------------------------- read
OUT_VD="$WORK/out.vd.raw"
OUT_QM="$WORK/out.qm.raw"
vd_read() { rm -f -- "$OUT_VD"; tm "$BIN" read "$CUR_IMG" >"$OUT_VD"; }
qm_read() { rm -f -- "$OUT_QM"; tm qemu-img convert -f "$CUR_FMT" -O raw "$CUR_IMG" "$OUT_QM"; }
alloc_mib() { du -k "$1" | awk '{if ($1 < 10240) printf "%d KiB", $1; else printf "%.0f MiB", $1 / 1024}'; }
# guarded_read: one `vdiskview read CUR_IMG > OUT_VD`, killed if its output takes more than
# the virtual size, a fifth of the available memory or a third of the free tmpfs (a read that
# fills tmpfs with zeros instead of holes gets the machine's processes killed for memory)
GUARD_MSG=""
guarded_read() {
  local cap pid a t0=$SECONDS rc=0
  cap=$(($(vsize "$CUR_IMG") / 1024 + 1024))
  a=$(($(mem_avail_kib) / 5)); ((a < cap)) && cap=$a
  a=$(($(avail_kib "$(dirname "$OUT_VD")") / 3)); ((a < cap)) && cap=$a
  rm -f -- "$OUT_VD"
  "$BIN" read "$CUR_IMG" >"$OUT_VD" &
  pid=$!
  BG_PID=$pid
  while kill -0 "$pid" 2>/dev/null; do
    a=$(du -k "$OUT_VD" 2>/dev/null | cut -f1)
    a=${a:-0}
    if ((a > cap)); then
      kill "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null || true
      BG_PID=""
      rm -f -- "$OUT_VD"
      GUARD_MSG="not timed: vdiskview's output passed $((cap >> 10)) MiB allocated after $((SECONDS - t0)) s (zeros written, not holes) and was stopped"
      return 1
    fi
    sleep 0.1
  done
  wait "$pid" || rc=$?
  BG_PID=""
  rm -f -- "$OUT_VD"
  ((rc == 0)) || { GUARD_MSG="vdiskview read failed (exit $rc)"; return 1; }
}
read_case() { # NAME IMAGE FORMAT
  local name=$1 same sv sq
  CUR_IMG=$2 CUR_FMT=$3
  say "timing: $name"
  if ! guarded_read; then
    skip_row "$name" "<= 0.5x" "**NO**: $GUARD_MSG"
    note "$name: $GUARD_MSG"
    return 0
  fi
  interleave "$RUNS" vd_read qm_read || die "read failed on $CUR_IMG"
  add_ratio_row "$name" "$(median "${TIMES[0]}")" "$(median "${TIMES[1]}")" 0.5 1.0
  # both outputs hold the last run; qemu-img compare skips holes (SEEK_DATA), cmp would not
  sv=$(stat -c %s "$OUT_VD") sq=$(stat -c %s "$OUT_QM")
  if [[ "$sv" == "$sq" ]] && qemu-img compare -q -f raw -F raw "$OUT_VD" "$OUT_QM" 2>/dev/null; then
    same="identical"
  else
    same="DIFFERENT ($sv vs $sq bytes; $(qemu-img compare -f raw -F raw "$OUT_VD" "$OUT_QM" 2>&1 | head -1))"
  fi
  note "$name: output $same; allocated: vdiskview $(alloc_mib "$OUT_VD"), qemu-img $(alloc_mib "$OUT_QM"); runs (ms) vdiskview $(spread "${TIMES[0]}"), qemu-img $(spread "${TIMES[1]}")"
  rm -f -- "$OUT_VD" "$OUT_QM"
}
if ! skipped read; then
  read_case "read 1G qcow2 -> tmpfs file" "$DQCOW" qcow2
  read_case "read 1G VHD -> tmpfs file" "$DVHD" vpc
  read_case "read 2T sparse qcow2 -> tmpfs file" "$S2Q" qcow2
  read_case "read 2040G sparse VHD -> tmpfs file" "$S2V" vpc
  read_case "read 4G qcow2, $((FRAG / 16)) scattered clusters -> tmpfs" "$S4G" qcow2
  read_case "read 64G qcow2, $COUNT_FQ clusters -> tmpfs" "$FQCOW" qcow2
  read_case "read 64G VHD, $COUNT_FV blocks -> tmpfs" "$FVHD" vpc
fi
# VMDK and VDI (issue 14)
if ! skipped read; then
  read_case "read 64G VMDK, $COUNT_VMDK grains -> tmpfs" "$FVMDK" vmdk
  read_case "read 64G VDI, $COUNT_VDI blocks -> tmpfs" "$FVDI" vdi
  read_case "read 64G streamOptimized VMDK, $COUNT_VMDK grains -> tmpfs" "$FSVMDK" vmdk
fi

if ! skipped read; then # VHDX (issue 18)
  read_case "read 1G VHDX -> tmpfs file" "$DVHDX" vhdx
  read_case "read 64G VHDX, $FRAG blocks -> tmpfs" "$FVHDX" vhdx
fi

# ---------------------------------------------------------------- nbd
NBD_T="$WORK/nbd.us"
NBD_RUN="$WORK/nbdcopy-timed.sh"
cat >"$NBD_RUN" <<'EOF'
#!/usr/bin/env bash
# nbdcopy-timed.sh URI OUTFILE: nbdcopy URI null:, its wall time in microseconds to OUTFILE
s=$EPOCHREALTIME
nbdcopy "$1" null: || exit 1
e=$EPOCHREALTIME
echo $((10#${e/./} - 10#${s/./})) >"$2"
EOF
chmod +x "$NBD_RUN"
vd_nbd() {
  rm -f -- "$NBD_T"
  nbdkit -U - "$PLUGIN" file="$CUR_IMG" readonly=true --run "$(q "$NBD_RUN") \"\$uri\" $(q "$NBD_T")" &
  BG_PID=$!
  wait "$BG_PID" || { say "nbdkit/nbdcopy failed on $CUR_IMG"; return 1; }
  BG_PID=""
  T_US=$(<"$NBD_T")
}
qm_nbd() {
  local sock="$WORK/qemu-nbd.sock" pid i
  rm -f -- "$NBD_T" "$sock"
  qemu-nbd -r -f "$CUR_FMT" -k "$sock" "$CUR_IMG" &
  pid=$!
  BG_PID=$pid
  # wait for the socket (qemu-nbd opens the image first, then listens), at most 20 s
  for ((i = 0; i < 4000; i++)); do
    [[ -S "$sock" ]] && break
    kill -0 "$pid" 2>/dev/null || { say "qemu-nbd exited"; return 1; }
    sleep 0.005
  done
  [[ -S "$sock" ]] || { say "qemu-nbd made no socket"; return 1; }
  "$NBD_RUN" "nbd+unix:///?socket=$sock" "$NBD_T" || { say "nbdcopy from qemu-nbd failed"; return 1; }
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  BG_PID=""
  rm -f -- "$sock"
  T_US=$(<"$NBD_T")
}
nbd_case() { # NAME IMAGE FORMAT
  local name=$1
  CUR_IMG=$2 CUR_FMT=$3
  say "timing: $name"
  interleave "$RUNS" vd_nbd qm_nbd || die "nbd failed on $CUR_IMG"
  local a b
  a=$(median "${TIMES[0]}") b=$(median "${TIMES[1]}")
  local ratio met
  ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", a / b}')
  met=$(awk -v r="$ratio" 'BEGIN {if (r <= 0.9) print "yes"; else if (r <= 1.2) print "no (must-hold <=1.2x: yes)"; else print "**NO** (must-hold <=1.2x: no)"}')
  ROWS+=("$name|$(fmt_s "$a")|$(fmt_s "$b")|${ratio}x|<= 0.9x|$met")
  say "  $name: vdiskview $(fmt_s "$a"), qemu-nbd $(fmt_s "$b"), ${ratio}x"
  note "$name runs (ms): plugin $(spread "${TIMES[0]}"), qemu-nbd $(spread "${TIMES[1]}")"
}
if ! skipped nbd; then
  nbd_case "nbdcopy 1G qcow2 to null:" "$DQCOW" qcow2
  nbd_case "nbdcopy 1G VHD to null:" "$DVHD" vpc
  mc_vd=$(nbdkit -U - "$PLUGIN" file="$DQCOW" readonly=true --run 'nbdinfo "$uri"' 2>/dev/null | awk '/can_multi_conn/ {print $2}')
  nbd_case "nbdcopy 1G VHDX to null:" "$DVHDX" vhdx # issue 18
  note "nbdcopy opens 4 connections when the server allows multi-conn: the plugin says can_multi_conn=$mc_vd; qemu-nbd -r (default --shared=1) does not, so it is read over one connection."
fi

# ---------------------------------------------------------------- write
WDIR=""
w_fresh() {
  rm -f -- "$W_IMG"
  qemu-img create -q -f "$W_FMT" ${W_OPTS:+-o "$W_OPTS"} "$W_IMG" "$W_SIZE"
  sync -f "$W_IMG"
}
vd_write() { w_fresh; tm "$BIN" write "$W_IMG" --offset 0 --length "$W_LEN" --pattern 0xab; }
qm_write() { w_fresh; tm qemu-io -f "$W_FMT" -c "write -P 0xab 0 $W_LEN" "$W_IMG" >/dev/null; }
w_verify() { # the image vdiskview wrote: clean for qemu, and the bytes are there
  if [[ "$W_FMT" == qcow2 || "$W_FMT" == vhdx ]]; then
    qemu-img check -q -f "$W_FMT" "$W_IMG" || die "qemu-img check failed after vdiskview's write into $W_IMG"
  fi
  qemu-io -f "$W_FMT" -c "read -P 0xab 0 $W_LEN" "$W_IMG" | grep -q '^read ' || die "qemu-io does not read back vdiskview's write"
}
write_case() { # NAME FORMAT OPTS LENGTH MUST_RATIO
  local name=$1
  W_FMT=$2 W_OPTS=$3 W_LEN=$4 W_SIZE=1G W_IMG="$WDIR/w.img"
  say "timing: $name"
  interleave "$RUNS" vd_write qm_write || die "$name failed"
  add_ratio_row "$name" "$(median "${TIMES[0]}")" "$(median "${TIMES[1]}")" 1.0 "$5"
  note "$name runs (ms): vdiskview $(spread "${TIMES[0]}"), qemu-io $(spread "${TIMES[1]}")"
  vd_write && w_verify
}
NBDW_RUN="$WORK/nbdcopy-write-timed.sh"
cat >"$NBDW_RUN" <<'EOF'
#!/usr/bin/env bash
# nbdcopy-write-timed.sh SRC URI OUTFILE: nbdcopy --flush SRC URI, its wall time in microseconds to OUTFILE
s=$EPOCHREALTIME
nbdcopy --flush "$1" "$2" || exit 1
e=$EPOCHREALTIME
echo $((10#${e/./} - 10#${s/./})) >"$3"
EOF
chmod +x "$NBDW_RUN"
vd_nbdw() {
  w_fresh
  rm -f -- "$NBD_T"
  nbdkit -U - "$PLUGIN" file="$W_IMG" --run "$(q "$NBDW_RUN") $(q "$W_SRC") \"\$uri\" $(q "$NBD_T")" &
  BG_PID=$!
  wait "$BG_PID" || { say "nbdkit/nbdcopy failed on $W_IMG"; return 1; }
  BG_PID=""
  T_US=$(<"$NBD_T")
}
qm_nbdw() {
  local sock="$WORK/qemu-nbd-w.sock" pid i
  w_fresh
  rm -f -- "$NBD_T" "$sock"
  qemu-nbd -f "$W_FMT" -k "$sock" "$W_IMG" &
  pid=$!
  BG_PID=$pid
  for ((i = 0; i < 4000; i++)); do
    [[ -S "$sock" ]] && break
    kill -0 "$pid" 2>/dev/null || { say "qemu-nbd exited"; return 1; }
    sleep 0.005
  done
  [[ -S "$sock" ]] || { say "qemu-nbd made no socket"; return 1; }
  "$NBDW_RUN" "$W_SRC" "nbd+unix:///?socket=$sock" "$NBD_T" || { say "nbdcopy into qemu-nbd failed"; return 1; }
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  BG_PID=""
  rm -f -- "$sock"
  T_US=$(<"$NBD_T")
}
nbdw_case() { # NAME FORMAT OPTS
  local name=$1
  W_FMT=$2 W_OPTS=$3 W_SIZE=1G W_IMG="$WDIR/w.img"
  say "timing: $name"
  interleave "$RUNS" vd_nbdw qm_nbdw || die "$name failed"
  add_ratio_row "$name" "$(median "${TIMES[0]}")" "$(median "${TIMES[1]}")" 1.0 1.2
  note "$name runs (ms): plugin $(spread "${TIMES[0]}"), qemu-nbd $(spread "${TIMES[1]}")"
  vd_nbdw
  if [[ "$W_FMT" == qcow2 || "$W_FMT" == vhdx ]]; then
    qemu-img check -q -f "$W_FMT" "$W_IMG" || die "qemu-img check failed after nbdcopy into the plugin"
  fi
  # the rest of the (larger) image reads as zero, which compare accepts
  qemu-img compare -q -f raw -F "$W_FMT" "$W_SRC" "$W_IMG" || die "the image the plugin wrote does not hold the source's bytes"
}
# The VHDX cases of the write group (dynamic VHDX, qemu's default block size: 8 MiB for
# 1 GiB): write 1M / 64M vs qemu-io, nbdcopy 256M in, and nbdcopy out of a dense 1 GiB VHDX
# on the same disk (a copy of the dense qcow2) vs qemu-nbd.
write_vhdx_cases() {
  write_case "write 1M, dynamic VHDX (on disk)" vhdx "" $((1 * MiB)) 2.0
  write_case "write 64M, dynamic VHDX (on disk)" vhdx "" $((64 * MiB)) 1.5
  if ! skipped nbd; then
    nbdw_case "nbdcopy 256M random into VHDX (on disk)" vhdx ""
    local dense="$WDIR/dense.vhdx"
    qemu-img convert -f qcow2 -O vhdx "$DQCOW" "$dense"
    nbd_case "nbdcopy 1G VHDX to null: (on disk)" "$dense" vhdx
    rm -f -- "$dense"
  fi
}
if ! skipped write; then
  WDIR="$(mktemp -d "$DISK_BASE/vdiskview-bench-write.XXXXXX")"
  say "write cases in $WDIR ($(df -P "$WDIR" | awk 'NR==2 {print $1}'))"
  write_case "write 1M, qcow2 512 B clusters (on disk)" qcow2 "cluster_size=512" $((1 * MiB)) 2.0
  write_case "write 64M, qcow2 64 KiB clusters (on disk)" qcow2 "" $((64 * MiB)) 1.5
  write_case "write 64M, dynamic VHD (on disk)" vpc "subformat=dynamic" $((64 * MiB)) 1.5
  if ! skipped nbd; then
    W_SRC="$WDIR/random.bin"
    head -c $((256 * MiB)) /dev/urandom >"$W_SRC"
    nbdw_case "nbdcopy 256M random into qcow2 (on disk)" qcow2 ""
    nbdw_case "nbdcopy 256M random into VHD (on disk)" vpc "subformat=dynamic"
  fi
  write_vhdx_cases
  rm -rf -- "$WDIR"
  WDIR=""
fi

# ---------------------------------------------------------------- stream
vd_rnull() { tm "$BIN" read "$DQCOW" >/dev/null; }
cat_null() { tm cat "$DQCOW" >/dev/null; }
vd_rpipe() { tm bash -c '"$0" read "$1" | cat >/dev/null' "$BIN" "$DQCOW"; }
cat_pipe() { tm bash -c 'cat "$0" | cat >/dev/null' "$DQCOW"; }
if ! skipped stream; then
  say "timing: read 1G qcow2 -> /dev/null vs cat"
  interleave "$RUNS" vd_rnull cat_null || die "read to /dev/null failed"
  add_ratio_row "read 1G qcow2 -> /dev/null (qemu column: cat of the file)" "$(median "${TIMES[0]}")" "$(median "${TIMES[1]}")" 1.5 1.5
  say "timing: read 1G qcow2 -> pipe vs cat"
  interleave "$RUNS" vd_rpipe cat_pipe || die "read into a pipe failed"
  add_ratio_row "read 1G qcow2 -> pipe (qemu column: cat of the file)" "$(median "${TIMES[0]}")" "$(median "${TIMES[1]}")" 1.5 1.5
  "$BIN" read "$DQCOW" | cat >"$WORK/pipe.raw"
  qemu-img compare -q -f raw -F qcow2 "$WORK/pipe.raw" "$DQCOW" || die "vdiskview read into a pipe differs from qemu's guest bytes"
  rm -f -- "$WORK/pipe.raw"
fi

# stream of every dense image (issue 18): to /dev/null, into a pipe and into a tmpfs file, vs
# cat of the same image file (as large as the guest disk, to within its metadata)
S_IMG=""
S_OUT="$WORK/stream.out"
vd_snull() { tm "$BIN" read "$S_IMG" >/dev/null; }
cat_snull() { tm cat "$S_IMG" >/dev/null; }
vd_spipe() { tm bash -c '"$0" read "$1" | cat >/dev/null' "$BIN" "$S_IMG"; }
cat_spipe() { tm bash -c 'cat "$0" | cat >/dev/null' "$S_IMG"; }
vd_sfile() { rm -f -- "$S_OUT"; tm "$BIN" read "$S_IMG" >"$S_OUT"; }
cat_sfile() { rm -f -- "$S_OUT"; tm cat "$S_IMG" >"$S_OUT"; }
stream_case() { # NAME IMAGE FORMAT
  local name=$1 fmt=$3
  S_IMG=$2
  if [[ $fmt != qcow2 ]]; then # the qcow2's /dev/null and pipe cases are in the group above
    say "timing: read $name -> /dev/null vs cat"
    interleave "$RUNS" vd_snull cat_snull || die "read to /dev/null failed"
    add_ratio_row "read $name -> /dev/null (qemu column: cat of the file)" "$(median "${TIMES[0]}")" "$(median "${TIMES[1]}")" 1.5 1.5
    say "timing: read $name -> pipe vs cat"
    interleave "$RUNS" vd_spipe cat_spipe || die "read into a pipe failed"
    add_ratio_row "read $name -> pipe (qemu column: cat of the file)" "$(median "${TIMES[0]}")" "$(median "${TIMES[1]}")" 1.5 1.5
    "$BIN" read "$S_IMG" | cat >"$S_OUT"
    qemu-img compare -q -f raw -F "$fmt" "$S_OUT" "$S_IMG" || die "vdiskview read of $S_IMG into a pipe differs from qemu's guest bytes"
  fi
  say "timing: read $name -> tmpfs file vs cat"
  interleave "$RUNS" vd_sfile cat_sfile || die "read into a tmpfs file failed"
  add_ratio_row "read $name -> tmpfs file (qemu column: cat of the file)" "$(median "${TIMES[0]}")" "$(median "${TIMES[1]}")" 1.5 1.5
  note "read $name -> tmpfs file runs (ms): vdiskview $(spread "${TIMES[0]}"), cat $(spread "${TIMES[1]}")"
  rm -f -- "$S_OUT"
}
if ! skipped stream; then
  stream_case "1G qcow2" "$DQCOW" qcow2
  stream_case "1G VHD" "$DVHD" vpc
  stream_case "1G VHDX" "$DVHDX" vhdx
fi

# ---------------------------------------------------------------- render
# focused_title: the title of the focused pane (the one with the thick border, ┏) in a frame
focused_title() { grep -m1 '┏' | sed 's/.*┏ //; s/━.*//'; }
# focus_keys IMAGE REGEX: the Tabs that focus the pane whose title matches REGEX (the focused
# pane has the thick border, ┏)
focus_keys() {
  local img=$1 re=$2 keys="" i title
  for ((i = 0; i < 6; i++)); do
    title=$("$BIN" render "$img" --size "$SIZE" --format text --keys "$keys" | focused_title)
    if [[ "$title" =~ $re ]]; then printf '%s' "$keys"; return 0; fi
    keys="${keys:+$keys }Tab"
  done
  die "no pane matching '$re' gets the focus in $img"
}
repeat() { local out="" i; for ((i = 0; i < $2; i++)); do out+="$1 "; done; printf '%s' "${out% }"; }

RENDER_IMGS=("$DEMO" "$DQCOW" "$DVHD" "$FQCOW" "$FVHD")
RENDER_NAMES=("demo.vhd (8M)" "1G dense qcow2" "1G dense VHD" "64G qcow2, $COUNT_FQ clusters" "64G VHD, $COUNT_FV blocks")
if [[ -n "$HQCOW" ]]; then
  RENDER_IMGS+=("$HQCOW"); RENDER_NAMES+=("1T qcow2, $COUNT_H clusters")
fi
RENDER_IMGS+=("$S2Q" "$S2V")
RENDER_NAMES+=("2T sparse qcow2" "2040G sparse VHD (1M BAT)")
declare -A RSS=()
render_i() { # INDEX: first frame of RENDER_IMGS[INDEX]; the warm-up run records the peak RSS
  local img=${RENDER_IMGS[$1]}
  if [[ -n "${WARMUP:-}" ]]; then
    /usr/bin/time -f %M -o "$WORK/rss" "$BIN" render "$img" --size "$SIZE" --format text >/dev/null \
      || { say "render failed on $img"; return 1; }
    RSS[$1]=$(<"$WORK/rss")
  fi
  tm "$BIN" render "$img" --size "$SIZE" --format text >/dev/null
}
if ! skipped render; then
  say "timing: first frames of ${#RENDER_IMGS[@]} images, $RRUNS rounds"
  fns=()
  for i in "${!RENDER_IMGS[@]}"; do fns+=("render_i $i"); done
  interleave "$RRUNS" "${fns[@]}" || die "render failed"
  for i in "${!RENDER_IMGS[@]}"; do
    m=$(median "${TIMES[i]}")
    r=${RSS[$i]}
    met=$(awk -v t="$m" -v r="$r" 'BEGIN {
      ok = (t <= 50000 && r <= 32768); must = (t <= 250000 && r <= 65536)
      if (ok) print "yes"; else if (must) print "no (must-hold <=250 ms, <=64 MiB: yes)"; else print "**NO** (must-hold <=250 ms, <=64 MiB: no)"}')
    ROWS+=("render first frame, ${RENDER_NAMES[i]}|$(fmt_ms "$m"), $(awk -v r="$r" 'BEGIN {printf "%.1f MiB", r / 1024}')|-|-|<= 50 ms, <= 32 MiB|$met")
    say "  ${RENDER_NAMES[i]}: $(fmt_ms "$m"), $r KiB"
    note "render ${RENDER_NAMES[i]}: runs (ms) $(spread "${TIMES[i]}")"
  done
fi

# ---------------------------------------------------------------- keys
# Two measures of a key press at 160x48:
#  render: (render with PREFIX and K keys - render with PREFIX) / K, medians of the paired
#          differences of interleaved runs. `render` handles every key but draws once, at
#          the end: this is the work of a key without its redraw.
#  TUI:    the real TUI (vdiskview IMAGE) in a detached tmux session of our own (-L), which
#          redraws after every key; the keys are typed in bursts of at most BURST_BYTES bytes and
#          each burst is waited for on the screen (crossterm reads the terminal 1024 bytes at
#          a time and leaves the rest of a longer burst unread until more input comes: a
#          burst of 500 PgDn stops after 256). The figure is vdiskview's CPU time (user + sys,
#          /usr/bin/time) with the keys minus without them (PREFIX only), divided by K: the
#          work of a key and its redraw, without tmux's.
BURST_BYTES=800
# press_bytes WORDS...: PB = the bytes the terminal sends for these keys (at most)
press_bytes() {
  local w n=0
  for w in "$@"; do
    case "$w" in
      PgDn | PgUp) n=$((n + 4)) ;;
      Up | Down | Left | Right | Home | End) n=$((n + 3)) ;;
      *) n=$((n + ${#w})) ;;
    esac
  done
  PB=$n
}
TMUX_L="vdiskview-bench-$$"
tmx() { env -u TMUX tmux -L "$TMUX_L" "$@"; }
# wait_pane REGEX: wait (at most 60 s) until the TUI's screen matches REGEX
wait_pane() {
  local i
  for ((i = 0; i < 6000; i++)); do
    tmx capture-pane -p -t bench 2>/dev/null | grep -qE "$1" && return 0
    sleep 0.01
  done
  return 1
}
# tmux_type KEYS...: type KEYS (render's key names) into the session with one tmux command:
# key names grouped into send-keys, other words typed literally (send-keys -l: "0x..." would
# be taken for a key code)
tmux_type() {
  local w names=() args=()
  for w in "$@"; do
    case "$w" in
      PgDn) names+=(NPage) ;;
      PgUp) names+=(PPage) ;;
      Tab | Enter | Escape | Up | Down | Left | Right | Home | End | ?) names+=("$w") ;;
      *)
        if ((${#names[@]})); then
          ((${#args[@]})) && args+=(";")
          args+=(send-keys -t bench "${names[@]}")
          names=()
        fi
        ((${#args[@]})) && args+=(";")
        args+=(send-keys -t bench -l "$w") ;;
    esac
  done
  if ((${#names[@]})); then
    ((${#args[@]})) && args+=(";")
    args+=(send-keys -t bench "${names[@]}")
  fi
  tmx "${args[@]}"
}

# A key case is set by these globals:
#   KEY_IMG      the image
#   KEY_PRE      the keys that focus the pane (Tabs), in both runs
#   KEY_N        K
#   key_word I   sets REPLY to the keys of press I (0-based), render's names
#   key_check I  prints a regex the screen matches once presses 0..I are done
KEY_IMG=""
KEY_PRE=""
KEY_N=0
KEY_EVENTS=1 # key events in one press (a jump: g, each character typed, Enter)
all_keys() { local i out="$KEY_PRE"; for ((i = 0; i < KEY_N; i++)); do key_word "$i"; out+="${out:+ }$REPLY"; done; printf '%s' "$out"; }
KEY_STR=""
rk_none() { tm "$BIN" render "$KEY_IMG" --size "$SIZE" --format text --keys "$KEY_PRE" >/dev/null; }
rk_keys() { tm "$BIN" render "$KEY_IMG" --size "$SIZE" --format text --keys "$KEY_STR" >/dev/null; }

TUI_BASE=""
tui_once() {
  local out="$WORK/tui.time" i j b bytes e u sy words
  rm -f -- "$out"
  TMUX_USED=1
  tmx new-session -d -s bench -x "${SIZE%x*}" -y "${SIZE#*x}" \
    "/usr/bin/time -f '%e %U %S' -o $(q "$out") $(q "$BIN") $(q "$KEY_IMG")" || return 1
  wait_pane 'READ-ONLY' || { say "the TUI did not draw its first frame"; return 1; }
  # shellcheck disable=SC2086
  [[ -n "$KEY_PRE" ]] && tmux_type $KEY_PRE
  if [[ -z "$TUI_BASE" ]]; then
    i=0
    while ((i < KEY_N)); do
      # a burst: presses while their bytes stay within BURST_BYTES
      words="" bytes=0
      for ((j = i; j < KEY_N; j++)); do
        key_word "$j"
        # shellcheck disable=SC2086
        press_bytes $REPLY
        b=$PB
        ((j > i && bytes + b > BURST_BYTES)) && break
        words+=" $REPLY" bytes=$((bytes + b))
      done
      # shellcheck disable=SC2086
      tmux_type $words
      wait_pane "$(key_check $((j - 1)))" || {
        say "the TUI never showed /$(key_check $((j - 1)))/: $(tmx capture-pane -p -t bench | tail -1 | cut -c1-100)"
        return 1
      }
      i=$j
    done
  fi
  tmx send-keys -t bench q
  for ((i = 0; i < 6000; i++)); do
    [[ -s "$out" ]] && break
    sleep 0.01
  done
  tmx kill-session -t bench 2>/dev/null || true
  [[ -s "$out" ]] || { say "the TUI did not quit"; return 1; }
  read -r e u sy <"$out"
  T_US=$(awk -v u="$u" -v s="$sy" 'BEGIN {printf "%d", (u + s) * 1e6}')
}
tui_keys() { TUI_BASE=""; tui_once; }
tui_none() { TUI_BASE=1; tui_once; }

# key_case NAME: measure the case set in the globals
key_case() {
  local name=$1 k=$KEY_N d per met frame extra="" dt pt
  KEY_STR=$(all_keys)
  frame=$("$BIN" render "$KEY_IMG" --size "$SIZE" --format text --keys "$KEY_STR") || die "render --keys failed on $KEY_IMG"
  if ! grep -qE "$(key_check $((k - 1)))" <<<"$frame"; then
    note "$name: WARNING: the frame after the keys does not show /$(key_check $((k - 1)))/: $(focused_title <<<"$frame") | $(tail -1 <<<"$frame" | cut -c1-100)"
  fi
  say "timing: $name (render, K=$k)"
  interleave "$RRUNS" rk_keys rk_none || die "render --keys failed"
  d=$(median_diff "${TIMES[0]}" "${TIMES[1]}")
  per=$(awk -v d="$d" -v k="$k" 'BEGIN {printf "%.3f", d / k / 1000}')
  note "$name: render, K=$k: $(fmt_ms "$(median "${TIMES[0]}")") with the keys, $(fmt_ms "$(median "${TIMES[1]}")") without (medians; runs (ms) $(spread "${TIMES[0]}") / $(spread "${TIMES[1]}"))"
  met=$(awk -v p="$per" 'BEGIN {print (p <= 5 ? "yes" : "no")}')
  if [[ -n "$HAVE_TMUX" ]]; then
    say "timing: $name (TUI in tmux, K=$k)"
    interleave "$TRUNS" tui_keys tui_none || die "the TUI in tmux failed on $KEY_IMG"
    dt=$(median_diff "${TIMES[0]}" "${TIMES[1]}")
    pt=$(awk -v d="$dt" -v k="$k" 'BEGIN {printf "%.3f", d / k / 1000}')
    extra="; TUI with redraw $pt ms"
    if ((KEY_EVENTS > 1)); then
      # a press of several keys (a jump: g, the expression, Enter): the target is per key
      local pk
      pk=$(awk -v p="$pt" -v n="$KEY_EVENTS" 'BEGIN {printf "%.3f", p / n}')
      extra+=" per jump = $KEY_EVENTS keys x $pk ms"
      met=$(awk -v p="$per" -v t="$pk" 'BEGIN {print (p <= 5 && t <= 5 ? "yes (per key)" : "no")}')
    else
      met=$(awk -v p="$per" -v t="$pt" 'BEGIN {print (p <= 5 && t <= 5 ? "yes" : "no")}')
    fi
    note "$name: TUI in tmux, K=$k: CPU $(fmt_ms "$(median "${TIMES[0]}")") with the keys, $(fmt_ms "$(median "${TIMES[1]}")") without (medians of user+sys, 10 ms resolution)"
  fi
  ROWS+=("$name (K=$k)|render $per ms$extra|-|-|<= 5 ms/key|$met")
  say "  $name: render $per ms per key$extra"
}

# hex page-down: a page is the hex pane's rows x 16 bytes; after n pages the cursor is at n x page
HEX_PAGE=0
hex_word() { REPLY=PgDn; }
hex_check() { printf 'guest 0x%x ' $((($1 + 1) * HEX_PAGE)); }
# grid page-down: after n pages the title names entry min(n x per page, last)
GRID_PAGE=0
GRID_LAST=0
GRID_WHAT=""
grid_check() {
  local n=$((($1 + 1) * GRID_PAGE))
  ((n > GRID_LAST)) && n=$GRID_LAST
  printf '┏ %s %d of' "$GRID_WHAT" "$n"
}
# jump I: to the byte I+1 from the end, a new place each time (so the screen tells when it
# is done): g, the expression typed, Enter
JUMP_SIZE=0
jump_word() { printf -v REPLY 'g 0x%x-%d Enter' "$JUMP_SIZE" $(($1 + 1)); }
jump_check() { printf 'guest 0x%x ' $((JUMP_SIZE - $1 - 1)); }

HAVE_TMUX=""
if ! skipped keys; then
  if ! skipped tui; then
    if command -v tmux >/dev/null 2>&1 || apt_install tmux; then HAVE_TMUX=1; else say "no tmux: keys measured with render only"; fi
  fi
  key_word() { hex_word "$@"; }
  key_check() { hex_check "$@"; }
  for spec in "1G dense qcow2|$DQCOW" "2040G sparse VHD|$S2V" ${HQCOW:+"1T qcow2|$HQCOW"}; do
    KEY_IMG=${spec#*|}
    KEY_PRE=$(focus_keys "$KEY_IMG" '^Hex')
    HEX_PAGE=$(("$("$BIN" render "$KEY_IMG" --size "$SIZE" --format text --keys "$KEY_PRE PgDn" | tail -1 | sed -n 's/.*guest \(0x[0-9a-f]*\) .*/\1/p')"))
    ((HEX_PAGE > 0)) || die "cannot tell the hex page size of $KEY_IMG"
    KEY_N=$KEYS_HEX
    key_case "key: hex PgDn, ${spec%%|*}"
  done

  key_word() { REPLY=PgDn; }
  key_check() { grid_check "$@"; }
  # the BAT grid of the 2040G VHD, from block 0 to its last block
  KEY_IMG=$S2V
  KEY_PRE=$(focus_keys "$KEY_IMG" '^BAT')
  title=$("$BIN" render "$KEY_IMG" --size "$SIZE" --format text --keys "$KEY_PRE PgDn" | focused_title)
  GRID_WHAT="BAT — block"
  GRID_PAGE=$(sed -n 's/.*block \([0-9]*\) of.*/\1/p' <<<"$title")
  entries=$(sed -n 's/.* of \([0-9]*\) .*/\1/p' <<<"$title")
  ((GRID_PAGE > 0 && entries > 0)) || die "cannot tell the BAT page size from '$title'"
  GRID_LAST=$((entries - 1))
  KEY_N=$(((entries + GRID_PAGE - 1) / GRID_PAGE))
  key_case "key: BAT grid PgDn across all $entries entries, 2040G VHD"
  # as many pages down the L2 grid of the 1 TiB qcow2 (the first ~1M of its 16M clusters)
  if [[ -n "$HQCOW" ]]; then
    KEY_IMG=$HQCOW
    KEY_PRE=$(focus_keys "$KEY_IMG" '^L2')
    title=$("$BIN" render "$KEY_IMG" --size "$SIZE" --format text --keys "$KEY_PRE PgDn" | focused_title)
    GRID_WHAT="L2 — cluster"
    GRID_PAGE=$(sed -n 's/.*cluster \([0-9]*\) of.*/\1/p' <<<"$title")
    entries=$(sed -n 's/.* of \([0-9]*\) .*/\1/p' <<<"$title")
    ((GRID_PAGE > 0 && entries > 0)) || die "cannot tell the L2 page size from '$title'"
    GRID_LAST=$((entries - 1))
    key_case "key: L2 grid PgDn, 1T qcow2"
  fi

  key_word() { jump_word "$@"; }
  key_check() { jump_check "$@"; }
  for spec in "2040G sparse VHD|$S2V" "2T sparse qcow2|$S2Q" ${HQCOW:+"1T qcow2|$HQCOW"}; do
    KEY_IMG=${spec#*|}
    KEY_PRE=""
    JUMP_SIZE=$(vsize "$KEY_IMG")
    KEY_N=$KEYS_JUMP
    jump_word $((KEY_N / 2))
    KEY_EVENTS=$((${#REPLY} - 6)) # "g EXPR Enter": g, each character of EXPR, Enter
    key_case "key: jump near the end (g $(printf '0x%x' "$JUMP_SIZE")-i Enter), ${spec%%|*}"
  done
fi

# ---------------------------------------------------------------- report
TOTAL_S=$((SECONDS - START))
commit=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')
if [[ -n "$(git -C "$here" status --porcelain -- src nbdkit-plugin Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
  commit="$commit + uncommitted changes in src/"
fi
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
ram=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
qv=$(qemu-img --version | head -1 | sed 's/^qemu-img version //')
nv=$(nbdkit --version 2>/dev/null | head -1)
load=$(cut -d' ' -f1-3 /proc/loadavg)

table() {
  echo "| case | vdiskview | qemu | ratio | target | met? |"
  echo "|---|---|---|---|---|---|"
  local r
  for r in "${ROWS[@]}"; do
    echo "| ${r//|/ | } |"
  done
}
machine() {
  echo "- machine: $(nproc) CPUs, $cpu, $ram RAM, Linux $(uname -r)"
  echo "- qemu-img $qv; $nv; vdiskview $commit"
  echo "- $(date -u '+%Y-%m-%d %H:%M UTC'); load average at the end $load (the machine is shared: medians of interleaved runs)"
  echo "- runs: $RUNS per command for map/read/nbd, $RRUNS for render and keys, after one warm-up; tmpfs $SHM_BASE, on-disk image in ${DWORK:-(none)}"
  echo "- images made in $IMG_S s; whole run $TOTAL_S s (build $BUILD_S s)"
}
notes() {
  local n
  for n in "${NOTES[@]}"; do echo "- $n"; done
}

echo
table
echo
machine
echo
echo "ratio = vdiskview / qemu (lower is better). met?: the issue's target; in brackets the must-hold bound."
echo
notes
echo
echo "total wall time: $TOTAL_S s"

if [[ -n "$MD" && "$MD" != 0 ]]; then
  [[ "$MD" == /* ]] || MD="$here/$MD"
  block="$(
    echo "<!-- bench:begin (written by scripts/bench.sh; edit outside these markers) -->"
    table
    echo
    machine
    echo
    echo "Ratio = vdiskview / qemu (lower is better). met?: the issue's target; in brackets the must-hold bound."
    echo
    echo "Details of this run:"
    echo
    notes
    echo "<!-- bench:end -->"
  )"
  if [[ -f "$MD" ]] && grep -q '^<!-- bench:begin' "$MD" && grep -q '^<!-- bench:end' "$MD"; then
    printf '%s\n' "$block" >"$WORK/block.md"
    awk -v blockfile="$WORK/block.md" '
      /^<!-- bench:begin/ {while ((getline line < blockfile) > 0) print line; skip = 1; next}
      /^<!-- bench:end/ {skip = 0; next}
      !skip {print}' "$MD" >"$MD.tmp" && mv -- "$MD.tmp" "$MD"
  else
    {
      echo "# Benchmarks"
      echo
      echo "vdiskview against qemu-img and qemu-nbd, measured in one run by \`scripts/bench.sh\`."
      echo
      printf '%s\n' "$block"
    } >"$MD"
  fi
  say "table written into $MD"
fi

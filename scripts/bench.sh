#!/usr/bin/env bash
# Benchmark (not a test): vdiskview against qemu-img on the same machine, in one run.
#
#   scripts/bench.sh
#
# Builds the release binary (incremental), makes its images in a temporary directory
# (removed at the end, also on failure or Ctrl-C), times each case several times and
# prints, per case, the best time of vdiskview, the best time of qemu-img and their
# ratio (vdiskview / qemu-img: lower is better, < 1 means vdiskview is faster), and
# whether both produced the same output.
#
# Images:
#   sparse.qcow2  64 GiB virtual, BENCH_CLUSTERS (4000) 64 KiB clusters written by
#                 qemu-io at pseudo-random but deterministic offsets (fixed-seed LCG),
#                 so guest order != host order and the map has ~2*N entries
#   dense.qcow2   1 GiB, every cluster allocated (converted from dense.raw)
#   dense.vhd     1 GiB dynamic VHD, every block allocated (converted from dense.raw)
#   dense.raw is filled by qemu-io with a different byte pattern in each 64 KiB chunk,
#   so a block read from the wrong place would show in the output comparison.
#
# Cases (same sink for both tools in each case):
#   map    `vdiskview map --output json` vs `qemu-img map --output=json`, stdout to /dev/null
#   read   `vdiskview read IMG > FILE` vs `qemu-img convert -O raw IMG FILE`, FILE in the
#          temporary directory (tmpfs when /dev/shm has room). qemu-img cannot write to
#          /dev/null ("Cannot grow device files"), so a file is the common sink.
#   read-discard  `vdiskview read IMG > /dev/null` vs `qemu-img convert -n` into qemu's
#          null-co driver (writes are dropped): both without a sink's cost. The 64 GiB sparse
#          image is only read this way (vdiskview would write 64 GiB of zeros to a file).
#
# Timing: hyperfine when installed (it is installed with apt-get when missing, as root,
# unless BENCH_NO_INSTALL=1), otherwise a loop with `date +%s%N`. Both report the best
# (minimum) of BENCH_RUNS runs after one warm-up run.
#
# Environment:
#   BENCH_RUNS=5            timed runs per command
#   BENCH_CLUSTERS=4000     clusters written into the sparse image
#   BENCH_TIMER=auto        auto | hyperfine | builtin
#   BENCH_NO_INSTALL=       1: never apt-get install anything
#   BENCH_SPARSE_READ=1     0: skip reading the whole 64 GiB sparse image
#   BENCH_TMPDIR=           where to make the temporary directory (default: /dev/shm
#                           when it has room, else $TMPDIR or /tmp)
set -euo pipefail

export LC_ALL=C
export PATH="$PATH:/usr/sbin:/sbin"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

RUNS="${BENCH_RUNS:-5}"
CLUSTERS="${BENCH_CLUSTERS:-4000}"
TIMER="${BENCH_TIMER:-auto}"
SPARSE_READ="${BENCH_SPARSE_READ:-1}"
DENSE_SIZE=$((1 << 30))
SPARSE_SIZE=$((64 << 30))
CLUSTER=$((64 << 10))

say() { printf '%s\n' "bench: $*" >&2; }
die() { say "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools
apt_install() {
  [[ -n "${BENCH_NO_INSTALL:-}" ]] && return 1
  command -v apt-get >/dev/null 2>&1 || return 1
  local sudo=""
  if [[ "$(id -u)" != 0 ]]; then sudo="sudo -n"; fi
  say "installing $* with apt-get"
  { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "$@"; } </dev/null >&2 || return 1
}

if ! command -v qemu-img >/dev/null 2>&1 || ! command -v qemu-io >/dev/null 2>&1; then
  apt_install qemu-utils || die "qemu-img and qemu-io are needed (Debian package qemu-utils)"
fi
command -v cargo >/dev/null 2>&1 || die "cargo is needed"

case "$TIMER" in
  auto)
    if ! command -v hyperfine >/dev/null 2>&1; then apt_install hyperfine || true; fi
    if command -v hyperfine >/dev/null 2>&1; then TIMER=hyperfine; else TIMER=builtin; fi ;;
  hyperfine) command -v hyperfine >/dev/null 2>&1 || die "BENCH_TIMER=hyperfine but hyperfine is not installed" ;;
  builtin) ;;
  *) die "BENCH_TIMER must be auto, hyperfine or builtin" ;;
esac

# ---------------------------------------------------------------- build
say "cargo build --release"
cargo build --release >&2
BIN="${CARGO_TARGET_DIR:-$here/target}/release/vdiskview"
[[ -x "$BIN" ]] || die "no binary at $BIN"

# ---------------------------------------------------------------- temp dir
need_kib=$((6 << 20)) # ~6 GiB: raw + 2 dense images + 2 read outputs + sparse image
base="${BENCH_TMPDIR:-}"
if [[ -z "$base" ]]; then
  base="${TMPDIR:-/tmp}"
  if [[ -d /dev/shm && -w /dev/shm ]]; then
    avail=$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {print $4}')
    if [[ -n "$avail" ]] && ((avail > need_kib)); then base=/dev/shm; fi
  fi
fi
WORK="$(mktemp -d "$base/vdiskview-bench.XXXXXX")"
cleanup() {
  local rc=$?
  rm -rf -- "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
say "temporary directory $WORK"

# ---------------------------------------------------------------- images
SPARSE="$WORK/sparse.qcow2"
RAW="$WORK/dense.raw"
DQCOW="$WORK/dense.qcow2"
DVHD="$WORK/dense.vhd"

# qemu-io reads commands from stdin when there is no -c; it does not fail on a bad
# command, so its output is checked for errors.
qemu_io_script() { # FORMAT IMAGE < commands
  local out
  out="$(qemu-io -f "$1" "$2" 2>&1)" || { printf '%s\n' "$out" >&2; return 1; }
  if grep -qiE 'error|fail|invalid|not found' <<<"$out"; then
    printf '%s\n' "$out" | head -20 >&2
    return 1
  fi
}

t0=$SECONDS
say "making $SPARSE: 64 GiB virtual, $CLUSTERS scattered 64 KiB clusters"
qemu-img create -q -f qcow2 "$SPARSE" "$SPARSE_SIZE"
{
  # 64-bit LCG (Knuth's MMIX constants), fixed seed; bash arithmetic wraps mod 2^64
  nclusters=$((SPARSE_SIZE / CLUSTER))
  state=20240611
  declare -A seen=()
  n=0
  while ((n < CLUSTERS)); do
    state=$((state * 6364136223846793005 + 1442695040888963407))
    idx=$(( ((state >> 33) & 0x7fffffff) % nclusters ))
    [[ -n "${seen[$idx]:-}" ]] && continue
    seen[$idx]=1
    n=$((n + 1))
    echo "write -q -P $((n % 255 + 1)) $((idx * CLUSTER)) 64k"
  done
} | qemu_io_script qcow2 "$SPARSE" || die "qemu-io failed on $SPARSE"

say "making $RAW, $DQCOW and $DVHD: 1 GiB, fully allocated"
qemu-img create -q -f raw "$RAW" "$DENSE_SIZE"
for ((i = 0; i < DENSE_SIZE / CLUSTER; i++)); do
  echo "write -q -P $(((i * 37) % 255 + 1)) $((i * CLUSTER)) 64k"
done | qemu_io_script raw "$RAW" || die "qemu-io failed on $RAW"
qemu-img convert -f raw -O qcow2 "$RAW" "$DQCOW"
qemu-img convert -f raw -O vpc -o subformat=dynamic "$RAW" "$DVHD"
rm -f -- "$RAW"
say "images made in $((SECONDS - t0)) s"

# (not the JSON: its first "virtual-size" is the one of the protocol child, the file)
vsize() { qemu-img info "$1" | sed -n 's/^virtual size: .*(\([0-9]*\) bytes).*/\1/p' | head -1; }

# ---------------------------------------------------------------- timing
# best_of CMD: prints the best wall time in seconds of RUNS runs (after one warm-up)
best_of() {
  local cmd=$1
  if [[ "$TIMER" == hyperfine ]]; then
    local csv="$WORK/hf.csv"
    hyperfine --shell bash --style none --warmup 1 --runs "$RUNS" --export-csv "$csv" -- "$cmd" >/dev/null 2>&1 \
      || { say "command failed: $cmd"; bash -c "$cmd" >&2 || true; return 1; }
    # columns: command,mean,stddev,median,user,system,min,max (the command may contain commas)
    awk -F, 'NR==2 {print $(NF-1)}' "$csv"
  else
    local i s e best=""
    bash -c "$cmd" || { say "command failed: $cmd"; return 1; }
    for ((i = 0; i < RUNS; i++)); do
      s=$(date +%s%N)
      bash -c "$cmd" || { say "command failed: $cmd"; return 1; }
      e=$(date +%s%N)
      if [[ -z "$best" ]] || ((e - s < best)); then best=$((e - s)); fi
    done
    awk -v ns="$best" 'BEGIN {printf "%.6f\n", ns / 1e9}'
  fi
}

q() { printf '%q' "$1"; }
VD="$(q "$BIN")"

ROWS=()
ALL_SAME=yes
# row CASE VD_CMD QEMU_CMD SAME   (SAME: yes | no | - )
row() {
  local name=$1 vcmd=$2 qcmd=$3 same=$4 tv tq
  say "timing: $name"
  tv=$(best_of "$vcmd") || die "vdiskview failed in case '$name'"
  tq=$(best_of "$qcmd") || die "qemu-img failed in case '$name'"
  [[ "$same" == no ]] && ALL_SAME=no
  ROWS+=("$name|$tv|$tq|$same")
}

# -- map
vd_map="$WORK/map.vd.json"
qm_map="$WORK/map.qemu.json"
"$BIN" map --output json "$SPARSE" >"$vd_map" || die "vdiskview map failed"
qemu-img map --output=json "$SPARSE" >"$qm_map"
same=no; cmp -s "$vd_map" "$qm_map" && same=yes
if [[ $same == no ]]; then
  say "map outputs differ (first lines of diff):"
  diff "$qm_map" "$vd_map" | head -6 >&2 || true
fi
say "sparse map: $(grep -c '"data": true' "$qm_map") data entries, $(wc -l <"$qm_map") entries in all"
row "map json, 64G sparse qcow2" \
  "$VD map --output json $(q "$SPARSE") >/dev/null" \
  "qemu-img map --output=json $(q "$SPARSE") >/dev/null" "$same"

# -- read to a file
OUT_VD="$WORK/out.vd.raw"
OUT_QM="$WORK/out.qemu.raw"
read_file_case() { # NAME IMAGE FORMAT
  local name=$1 img=$2 fmt=$3 same=no
  row "$name" \
    "$VD read $(q "$img") >$(q "$OUT_VD")" \
    "qemu-img convert -f $fmt -O raw $(q "$img") $(q "$OUT_QM")" "-"
  # both files hold the last timed run's output
  if cmp -s "$OUT_VD" "$OUT_QM"; then
    same=yes
  else
    say "$name: outputs differ: $(stat -c %s "$OUT_VD") vs $(stat -c %s "$OUT_QM") bytes; $(cmp "$OUT_VD" "$OUT_QM" 2>&1 | head -1)"
    ALL_SAME=no
  fi
  ROWS[-1]="${ROWS[-1]%|*}|$same"
  rm -f -- "$OUT_VD" "$OUT_QM"
}
read_file_case "read 1G qcow2 -> file" "$DQCOW" qcow2
read_file_case "read 1G vhd -> file" "$DVHD" vpc

# -- read, discarding the output
read_null_case() { # NAME IMAGE FORMAT
  local name=$1 img=$2 fmt=$3 size
  size=$(vsize "$img")
  [[ -n "$size" ]] || die "no virtual size for $img"
  row "$name" \
    "$VD read $(q "$img") >/dev/null" \
    "qemu-img convert -n -f $fmt $(q "$img") --target-image-opts driver=null-co,size=$size" "-"
}
read_null_case "read 1G qcow2 -> discard" "$DQCOW" qcow2
read_null_case "read 1G vhd -> discard" "$DVHD" vpc
if [[ "$SPARSE_READ" != 0 ]]; then
  read_null_case "read 64G sparse qcow2 -> discard" "$SPARSE" qcow2
fi

# ---------------------------------------------------------------- report
echo
echo "vdiskview $("$BIN" --version | awk '{print $2}') ($(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')) vs $(qemu-img --version | head -1)"
echo "best of $RUNS runs ($TIMER), $(nproc) CPUs, images in $(df -P "$WORK" | awk 'NR==2 {print $1}') ($base)"
echo
printf '%-34s %12s %12s %8s  %s\n' "case" "vdiskview s" "qemu-img s" "ratio" "same output"
printf '%-34s %12s %12s %8s  %s\n' "----" "-----------" "----------" "-----" "-----------"
for r in "${ROWS[@]}"; do
  IFS='|' read -r name tv tq same <<<"$r"
  awk -v n="$name" -v a="$tv" -v b="$tq" -v s="$same" \
    'BEGIN {printf "%-34s %12.4f %12.4f %8.2f  %s\n", n, a, b, (b > 0 ? a / b : 0), s}'
done
echo
echo "ratio = vdiskview / qemu-img (lower is better; < 1: vdiskview is faster)"
echo "same output: map JSON byte-identical (cmp); read: the two raw outputs byte-identical (cmp); - : not compared (no output kept)"
echo "outputs identical: $ALL_SAME"
echo "total wall time: $SECONDS s"

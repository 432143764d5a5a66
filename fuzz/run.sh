#!/usr/bin/env bash
# Run one fuzz target for RUNS executions (default 1,000,000) or SECONDS (default 900),
# whichever comes first: ./run.sh TARGET [RUNS] [SECONDS]. Crashes land in artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
t=$1; runs=${2:-1000000}; secs=${3:-900}
case $t in
    expr) max=256 ;;
    vhd_footer) max=512 ;;
    qcow2_header) max=8192 ;;
    qcow2_decompress) max=65536 ;;
    ntfs_lznt1) max=70000 ;;
    ntfs) max=2200000 ;;
    *) max=262144 ;;
esac
mkdir -p "corpus/$t" "artifacts/$t"
RUSTC_BOOTSTRAP=1 exec cargo fuzz run -s none "$t" "corpus/$t" -- \
    -runs="$runs" -max_total_time="$secs" -max_len="$max" -timeout=10 -rss_limit_mb=4096 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1

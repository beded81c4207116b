#!/bin/sh
# Runs each target for SECS seconds, one at a time; logs in fuzz/logs/.
cd "$(dirname "$0")/.." || exit 1
SECS=${SECS:-600}
for t in ${TARGETS:-line skim length octet raw escape proxy}; do
    mkdir -p fuzz/corpus/$t fuzz/logs
    RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$t" -- -max_total_time="$SECS" -max_len=4096 \
        -print_final_stats=1 > fuzz/logs/$t.log 2>&1
    echo "$t exit $?" >> fuzz/logs/summary
done

#!/bin/sh
# Runs each target for SECS seconds, one at a time; logs in fuzz/logs/.
cd "$(dirname "$0")/.." || exit 1
SECS=${SECS:-600}
for t in ${TARGETS:-line skim length octet raw escape proxy metrics_request}; do
    mkdir -p fuzz/corpus/$t fuzz/logs
    # The metrics request path needs room past its 8 KiB limit.
    len=4096; [ "$t" = metrics_request ] && len=9000
    RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$t" -- -max_total_time="$SECS" -max_len="$len" \
        -print_final_stats=1 > fuzz/logs/$t.log 2>&1
    echo "$t exit $?" >> fuzz/logs/summary
done

#!/bin/sh
# Run the replace-node scenario once per task name given, interrupted right after that task
# (KEYVAL_INTERRUPT_AFTER), and print one line per run: the task, the result, the duration and
# the live writer's figures. Each run is a whole `molecule test` (fresh hosts, about 3 min).
#   molecule/replace-node/interrupt_sweep.sh "Read the cluster" "Start KeyVal (all initial nodes of a fresh cluster together)"
# Run from the repository root with the venv active, as root.
set -u
log_dir=${SWEEP_LOG_DIR:-/tmp/replace-node-sweep}
mkdir -p "$log_dir"
n=0
for task in "$@"; do
    n=$((n + 1))
    log="$log_dir/run-$n.log"
    start=$(date +%s)
    if KEYVAL_INTERRUPT_AFTER="$task" molecule test -s replace-node </dev/null >"$log" 2>&1; then result=passed; else result=FAILED; fi
    figures=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -o 'live writer: acknowledged [0-9]*, lost [0-9]*, longest gap [0-9.]* s' | tr '\n' ';')
    killed=$(grep -c 'interrupt_after: SIGKILL' "$log")
    echo "$result $(( $(date +%s) - start ))s killed=$killed after \"$task\": $figures ($log)"
done

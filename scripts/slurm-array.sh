#!/usr/bin/env bash
# slurm-array.sh: a sharded qeval run as a Slurm job array.  Each array task
# runs the work units u with u % N == I (qeval run --shard I/N) into its own
# database; a dependent job merges them and renders the report.
#
#   sbatch scripts/slurm-array.sh MODEL            # submits N shards + the merge
#   QEVAL_SHARDS=8 QEVAL_SUITE=default QEVAL_EXTRA="--limit 200" sbatch scripts/slurm-array.sh MODEL
#
# Locally (no Slurm), the same steps by hand:
#   for i in 0 1; do SLURM_ARRAY_TASK_ID=$i QEVAL_SHARDS=2 QEVAL_OUT=out scripts/slurm-array.sh M; done
#   QEVAL_MERGE=1 QEVAL_OUT=out scripts/slurm-array.sh M
#
# Every shard must see the same inputs (model, --quants, --suite, --limit,
# --label), so they share one run key and merge into one run.  A shard that
# is killed (preemption, time limit) resumes where it stopped when Slurm
# requeues it: its database keeps the finished units.
#SBATCH --job-name=qeval
#SBATCH --array=0-3
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --time=02:00:00
#SBATCH --requeue
#SBATCH --output=qeval-%A_%a.log
set -euo pipefail
MODEL="${1:?usage: sbatch scripts/slurm-array.sh MODEL}"
N="${QEVAL_SHARDS:-${SLURM_ARRAY_TASK_COUNT:-4}}"
OUT="${QEVAL_OUT:-qeval-${SLURM_ARRAY_JOB_ID:-local}}"
QEVAL="${QEVAL:-./qeval}"
ARGS=(--quants "${QEVAL_QUANTS:-F16,Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q3_K_M,Q2_K}"
      --suite "${QEVAL_SUITE:-smoke}" --label "${QEVAL_LABEL:-slurm-${SLURM_ARRAY_JOB_ID:-local}}")
# shellcheck disable=SC2206  # QEVAL_EXTRA is split on purpose ("--limit 20 --text F")
ARGS+=(${QEVAL_EXTRA:-})
mkdir -p "$OUT"

if [ "${QEVAL_MERGE:-0}" = 1 ]; then
    "$QEVAL" merge "$OUT/results.db" "$OUT"/shard-*.db
    "$QEVAL" report --db "$OUT/results.db" --format html -o "$OUT/report.html"
    "$QEVAL" report --db "$OUT/results.db" --format table
    exit 0
fi

if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    I="$SLURM_ARRAY_TASK_ID"
    [ -n "${SLURM_CPUS_PER_TASK:-}" ] && ARGS+=(--threads "$SLURM_CPUS_PER_TASK")
    exec "$QEVAL" run "$MODEL" "${ARGS[@]}" \
        --shard "$I/$N" --db "$OUT/shard-$I.db"
fi

# Not inside an array task: submit the array and the merge that waits for it.
jid=$(sbatch --parsable --array=0-$((N - 1)) --export=ALL,QEVAL_SHARDS="$N",QEVAL_OUT="$OUT" "$0" "$MODEL")
sbatch --dependency=afterok:"$jid" --export=ALL,QEVAL_MERGE=1,QEVAL_OUT="$OUT" \
    --job-name=qeval-merge --array=0 "$0" "$MODEL"
echo "submitted shards $jid (0..$((N - 1))) and the merge; results in $OUT/"

#!/usr/bin/env bash
# Run the demo workflow through a real one-node SLURM with the SLURM executor plugin (no
# conda: no conda channel is reachable on CI machines), check with sacct that the jobs ran
# as SLURM jobs, then check that a failing job stops the run with its SLURM log, is retried,
# leaves no partial output, and that a rerun after the fix completes.
set -eEuo pipefail
cd "$(dirname "$0")/.."
# Any failing command (not only the checked ones) says where it failed and what SLURM saw,
# on stdout, so that a CI log shows why.
diagnose() {
    echo "slurm_demo.sh: line $1 failed (exit $2): $3"
    for log in logs/slurm_demo.txt "${work:-/nonexistent}/out.txt"; do
        [ -s "$log" ] && { echo "-- tail of $log"; tail -40 "$log"; }
    done
    echo "-- squeue"; squeue 2>&1 | tail -20 || true
    echo "-- sinfo"; sinfo 2>&1 || true
    echo "-- slurmctld.log"; tail -20 /var/log/slurm/slurmctld.log 2>&1 || true
}
trap 'diagnose "$LINENO" "$?" "$BASH_COMMAND"' ERR
SNAKEMAKE=.venv/bin/snakemake
LIMIT=${SLURM_DEMO_TIMEOUT:-3000}  # seconds; a hung status check must not hang CI

bash .ci/slurm_up.sh >/dev/null
mkdir -p logs

# The repository's SLURM profile, minus conda.
profile=$(mktemp -d)
grep -v '^software-deployment-method' profiles/slurm/config.yaml >"$profile/config.yaml"

count_jobs() {  # count_jobs START [STATE]: SLURM jobs since START (allocations only)
    sacct -n -X -S "$1" -o JobID,State --parsable2 | awk -F'|' -v s="${2:-}" 's == "" || $2 == s' | wc -l
}

echo "== demo workflow on SLURM"
start=$(date +%Y-%m-%dT%H:%M:%S); t0=$(date +%s)
# Grouped per-subject jobs must fit this node: cap them at its cores and most of its memory.
node_caps=(--cores "$(nproc)" --resources mem_mb=$(( $(free -m | awk '/Mem:/ {print $2}') / 2 )))
# The node has one fake GPU per core, so at most two training jobs run at once on a 2-core
# machine: train 5 epochs instead of the demo's 60 (CT/PET: 40) to keep that queue short
# (this run checks scheduling, not results; the demo's 2 tuning trials stay). The CT/PET
# experiment's own training section is overridden too (configfiles merge key by key).
# Denoising and motion correction are off for the same reason: the dwi jobs and their
# grouping stay the same, and make test runs the whole diffusion chain. The interpret jobs
# (one per run) compute integrated gradients with few steps only (make test covers the rest).
cat >"$profile/short_training.yaml" <<'YAML'
dwi: {denoise: {method: none}, motion: {enabled: false}}
training:
  {epochs: 5, batch_size: 4, patience: 5, adapt_batchnorm: true, tuning: {trials: 2}}
interpret: {attributions: [integrated_gradients], steps: 8}
experiments:
  hnc_petct:
    training: {epochs: 5, batch_size: 4, patience: 5, adapt_batchnorm: false}
  adhd_dti:
    interpret: {attributions: [integrated_gradients]}
YAML
timeout "$LIMIT" "$SNAKEMAKE" --profile "$profile" "${node_caps[@]}" --forceall \
    --configfile "$profile/short_training.yaml" \
    >logs/slurm_demo.txt 2>&1 || {
    tail -40 logs/slurm_demo.txt; echo "demo on SLURM failed"; exit 1; }
wall=$(( $(date +%s) - t0 ))
jobs=$(count_jobs "$start"); done_jobs=$(count_jobs "$start" COMPLETED)
steps=$(grep -o '[0-9]* of [0-9]* steps (100%) done' logs/slurm_demo.txt | tail -1 | cut -d' ' -f3)
echo "Snakemake jobs: $steps; SLURM jobs: $jobs (completed: $done_jobs); wall time: ${wall} s"
sacct -n -X -S "$start" -o JobID,Comment%60,State,ReqTRES%50 | sed 's/^/  /'
[ "$jobs" -gt 0 ] && [ "$jobs" -eq "$done_jobs" ] || { echo "not every job completed"; exit 1; }
# GPU rules (training) must have asked SLURM for a GPU.
gpu_less=$(sacct -n -X -S "$start" -o Comment%200,ReqTRES%200 --parsable2 \
    | awk -F'|' '$1 ~ /^rule_train/ && $2 !~ /gres\/gpu/' | wc -l)
[ "$gpu_less" -eq 0 ] || { echo "$gpu_less training job(s) ran without a GPU request"; exit 1; }
test -s results/adhd_dti/splits/fold-1.tsv
test -s results/adhd_dti/attribution.tsv

echo "== a failing job on SLURM"
work=$(mktemp -d)
cp -r resources/demo/demo_dwi "$work/bids"
rm "$work/bids/sub-002/dwi/sub-002_dwi.bvec"
cat >"$work/config.yaml" <<CONF
datasets:
  study: {bids_dir: $work/bids, label: diagnosis, covariates: [age, sex, site]}
experiments:
  dti: {dataset: study, inputs: [fa, md], target: diagnosis, task: binary, methods: [],
        splits: {folds: 2, p_threshold: 0.0}}
CONF
start=$(date +%Y-%m-%dT%H:%M:%S)
run_study() { timeout "$LIMIT" "$SNAKEMAKE" --profile "$profile" "${node_caps[@]}" --directory "$work" \
    --snakefile "$PWD/Snakefile" --configfile "$work/config.yaml" --replace-workflow-config \
    results/study/subjects.tsv >"$work/out.txt" 2>&1; }
if run_study; then echo "the broken dataset did not fail"; exit 1; fi
grep -q "sub-002_dwi.nii.gz: has no .bvec file" "$work"/logs/slurm/*/*/*.log \
    || { echo "the SLURM log lacks the error"; exit 1; }
grep -q "logs/slurm/" "$work/out.txt" || { echo "the message does not name the SLURM log"; exit 1; }
attempts=$(count_jobs "$start" FAILED)
[ "$attempts" -eq 2 ] || { echo "expected 1 try + 1 retry, got $attempts failed jobs"; exit 1; }
[ ! -e "$work/results/study/subjects.tsv" ] || { echo "partial output left behind"; exit 1; }
echo "failed as expected: $attempts attempts (retries: 1), SLURM log named, no partial output"
cp resources/demo/demo_dwi/sub-002/dwi/sub-002_dwi.bvec "$work/bids/sub-002/dwi/"
run_study || { tail -30 "$work/out.txt"; echo "rerun after the fix failed"; exit 1; }
echo "rerun after the fix completed"

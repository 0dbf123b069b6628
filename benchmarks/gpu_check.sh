#!/usr/bin/env bash
# The GPU check (issue 18): every method's paper-size training step on CUDA with bf16, with
# throughput, peak memory, the ratios to full fine-tuning and the loader's share of a step,
# then the loader against paper 1's model at paper size. Run on a machine with a GPU:
#     bash benchmarks/gpu_check.sh          (about 10 minutes on one H100)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this check needs a GPU')"
"$PY" -c "import torch; print(torch.cuda.get_device_name(0), 'torch', torch.__version__)"
"$PY" benchmarks/bench_methods.py --bf16 --batch 2 --steps 5

# The two commands of the README, plus the environment they both need.
.PHONY: env test demo gpu-check gpu-check-dry-run

env:
	scripts/setup_env.sh

# Unit and integration tests (CPU; the default CI run).
test: env
	. .venv/bin/activate && python -m pytest

# Main job: replay a bundled (generated, held-out) sequence through the
# perception node with the trained default model, inject camera faults
# partway, write BEV pictures + summary to outputs/demo.
demo: env
	. .venv/bin/activate && python -m sparsecomp_ros.demo --out outputs/demo

# On a machine with CUDA (no venv: its own python3 with a CUDA torch): the CUDA
# tests and every GPU benchmark, results in bench/results/*-gpu.json.
gpu-check:
	python3 scripts/gpu_check.py

# The same harness on a CPU with the smallest settings (checks the commands only).
gpu-check-dry-run: env
	. .venv/bin/activate && python scripts/gpu_check.py --dry-run

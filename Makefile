# The two commands of the README, plus the environment they both need.
.PHONY: env test demo

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

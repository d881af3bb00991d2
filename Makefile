# The two commands of the README, plus the environment they both need.
.PHONY: env test

env:
	scripts/setup_env.sh

# Unit and integration tests (CPU; the default CI run).
test: env
	. .venv/bin/activate && python -m pytest

# Shortcuts; each target is one command you can also type yourself.
PYTHON ?= python
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' reconciler/__init__.py)
# The tag the manifests (kustomize/base) and `restik run`'s --sidecar-image default use.
IMAGE ?= restik:$(VERSION)
BUILD_IMAGE ?= ../shared/tools/build-image.sh

.PHONY: test lint format bench mutate image image-builder

test:
	bash .ci/run

lint:
	ruff check . && ruff format --check .

format:
	ruff check --fix . && ruff format .

bench:
	$(PYTHON) bench/run.py --quick

# Mutation testing of the pure core (cosmic-ray, ~17 min of one core; not in `make test`):
# the score per module, non-zero exit below 90 %. Needs `pip install -e ".[test,mutate]"`.
mutate:
	$(PYTHON) bench/mutate.py

# Builds the Dockerfile with whichever builder works here (see image-builder), then runs
# `restik --version` in the image.
image:
	@builder=$$($(MAKE) -s image-builder); \
	echo "building $(IMAGE) with $$builder"; \
	case $$builder in \
	  docker|podman) $$builder build -t $(IMAGE) . && $$builder run --rm $(IMAGE) restik --version ;; \
	  buildah) buildah bud -t $(IMAGE) . ;; \
	  script) $(BUILD_IMAGE) -t $(IMAGE) . -- restik --version ;; \
	  *) echo "no image builder: install docker or podman" >&2; exit 1 ;; \
	esac

# Prints the first usable builder: a docker with a running daemon, the shared no-daemon build
# script (this project's CI machines), podman, buildah; "none" otherwise.
image-builder:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker; \
	elif [ -x "$(BUILD_IMAGE)" ]; then echo script; \
	elif command -v podman >/dev/null 2>&1; then echo podman; \
	elif command -v buildah >/dev/null 2>&1; then echo buildah; \
	else echo none; fi

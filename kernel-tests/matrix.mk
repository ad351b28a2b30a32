# Kernel matrix targets, included by the top-level Makefile (`-include kernel-tests/matrix.mk`).
# Kernels are downloaded once into $(BPFPOLICY_CACHE)/kernels (~/.cache/bpfpolicy/kernels);
# after that no network is needed.

KT_VENV      ?= .venv
KT_BPFPOLICY ?= $(KT_VENV)/bin/bpfpolicy
KT_PYTEST    ?= $(KT_VENV)/bin/pytest
# What to run: policy trees (compiled once per target kernel) and/or artifact directories.
KT_PATHS     ?= policies
KT_OUT       ?= out/kernel-test
# Tetragon's example policies that have behaviour checks (bpfpolicy/matrix/data/tetragon-corpus.yaml),
# when the corpus is checked out beside the repository; `make kernel-matrix` runs them too.
KT_CORPUS    ?= ../shared/corpus/tetragon
KT_CORPUS_FILES = $(if $(wildcard $(KT_CORPUS)),$(shell $(KT_VENV)/bin/python -m bpfpolicy.matrix.corpus --files --corpus $(KT_CORPUS)))
# NetworkPolicy needs the endpoint inventory of the host config the demo uses.
KT_ARGS      ?= $(if $(wildcard examples/host-config.yaml),--inventory examples/host-config.yaml)

# Guest architecture: amd64 (default; + the host member) or arm64 (qemu-system-aarch64 -M virt,
# TCG; needs `scripts/setup-matrix-dev.sh arm64`, which the arm64 targets run).
ARCH         ?= amd64

.PHONY: kernel-matrix kernel-matrix-arm64 kernel-smoke kernel-fetch kernel-bundle kernel-vagrant kernel-corpus-count

## kernel-matrix: Debian 5.10, 6.1, 6.12, 7.x under QEMU + the host kernel, on the
## fixture programs (tests/matrix/test_matrix.py) and on $(KT_PATHS). ARCH=arm64: the
## same four kernels for arm64 (no host member).
ifeq ($(ARCH),arm64)
kernel-matrix: kernel-matrix-arm64
else
kernel-matrix:
	bash scripts/setup.sh
	BPFPOLICY_KERNEL_TEST_KERNELS=5.10,6.1,6.12,7 $(KT_PYTEST) -q -m vm tests/matrix/test_matrix.py
	$(KT_BPFPOLICY) kernel-test --kernels 5.10,6.1,6.12,7,host --out $(KT_OUT) $(KT_ARGS) $(KT_PATHS) $(KT_CORPUS_FILES)
endif

## kernel-corpus-count: how many Tetragon example policies validate, compile for 6.12 and behave in
## its guest (bpfpolicy/matrix/corpus.py; boots 6.12 once).
kernel-corpus-count:
	$(KT_VENV)/bin/python -m bpfpolicy.matrix.corpus --corpus $(KT_CORPUS) --kernel 6.12

## kernel-matrix-arm64: the arm64 fixture test (6.12) and $(KT_PATHS) on the four arm64 kernels.
kernel-matrix-arm64:
	bash scripts/setup.sh
	bash scripts/setup-matrix-dev.sh arm64
	BPFPOLICY_KERNEL_TEST_ARM64=1 $(KT_PYTEST) -q -m vm tests/matrix/test_matrix_arm64.py
	$(KT_BPFPOLICY) kernel-test --arch arm64 --kernels 5.10,6.1,6.12,7 --out $(KT_OUT)-arm64 $(KT_ARGS) $(KT_PATHS)

## kernel-smoke: the CI smoke — fixture programs on Debian 6.12 + host (pytest), then
## $(KT_PATHS) on 6.12 + host.
kernel-smoke:
	bash scripts/setup.sh
	$(KT_PYTEST) -q -m vm tests/matrix/test_matrix.py
	$(KT_BPFPOLICY) kernel-test --kernels 6.12,host --out $(KT_OUT)-smoke $(KT_ARGS) $(KT_PATHS)

## kernel-fetch: download (or refresh) the four Debian kernels of $(ARCH) into the cache.
kernel-fetch:
	$(KT_VENV)/bin/python -c 'from bpfpolicy.matrix.kernels import KERNELS, fetch; [print(k.spec.name, k.release) for k in (fetch(s.for_arch("$(ARCH)")) for s in KERNELS.values())]'

## kernel-bundle: runner + fixture and $(KT_PATHS) artifacts per Debian kernel in
## out/kernel-bundle, for the Vagrant VMs (the Vagrantfile runs this before `up`/`provision`).
KT_BUNDLE ?= out/kernel-bundle
kernel-bundle:  # needs what scripts/setup.sh installs (not run here: it may need root)
	rm -rf $(KT_BUNDLE) out/kernel-fixtures
	$(KT_VENV)/bin/python tests/matrix/fixtures/kt_fixtures.py out/kernel-fixtures --without broken_xdp
	$(KT_BPFPOLICY) kernel-test --bundle $(KT_BUNDLE) --kernels 5.10,6.1,6.12,7 $(KT_ARGS) out/kernel-fixtures/artifacts $(KT_PATHS)

## kernel-vagrant: one `vagrant up k61` of the locally built box under TCG (libvirt driver
## qemu), its bundle results checked (tests/matrix/test_matrix_vagrant.py; ~9 min). The
## box: `scripts/build-vagrant-box.sh 6.1` (needs `scripts/setup-matrix-dev.sh vagrant`).
kernel-vagrant:
	BPFPOLICY_VAGRANT_TEST=1 $(KT_PYTEST) -q -m vm tests/matrix/test_matrix_vagrant.py

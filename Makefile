# SPDX-License-Identifier: GPL-2.0
#
# virtio-scsi-rs: a Rust virtio-scsi guest driver, built out of tree.
#
#   make            build virtio_scsi_rs.ko (against the cached debug kernel,
#                   built first if needed, or against KDIR=<Rust-enabled 6.12 tree>)
#   make run        boot a guest with a few disks on the Rust driver
#   make check      host unit tests, lint, module build, install and DKMS, guest tests
#   make install    install the module as an administrator does (see below)
#   make dkms-source  the module's sources and dkms.conf, for `dkms add`
#   make htmldocs   Documentation/ as HTML (with Sphinx, if installed)
#
# Everything is installed by scripts/install-deps.sh and cached under
# $(VSCSI_CACHE) (default ~/.cache/virtio-scsi-rs): kernels, Python venv.

# Kbuild reads the Kbuild file, not this one, when it descends here.
ifneq ($(KERNELRELEASE),)
include $(src)/Kbuild
else

CACHE     ?= $(or $(VSCSI_CACHE),$(HOME)/.cache/virtio-scsi-rs)
export VSCSI_CACHE := $(CACHE)
VENV      := $(CACHE)/venv
# Host-side crates (tools/) build in the cache, so a fresh clone reuses their dependencies.
export CARGO_TARGET_DIR := $(CACHE)/cargo-target
VHOST_USER_SCSI := $(CARGO_TARGET_DIR)/release/vhost-user-scsi
PYTHON    := $(VENV)/bin/python
BUILD     := $(CURDIR)/build
MODDIR    := drivers/scsi/virtio_scsi_rs
# One line, the package version: the module's modinfo `version` and DKMS's PACKAGE_VERSION.
VERSION   := $(shell cat VERSION)
# What building the module needs (a copy of these builds as the checkout does).
MODULE_SRCS := Kbuild VERSION drivers include
MODULE    := $(MODDIR)/virtio_scsi_rs.ko
KUNIT_MODULE := $(MODDIR)/kunit/virtio_scsi_rs_kunit.ko
# The virtio-rng sample on the driver's abstractions (built when the kernel has hw_random).
SAMPLE_MODULE := samples/virtio_rng_rs/virtio_rng_rs.ko
KMAKE_FLAGS := LLVM=1
PYTEST_ARGS ?=
DRIVER    ?= rust

# KDIR given on the command line wins; otherwise the cached debug kernel,
# whose path scripts/build-kernel.sh records in build/kdir-debug.
ifneq ($(KDIR),)
kdir := $(KDIR)
kdir_dep :=
else
kdir = $(shell cat $(BUILD)/kdir-debug)
kdir_dep := kernel-debug
endif

RUST_SRCS := $(filter-out %/bindings_generated.rs,$(shell find $(MODDIR) samples tools -name '*.rs' -not -path '*/target/*'))

.PHONY: all deps kernel-debug kernel-perf module rustdoc htmldocs install install-config install-test dkms-source clippy fmt fmt-check unit \
	initramfs distro vhost-user-scsi guest-test check run bench bench-module profile insn-profile clean FORCE

all: module

deps:
	@scripts/install-deps.sh

kernel-debug kernel-perf: kernel-%: deps
	@mkdir -p $(BUILD)
	@scripts/build-kernel.sh $* > $(BUILD)/kdir-$*.tmp
	@mv $(BUILD)/kdir-$*.tmp $(BUILD)/kdir-$*

module: $(kdir_dep)
	$(MAKE) -C $(kdir) M=$(CURDIR) $(KMAKE_FLAGS)

# Install the way an administrator does, into INSTALL_MOD_PATH (default /, or a guest image's
# root): the module under /lib/modules/<release>/updates/ with depmod run by the kernel's
# modules_install, /etc/modprobe.d/virtio_scsi_rs.conf (the Rust driver binds virtio device id
# 8; the C driver stays installed) and /etc/dracut.conf.d/virtio_scsi_rs.conf (dracut puts the
# module in the initramfs). The KUnit module and the sample are not installed.
INSTALL_MOD_PATH ?=
install: $(kdir_dep) install-config
	$(MAKE) -C $(kdir) M=$(CURDIR) $(KMAKE_FLAGS) VSCSI_KUNIT=n VSCSI_SAMPLES=n
	$(MAKE) -C $(kdir) M=$(CURDIR) $(KMAKE_FLAGS) VSCSI_KUNIT=n VSCSI_SAMPLES=n modules_install \
		INSTALL_MOD_PATH=$(INSTALL_MOD_PATH)

# The two configuration files alone, for a module that DKMS installs.
install-config:
	install -D -m 0644 scripts/install/modprobe.d-virtio_scsi_rs.conf \
		$(INSTALL_MOD_PATH)/etc/modprobe.d/virtio_scsi_rs.conf
	install -D -m 0644 scripts/install/dracut.conf.d-virtio_scsi_rs.conf \
		$(INSTALL_MOD_PATH)/etc/dracut.conf.d/virtio_scsi_rs.conf

# The source tree DKMS copies with `dkms add $(DKMS_SRC)`: dkms.conf and what the module build
# needs, nothing else of the checkout (no build products, tools or tests).
DKMS_SRC := $(BUILD)/dkms-source
dkms-source:
	rm -rf $(DKMS_SRC) && mkdir -p $(DKMS_SRC)
	git ls-files -co --exclude-standard dkms.conf Makefile $(MODULE_SRCS) | cpio -pdm --quiet $(DKMS_SRC)
	@echo "dkms add $(DKMS_SRC)  # virtio-scsi-rs/$(VERSION)"

# make install and DKMS against the kernel in $(kdir), into temporary trees: where the files
# land, which driver the blacklist makes modprobe pick, and that DKMS builds the same module.
install-test: $(kdir_dep)
	scripts/test-install.sh $(kdir)

# API documentation of the module's crate (abstractions, driver, protocol) and of the sample's,
# every warning an error; HTML under build/rustdoc/.
rustdoc: module
	scripts/rustdoc.sh $(kdir) $(BUILD)/rustdoc

# Documentation/ (reStructuredText, kernel style) as HTML under build/htmldocs/, with Sphinx
# where it is installed; without it the target says so and succeeds (the files read as text).
SPHINXBUILD ?= $(shell command -v sphinx-build 2>/dev/null)
htmldocs:
ifeq ($(SPHINXBUILD),)
	@echo "htmldocs: sphinx-build not found, skipped (Documentation/*.rst read as plain text)"
else
	$(SPHINXBUILD) -b html -q -W Documentation $(BUILD)/htmldocs
endif

# Lint build: Clippy with the kernel's lint set, every warning an error. The
# resulting .ko is the same as a plain build's. The vhost-user-scsi back end
# gets Clippy's default set, every warning an error (protocol.rs, which
# tools/vscsi-protocol also builds, is linted by the kernel build).
clippy: $(kdir_dep)
	$(MAKE) -C $(kdir) M=$(CURDIR) $(KMAKE_FLAGS) CLIPPY=1 W_ERROR=1
	cargo clippy --locked --manifest-path tools/Cargo.toml -p vhost-user-scsi --all-targets -- -D warnings

fmt-check: $(kdir_dep)
	rustfmt --check --edition 2021 --config-path $(kdir)/source/.rustfmt.toml $(RUST_SRCS)

fmt: $(kdir_dep)
	rustfmt --edition 2021 --config-path $(kdir)/source/.rustfmt.toml $(RUST_SRCS)

# Host unit tests: the protocol layer and the vhost-user-scsi back end under cargo, the harness
# under pytest.
unit: deps
	cargo test --locked --manifest-path tools/Cargo.toml
	cd tests && $(PYTHON) -m pytest host $(PYTEST_ARGS)

# The C virtio-rng driver (the sample's baseline) and the sample where the kernel has hw_random.
initramfs: module
	scripts/mkinitramfs.sh $(BUILD)/initramfs-debug.cpio \
		$(kdir)/drivers/scsi/virtio_scsi.ko $(MODULE) $(wildcard $(KUNIT_MODULE)) \
		$(wildcard $(kdir)/drivers/char/hw_random/virtio-rng.ko $(SAMPLE_MODULE))

# The distro guest's image (Debian bookworm, systemd, dracut) for this kernel and module: the
# debootstrapped base is cached under $(VSCSI_CACHE)/distro/, the image is assembled in
# build/distro/ and kept while kernel, module and recipe are unchanged. See scripts/distro/.
distro: module
	scripts/distro/mkimage.sh $(kdir) $(BUILD)/distro

# Guest tests run on GUEST_JOBS pytest-xdist workers (one guest each at a time), a guest group
# (tests sharing guests) on one worker, the longest groups first; GUEST_JOBS=0 runs them in this
# process. Three on two cores: many tests wait on the guest (timeouts, a back end), and the vCPU
# limit of tests/harness/cpus.py keeps the busy ones from crowding the cores. See
# Documentation/testing.rst.
GUEST_JOBS ?= 3
guest_xdist = $(if $(filter 0,$(GUEST_JOBS)),,-n $(GUEST_JOBS) --dist loadgroup --no-loadscope-reorder)
# The vhost-user-scsi back end the guest tests put behind vhost-user-scsi-pci controllers.
vhost-user-scsi: deps
	cargo build --locked --release --manifest-path tools/Cargo.toml -p vhost-user-scsi

guest-test: initramfs distro vhost-user-scsi
	cd tests && VSCSI_KERNEL=$(kdir)/arch/x86/boot/bzImage \
		VSCSI_INITRAMFS=$(BUILD)/initramfs-debug.cpio \
		VSCSI_DISTRO=$(BUILD)/distro \
		VSCSI_VHOST_USER_SCSI=$(VHOST_USER_SCSI) \
		$(PYTHON) -m pytest guest $(guest_xdist) $(PYTEST_ARGS)

check: deps
	$(MAKE) unit
	$(MAKE) fmt-check
	$(MAKE) clippy
	$(MAKE) install-test
	$(MAKE) rustdoc KMAKE_FLAGS="LLVM=1 CLIPPY=1 W_ERROR=1"
	$(MAKE) guest-test KMAKE_FLAGS="LLVM=1 CLIPPY=1 W_ERROR=1"

# Benchmarks on the perf kernel: the module is built from a copy of the
# sources (out-of-tree objects live beside them), results go under
# build/bench/<timestamp>/; runs worth keeping are copied to tests/bench-results/<date>/
# (Documentation/benchmarks.rst). BENCH_ARGS passes options to tests/bench.py.
BENCH_SRC := $(BUILD)/bench-src
BENCH_ARGS ?=
# The perf guests' initramfs: both drivers and virtio-blk (bench, insn-profile).
PERF_INITRAMFS = scripts/mkinitramfs.sh $(BUILD)/initramfs-perf.cpio \
	$$(cat $(BUILD)/kdir-perf)/drivers/scsi/virtio_scsi.ko \
	$$(cat $(BUILD)/kdir-perf)/drivers/block/virtio_blk.ko $(BENCH_SRC)/$(MODULE)
bench-module: kernel-perf
	rm -rf $(BENCH_SRC) && mkdir -p $(BENCH_SRC)
	git ls-files -co --exclude-standard $(MODULE_SRCS) | cpio -pdm --quiet $(BENCH_SRC)
	$(MAKE) -C $$(cat $(BUILD)/kdir-perf) M=$(BENCH_SRC) $(KMAKE_FLAGS) VSCSI_SAMPLES=n

bench: bench-module vhost-user-scsi
	$(PERF_INITRAMFS)
	VSCSI_VHOST_USER_SCSI=$(VHOST_USER_SCSI) $(PYTHON) tests/bench.py --kernel $$(cat $(BUILD)/kdir-perf)/arch/x86/boot/bzImage \
		--initrd $(BUILD)/initramfs-perf.cpio --out $(BUILD)/bench $(BENCH_ARGS)

# A guest profile (perf in the guest, cpu-clock sampling) of both drivers'
# 4k random-read path on the perf kernel; reports under build/profile/ (kept ones in
# tests/bench-results/<date>/profile/). PROFILE_ARGS=--icount: the guest's clock counts
# instructions, so the samples fall per instruction (where the instructions per I/O go); as
# with any cpu-clock profile, samples taken with interrupts off land where they are enabled
# again (the queue locks' unlock), and idle time (the halt) is to be left out of the shares.
PROFILE_ARGS ?=
profile: bench-module
	VSCSI_EXTRA_TOOLS=/usr/bin/perf scripts/mkinitramfs.sh $(BUILD)/initramfs-profile.cpio \
		$$(cat $(BUILD)/kdir-perf)/drivers/scsi/virtio_scsi.ko $(BENCH_SRC)/$(MODULE)
	$(PYTHON) tests/profile.py --kernel $$(cat $(BUILD)/kdir-perf)/arch/x86/boot/bzImage \
		--initrd $(BUILD)/initramfs-profile.cpio --out $(BUILD)/profile $(PROFILE_ARGS)

# Guest instructions per I/O, per function, of both drivers in one one-vCPU icount guest:
# every executed instruction counted by a QEMU TCG plugin (tests/plugins/insn_count.c), the
# counts symbolised by tests/insn_profile.py; reports under build/insn-profile/. INSN_ARGS passes
# options (--fio, --ios; --annotate to read a function of a run).
INSN_PLUGIN := $(BUILD)/insn_count.so
INSN_ARGS ?=
$(INSN_PLUGIN): tests/plugins/insn_count.c
	@mkdir -p $(BUILD)
	gcc -O2 -Wall -Wextra -Werror -shared -fPIC -fvisibility=hidden -o $@ $< -lpthread

insn-profile: bench-module $(INSN_PLUGIN)
	$(PERF_INITRAMFS)
	$(PYTHON) tests/insn_profile.py --kernel $$(cat $(BUILD)/kdir-perf)/arch/x86/boot/bzImage \
		--initrd $(BUILD)/initramfs-perf.cpio --plugin $(INSN_PLUGIN) --out $(BUILD)/insn-profile $(INSN_ARGS)

# DISTRO=1: the distro guest, to a login prompt on the console (root, no password).
DISTRO ?=
ifeq ($(DISTRO),1)
run: distro
	$(PYTHON) tests/run_guest.py --distro $(BUILD)/distro --driver $(DRIVER)
else
run: initramfs
	$(PYTHON) tests/run_guest.py --kernel $(kdir)/arch/x86/boot/bzImage \
		--initrd $(BUILD)/initramfs-debug.cpio --driver $(DRIVER)
endif

clean:
	@if [ -n "$(KDIR)" ] || [ -f $(BUILD)/kdir-debug ]; then \
		$(MAKE) -C $(kdir) M=$(CURDIR) clean; fi
	rm -rf $(BUILD) tools/target

endif

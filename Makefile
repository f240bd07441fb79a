# slate: `make demo` and `make test` do everything on a fresh Debian machine.
SHELL := /bin/bash
GO ?= go
export CGO_ENABLED := 0
BUILD := build
SLATE := $(BUILD)/slate
REFERENCE := $(BUILD)/reference
# The reference matrix: images as a user's debootstrap leaves them
# (qemu-tests/reference/variants), each booted and upgraded across by the suite.
MATRIX := $(BUILD)/matrix
MATRIX_IMAGES := bookworm-generic bookworm-cloud trixie
DEMO_DISK := $(BUILD)/demo.raw
DEMO_NEXT := $(BUILD)/demo-2.oci
DEMO_KEY := $(BUILD)/demo.key
DEMO_EXT := $(BUILD)/demo-tools.oci
# Stripped: the binary is also the agent in every node image.
GOFLAGS_BUILD := -trimpath -ldflags=-s\ -w

# Debian packages the tests and the demo need.
DEB_PACKAGES := squashfs-tools-ng squashfs-tools cryptsetup-bin qemu-system-x86 qemu-utils ovmf \
	debootstrap gdisk fdisk dosfstools mtools cpio zstd xz-utils e2fsprogs genisoimage umoci \
	sbsigntool systemd-boot-efi binutils openssl

.PHONY: all slate deps unit test qemu-test bench reference-image reference-matrix init-binary demo run clean vet

all: slate

slate:
	@mkdir -p $(BUILD)
	$(GO) build $(GOFLAGS_BUILD) -o $(SLATE) ./cmd/slate

# Installs the Debian packages that are missing (needs root, as CI is).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(GO) mod download

# Fast tests: no QEMU, no reference image. Under a minute.
unit:
	$(GO) test -short -count=1 ./...
	$(GO) test -run '^$$' -fuzz=FuzzParse -fuzztime=10s ./boot/nodeconfig

vet:
	$(GO) vet ./...

# Regenerates the embedded init after a change under cmd/slate-init or initramfs/init.
init-binary:
	$(GO) generate ./initramfs/initbin

reference-image:
	@mkdir -p $(BUILD)
	bash qemu-tests/reference/build.sh $(REFERENCE)

reference-matrix:
	@mkdir -p $(MATRIX)
	for v in $(MATRIX_IMAGES); do bash qemu-tests/reference/build.sh -v $$v $(MATRIX)/$$v || exit 1; done

# Every test, the QEMU suite included. SLATE_REQUIRE_QEMU and SLATE_REQUIRE_TOOLS
# make a test that lacks QEMU, a tool or root fail instead of skipping
# (vm/vmtest, internal/testtool): make test must not pass by skipping.
test: deps reference-image reference-matrix
	$(GO) vet ./...
	SLATE_REFERENCE=$(abspath $(REFERENCE)) SLATE_MATRIX=$(abspath $(MATRIX)) SLATE_REQUIRE_QEMU=1 SLATE_REQUIRE_TOOLS=1 $(GO) test -count=1 -timeout 80m ./...

# Build timings on the reference image, and the upgrade's root write against a plain copy.
bench: deps reference-image
	SLATE_REFERENCE=$(abspath $(REFERENCE)) $(GO) test -run '^$$' -bench . -benchtime 1x ./builder/
	$(GO) test -run '^$$' -bench RootWrite -benchtime 5x ./agent/upgrade/

# The demo image trusts the demo key's public half (baked into its root):
# its node accepts only artifacts that key signed.
$(DEMO_DISK): slate reference-image $(DEMO_KEY)
	$(SLATE) build --source oci:$(REFERENCE) --output $(DEMO_DISK) --version demo --update-key $(DEMO_KEY).pub

# The key that signs the demo's artifact.
$(DEMO_KEY): | slate
	$(SLATE) keygen $(DEMO_KEY)

# The version the demo node upgrades to: the same image, a new version,
# trusting the same key, signed by it.
$(DEMO_NEXT): slate reference-image $(DEMO_KEY)
	$(SLATE) build --source oci:$(REFERENCE) --artifact $(DEMO_NEXT) --version demo-2 --update-key $(DEMO_KEY).pub
	$(SLATE) sign --key $(DEMO_KEY) oci:$(DEMO_NEXT)

# A system extension for the demo node's config to name, signed by the demo key.
$(DEMO_EXT): slate reference-image $(DEMO_KEY)
	$(SLATE) sysext build --source qemu-tests/cmd/demo/extension --name demo-tools --version 1 --for oci:$(REFERENCE) --artifact $(DEMO_EXT)
	$(SLATE) sign --key $(DEMO_KEY) oci:$(DEMO_EXT)

demo: deps $(DEMO_DISK) $(DEMO_NEXT) $(DEMO_EXT)
	$(GO) run ./qemu-tests/cmd/demo --disk $(DEMO_DISK) --artifact $(DEMO_NEXT) --extension $(DEMO_EXT)

run: deps $(DEMO_DISK)
	$(SLATE) run $(DEMO_DISK)

clean:
	rm -rf $(BUILD)

// Package testtool is how a test says what it needs from the machine: a
// program (tar2sqfs, sgdisk, veritysetup, mkfs.ext4...) or root. On a bare
// machine (make unit) a test that lacks it skips; where everything must run
// (make test and CI set SLATE_REQUIRE_TOOLS=1) it fails instead, naming
// the Debian package to install: a suite must not pass by skipping.
package testtool

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Env makes a missing tool fail the test rather than skip it.
// SLATE_REQUIRE_QEMU (which the QEMU suite reads) counts as well.
const Env = "SLATE_REQUIRE_TOOLS"

// Required says whether what a test needs must be there.
func Required() bool {
	return os.Getenv(Env) != "" || os.Getenv("SLATE_REQUIRE_QEMU") != ""
}

// packages are the Debian packages of the tools the tests use (make deps
// installs them).
var packages = map[string]string{
	"tar2sqfs": "squashfs-tools-ng", "sqfs2tar": "squashfs-tools-ng",
	"mksquashfs": "squashfs-tools", "unsquashfs": "squashfs-tools",
	"sgdisk": "gdisk", "sfdisk": "fdisk",
	"veritysetup": "cryptsetup-bin",
	"mkfs.ext4":   "e2fsprogs", "mke2fs": "e2fsprogs", "e2fsck": "e2fsprogs",
	"mkfs.vfat": "dosfstools", "fsck.fat": "dosfstools",
	"mcopy": "mtools", "mdir": "mtools",
	"cpio": "cpio", "zstd": "zstd", "xz": "xz-utils",
	"umoci": "umoci", "openssl": "openssl",
	"genisoimage": "genisoimage", "isoinfo": "genisoimage",
	"losetup": "mount", "partx": "util-linux",
	"qemu-img": "qemu-utils", "qemu-system-x86_64": "qemu-system-x86",
	"sbsign": "sbsigntool", "sbverify": "sbsigntool",
	"objdump": "binutils", "objcopy": "binutils",
	StubPath: "systemd-boot-efi", SystemdBootPath: "systemd-boot-efi",
}

// Files that packages install, which tests use as they are (File).
const (
	StubPath        = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
	SystemdBootPath = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
)

// Unavailable skips tb with why, or fails it when Required.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		tb.Fatalf("%s (%s is set: make test must not pass by skipping)", msg, Env)
	}
	tb.Skip(msg)
}

// Need requires every tool in PATH.
func Need(tb testing.TB, tools ...string) {
	tb.Helper()
	for _, t := range tools {
		Path(tb, t)
	}
}

// Path requires tool in PATH and returns its path.
func Path(tb testing.TB, tool string) string {
	tb.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		Unavailable(tb, "%s is not installed%s", tool, hint(tool))
	}
	return p
}

// Any requires one of tools (alternatives) and returns the first found.
func Any(tb testing.TB, tools ...string) string {
	tb.Helper()
	for _, t := range tools {
		if _, err := exec.LookPath(t); err == nil {
			return t
		}
	}
	Unavailable(tb, "none of %s is installed%s", strings.Join(tools, ", "), hint(tools[0]))
	return ""
}

// Have says whether tool is in PATH, for a test that does more with it
// than without (an extra case): when Required, a missing tool fails it.
func Have(tb testing.TB, tool string) bool {
	tb.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if Required() {
			tb.Errorf("%s is not installed%s (%s is set)", tool, hint(tool), Env)
		} else {
			tb.Logf("%s is not installed%s: its cases are left out", tool, hint(tool))
		}
		return false
	}
	return true
}

// File requires a file that a package installs (StubPath...) and
// returns its path.
func File(tb testing.TB, path string) string {
	tb.Helper()
	if _, err := os.Stat(path); err != nil {
		Unavailable(tb, "%s is missing%s", path, hint(path))
	}
	return path
}

// Root requires the test to run as root (what make test does, as CI).
func Root(tb testing.TB, why string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Unavailable(tb, "needs root: %s", why)
	}
}

func hint(tool string) string {
	if p := packages[tool]; p != "" {
		return " (Debian: apt-get install " + p + ", or make deps)"
	}
	return " (make deps)"
}

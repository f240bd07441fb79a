package boot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
)

// SystemdBootEFI is where `bootctl install` puts systemd-boot and where the
// firmware boot entry it creates points. slate's builder writes only
// FallbackEFI (firmware boots that without an entry of its own); an ESP that
// also has this file (an image installed by other means, a firmware entry
// made by hand) has it updated with the fallback.
const SystemdBootEFI = "EFI/systemd/systemd-bootx64.efi"

// LoaderPaths are the ESP paths of systemd-boot that an upgrade keeps
// current and `slate status` reports, fallback first.
var LoaderPaths = []string{FallbackEFI, SystemdBootEFI}

// MaxSystemdBootSize bounds a systemd-boot binary: the artifact's layer and
// the ESP's file are read whole into memory to find their version.
// systemd-boot is 100-150 KiB (x86-64, systemd 252 to 257).
const MaxSystemdBootSize = 8 << 20

// The marker systemd's EFI binaries embed, in their .sdmagic section:
//
//	#### LoaderInfo: systemd-boot 252.39-1~deb12u2 ####
//
// (src/boot/efi/boot.c; systemd-stub and addons say systemd-stub,
// systemd-addon). bootctl reads the same string to decide an update.
const (
	loaderInfoStart = "#### LoaderInfo: "
	loaderInfoEnd   = " ####"
	// loaderInfoMax bounds the text between the markers.
	loaderInfoMax = 256
)

// ErrNoLoaderInfo: the binary has no LoaderInfo marker; it is not one of
// systemd's EFI binaries (shim, GRUB, a fake).
var ErrNoLoaderInfo = errors.New("no LoaderInfo marker: not a systemd EFI binary")

// ParseLoaderInfo finds the first LoaderInfo marker in an EFI binary and
// returns what it names: product "systemd-boot", version "252.39-1~deb12u2".
func ParseLoaderInfo(b []byte) (product, version string, err error) {
	i := bytes.Index(b, []byte(loaderInfoStart))
	if i < 0 {
		return "", "", ErrNoLoaderInfo
	}
	rest := b[i+len(loaderInfoStart):]
	j := bytes.Index(rest[:min(len(rest), loaderInfoMax+len(loaderInfoEnd))], []byte(loaderInfoEnd))
	if j < 0 {
		return "", "", fmt.Errorf("LoaderInfo marker without its end (%q) in the next %d bytes", loaderInfoEnd, loaderInfoMax)
	}
	info := string(rest[:j])
	product, version, ok := strings.Cut(info, " ")
	switch {
	case !ok || product == "" || version == "":
		return "", "", fmt.Errorf("LoaderInfo %q is not \"<product> <version>\"", info)
	case !printable(info):
		return "", "", fmt.Errorf("LoaderInfo %q has a character that is not printable ASCII", info)
	case strings.Contains(version, " "):
		return "", "", fmt.Errorf("LoaderInfo %q: the version has a space", info)
	}
	return product, version, nil
}

// SystemdBootVersion is the version of the systemd-boot binary b, from its
// LoaderInfo marker. It fails for anything else: no marker, or another
// product (systemd-stub, a UKI).
func SystemdBootVersion(b []byte) (string, error) {
	product, version, err := ParseLoaderInfo(b)
	if err != nil {
		return "", err
	}
	if product != "systemd-boot" {
		return "", fmt.Errorf("LoaderInfo names %s %s, not systemd-boot", product, version)
	}
	return version, nil
}

// SystemdBootFileVersion is SystemdBootVersion of a file, which must not be
// larger than MaxSystemdBootSize.
func SystemdBootFileVersion(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Size() > MaxSystemdBootSize {
		return "", fmt.Errorf("%s: %d bytes, more than a systemd-boot (at most %d)", path, fi.Size(), MaxSystemdBootSize)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	v, err := SystemdBootVersion(b)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// CompareVersions orders two loader versions as dpkg orders Debian versions
// (verrevcmp over the whole string): runs of digits compare as numbers (252
// < 257, 9 < 39), other characters by ASCII with letters before the rest and
// '~' before everything, even the end. So 252.39-1~deb12u2 < 257.9-1~deb13u1,
// 258~rc1 < 258 < 258.1, 257.9 < 257.9-1. It returns -1, 0 or +1.
// systemd's own strverscmp_improved, which bootctl uses, agrees on the
// versions distributions ship.
func CompareVersions(a, b string) int {
	for a != "" || b != "" {
		// Non-digit parts, character by character.
		for (a != "" && !isDigit(a[0])) || (b != "" && !isDigit(b[0])) {
			ac, bc := charOrder(a), charOrder(b)
			if ac != bc {
				return sign(ac - bc)
			}
			a, b = a[1:], b[1:] // both non-digits: equal orders other than 0
		}
		// Digit runs, as numbers of any length.
		a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		da, db := digits(a), digits(b)
		if da != db {
			return sign(da - db)
		}
		if c := strings.Compare(a[:da], b[:db]); c != 0 {
			return c
		}
		a, b = a[da:], b[db:]
	}
	return 0
}

// charOrder is dpkg's order(): the end and digits 0, '~' below that,
// letters by ASCII, anything else after the letters.
func charOrder(s string) int {
	switch {
	case s == "" || isDigit(s[0]):
		return 0
	case s[0] == '~':
		return -1
	case s[0] >= 'A' && s[0] <= 'Z' || s[0] >= 'a' && s[0] <= 'z':
		return int(s[0])
	}
	return int(s[0]) + 256
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func digits(s string) int {
	n := 0
	for n < len(s) && isDigit(s[n]) {
		n++
	}
	return n
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

package boot

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeLoader is an EFI binary as far as the version goes: bytes around a
// LoaderInfo marker, as in systemd-boot's .sdmagic section.
func fakeLoader(info string) []byte {
	b := append([]byte("MZ\x90\x00"), bytes.Repeat([]byte{0, 0xff, 'x'}, 1000)...)
	b = append(b, "#### LoaderInfo: "+info+" ####\x00"...)
	return append(b, bytes.Repeat([]byte{0xcc}, 500)...)
}

func TestSystemdBootVersion(t *testing.T) {
	for _, c := range []struct {
		name string
		blob []byte
		want string
		err  string
	}{
		{"bookworm", fakeLoader("systemd-boot 252.39-1~deb12u2"), "252.39-1~deb12u2", ""},
		{"trixie", fakeLoader("systemd-boot 257.9-1~deb13u1"), "257.9-1~deb13u1", ""},
		{"upstream", fakeLoader("systemd-boot 258"), "258", ""},
		{"first marker wins", append(fakeLoader("systemd-boot 255.4"), fakeLoader("systemd-boot 999")...), "255.4", ""},
		{"no marker", []byte("MZ fake systemd-boot\n"), "", "no LoaderInfo marker"},
		{"stub", fakeLoader("systemd-stub 257.9"), "", "names systemd-stub 257.9, not systemd-boot"},
		{"no version", fakeLoader("systemd-boot"), "", "is not \"<product> <version>\""},
		{"no end", []byte("#### LoaderInfo: systemd-boot 257" + strings.Repeat("x", 300)), "", "without its end"},
		{"control character", fakeLoader("systemd-boot 257\n9"), "", "not printable"},
		{"space in version", fakeLoader("systemd-boot 257 9"), "", "the version has a space"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := SystemdBootVersion(c.blob)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %q, %v; want error %q", got, err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
	if _, err := SystemdBootVersion(nil); !errors.Is(err, ErrNoLoaderInfo) {
		t.Errorf("empty: %v", err)
	}
}

func TestSystemdBootFileVersion(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "systemd-bootx64.efi")
	os.WriteFile(p, fakeLoader("systemd-boot 257.9-1~deb13u1"), 0o644)
	if v, err := SystemdBootFileVersion(p); err != nil || v != "257.9-1~deb13u1" {
		t.Errorf("got %q, %v", v, err)
	}
	big := filepath.Join(dir, "big.efi")
	os.WriteFile(big, nil, 0o644)
	os.Truncate(big, MaxSystemdBootSize+1)
	if _, err := SystemdBootFileVersion(big); err == nil || !strings.Contains(err.Error(), "more than a systemd-boot") {
		t.Errorf("big: %v", err)
	}
	if _, err := SystemdBootFileVersion(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: no error")
	}
}

// TestRealSystemdBoot reads the version of the machine's systemd-boot, when
// there is one (Debian: systemd-boot-efi), the way the builder does.
func TestRealSystemdBoot(t *testing.T) {
	const p = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no %s", p)
	}
	v, err := SystemdBootFileVersion(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: systemd-boot %s", p, v)
	if v == "" || !isDigit(v[0]) {
		t.Errorf("version %q", v)
	}
}

func TestCompareVersions(t *testing.T) {
	// Each is older than the next.
	ordered := []string{
		"251",
		"252.39-1~deb12u1",
		"252.39-1~deb12u2",
		"252.39-1",
		"255~rc1",
		"255",
		"255.4",
		"255.4-1",
		"257.9-1~deb13u1",
		"257.10",
		"258~devel",
		"258",
		"1000",
	}
	for i, a := range ordered {
		for j, b := range ordered {
			want := sign(i - j)
			if got := CompareVersions(a, b); got != want {
				t.Errorf("CompareVersions(%q, %q) = %d, want %d", a, b, got, want)
			}
		}
	}
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"252.39-1~deb12u1", "257.9-1~deb13u1", -1},
		{"257.9-1~deb13u1", "252.39-1~deb12u1", 1},
		{"257.9-1~deb13u1", "257.9-1~deb13u1", 0},
		{"257.09", "257.9", 0},                                // leading zeros do not count
		{"99999999999999999999", "100000000000000000000", -1}, // longer than int64
		{"", "1", -1},
		{"", "", 0},
	} {
		if got := CompareVersions(c.a, c.b); got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

package squashfs

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/internal/testtool"
)

func TestDropXattrs(t *testing.T) {
	for _, tc := range []struct {
		name string
		keep bool
	}{
		{"security.capability", true}, {"user.foo", true}, {"trusted.overlay.opaque", true},
		{"system.posix_acl_access", false}, {"system.nfs4_acl", false}, {"other", false},
	} {
		if got := KeepXattr(tc.name); got != tc.keep {
			t.Errorf("KeepXattr(%q) = %v", tc.name, got)
		}
	}
	h := &tar.Header{PAXRecords: map[string]string{
		"SCHILY.xattr.security.capability": "x", "SCHILY.xattr.system.posix_acl_access": "y", "path": "long/name",
	}}
	if n := DropXattrs(h); n != 1 || len(h.PAXRecords) != 2 || h.PAXRecords["SCHILY.xattr.security.capability"] != "x" {
		t.Errorf("dropped %d, left %v", n, h.PAXRecords)
	}
}

func write(t *testing.T, out string, opt Options, n int) (int64, error) {
	t.Helper()
	return Write(context.Background(), out, opt, func(tw *tar.Writer) error {
		for i := range n {
			body := fmt.Sprintf("file %d\n", i)
			h := &tar.Header{Name: fmt.Sprintf("usr/f%d", i), Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(1000, 0),
				PAXRecords: map[string]string{"SCHILY.xattr.system.posix_acl_access": "z"}}
			DropXattrs(h)
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if _, err := tw.Write([]byte(body)); err != nil {
				return err
			}
		}
		return nil
	})
}

func TestWrite(t *testing.T) {
	testtool.Need(t, "tar2sqfs", "unsquashfs")
	dir := t.TempDir()
	out := filepath.Join(dir, "a.sqfs")
	h := sha256.New()
	n, err := write(t, out, Options{ModTime: time.Unix(2000, 0), Tee: h}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || n%512 != 0 {
		t.Errorf("stream size %d", n)
	}
	ls, err := exec.Command("unsquashfs", "-lln", "-d", "", out).CombinedOutput()
	if err != nil || !strings.Contains(string(ls), "/usr/f2") || !strings.Contains(string(ls), "1970-01-01 00:16 /usr/f0") {
		t.Errorf("listing (%v):\n%s", err, ls)
	}
	// Same stream, same bytes; the tee saw the stream.
	out2 := filepath.Join(dir, "b.sqfs")
	h2 := sha256.New()
	if _, err := write(t, out2, Options{ModTime: time.Unix(2000, 0), Tee: h2, Compression: "zstd"}, 3); err != nil {
		t.Fatal(err)
	}
	if string(h.Sum(nil)) != string(h2.Sum(nil)) {
		t.Error("the tee saw different streams")
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(out2)
	if len(a) < 4 || len(a)%4096 != 0 || string(a[:4]) != "hsqs" {
		t.Fatalf("%d bytes, not a squashfs padded to 4 KiB", len(a))
	}
	if !bytes.Equal(a, b) {
		t.Error("the same stream gave different squashfs images")
	}
}

func TestWriteErrors(t *testing.T) {
	testtool.Need(t, "tar2sqfs")
	out := filepath.Join(t.TempDir(), "x.sqfs")
	// fill's own error wins over tar2sqfs's complaint about a cut stream.
	mine := errors.New("the source went away")
	_, err := Write(context.Background(), out, Options{}, func(tw *tar.Writer) error {
		if err := tw.WriteHeader(&tar.Header{Name: "usr/x", Mode: 0o644, Size: 1 << 20}); err != nil {
			return err
		}
		return mine
	})
	if !errors.Is(err, mine) {
		t.Errorf("fill's error: %v", err)
	}
	// tar2sqfs's own error is reported as such.
	if _, err := Write(context.Background(), out, Options{Compression: "nope"}, func(*tar.Writer) error { return nil }); err == nil || !strings.HasPrefix(err.Error(), "tar2sqfs: ") {
		t.Errorf("bad compressor: %v", err)
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := Write(context.Background(), out, Options{}, func(*tar.Writer) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("without tar2sqfs: %v", err)
	}
}

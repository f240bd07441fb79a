package fsync

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPath(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, f} {
		if err := Path(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if err := Path(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
}

// names lists dir.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return n
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "machine-id")
	for _, c := range []struct {
		data string
		mode os.FileMode
	}{{"one\n", 0o444}, {"two\n", 0o600}} {
		if err := WriteFile(p, []byte(c.data), c.mode); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != c.data {
			t.Errorf("content %q, %v; want %q", b, err, c.data)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != c.mode {
			t.Errorf("mode %v, %v; want %v", fi.Mode(), err, c.mode)
		}
	}
	if got := names(t, dir); len(got) != 1 {
		t.Errorf("directory holds %q, want only machine-id", got)
	}
	// No directory: an error, nothing left behind.
	if err := WriteFile(filepath.Join(dir, "missing", "f"), nil, 0o644); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
	// A directory in the way: the rename fails and the temporary file goes.
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "d", "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(filepath.Join(dir, "d"), []byte("x"), 0o644); err == nil {
		t.Error("WriteFile over a non-empty directory succeeded")
	}
	if got := names(t, dir); len(got) != 2 {
		t.Errorf("directory holds %q after a failed write, want machine-id and d", got)
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errors.New("the source broke")
	}
	r.n--
	return copy(p, "chunk"), nil
}

func TestWriteFrom(t *testing.T) {
	dir := t.TempDir()
	p, tmp := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, ".slate-tmp-vmlinuz.tmp")
	// A leftover temporary file is replaced.
	if err := os.WriteFile(tmp, []byte("leftover of a power cut, longer than the new content"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("k", 3<<20+17)
	n, err := WriteFrom(p, tmp, strings.NewReader(big), 0o644)
	if err != nil || n != int64(len(big)) {
		t.Fatalf("WriteFrom = %d, %v", n, err)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != big {
		t.Errorf("content: %d bytes, %v", len(b), err)
	}
	if got := names(t, dir); len(got) != 1 {
		t.Errorf("directory holds %q, want only vmlinuz", got)
	}
	// A reader that fails leaves the old content and no temporary file.
	_, err = WriteFrom(p, tmp, &failingReader{n: 3}, 0o644)
	if err == nil || !strings.Contains(err.Error(), "the source broke") {
		t.Errorf("WriteFrom from a failing reader: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != big {
		t.Error("a failed WriteFrom changed the file")
	}
	if got := names(t, dir); len(got) != 1 {
		t.Errorf("directory holds %q after a failed write, want only vmlinuz", got)
	}
}

func TestWriteJSON(t *testing.T) {
	p := filepath.Join(t.TempDir(), "new", "dir", "rec.json")
	if err := WriteJSON(p, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "{\n  \"a\": 1\n}\n" {
		t.Errorf("%q, %v", b, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", fi.Mode())
	}
	if err := WriteJSON(p, func() {}); err == nil {
		t.Error("a value JSON cannot hold was written")
	}
}

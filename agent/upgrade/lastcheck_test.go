package upgrade

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The last update check round-trips through its file, which is written
// whole (no temporary file left) with mode 0644 and a directory made for it.
func TestLastCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "var/lib/slate", LastCheckFileName)
	if c, err := ReadLastCheck(path); c != nil || err != nil {
		t.Fatalf("no file: %+v, %v", c, err)
	}
	want := LastCheck{Time: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC), Result: CheckRefused, Ref: "registry.example/org/node:stable",
		Version: "1.5", Digest: "sha256:" + strings.Repeat("ab", 32), Error: strings.Repeat("x", 5000)}
	if err := WriteLastCheck(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadLastCheck(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Error) > MaxCheckError || !strings.HasPrefix(got.Error, "xxxx") || !strings.HasSuffix(got.Error, "bytes more)") {
		t.Errorf("error not cut: %d bytes, %q…", len(got.Error), got.Error[len(got.Error)-20:])
	}
	got.Error, want.Error = "", ""
	if *got != want || got.Success() {
		t.Errorf("read back %+v (success %v), want %+v", got, got.Success(), want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode: %v %v", fi.Mode(), err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("left in the directory: %v", ents)
	}
	if err := os.WriteFile(path, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadLastCheck(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("a damaged file: %v", err)
	}
}

func TestCheckResult(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, CheckUpgraded},
		{fmt.Errorf("%w: slot a already runs 1.4", ErrUpToDate), CheckUpToDate},
		{refused(errors.New("not signed")), CheckRefused},
		{refused(fmt.Errorf("x: %w", ErrNoTrust)), CheckRefused},
		{errors.New("dial tcp: connection refused"), CheckError},
	} {
		if got := CheckResult(c.err); got != c.want {
			t.Errorf("CheckResult(%v) = %s, want %s", c.err, got, c.want)
		}
	}
	// A refusal keeps its text and what it wraps.
	err := refused(fmt.Errorf("x: %w", ErrNoTrust))
	if err.Error() != "x: "+ErrNoTrust.Error() || !errors.Is(err, ErrNoTrust) {
		t.Errorf("refusal %q", err)
	}
	if (&LastCheck{Result: CheckUpToDate}).Success() != true || (&LastCheck{Result: CheckError}).Success() {
		t.Error("Success")
	}
}

package vmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slate-os/slate/vm"
)

const bootTimeout = 60 * time.Second

// TestExpectTimeoutSavesLog checks Expect's timeout error and what Cleanup
// keeps of a failed test.
func TestExpectTimeoutSavesLog(t *testing.T) {
	SkipIfUnavailable(t)
	logs := t.TempDir()
	t.Setenv("SLATE_TEST_LOGS", logs)
	ft := &fakeTB{TB: t}
	m := Start(ft, vm.Config{Name: "failing"})

	if _, err := m.Expect("BdsDxe:", bootTimeout); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := m.Expect("this never appears", time.Second)
	if err == nil {
		t.Fatal("Expect of a missing line succeeded")
	}
	if d := time.Since(start); d > vm.Scale(5*time.Second) {
		t.Errorf("a 1 s Expect took %s", d)
	}
	msg := err.Error()
	if !strings.Contains(msg, "not on the console within") || !strings.Contains(msg, "BdsDxe:") {
		t.Errorf("timeout error lacks the reason or the console's tail:\n%s", msg)
	}
	if strings.Contains(msg, "\x1b") {
		t.Errorf("timeout error has terminal escapes")
	}
	if _, err := m.Expect(42, time.Second); err == nil {
		t.Errorf("Expect(42): no error")
	}

	ft.failed = true
	ft.runCleanups()
	if m.Running() {
		t.Errorf("Cleanup left QEMU running")
	}
	saved := filepath.Join(logs, t.Name()+".failing.console.log")
	b, err := os.ReadFile(saved)
	if err != nil {
		t.Fatalf("console log not saved: %v", err)
	}
	if !strings.Contains(string(b), "BdsDxe:") {
		t.Errorf("saved log lacks the console output")
	}
	if len(ft.logs) != 1 || !strings.Contains(ft.logs[0], saved) || !strings.Contains(ft.logs[0], "BdsDxe:") {
		t.Errorf("Cleanup logged %q; want the saved path and the console's tail", ft.logs)
	}

	// A passing test keeps nothing.
	ft2 := &fakeTB{TB: t}
	m2 := Start(ft2, vm.Config{Name: "passing"})
	ft2.runCleanups()
	if m2.Running() {
		t.Errorf("Cleanup left QEMU running")
	}
	if _, err := os.Stat(filepath.Join(logs, t.Name()+".passing.console.log")); err == nil {
		t.Errorf("a passing test's log was saved")
	}
}

// fakeTB lets a test watch what Start's Cleanup does for a failed test
// without failing itself.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	failed   bool
	cleanups []func()
	logs     []string
}

func (f *fakeTB) Helper()           {}
func (f *fakeTB) Cleanup(fn func()) { f.mu.Lock(); f.cleanups = append(f.cleanups, fn); f.mu.Unlock() }
func (f *fakeTB) Failed() bool      { f.mu.Lock(); defer f.mu.Unlock(); return f.failed }
func (f *fakeTB) Logf(format string, args ...any) {
	f.mu.Lock()
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.TB.Helper()
	f.TB.Fatalf(format, args...)
}
func (f *fakeTB) runCleanups() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

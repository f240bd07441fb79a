// Package vmtest runs package vm's machines inside Go tests: Start ties a
// machine to a test (killed at its end, its console kept when it failed),
// SkipIfUnavailable decides what a machine without QEMU does.
package vmtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/slate-os/slate/vm"
)

// Start creates a machine in t.TempDir() and boots it; it fails the test if
// either goes wrong, and skips it when QEMU or OVMF is not installed.
// Cleanup kills QEMU and, when the test has failed, saves the console log
// (see saveLogs) and logs its last 80 lines.
func Start(tb testing.TB, cfg vm.Config) *vm.Machine {
	tb.Helper()
	SkipIfUnavailable(tb)
	cfg.Dir = tb.TempDir()
	m, err := vm.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = m.Kill()
		if tb.Failed() {
			saveLogs(tb, m, cfg.Name)
		}
	})
	if err := m.Boot(tb.Context()); err != nil {
		tb.Fatalf("%v", err)
	}
	return m
}

// SkipIfUnavailable skips the test when QEMU or OVMF is not installed, or
// under -short (make unit). With SLATE_REQUIRE_QEMU set (make test, CI) a
// missing QEMU fails the test instead: the suite must not pass by skipping.
func SkipIfUnavailable(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("QEMU boots do not run with -short")
	}
	if err := vm.Available(); err != nil {
		if os.Getenv("SLATE_REQUIRE_QEMU") != "" {
			tb.Fatalf("QEMU test: %v", err)
		}
		tb.Skipf("skipping QEMU test: %v", err)
	}
}

// failureLines is how much of the console a failed test prints.
const failureLines = 80

var (
	savedMu sync.Mutex
	saved   = map[savedKey]int{} // machines saved so far under one name
)

type savedKey struct {
	tb   testing.TB
	base string
}

// saveLogs keeps a failed test's console log (and QEMU's own output) where
// CI prints it, since t.TempDir is removed when the test ends.
//
// The directory is $SLATE_TEST_LOGS, default build/test-logs. A relative
// path is taken from the module root, not from the working directory: go
// test runs each package in its own directory, and the logs of every
// package belong in one place (the root's build/ is git-ignored).
func saveLogs(tb testing.TB, m *vm.Machine, name string) {
	dir := os.Getenv("SLATE_TEST_LOGS")
	if dir == "" {
		dir = filepath.Join("build", "test-logs")
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(moduleRoot(), dir)
	}
	base := Sanitize(tb.Name())
	label := "vm"
	if name != "" {
		base += "." + Sanitize(name)
		label += " " + name
	}
	// Two unnamed machines of one test get .console.log and .2.console.log;
	// a later run of the test (-count) overwrites the first's.
	savedMu.Lock()
	key := savedKey{tb, base}
	saved[key]++
	if n := saved[key]; n > 1 {
		base += "." + strconv.Itoa(n)
	}
	savedMu.Unlock()

	tail := strings.Join(m.ConsoleTail(failureLines), "\n")
	dst, err := m.SaveLogs(dir, base)
	if err != nil {
		tb.Logf("%s: could not save the console log: %v; its last %d lines:\n%s", label, err, failureLines, tail)
		return
	}
	tb.Logf("%s: console log saved to %s; its last %d lines:\n%s", label, dst, failureLines, tail)
}

// moduleRoot is the nearest directory above the working directory with a
// go.mod, or the working directory.
func moduleRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := wd; ; {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		parent := filepath.Dir(d)
		if parent == d {
			return wd
		}
		d = parent
	}
}

// Sanitize makes a test name (with subtests' slashes) a file name.
func Sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
}

package vm

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

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
func (m *Machine) saveLogs(tb testing.TB) {
	dir := os.Getenv("SLATE_TEST_LOGS")
	if dir == "" {
		dir = filepath.Join("build", "test-logs")
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(moduleRoot(), dir)
	}
	base := sanitize(tb.Name())
	if m.cfg.Name != "" {
		base += "." + sanitize(m.cfg.Name)
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
	dst := filepath.Join(dir, base+".console.log")
	err := os.MkdirAll(dir, 0o755)
	if err == nil {
		err = copyFile(m.consoleLog, dst)
	}
	if err != nil {
		tb.Logf("%s: could not save the console log: %v; its last %d lines:\n%s", m.label, err, failureLines, tail)
		return
	}
	if st, err := os.Stat(m.qemuLog); err == nil && st.Size() > 0 {
		_ = copyFile(m.qemuLog, filepath.Join(dir, base+".qemu.log"))
	}
	tb.Logf("%s: console log saved to %s; its last %d lines:\n%s", m.label, dst, failureLines, tail)
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

// sanitize makes a test name (with subtests' slashes) a file name.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
}

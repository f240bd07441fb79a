package vm

import (
	"os"
	"path/filepath"
)

// SaveLogs copies the console log to DIR/BASE.console.log, and QEMU's own
// output, when there is any, to DIR/BASE.qemu.log, for a caller that keeps
// them after the work dir is gone (a failed test, slate test's report). It
// returns the console log's new path.
func (m *Machine) SaveLogs(dir, base string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, base+".console.log")
	if err := copyFile(m.consoleLog, dst); err != nil {
		return "", err
	}
	if st, err := os.Stat(m.qemuLog); err == nil && st.Size() > 0 {
		_ = copyFile(m.qemuLog, filepath.Join(dir, base+".qemu.log"))
	}
	return dst, nil
}

// Running says whether QEMU is running.
func (m *Machine) Running() bool {
	r := m.current()
	return r != nil && !r.hasExited()
}

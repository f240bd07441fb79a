package vm

import (
	"bytes"
	"fmt"
	"os"
)

// BootLines returns the console lines of the latest boot, cleaned like
// Expect's lines (no escape sequences, no carriage returns): what a test
// reads once QEMU has exited to see what that boot did, when a boot's story
// (which slot, a panic, the health check's verdict) matters more than
// waiting for one line.
func (m *Machine) BootLines() ([]string, error) {
	m.mu.Lock()
	marker := fmt.Sprintf("--- slate/%s: boot %d ---\n", m.label, m.boots)
	m.mu.Unlock()
	b, err := os.ReadFile(m.consoleLog)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.label, err)
	}
	i := bytes.LastIndex(b, []byte(marker))
	if i < 0 {
		return nil, fmt.Errorf("%s: no %q in %s", m.label, marker[:len(marker)-1], m.consoleLog)
	}
	b = b[i+len(marker):]
	var lines []string
	for len(b) > 0 {
		j := bytes.IndexByte(b, '\n')
		if j < 0 {
			j = len(b) - 1
		}
		lines = append(lines, cleanLine(b[:j+1]))
		b = b[j+1:]
	}
	return lines, nil
}

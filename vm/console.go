package vm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"
)

// Match is a console line that matched a [Machine.Expect] pattern.
type Match struct {
	// Line is the whole line, with terminal escape sequences and carriage
	// returns removed.
	Line string
	// Groups holds the match and its submatches, as
	// [regexp.Regexp.FindStringSubmatch] returns them.
	Groups []string
}

// errorLines is how much console an Expect or WaitExit error carries.
const errorLines = 40

// partialSettle is how long an unfinished console line must stay unchanged
// before Expect tries it: long enough for a line written in pieces to
// finish, short enough not to slow down waiting for a prompt.
const partialSettle = 250 * time.Millisecond

// Expect waits until a console line matches pattern, a *regexp.Regexp or a
// string (matched literally, as a substring), and returns that line.
//
// Lines are read from the current read position onwards, and the position
// moves past each line read, matched or not: a second Expect never sees a
// line the first one already passed. Each boot starts reading at its own
// first line. Terminal escape sequences (OVMF and systemd colour their
// output) and carriage returns are removed before matching. A line the
// console has not finished is tried too once the console has been quiet
// for a moment, so that a prompt that ends without a newline ("Shell> ",
// "login: ") can be matched.
//
// timeout is scaled by SLATE_TIMEOUT_SCALE. On a timeout, or when QEMU exits
// before the line appears, the error holds the console's last lines.
func (m *Machine) Expect(pattern any, timeout time.Duration) (Match, error) {
	var re *regexp.Regexp
	switch p := pattern.(type) {
	case *regexp.Regexp:
		re = p
	case string:
		re = regexp.MustCompile(regexp.QuoteMeta(p))
	default:
		return Match{}, fmt.Errorf("%s: Expect: pattern must be a string or *regexp.Regexp, not %T", m.label, pattern)
	}
	r := m.current()
	if r == nil {
		return Match{}, fmt.Errorf("%s: Expect: the machine was never booted", m.label)
	}
	r.expectMu.Lock()
	defer r.expectMu.Unlock()

	f, err := os.Open(m.consoleLog)
	if err != nil {
		return Match{}, fmt.Errorf("%s: Expect: %w", m.label, err)
	}
	defer f.Close()

	scaled := Scale(timeout)
	deadline := time.NewTimer(scaled)
	defer deadline.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		// Look at the exit before reading, so that the read after QEMU
		// exited sees everything it wrote.
		exited := r.hasExited()
		if mt, ok, err := r.scan(f, re); err != nil {
			return Match{}, fmt.Errorf("%s: Expect: reading console: %w", m.label, err)
		} else if ok {
			return mt, nil
		}
		if exited {
			return Match{}, fmt.Errorf("%s: Expect %q: qemu exited (%s) before the console showed it; %s",
				m.label, re, r.exitInfo(), m.consoleTail(errorLines))
		}
		select {
		case <-deadline.C:
			return Match{}, fmt.Errorf("%s: Expect %q: not on the console within %s; %s",
				m.label, re, scaled, m.consoleTail(errorLines))
		case <-r.wake:
		case <-poll.C:
		case <-r.done:
		}
	}
}

// scan reads the console log from the read position and tries each line.
func (r *run) scan(f *os.File, re *regexp.Regexp) (Match, bool, error) {
	buf, err := readFrom(f, r.pos)
	if err != nil {
		return Match{}, false, err
	}
	// Note when the console last grew: an unfinished line is only tried
	// once it has been still for a moment, so that a line that is merely
	// arriving in pieces is matched (and returned) whole.
	now := time.Now()
	if end := r.pos + int64(len(buf)); end != r.seenEnd {
		r.seenEnd, r.grewAt = end, now
	}
	settled := now.Sub(r.grewAt) >= partialSettle
	for len(buf) > 0 {
		i := bytes.IndexByte(buf, '\n')
		complete := i >= 0
		raw := buf
		if complete {
			raw = buf[:i+1]
		}
		if !complete && !settled {
			break
		}
		line := cleanLine(raw)
		if g := re.FindStringSubmatch(line); g != nil {
			r.pos += int64(len(raw))
			return Match{Line: line, Groups: g}, true, nil
		}
		if !complete {
			break // keep the unfinished line for the next try
		}
		r.pos += int64(len(raw))
		buf = buf[len(raw):]
	}
	return Match{}, false, nil
}

func readFrom(f *os.File, off int64) ([]byte, error) {
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := f.ReadAt(buf, off)
		out = append(out, buf[:n]...)
		off += int64(n)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// ansiRE matches the terminal control sequences OVMF, systemd and the
// kernel put on a serial console: CSI sequences (colours, cursor moves,
// "ESC[=3h"), charset selection and two-byte escapes.
var ansiRE = regexp.MustCompile(`\x1b(?:\[[0-9;?=>]*[ -/]*[@-~]|[()][0-9A-Za-z]|[@-Z\\-_])`)

// cleanLine turns raw console bytes into text to match and print.
func cleanLine(b []byte) string {
	b = ansiRE.ReplaceAll(b, nil)
	s := strings.TrimRight(string(b), "\r\n")
	return strings.ReplaceAll(s, "\r", "")
}

// Send types s on the serial console. Line ends are up to the guest: a
// UEFI shell wants "\r", a Linux getty accepts "\n".
func (m *Machine) Send(s string) error {
	r := m.current()
	if r == nil || r.hasExited() {
		return fmt.Errorf("%s: Send: the machine is not running", m.label)
	}
	if r.serial == nil {
		return fmt.Errorf("%s: Send: the console is on stdio (Interactive)", m.label)
	}
	_ = r.serial.SetWriteDeadline(time.Now().Add(Scale(10 * time.Second)))
	_, err := io.WriteString(r.serial, s)
	if err != nil {
		return fmt.Errorf("%s: Send: %w", m.label, err)
	}
	return nil
}

// ConsoleTail returns the last n lines of the console log (all boots),
// cleaned like Expect's lines.
func (m *Machine) ConsoleTail(n int) []string {
	f, err := os.Open(m.consoleLog)
	if err != nil {
		return nil
	}
	defer f.Close()
	const window = 256 << 10
	var off int64
	if st, err := f.Stat(); err == nil && st.Size() > window {
		off = st.Size() - window
	}
	b, _ := readFrom(f, off)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // the first is probably cut
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		lines[i] = cleanLine([]byte(l))
	}
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	return lines
}

// consoleTail formats ConsoleTail for an error message.
func (m *Machine) consoleTail(n int) string {
	lines := m.ConsoleTail(n)
	if len(lines) == 0 {
		return fmt.Sprintf("the console (%s) is empty", m.consoleLog)
	}
	return fmt.Sprintf("last %d console lines (%s):\n\t%s", len(lines), m.consoleLog, strings.Join(lines, "\n\t"))
}

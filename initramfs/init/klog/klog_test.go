package klog

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

type kmsg struct{ lines *[]string }

func (k kmsg) Write(p []byte) (int, error) {
	*k.lines = append(*k.lines, string(p))
	return len(p), nil
}
func (k kmsg) Close() error { return nil }

func TestLogger(t *testing.T) {
	var console bytes.Buffer
	var kernel []string
	opens := 0
	l := &Logger{
		Console:      &console,
		OpenKmsg:     func() (io.WriteCloser, error) { opens++; return kmsg{&kernel}, nil },
		ConsoleLevel: 4, // "quiet": the kernel prints only levels 0-3
	}
	l.Infof("step %s done in %d ms", "modules", 12)
	l.Critf("state failed: boom\nsecond line")
	l.Debugf("for the journal only")

	wantKernel := []string{
		"<30>slate-init: step modules done in 12 ms\n",
		"<26>slate-init: state failed: boom\n",
		"<26>slate-init: second line\n",
		"<31>slate-init: for the journal only\n",
	}
	if strings.Join(kernel, "") != strings.Join(wantKernel, "") {
		t.Errorf("kmsg got %q", kernel)
	}
	if opens != 4 {
		t.Errorf("kmsg opened %d times, want once a line (rate limit is per open file)", opens)
	}
	// Info is below the console level: the logger prints it; the kernel prints the critical lines.
	if got := console.String(); got != "slate-init: step modules done in 12 ms\n" {
		t.Errorf("console got %q", got)
	}

	// Without quiet (level 7) the kernel prints info too: nothing is doubled.
	console.Reset()
	l.ConsoleLevel = 7
	l.Warnf("x")
	if console.Len() != 0 {
		t.Errorf("console got %q, want nothing (kernel prints it)", console.String())
	}
	// Unknown console level (no /proc yet) or no kmsg: the console gets everything.
	l.ConsoleLevel = 0
	l.Infof("early")
	l.OpenKmsg = nil
	l.ConsoleLevel = 7
	l.Errorf("no kmsg")
	if got := console.String(); got != "slate-init: early\nslate-init: no kmsg\n" {
		t.Errorf("console got %q", got)
	}
}

func TestParsePrintk(t *testing.T) {
	for in, want := range map[string]int{"4\t4\t1\t7\n": 4, "7 4 1 7": 7, "": 0, "x": 0} {
		if got := ParsePrintk(in); got != want {
			t.Errorf("ParsePrintk(%q) = %d, want %d", in, got, want)
		}
	}
}

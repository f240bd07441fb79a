package klog

import (
	"bytes"
	"io"
	"strconv"
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

// A line longer than MaxLine is cut, visibly, before the kernel would cut
// or refuse it; a message of many lines gives at most MaxLines.
func TestLineCap(t *testing.T) {
	var console bytes.Buffer
	var kernel []string
	l := &Logger{Console: &console, OpenKmsg: func() (io.WriteCloser, error) { return kmsg{&kernel}, nil }, ConsoleLevel: 4}
	huge := strings.Repeat("x", 4<<20)
	l.Errorf("config is invalid: %s", huge)
	if len(kernel) != 1 {
		t.Fatalf("%d kmsg records", len(kernel))
	}
	rec := kernel[0]
	// The record, its <N> and newline included, fits the kernel's 992 bytes.
	if len(rec) > 992 || !strings.HasPrefix(rec, "<27>slate-init: config is invalid: xxx") || !strings.HasSuffix(rec, " bytes more)\n") {
		t.Errorf("kmsg record: %d bytes, %q…%q", len(rec), rec[:40], rec[len(rec)-30:])
	}
	// What is kept and what is counted add up to the message.
	kept, more, _ := strings.Cut(strings.TrimPrefix(rec, "<27>slate-init: "), "…(")
	if n, _ := strconv.Atoi(strings.TrimSuffix(more, " bytes more)\n")); len(kept)+n != len("config is invalid: ")+len(huge) {
		t.Errorf("kept %d + cut %d != %d", len(kept), n, len("config is invalid: ")+len(huge))
	}
	if len(strings.TrimSuffix(rec, "\n"))-len("<27>") > MaxLine {
		t.Errorf("line over MaxLine: %d", len(rec))
	}
	// Where the kernel does not print it, the console gets the same cut line.
	console.Reset()
	l.ConsoleLevel = 0
	kernel = nil
	l.Errorf("config is invalid: %s", huge)
	if got := console.String(); got != strings.TrimPrefix(kernel[0], "<27>") || len(got) > MaxLine+1 {
		t.Errorf("console: %d bytes %q", len(got), got[len(got)-30:])
	}
	if Cap("short") != "short" {
		t.Error("Cap changed a short line")
	}

	kernel = nil
	l.Infof("%s", strings.Repeat("line\n", 1000))
	if len(kernel) != MaxLines || kernel[MaxLines-1] != "<30>slate-init: …(801 lines more)\n" {
		t.Errorf("%d records, last %q", len(kernel), kernel[len(kernel)-1])
	}
}

// Package klog is the init's logger: every line goes to the kernel log
// (/dev/kmsg, so the journal keeps it) and to the console, prefixed
// "slate-init: ".
//
// A line written to /dev/kmsg is also printed on the console by the kernel
// when its level is below the console log level ("quiet" lowers that), so
// the logger writes to /dev/console itself only when the kernel will not:
// each line shows once on the console either way.
//
// Lines are capped (MaxLine, MaxLines): a message may quote a node config
// or an error of any length, and the kernel refuses or cuts a /dev/kmsg
// record of more than about 1 KiB without a word. The logger cuts first,
// and says how much it cut: "…(4193344 bytes more)".
package klog

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/slate-os/slate/internal/clip"
)

// Prefix starts every line.
const Prefix = "slate-init: "

// MaxLine is the most bytes a line takes, Prefix included. The kernel
// takes a /dev/kmsg record of at most 1024 bytes (992 before Linux 5.10),
// its "<N>" level and newline included, and refuses a longer one; the
// logger cuts a longer line to MaxLine, ending it in "…(N bytes more)".
const MaxLine = 960

// MaxLines is the most lines one message gives; the ones after are
// counted in a last line.
const MaxLines = 200

// Cap cuts one line to MaxLine with Prefix, as the logger writes it.
func Cap(line string) string { return clip.String(line, MaxLine-len(Prefix)) }

// Syslog levels.
const (
	LevelCrit    = 2
	LevelErr     = 3
	LevelWarning = 4
	LevelInfo    = 6
	LevelDebug   = 7
)

// facility is LOG_DAEMON: the journal shows the lines as a daemon's, not the kernel's.
const facility = 3 << 3

// Logger writes to the console and the kernel log. Its zero value writes to
// stderr only.
type Logger struct {
	mu sync.Mutex
	// Console receives the lines the kernel will not print (nil: stderr).
	Console io.Writer
	// OpenKmsg opens the kernel log for one line (nil: no kernel log). Each
	// line opens it anew: the kernel rate-limits writers per open file (10
	// lines per 5 s by default), and the init may say more than that.
	OpenKmsg func() (io.WriteCloser, error)
	// ConsoleLevel is the kernel's console log level: lines of a lower
	// level are printed by the kernel. 0 means unknown (write both).
	ConsoleLevel int
}

// New returns a logger for the init: the console is /dev/console when it
// can be opened (else stderr), the kernel log /dev/kmsg. Call Setup again
// once /dev and /proc are mounted.
func New() *Logger {
	l := &Logger{}
	l.Setup()
	return l
}

// Setup (re)opens the console and reads the console log level; it is
// called after devtmpfs and proc are mounted.
func (l *Logger) Setup() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY|syscall.O_NOCTTY, 0); err == nil {
		if c, ok := l.Console.(*os.File); ok && c != os.Stderr {
			c.Close()
		}
		l.Console = f
	}
	if _, err := os.Stat("/dev/kmsg"); err == nil {
		l.OpenKmsg = func() (io.WriteCloser, error) { return os.OpenFile("/dev/kmsg", os.O_WRONLY, 0) }
	}
	l.ConsoleLevel = 0
	if b, err := os.ReadFile("/proc/sys/kernel/printk"); err == nil {
		l.ConsoleLevel = ParsePrintk(string(b))
	}
	if b, err := os.ReadFile("/proc/cmdline"); err == nil {
		for _, a := range strings.Fields(string(b)) {
			if a == "ignore_loglevel" || a == "printk.ignore_loglevel" {
				l.ConsoleLevel = 8 // the kernel prints everything
			}
		}
	}
}

// ParsePrintk reads the console log level, the first field of
// /proc/sys/kernel/printk; 0 when unreadable.
func ParsePrintk(s string) int {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return n
}

// Log writes one message at a syslog level; a multi-line message becomes
// several lines.
func (l *Logger) Log(level int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := strings.Split(strings.TrimRight(msg, "\n"), "\n")
	if len(lines) > MaxLines {
		lines = append(lines[:MaxLines-1], fmt.Sprintf("…(%d lines more)", len(lines)-MaxLines+1))
	}
	for _, line := range lines {
		l.line(level, Cap(line))
	}
}

func (l *Logger) line(level int, line string) {
	kernelPrints := false
	if l.OpenKmsg != nil {
		if w, err := l.OpenKmsg(); err == nil {
			_, werr := fmt.Fprintf(w, "<%d>%s%s\n", facility|level, Prefix, line)
			w.Close()
			kernelPrints = werr == nil && l.ConsoleLevel > 0 && level < l.ConsoleLevel
		}
	}
	if kernelPrints || level == LevelDebug { // debug lines are for the kernel log only
		return
	}
	c := l.Console
	if c == nil {
		c = os.Stderr
	}
	fmt.Fprintf(c, "%s%s\n", Prefix, line)
}

// Infof logs at info level.
func (l *Logger) Infof(format string, args ...any) { l.Log(LevelInfo, format, args...) }

// Warnf logs at warning level.
func (l *Logger) Warnf(format string, args ...any) { l.Log(LevelWarning, "warning: "+format, args...) }

// Errorf logs at error level.
func (l *Logger) Errorf(format string, args ...any) { l.Log(LevelErr, format, args...) }

// Critf logs at critical level (the fatal error).
func (l *Logger) Critf(format string, args ...any) { l.Log(LevelCrit, format, args...) }

// Debugf writes to the kernel log only (the journal keeps it), never to the
// console: for details such as a panic's stack.
func (l *Logger) Debugf(format string, args ...any) { l.Log(LevelDebug, format, args...) }

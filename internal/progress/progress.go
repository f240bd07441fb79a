// Package progress shows where a long step is: on a terminal a line that
// overwrites itself a few times a second, elsewhere (CI logs, the journal) a
// plain line every 5 seconds, so a log shows where a build or an upgrade
// is without drowning in updates. Where the step's size is known the line
// gives the percentage, the rate and the time left:
//
//	rootfs: 812 MiB of 1.2 GiB (67%), 48 MiB/s, 9s left
//
// A step shorter than the plain interval prints nothing off a terminal.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

const (
	// liveInterval is how often a terminal's line is redrawn.
	liveInterval = 200 * time.Millisecond
	// plainInterval is how often a plain line is printed off a terminal.
	plainInterval = 5 * time.Second
)

// Reporter prints the progress of one step at a time. A nil *Reporter
// reports nothing.
type Reporter struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	now     func() time.Time
	step    string
	total   int64 // 0: unknown
	n       int64
	start   time.Time
	last    time.Time // last line printed
	printed bool      // a plain line was printed for this step
}

// New reports to w: live lines when w is a terminal (and CI is not set),
// plain lines every plainInterval otherwise.
func New(w io.Writer) *Reporter {
	f, ok := w.(*os.File)
	tty := ok && term.IsTerminal(int(f.Fd())) && os.Getenv("CI") == ""
	return newReporter(w, tty, time.Now)
}

func newReporter(w io.Writer, tty bool, now func() time.Time) *Reporter {
	return &Reporter{w: w, tty: tty, now: now}
}

// Discard reports nothing.
func Discard() *Reporter { return nil }

// Step starts a named step whose size is not known.
func (r *Reporter) Step(name string) { r.Sized(name, 0) }

// Sized starts a named step of total bytes (0: not known).
func (r *Reporter) Sized(name string, total int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.step, r.total, r.n, r.printed = name, total, 0, false
	r.start = r.now()
	r.last = r.start
	if r.tty {
		fmt.Fprintf(r.w, "\r\033[K%s ...", name)
	}
}

// Bytes says how many bytes of the running step are done.
func (r *Reporter) Bytes(n int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n = n
	now := r.now()
	switch {
	case r.tty && now.Sub(r.last) >= liveInterval:
		fmt.Fprintf(r.w, "\r\033[K%s", r.line(now))
	case !r.tty && now.Sub(r.last) >= plainInterval:
		fmt.Fprintln(r.w, r.line(now))
		r.printed = true
	default:
		return
	}
	r.last = now
}

// Done ends the running step: on a terminal, and off one when the step was
// long enough to print a line, it leaves a line with what it did and its time.
func (r *Reporter) Done() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.step == "" || !r.tty && !r.printed {
		r.step = ""
		return
	}
	d := r.now().Sub(r.start)
	var what string
	if r.n > 0 {
		what = humanSize(r.n) + " in "
	}
	cr := ""
	if r.tty {
		cr = "\r\033[K"
	}
	fmt.Fprintf(r.w, "%s%s: %s%.1fs\n", cr, r.step, what, d.Seconds())
	r.step = ""
}

// line is the running step's progress at now.
func (r *Reporter) line(now time.Time) string {
	return formatLine(r.step, r.n, r.total, now.Sub(r.start))
}

// formatLine formats a step's progress: n bytes of total (0: not known) done in
// elapsed.
func formatLine(step string, n, total int64, elapsed time.Duration) string {
	s := step + ": " + humanSize(n)
	if total > 0 {
		pct := n * 100 / total
		s += fmt.Sprintf(" of %s (%d%%)", humanSize(total), pct)
	}
	if elapsed < time.Second/2 || n == 0 {
		return s
	}
	rate := float64(n) / elapsed.Seconds()
	s += ", " + humanSize(int64(rate)) + "/s"
	if total > 0 && n < total {
		left := time.Duration(float64(total-n) / rate * float64(time.Second))
		s += ", " + left.Round(time.Second).String() + " left"
	}
	return s
}

// humanSize formats a byte count: KiB below a MiB, whole MiB below a GiB, GiB
// with one decimal above.
func humanSize(n int64) string {
	switch {
	case n < 1<<20:
		return fmt.Sprintf("%d KiB", n>>10)
	case n < 1<<30:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

// Package progress shows what a long step is doing on a terminal and says
// nothing anywhere else, so CI logs stay short.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// Reporter prints progress lines that overwrite each other on a terminal.
type Reporter struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	step  string
	start time.Time
	last  time.Time
}

// New reports to w, live only when w is a terminal.
func New(w io.Writer) *Reporter {
	f, ok := w.(*os.File)
	return &Reporter{w: w, tty: ok && term.IsTerminal(int(f.Fd())) && os.Getenv("CI") == ""}
}

// Discard reports nothing.
func Discard() *Reporter { return &Reporter{w: io.Discard} }

// Step starts a named step.
func (r *Reporter) Step(name string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.step, r.start = name, time.Now()
	if r.tty {
		fmt.Fprintf(r.w, "\r\033[K%s ...", name)
	}
}

// Bytes updates the running step with a byte count, at most a few times a second.
func (r *Reporter) Bytes(n int64) {
	if r == nil || !r.tty {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.last) < 200*time.Millisecond {
		return
	}
	r.last = time.Now()
	fmt.Fprintf(r.w, "\r\033[K%s ... %d MiB", r.step, n>>20)
}

// Done ends the running step; on a terminal it leaves a line with its time.
func (r *Reporter) Done() {
	if r == nil || !r.tty {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.w, "\r\033[K%s: %.1fs\n", r.step, time.Since(r.start).Seconds())
}

package nodetest

import (
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// board shows where a run is: on a terminal a line redrawn every second,
// elsewhere a plain line every plainEvery, so a CI log shows progress; and
// a line for each scenario as it ends.
type board struct {
	w     io.Writer // nil: show nothing
	tty   bool
	start time.Time

	mu      sync.Mutex
	total   int
	ended   int
	running map[string]string // scenario → what it is doing
	stopc   chan struct{}
	wg      sync.WaitGroup
}

const plainEvery = 15 * time.Second

func newBoard(w io.Writer, todo []*scenario) *board {
	b := &board{w: w, start: time.Now(), total: len(todo), running: map[string]string{}, stopc: make(chan struct{})}
	if w == nil {
		return b
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) && os.Getenv("CI") == "" {
		b.tty = true
	}
	every := plainEvery
	if b.tty {
		every = time.Second
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-b.stopc:
				return
			case <-t.C:
				b.mu.Lock()
				b.show()
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// show prints the status line; b.mu is held.
func (b *board) show() {
	if len(b.running) == 0 {
		return
	}
	var parts []string
	for name, what := range b.running {
		parts = append(parts, name+": "+what)
	}
	sort.Strings(parts)
	line := fmt.Sprintf("slate test: %d/%d done, %s; %s", b.ended, b.total, time.Since(b.start).Round(time.Second), strings.Join(parts, ", "))
	if b.tty {
		fmt.Fprintf(b.w, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(b.w, line)
	}
}

// set says what a running scenario is doing.
func (b *board) set(name, what string) {
	b.mu.Lock()
	b.running[name] = what
	b.mu.Unlock()
}

// done prints a scenario's outcome.
func (b *board) done(name string, r *Result) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.running, name)
	b.ended++
	if b.w == nil {
		return
	}
	if b.tty {
		fmt.Fprint(b.w, "\r\033[K")
	}
	fmt.Fprintln(b.w, r.Line())
	if b.tty {
		b.show()
	}
}

func (b *board) stop() {
	close(b.stopc)
	b.wg.Wait()
	if b.tty {
		fmt.Fprint(b.w, "\r\033[K")
	}
}

// Line is the result in one line: status, scenario, time, and the first
// line of the reason.
func (r *Result) Line() string {
	s := fmt.Sprintf("%-4s %-9s %6s", strings.ToUpper(string(r.Status)), r.Scenario, time.Duration(r.Seconds*float64(time.Second)).Round(time.Second))
	if r.Status != Pass && r.Reason != "" {
		first, _, _ := strings.Cut(r.Reason, "\n")
		s += "  " + first
	}
	return s
}

// WriteText writes the report for a person: a line per scenario, what the
// passing ones saw, why the others failed in full, and where the logs are.
func (rep *Report) WriteText(w io.Writer) {
	for _, r := range rep.Results {
		fmt.Fprintln(w, r.Line())
		for _, n := range r.Notes {
			fmt.Fprintf(w, "       %s\n", n)
		}
		if r.Status == Fail && strings.Contains(r.Reason, "\n") {
			fmt.Fprintf(w, "       %s\n", strings.ReplaceAll(r.Reason, "\n", "\n       "))
		}
		if r.Log != "" {
			fmt.Fprintf(w, "       console: %s\n", r.Log)
		}
	}
	verdict := "passed"
	if !rep.Passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "slate test %s in %s\n", verdict, time.Duration(rep.Seconds*float64(time.Second)).Round(time.Second))
}

// JUnit XML, as CI systems read it (Jenkins, GitLab, GitHub actions'
// reporters): one testsuite, one testcase per scenario.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Skipped  int          `xml:"skipped,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Skipped   *junitMessage `xml:"skipped,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Body    string `xml:",chardata"`
}

// WriteJUnit writes the report as JUnit XML.
func (rep *Report) WriteJUnit(w io.Writer) error {
	suite := junitSuite{Name: "slate test", Time: seconds(rep.Seconds)}
	for _, r := range rep.Results {
		c := junitCase{Name: r.Scenario, Classname: "slate.test", Time: seconds(r.Seconds)}
		first, _, _ := strings.Cut(r.Reason, "\n")
		switch r.Status {
		case Fail:
			c.Failure = &junitMessage{Message: first, Body: r.Reason}
			suite.Failures++
		case Skip:
			c.Skipped = &junitMessage{Message: first}
			suite.Skipped++
		}
		var out strings.Builder
		fmt.Fprintln(&out, r.Description)
		for _, b := range r.Boots {
			fmt.Fprintf(&out, "boot %d: slot %s (%s), %s after %.0fs, runner %v\n", b.N, b.Slot, b.Version, b.Ended, b.Seconds, b.Runner)
		}
		for _, n := range r.Notes {
			fmt.Fprintln(&out, n)
		}
		if r.Log != "" {
			fmt.Fprintf(&out, "console: %s\n", r.Log)
		}
		c.SystemOut = out.String()
		suite.Cases = append(suite.Cases, c)
		suite.Tests++
	}
	all := junitSuites{Name: "slate test", Tests: suite.Tests, Failures: suite.Failures, Skipped: suite.Skipped,
		Time: suite.Time, Suites: []junitSuite{suite}}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(all); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func seconds(s float64) string { return fmt.Sprintf("%.1f", s) }

package logship

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
)

// Source is where entries come from: the journal on a node, a fake in
// tests.
type Source interface {
	// Open starts reading after the entry at cursor; "" reads from the
	// start (all boots). The reader follows: Next waits for new entries.
	Open(ctx context.Context, cursor string) (Reader, error)
}

// Reader reads entries in order.
type Reader interface {
	// Next returns the next entry, waiting for one; an error ends the
	// reading (the shipper opens the source again from its cursor).
	Next() (*Entry, error)
	// Close stops the reading; a Next waiting returns.
	Close() error
}

// MaxLine bounds one line of journalctl's JSON. An entry larger than that
// (journald accepts huge fields; --all prints them whole, as arrays of
// numbers when binary) is shipped as a note that it was left out.
const MaxLine = 8 << 20

// Journalctl reads the journal by running journalctl: the agent is built
// without cgo, so sd-journal is out of reach, and journalctl is in every
// image that has systemd.
type Journalctl struct {
	// Path is the journalctl binary; "journalctl" from PATH when empty.
	Path string
}

// Args are journalctl's arguments to read the journal after cursor: every
// field whole (--all), from the start of the journal when there is no
// cursor; with follow, then waiting for more (--no-tail, or --follow would
// start at the last 10 lines).
//
// Reading is done in two runs, because --follow also means "this boot
// only" since systemd 250 (systemd#21711, systemd#36102), even with a
// cursor in an earlier boot: what the previous boot logged while the
// collector was down would be skipped. So the first run catches up
// without --follow, across every boot, and the second follows from the
// last entry the first printed, which is in this boot.
func (j Journalctl) Args(cursor string, follow bool) []string {
	args := []string{"-o", "json", "--no-tail", "--all"}
	if follow {
		args = []string{"-o", "json", "--follow", "--no-tail", "--all"}
	}
	if cursor != "" {
		args = append(args, "--after-cursor="+cursor)
	}
	return args
}

func (j Journalctl) command(ctx context.Context, cursor string, follow bool) *exec.Cmd {
	path := j.Path
	if path == "" {
		path = "journalctl"
	}
	return exec.CommandContext(ctx, path, j.Args(cursor, follow)...)
}

// Open implements Source: it catches up after cursor, then follows.
func (j Journalctl) Open(ctx context.Context, cursor string) (Reader, error) {
	r := &journalReader{j: j, ctx: ctx, last: cursor}
	if err := r.start(false); err != nil {
		return nil, err
	}
	return r, nil
}

// start runs journalctl from r.last, following or catching up.
func (r *journalReader) start(follow bool) error {
	cmd := r.j.command(r.ctx, r.last, follow)
	// Our own pipe rather than StdoutPipe: Close may end the process while
	// Next is reading, and the read end must stay ours until both are done.
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	stderr := &tailBuffer{max: 2048}
	cmd.Stdout, cmd.Stderr = pw, stderr
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		return fmt.Errorf("journalctl: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed { // Close ran meanwhile: it did not see this one
		cmd.Process.Kill()
		cmd.Wait()
		pr.Close()
		return errors.New("journalctl: closed")
	}
	r.cmd, r.pipe, r.stderr, r.follow = cmd, pr, stderr, follow
	r.waitOnce, r.waitErr = sync.Once{}, nil
	r.br = bufio.NewReaderSize(pr, 64<<10)
	return nil
}

type journalReader struct {
	j      Journalctl
	ctx    context.Context
	last   string // the cursor of the last entry read (or Open's)
	follow bool   // the running journalctl follows

	mu     sync.Mutex // cmd, pipe, stderr: Close may run during Next
	cmd    *exec.Cmd
	pipe   *os.File
	br     *bufio.Reader
	stderr *tailBuffer
	closed bool

	waitOnce sync.Once
	waitErr  error
}

func (r *journalReader) wait() error {
	r.waitOnce.Do(func() { r.waitErr = r.cmd.Wait() })
	return r.waitErr
}

func (r *journalReader) Next() (*Entry, error) {
	e, err := r.next()
	if e != nil && e.Cursor != "" {
		r.last = e.Cursor
	}
	return e, err
}

func (r *journalReader) next() (*Entry, error) {
	for {
		line, size, err := readLine(r.br, MaxLine)
		if err != nil && errors.Is(err, io.EOF) && !r.follow && r.wait() == nil {
			// Caught up: follow from here.
			r.mu.Lock()
			closed := r.closed
			r.pipe.Close()
			r.mu.Unlock()
			if closed {
				return nil, errors.New("journalctl: closed")
			}
			if err := r.start(true); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			werr := r.wait()
			msg := strings.TrimSpace(r.stderr.String())
			switch {
			case werr != nil && msg != "":
				return nil, fmt.Errorf("journalctl: %w: %s", werr, msg)
			case werr != nil:
				return nil, fmt.Errorf("journalctl: %w", werr)
			case errors.Is(err, io.EOF):
				return nil, errors.New("journalctl: exited")
			}
			return nil, fmt.Errorf("journalctl: %w", err)
		}
		if size > len(line) {
			if e := leftOut(line, fmt.Sprintf("a journal entry of %d bytes of JSON was left out: longer than %d", size, MaxLine)); e != nil {
				return e, nil
			}
			continue
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		e, err := ParseEntry(line)
		if e != nil {
			// A field that could not be decoded is left out, the rest
			// shipped.
			return e, nil
		}
		if e := leftOut(line, err.Error()); e != nil {
			return e, nil
		}
		// Not even a cursor: nothing to ship or to resume from.
	}
}

func (r *journalReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.cmd.Process != nil {
		r.cmd.Process.Kill()
	}
	r.wait()
	return r.pipe.Close()
}

// cursorRe finds the cursor at the start of a line journalctl printed
// (__CURSOR is its first field) that cannot be parsed whole.
var cursorRe = regexp.MustCompile(`"__CURSOR"\s*:\s*("(?:[^"\\]|\\.)*")`)

// leftOut is the entry that stands for one that cannot be shipped, so that
// the cursor moves past it and the collector learns of it; nil without a
// cursor.
func leftOut(line []byte, why string) *Entry {
	m := cursorRe.FindSubmatch(line[:min(len(line), 4096)])
	if m == nil {
		return nil
	}
	var cursor string
	if json.Unmarshal(m[1], &cursor) != nil || cursor == "" {
		return nil
	}
	return &Entry{
		Cursor:     cursor,
		Identifier: "slate-logship",
		Priority:   SeverityWarning,
		Facility:   -1,
		Message:    []byte("[slate: " + why + "]"),
	}
}

// readLine reads one line (without its '\n'), keeping at most max bytes;
// size is the line's whole length. A last line without '\n' is a line.
func readLine(br *bufio.Reader, max int) (line []byte, size int, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		size += len(chunk)
		if room := max - len(line); room > 0 {
			line = append(line, chunk[:min(len(chunk), room)]...)
		}
		switch {
		case err == nil:
			if len(line) > 0 && line[len(line)-1] == '\n' {
				line = line[:len(line)-1]
			}
			return line, size - 1, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && size > 0:
			return line, size, nil
		default:
			return nil, 0, err
		}
	}
}

// tailBuffer keeps the last max bytes written to it: journalctl's stderr.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

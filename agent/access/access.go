// Package access gives break-glass its consequences on a running node:
// every interactive login is recorded on the state partition, where it
// taints the node until it is re-imaged, and said in the journal, which
// slate-logship ships; and break-glass ends at the config's
// access.expires, with a reboot (the node comes back on its config without
// access: the init drops an expired config's access) or a power-off (the
// platform replaces the node).
//
// Logins are read from wtmp, not from logind: every login program writes
// wtmp (login on a console or a serial line, sshd), while logind sees a
// session only where pam_systemd is installed, which Debian's minimal
// images (debootstrap --variant=minbase) leave out. wtmp, not utmp: utmp
// holds the sessions open now, and a login shorter than the watcher's
// poll would be gone from it; wtmp is append-only, on the state partition
// (/var/log), and the watcher keeps how far it has read beside the taint
// record, so a restart or a reboot records no login twice and misses
// none.
package access

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/slate-os/slate/boot/nodeconfig"
	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/internal/fsync"
)

// Default paths on a node.
const (
	WtmpPath   = "/var/log/wtmp"
	OffsetPath = "/var/lib/slate/logins-read"
)

// Watcher records logins and ends break-glass.
type Watcher struct {
	Wtmp string // WtmpPath
	// Offset keeps how much of Wtmp was read (OffsetPath).
	Offset    string
	TaintFile string // record.TaintFile
	BootID    string
	// Every is how often utmp is read; 2 s by default.
	Every time.Duration
	// Log gets one line per event (the journal, through the unit's
	// stdout).
	Log io.Writer
	// Act does what break-glass's end asks: "reboot" or "poweroff".
	Act func(what string) error
	Now func() time.Time
}

// Run watches until ctx ends. c is the node's config as applied (nil:
// none); its access.expires, if any and still ahead, arms the end of
// break-glass.
func (w *Watcher) Run(ctx context.Context, c *nodeconfig.Config) error {
	if w.Every == 0 {
		w.Every = 2 * time.Second
	}
	if w.Now == nil {
		w.Now = time.Now
	}
	var expiry <-chan time.Time
	if c != nil && c.Access.BreakGlass && c.Access.Expires != nil {
		d := c.Access.Expires.Sub(w.Now())
		fmt.Fprintf(w.Log, "break-glass ends at %s (in %s): then %s\n", c.Access.Expires.UTC().Format(time.RFC3339), d.Round(time.Second), afterExpiry(c))
		if d < 0 {
			d = 0
		}
		t := time.NewTimer(d)
		defer t.Stop()
		expiry = t.C
	}
	tick := time.NewTicker(w.Every)
	defer tick.Stop()
	for {
		if err := w.Check(); err != nil {
			fmt.Fprintf(w.Log, "warning: logins: %v\n", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-expiry:
			what := afterExpiry(c)
			fmt.Fprintf(w.Log, "break-glass expired at %s (access.expires): %s\n", c.Access.Expires.UTC().Format(time.RFC3339), what)
			if err := w.Act(what); err != nil {
				return fmt.Errorf("%s at the end of break-glass: %w", what, err)
			}
			expiry = nil
		case <-tick.C:
		}
	}
}

func afterExpiry(c *nodeconfig.Config) string {
	if c.Access.AfterExpiry == nodeconfig.AfterExpiryPoweroff {
		return "poweroff"
	}
	return "reboot"
}

// Check records the logins wtmp gained since it was last read.
func (w *Watcher) Check() error {
	f, err := os.Open(w.Wtmp)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	off := int64(0)
	if b, err := os.ReadFile(w.Offset); err == nil {
		fmt.Sscan(string(b), &off)
	}
	if off > st.Size() || off%utmpSize != 0 {
		off = 0 // rotated or truncated: read it all
	}
	n := (st.Size() - off) / utmpSize * utmpSize
	if n == 0 {
		return nil
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		return fmt.Errorf("%s: %w", w.Wtmp, err)
	}
	var logins []record.Login
	for _, e := range parseUtmp(b) {
		if e.Type != userProcess || e.User == "" {
			continue
		}
		logins = append(logins, record.Login{Time: e.Time.UTC(), User: e.User, TTY: e.Line, Host: e.Host, Via: via(e.Line, e.Host), Boot: w.BootID})
	}
	if len(logins) > 0 {
		t, err := record.AddLogins(w.TaintFile, logins...)
		if err != nil {
			return fmt.Errorf("recording %d login(s) in %s: %w", len(logins), w.TaintFile, err)
		}
		for _, l := range logins {
			fmt.Fprintf(w.Log, "interactive login: %s: this node is tainted until it is re-imaged (%d login(s) recorded in %s)\n", l, t.LoginsTotal, w.TaintFile)
		}
	}
	if err := os.MkdirAll(filepath.Dir(w.Offset), 0o755); err != nil {
		return err
	}
	return fsync.WriteFile(w.Offset, []byte(fmt.Sprintf("%d\n", off+n)), 0o644)
}

// via says how a login came: from its terminal and remote host.
func via(line, host string) string {
	switch {
	case strings.HasPrefix(line, "ttyS"), strings.HasPrefix(line, "hvc"), strings.HasPrefix(line, "ttyAMA"), strings.HasPrefix(line, "ttyUSB"):
		return "serial console"
	case strings.HasPrefix(line, "tty"):
		return "console"
	case strings.HasPrefix(line, "pts/") && host != "":
		return "ssh"
	}
	return "pseudo-terminal"
}

// Entry is one utmp record, as far as logins go.
type Entry struct {
	Type int16
	PID  int32
	Line string
	User string
	Host string
	Time time.Time
}

// utmp as glibc lays it out on x86-64 and arm64 (struct utmp, 384 bytes).
const (
	utmpSize    = 384
	userProcess = 7 // USER_PROCESS: a logged-in user
)

// ReadUtmp reads a utmp or wtmp file.
func ReadUtmp(path string) ([]Entry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b)%utmpSize != 0 {
		return nil, fmt.Errorf("%s: %d bytes, not a whole number of %d-byte records", path, len(b), utmpSize)
	}
	return parseUtmp(b), nil
}

func parseUtmp(b []byte) []Entry {
	var out []Entry
	le := binary.LittleEndian
	for off := 0; off+utmpSize <= len(b); off += utmpSize {
		r := b[off : off+utmpSize]
		out = append(out, Entry{
			Type: int16(le.Uint16(r[0:])),
			PID:  int32(le.Uint32(r[4:])),
			Line: cstring(r[8:40]),
			User: cstring(r[44:76]),
			Host: cstring(r[76:332]),
			Time: time.Unix(int64(int32(le.Uint32(r[340:]))), int64(int32(le.Uint32(r[344:])))*1000),
		})
	}
	return out
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

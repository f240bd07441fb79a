// Package access gives break-glass its consequences on a running node:
// every interactive login is recorded on the state partition, where it
// taints the node until it is re-imaged, and said in the journal, which
// slate-logship ships; and break-glass ends at the config's
// access.expires, with a reboot (the node comes back on its config without
// access: the init drops an expired config's access) or a power-off (the
// platform replaces the node).
//
// Logins are read from utmp, not from logind: every login program writes
// utmp (login on a console or a serial line, sshd), while logind sees a
// session only where pam_systemd is installed, which Debian's minimal
// images (debootstrap --variant=minbase) leave out. /run/utmp is a tmpfs
// file, so it holds this boot's logins only; the keys of those already
// recorded are kept in /run, so a restart of the watcher records none
// twice.
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
	UtmpPath = "/run/utmp"
	SeenPath = "/run/slate/logins-seen"
)

// Watcher records logins and ends break-glass.
type Watcher struct {
	Utmp      string // UtmpPath
	Seen      string // SeenPath
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

// Check records the logins utmp shows that are not recorded yet.
func (w *Watcher) Check() error {
	entries, err := ReadUtmp(w.Utmp)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	if b, err := os.ReadFile(w.Seen); err == nil {
		for _, k := range strings.Fields(string(b)) {
			seen[k] = true
		}
	}
	var logins []record.Login
	var keys []string
	for _, e := range entries {
		if e.Type != userProcess || seen[e.key()] {
			continue
		}
		l := record.Login{Time: e.Time.UTC(), User: e.User, TTY: e.Line, Host: e.Host, Via: via(e.Line, e.Host), Boot: w.BootID}
		logins = append(logins, l)
		keys = append(keys, e.key())
	}
	if len(logins) == 0 {
		return nil
	}
	t, err := record.AddLogins(w.TaintFile, logins...)
	if err != nil {
		return fmt.Errorf("recording %d login(s) in %s: %w", len(logins), w.TaintFile, err)
	}
	for _, l := range logins {
		fmt.Fprintf(w.Log, "interactive login: %s: this node is tainted until it is re-imaged (%d login(s) recorded in %s)\n", l, t.LoginsTotal, w.TaintFile)
	}
	for k := range seen {
		keys = append(keys, k)
	}
	if err := os.MkdirAll(filepath.Dir(w.Seen), 0o755); err != nil {
		return err
	}
	return fsync.WriteFile(w.Seen, []byte(strings.Join(keys, "\n")+"\n"), 0o644)
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

func (e Entry) key() string {
	return fmt.Sprintf("%s/%d/%d", strings.ReplaceAll(e.Line, "/", "_"), e.PID, e.Time.UnixMicro())
}

// utmp as glibc lays it out on x86-64 and arm64 (struct utmp, 384 bytes).
const (
	utmpSize    = 384
	userProcess = 7 // USER_PROCESS: a logged-in user
)

// ReadUtmp reads a utmp file.
func ReadUtmp(path string) ([]Entry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b)%utmpSize != 0 {
		return nil, fmt.Errorf("%s: %d bytes, not a whole number of %d-byte records", path, len(b), utmpSize)
	}
	var out []Entry
	le := binary.LittleEndian
	for off := 0; off < len(b); off += utmpSize {
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
	return out, nil
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

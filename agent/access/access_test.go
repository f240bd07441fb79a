package access

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slate-os/slate/boot/nodeconfig"
	"github.com/slate-os/slate/boot/record"
)

// utmpRecord encodes e as glibc's struct utmp.
func utmpRecord(e Entry) []byte {
	r := make([]byte, utmpSize)
	le := binary.LittleEndian
	le.PutUint16(r[0:], uint16(e.Type))
	le.PutUint32(r[4:], uint32(e.PID))
	copy(r[8:40], e.Line)
	copy(r[44:76], e.User)
	copy(r[76:332], e.Host)
	le.PutUint32(r[340:], uint32(e.Time.Unix()))
	le.PutUint32(r[344:], uint32(e.Time.Nanosecond()/1000))
	return r
}

func writeUtmp(t *testing.T, path string, es ...Entry) {
	t.Helper()
	var b bytes.Buffer
	for _, e := range es {
		b.Write(utmpRecord(e))
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestLoginsTaint(t *testing.T) {
	dir := t.TempDir()
	var log syncBuf
	w := &Watcher{Wtmp: filepath.Join(dir, "wtmp"), Offset: filepath.Join(dir, "var", "read"), TaintFile: filepath.Join(dir, "var", "tainted"), BootID: "b1", Log: &log}
	at := time.Date(2026, 12, 7, 10, 0, 0, 123000, time.UTC)
	boot := Entry{Type: 2, Line: "~", User: "reboot", Time: at}
	getty := Entry{Type: 6, PID: 300, Line: "ttyS1", User: "LOGIN", Time: at}
	if err := w.Check(); err != nil { // no wtmp yet
		t.Fatal(err)
	}
	writeUtmp(t, w.Wtmp, boot, getty)
	if err := w.Check(); err != nil {
		t.Fatal(err)
	}
	if tt, _ := record.ReadTaint(w.TaintFile); tt != nil {
		t.Fatalf("tainted with no login: %+v", tt)
	}
	// A login and its logout, then an SSH login: appended, as wtmp is.
	root := Entry{Type: userProcess, PID: 300, Line: "ttyS1", User: "root", Time: at.Add(time.Second)}
	logout := Entry{Type: 8, PID: 300, Line: "ttyS1", Time: at.Add(2 * time.Second)}
	ssh := Entry{Type: userProcess, PID: 400, Line: "pts/0", User: "admin", Host: "192.0.2.7", Time: at.Add(2 * time.Second)}
	writeUtmp(t, w.Wtmp, boot, getty, root, logout, ssh)
	for range 2 { // a second check (a restarted watcher's) records nothing more
		if err := w.Check(); err != nil {
			t.Fatal(err)
		}
	}
	tt, err := record.ReadTaint(w.TaintFile)
	if err != nil || tt == nil || tt.LoginsTotal != 2 || !tt.Since.Equal(root.Time) {
		t.Fatalf("taint: %+v %v", tt, err)
	}
	if l := tt.Logins[0]; l.User != "root" || l.TTY != "ttyS1" || l.Via != "serial console" || l.Boot != "b1" {
		t.Errorf("first login: %+v", l)
	}
	if l := tt.Logins[1]; l.Via != "ssh" || l.Host != "192.0.2.7" {
		t.Errorf("second login: %+v", l)
	}
	if n := strings.Count(log.String(), "interactive login: "); n != 2 || !strings.Contains(log.String(), "root on ttyS1 (serial console)") {
		t.Errorf("log:\n%s", log.String())
	}
}

func TestViaAndBadUtmp(t *testing.T) {
	for line, want := range map[string]string{"ttyS0": "serial console", "hvc0": "serial console", "tty1": "console", "pts/3": "pseudo-terminal"} {
		if got := via(line, ""); got != want {
			t.Errorf("via(%q) = %q, want %q", line, got, want)
		}
	}
	p := filepath.Join(t.TempDir(), "utmp")
	os.WriteFile(p, make([]byte, 100), 0o644)
	if _, err := ReadUtmp(p); err == nil || !strings.Contains(err.Error(), "utmp") {
		t.Errorf("a torn utmp: %v", err)
	}
}

func TestExpiry(t *testing.T) {
	dir := t.TempDir()
	var log syncBuf
	acted := make(chan string, 1)
	w := &Watcher{Wtmp: filepath.Join(dir, "wtmp"), Offset: filepath.Join(dir, "read"), TaintFile: filepath.Join(dir, "tainted"),
		Log: &log, Every: 10 * time.Millisecond, Act: func(what string) error { acted <- what; return nil }}
	exp := time.Now().Add(50 * time.Millisecond)
	c := &nodeconfig.Config{Access: nodeconfig.Access{BreakGlass: true, Expires: &nodeconfig.Time{Time: exp}, AfterExpiry: nodeconfig.AfterExpiryPoweroff}}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go w.Run(ctx, c)
	select {
	case what := <-acted:
		if what != "poweroff" {
			t.Errorf("acted %q, want poweroff", what)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("break-glass did not end; log:\n%s", log.String())
	}
	if !strings.Contains(log.String(), "break-glass expired at") {
		t.Errorf("log:\n%s", log.String())
	}
}

// A rotated wtmp is read again from its start.
func TestWtmpRotated(t *testing.T) {
	dir := t.TempDir()
	var log syncBuf
	w := &Watcher{Wtmp: filepath.Join(dir, "wtmp"), Offset: filepath.Join(dir, "read"), TaintFile: filepath.Join(dir, "tainted"), Log: &log}
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	l := func(u string) Entry { return Entry{Type: userProcess, PID: 1, Line: "tty1", User: u, Time: at} }
	writeUtmp(t, w.Wtmp, l("a"), l("b"), l("c"))
	if err := w.Check(); err != nil {
		t.Fatal(err)
	}
	writeUtmp(t, w.Wtmp, l("d")) // rotated: smaller than what was read
	if err := w.Check(); err != nil {
		t.Fatal(err)
	}
	if tt, _ := record.ReadTaint(w.TaintFile); tt == nil || tt.LoginsTotal != 4 || tt.Logins[3].User != "d" {
		t.Errorf("after a rotation: %+v", tt)
	}
}

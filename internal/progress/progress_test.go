package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestLine(t *testing.T) {
	for _, c := range []struct {
		n, total int64
		elapsed  time.Duration
		want     string
	}{
		{812 << 20, 1229 << 20, 17 * time.Second, "rootfs: 812 MiB of 1.2 GiB (66%), 47 MiB/s, 9s left"},
		{0, 1 << 30, 0, "rootfs: 0 KiB of 1.0 GiB (0%)"},
		{100 << 20, 0, 2 * time.Second, "rootfs: 100 MiB, 50 MiB/s"},
		{512 << 10, 0, 0, "rootfs: 512 KiB"},
		{1 << 30, 1 << 30, 10 * time.Second, "rootfs: 1.0 GiB of 1.0 GiB (100%), 102 MiB/s"},
		{10 << 20, 3000 << 20, time.Second, "rootfs: 10 MiB of 2.9 GiB (0%), 10 MiB/s, 4m59s left"},
	} {
		if got := formatLine("rootfs", c.n, c.total, c.elapsed); got != c.want {
			t.Errorf("formatLine(%d, %d, %s) = %q, want %q", c.n, c.total, c.elapsed, got, c.want)
		}
	}
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// Off a terminal: one plain line every plainInterval, however often Bytes
// is called, and a last line when the step printed any.
func TestPlainCadence(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	var out bytes.Buffer
	r := newReporter(&out, false, c.now)
	r.Sized("root", 100<<20)
	for i := 1; i <= 120; i++ { // 12 s, a call every 100 ms
		c.advance(100 * time.Millisecond)
		r.Bytes(int64(i) << 19) // 5 MiB/s
	}
	r.Done()
	want := "root: 25 MiB of 100 MiB (25%), 5 MiB/s, 15s left\n" +
		"root: 50 MiB of 100 MiB (50%), 5 MiB/s, 10s left\n" +
		"root: 60 MiB in 12.0s\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}

	// A short step says nothing.
	out.Reset()
	r.Step("quick")
	c.advance(4 * time.Second)
	r.Bytes(1 << 20)
	r.Done()
	if out.Len() != 0 {
		t.Errorf("a 4 s step printed %q", out.String())
	}
}

func TestTerminal(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	var out bytes.Buffer
	r := newReporter(&out, true, c.now)
	r.Sized("push", 10<<20)
	c.advance(100 * time.Millisecond)
	r.Bytes(1 << 20) // too soon: not drawn
	c.advance(time.Second)
	r.Bytes(5 << 20)
	c.advance(time.Second)
	r.Done()
	lines := strings.Split(out.String(), "\r\033[K")
	want := []string{"", "push ...", "push: 5 MiB of 10 MiB (50%), 4 MiB/s, 1s left", "push: 5 MiB in 2.1s\n"}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", lines, want)
	}
}

func TestNil(t *testing.T) {
	var r *Reporter
	r.Step("x")
	r.Bytes(1)
	r.Done()
	Discard().Sized("y", 1)
}

package logship

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeJournal is a Source: entries in memory, cursors c1, c2, …; readers
// follow it as journalctl --follow does.
type fakeJournal struct {
	mu      sync.Mutex
	entries []*Entry
	more    chan struct{} // closed and replaced when entries are added
	opens   []string      // the cursors Open was given
}

func newFakeJournal(n int) *fakeJournal {
	j := &fakeJournal{more: make(chan struct{})}
	j.add(n)
	return j
}

var testBoot = "0123456789abcdef0123456789abcdef"

// add appends n entries.
func (j *fakeJournal) add(n int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for range n {
		i := len(j.entries) + 1
		j.entries = append(j.entries, &Entry{
			Cursor:     fmt.Sprintf("c%d", i),
			Time:       time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond),
			BootID:     testBoot,
			Unit:       "app.service",
			Identifier: "app",
			PID:        "42",
			Priority:   6,
			Facility:   3,
			Message:    fmt.Appendf(nil, "message %d", i),
		})
	}
	close(j.more)
	j.more = make(chan struct{})
}

func (j *fakeJournal) openedWith() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.opens...)
}

func (j *fakeJournal) Open(ctx context.Context, cursor string) (Reader, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.opens = append(j.opens, cursor)
	pos := 0
	if cursor != "" {
		pos = -1
		for i, e := range j.entries {
			if e.Cursor == cursor {
				pos = i + 1
			}
		}
		if pos < 0 {
			return nil, fmt.Errorf("no entry at cursor %q", cursor)
		}
	}
	return &fakeReader{j: j, pos: pos, closed: make(chan struct{})}, nil
}

type fakeReader struct {
	j      *fakeJournal
	pos    int
	closed chan struct{}
	once   sync.Once
}

func (r *fakeReader) Next() (*Entry, error) {
	for {
		r.j.mu.Lock()
		if r.pos < len(r.j.entries) {
			e := r.j.entries[r.pos]
			r.pos++
			r.j.mu.Unlock()
			return e, nil
		}
		more := r.j.more
		r.j.mu.Unlock()
		select {
		case <-more:
		case <-r.closed:
			return nil, errors.New("closed")
		}
	}
}

func (r *fakeReader) Close() error {
	r.once.Do(func() { close(r.closed) })
	return nil
}

// rmsg is a syslog message as the fake collector parsed it.
type rmsg struct {
	Pri                            int
	Time, Host, App, ProcID, MsgID string
	SDID                           string
	Params                         map[string]string
	Msg                            string
	HasMsg                         bool
	Conn                           int // which connection brought it
}

// parseSyslog parses an RFC 5424 message with at most one SD-ELEMENT.
func parseSyslog(s string) (rmsg, error) {
	var m rmsg
	if !strings.HasPrefix(s, "<") {
		return m, fmt.Errorf("no PRI: %q", s)
	}
	end := strings.Index(s, ">1 ")
	if end < 0 {
		return m, fmt.Errorf("no version 1: %q", s)
	}
	pri, err := strconv.Atoi(s[1:end])
	if err != nil || pri < 0 || pri > 191 {
		return m, fmt.Errorf("bad PRI: %q", s)
	}
	m.Pri = pri
	rest := s[end+3:]
	f := strings.SplitN(rest, " ", 6)
	if len(f) < 6 {
		return m, fmt.Errorf("short header: %q", s)
	}
	m.Time, m.Host, m.App, m.ProcID, m.MsgID, rest = f[0], f[1], f[2], f[3], f[4], f[5]
	for _, h := range []string{m.Host, m.App, m.ProcID, m.MsgID} {
		for _, c := range []byte(h) {
			if c < 33 || c > 126 {
				return m, fmt.Errorf("header field %q is not PRINTUSASCII", h)
			}
		}
	}
	if m.Time != "-" {
		if _, err := time.Parse(time.RFC3339Nano, m.Time); err != nil {
			return m, err
		}
	}
	switch {
	case strings.HasPrefix(rest, "-"):
		rest = rest[1:]
	case strings.HasPrefix(rest, "["):
		i := strings.IndexAny(rest, " ]")
		if i < 0 {
			return m, fmt.Errorf("unterminated SD: %q", s)
		}
		m.SDID, rest = rest[1:i], rest[i:]
		m.Params = map[string]string{}
		for strings.HasPrefix(rest, " ") {
			eq := strings.Index(rest, `="`)
			if eq < 0 {
				return m, fmt.Errorf("bad SD-PARAM: %q", rest)
			}
			name := rest[1:eq]
			rest = rest[eq+2:]
			var v strings.Builder
			for {
				if rest == "" {
					return m, fmt.Errorf("unterminated PARAM-VALUE in %q", s)
				}
				c := rest[0]
				rest = rest[1:]
				if c == '\\' && rest != "" && strings.ContainsRune(`"\]`, rune(rest[0])) {
					v.WriteByte(rest[0])
					rest = rest[1:]
					continue
				}
				if c == '"' {
					break
				}
				if c == ']' {
					return m, fmt.Errorf("unescaped ] in PARAM-VALUE: %q", s)
				}
				v.WriteByte(c)
			}
			m.Params[name] = v.String()
		}
		if !strings.HasPrefix(rest, "]") {
			return m, fmt.Errorf("SD not closed: %q", s)
		}
		rest = rest[1:]
	default:
		return m, fmt.Errorf("no SD: %q", s)
	}
	if rest != "" {
		if rest[0] != ' ' {
			return m, fmt.Errorf("no space before MSG: %q", s)
		}
		m.Msg, m.HasMsg = rest[1:], true
	}
	return m, nil
}

// readFrame reads one octet-counted frame.
func readFrame(br *bufio.Reader) (string, error) {
	n := 0
	for digits := 0; ; digits++ {
		c, err := br.ReadByte()
		if err != nil {
			return "", err
		}
		if c == ' ' && digits > 0 {
			break
		}
		if c < '0' || c > '9' || digits > 8 {
			return "", fmt.Errorf("bad frame length byte %q", c)
		}
		n = n*10 + int(c-'0')
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(br, buf); err != nil {
		return "", err
	}
	return string(buf), nil
}

// collector is a fake syslog collector on the loopback: TCP or TLS,
// octet-counted RFC 5424.
type collector struct {
	t      *testing.T
	addr   string
	tls    *tls.Config
	rcvbuf int // SO_RCVBUF of accepted connections, when > 0

	mu       sync.Mutex
	ln       net.Listener
	conns    []net.Conn
	msgs     []rmsg
	errs     []error
	accepted int
	peers    []string // client certificates' CNs
	paused   bool     // accepted connections are not read
}

func newCollector(t *testing.T, tlsCfg *tls.Config) *collector {
	c := &collector{t: t, tls: tlsCfg}
	c.start("127.0.0.1:0")
	t.Cleanup(c.stop)
	return c
}

func (c *collector) start(addr string) {
	lc := net.ListenConfig{}
	if c.rcvbuf > 0 {
		lc.Control = func(network, address string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, c.rcvbuf)
			})
			return errors.Join(err, serr)
		}
	}
	var ln net.Listener
	var err error
	for range 50 { // the port of a stopped collector may linger a moment
		if ln, err = lc.Listen(context.Background(), "tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.ln, c.addr = ln, ln.Addr().String()
	c.mu.Unlock()
	go c.serve(ln)
}

// stop closes the listener and every connection: the collector is down.
func (c *collector) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ln != nil {
		c.ln.Close()
		c.ln = nil
	}
	for _, cn := range c.conns {
		cn.Close()
	}
	c.conns = nil
}

func (c *collector) setPaused(p bool) {
	c.mu.Lock()
	c.paused = p
	c.mu.Unlock()
}

func (c *collector) serve(ln net.Listener) {
	for {
		cn, err := ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		c.accepted++
		id := c.accepted
		paused := c.paused
		c.conns = append(c.conns, cn)
		c.mu.Unlock()
		go c.handle(cn, id, paused)
	}
}

func (c *collector) handle(cn net.Conn, id int, paused bool) {
	var r io.Reader = cn
	if c.tls != nil {
		tc := tls.Server(cn, c.tls)
		if err := tc.Handshake(); err != nil {
			c.fail(fmt.Errorf("handshake: %w", err))
			cn.Close()
			return
		}
		if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
			c.mu.Lock()
			c.peers = append(c.peers, pc[0].Subject.CommonName)
			c.mu.Unlock()
		}
		r = tc
	}
	if paused {
		return // held open, never read, until stop
	}
	br := bufio.NewReader(r)
	for {
		s, err := readFrame(br)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.fail(err)
			}
			return
		}
		m, err := parseSyslog(s)
		if err != nil {
			c.fail(err)
			continue
		}
		m.Conn = id
		c.mu.Lock()
		c.msgs = append(c.msgs, m)
		c.mu.Unlock()
	}
}

func (c *collector) fail(err error) {
	c.mu.Lock()
	c.errs = append(c.errs, err)
	c.mu.Unlock()
}

func (c *collector) messages() []rmsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]rmsg(nil), c.msgs...)
}

func (c *collector) errors() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.errs...)
}

// logRecorder keeps the shipper's lines.
type logRecorder struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) log(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
	l.t.Log("shipper: " + s)
}

// count is how many lines contain sub.
func (l *logRecorder) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

func (l *logRecorder) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

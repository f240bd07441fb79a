package logship

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/agent/history"
	"github.com/slate-os/slate/internal/fsync"
)

// DefaultStateDir is where the shipper keeps its cursor on a node: on the
// state partition, so that it survives reboots (and a new image: the
// journal it points into is on /var too).
const DefaultStateDir = history.DefaultDir + "/logship"

// CursorFile is the cursor's file in the state directory: the journal
// cursor of the last entry the collector's TCP stack acknowledged.
const CursorFile = "cursor"

// Defaults of Options.
const (
	DefaultMinBackoff   = time.Second
	DefaultMaxBackoff   = 30 * time.Second
	DefaultDialTimeout  = 10 * time.Second
	DefaultAckTimeout   = 30 * time.Second
	DefaultSettle       = time.Second
	DefaultLinger       = 200 * time.Millisecond
	DefaultBatchEntries = 512
	DefaultBatchBytes   = 1 << 20
)

// Options configure Run. Only Collector is required.
type Options struct {
	// Collector is tcp://HOST:PORT or tls://HOST:PORT.
	Collector string
	// TLS configures tls:// (TLSConfig makes it from the node config);
	// nil: the system roots, no client certificate. Its ServerName, when
	// empty, is the collector's host; TLS 1.2 is the least accepted.
	TLS *tls.Config

	// StateDir holds the cursor; DefaultStateDir when empty.
	StateDir string
	// HistoryDir is the history store whose rollbacks/ are shipped;
	// history.DefaultDir when empty.
	HistoryDir string
	// Source gives the entries; Journalctl{} when nil.
	Source Source
	// Hostname is HOSTNAME for entries without _HOSTNAME and for the
	// rollbacks' logs; os.Hostname() when empty.
	Hostname string
	// Log prints the shipper's own lines (outages, warnings); to stderr,
	// hence the journal, when nil.
	Log func(format string, args ...any)
	// Now is the clock for the rollbacks' marks; time.Now when nil.
	Now func() time.Time

	// MinBackoff and MaxBackoff bound the wait between connections: it
	// doubles after each failure and starts again at MinBackoff once a
	// connection settled.
	MinBackoff, MaxBackoff time.Duration
	// DialTimeout bounds the connection and the TLS handshake.
	DialTimeout time.Duration
	// AckTimeout is how long sending a batch, or waiting for the
	// collector to acknowledge it, may go without progress before the
	// connection is given up.
	AckTimeout time.Duration
	// Settle is how long a new connection must stay up before anything is
	// sent on it (at least four times what connecting took): a load
	// balancer without a backend accepts and then drops, and a TLS 1.3
	// server rejects a client certificate only after the client's
	// handshake is done. Data sent into either could be acknowledged by
	// the TCP stack and lost.
	Settle time.Duration
	// Linger is how long a batch waits for more entries before it is sent.
	Linger time.Duration
	// BatchEntries and BatchBytes bound a batch: what is held in memory.
	BatchEntries, BatchBytes int
}

func (o *Options) defaults() {
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.HistoryDir == "" {
		o.HistoryDir = history.DefaultDir
	}
	if o.Source == nil {
		o.Source = Journalctl{}
	}
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
	}
	if o.Log == nil {
		o.Log = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.MinBackoff, DefaultMinBackoff)
	def(&o.MaxBackoff, DefaultMaxBackoff)
	def(&o.DialTimeout, DefaultDialTimeout)
	def(&o.AckTimeout, DefaultAckTimeout)
	def(&o.Settle, DefaultSettle)
	def(&o.Linger, DefaultLinger)
	if o.BatchEntries <= 0 {
		o.BatchEntries = DefaultBatchEntries
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = DefaultBatchBytes
	}
}

// ParseCollector splits tcp://HOST:PORT or tls://HOST:PORT.
func ParseCollector(collector string) (useTLS bool, hostport string, err error) {
	scheme, hostport, ok := strings.Cut(collector, "://")
	if ok && (scheme == "tcp" || scheme == "tls") {
		if host, port, err := net.SplitHostPort(hostport); err == nil && host != "" && port != "" {
			return scheme == "tls", hostport, nil
		}
	}
	return false, "", fmt.Errorf("collector %q is not tls://HOST:PORT or tcp://HOST:PORT", collector)
}

// Run ships the journal, and the logs kept from boots that rolled back,
// to o.Collector until ctx is done. It returns an error only for Options
// it cannot use: a collector that is down, refuses the connection or
// drops it is retried for ever, with backoff.
func Run(ctx context.Context, o Options) error {
	o.defaults()
	useTLS, hostport, err := ParseCollector(o.Collector)
	if err != nil {
		return err
	}
	s := &shipper{o: o, addr: hostport}
	if useTLS {
		cfg := &tls.Config{}
		if o.TLS != nil {
			cfg = o.TLS.Clone()
		}
		if cfg.MinVersion < tls.VersionTLS12 {
			cfg.MinVersion = tls.VersionTLS12
		}
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(hostport)
		}
		s.tls = cfg
	}
	s.run(ctx)
	return nil
}

type shipper struct {
	o    Options
	addr string
	tls  *tls.Config // nil for tcp://

	cursor  string    // the saved cursor
	pending []pending // rollbacks to ship

	// state is the collector's, as last logged: one line per change.
	state state
	// journalFailing and cursorFailing: a failure was logged, and not
	// logged again until it goes away.
	journalFailing, cursorFailing bool
	// delivered: the session acknowledged a batch.
	delivered bool
}

type state int

const (
	stateUnknown state = iota
	stateUp
	stateDown
)

// journalError is a failure of the source, not of the collector.
type journalError struct{ err error }

func (e *journalError) Error() string { return "journal: " + e.err.Error() }
func (e *journalError) Unwrap() error { return e.err }

func (s *shipper) log(format string, args ...any) { s.o.Log(format, args...) }

func (s *shipper) run(ctx context.Context) {
	if err := os.MkdirAll(s.o.StateDir, 0o755); err != nil {
		s.log("warning: %v: the cursor cannot be kept, a restart ships the journal again from its start", err)
	}
	s.cursor = s.loadCursor()
	s.pending = s.findRollbacks()
	backoff := s.o.MinBackoff
	for {
		s.delivered = false
		settled, err := s.session(ctx)
		if ctx.Err() != nil {
			return
		}
		var jerr *journalError
		isJournal := errors.As(err, &jerr)
		// A connection that worked starts the backoff again; a journal
		// that fails at once does not (nor does it spin).
		if s.delivered || (settled && !isJournal) {
			backoff = s.o.MinBackoff
		}
		if isJournal {
			if !s.journalFailing {
				s.log("%v; reading it again from %s", err, s.cursorName())
				s.journalFailing = true
			}
		} else if s.state != stateDown {
			s.log("collector %s unreachable: %v; retrying", s.o.Collector, err)
			s.state = stateDown
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, s.o.MaxBackoff)
	}
}

func (s *shipper) cursorName() string {
	if s.cursor == "" {
		return "the start of the journal"
	}
	return "cursor " + s.cursor
}

// session connects, ships the pending rollbacks and follows the journal
// from the cursor until something fails; settled says whether the
// connection got as far as being used.
func (s *shipper) session(ctx context.Context) (settled bool, err error) {
	start := time.Now()
	c, err := s.dial(ctx)
	if err != nil {
		return false, err
	}
	defer c.close()
	if err := c.settle(ctx, max(s.o.Settle, 4*time.Since(start))); err != nil {
		return false, err
	}
	if s.state != stateUp {
		s.log("collector %s: connected, shipping from %s", s.o.Collector, s.cursorName())
		s.state = stateUp
	}
	for len(s.pending) > 0 {
		if err := s.shipRollback(ctx, c, s.pending[0]); err != nil {
			var skip *skipError
			if !errors.As(err, &skip) {
				return true, err
			}
			s.log("warning: %v: skipped, not marked shipped", err)
		}
		s.pending = s.pending[1:]
	}
	return true, s.follow(ctx, c)
}

type item struct {
	e   *Entry
	err error
}

// follow ships the journal from the cursor, a batch at a time, until the
// connection or the source fails.
func (s *shipper) follow(ctx context.Context, c *conn) error {
	got := 0
	r, err := s.o.Source.Open(ctx, s.cursor)
	if err != nil {
		return s.journalFailed(err, got)
	}
	items := make(chan item)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			e, err := r.Next()
			select {
			case items <- item{e, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		r.Close()
		<-done
	}()

	var b batch
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	defer linger.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.dead:
			return c.err
		case <-linger.C:
			if err := s.flush(ctx, c, &b); err != nil {
				return err
			}
		case it := <-items:
			if it.err != nil {
				if err := s.flush(ctx, c, &b); err != nil {
					return err
				}
				return s.journalFailed(it.err, got)
			}
			got++
			s.journalFailing = false
			m := it.e.ToMessage(s.o.Hostname)
			b.add(&m, it.e.Cursor)
			if b.n == 1 {
				linger.Reset(s.o.Linger)
			}
			if b.n >= s.o.BatchEntries || len(b.buf) >= s.o.BatchBytes {
				linger.Stop()
				if err := s.flush(ctx, c, &b); err != nil {
					return err
				}
			}
		}
	}
}

// journalFailed is the error for a failure of the source. journalctl
// refuses a cursor it cannot parse ("Failed to seek to cursor") before
// printing anything, which would stop the shipping for good: reading
// starts again from the start of the journal instead (duplicates, never
// loss).
func (s *shipper) journalFailed(err error, got int) error {
	if got == 0 && s.cursor != "" && strings.Contains(err.Error(), "seek to cursor") {
		s.log("warning: %v: shipping the journal from its start", err)
		s.cursor = ""
	}
	return &journalError{err}
}

// batch is the frames of the messages being sent, and the cursor of the
// last entry among them.
type batch struct {
	buf    []byte
	n      int
	cursor string
}

func (b *batch) add(m *Message, cursor string) {
	b.buf = AppendFrame(b.buf, m)
	b.n++
	if cursor != "" {
		b.cursor = cursor
	}
}

// flush sends b, waits until the collector's TCP stack has acknowledged
// every byte, and only then saves b's cursor.
func (s *shipper) flush(ctx context.Context, c *conn, b *batch) error {
	if b.n == 0 {
		return nil
	}
	if err := c.send(b.buf, s.o.AckTimeout); err != nil {
		return err
	}
	if err := c.waitAcked(ctx, s.o.AckTimeout); err != nil {
		return err
	}
	s.delivered = true
	if b.cursor != "" {
		s.saveCursor(b.cursor)
	}
	if cap(b.buf) > 2*s.o.BatchBytes {
		b.buf = nil // one huge message grew it
	}
	b.buf, b.n, b.cursor = b.buf[:0], 0, ""
	return nil
}

// loadCursor reads the saved cursor; with none, or one that cannot be
// read, the journal is shipped from its start: duplicates, never loss.
func (s *shipper) loadCursor() string {
	path := filepath.Join(s.o.StateDir, CursorFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	if err != nil {
		s.log("warning: %v: shipping the journal from its start", err)
		return ""
	}
	c := strings.TrimSpace(string(data))
	if !validCursor(c) {
		s.log("warning: %s: not a journal cursor: shipping the journal from its start", path)
		return ""
	}
	return c
}

// validCursor: journald's cursors are short printable ASCII
// (s=…;i=…;b=…;m=…;t=…;x=…).
func validCursor(c string) bool {
	if c == "" || len(c) > 1024 {
		return false
	}
	for i := 0; i < len(c); i++ {
		if c[i] < 33 || c[i] > 126 {
			return false
		}
	}
	return true
}

// saveCursor keeps c in memory and on disk (temporary file, fsync,
// rename). A cursor that cannot be written is said once: a restart then
// ships again what was shipped since, which at-least-once allows.
func (s *shipper) saveCursor(c string) {
	s.cursor = c
	path := filepath.Join(s.o.StateDir, CursorFile)
	if err := fsync.WriteFile(path, []byte(c+"\n"), 0o644); err != nil {
		if !s.cursorFailing {
			s.log("warning: saving the cursor: %v: a restart will ship again what was shipped since", err)
			s.cursorFailing = true
		}
		return
	}
	s.cursorFailing = false
}

// conn is a connection to the collector.
type conn struct {
	nc  net.Conn     // what is written to: the TCP or the TLS connection
	tcp *net.TCPConn // the TCP connection under it, whose queue is watched
	// dead is closed when the collector closed the connection, with err
	// saying how. (A syslog collector sends nothing; anything it does send
	// is read and dropped, so that the close is seen.)
	dead chan struct{}
	err  error
	// stop undoes the closing of the connection when the context is done.
	stop func() bool
}

func (s *shipper) dial(ctx context.Context) (*conn, error) {
	d := net.Dialer{Timeout: s.o.DialTimeout, KeepAlive: 15 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, err
	}
	tcp, ok := raw.(*net.TCPConn)
	if !ok {
		raw.Close()
		return nil, fmt.Errorf("dial %s: not a TCP connection (%T)", s.addr, raw)
	}
	c := &conn{nc: raw, tcp: tcp, dead: make(chan struct{})}
	if s.tls != nil {
		tc := tls.Client(raw, s.tls)
		hctx, cancel := context.WithTimeout(ctx, s.o.DialTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", s.addr, err)
		}
		c.nc = tc
	}
	// Cancelling ends a write or a wait for acknowledgement at once.
	c.stop = context.AfterFunc(ctx, func() { c.tcp.Close() })
	go func() {
		_, err := io.Copy(io.Discard, c.nc)
		if err == nil {
			err = io.EOF
		}
		c.err = fmt.Errorf("the collector closed the connection: %w", err)
		close(c.dead)
	}()
	return c, nil
}

// close closes the connection; TLS's close_notify only when the queue is
// empty (it could wait seconds behind a collector that stopped reading).
func (c *conn) close() {
	c.stop()
	if n, _, err := unacked(c.tcp); err == nil && n == 0 {
		c.nc.Close()
		return
	}
	c.tcp.Close()
}

// settle waits d, failing if the collector drops the connection meanwhile.
func (c *conn) settle(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.dead:
		return c.err
	case <-t.C:
		return nil
	}
}

// sendChunk is how much is written at once: the deadline is per chunk, so
// that a slow collector that keeps reading is not given up.
const sendChunk = 64 << 10

func (c *conn) send(data []byte, stall time.Duration) error {
	select {
	case <-c.dead: // the collector closed: nothing sent now would count
		return c.err
	default:
	}
	for len(data) > 0 {
		n := min(len(data), sendChunk)
		c.nc.SetWriteDeadline(time.Now().Add(stall))
		if _, err := c.nc.Write(data[:n]); err != nil {
			return fmt.Errorf("sending: %w", err)
		}
		data = data[n:]
	}
	return nil
}

// tcpEstablished is the TCP state (include/net/tcp_states.h) in which an
// acknowledgement means the collector's socket took the bytes. Not
// CLOSE_WAIT: once the collector has closed its side, what it still
// acknowledges may never be read. A NAT in the way (QEMU's user network,
// a load balancer) acknowledges for it and drops the bytes when it finds
// the collector's side gone, which lost logs in slate's own test.
const tcpEstablished = 1

// waitAcked waits until the socket's send queue is empty: SIOCOUTQ is the
// bytes written but not yet acknowledged by the peer (write_seq -
// snd_una), so 0 means the collector's TCP stack has every byte sent so
// far. A connection reset purges the queue, so the TCP state must also
// still be one where the peer's socket is open. It fails when the queue
// makes no progress for stall.
func (c *conn) waitAcked(ctx context.Context, stall time.Duration) error {
	deadline := time.Now().Add(stall)
	last := -1
	poll := time.Millisecond
	for {
		n, st, err := unacked(c.tcp)
		if err != nil {
			return fmt.Errorf("waiting for the collector's acknowledgement: %w", err)
		}
		if st != tcpEstablished {
			select {
			case <-c.dead:
				return c.err
			default:
				return fmt.Errorf("the connection closed (TCP state %d) with %d bytes unacknowledged", st, n)
			}
		}
		if n == 0 {
			return nil
		}
		now := time.Now()
		if last < 0 || n < last {
			deadline = now.Add(stall)
		}
		last = n
		if now.After(deadline) {
			return fmt.Errorf("%d bytes not acknowledged by the collector for %s", n, stall)
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		poll = min(2*poll, 50*time.Millisecond)
	}
}

// unacked is the socket's SIOCOUTQ and its TCP state.
func unacked(tc *net.TCPConn) (n int, state uint8, err error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	cerr := rc.Control(func(fd uintptr) {
		n, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		if err != nil {
			err = fmt.Errorf("SIOCOUTQ: %w", err)
			return
		}
		var info *unix.TCPInfo
		if info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err != nil {
			err = fmt.Errorf("TCP_INFO: %w", err)
			return
		}
		state = info.State
	})
	if cerr != nil {
		return 0, 0, cerr
	}
	return n, state, err
}

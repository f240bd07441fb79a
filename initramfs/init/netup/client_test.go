package netup

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fast shortens the retransmission schedule for a test.
func fast(t *testing.T) {
	t.Helper()
	r, j, s := retransmit, retransmitJitter, pollSlice
	retransmit, retransmitJitter, pollSlice = []time.Duration{40 * time.Millisecond, 80 * time.Millisecond}, 5*time.Millisecond, 20*time.Millisecond
	t.Cleanup(func() { retransmit, retransmitJitter, pollSlice = r, j, s })
}

// fakeServer answers a client as a DHCP server would, with the
// misbehaviours a test asks for.
type fakeServer struct {
	offer IP4
	id    IP4
	opts  map[byte][]byte // in OFFERs and ACKs

	silent         bool // answers nothing
	dropDiscovers  int  // the first n DISCOVERs go unanswered
	nakRequests    int  // the first n REQUESTs are NAKed
	ignoreRequests bool
	noise          bool // replies that are not the client's before each real one

	mu  sync.Mutex
	got []*message
}

func (s *fakeServer) received(typ byte) []*message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ms []*message
	for _, m := range s.got {
		if m.typ() == typ {
			ms = append(ms, m)
		}
	}
	return ms
}

func (s *fakeServer) answer(m *message) [][]byte {
	s.mu.Lock()
	s.got = append(s.got, m)
	s.mu.Unlock()
	n := len(s.received(m.typ()))
	mk := func(typ byte, id IP4) *message {
		r := &message{op: opReply, xid: m.xid, flags: m.flags, yiaddr: s.offer, chaddr: m.chaddr, opts: map[byte][]byte{
			optMessageType: {typ}, optServerID: id[:]}}
		for k, v := range s.opts {
			r.opts[k] = v
		}
		return r
	}
	var out [][]byte
	if s.silent || m.op != opRequest {
		return nil
	}
	switch m.typ() {
	case msgDiscover:
		if n <= s.dropDiscovers {
			return nil
		}
		if s.noise {
			other := mk(msgOffer, s.id)
			other.xid++
			stranger := mk(msgOffer, s.id)
			stranger.chaddr = []byte{9, 9, 9, 9, 9, 9}
			request := mk(msgOffer, s.id)
			request.op = opRequest
			noServer := mk(msgOffer, s.id)
			delete(noServer.opts, optServerID)
			out = append(out, []byte("not DHCP"), other.marshal(), stranger.marshal(), request.marshal(), noServer.marshal(), mk(msgAck, s.id).marshal())
		}
		return append(out, mk(msgOffer, s.id).marshal())
	case msgRequest:
		if s.ignoreRequests {
			return nil
		}
		if n <= s.nakRequests {
			nak := mk(msgNak, s.id)
			nak.yiaddr = IP4{}
			nak.opts = map[byte][]byte{optMessageType: {msgNak}, optServerID: s.id[:], optMessage: []byte("wrong network")}
			return [][]byte{nak.marshal()}
		}
		if s.noise {
			out = append(out, mk(msgAck, IP4{10, 9, 9, 9}).marshal(), mk(msgOffer, s.id).marshal())
		}
		return append(out, mk(msgAck, s.id).marshal())
	}
	return nil
}

// serve answers on c until stop is closed.
func (s *fakeServer) serve(c conn, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		b, err := c.recv(10 * time.Millisecond)
		if err != nil {
			continue
		}
		m, err := parseMessage(b)
		if err != nil {
			continue
		}
		for _, r := range s.answer(m) {
			c.send(r)
		}
	}
}

// socketPair returns two connected datagram sockets as conns.
func socketPair(t *testing.T) (conn, conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &sockConn{fd: fds[0]}, &sockConn{fd: fds[1]}
}

// start serves s on the far end of a socket pair and returns the near end.
func start(t *testing.T, s *fakeServer) conn {
	t.Helper()
	c, sc := socketPair(t)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { s.serve(sc, stop); close(done) }()
	t.Cleanup(func() { close(stop); <-done; c.close(); sc.close() })
	return c
}

var testHW = []byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}

func testServer() *fakeServer {
	return &fakeServer{offer: IP4{10, 0, 2, 15}, id: IP4{10, 0, 2, 2}, opts: map[byte][]byte{
		optSubnetMask: {255, 255, 255, 0}, optRouter: {10, 0, 2, 2}, optLeaseTime: {0, 1, 81, 128}}}
}

func TestExchange(t *testing.T) {
	fast(t)
	for _, tc := range []struct {
		name      string
		server    func(*fakeServer)
		discovers int // at least
		requests  int // exactly
		err       string
	}{
		{"lease", func(*fakeServer) {}, 1, 1, ""},
		{"lost discovers", func(s *fakeServer) { s.dropDiscovers = 2 }, 3, 1, ""},
		{"noise ignored", func(s *fakeServer) { s.noise = true }, 1, 1, ""},
		{"nak, then a lease", func(s *fakeServer) { s.nakRequests = 1 }, 2, 2, ""},
		{"no server", func(s *fakeServer) { s.silent = true }, 3, 0, "no DHCP offer in"},
		{"no ack", func(s *fakeServer) { s.ignoreRequests = true }, 2, -1, "no DHCP ACK in"},
		{"naks only", func(s *fakeServer) { s.nakRequests = 1000 }, 2, -1, `NAKs (last "wrong network")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testServer()
			tc.server(s)
			c := start(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
			defer cancel()
			var logs []string
			t0 := time.Now()
			l, err := exchange(ctx, c, testHW, func(f string, a ...any) { logs = append(logs, f) })
			if d := time.Since(t0); d > time.Second {
				t.Errorf("took %s, beyond its context's bound", d)
			}
			discovers, requests := s.received(msgDiscover), s.received(msgRequest)
			if len(discovers) < tc.discovers || (tc.requests >= 0 && len(requests) != tc.requests) {
				t.Errorf("server saw %d DISCOVERs, %d REQUESTs; want %d+, %d", len(discovers), len(requests), tc.discovers, tc.requests)
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q (lease %v, %d log lines)", err, tc.err, l, len(logs))
				}
				return
			}
			if err != nil {
				t.Fatalf("%v (log %q)", err, logs)
			}
			if l.Addr != s.offer || l.Bits != 24 || l.Router != (IP4{10, 0, 2, 2}) || l.Server != s.id || l.Duration != 24*time.Hour || l.Took <= 0 {
				t.Errorf("lease %+v", l)
			}
			for _, m := range append(discovers, requests...) {
				if m.flags != flagBroadcst || string(m.chaddr) != string(testHW) || string(m.opts[optClientID]) != "\x01"+string(testHW) ||
					string(m.opts[optParamRequest]) != string(paramRequest) {
					t.Errorf("%s: flags %x, chaddr % x, options %v", m, m.flags, m.chaddr, m.opts)
				}
			}
			last := requests[len(requests)-1]
			if ip, _ := last.ip(optRequestedIP); ip != s.offer || string(last.opts[optServerID]) != string(s.id[:]) || !last.ciaddr.IsZero() {
				t.Errorf("REQUEST asks for %s from % x (ciaddr %s)", ip, last.opts[optServerID], last.ciaddr)
			}
			if last.xid != discovers[len(discovers)-1].xid {
				t.Errorf("REQUEST xid %08x, DISCOVER's %08x", last.xid, discovers[len(discovers)-1].xid)
			}
			if tc.name == "nak, then a lease" && discovers[0].xid == discovers[1].xid {
				t.Error("a new exchange after a NAK kept its xid")
			}
		})
	}
}

// A cancelled context ends the exchange within a poll slice.
func TestExchangeCancelled(t *testing.T) {
	fast(t)
	s := testServer()
	s.silent = true
	c := start(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	t0 := time.Now()
	_, err := exchange(ctx, c, testHW, func(string, ...any) {})
	if err == nil || time.Since(t0) > 300*time.Millisecond {
		t.Errorf("err %v after %s", err, time.Since(t0))
	}
}

type brokenConn struct{}

func (brokenConn) send([]byte) error                  { return unix.ENETDOWN }
func (brokenConn) recv(time.Duration) ([]byte, error) { return nil, errTimeout }
func (brokenConn) close() error                       { return nil }

func TestExchangeSendError(t *testing.T) {
	_, err := exchange(context.Background(), brokenConn{}, testHW, func(string, ...any) {})
	if !errors.Is(err, unix.ENETDOWN) || !strings.Contains(err.Error(), "sending DISCOVER") {
		t.Errorf("err %v", err)
	}
}

package netup

// The DHCPv4 client's exchange: DISCOVER, OFFER, REQUEST, ACK, over a
// socket bound to one interface, with the BROADCAST flag so that replies
// reach an interface that has no address yet.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// conn is the client's socket on one interface.
type conn interface {
	// send broadcasts a message to the servers' port.
	send(b []byte) error
	// recv returns the next datagram, or errTimeout when none came in d.
	recv(d time.Duration) ([]byte, error)
	close() error
}

var errTimeout = errors.New("timed out")

// Retransmission: a DISCOVER or REQUEST unanswered is sent again after
// these delays, the last one repeating, each with up to retransmitJitter
// added (RFC 2131 4.1 wants randomised backoff; its 4 s start is for
// networks slower than a cloud's).
var (
	retransmit       = []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second}
	retransmitJitter = 100 * time.Millisecond
	// requestTries bounds the REQUESTs for one offer before the client
	// starts over with a DISCOVER.
	requestTries = 3
	// pollSlice bounds one wait, so that a cancelled context is noticed.
	pollSlice = 250 * time.Millisecond
)

// paramRequest are the options asked for.
var paramRequest = []byte{optSubnetMask, optRouter, optLeaseTime, optServerID, optMTU, optClasslessRoute}

// Lease is what the client got, and where.
type Lease struct {
	// Interface is the interface's name (eth0, ens5).
	Interface string
	// Addr and Bits are the address and its prefix length.
	Addr IP4
	Bits int
	// Router is the first router the server gave (option 3), zero if none.
	Router IP4
	// Routes are the classless static routes (option 121).
	Routes []Route
	// Server is the DHCP server's identifier (option 54).
	Server IP4
	// Duration is the lease time; zero when the server gave none.
	Duration time.Duration
	// MTU is the interface MTU the server gave (option 26), 0 if none.
	MTU int
	// Took is the time from the first DISCOVER to the ACK.
	Took time.Duration
}

// String is "10.0.2.15/24 via 10.0.2.2".
func (l *Lease) String() string {
	s := fmt.Sprintf("%s/%d", l.Addr, l.Bits)
	if !l.Router.IsZero() {
		s += " via " + l.Router.String()
	}
	return s
}

// client runs one exchange.
type client struct {
	c     conn
	hw    []byte
	logf  func(format string, args ...any)
	start time.Time
	// what happened, for the error when no lease comes
	discovers, requests, offers, naks int
	lastNak                           string
}

// exchange gets a lease through c for the interface with hardware address
// hw, retrying until ctx is done.
func exchange(ctx context.Context, c conn, hw []byte, logf func(string, ...any)) (*Lease, error) {
	cl := &client{c: c, hw: hw, logf: logf, start: time.Now()}
	for ctx.Err() == nil {
		xid := rand.Uint32()
		offer, err := cl.roundTrip(ctx, xid, msgDiscover, nil, 0, cl.isOffer(xid))
		if err != nil {
			return nil, cl.failure(err)
		}
		cl.offers++
		server, _ := offer.ip(optServerID)
		cl.logf("DHCP: OFFER of %s from %s", offer.yiaddr, server)
		reply, err := cl.roundTrip(ctx, xid, msgRequest, offer, requestTries, cl.isAckFrom(xid, server))
		if errors.Is(err, errTimeout) {
			cl.logf("DHCP: no ACK from %s after %d REQUESTs: starting over", server, requestTries)
			continue
		}
		if err != nil {
			return nil, cl.failure(err)
		}
		if reply.typ() == msgNak {
			cl.naks++
			cl.lastNak = string(reply.opts[optMessage])
			cl.logf("DHCP: NAK from %s (%q): starting over", server, cl.lastNak)
			// Not at once: a server that NAKs every REQUEST would have
			// the client flood the link.
			if err := sleep(ctx, retransmit[0]); err != nil {
				return nil, cl.failure(err)
			}
			continue
		}
		l, err := leaseFrom(reply)
		if err != nil {
			return nil, fmt.Errorf("DHCP ACK from %s: %w", server, err)
		}
		l.Took = time.Since(cl.start)
		return l, nil
	}
	return nil, cl.failure(ctx.Err())
}

// failure says what the exchange got before it stopped.
func (cl *client) failure(err error) error {
	took := time.Since(cl.start).Round(100 * time.Millisecond)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, errTimeout):
	default:
		return fmt.Errorf("DHCP: %w", err)
	}
	switch {
	case cl.naks > 0:
		return fmt.Errorf("no DHCP lease in %s: %d NAKs (last %q)", took, cl.naks, cl.lastNak)
	case cl.offers > 0:
		return fmt.Errorf("no DHCP ACK in %s (%d offers, %d REQUESTs)", took, cl.offers, cl.requests)
	}
	return fmt.Errorf("no DHCP offer in %s (%d DISCOVERs)", took, cl.discovers)
}

// build makes a DISCOVER, or a REQUEST for offer.
func (cl *client) build(typ byte, xid uint32, offer *message) *message {
	m := &message{
		op:     opRequest,
		xid:    xid,
		secs:   uint16(min(time.Since(cl.start)/time.Second, 0xffff)),
		flags:  flagBroadcst,
		chaddr: cl.hw,
		opts: map[byte][]byte{
			optMessageType:    {typ},
			optParamRequest:   paramRequest,
			optMaxMessageSize: {maxMessage >> 8, maxMessage & 0xff},
			optClientID:       append([]byte{htypeEther}, cl.hw...),
		},
	}
	if offer != nil {
		m.opts[optRequestedIP] = offer.yiaddr[:]
		m.opts[optServerID] = offer.opts[optServerID]
	}
	return m
}

// roundTrip sends a message and waits for a reply accept takes, sending
// it again on the retransmit schedule; tries > 0 bounds the sends, after
// which it returns errTimeout. It returns ctx's error when ctx is done.
func (cl *client) roundTrip(ctx context.Context, xid uint32, typ byte, offer *message, tries int, accept func(*message) bool) (*message, error) {
	for try := 0; tries <= 0 || try < tries; try++ {
		m := cl.build(typ, xid, offer)
		if err := cl.c.send(m.marshal()); err != nil {
			return nil, fmt.Errorf("sending %s: %w", msgNames[typ], err)
		}
		if typ == msgDiscover {
			cl.discovers++
		} else {
			cl.requests++
		}
		wait := retransmit[min(try, len(retransmit)-1)] + rand.N(retransmitJitter+1)
		until := time.Now().Add(wait)
		for {
			left := time.Until(until)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if left <= 0 {
				break
			}
			b, err := cl.c.recv(min(left, pollSlice))
			if errors.Is(err, errTimeout) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("receiving: %w", err)
			}
			r, err := parseMessage(b)
			if err != nil {
				cl.logf("DHCP: ignoring a reply: %v", err)
				continue
			}
			if accept(r) {
				return r, nil
			}
		}
	}
	return nil, errTimeout
}

// mine is true for a reply to this client's transaction xid.
func (cl *client) mine(m *message, xid uint32) bool {
	return m.op == opReply && m.xid == xid && len(m.chaddr) >= len(cl.hw) && string(m.chaddr[:len(cl.hw)]) == string(cl.hw)
}

func (cl *client) isOffer(xid uint32) func(*message) bool {
	return func(m *message) bool {
		_, hasServer := m.ip(optServerID)
		return cl.mine(m, xid) && m.typ() == msgOffer && !m.yiaddr.IsZero() && hasServer
	}
}

func (cl *client) isAckFrom(xid uint32, server IP4) func(*message) bool {
	return func(m *message) bool {
		if !cl.mine(m, xid) || (m.typ() != msgAck && m.typ() != msgNak) {
			return false
		}
		// Another server's reply to the broadcast REQUEST is not ours.
		s, ok := m.ip(optServerID)
		return !ok || s == server
	}
}

// leaseFrom reads a lease from an ACK.
func leaseFrom(m *message) (*Lease, error) {
	l := &Lease{Addr: m.yiaddr}
	if l.Addr.IsZero() {
		return nil, errors.New("no address (yiaddr 0.0.0.0)")
	}
	l.Server, _ = m.ip(optServerID)
	if mask, ok := m.ip(optSubnetMask); ok {
		bits, ok := prefixLen(mask)
		if !ok {
			return nil, fmt.Errorf("subnet mask %s is not contiguous", mask)
		}
		l.Bits = bits
	} else {
		// No mask: the address's class, as RFC 2131 leaves it to the client.
		switch a := l.Addr[0]; {
		case a < 128:
			l.Bits = 8
		case a < 192:
			l.Bits = 16
		default:
			l.Bits = 24
		}
	}
	l.Router, _ = m.ip(optRouter)
	if v, ok := m.u32(optLeaseTime); ok && v != 0xffffffff {
		l.Duration = time.Duration(v) * time.Second
	}
	if v := m.opts[optMTU]; len(v) == 2 {
		l.MTU = int(v[0])<<8 | int(v[1])
	}
	if v, ok := m.opts[optClasslessRoute]; ok {
		rs, err := parseClasslessRoutes(v)
		if err != nil {
			return nil, err
		}
		l.Routes = rs
	}
	return l, nil
}

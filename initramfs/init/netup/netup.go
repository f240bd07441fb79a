// Package netup brings the network up in the init, for the cloud metadata
// services, and takes it down again before the image's own network stack
// starts: lo, then each ethernet interface in turn until one gets a DHCPv4
// lease, its address, and a route to the metadata service's address
// (169.254.169.254) through the lease's router, or on the link when the
// address is on the leased subnet. Down undoes every change Up made, in
// reverse, so that systemd starts with the links as the kernel left them.
//
// The DHCP client is its own (dhcp.go, client.go): a UDP socket bound to
// the interface (SO_BINDTODEVICE), broadcasting with the BROADCAST flag
// set so that the server's replies reach an interface with no address;
// DISCOVER, OFFER, REQUEST, ACK, with bounded retransmissions. Links,
// addresses and routes go through rtnetlink (sys_linux.go). It leases
// nothing for longer than the init runs: it never renews, and Down does
// not release (the image's DHCP client asks again, usually for the same
// address).
//
// The package links only the standard library and golang.org/x/sys/unix
// (no package net: the init stays small).
package netup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Bounds. Up as a whole is bounded by Total and by its context.
var (
	// LinkWait bounds the wait for a first ethernet interface to appear
	// (its driver probing).
	LinkWait = 2 * time.Second
	// CarrierWait bounds the wait for a link's carrier once it is up.
	CarrierWait = 3 * time.Second
	// InterfaceTimeout bounds the DHCP exchange on one interface.
	InterfaceTimeout = 8 * time.Second
	// Total bounds Up.
	Total = 15 * time.Second
)

const pollInterval = 50 * time.Millisecond

// MetadataAddr is the metadata services' address (EC2, GCE, Azure,
// OpenStack all use it).
var MetadataAddr = IP4{169, 254, 169, 254}

// Net is the init's network: Up brings it up once, Down takes down what
// Up set up. Safe for concurrent use.
type Net struct {
	// Logf receives the details (each DHCP step, each change and its
	// undoing); nil discards them.
	Logf func(format string, args ...any)
	// Destinations are the addresses Up makes reachable; nil means
	// MetadataAddr.
	Destinations []IP4

	sys   system
	mu    sync.Mutex
	undo  []undoStep
	lease *Lease
}

type undoStep struct {
	what string
	fn   func() error
}

// New returns a Net on the live system.
func New(logf func(format string, args ...any)) *Net {
	return &Net{Logf: logf, sys: linuxSystem{root: "/"}}
}

func (n *Net) logf(format string, args ...any) {
	if n.Logf != nil {
		n.Logf(format, args...)
	}
}

// Up brings lo up, then tries each ethernet interface in turn (by
// interface index, skipping virtual ones) until one gets a lease, and
// configures it. Without a lease it returns an error that says, for each
// interface, why, and leaves nothing changed but lo. Once it has a lease,
// a later call returns it.
func (n *Net) Up(ctx context.Context) (*Lease, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.lease != nil {
		return n.lease, nil
	}
	ctx, cancel := context.WithTimeout(ctx, Total)
	defer cancel()
	links, err := n.waitLinks(ctx)
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if l.loopback && !l.up {
			if err := n.setUp(l); err != nil {
				n.logf("network: %s: %v", l.name, err)
			}
		}
	}
	var why []string
	for _, l := range links {
		if !l.ether {
			continue
		}
		if err := ctx.Err(); err != nil {
			why = append(why, l.name+": not tried (out of time)")
			continue
		}
		mark := len(n.undo)
		lease, err := n.tryLink(ctx, l)
		if err == nil {
			n.lease = lease
			return lease, nil
		}
		why = append(why, l.name+": "+err.Error())
		if err := n.rollback(mark); err != nil {
			n.logf("network: %s: %v", l.name, err)
		}
	}
	if len(why) == 0 {
		return nil, errors.New("no DHCP lease: no ethernet interface")
	}
	return nil, fmt.Errorf("no DHCP lease: %s", strings.Join(why, "; "))
}

// waitLinks lists the links, waiting up to LinkWait for an ethernet one.
func (n *Net) waitLinks(ctx context.Context) ([]link, error) {
	deadline := time.Now().Add(LinkWait)
	for {
		links, err := n.sys.links()
		if err != nil {
			return nil, fmt.Errorf("listing interfaces: %w", err)
		}
		for _, l := range links {
			if l.ether {
				return links, nil
			}
		}
		if time.Now().After(deadline) || sleep(ctx, pollInterval) != nil {
			return links, nil
		}
	}
}

// tryLink gets a lease on one link and configures it.
func (n *Net) tryLink(ctx context.Context, l link) (*Lease, error) {
	if !l.up {
		if err := n.setUp(l); err != nil {
			return nil, err
		}
	}
	if err := n.waitCarrier(ctx, l); err != nil {
		return nil, err
	}
	c, err := n.sys.dial(l)
	if err != nil {
		return nil, fmt.Errorf("DHCP socket: %w", err)
	}
	defer c.close()
	ictx, cancel := context.WithTimeout(ctx, InterfaceTimeout)
	defer cancel()
	lease, err := exchange(ictx, c, l.hw, func(f string, a ...any) { n.logf("network: %s: "+f, append([]any{l.name}, a...)...) })
	if err != nil {
		return nil, err
	}
	lease.Interface = l.name
	if err := n.configure(l, lease); err != nil {
		return nil, fmt.Errorf("lease %s: %w", lease, err)
	}
	return lease, nil
}

func (n *Net) waitCarrier(ctx context.Context, l link) error {
	deadline := time.Now().Add(CarrierWait)
	for !n.sys.carrier(l) {
		if time.Now().After(deadline) {
			return fmt.Errorf("no carrier after %s", CarrierWait)
		}
		if err := sleep(ctx, pollInterval); err != nil {
			return fmt.Errorf("no carrier: %w", err)
		}
	}
	return nil
}

// configure sets the lease on the link: MTU (only ever lowered), address,
// routes.
func (n *Net) configure(l link, lease *Lease) error {
	if lease.MTU >= 576 && l.mtu > 0 && lease.MTU < l.mtu {
		if err := n.sys.setMTU(l, lease.MTU); err != nil {
			return fmt.Errorf("MTU %d: %w", lease.MTU, err)
		}
		orig := l.mtu
		n.push(fmt.Sprintf("%s MTU back to %d", l.name, orig), func() error { return n.sys.setMTU(l, orig) })
	}
	if err := n.sys.addAddr(l, lease.Addr, lease.Bits); err != nil {
		return fmt.Errorf("adding %s/%d: %w", lease.Addr, lease.Bits, err)
	}
	n.push(fmt.Sprintf("%s address %s/%d removed", l.name, lease.Addr, lease.Bits), func() error { return n.sys.delAddr(l, lease.Addr, lease.Bits) })
	dsts := n.Destinations
	if dsts == nil {
		dsts = []IP4{MetadataAddr}
	}
	for _, r := range routesFor(lease, dsts) {
		existed, err := n.sys.addRoute(l, r, lease.Addr)
		if err != nil {
			return fmt.Errorf("route %s: %w", r, err)
		}
		if existed { // not ours to remove
			continue
		}
		n.push(fmt.Sprintf("%s route %s removed", l.name, r), func() error { return n.sys.delRoute(l, r, lease.Addr) })
	}
	return nil
}

// routesFor returns the routes that make dsts reachable from the lease, in
// the order they must be added: for each destination not on the leased
// subnet, a host route through the gateway a classless static route
// (option 121) gives for it, else through the router, else on the link;
// before it, an on-link host route to a gateway outside the subnet (GCE
// leases a /32).
func routesFor(l *Lease, dsts []IP4) []Route {
	var rs []Route
	add := func(r Route) {
		for _, o := range rs {
			if o == r {
				return
			}
		}
		rs = append(rs, r)
	}
	for _, d := range dsts {
		best := -1
		for i, r := range l.Routes {
			if inPrefix(d, r.Dst, r.Bits) && (best < 0 || r.Bits > l.Routes[best].Bits) {
				best = i
			}
		}
		onSubnet := inPrefix(d, l.Addr, l.Bits)
		var gw IP4
		switch {
		case best >= 0 && (!onSubnet || l.Routes[best].Bits > l.Bits):
			gw = l.Routes[best].Gateway
		case onSubnet:
			continue // the kernel's prefix route covers it
		default:
			gw = l.Router
		}
		if gw == l.Addr {
			gw = IP4{} // "through me": on the link
		}
		if !gw.IsZero() && !inPrefix(gw, l.Addr, l.Bits) {
			add(Route{Dst: gw, Bits: 32})
		}
		add(Route{Dst: d, Bits: 32, Gateway: gw})
	}
	return rs
}

func (n *Net) setUp(l link) error {
	if err := n.sys.setUp(l, true); err != nil {
		return fmt.Errorf("setting the link up: %w", err)
	}
	n.push(l.name+" down", func() error { return n.sys.setUp(l, false) })
	return nil
}

func (n *Net) push(what string, fn func() error) {
	n.undo = append(n.undo, undoStep{what, fn})
}

// rollback undoes the changes after the first mark, newest first.
func (n *Net) rollback(mark int) error {
	var errs []error
	for i := len(n.undo) - 1; i >= mark; i-- {
		s := n.undo[i]
		if err := s.fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.what, err))
			continue
		}
		n.logf("network: %s", s.what)
	}
	n.undo = n.undo[:mark]
	return errors.Join(errs...)
}

// Down undoes every change Up made (routes, address, MTU, links up),
// newest first, carrying on past failures, which it returns joined. It
// may be called more than once, and without Up.
func (n *Net) Down() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lease = nil
	return n.rollback(0)
}

// Changed is true while Up's changes are in place.
func (n *Net) Changed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.undo) > 0
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// link is a network interface as /sys/class/net shows it.
type link struct {
	name     string
	index    int
	hw       []byte
	up       bool
	mtu      int
	loopback bool
	// ether: an ethernet interface with a device behind it (not a bridge,
	// veth, bond, tunnel...).
	ether bool
}

// system is what Net needs of the kernel; linuxSystem is the real one.
type system interface {
	// links returns the interfaces, by interface index.
	links() ([]link, error)
	carrier(l link) bool
	setUp(l link, up bool) error
	setMTU(l link, mtu int) error
	addAddr(l link, a IP4, bits int) error
	delAddr(l link, a IP4, bits int) error
	// addRoute adds a route in the main table; existed is true when an
	// identical one was there.
	addRoute(l link, r Route, src IP4) (existed bool, err error)
	delRoute(l link, r Route, src IP4) error
	// dial opens a DHCP client socket on the link.
	dial(l link) (conn, error)
}

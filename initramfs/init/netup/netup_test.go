package netup

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRoutesFor(t *testing.T) {
	md := []IP4{MetadataAddr}
	for _, tc := range []struct {
		name  string
		lease Lease
		want  []string
	}{
		{"ec2: through the router", Lease{Addr: IP4{172, 31, 5, 9}, Bits: 20, Router: IP4{172, 31, 0, 1}},
			[]string{"169.254.169.254/32 via 172.31.0.1"}},
		{"gce: /32, router off the subnet", Lease{Addr: IP4{10, 128, 0, 5}, Bits: 32, Router: IP4{10, 128, 0, 1}},
			[]string{"10.128.0.1/32 on link", "169.254.169.254/32 via 10.128.0.1"}},
		{"qemu net=169.254.169.0/24: on the subnet", Lease{Addr: IP4{169, 254, 169, 15}, Bits: 24, Router: IP4{169, 254, 169, 2}},
			nil},
		{"no router: on link", Lease{Addr: IP4{192, 168, 1, 9}, Bits: 24},
			[]string{"169.254.169.254/32 on link"}},
		{"option 121 host route wins over the router", Lease{Addr: IP4{10, 0, 0, 9}, Bits: 24, Router: IP4{10, 0, 0, 1},
			Routes: []Route{{Dst: IP4{}, Bits: 0, Gateway: IP4{10, 0, 0, 1}}, {Dst: MetadataAddr, Bits: 32, Gateway: IP4{10, 0, 0, 2}}}},
			[]string{"169.254.169.254/32 via 10.0.0.2"}},
		{"option 121 default only", Lease{Addr: IP4{10, 0, 0, 9}, Bits: 24, Router: IP4{10, 0, 0, 1},
			Routes: []Route{{Dst: IP4{}, Bits: 0, Gateway: IP4{10, 0, 0, 254}}}},
			[]string{"169.254.169.254/32 via 10.0.0.254"}},
		{"option 121 on link", Lease{Addr: IP4{10, 0, 0, 9}, Bits: 24, Router: IP4{10, 0, 0, 1},
			Routes: []Route{{Dst: IP4{169, 254, 0, 0}, Bits: 16}}},
			[]string{"169.254.169.254/32 on link"}},
		{"option 121 without it: the router", Lease{Addr: IP4{10, 0, 0, 9}, Bits: 24, Router: IP4{10, 0, 0, 1},
			Routes: []Route{{Dst: IP4{192, 168, 0, 0}, Bits: 16, Gateway: IP4{10, 0, 0, 3}}}},
			[]string{"169.254.169.254/32 via 10.0.0.1"}},
		{"option 121 overrides the subnet", Lease{Addr: IP4{169, 254, 169, 15}, Bits: 24,
			Routes: []Route{{Dst: MetadataAddr, Bits: 32, Gateway: IP4{169, 254, 169, 1}}}},
			[]string{"169.254.169.254/32 via 169.254.169.1"}},
		{"router is me", Lease{Addr: IP4{10, 0, 0, 9}, Bits: 24, Router: IP4{10, 0, 0, 9}},
			[]string{"169.254.169.254/32 on link"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range routesFor(&tc.lease, md) {
				got = append(got, r.String())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	// Two destinations through one off-subnet router: one link route.
	l := &Lease{Addr: IP4{10, 128, 0, 5}, Bits: 32, Router: IP4{10, 128, 0, 1}}
	if rs := routesFor(l, []IP4{MetadataAddr, {168, 63, 129, 16}}); len(rs) != 3 {
		t.Errorf("got %v", rs)
	}
}

// fakeSys records what Net asks of the kernel; each link's DHCP socket is
// a socket pair with a fake server (nil: silent) on the far end.
type fakeSys struct {
	t        *testing.T
	ls       []link
	noCarrer map[string]bool
	servers  map[string]*fakeServer
	fail     string // an op starting so fails
	ops      []string
}

func (f *fakeSys) do(op string) error {
	f.ops = append(f.ops, op)
	if f.fail != "" && strings.HasPrefix(op, f.fail) {
		return errors.New("injected failure")
	}
	return nil
}

func (f *fakeSys) links() ([]link, error) { return f.ls, nil }
func (f *fakeSys) carrier(l link) bool    { return !f.noCarrer[l.name] }
func (f *fakeSys) setUp(l link, up bool) error {
	if up {
		return f.do("up " + l.name)
	}
	return f.do("down " + l.name)
}
func (f *fakeSys) setMTU(l link, mtu int) error { return f.do(fmt.Sprintf("mtu %s %d", l.name, mtu)) }
func (f *fakeSys) addAddr(l link, a IP4, bits int) error {
	return f.do(fmt.Sprintf("addr %s %s/%d", l.name, a, bits))
}
func (f *fakeSys) delAddr(l link, a IP4, bits int) error {
	return f.do(fmt.Sprintf("deladdr %s %s/%d", l.name, a, bits))
}
func (f *fakeSys) addRoute(l link, r Route, src IP4) (bool, error) {
	return r.Dst == (IP4{1, 1, 1, 1}), f.do(fmt.Sprintf("route %s %s src %s", l.name, r, src))
}
func (f *fakeSys) delRoute(l link, r Route, src IP4) error {
	return f.do(fmt.Sprintf("delroute %s %s", l.name, r))
}
func (f *fakeSys) dial(l link) (conn, error) {
	if err := f.do("dial " + l.name); err != nil {
		return nil, err
	}
	s := f.servers[l.name]
	if s == nil {
		s = &fakeServer{silent: true}
	}
	return start(f.t, s), nil
}

func quick(t *testing.T) {
	fast(t)
	lw, cw, it, tot := LinkWait, CarrierWait, InterfaceTimeout, Total
	LinkWait, CarrierWait, InterfaceTimeout, Total = 100*time.Millisecond, 100*time.Millisecond, 300*time.Millisecond, 2*time.Second
	t.Cleanup(func() { LinkWait, CarrierWait, InterfaceTimeout, Total = lw, cw, it, tot })
}

func testLinks() []link {
	return []link{
		{name: "lo", index: 1, loopback: true},
		{name: "eth0", index: 2, hw: testHW, mtu: 1500, ether: true},
		{name: "eth1", index: 3, hw: testHW, mtu: 1500, ether: true},
		{name: "eth2", index: 4, hw: testHW, mtu: 1500, ether: true, up: true},
		{name: "br0", index: 5, hw: testHW, mtu: 1500},
	}
}

func gceServer() *fakeServer {
	return &fakeServer{offer: IP4{10, 128, 0, 5}, id: IP4{169, 254, 169, 254}, opts: map[byte][]byte{
		optSubnetMask: {255, 255, 255, 255}, optRouter: {10, 128, 0, 1}, optMTU: {0x05, 0xb4}}}
}

func TestUpDown(t *testing.T) {
	quick(t)
	f := &fakeSys{t: t, ls: testLinks(), noCarrer: map[string]bool{"eth0": true}, servers: map[string]*fakeServer{"eth2": gceServer()}}
	var logs []string
	n := &Net{sys: f, Logf: func(format string, a ...any) { logs = append(logs, fmt.Sprintf(format, a...)) }}
	l, err := n.Up(context.Background())
	if err != nil {
		t.Fatalf("Up: %v\n%s", err, strings.Join(logs, "\n"))
	}
	if l.Interface != "eth2" || l.String() != "10.128.0.5/32 via 10.128.0.1" || l.MTU != 1460 {
		t.Errorf("lease %+v", l)
	}
	want := []string{
		"up lo",
		"up eth0", "down eth0", // no carrier: tried, put back
		"up eth1", "dial eth1", "down eth1", // no DHCP server
		"dial eth2", // up already
		"mtu eth2 1460", "addr eth2 10.128.0.5/32",
		"route eth2 10.128.0.1/32 on link src 10.128.0.5",
		"route eth2 169.254.169.254/32 via 10.128.0.1 src 10.128.0.5",
	}
	if !reflect.DeepEqual(f.ops, want) {
		t.Errorf("Up did\n%q\nwant\n%q", f.ops, want)
	}
	if !n.Changed() {
		t.Error("Changed is false after Up")
	}
	if again, err := n.Up(context.Background()); again != l || err != nil {
		t.Errorf("second Up: %v, %v", again, err)
	}
	f.ops = nil
	if err := n.Down(); err != nil {
		t.Fatal(err)
	}
	want = []string{
		"delroute eth2 169.254.169.254/32 via 10.128.0.1", "delroute eth2 10.128.0.1/32 on link",
		"deladdr eth2 10.128.0.5/32", "mtu eth2 1500", // eth2 stays up: it was
		"down lo",
	}
	if !reflect.DeepEqual(f.ops, want) {
		t.Errorf("Down did\n%q\nwant\n%q", f.ops, want)
	}
	f.ops = nil
	if err := n.Down(); err != nil || len(f.ops) != 0 || n.Changed() {
		t.Errorf("second Down: %v, %q", err, f.ops)
	}
}

func TestUpFails(t *testing.T) {
	quick(t)
	for _, tc := range []struct {
		name    string
		links   []link
		fail    string
		servers map[string]*fakeServer
		err     string
		ops     []string
	}{
		{"no ethernet", testLinks()[:1], "", nil, "no DHCP lease: no ethernet interface", []string{"up lo"}},
		{"no lease anywhere", testLinks()[:3], "", nil,
			"no DHCP lease: eth0: no DHCP offer in", []string{"up lo", "up eth0", "dial eth0", "down eth0", "up eth1", "dial eth1", "down eth1"}},
		{"address refused: rolled back, next link", testLinks()[:3], "addr eth0", map[string]*fakeServer{"eth0": gceServer(), "eth1": testServer()}, "",
			[]string{"up lo", "up eth0", "dial eth0", "mtu eth0 1460", "addr eth0 10.128.0.5/32", "mtu eth0 1500", "down eth0",
				"up eth1", "dial eth1", "addr eth1 10.0.2.15/24", "route eth1 169.254.169.254/32 via 10.0.2.2 src 10.0.2.15"}},
		{"route refused", testLinks()[:2], "route eth0 169", map[string]*fakeServer{"eth0": gceServer()}, "eth0: lease 10.128.0.5/32 via 10.128.0.1: route 169.254.169.254/32 via 10.128.0.1: injected failure",
			[]string{"up lo", "up eth0", "dial eth0", "mtu eth0 1460", "addr eth0 10.128.0.5/32", "route eth0 10.128.0.1/32 on link src 10.128.0.5",
				"route eth0 169.254.169.254/32 via 10.128.0.1 src 10.128.0.5",
				"delroute eth0 10.128.0.1/32 on link", "deladdr eth0 10.128.0.5/32", "mtu eth0 1500", "down eth0"}},
		{"link refuses to come up", testLinks()[:2], "up eth0", nil, "eth0: setting the link up: injected failure", []string{"up lo", "up eth0"}},
		{"socket refused", testLinks()[:2], "dial", nil, "eth0: DHCP socket: injected failure", []string{"up lo", "up eth0", "dial eth0", "down eth0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSys{t: t, ls: tc.links, fail: tc.fail, servers: tc.servers}
			n := &Net{sys: f}
			l, err := n.Up(context.Background())
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("Up: %v, %v; want error %q", l, err, tc.err)
			}
			if !reflect.DeepEqual(f.ops, tc.ops) {
				t.Errorf("Up did\n%q\nwant\n%q", f.ops, tc.ops)
			}
			n.Down()
		})
	}
}

// A route that was there already is not Net's to remove.
func TestRouteThereAlready(t *testing.T) {
	quick(t)
	s := testServer()
	s.opts[optClasslessRoute] = classlessRoutes([]Route{{Dst: IP4{1, 1, 1, 1}, Bits: 32, Gateway: IP4{10, 0, 2, 3}}})
	f := &fakeSys{t: t, ls: testLinks()[:2], servers: map[string]*fakeServer{"eth0": s}}
	n := &Net{sys: f, Destinations: []IP4{{1, 1, 1, 1}}}
	if _, err := n.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.ops = nil
	n.Down()
	if want := []string{"deladdr eth0 10.0.2.15/24", "down eth0", "down lo"}; !reflect.DeepEqual(f.ops, want) {
		t.Errorf("Down did %q, want %q", f.ops, want)
	}
}

// Up never outlives its context.
func TestUpBounded(t *testing.T) {
	quick(t)
	InterfaceTimeout = 5 * time.Second
	f := &fakeSys{t: t, ls: testLinks()[:3]}
	n := &Net{sys: f}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := n.Up(ctx)
	if d := time.Since(t0); d > 700*time.Millisecond || err == nil || !strings.Contains(err.Error(), "eth1: not tried (out of time)") {
		t.Errorf("Up: %v after %s", err, d)
	}
	n.Down()
}

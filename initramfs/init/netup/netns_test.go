package netup

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLinuxNetns runs the live system's side (sysfs, rtnetlink, the DHCP
// socket with SO_BINDTODEVICE and broadcasts) in a network namespace of
// its own: a veth pair, the fake server on one end with no address, Net
// on the other. It needs root and unshare(1); without them it is skipped.
func TestLinuxNetns(t *testing.T) {
	if os.Getenv("NETUP_NETNS") == "" {
		reexec(t)
		return
	}
	// In the namespace: a sysfs of its own, so /sys/class/net shows its links.
	if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
		t.Skipf("SKIP-NETNS: mounting sysfs: %v", err)
	}
	if out, err := exec.Command("ip", "link", "add", "c0", "type", "veth", "peer", "name", "s0").CombinedOutput(); err != nil {
		t.Skipf("SKIP-NETNS: no veth: %v: %s", err, out)
	}
	ip(t, "link", "set", "s0", "up")

	sys := linuxSystem{root: "/"}
	ls, err := sys.links()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range ls {
		names = append(names, l.name)
		if l.ether {
			t.Errorf("%s is taken for an ethernet interface with a device", l.name)
		}
		if (l.name == "lo") != l.loopback || (l.name == "c0" && (len(l.hw) != 6 || l.mtu != 1500 || l.up)) {
			t.Errorf("link %+v", l)
		}
	}
	if strings.Join(names, " ") != "lo s0 c0" && strings.Join(names, " ") != "lo c0 s0" {
		t.Fatalf("links %q", names)
	}

	for _, tc := range []struct {
		name   string
		server *fakeServer
		addr   string
		routes []string
		mtu    string
	}{
		{"gce", gceServer(), "inet 10.128.0.5/32", []string{
			"10.128.0.1 dev c0 proto dhcp scope link src 10.128.0.5",
			"169.254.169.254 via 10.128.0.1 dev c0 proto dhcp src 10.128.0.5"}, "1460"},
		{"qemu", testServer(), "inet 10.0.2.15/24 brd 10.0.2.255", []string{
			"10.0.2.0/24 dev c0 proto kernel scope link src 10.0.2.15",
			"169.254.169.254 via 10.0.2.2 dev c0 proto dhcp src 10.0.2.15"}, "1500"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stop := serveOn(t, "s0", tc.server)
			defer stop()
			n := &Net{sys: vethSystem{sys, "c0"}, Logf: t.Logf}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			l, err := n.Up(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("lease %s on %s in %s (the server saw %d DISCOVERs)", l, l.Interface, l.Took, len(tc.server.received(msgDiscover)))
			if addr := ip(t, "-4", "-o", "addr", "show", "dev", "c0"); !strings.Contains(addr, tc.addr) {
				t.Errorf("address: %s", addr)
			}
			routes := ip(t, "-4", "route", "show", "table", "main")
			for _, r := range tc.routes {
				if !strings.Contains(routes, r) {
					t.Errorf("no route %q in\n%s", r, routes)
				}
			}
			if mtu := readSys("/sys/class/net/c0", "mtu"); mtu != tc.mtu {
				t.Errorf("MTU %s, want %s", mtu, tc.mtu)
			}
			if !strings.Contains(ip(t, "link", "show", "lo"), ",UP") {
				t.Error("lo is not up")
			}

			if err := n.Down(); err != nil {
				t.Fatal(err)
			}
			if addr := ip(t, "-4", "-o", "addr", "show", "dev", "c0"); addr != "" {
				t.Errorf("address left: %s", addr)
			}
			if routes := ip(t, "-4", "route", "show", "table", "main"); routes != "" {
				t.Errorf("routes left: %s", routes)
			}
			if mtu := readSys("/sys/class/net/c0", "mtu"); mtu != "1500" {
				t.Errorf("MTU left at %s", mtu)
			}
			for _, dev := range []string{"c0", "lo"} {
				if l, _ := readLink("/sys/class/net/" + dev); l.up {
					t.Errorf("%s left up", dev)
				}
			}
		})
	}
}

// reexec runs the test again as root in new network and mount namespaces.
func reexec(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	for _, tool := range []string{"unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	cmd := exec.Command("unshare", "--net", "--mount", os.Args[0], "-test.run=^TestLinuxNetns$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "NETUP_NETNS=1")
	out, err := cmd.CombinedOutput()
	switch {
	case !strings.Contains(string(out), "=== RUN"):
		t.Skipf("unshare: %v: %s", err, out)
	case strings.Contains(string(out), "SKIP-NETNS"):
		t.Skipf("in the namespace:\n%s", out)
	case err != nil:
		t.Fatalf("in the namespace: %v\n%s", err, out)
	}
	t.Logf("in the namespace:\n%s", out)
}

// vethSystem is the live system, taking one virtual link for ethernet.
type vethSystem struct {
	linuxSystem
	name string
}

func (s vethSystem) links() ([]link, error) {
	ls, err := s.linuxSystem.links()
	for i := range ls {
		ls[i].ether = ls[i].name == s.name
	}
	return ls, err
}

func ip(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// serveOn runs s on dev's server port, answering by broadcast.
func serveOn(t *testing.T, dev string, s *fakeServer) func() {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []int{unix.SO_REUSEADDR, unix.SO_BROADCAST} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.BindToDevice(fd, dev); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: serverPort}); err != nil {
		t.Fatal(err)
	}
	c := activeConn{&sockConn{fd: fd, to: &unix.SockaddrInet4{Port: clientPort, Addr: [4]byte{255, 255, 255, 255}}}, dev}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { s.serve(c, stop); close(done) }()
	return func() { close(stop); <-done; c.close() }
}

// activeConn sends only once dev's queue is active: the server's end of
// the veth pair comes up with the client's, and the kernel drops what is
// sent on it before (a real server's link is up long before).
type activeConn struct {
	*sockConn
	dev string
}

func (c activeConn) send(b []byte) error {
	for i := 0; i < 100 && readSys("/sys/class/net/"+c.dev, "operstate") != "up"; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	return c.sockConn.send(b)
}

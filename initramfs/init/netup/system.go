package netup

// The live system: interfaces from /sys/class/net, links, addresses and
// routes through rtnetlink, the DHCP socket.

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

type linuxSystem struct {
	root string // "/"; the sysfs tree is under it
}

func (s linuxSystem) netDir() string { return filepath.Join(s.root, "sys/class/net") }

func readSys(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (s linuxSystem) links() ([]link, error) {
	ents, err := os.ReadDir(s.netDir())
	if err != nil {
		return nil, err
	}
	var ls []link
	for _, e := range ents {
		if l, ok := readLink(filepath.Join(s.netDir(), e.Name())); ok {
			ls = append(ls, l)
		}
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].index < ls[j].index })
	return ls, nil
}

// readLink reads one interface's sysfs directory.
func readLink(dir string) (link, bool) {
	l := link{name: filepath.Base(dir)}
	var err error
	if l.index, err = strconv.Atoi(readSys(dir, "ifindex")); err != nil {
		return l, false
	}
	flags, _ := strconv.ParseUint(readSys(dir, "flags"), 0, 32)
	l.up = flags&unix.IFF_UP != 0
	l.loopback = flags&unix.IFF_LOOPBACK != 0 || l.name == "lo"
	l.mtu, _ = strconv.Atoi(readSys(dir, "mtu"))
	l.hw, _ = hex.DecodeString(strings.ReplaceAll(readSys(dir, "address"), ":", ""))
	_, devErr := os.Stat(filepath.Join(dir, "device"))
	l.ether = !l.loopback && readSys(dir, "type") == strconv.Itoa(unix.ARPHRD_ETHER) && devErr == nil && len(l.hw) == 6
	return l, true
}

// carrier is true once the link can send: carrier, and the operational
// state the kernel sets when it activates the link's queue (linkwatch,
// after the carrier, asynchronously: a packet sent before it is dropped).
// Drivers that do not report the state leave it "unknown".
func (s linuxSystem) carrier(l link) bool {
	dir := filepath.Join(s.netDir(), l.name)
	if readSys(dir, "carrier") != "1" {
		return false
	}
	op := readSys(dir, "operstate")
	return op == "up" || op == "unknown"
}

func (s linuxSystem) setUp(l link, up bool) error {
	var flags uint32
	if up {
		flags = unix.IFF_UP
	}
	return s.linkRequest(l, flags, nil)
}

func (s linuxSystem) setMTU(l link, mtu int) error {
	return s.linkRequest(l, 0, attr(nil, unix.IFLA_MTU, u32(uint32(mtu))))
}

// linkRequest changes a link: its IFF_UP flag to flags (when attrs is
// nil), or the attributes.
func (linuxSystem) linkRequest(l link, flags uint32, attrs []byte) error {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC
	ne.PutUint32(b[4:], uint32(l.index))
	if attrs == nil {
		ne.PutUint32(b[8:], flags)
		ne.PutUint32(b[12:], unix.IFF_UP) // change
	}
	return netlink(unix.RTM_NEWLINK, 0, append(b, attrs...))
}

func addrMsg(l link, a IP4, bits int) []byte {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0] = unix.AF_INET
	b[1] = byte(bits)
	b[3] = unix.RT_SCOPE_UNIVERSE
	ne.PutUint32(b[4:], uint32(l.index))
	b = attr(b, unix.IFA_LOCAL, a[:])
	b = attr(b, unix.IFA_ADDRESS, a[:])
	if bits < 31 {
		brd := ip4(a.uint32() | ^maskBits(bits).uint32())
		b = attr(b, unix.IFA_BROADCAST, brd[:])
	}
	return b
}

func (linuxSystem) addAddr(l link, a IP4, bits int) error {
	return netlink(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, addrMsg(l, a, bits))
}

func (linuxSystem) delAddr(l link, a IP4, bits int) error {
	err := netlink(unix.RTM_DELADDR, 0, addrMsg(l, a, bits))
	if errors.Is(err, unix.EADDRNOTAVAIL) {
		return nil // gone already
	}
	return err
}

func routeMsg(l link, r Route, src IP4) []byte {
	b := make([]byte, unix.SizeofRtMsg)
	b[0] = unix.AF_INET
	b[1] = byte(r.Bits)
	b[4] = unix.RT_TABLE_MAIN
	b[5] = unix.RTPROT_DHCP
	b[6] = unix.RT_SCOPE_UNIVERSE
	if r.Gateway.IsZero() {
		b[6] = unix.RT_SCOPE_LINK
	}
	b[7] = unix.RTN_UNICAST
	b = attr(b, unix.RTA_DST, r.Dst[:])
	if !r.Gateway.IsZero() {
		b = attr(b, unix.RTA_GATEWAY, r.Gateway[:])
	}
	b = attr(b, unix.RTA_OIF, u32(uint32(l.index)))
	if !src.IsZero() {
		b = attr(b, unix.RTA_PREFSRC, src[:])
	}
	return b
}

func (linuxSystem) addRoute(l link, r Route, src IP4) (bool, error) {
	err := netlink(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, routeMsg(l, r, src))
	if errors.Is(err, unix.EEXIST) {
		return true, nil
	}
	return false, err
}

func (linuxSystem) delRoute(l link, r Route, src IP4) error {
	err := netlink(unix.RTM_DELROUTE, 0, routeMsg(l, r, src))
	if errors.Is(err, unix.ESRCH) {
		return nil // gone already (with the address or the link)
	}
	return err
}

var ne = binary.NativeEndian

func u32(v uint32) []byte {
	b := make([]byte, 4)
	ne.PutUint32(b, v)
	return b
}

// attr appends a netlink attribute, padded to 4 bytes.
func attr(b []byte, typ uint16, data []byte) []byte {
	h := make([]byte, unix.SizeofRtAttr)
	ne.PutUint16(h, uint16(unix.SizeofRtAttr+len(data)))
	ne.PutUint16(h[2:], typ)
	b = append(append(b, h...), data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// netlinkTimeout bounds the wait for the kernel's answer.
const netlinkTimeout = 2 * time.Second

// netlink sends one rtnetlink request and waits for its acknowledgement.
func netlink(typ uint16, flags uint16, body []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(netlinkTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}
	const seq = 1
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	ne.PutUint32(msg, uint32(unix.SizeofNlMsghdr+len(body)))
	ne.PutUint16(msg[4:], typ)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags)
	ne.PutUint32(msg[8:], seq)
	msg = append(msg, body...)
	// Unconnected, a netlink socket writes to the kernel. (Read and Write
	// rather than Recvfrom and Sendto: they would link every address
	// family's Sockaddr into the init.)
	if _, err := unix.Write(fd, msg); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		for b := buf[:n]; len(b) >= unix.SizeofNlMsghdr; {
			l := int(ne.Uint32(b))
			if l < unix.SizeofNlMsghdr || l > len(b) {
				return errors.New("netlink: malformed answer")
			}
			if ne.Uint16(b[4:]) == unix.NLMSG_ERROR && ne.Uint32(b[8:]) == seq {
				if l < unix.SizeofNlMsghdr+4 {
					return errors.New("netlink: short error message")
				}
				if e := int32(ne.Uint32(b[unix.SizeofNlMsghdr:])); e != 0 {
					return unix.Errno(-e)
				}
				return nil
			}
			l = (l + 3) &^ 3
			if l > len(b) {
				break
			}
			b = b[l:]
		}
	}
}

// dial opens the DHCP client's socket: UDP port 68 on the link only,
// allowed to broadcast.
func (linuxSystem) dial(l link) (conn, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, err
	}
	for _, o := range []int{unix.SO_REUSEADDR, unix.SO_BROADCAST} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o, 1); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	if err := unix.BindToDevice(fd, l.name); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("SO_BINDTODEVICE %s: %w", l.name, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: clientPort}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding port %d: %w", clientPort, err)
	}
	return &sockConn{fd: fd, to: &unix.SockaddrInet4{Port: serverPort, Addr: [4]byte{255, 255, 255, 255}}}, nil
}

// sockConn is a datagram socket: sent to to, or written when to is nil (a
// connected socket, as in the tests' socketpair).
type sockConn struct {
	fd int
	to unix.Sockaddr
}

func (s *sockConn) send(b []byte) error {
	if s.to == nil {
		_, err := unix.Write(s.fd, b)
		return err
	}
	return unix.Sendto(s.fd, b, 0, s.to)
}

func (s *sockConn) recv(d time.Duration) ([]byte, error) {
	ms := int((d + time.Millisecond - 1) / time.Millisecond)
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, ms)
	if errors.Is(err, unix.EINTR) || (err == nil && n == 0) {
		return nil, errTimeout
	}
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 2048)
	n, err = unix.Read(s.fd, buf) // poll says it will not block
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return nil, errTimeout
	}
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func (s *sockConn) close() error { return unix.Close(s.fd) }

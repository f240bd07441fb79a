package netup

// DHCPv4 messages (RFC 2131) and the options the client uses (RFC 2132,
// RFC 3442 for classless static routes).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// IP4 is an IPv4 address. The init does not link package net: an array
// is all the client needs.
type IP4 [4]byte

func (a IP4) String() string {
	return strconv.Itoa(int(a[0])) + "." + strconv.Itoa(int(a[1])) + "." + strconv.Itoa(int(a[2])) + "." + strconv.Itoa(int(a[3]))
}

// IsZero is true for 0.0.0.0.
func (a IP4) IsZero() bool { return a == IP4{} }

func (a IP4) uint32() uint32 { return binary.BigEndian.Uint32(a[:]) }

func ip4(u uint32) (a IP4) {
	binary.BigEndian.PutUint32(a[:], u)
	return a
}

// maskBits returns the mask of a prefix length.
func maskBits(bits int) IP4 {
	if bits <= 0 {
		return IP4{}
	}
	return ip4(^uint32(0) << (32 - bits))
}

// inPrefix is true when a is in the network p/bits.
func inPrefix(a, p IP4, bits int) bool {
	m := maskBits(bits).uint32()
	return a.uint32()&m == p.uint32()&m
}

// prefixLen is a netmask's length; ok is false for a non-contiguous mask.
func prefixLen(mask IP4) (int, bool) {
	m := mask.uint32()
	n := 0
	for n < 32 && m&(1<<(31-n)) != 0 {
		n++
	}
	return n, maskBits(n) == mask
}

// Message types (option 53).
const (
	msgDiscover = 1
	msgOffer    = 2
	msgRequest  = 3
	msgDecline  = 4
	msgAck      = 5
	msgNak      = 6
	msgRelease  = 7
)

var msgNames = map[byte]string{msgDiscover: "DISCOVER", msgOffer: "OFFER", msgRequest: "REQUEST",
	msgDecline: "DECLINE", msgAck: "ACK", msgNak: "NAK", msgRelease: "RELEASE"}

// Options (RFC 2132, RFC 3442).
const (
	optPad            = 0
	optSubnetMask     = 1
	optRouter         = 3
	optDNS            = 6
	optHostname       = 12
	optMTU            = 26
	optRequestedIP    = 50
	optLeaseTime      = 51
	optOverload       = 52
	optMessageType    = 53
	optServerID       = 54
	optParamRequest   = 55
	optMessage        = 56
	optMaxMessageSize = 57
	optClientID       = 61
	optClasslessRoute = 121
	optEnd            = 255
)

// Fixed layout.
const (
	opRequest    = 1
	opReply      = 2
	htypeEther   = 1
	headerLen    = 236 // up to the magic cookie
	cookie       = 0x63825363
	flagBroadcst = 0x8000
	// minMessage is what RFC 2131 says every client must accept (576-byte
	// datagrams less the IP and UDP headers); requests are padded to 300
	// bytes, as BOOTP relays expect.
	minMessage = 300
	maxMessage = 1500
	serverPort = 67
	clientPort = 68
)

// message is a DHCP message. Options hold each option's data, the
// instances of one code concatenated (RFC 3396).
type message struct {
	op     byte
	xid    uint32
	secs   uint16
	flags  uint16
	ciaddr IP4
	yiaddr IP4
	siaddr IP4
	giaddr IP4
	chaddr []byte // the hardware address, at most 16 bytes
	opts   map[byte][]byte
}

func (m *message) typ() byte {
	if v := m.opts[optMessageType]; len(v) == 1 {
		return v[0]
	}
	return 0
}

// ip returns an option holding one address; ok is false when it is
// absent or not 4 bytes long.
func (m *message) ip(code byte) (IP4, bool) {
	v := m.opts[code]
	if len(v) < 4 {
		return IP4{}, false
	}
	return IP4(v[:4]), true
}

func (m *message) u32(code byte) (uint32, bool) {
	v := m.opts[code]
	if len(v) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(v), true
}

func (m *message) String() string {
	name := msgNames[m.typ()]
	if name == "" {
		name = "type " + strconv.Itoa(int(m.typ()))
	}
	return fmt.Sprintf("%s xid %08x", name, m.xid)
}

// marshal encodes m; options go in ascending code order, the message type
// first, each longer than 255 bytes split into several instances.
func (m *message) marshal() []byte {
	b := make([]byte, headerLen+4, minMessage)
	b[0], b[1], b[2] = m.op, htypeEther, byte(len(m.chaddr))
	binary.BigEndian.PutUint32(b[4:], m.xid)
	binary.BigEndian.PutUint16(b[8:], m.secs)
	binary.BigEndian.PutUint16(b[10:], m.flags)
	copy(b[12:], m.ciaddr[:])
	copy(b[16:], m.yiaddr[:])
	copy(b[20:], m.siaddr[:])
	copy(b[24:], m.giaddr[:])
	copy(b[28:44], m.chaddr)
	binary.BigEndian.PutUint32(b[headerLen:], cookie)
	// The message type first, then by code: 254 map lookups cost less
	// than a sort in the init's binary.
	b = appendOption(b, optMessageType, m.opts)
	for c := 1; c < optEnd; c++ {
		if c != optMessageType {
			b = appendOption(b, byte(c), m.opts)
		}
	}
	b = append(b, optEnd)
	for len(b) < minMessage {
		b = append(b, optPad)
	}
	return b
}

// appendOption appends an option, if opts has it, split into instances of
// at most 255 bytes.
func appendOption(b []byte, code byte, opts map[byte][]byte) []byte {
	v, ok := opts[code]
	for first := ok; first || len(v) > 0; first = false {
		n := min(len(v), 255)
		b = append(b, code, byte(n))
		b = append(b, v[:n]...)
		v = v[n:]
	}
	return b
}

var errShort = errors.New("shorter than a DHCP message")

// parseMessage decodes a DHCP message. The sname and file fields are read
// for options only when option 52 says they hold some.
func parseMessage(b []byte) (*message, error) {
	if len(b) < headerLen+4 {
		return nil, errShort
	}
	if c := binary.BigEndian.Uint32(b[headerLen:]); c != cookie {
		return nil, fmt.Errorf("no DHCP magic cookie (%08x)", c)
	}
	hlen := int(b[2])
	if hlen > 16 {
		return nil, fmt.Errorf("hardware address length %d", hlen)
	}
	m := &message{
		op:     b[0],
		xid:    binary.BigEndian.Uint32(b[4:]),
		secs:   binary.BigEndian.Uint16(b[8:]),
		flags:  binary.BigEndian.Uint16(b[10:]),
		ciaddr: IP4(b[12:16]),
		yiaddr: IP4(b[16:20]),
		siaddr: IP4(b[20:24]),
		giaddr: IP4(b[24:28]),
		chaddr: append([]byte(nil), b[28:28+hlen]...),
		opts:   map[byte][]byte{},
	}
	if err := parseOptions(b[headerLen+4:], m.opts); err != nil {
		return nil, err
	}
	if ov := m.opts[optOverload]; len(ov) == 1 {
		if ov[0]&1 != 0 {
			if err := parseOptions(b[108:236], m.opts); err != nil {
				return nil, fmt.Errorf("file field: %w", err)
			}
		}
		if ov[0]&2 != 0 {
			if err := parseOptions(b[44:108], m.opts); err != nil {
				return nil, fmt.Errorf("sname field: %w", err)
			}
		}
	}
	return m, nil
}

func parseOptions(b []byte, opts map[byte][]byte) error {
	for i := 0; i < len(b); {
		c := b[i]
		i++
		switch c {
		case optPad:
			continue
		case optEnd:
			return nil
		}
		if i >= len(b) {
			return fmt.Errorf("option %d: no length", c)
		}
		n := int(b[i])
		i++
		if i+n > len(b) {
			return fmt.Errorf("option %d: %d bytes, %d left", c, n, len(b)-i)
		}
		if opts[c] == nil {
			opts[c] = []byte{} // an empty option is there all the same
		}
		opts[c] = append(opts[c], b[i:i+n]...)
		i += n
	}
	// A message without an end option: accepted, as most clients do.
	return nil
}

// Route is a route to a network, through a gateway or on the link (a zero
// Gateway).
type Route struct {
	Dst     IP4
	Bits    int
	Gateway IP4
}

func (r Route) String() string {
	s := r.Dst.String() + "/" + strconv.Itoa(r.Bits)
	if r.Gateway.IsZero() {
		return s + " on link"
	}
	return s + " via " + r.Gateway.String()
}

// parseClasslessRoutes decodes option 121: each route is the prefix
// length, the significant octets of the destination, and the router.
func parseClasslessRoutes(b []byte) ([]Route, error) {
	var rs []Route
	for len(b) > 0 {
		bits := int(b[0])
		if bits > 32 {
			return nil, fmt.Errorf("classless route: prefix length %d", bits)
		}
		n := (bits + 7) / 8
		if len(b) < 1+n+4 {
			return nil, errors.New("classless route: truncated")
		}
		var r Route
		r.Bits = bits
		copy(r.Dst[:], b[1:1+n])
		r.Dst = ip4(r.Dst.uint32() & maskBits(bits).uint32())
		copy(r.Gateway[:], b[1+n:1+n+4])
		rs = append(rs, r)
		b = b[1+n+4:]
	}
	return rs, nil
}

// classlessRoutes encodes option 121 (for tests and the fake server).
func classlessRoutes(rs []Route) []byte {
	var b []byte
	for _, r := range rs {
		b = append(b, byte(r.Bits))
		b = append(b, r.Dst[:(r.Bits+7)/8]...)
		b = append(b, r.Gateway[:]...)
	}
	return b
}

package netup

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestIP4(t *testing.T) {
	a := IP4{169, 254, 169, 254}
	if a.String() != "169.254.169.254" || a.IsZero() || !(IP4{}).IsZero() {
		t.Errorf("String %q, IsZero %v", a, a.IsZero())
	}
	for _, tc := range []struct {
		mask IP4
		bits int
		ok   bool
	}{
		{IP4{255, 255, 255, 0}, 24, true},
		{IP4{255, 255, 240, 0}, 20, true},
		{IP4{255, 255, 255, 255}, 32, true},
		{IP4{}, 0, true},
		{IP4{255, 0, 255, 0}, 8, false},
	} {
		bits, ok := prefixLen(tc.mask)
		if bits != tc.bits || ok != tc.ok {
			t.Errorf("prefixLen(%s) = %d, %v; want %d, %v", tc.mask, bits, ok, tc.bits, tc.ok)
		}
		if tc.ok && maskBits(tc.bits) != tc.mask {
			t.Errorf("maskBits(%d) = %s", tc.bits, maskBits(tc.bits))
		}
	}
	if !inPrefix(IP4{10, 0, 2, 15}, IP4{10, 0, 2, 2}, 24) || inPrefix(IP4{10, 0, 3, 1}, IP4{10, 0, 2, 2}, 24) || !inPrefix(IP4{1, 2, 3, 4}, IP4{}, 0) {
		t.Error("inPrefix")
	}
}

// The wire layout, byte by byte, as RFC 2131's figure 1 has it.
func TestMarshalLayout(t *testing.T) {
	hw := []byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	m := &message{op: opRequest, xid: 0xdeadbeef, secs: 3, flags: flagBroadcst, chaddr: hw, opts: map[byte][]byte{
		optParamRequest: {1, 3}, optMessageType: {msgDiscover}, optClientID: {1, 2},
	}}
	b := m.marshal()
	if len(b) != minMessage {
		t.Fatalf("length %d, want %d (padded)", len(b), minMessage)
	}
	want := map[int][]byte{
		0:   {1, 1, 6, 0},
		4:   {0xde, 0xad, 0xbe, 0xef},
		8:   {0, 3, 0x80, 0},
		28:  hw,
		34:  make([]byte, 10),
		236: {0x63, 0x82, 0x53, 0x63},
		// message type first, then by code, then the end
		240: {53, 1, 1, 55, 2, 1, 3, 61, 2, 1, 2, 255, 0},
	}
	for off, w := range want {
		if got := b[off : off+len(w)]; !bytes.Equal(got, w) {
			t.Errorf("at %d: % x, want % x", off, got, w)
		}
	}
}

func TestMessageRoundTrip(t *testing.T) {
	long := bytes.Repeat([]byte{7}, 600) // three instances on the wire
	m := &message{op: opReply, xid: 42, secs: 9, flags: flagBroadcst,
		ciaddr: IP4{1, 1, 1, 1}, yiaddr: IP4{10, 0, 2, 15}, siaddr: IP4{10, 0, 2, 2}, giaddr: IP4{3, 3, 3, 3},
		chaddr: []byte{1, 2, 3, 4, 5, 6},
		opts: map[byte][]byte{
			optMessageType: {msgAck}, optSubnetMask: {255, 255, 255, 0}, optRouter: {10, 0, 2, 2, 10, 0, 2, 3},
			optLeaseTime: {0, 1, 81, 128}, optServerID: {10, 0, 2, 2}, 200: long, optHostname: {},
		}}
	b := m.marshal()
	if len(b) < 600+3*2 {
		t.Fatalf("only %d bytes", len(b))
	}
	got, err := parseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, m)
	}
	if got.typ() != msgAck || got.String() != "ACK xid 0000002a" {
		t.Errorf("type %d, %s", got.typ(), got)
	}
	if r, ok := got.ip(optRouter); !ok || r != (IP4{10, 0, 2, 2}) {
		t.Errorf("router %s %v", r, ok)
	}
	if v, ok := got.u32(optLeaseTime); !ok || v != 86400 {
		t.Errorf("lease time %d %v", v, ok)
	}
}

func reply(opts ...byte) []byte {
	b := make([]byte, headerLen+4)
	b[0], b[1], b[2] = opReply, 1, 6
	binary.BigEndian.PutUint32(b[headerLen:], cookie)
	return append(b, opts...)
}

func TestParseMessage(t *testing.T) {
	overloaded := reply(optMessageType, 1, msgOffer, optOverload, 1, 3, optEnd)
	copy(overloaded[108:], []byte{optRouter, 4, 10, 0, 0, 1, optEnd})          // file
	copy(overloaded[44:], []byte{optServerID, 4, 10, 0, 0, 9, optPad, optEnd}) // sname
	for _, tc := range []struct {
		name string
		b    []byte
		err  string
		opts map[byte][]byte
	}{
		{"minimal", reply(), "", map[byte][]byte{}},
		{"no end option", reply(optMessageType, 1, msgOffer), "", map[byte][]byte{optMessageType: {msgOffer}}},
		{"pads", reply(optPad, optPad, optMessageType, 1, msgNak, optEnd, 99), "", map[byte][]byte{optMessageType: {msgNak}}},
		{"concatenated", reply(optRouter, 2, 1, 2, optRouter, 2, 3, 4), "", map[byte][]byte{optRouter: {1, 2, 3, 4}}},
		{"overload", overloaded, "", map[byte][]byte{optMessageType: {msgOffer}, optOverload: {3}, optRouter: {10, 0, 0, 1}, optServerID: {10, 0, 0, 9}}},
		{"short", make([]byte, 100), "shorter", nil},
		{"no cookie", reply()[:headerLen+4-1], "shorter", nil},
		{"bad cookie", append(make([]byte, headerLen), 1, 2, 3, 4), "magic cookie", nil},
		{"no length", reply(optRouter), "no length", nil},
		{"truncated", reply(optRouter, 4, 1, 2), "4 bytes, 2 left", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseMessage(tc.b)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m.opts, tc.opts) {
				t.Errorf("options %v, want %v", m.opts, tc.opts)
			}
		})
	}
	b := reply()
	b[2] = 17
	if _, err := parseMessage(b); err == nil {
		t.Error("hlen 17 accepted")
	}
}

// RFC 3442's encoding: prefix length, significant octets, router.
func TestClasslessRoutes(t *testing.T) {
	wire := []byte{
		0, 10, 0, 0, 1, // default via 10.0.0.1
		32, 169, 254, 169, 254, 10, 0, 0, 2, // metadata via 10.0.0.2
		24, 192, 168, 7, 0, 0, 0, 0, // 192.168.7.0/24 on link
		9, 10, 255, 10, 0, 0, 1, // 10.128.0.0/9: bits past the prefix are dropped
	}
	want := []Route{
		{Dst: IP4{}, Bits: 0, Gateway: IP4{10, 0, 0, 1}},
		{Dst: IP4{169, 254, 169, 254}, Bits: 32, Gateway: IP4{10, 0, 0, 2}},
		{Dst: IP4{192, 168, 7, 0}, Bits: 24},
		{Dst: IP4{10, 128, 0, 0}, Bits: 9, Gateway: IP4{10, 0, 0, 1}},
	}
	got, err := parseClasslessRoutes(wire)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, %v; want %v", got, err, want)
	}
	if again, _ := parseClasslessRoutes(classlessRoutes(want)); !reflect.DeepEqual(again, want) {
		t.Errorf("round trip: %v", again)
	}
	if got[2].String() != "192.168.7.0/24 on link" || got[1].String() != "169.254.169.254/32 via 10.0.0.2" {
		t.Errorf("String: %s, %s", got[2], got[1])
	}
	for _, bad := range [][]byte{{33, 1, 2, 3, 4, 5, 0, 0, 0, 0}, {24, 10, 0, 0, 10, 0, 0}, {8}} {
		if _, err := parseClasslessRoutes(bad); err == nil {
			t.Errorf("% x accepted", bad)
		}
	}
}

func TestLeaseFrom(t *testing.T) {
	ack := func(yi IP4, opts map[byte][]byte) *message {
		return &message{op: opReply, yiaddr: yi, opts: opts}
	}
	for _, tc := range []struct {
		name string
		m    *message
		want Lease
		err  string
	}{
		{"full", ack(IP4{10, 0, 2, 15}, map[byte][]byte{optSubnetMask: {255, 255, 255, 0}, optRouter: {10, 0, 2, 2},
			optServerID: {10, 0, 2, 2}, optLeaseTime: {0, 0, 0x0e, 0x10}, optMTU: {5, 0xb4},
			optClasslessRoute: {32, 169, 254, 169, 254, 10, 0, 2, 3}}),
			Lease{Addr: IP4{10, 0, 2, 15}, Bits: 24, Router: IP4{10, 0, 2, 2}, Server: IP4{10, 0, 2, 2}, Duration: time.Hour, MTU: 1460,
				Routes: []Route{{IP4{169, 254, 169, 254}, 32, IP4{10, 0, 2, 3}}}}, ""},
		{"gce /32", ack(IP4{10, 128, 0, 5}, map[byte][]byte{optSubnetMask: {255, 255, 255, 255}, optRouter: {10, 128, 0, 1}, optLeaseTime: {0xff, 0xff, 0xff, 0xff}}),
			Lease{Addr: IP4{10, 128, 0, 5}, Bits: 32, Router: IP4{10, 128, 0, 1}}, ""},
		{"classful A", ack(IP4{10, 1, 2, 3}, map[byte][]byte{}), Lease{Addr: IP4{10, 1, 2, 3}, Bits: 8}, ""},
		{"classful B", ack(IP4{172, 16, 2, 3}, map[byte][]byte{}), Lease{Addr: IP4{172, 16, 2, 3}, Bits: 16}, ""},
		{"classful C", ack(IP4{192, 168, 2, 3}, map[byte][]byte{}), Lease{Addr: IP4{192, 168, 2, 3}, Bits: 24}, ""},
		{"no address", ack(IP4{}, map[byte][]byte{}), Lease{}, "no address"},
		{"bad mask", ack(IP4{10, 0, 0, 1}, map[byte][]byte{optSubnetMask: {255, 0, 255, 0}}), Lease{}, "not contiguous"},
		{"bad routes", ack(IP4{10, 0, 0, 1}, map[byte][]byte{optClasslessRoute: {40}}), Lease{}, "prefix length 40"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := leaseFrom(tc.m)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*l, tc.want) {
				t.Errorf("got %+v\nwant %+v", *l, tc.want)
			}
		})
	}
}

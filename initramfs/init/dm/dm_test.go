package dm

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

var ne = binary.NativeEndian

// The sizes and offsets below are those of struct dm_ioctl and struct
// dm_target_spec in include/uapi/linux/dm-ioctl.h on x86-64.
func TestStructSizes(t *testing.T) {
	if n := binary.Size(unix.DmIoctl{}); n != 312 || sizeofIoctl != 312 || unix.SizeofDmIoctl != 312 {
		t.Errorf("dm_ioctl: binary size %d, unix.SizeofDmIoctl %d, want 312", n, unix.SizeofDmIoctl)
	}
	if n := binary.Size(unix.DmTargetSpec{}); n != 40 || sizeofTargetSpec != 40 || unix.SizeofDmTargetSpec != 40 {
		t.Errorf("dm_target_spec: binary size %d, unix.SizeofDmTargetSpec %d, want 40", n, unix.SizeofDmTargetSpec)
	}
}

func TestHeaderLayout(t *testing.T) {
	h, err := header("slate-root", unix.DM_READONLY_FLAG)
	if err != nil {
		t.Fatal(err)
	}
	h.Target_count = 1
	h.Dev = 0x1122334455667788
	buf := marshal(h, []byte("payload"))
	if len(buf) != bufSize {
		t.Fatalf("buffer is %d bytes, want %d", len(buf), bufSize)
	}
	for _, c := range []struct {
		name string
		off  int
		want uint32
	}{
		{"version[0]", 0, 4}, {"version[1]", 4, 0}, {"version[2]", 8, 0},
		{"data_size", 12, bufSize}, {"data_start", 16, 312}, {"target_count", 20, 1},
		{"open_count", 24, 0}, {"flags", 28, unix.DM_READONLY_FLAG}, {"event_nr", 32, 0}, {"padding", 36, 0},
	} {
		if got := ne.Uint32(buf[c.off:]); got != c.want {
			t.Errorf("%s at %d = %d, want %d", c.name, c.off, got, c.want)
		}
	}
	if got := ne.Uint64(buf[40:]); got != 0x1122334455667788 {
		t.Errorf("dev at 40 = %#x", got)
	}
	if got := string(bytes.TrimRight(buf[48:48+128], "\x00")); got != "slate-root" {
		t.Errorf("name at 48 = %q", got)
	}
	if got := string(buf[312 : 312+7]); got != "payload" {
		t.Errorf("payload at 312 = %q", got)
	}
	if back := unmarshalHeader(buf); back.Dev != h.Dev || back.Flags != h.Flags || back.Name != h.Name {
		t.Errorf("round trip: %+v", back)
	}
}

func TestHeaderRejectsBadNames(t *testing.T) {
	for _, n := range []string{"", "a/b", string(make([]byte, 128))} {
		if _, err := header(n, 0); err == nil {
			t.Errorf("name %q accepted", n)
		}
	}
}

func TestTablePayload(t *testing.T) {
	p, err := tablePayload([]Target{
		{0, 800, "verity", "1 /dev/vda2 /dev/vda2 4096 4096 100 101 sha256 ab -"},
		{800, 8, "zero", ""},
	})
	if err != nil {
		t.Fatal(err)
	}
	params := "1 /dev/vda2 /dev/vda2 4096 4096 100 101 sha256 ab -"
	first := (40 + len(params) + 1 + 7) &^ 7
	if len(p) != first+48 {
		t.Fatalf("payload is %d bytes, want %d", len(p), first+48)
	}
	if ne.Uint64(p[0:]) != 0 || ne.Uint64(p[8:]) != 800 || ne.Uint32(p[16:]) != 0 || ne.Uint32(p[20:]) != uint32(first) {
		t.Errorf("first spec: % x", p[:24])
	}
	if got := string(bytes.TrimRight(p[24:40], "\x00")); got != "verity" {
		t.Errorf("target_type %q", got)
	}
	if got := string(p[40 : 40+len(params)+1]); got != params+"\x00" {
		t.Errorf("params %q", got)
	}
	s := p[first:]
	if ne.Uint64(s[0:]) != 800 || ne.Uint64(s[8:]) != 8 || ne.Uint32(s[20:]) != 0 || string(bytes.TrimRight(s[24:40], "\x00")) != "zero" || s[40] != 0 {
		t.Errorf("second spec: % x", s)
	}
	for _, bad := range []Target{{0, 0, "verity", ""}, {0, 8, "", ""}, {0, 8, "a-type-name-too-long", ""}, {0, 8, "linear", "a\x00b"}} {
		if _, err := tablePayload([]Target{bad}); err == nil {
			t.Errorf("target %+v accepted", bad)
		}
	}
}

func TestDevName(t *testing.T) {
	if got := DevName(unix.Mkdev(254, 3)); got != "dm-3" {
		t.Errorf("DevName = %q", got)
	}
}

// Remove checks the name before it asks the kernel anything.
func TestRemoveBadName(t *testing.T) {
	for _, n := range []string{"", "a/b"} {
		if err := Remove(n); err == nil || !strings.Contains(err.Error(), "bad device name") {
			t.Errorf("Remove(%q) = %v, want a bad device name", n, err)
		}
	}
}

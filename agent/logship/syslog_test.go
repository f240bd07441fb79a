package logship

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestSDID(t *testing.T) {
	if SDID != "slate@"+strconv.Itoa(PEN) {
		t.Errorf("SDID %s does not carry PEN %d", SDID, PEN)
	}
}

// Journal entries as syslog messages: header fields, defaults, structured
// data and its escaping, binary and missing messages.
func TestFormat(t *testing.T) {
	ts := time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))
	boot := "0123456789abcdef0123456789abcdef"
	cases := []struct {
		name string
		e    Entry
		want string
	}{
		{
			"full",
			Entry{Time: ts, BootID: boot, Hostname: "node1", Unit: "ssh.service", Identifier: "sshd", Comm: "sshd", PID: "812", Priority: 6, Facility: 4,
				Message: []byte("Accepted publickey for root from 10.0.2.2")},
			`<38>1 2026-03-01T09:00:00.123456Z node1 sshd 812 - [slate@32473 boot="` + boot + `" unit="ssh.service"] Accepted publickey for root from 10.0.2.2`,
		},
		{
			"kernel",
			Entry{Time: ts, BootID: boot, Hostname: "node1", Identifier: "kernel", Priority: 3, Facility: 0, Message: []byte("EXT4-fs error")},
			`<3>1 2026-03-01T09:00:00.123456Z node1 kernel - - [slate@32473 boot="` + boot + `"] EXT4-fs error`,
		},
		{
			"defaults: user.info, fallback host, _COMM",
			Entry{Time: ts, Comm: "myapp", Priority: -1, Facility: -1, Message: []byte("hello")},
			`<14>1 2026-03-01T09:00:00.123456Z fallback myapp - - - hello`,
		},
		{
			"nothing at all",
			Entry{Priority: -1, Facility: -1},
			`<14>1 - fallback - - - -`,
		},
		{
			"escaping in structured data",
			Entry{Time: ts, Unit: `we"ird\unit].service`, Identifier: "x", Priority: 7, Facility: 23, Message: []byte(`a "quoted" ] \ message`)},
			`<191>1 2026-03-01T09:00:00.123456Z fallback x - - [slate@32473 unit="we\"ird\\unit\].service"] a "quoted" ] \ message`,
		},
		{
			"binary message",
			Entry{Time: ts, Identifier: "x", Priority: 6, Facility: 1, Message: []byte{'a', 0xff, 'b', 0xe2, 0x82, ' ', 0xc3, 0xa9, 0}},
			"<14>1 2026-03-01T09:00:00.123456Z fallback x - - - a\\xffb\\xe2\\x82 é\x00",
		},
		{
			"multi-line message",
			Entry{Time: ts, Identifier: "x", Priority: 6, Facility: 1, Message: []byte("line 1\nline 2")},
			"<14>1 2026-03-01T09:00:00.123456Z fallback x - - - line 1\nline 2",
		},
		{
			"long and unprintable app name and host",
			Entry{Time: ts, Hostname: "node 1", Identifier: "my app " + strings.Repeat("n", 60), PID: "1", Priority: 6, Facility: 1, Message: []byte("m")},
			"<14>1 2026-03-01T09:00:00.123456Z node_1 my_app_" + strings.Repeat("n", 41) + " 1 - - m",
		},
		{
			"non-UTF-8 unit",
			Entry{Time: ts, Unit: "u\xff.service", Identifier: "x", Priority: 6, Facility: 1},
			`<14>1 2026-03-01T09:00:00.123456Z fallback x - - [slate@32473 unit="u\\xff.service"]`,
		},
		{
			"out of range priority and facility",
			Entry{Time: ts, Identifier: "x", Priority: 9, Facility: 30, Message: []byte("m")},
			`<14>1 2026-03-01T09:00:00.123456Z fallback x - - - m`,
		},
	}
	for _, c := range cases {
		m := c.e.ToMessage("fallback")
		got := string(m.Append(nil))
		if got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
			continue
		}
		if !utf8.ValidString(got) {
			t.Errorf("%s: not UTF-8", c.name)
		}
		if strings.Contains(got, "\ufeff") {
			t.Errorf("%s: BOM", c.name)
		}
		// What the fake collector parses back.
		if _, err := parseSyslog(got); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// The parser reads escapes back.
	m := (&Entry{Unit: `we"ird\unit].service`, Priority: -1, Facility: -1}).ToMessage("h")
	r, err := parseSyslog(string(m.Append(nil)))
	if err != nil || r.Params["unit"] != `we"ird\unit].service` || r.HasMsg {
		t.Errorf("parsed back: %+v, %v", r, err)
	}
}

func TestFrame(t *testing.T) {
	m := Message{Time: time.Unix(0, 0), Hostname: "h", AppName: "a", Text: []byte("é€\nx")}
	prefix := []byte("previous")
	b := AppendFrame(prefix, &m)
	if !bytes.HasPrefix(b, []byte("previous")) {
		t.Fatalf("the frame overwrote what was before it: %q", b)
	}
	body := string(m.Append(nil))
	want := "previous" + strconv.Itoa(len(body)) + " " + body
	if string(b) != want {
		t.Errorf("frame %q, want %q", b, want)
	}
	// Two frames read back.
	b = AppendFrame(nil, &m)
	b = AppendFrame(b, &m)
	br := bufio.NewReader(bytes.NewReader(b))
	for range 2 {
		if s, err := readFrame(br); err != nil || s != body {
			t.Errorf("read back %q, %v", s, err)
		}
	}
}

func TestTextCut(t *testing.T) {
	long := bytes.Repeat([]byte("x"), MaxText+10)
	got := string(appendText(nil, long))
	if want := strings.Repeat("x", MaxText) + "…[slate: 10 bytes cut]"; got != want {
		t.Errorf("cut: ...%q", got[len(got)-40:])
	}
	// A character across the cut is not split.
	long = append(bytes.Repeat([]byte("x"), MaxText-1), "é and more"...)
	got = string(appendText(nil, long))
	if !utf8.ValidString(got) || !strings.HasSuffix(got, "x…[slate: 11 bytes cut]") {
		t.Errorf("cut across a character: ...%q", got[len(got)-40:])
	}
}

func TestParseEntry(t *testing.T) {
	us := time.Date(2026, 3, 1, 10, 0, 0, 123456000, time.UTC).UnixMicro()
	line := `{"__CURSOR":"s=7a;i=1f;b=0123;m=11;t=22;x=33","__REALTIME_TIMESTAMP":"` + strconv.FormatInt(us, 10) + `","__MONOTONIC_TIMESTAMP":"11",` +
		`"_BOOT_ID":"0123456789abcdef0123456789abcdef","PRIORITY":"4","SYSLOG_FACILITY":"3","SYSLOG_IDENTIFIER":"systemd","_COMM":"systemd",` +
		`"_PID":"1","_HOSTNAME":"node1","_SYSTEMD_UNIT":"init.scope","MESSAGE":"Started foo.service.","_TRANSPORT":"journal"}`
	e, err := ParseEntry([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := Entry{Cursor: "s=7a;i=1f;b=0123;m=11;t=22;x=33", Time: time.UnixMicro(us).UTC(), BootID: "0123456789abcdef0123456789abcdef",
		Hostname: "node1", Unit: "init.scope", Identifier: "systemd", Comm: "systemd", PID: "1", Priority: 4, Facility: 3, Message: []byte("Started foo.service.")}
	if e.Cursor != want.Cursor || !e.Time.Equal(want.Time) || e.BootID != want.BootID || e.Hostname != want.Hostname || e.Unit != want.Unit ||
		e.Identifier != want.Identifier || e.Comm != want.Comm || e.PID != want.PID || e.Priority != 4 || e.Facility != 3 || string(e.Message) != string(want.Message) {
		t.Errorf("got %+v", e)
	}

	for _, c := range []struct {
		line string
		msg  []byte
		id   string
		err  bool
	}{
		{`{"__CURSOR":"c","MESSAGE":[104,105,255,0]}`, []byte{'h', 'i', 0xff, 0}, "", false},
		{`{"__CURSOR":"c","MESSAGE":null}`, nil, "", false},
		{`{"__CURSOR":"c"}`, nil, "", false},
		{`{"__CURSOR":"c","MESSAGE":["first","second"],"SYSLOG_IDENTIFIER":["a","b"]}`, []byte("first"), "a", false},
		{`{"__CURSOR":"c","MESSAGE":[[104,105],"x"]}`, []byte("hi"), "", false},
		{`{"__CURSOR":"c","MESSAGE":[]}`, []byte{}, "", false},
		{`{"__CURSOR":"c","MESSAGE":"ok","SYSLOG_IDENTIFIER":{}}`, []byte("ok"), "", true},
		{`{"__CURSOR":"c","MESSAGE":[104,300]}`, nil, "", true},
	} {
		e, err := ParseEntry([]byte(c.line))
		if e == nil || (err != nil) != c.err || !bytes.Equal(e.Message, c.msg) || (c.msg == nil) != (e.Message == nil) || e.Identifier != c.id || e.Cursor != "c" {
			t.Errorf("%s: %+v, %v", c.line, e, err)
		}
		if e != nil && (e.Priority != -1 || e.Facility != -1) {
			t.Errorf("%s: priority %d facility %d, want -1", c.line, e.Priority, e.Facility)
		}
	}
	if e, err := ParseEntry([]byte(`not json`)); e != nil || err == nil {
		t.Errorf("not JSON: %+v, %v", e, err)
	}
}

// The real journalctl knows the options the shipper runs it with.
func TestJournalctlCommand(t *testing.T) {
	path, err := exec.LookPath("journalctl")
	if err != nil {
		t.Skip("no journalctl")
	}
	help, err := exec.Command(path, "--help").Output()
	if err != nil {
		t.Skipf("journalctl does not run: %v", err)
	}
	j := Journalctl{}
	cmd := j.command(context.Background(), "", false)
	if want := []string{"journalctl", "-o", "json", "--no-tail", "--all"}; !slices.Equal(cmd.Args, want) || cmd.Path != path {
		t.Errorf("no cursor: %s %q", cmd.Path, cmd.Args)
	}
	cmd = j.command(context.Background(), "s=7a;i=1f;b=01;m=11;t=22;x=33", true)
	if want := []string{"journalctl", "-o", "json", "--follow", "--no-tail", "--all", "--after-cursor=s=7a;i=1f;b=01;m=11;t=22;x=33"}; !slices.Equal(cmd.Args, want) {
		t.Errorf("following with a cursor: %q", cmd.Args)
	}
	for _, opt := range []string{"--output", "--follow", "--no-tail", "--all", "--after-cursor"} {
		if !bytes.Contains(help, []byte(opt)) {
			t.Errorf("journalctl --help does not mention %s", opt)
		}
	}
}

// The journalctl reader, against a script that prints what journalctl
// would and then follows (waits): entries, the cursor it was given, an
// unparsable line with a cursor, Close ending it.
func TestJournalctlReader(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	data := `{"__CURSOR":"c1","MESSAGE":"one","PRIORITY":"6"}
{"__CURSOR":"c2","MESSAGE":[116,119,111]}

{"__CURSOR":"c3", "MESSAGE": broken
garbage without a cursor
{"__CURSOR":"c4","MESSAGE":"four"}
`
	os.WriteFile(filepath.Join(dir, "data"), []byte(data), 0o644)
	script := filepath.Join(dir, "journalctl")
	// It catches up (no --follow: prints and exits), then follows (prints
	// the newer entry and waits).
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$@\" >> "+dir+"/args\ncase \"$*\" in\n*--follow*) echo '{\"__CURSOR\":\"c5\",\"MESSAGE\":\"five\"}'; exec sleep 60;;\nesac\ncat "+dir+"/data\n"), 0o755)

	r, err := Journalctl{Path: script}.Open(context.Background(), "c0")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 5 {
		e, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e.Cursor+":"+string(e.Message))
	}
	if len(got) != 5 || got[0] != "c1:one" || got[1] != "c2:two" || !strings.HasPrefix(got[2], "c3:[slate: journal entry: invalid character") || got[3] != "c4:four" || got[4] != "c5:five" {
		t.Errorf("entries %q", got)
	}
	args, _ := os.ReadFile(filepath.Join(dir, "args"))
	if string(args) != "-o json --no-tail --all --after-cursor=c0\n-o json --follow --no-tail --all --after-cursor=c4\n" {
		t.Errorf("args %q", args)
	}
	next := make(chan error, 1)
	go func() {
		_, err := r.Next()
		next <- err
	}()
	time.Sleep(20 * time.Millisecond)
	r.Close()
	select {
	case err := <-next:
		if err == nil {
			t.Error("Next after Close: no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a waiting Next")
	}

	// A journalctl that fails says why.
	os.WriteFile(script, []byte("#!/bin/sh\necho 'Failed to seek to cursor: Invalid argument' >&2\nexit 1\n"), 0o755)
	r, err = Journalctl{Path: script}.Open(context.Background(), "bad")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Next(); err == nil || !strings.Contains(err.Error(), "Failed to seek to cursor") {
		t.Errorf("failing journalctl: %v", err)
	}
}

func TestReadLine(t *testing.T) {
	in := "short\n" + strings.Repeat("y", 100) + "\nlast"
	br := bufio.NewReaderSize(strings.NewReader(in), 16)
	for _, w := range []struct {
		line string
		size int
	}{{"short", 5}, {strings.Repeat("y", 40), 100}, {"last", 4}} {
		line, size, err := readLine(br, 40)
		if err != nil || string(line) != w.line || size != w.size {
			t.Errorf("%q %d %v, want %q %d", line, size, err, w.line, w.size)
		}
	}
	if _, _, err := readLine(br, 40); err == nil {
		t.Error("no EOF")
	}
	// An oversize line with a cursor stands for itself; without, it is
	// dropped.
	if e := leftOut([]byte(`{"__CURSOR":"s=1;i=\"2","MESSAGE":"xxxx`), "too long"); e == nil || e.Cursor != `s=1;i="2` || string(e.Message) != "[slate: too long]" {
		t.Errorf("left out: %+v", e)
	}
	if e := leftOut([]byte(`{"MESSAGE":"xxxx`), "too long"); e != nil {
		t.Errorf("left out without a cursor: %+v", e)
	}
}

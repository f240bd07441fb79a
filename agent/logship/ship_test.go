package logship

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slate-os/slate/agent/history"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/nodeconfig"
)

// testOptions are fast: short backoff, settle and linger.
func testOptions(t *testing.T, collector string, src Source, l *logRecorder) Options {
	return Options{
		Collector:   collector,
		StateDir:    filepath.Join(t.TempDir(), "logship"),
		HistoryDir:  t.TempDir(),
		Source:      src,
		Hostname:    "node1",
		Log:         l.log,
		MinBackoff:  10 * time.Millisecond,
		MaxBackoff:  50 * time.Millisecond,
		DialTimeout: 5 * time.Second,
		AckTimeout:  5 * time.Second,
		Settle:      20 * time.Millisecond,
		Linger:      5 * time.Millisecond,
	}
}

// startShipper runs Run until the returned stop is called (or the test
// ends); stop waits for Run to return and fails the test if it returned
// early.
func startShipper(t *testing.T, o Options) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		select {
		case err := <-done:
			t.Errorf("Run returned before it was stopped: %v", err)
			return
		default:
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after its context was cancelled")
		}
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readCursor(o Options) string {
	b, err := os.ReadFile(filepath.Join(o.StateDir, CursorFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// journalTexts are the texts of the journal's messages (not the
// rollbacks'), in the order received.
func journalTexts(msgs []rmsg) []string {
	var out []string
	for _, m := range msgs {
		if m.App != RollbackApp {
			out = append(out, m.Msg)
		}
	}
	return out
}

func want(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("message %d", i))
	}
	return out
}

// covers says whether got holds every one of want, in order of first
// appearance (duplicates of at-least-once allowed).
func covers(got, want []string) bool {
	seen := map[string]bool{}
	var firsts []string
	for _, g := range got {
		if !seen[g] {
			seen[g] = true
			firsts = append(firsts, g)
		}
	}
	return slices.Equal(firsts, want)
}

// waitDelivered waits until the cursor is cN and the collector has parsed
// messages 1 to n: it reads them after its TCP stack acknowledged them, so
// the cursor may be saved a moment before.
func waitDelivered(t *testing.T, col *collector, o Options, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("cursor c%d and messages 1 to %d", n, n), func() bool {
		return readCursor(o) == fmt.Sprintf("c%d", n) && covers(journalTexts(col.messages()), want(1, n))
	})
}

// The journal reaches the collector over TCP, formatted, in order, and the
// cursor follows what was delivered.
func TestShipTCP(t *testing.T) {
	col := newCollector(t, nil)
	j := newFakeJournal(5)
	l := &logRecorder{t: t}
	o := testOptions(t, "tcp://"+col.addr, j, l)
	startShipper(t, o)

	waitDelivered(t, col, o, 5)
	m := col.messages()[0]
	if m.Pri != 3*8+6 || m.Time != "2026-03-01T10:00:00.001000Z" || m.Host != "node1" || m.App != "app" || m.ProcID != "42" || m.MsgID != "-" ||
		m.SDID != SDID || m.Params["boot"] != testBoot || m.Params["unit"] != "app.service" || m.Msg != "message 1" {
		t.Errorf("first message: %+v", m)
	}
	j.add(3)
	waitDelivered(t, col, o, 8)
	if got := journalTexts(col.messages()); !slices.Equal(got, want(1, 8)) {
		t.Errorf("received %q", got)
	}
	if n := l.count("collector tcp://" + col.addr + ": connected, shipping from the start of the journal"); n != 1 {
		t.Errorf("%d lines say connected: %q", n, l.all())
	}
	if errs := col.errors(); len(errs) > 0 {
		t.Errorf("collector: %v", errs)
	}
}

// The cursor (and a rollback's mark) moves only once the collector's TCP
// stack acknowledged the bytes: a collector that does not read, with a
// small receive buffer, leaves both where they were; the shipper gives
// the connection up and sends everything again on the next.
func TestCursorOnlyAfterAck(t *testing.T) {
	col := &collector{t: t, rcvbuf: 4096}
	col.setPaused(true)
	col.start("127.0.0.1:0")
	t.Cleanup(col.stop)

	j := newFakeJournal(0)
	// 40 entries of 2 KiB: more than the collector's window.
	for range 40 {
		j.add(1)
		j.entries[len(j.entries)-1].Message = append(j.entries[len(j.entries)-1].Message, " "+strings.Repeat("x", 2048)...)
	}
	l := &logRecorder{t: t}
	o := testOptions(t, "tcp://"+col.addr, j, l)
	o.AckTimeout = 300 * time.Millisecond
	rb := writeRollback(t, o.HistoryDir, "3-b", true)
	// A console bigger than the collector's window.
	os.WriteFile(filepath.Join(rb, "console.txt"), []byte(strings.Repeat("[    1.000000] "+strings.Repeat("c", 200)+"\n", 200)), 0o644)
	startShipper(t, o)

	waitFor(t, "the shipper to give up the stalled connection", func() bool { return l.count("unreachable") > 0 })
	if c := readCursor(o); c != "" {
		t.Fatalf("cursor %q saved though the collector acknowledged nothing of it", c)
	}
	if _, err := os.Stat(filepath.Join(rb, ShippedFile)); err == nil {
		t.Fatal("rollback marked shipped though the collector did not acknowledge it")
	}
	if !strings.Contains(strings.Join(l.all(), "\n"), "not acknowledged by the collector") {
		t.Errorf("log: %q", l.all())
	}

	col.setPaused(false)
	waitFor(t, "everything and cursor c40", func() bool {
		texts := journalTexts(col.messages())
		for i := range texts {
			texts[i], _, _ = strings.Cut(texts[i], " x")
		}
		return readCursor(o) == "c40" && covers(texts, want(1, 40))
	})
	if _, err := os.Stat(filepath.Join(rb, ShippedFile)); err != nil {
		t.Errorf("rollback not marked after delivery: %v", err)
	}
}

// A collector down at the start, then up, then down again while entries
// are written, then up: nothing is lost, and each outage is one line.
func TestCollectorDownThenUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	j := newFakeJournal(3)
	l := &logRecorder{t: t}
	o := testOptions(t, "tcp://"+addr, j, l)
	startShipper(t, o)

	waitFor(t, "unreachable", func() bool { return l.count("unreachable") == 1 })
	time.Sleep(200 * time.Millisecond) // several retries
	if c := readCursor(o); c != "" {
		t.Fatalf("cursor %q with the collector down", c)
	}
	j.add(3)
	col := &collector{t: t}
	col.start(addr)
	t.Cleanup(col.stop)
	waitDelivered(t, col, o, 6)

	col.stop()
	waitFor(t, "the second outage", func() bool { return l.count("unreachable") == 2 })
	j.add(4)
	time.Sleep(200 * time.Millisecond)
	if c := readCursor(o); c != "c6" {
		t.Fatalf("cursor %q with the collector down, want c6", c)
	}
	col.start(addr)
	waitDelivered(t, col, o, 10)
	if u, c := l.count("unreachable"), l.count("connected"); u != 2 || c != 2 {
		t.Errorf("%d unreachable and %d connected lines, want 2 and 2: %q", u, c, l.all())
	}
	if n := l.count("connected, shipping from cursor c6"); n != 1 {
		t.Errorf("the reconnection does not say its cursor: %q", l.all())
	}
	// Reading started again at the saved cursor, never past it.
	for _, c := range j.openedWith() {
		if c != "" && c != "c3" && c != "c6" && c != "c10" {
			t.Errorf("journal opened at %q", c)
		}
	}
}

// A restart of the shipper (a reboot) reads on from the saved cursor:
// nothing delivered is sent again, nothing written since is lost.
func TestRestartResumes(t *testing.T) {
	col := newCollector(t, nil)
	j := newFakeJournal(5)
	l := &logRecorder{t: t}
	o := testOptions(t, "tcp://"+col.addr, j, l)
	stop := startShipper(t, o)
	waitDelivered(t, col, o, 5)
	stop()

	j.add(3)
	startShipper(t, o)
	waitDelivered(t, col, o, 8)
	if got := journalTexts(col.messages()); !slices.Equal(got, want(1, 8)) {
		t.Errorf("received %q, want each once", got)
	}
	if opens := j.openedWith(); opens[len(opens)-1] != "c5" {
		t.Errorf("the second run opened the journal at %q, want c5", opens)
	}
	if n := l.count("connected, shipping from cursor c5"); n != 1 {
		t.Errorf("log: %q", l.all())
	}
}

// A cursor file that is not a cursor is ignored: the journal is shipped
// from its start (duplicates, never loss).
func TestBadCursor(t *testing.T) {
	col := newCollector(t, nil)
	j := newFakeJournal(2)
	l := &logRecorder{t: t}
	o := testOptions(t, "tcp://"+col.addr, j, l)
	os.MkdirAll(o.StateDir, 0o755)
	os.WriteFile(filepath.Join(o.StateDir, CursorFile), []byte("not a\x00cursor"), 0o644)
	startShipper(t, o)
	waitDelivered(t, col, o, 2)
	if l.count("not a journal cursor") != 1 || j.openedWith()[0] != "" {
		t.Errorf("log %q, opens %q", l.all(), j.openedWith())
	}
}

// A batch holds at most BatchEntries entries: reading never gets further
// past the saved cursor than a batch and the entry in hand.
func TestBatchBounded(t *testing.T) {
	col := newCollector(t, nil)
	j := newFakeJournal(95)
	l := &logRecorder{t: t}
	o := testOptions(t, "tcp://"+col.addr, j, l)
	o.BatchEntries = 10
	src := &aheadSource{Source: j, stateDir: o.StateDir}
	o.Source = src
	startShipper(t, o)
	waitDelivered(t, col, o, 95)
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.max > o.BatchEntries+1 {
		t.Errorf("read %d entries past the saved cursor, want at most %d", src.max, o.BatchEntries+1)
	}
}

// aheadSource notes how far reading got past the saved cursor.
type aheadSource struct {
	Source
	stateDir string
	mu       sync.Mutex
	max      int
}

func (s *aheadSource) Open(ctx context.Context, cursor string) (Reader, error) {
	r, err := s.Source.Open(ctx, cursor)
	if err != nil {
		return nil, err
	}
	return &aheadReader{Reader: r, s: s}, nil
}

type aheadReader struct {
	Reader
	s *aheadSource
}

func (r *aheadReader) Next() (*Entry, error) {
	e, err := r.Reader.Next()
	if err == nil {
		var i, saved int
		fmt.Sscanf(e.Cursor, "c%d", &i)
		fmt.Sscanf(readCursor(Options{StateDir: r.s.stateDir}), "c%d", &saved)
		r.s.mu.Lock()
		r.s.max = max(r.s.max, i-saved)
		r.s.mu.Unlock()
	}
	return e, err
}

// testPKI is a CA with a server certificate for 127.0.0.1 and
// collector.test, and a client certificate.
type testPKI struct {
	caPEM, serverCertPEM, serverKeyPEM, clientCertPEM, clientKeyPEM string
	pool                                                            *x509.CertPool
}

func newPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name + " CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP, dns []string) (certPEM, keyPEM string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
			DNSNames:     dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalPKCS8PrivateKey(key)
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
			string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	}
	p := &testPKI{caPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))}
	p.serverCertPEM, p.serverKeyPEM = issue(2, "collector", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"collector.test"})
	p.clientCertPEM, p.clientKeyPEM = issue(3, "node1", x509.ExtKeyUsageClientAuth, nil, nil)
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca)
	return p
}

func (p *testPKI) serverConfig(t *testing.T) *tls.Config {
	cert, err := tls.X509KeyPair([]byte(p.serverCertPEM), []byte(p.serverKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.pool, MinVersion: tls.VersionTLS12}
}

// Over TLS with a client certificate (mTLS) the collector accepts the node
// and the journal arrives; the server name may be given apart from the
// address.
func TestShipTLS(t *testing.T) {
	pki := newPKI(t, "test")
	col := newCollector(t, pki.serverConfig(t))
	cfg, err := TLSConfig(nodeconfig.Logging{
		Collector:         "tls://" + col.addr,
		CA:                pki.caPEM,
		ClientCertificate: pki.clientCertPEM,
		ClientKey:         pki.clientKeyPEM,
		ServerName:        "collector.test",
	})
	if err != nil {
		t.Fatal(err)
	}
	j := newFakeJournal(4)
	l := &logRecorder{t: t}
	o := testOptions(t, "tls://"+col.addr, j, l)
	o.TLS = cfg
	startShipper(t, o)
	waitDelivered(t, col, o, 4)
	if got := journalTexts(col.messages()); !slices.Equal(got, want(1, 4)) {
		t.Errorf("received %q", got)
	}
	col.mu.Lock()
	peers := col.peers
	col.mu.Unlock()
	if len(peers) == 0 || peers[0] != "node1" {
		t.Errorf("client certificates: %q", peers)
	}
	if errs := col.errors(); len(errs) > 0 {
		t.Errorf("collector: %v", errs)
	}
}

// A collector whose certificate does not chain to logging.ca is refused,
// again and again, with one line; and so is a node without the client
// certificate the collector wants (TLS 1.3 says so only after the client's
// handshake: the connection must not count as up, nor its bytes as
// delivered).
func TestTLSRefused(t *testing.T) {
	pki := newPKI(t, "test")
	other := newPKI(t, "other")
	cases := []struct {
		name string
		cfg  nodeconfig.Logging
		log  string
	}{
		{"wrong CA", nodeconfig.Logging{CA: other.caPEM, ClientCertificate: pki.clientCertPEM, ClientKey: pki.clientKeyPEM}, "certificate signed by unknown authority"},
		{"no client certificate", nodeconfig.Logging{CA: pki.caPEM}, "certificate required"},
		{"wrong server name", nodeconfig.Logging{CA: pki.caPEM, ClientCertificate: pki.clientCertPEM, ClientKey: pki.clientKeyPEM, ServerName: "elsewhere.test"}, "elsewhere.test"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			col := newCollector(t, pki.serverConfig(t))
			cfg, err := TLSConfig(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			l := &logRecorder{t: t}
			o := testOptions(t, "tls://"+col.addr, newFakeJournal(3), l)
			o.TLS = cfg
			stop := startShipper(t, o)
			waitFor(t, "three attempts", func() bool {
				col.mu.Lock()
				defer col.mu.Unlock()
				return col.accepted >= 3
			})
			stop() // fails the test if Run had returned
			if len(col.messages()) != 0 || readCursor(o) != "" {
				t.Errorf("delivered: %v, cursor %q", col.messages(), readCursor(o))
			}
			if n := l.count("unreachable"); n != 1 || l.count(tc.log) != 1 || l.count("connected") != 0 {
				t.Errorf("log, want one line saying %q: %q", tc.log, l.all())
			}
		})
	}
}

func TestTLSConfigErrors(t *testing.T) {
	pki := newPKI(t, "test")
	other := newPKI(t, "other")
	badCert := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}))
	cases := []struct {
		l    nodeconfig.Logging
		want string
	}{
		{nodeconfig.Logging{CA: "junk"}, "logging.ca: no PEM certificate"},
		{nodeconfig.Logging{CA: badCert}, "logging.ca: certificate 1:"},
		{nodeconfig.Logging{CA: pki.clientKeyPEM}, "logging.ca: PEM block 1 is PRIVATE KEY"},
		{nodeconfig.Logging{ClientCertificate: pki.clientCertPEM}, "logging.clientKey: missing"},
		{nodeconfig.Logging{ClientKey: pki.clientKeyPEM}, "logging.clientCertificate: missing"},
		{nodeconfig.Logging{ClientCertificate: badCert, ClientKey: pki.clientKeyPEM}, "logging.clientCertificate: certificate 1:"},
		{nodeconfig.Logging{ClientCertificate: pki.clientCertPEM, ClientKey: "junk"}, "logging.clientKey: no PEM private key"},
		{nodeconfig.Logging{ClientCertificate: pki.clientCertPEM, ClientKey: other.clientKeyPEM}, "logging.clientKey: tls: private key does not match public key"},
	}
	for _, c := range cases {
		_, err := TLSConfig(c.l)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.l, err, c.want)
		}
	}
	cfg, err := TLSConfig(nodeconfig.Logging{})
	if err != nil || cfg.RootCAs != nil || cfg.MinVersion != tls.VersionTLS12 || len(cfg.Certificates) != 0 {
		t.Errorf("empty: %+v, %v", cfg, err)
	}
}

func TestParseCollector(t *testing.T) {
	for _, c := range []struct {
		in   string
		tls  bool
		addr string
	}{
		{"tcp://10.0.2.2:6514", false, "10.0.2.2:6514"},
		{"tls://logs.example:6514", true, "logs.example:6514"},
		{"tls://[fd00::1]:6514", true, "[fd00::1]:6514"},
	} {
		useTLS, addr, err := ParseCollector(c.in)
		if err != nil || useTLS != c.tls || addr != c.addr {
			t.Errorf("%s: %v %q %v", c.in, useTLS, addr, err)
		}
	}
	for _, bad := range []string{"", "udp://h:514", "tls://h", "h:514", "tcp://:514"} {
		if _, _, err := ParseCollector(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := Run(context.Background(), Options{Collector: "udp://x:1"}); err == nil {
		t.Error("Run accepted udp://")
	}
}

// writeRollback writes a rollback directory as agent/history leaves it.
func writeRollback(t *testing.T, historyDir, name string, logs bool) string {
	t.Helper()
	dir := filepath.Join(historyDir, "rollbacks", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := history.Rollback{
		Time:           time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC),
		FromSlot:       boot.SlotB,
		FromVersion:    "1.2",
		FromGeneration: 3,
		ToSlot:         boot.SlotA,
		ToVersion:      "1.1",
		Cause:          `health check failed: unit "x.service" failed [exit 1]`,
		Boots:          []string{testBoot},
		Files:          []string{"console.txt", "journal.txt"},
	}
	data, _ := json.MarshalIndent(r, "", "  ")
	os.WriteFile(filepath.Join(dir, "rollback.json"), data, 0o644)
	if logs {
		os.WriteFile(filepath.Join(dir, "console.txt"), []byte("[    1.000000] Linux version 6.1\r\n\n[    2.000000] oops\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "journal.txt"), []byte("==== boot "+testBoot+": 1.2 slate-b+2-1.conf, started 2026-03-01T08:59:00Z, health bad: x failed ====\n"+
			"[    3.000000] node1 systemd[1]: x.service: Failed\nlast line without newline"), 0o644)
	}
	return dir
}

// The logs of a boot that rolled back are shipped when the shipper starts,
// marked as such, and the directory is marked so that they are sent once;
// directories that cannot be read are skipped with a warning.
func TestRollbacksShippedOnce(t *testing.T) {
	col := newCollector(t, nil)
	j := newFakeJournal(1)
	l := &logRecorder{t: t}
	o := testOptions(t, "tcp://"+col.addr, j, l)
	dir := writeRollback(t, o.HistoryDir, "3-b", true)
	done := writeRollback(t, o.HistoryDir, "2-a", true)
	os.WriteFile(filepath.Join(done, ShippedFile), []byte("earlier\n"), 0o644)
	broken := filepath.Join(o.HistoryDir, "rollbacks", "4-a")
	os.MkdirAll(broken, 0o755)
	os.WriteFile(filepath.Join(broken, "rollback.json"), []byte("{"), 0o644)
	writeRollback(t, o.HistoryDir, "5-b.partial", true)
	empty := writeRollback(t, o.HistoryDir, "1-b", false)

	stop := startShipper(t, o)
	waitDelivered(t, col, o, 1)
	waitFor(t, "the rollbacks' messages", func() bool { return len(col.messages()) == 1+7 })
	stop()

	var rb []rmsg
	for _, m := range col.messages() {
		if m.App == RollbackApp {
			rb = append(rb, m)
		}
	}
	// 1-b (summary only), then 3-b: summary, 2 console lines, 3 journal lines.
	if len(rb) != 1+1+2+3 {
		t.Fatalf("%d rollback messages: %+v", len(rb), rb)
	}
	if rb[0].Params["rollback"] != "1-b" || rb[1].Params["rollback"] != "3-b" {
		t.Errorf("order: %+v", rb[:2])
	}
	sum := rb[1]
	if sum.Pri != 1*8+4 || sum.Time != "2026-03-01T09:00:00.000000Z" || sum.Host != "node1" || sum.Params["file"] != "" ||
		sum.Msg != `slate: 1.2 in slot b (generation 3) rolled back to slot a (1.1): health check failed: unit "x.service" failed [exit 1]; the logs kept from its boots follow` {
		t.Errorf("summary: %+v", sum)
	}
	wantLines := []struct{ file, boot, msg string }{
		{"console.txt", "", "[    1.000000] Linux version 6.1"},
		{"console.txt", "", "[    2.000000] oops"},
		{"journal.txt", testBoot, "==== boot " + testBoot + ": 1.2 slate-b+2-1.conf, started 2026-03-01T08:59:00Z, health bad: x failed ===="},
		{"journal.txt", testBoot, "[    3.000000] node1 systemd[1]: x.service: Failed"},
		{"journal.txt", testBoot, "last line without newline"},
	}
	for i, w := range wantLines {
		m := rb[2+i]
		p := m.Params
		if m.Msg != w.msg || p["file"] != w.file || p["boot"] != w.boot || p["rollback"] != "3-b" || p["fromSlot"] != "b" ||
			p["fromVersion"] != "1.2" || p["toSlot"] != "a" || p["cause"] != `health check failed: unit "x.service" failed [exit 1]` || m.Pri != 14 {
			t.Errorf("line %d: %+v", i, m)
		}
	}
	for _, d := range []string{dir, empty} {
		if _, err := os.Stat(filepath.Join(d, ShippedFile)); err != nil {
			t.Errorf("%s not marked: %v", d, err)
		}
	}
	if _, err := os.Stat(filepath.Join(broken, ShippedFile)); err == nil {
		t.Error("an unreadable directory was marked shipped")
	}
	if l.count("4-a") != 1 || l.count("warning") != 1 {
		t.Errorf("log: %q", l.all())
	}

	// Started again (the next boot): nothing of the rollbacks again.
	n := len(col.messages())
	j.add(1)
	startShipper(t, o)
	waitDelivered(t, col, o, 2)
	if got := col.messages()[n:]; len(got) != 1 || got[0].Msg != "message 2" {
		t.Errorf("second start sent %+v", got)
	}
}

// With no rollbacks directory at all, nothing is said.
func TestNoRollbacks(t *testing.T) {
	col := newCollector(t, nil)
	l := &logRecorder{t: t}
	o := testOptions(t, "tcp://"+col.addr, newFakeJournal(1), l)
	o.HistoryDir = filepath.Join(t.TempDir(), "absent")
	startShipper(t, o)
	waitDelivered(t, col, o, 1)
	if l.count("warning") != 0 {
		t.Errorf("log: %q", l.all())
	}
}

// flakySource fails its first opens, and refuses a cursor as journalctl
// refuses one it cannot parse.
type flakySource struct {
	*fakeJournal
	mu       sync.Mutex
	failures int
}

func (s *flakySource) Open(ctx context.Context, cursor string) (Reader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cursor == "c-bogus" {
		return nil, errors.New("journalctl: exit status 1: Failed to seek to cursor: Invalid argument")
	}
	if s.failures > 0 {
		s.failures--
		return nil, errors.New("journalctl: signal: killed")
	}
	return s.fakeJournal.Open(ctx, cursor)
}

// A journal that fails is read again from the cursor, said once; a cursor
// journalctl cannot seek to is dropped for the start of the journal.
func TestJournalFailures(t *testing.T) {
	col := newCollector(t, nil)
	src := &flakySource{fakeJournal: newFakeJournal(3), failures: 3}
	l := &logRecorder{t: t}
	o := testOptions(t, "tcp://"+col.addr, src, l)
	os.MkdirAll(o.StateDir, 0o755)
	os.WriteFile(filepath.Join(o.StateDir, CursorFile), []byte("c-bogus\n"), 0o644)
	startShipper(t, o)
	waitDelivered(t, col, o, 3)
	if got := journalTexts(col.messages()); !slices.Equal(got, want(1, 3)) {
		t.Errorf("received %q", got)
	}
	if l.count("Failed to seek to cursor") != 2 || l.count("shipping the journal from its start") != 1 || l.count("signal: killed") != 0 {
		t.Errorf("log: %q", l.all())
	}
	if l.count("unreachable") != 0 || l.count("connected") != 1 {
		t.Errorf("a journal failure was taken for the collector's: %q", l.all())
	}
}

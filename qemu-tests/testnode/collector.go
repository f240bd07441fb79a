package testnode

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Collector is a syslog collector on the host's loopback, as a fleet's
// rsyslog or Vector would be: RFC 5424 messages framed by octet counting
// (RFC 6587), over TCP or TLS. It can be stopped and started again on the
// same port, for outages.
type Collector struct {
	Port int
	tls  *tls.Config // nil: plain TCP

	mu    sync.Mutex
	l     net.Listener
	conns []net.Conn
	msgs  []string
	errs  []string
}

// CollectorTLS is what a node config needs to reach a TLS collector.
type CollectorTLS struct {
	CA, ClientCert, ClientKey string // PEM
	ServerName                string
}

// NewCollector starts a plain TCP collector.
func NewCollector(tb testing.TB) *Collector {
	tb.Helper()
	c := &Collector{}
	c.start(tb, 0)
	return c
}

// NewTLSCollector starts a collector that speaks TLS and requires a client
// certificate, both from a CA made for the test; it returns what the
// node's config needs.
func NewTLSCollector(tb testing.TB) (*Collector, CollectorTLS) {
	tb.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "slate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(cn string, usage x509.ExtKeyUsage, dns []string) (tls.Certificate, string, string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, DNSNames: dns, KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			tb.Fatal(err)
		}
		kd, _ := x509.MarshalECPrivateKey(k)
		certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}))
		c, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
		if err != nil {
			tb.Fatal(err)
		}
		return c, certPEM, keyPEM
	}
	server, _, _ := leaf("collector", x509.ExtKeyUsageServerAuth, []string{"collector.test"})
	_, clientCert, clientKey := leaf("node", x509.ExtKeyUsageClientAuth, nil)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	c := &Collector{tls: &tls.Config{Certificates: []tls.Certificate{server}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}}
	c.start(tb, 0)
	return c, CollectorTLS{CA: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		ClientCert: clientCert, ClientKey: clientKey, ServerName: "collector.test"}
}

func (c *Collector) start(tb testing.TB, port int) {
	tb.Helper()
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		tb.Fatalf("collector: %v", err)
	}
	if c.tls != nil {
		l = tls.NewListener(l, c.tls)
	}
	c.mu.Lock()
	c.l, c.Port = l, l.Addr().(*net.TCPAddr).Port
	c.mu.Unlock()
	tb.Cleanup(func() { c.Stop() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.conns = append(c.conns, conn)
			c.mu.Unlock()
			go c.read(conn)
		}
	}()
}

// read takes octet-counted frames off a connection.
func (c *Collector) read(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	for {
		n, err := r.ReadString(' ')
		if err != nil {
			c.fail(conn, fmt.Errorf("reading a frame's length: %w", err))
			return
		}
		size, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil || size <= 0 || size > 1<<20 {
			c.fail(conn, fmt.Errorf("not a frame length: %q", clipString(n, 80)))
			return
		}
		b := make([]byte, size)
		if _, err := io.ReadFull(r, b); err != nil {
			c.fail(conn, fmt.Errorf("reading a %d-byte frame: %w", size, err))
			return
		}
		c.mu.Lock()
		c.msgs = append(c.msgs, string(b))
		c.mu.Unlock()
	}
}

func (c *Collector) fail(conn net.Conn, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, fmt.Sprintf("%s: %v", conn.RemoteAddr(), err))
}

// Errors says how each connection ended (after a frame, a close).
func (c *Collector) Errors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.errs...)
}

func clipString(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Stop closes the listener and every connection: an outage. Each
// connection is read for a moment more first: what the node's TCP stack
// saw acknowledged is in the collector's socket buffer, which a real
// collector reads before it closes.
func (c *Collector) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.l != nil {
		c.l.Close()
		c.l = nil
	}
	for _, conn := range c.conns {
		conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	}
	c.conns = nil
	c.mu.Unlock()
	time.Sleep(400 * time.Millisecond)
	c.mu.Lock()
}

// Restart listens again on the same port.
func (c *Collector) Restart(tb testing.TB) {
	tb.Helper()
	c.start(tb, c.Port)
}

// Messages returns what arrived so far.
func (c *Collector) Messages() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.msgs...)
}

// Matching returns the messages that contain every one of subs.
func (c *Collector) Matching(subs ...string) []string {
	var out []string
	for _, m := range c.Messages() {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(m, s)
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

// Await waits until a message contains every one of subs.
func (c *Collector) Await(timeout time.Duration, subs ...string) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if m := c.Matching(subs...); len(m) > 0 {
			return m[0], nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no message with %q at the collector within %s (%d messages arrived)", subs, timeout, len(c.Messages()))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

package configsrc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slate-os/slate/boot/record"
)

const nodeConfig = "apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\nhostname: from-cloud\n"

// secret is in every user data the tests serve: no console note may
// carry it.
const secret = "s3cr3t-token"

const cloudConfig = "#cloud-config\npassword: " + secret + "\n"

// testEnv is an Env for platform whose network comes up at once and
// whose notes are kept; base is the fake service's URL.
type testEnv struct {
	*Env
	mu       sync.Mutex
	notes    []string
	networks int
}

func newTestEnv(platform, base string) *testEnv {
	te := &testEnv{}
	te.Env = &Env{
		Platform: platform,
		HTTPBase: base,
		Logf: func(format string, args ...any) {
			te.mu.Lock()
			defer te.mu.Unlock()
			te.notes = append(te.notes, fmt.Sprintf(format, args...))
		},
		Network: func(context.Context) error {
			te.mu.Lock()
			defer te.mu.Unlock()
			te.networks++
			return nil
		},
		DevicesSince: time.Now().Add(-time.Minute),
	}
	return te
}

func (te *testEnv) ctx() context.Context { return WithEnv(context.Background(), te.Env) }

// log returns the notes, one a line, and fails the test when one of them
// carries the user data's secret.
func (te *testEnv) log(t *testing.T) string {
	t.Helper()
	te.mu.Lock()
	defer te.mu.Unlock()
	s := strings.Join(te.notes, "\n")
	if strings.Contains(s, secret) {
		t.Errorf("a console note carries the user data: %s", s)
	}
	return s
}

// fakeService is a metadata service: handler answers, every request is
// counted.
type fakeService struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []string
}

func newFakeService(t *testing.T, handler http.HandlerFunc) *fakeService {
	f := &fakeService{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Method+" "+r.URL.RequestURI())
		f.mu.Unlock()
		handler(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeService) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reqs...)
}

// silentServer accepts connections and never answers; closing it lets
// them go.
func silentServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-done
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() { close(done); l.Close(); wg.Wait() })
	return "http://" + l.Addr().String()
}

// closedPort is an address where nothing listens: connections are refused.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// fast are bounds small enough for tests.
var fast = HTTPTiming{Timeout: 600 * time.Millisecond, RequestTimeout: 150 * time.Millisecond}

func TestIsNodeConfig(t *testing.T) {
	for _, tc := range []struct {
		data string
		ok   bool
		kind string
	}{
		{nodeConfig, true, ""},
		{"\ufeff" + nodeConfig, true, ""},
		{"# my node\n---\n" + nodeConfig, true, ""},
		{"hostname: x\napiVersion: \"slate.dev/v1alpha1\"  # the version\n", true, ""},
		{"apiVersion: slate.dev/v9\n", true, ""}, // the parser says what is wrong
		{"apiVersion: slate.dev/v1alpha1\r\nkind: NodeConfig\r\n", true, ""},
		{`{"apiVersion": "slate.dev/v1alpha1", "kind": "NodeConfig"}`, true, ""},
		{`{"apiVersion": "slate.dev/v1alpha1", "kind": }`, true, ""}, // invalid, but meant for slate
		{"", false, ""},
		{" \n\t\n", false, ""},
		{cloudConfig, false, "#cloud-config"},
		{"#cloud-config\napiVersion: slate.dev/v1alpha1\n", false, "#cloud-config"},
		{"#Cloud-Config\n", false, "#cloud-config"},
		{"#include\nhttp://x\n", false, "#include"},
		{"#cloud-boothook\n", false, "#cloud-boothook"},
		{"## template: jinja\n#cloud-config\n", false, "template"},
		{"#!/bin/sh\necho " + secret + "\n", false, "#! script"},
		{"Content-Type: multipart/mixed; boundary=x\n", false, "MIME multi-part"},
		{"MIME-Version: 1.0\n", false, "MIME multi-part"},
		{"\x1f\x8b\x08\x00", false, "gzip"},
		{`{"ignition": {"version": "3.4.0"}}`, false, "Ignition config"},
		{`{"apiVersion": "v1", "kind": "Pod"}`, false, "JSON"},
		{`{"nested": {"apiVersion": "slate.dev/v1alpha1"}}`, false, "JSON"},
		{`[1, 2]`, false, "JSON"},
		{"apiVersion: v1\nkind: Pod\n", false, "text"},
		{"spec:\n  apiVersion: slate.dev/v1alpha1\n", false, "text"},
		{"\x00\x01\x02binary", false, "binary"},
	} {
		ok, kind := IsNodeConfig([]byte(tc.data))
		if ok != tc.ok || kind != tc.kind {
			t.Errorf("IsNodeConfig(%.40q) = %v %q, want %v %q", tc.data, ok, kind, tc.ok, tc.kind)
		}
	}
}

func TestParseIPv4Port(t *testing.T) {
	for in, want := range map[string]string{
		"169.254.169.254":          "169.254.169.254:80",
		"127.0.0.1:8080":           "127.0.0.1:8080",
		"metadata.google.internal": "error",
		"[fd00:ec2::254]":          "error",
		"1.2.3":                    "error",
		"1.2.3.256":                "error",
		"01.2.3.4":                 "error",
		"1.2.3.4:0":                "error",
		"1.2.3.4:x":                "error",
	} {
		sa, err := parseIPv4Port(in)
		got := "error"
		if err == nil {
			got = fmt.Sprintf("%d.%d.%d.%d:%d", sa.Addr[0], sa.Addr[1], sa.Addr[2], sa.Addr[3], sa.Port)
		}
		if got != want {
			t.Errorf("parseIPv4Port(%q) = %s (%v), want %s", in, got, err, want)
		}
	}
	for _, base := range []string{"https://169.254.169.254", "http://169.254.169.254/latest", "http://", "169.254.169.254"} {
		if _, err := newClient("x", base, HTTPTiming{}); err == nil {
			t.Errorf("newClient(%q) accepted", base)
		}
	}
	if c, err := newClient("x", "", HTTPTiming{}); err != nil || c.url("/a") != "http://169.254.169.254/a" || c.timeout != RequestTimeout {
		t.Errorf("newClient default: %+v %v", c, err)
	}
}

// rawServer answers each connection with the given bytes, whatever the
// request, and closes it.
func rawServer(t *testing.T, answer string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for { // the request's header
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				c.Write([]byte(answer))
			}()
		}
	}()
	return "http://" + l.Addr().String()
}

func TestClientResponses(t *testing.T) {
	big := strings.Repeat("x", MaxSize+1)
	for _, tc := range []struct {
		name, answer string
		status       int
		body, err    string
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, "hello", ""},
		{"content-length, then more", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello", 200, "he", ""},
		{"close-delimited", "HTTP/1.0 200 OK\r\n\r\nhello\nworld", 200, "hello\nworld", ""},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n", 200, "hello world", ""},
		{"interim 100", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 404, "", ""},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", 204, "", ""},
		{"lower-case header", "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 200, "ok", ""},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", 0, "", "the body ends after 5 of 10 bytes"},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, "", "bad chunk size"},
		{"chunk without CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello", 0, "", "a chunk does not end with CRLF"},
		{"truncated chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 0, "", "unexpected EOF"},
		{"gzip encoding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0, "", `transfer encoding "gzip"`},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n", 0, "", "not an HTTP/1 status line"},
		{"no answer at all", "", 0, "", "reading the status line: unexpected EOF"},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 0, "", "two different Content-Length"},
		{"bad header", "HTTP/1.1 200 OK\r\nno colon\r\n\r\n", 0, "", "malformed header line"},
		{"too long", "HTTP/1.1 200 OK\r\nContent-Length: 8388609\r\n\r\n", 0, "", "more than the 8388608 allowed"},
		{"too long, close-delimited", "HTTP/1.1 200 OK\r\n\r\n" + big, 0, "", "larger than 8388608 bytes"},
		{"header line too long", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("y", 5000) + "\r\n\r\n", 0, "", "a line longer than 4 KiB"},
	} {
		base := rawServer(t, tc.answer)
		c, err := newClient("test", base, HTTPTiming{RequestTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.once(context.Background(), "GET", "/x", nil)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "GET "+base+"/x: ") {
				t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.err)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case resp.status != tc.status || string(resp.body) != tc.body:
			t.Errorf("%s: %d %q, want %d %q", tc.name, resp.status, resp.body, tc.status, tc.body)
		}
	}
}

func TestClientRequest(t *testing.T) {
	var got *http.Request
	srv := newFakeService(t, func(w http.ResponseWriter, r *http.Request) {
		got = r
		w.Write([]byte("ok"))
	})
	c, _ := newClient("test", srv.URL, fast, "Metadata", "true")
	resp, err := c.do(context.Background(), "PUT", "/a?b=c", []string{"X-Extra", "1"})
	if err != nil || resp.status != 200 || string(resp.body) != "ok" || !c.answered {
		t.Fatalf("do = %+v, %v", resp, err)
	}
	if got.Method != "PUT" || got.URL.RequestURI() != "/a?b=c" || got.Header.Get("Metadata") != "true" || got.Header.Get("X-Extra") != "1" ||
		got.ContentLength != 0 || got.Host != strings.TrimPrefix(srv.URL, "http://") || got.Header.Get("X-Forwarded-For") != "" {
		t.Errorf("request: %s %s %v", got.Method, got.URL, got.Header)
	}
}

func TestClientRetries(t *testing.T) {
	// 503, 429, then 200: retried with a backoff.
	n := 0
	srv := newFakeService(t, func(w http.ResponseWriter, r *http.Request) {
		n++
		switch n {
		case 1:
			w.WriteHeader(503)
		case 2:
			w.WriteHeader(429)
		default:
			w.Write([]byte("ok"))
		}
	})
	c, _ := newClient("test", srv.URL, HTTPTiming{})
	start := time.Now()
	resp, err := c.do(context.Background(), "GET", "/", nil)
	if d := time.Since(start); err != nil || resp.status != 200 || n != 3 || d < firstBackoff*3 || d > 2*time.Second {
		t.Errorf("retries: %+v %v, %d requests in %s", resp, err, n, d)
	}
	// A 404 is an answer, not retried (unless the source says so).
	n = 10
	srv2 := newFakeService(t, func(w http.ResponseWriter, r *http.Request) { n++; w.WriteHeader(404) })
	c, _ = newClient("test", srv2.URL, fast)
	if resp, err := c.do(context.Background(), "GET", "/", nil); err != nil || resp.status != 404 || n != 11 {
		t.Errorf("404: %+v %v after %d", resp, err, n-10)
	}
	c.retryStatus = func(s int) bool { return s == 404 }
	n = 0
	start = time.Now()
	bctx, bcancel := fast.budget(context.Background())
	defer bcancel()
	resp, err = c.do(bctx, "GET", "/", nil)
	if d := time.Since(start); err != nil || resp.status != 404 || n < 2 || d > fast.Timeout+300*time.Millisecond {
		t.Errorf("404 retried: %+v %v after %d in %s", resp, err, n, d)
	}
	// Always 500: the last answer when the budget is spent.
	srv3 := newFakeService(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	c, _ = newClient("test", srv3.URL, fast)
	ctx, cancel := fast.budget(context.Background())
	defer cancel()
	start = time.Now()
	resp, err = c.do(ctx, "GET", "/", nil)
	if d := time.Since(start); err != nil || resp.status != 500 || d < fast.Timeout-50*time.Millisecond || d > fast.Timeout+300*time.Millisecond {
		t.Errorf("always 500: %+v %v in %s", resp, err, d)
	}
}

func TestClientNoAnswer(t *testing.T) {
	for name, base := range map[string]string{"silent": silentServer(t), "refused": closedPort(t)} {
		c, _ := newClient("test", base, fast)
		ctx, cancel := fast.budget(context.Background())
		start := time.Now()
		_, err := c.do(ctx, "GET", "/x", nil)
		d := time.Since(start)
		cancel()
		if err == nil || c.answered || d < fast.Timeout-50*time.Millisecond || d > fast.Timeout+300*time.Millisecond {
			t.Errorf("%s: %v after %s", name, err, d)
		}
		want := map[string]string{"silent": "no answer after", "refused": "connection refused"}[name]
		if !strings.HasPrefix(err.Error(), "GET "+base+"/x: ") || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", name, err, want)
		}
	}
	// A cancelled context stops a request at once.
	c, _ := newClient("test", silentServer(t), HTTPTiming{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	if _, err := c.do(ctx, "GET", "/", nil); !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
		t.Errorf("cancelled: %v after %s", err, time.Since(start))
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755)
	os.WriteFile(filepath.Join(dir, "a", "b", "f"), []byte("content"), 0o644)
	os.Symlink("b", filepath.Join(dir, "a", "link"))
	os.Symlink("f", filepath.Join(dir, "a", "b", "flink"))
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	if b, err := readFile(dir, "a/b/f"); err != nil || string(b) != "content" {
		t.Errorf("a/b/f: %q %v", b, err)
	}
	for name, want := range map[string]string{
		"a/b/g":     "open a/b/g: file does not exist",
		"a/c/f":     "open a/c: file does not exist",
		"a/link/f":  "a/link is a symbolic link",
		"a/b/flink": "a/b/flink is a symbolic link",
		"file/f":    "file is not a directory",
		"a/b":       "a/b is not a regular file (d---------)",
	} {
		_, err := readFile(dir, name)
		if err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %s", name, err, want)
		}
		if strings.HasSuffix(want, "does not exist") != errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: errors.Is(%v, os.ErrNotExist) wrong", name, err)
		}
	}
}

func TestUserData(t *testing.T) {
	for _, tc := range []struct {
		data, userData string
		config         bool
	}{
		{nodeConfig, UserDataConfig, true},
		{"", UserDataNone, false},
		{cloudConfig, "not a slate node config (#cloud-config)", false},
	} {
		te := newTestEnv("ec2", "")
		facts := &record.Platform{Name: "ec2"}
		b, err := userData(te.ctx(), facts, "http://x/user-data", []byte(tc.data))
		if tc.config != (err == nil) || facts.UserData != tc.userData || tc.config && (string(b) != tc.data || te.Location != "http://x/user-data") ||
			!tc.config && (!errors.Is(err, ErrNotFound) || te.Location != "") {
			t.Errorf("%.20q: %q %v, facts %+v, location %q", tc.data, b, err, facts, te.Location)
		}
		te.log(t)
	}
}

package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestHandler(t *testing.T) {
	var calls atomic.Int32
	c := &Collector{Gather: func() *Snapshot {
		calls.Add(1)
		return &Snapshot{Status: fullStatus(), Rollbacks: 3}
	}}
	srv := httptest.NewServer(Handler(c))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ContentType {
		t.Errorf("GET /metrics: %s, %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	golden(t, "full.prom", body)

	// A fresh gather per scrape.
	http.Get(srv.URL + "/metrics")
	if n := calls.Load(); n != 2 {
		t.Errorf("%d gathers for 2 scrapes", n)
	}

	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/", 404},
		{"GET", "/metrics/x", 404},
		{"GET", "/debug/pprof/", 404},
		{"POST", "/metrics", 405},
		{"HEAD", "/metrics", 200},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s %s: %s, want %d", c.method, c.path, resp.Status, c.code)
		}
		if c.method == "HEAD" && len(b) != 0 {
			t.Errorf("HEAD has a body")
		}
	}
}

// A gather that fails, panics or hangs never fails the scrape: what is
// known, and slate_scrape_error 1.
func TestHandlerGatherErrors(t *testing.T) {
	get := func(t *testing.T, c *Collector, header http.Header) string {
		t.Helper()
		req := httptest.NewRequest("GET", "/metrics", nil)
		for k, v := range header {
			req.Header[k] = v
		}
		rec := httptest.NewRecorder()
		Handler(c).ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Header().Get("Content-Type") != ContentType {
			t.Errorf("status %d, %q", rec.Code, rec.Header().Get("Content-Type"))
		}
		return rec.Body.String()
	}
	var logs []string
	var mu sync.Mutex
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		logs = append(logs, format)
	}

	t.Run("partial", func(t *testing.T) {
		c := &Collector{Gather: func() *Snapshot {
			return &Snapshot{Status: freshStatus(), Rollbacks: -1, Errors: []string{"rollbacks: permission denied"}}
		}, Log: logf}
		body := get(t, c, nil)
		if !strings.Contains(body, "slate_scrape_error 1\n") || !strings.Contains(body, `slate_info{generation="1"`) || strings.Contains(body, "slate_rollbacks_total") {
			t.Errorf("partial:\n%s", body)
		}
		get(t, c, nil)
		if len(logs) != 1 {
			t.Errorf("the same error logged %d times", len(logs))
		}
	})
	t.Run("panic", func(t *testing.T) {
		c := &Collector{Gather: func() *Snapshot { panic("boom") }}
		if body := get(t, c, nil); !strings.HasSuffix(body, "slate_scrape_error 1\n") {
			t.Errorf("panic:\n%s", body)
		}
	})
	t.Run("hangs", func(t *testing.T) {
		release := make(chan struct{})
		var calls atomic.Int32
		c := &Collector{Gather: func() *Snapshot {
			calls.Add(1)
			<-release
			return &Snapshot{Status: freshStatus()}
		}, Timeout: time.Hour}
		start := time.Now()
		// Prometheus says how long it waits: answered before that.
		body := get(t, c, http.Header{"X-Prometheus-Scrape-Timeout-Seconds": {"0.1"}})
		if d := time.Since(start); d > 5*time.Second || !strings.HasSuffix(body, "slate_scrape_error 1\n") {
			t.Errorf("after %s:\n%s", d, body)
		}
		c.Timeout = 50 * time.Millisecond
		get(t, c, nil) // waits for the same gather, starts no other
		if n := calls.Load(); n != 1 {
			t.Errorf("%d gathers at once", n)
		}
		close(release)
		c.Timeout = time.Minute
		for i := 0; ; i++ { // the hung gather's result, then fresh ones
			body = get(t, c, nil)
			if strings.Contains(body, "slate_scrape_error 0\n") {
				break
			}
			if i > 100 {
				t.Fatalf("never recovered:\n%s", body)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func TestScrapeTimeout(t *testing.T) {
	for v, want := range map[string]time.Duration{"": 0, "10": 9 * time.Second, "0.5": 450 * time.Millisecond, "x": 0, "-1": 0, "1e9": 0} {
		if got := scrapeTimeout(http.Header{"X-Prometheus-Scrape-Timeout-Seconds": {v}}); got != want {
			t.Errorf("%q: %s, want %s", v, got, want)
		}
	}
}

func TestWriteTextfile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node_exporter", "textfile")
	path := filepath.Join(dir, "slate.prom")
	for _, data := range []string{"slate_tainted 0\n", "slate_tainted 1\n"} {
		if err := WriteTextfile(path, []byte(data)); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != data {
			t.Errorf("read %q, %v", b, err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	// A directory that cannot be made names the field.
	if err := WriteTextfile(filepath.Join(path, "x.prom"), nil); err == nil || !strings.Contains(err.Error(), "metrics.textfile") {
		t.Errorf("error %v", err)
	}
}

// Server writes the textfile at once and then every interval, keeps the
// last one when it stops, and serves /metrics on the address.
func TestServer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "metrics", "slate.prom")
	var calls atomic.Int32
	c := &Collector{Gather: func() *Snapshot {
		calls.Add(1)
		return &Snapshot{Status: freshStatus()}
	}}
	addrs := make(chan net.Addr, 1)
	s := &Server{Collector: c, Listen: "127.0.0.1:0", Textfile: path, Interval: 10 * time.Millisecond, Listening: func(a net.Addr) { addrs <- a }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var addr net.Addr
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	golden(t, "fresh.prom", body)
	for calls.Load() < 4 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "fresh.prom", b)

	if err := (&Server{Collector: c}).Run(context.Background()); err == nil {
		t.Error("nothing to do is an error of Run")
	}
	// An address that cannot be listened on ends Run (systemd restarts
	// the unit), the textfile writer with it.
	if err := (&Server{Collector: c, Listen: "256.0.0.1:1", Textfile: path}).Run(context.Background()); err == nil || !strings.Contains(err.Error(), "metrics.listen") {
		t.Errorf("bad address: %v", err)
	}
}

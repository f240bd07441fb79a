package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/slate-os/slate/internal/fsync"
)

// DefaultTimeout bounds one gather: Prometheus's default scrape timeout.
// A scrape that says its own (X-Prometheus-Scrape-Timeout-Seconds) gets
// less than that, so that it is answered before Prometheus gives up.
const DefaultTimeout = 10 * time.Second

// TextfileInterval is how often Server rewrites the textfile.
const TextfileInterval = 30 * time.Second

// Collector gathers a Snapshot per scrape, one gather at a time (the ESP
// mount and the reads are not for racing scrapes: a scrape that comes while
// one runs shares its result), each bounded by a timeout, and never fails:
// a gather that errs, panics or hangs still gives what is known plus
// slate_scrape_error 1.
type Collector struct {
	// Gather reads the node's state; it puts what it cannot read in the
	// snapshot's Errors.
	Gather func() *Snapshot
	// Timeout bounds a gather; DefaultTimeout when 0. A gather that times
	// out goes on in the background and the next scrape waits for it.
	Timeout time.Duration
	// Log, if set, gets a line when the gather's errors change (not at
	// every scrape: a node scraped every 15 s would flood its journal).
	Log func(format string, args ...any)

	mu      sync.Mutex
	flight  *flight
	lastErr string
}

type flight struct {
	done chan struct{}
	snap *Snapshot
}

// Collect gathers a snapshot, within ctx and the timeout.
func (c *Collector) Collect(ctx context.Context) *Snapshot {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c.mu.Lock()
	f := c.flight
	if f == nil {
		f = &flight{done: make(chan struct{})}
		c.flight = f
		go c.run(f)
	}
	c.mu.Unlock()
	var snap *Snapshot
	select {
	case <-f.done:
		snap = f.snap
	case <-ctx.Done():
		why := "the scrape was canceled first"
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			why = "still running at the scrape's timeout"
		}
		snap = &Snapshot{Rollbacks: -1, Errors: []string{"gathering the node's state: " + why}}
	}
	c.note(snap)
	return snap
}

func (c *Collector) run(f *flight) {
	defer func() {
		if p := recover(); p != nil {
			f.snap = &Snapshot{Rollbacks: -1, Errors: []string{fmt.Sprintf("gathering the node's state: panic: %v", p)}}
		}
		if f.snap == nil {
			f.snap = &Snapshot{Rollbacks: -1, Errors: []string{"gathering the node's state: nothing gathered"}}
		}
		c.mu.Lock()
		c.flight = nil
		c.mu.Unlock()
		close(f.done)
	}()
	f.snap = c.Gather()
}

// note logs the snapshot's errors when they differ from the last ones.
func (c *Collector) note(s *Snapshot) {
	msg := strings.Join(s.Errors, "; ")
	c.mu.Lock()
	changed := msg != c.lastErr
	c.lastErr = msg
	c.mu.Unlock()
	switch {
	case !changed || c.Log == nil:
	case msg == "":
		c.Log("the node's state reads again")
	default:
		c.Log("serving what is known, with slate_scrape_error 1: %s", msg)
	}
}

// Handler serves GET (and HEAD) /metrics from c; every other path is 404,
// another method on /metrics 405.
func Handler(c *Collector) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", c)
	return mux
}

// ServeHTTP answers a scrape with a fresh snapshot, 200 even when part of
// it could not be read (slate_scrape_error says so).
func (c *Collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if t := scrapeTimeout(r.Header); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	body := Format(c.Collect(ctx))
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// scrapeTimeout is 90% of the timeout Prometheus sends with a scrape, so
// the answer arrives before it gives up; 0 when none is sent.
func scrapeTimeout(h http.Header) time.Duration {
	v, err := strconv.ParseFloat(h.Get("X-Prometheus-Scrape-Timeout-Seconds"), 64)
	if err != nil || v <= 0 || v > 3600 {
		return 0
	}
	return time.Duration(v * 0.9 * float64(time.Second))
}

// WriteTextfile writes data to path as node_exporter's textfile collector
// expects: whole or not at all, through a hidden temporary file in the same
// directory (not *.prom, which the collector would read half-written),
// fsynced and renamed; mode 0644 (node_exporter runs as another user). The
// directory is created.
func WriteTextfile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("metrics.textfile: %w", err)
	}
	if err := fsync.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("metrics.textfile %s: %w", path, err)
	}
	return nil
}

// Server is `slate metrics serve`: the node config's metrics section.
type Server struct {
	Collector *Collector
	// Listen is metrics.listen, HOST:PORT; empty: nothing is served.
	Listen string
	// Textfile is metrics.textfile; empty: none is written.
	Textfile string
	// Interval is how often the textfile is written; TextfileInterval when 0.
	Interval time.Duration
	// Log gets what goes wrong (a textfile that cannot be written, when
	// that changes); nil is quiet.
	Log func(format string, args ...any)
	// Listening, if set, is called with the address served on (tests
	// listen on port 0).
	Listening func(net.Addr)
}

// Run serves and writes until ctx ends, then returns nil. Only an address
// that cannot be listened on is an error (systemd restarts the unit: the
// address may not be configured yet); a textfile that cannot be written is
// logged and tried again.
func (s *Server) Run(ctx context.Context) error {
	if s.Listen == "" && s.Textfile == "" {
		return errors.New("neither metrics.listen nor metrics.textfile is set")
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel() // the textfile writer stops, then is waited for
		wg.Wait()
	}()
	if s.Textfile != "" {
		wg.Go(func() { s.writeTextfiles(ctx) })
	}
	if s.Listen == "" {
		<-ctx.Done()
		return nil
	}
	ln, err := net.Listen("tcp", s.Listen)
	if err != nil {
		return fmt.Errorf("metrics.listen: %w", err)
	}
	if s.Listening != nil {
		s.Listening(ln.Addr())
	}
	srv := &http.Server{
		Handler:           Handler(s.Collector),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      DefaultTimeout + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("metrics.listen %s: %w", s.Listen, err)
	case <-ctx.Done():
	}
	stop, cancelStop := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelStop()
	srv.Shutdown(stop)
	<-served
	return nil
}

func (s *Server) writeTextfiles(ctx context.Context) {
	every := s.Interval
	if every <= 0 {
		every = TextfileInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var last string
	for {
		snap := s.Collector.Collect(ctx)
		if ctx.Err() != nil {
			return // stopping: keep the last file, not an empty one
		}
		msg := ""
		if err := WriteTextfile(s.Textfile, Format(snap)); err != nil {
			msg = err.Error()
		}
		if msg != last && s.Log != nil {
			if msg == "" {
				s.Log("metrics.textfile %s is written again", s.Textfile)
			} else {
				s.Log("%s (tried again every %s)", msg, every)
			}
		}
		last = msg
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

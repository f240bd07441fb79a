package platform

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slate-os/slate/initramfs/init/run"
)

// goalStateXML is a goal state as the wire server sends it (protocol
// 2012-11-30), with the incarnation and ids filled in.
const goalStateXML = `<?xml version="1.0" encoding="utf-8"?>
<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="goalstate10.xsd">
  <Version>2012-11-30</Version>
  <Incarnation>%s</Incarnation>
  <Machine>
    <ExpectedState>Started</ExpectedState>
    <StopRolesDeadlineHint>300000</StopRolesDeadlineHint>
    <LBProbePorts>
      <Port>16001</Port>
    </LBProbePorts>
    <ExpectHealthReport>FALSE</ExpectHealthReport>
  </Machine>
  <Container>
    <ContainerId>%s</ContainerId>
    <RoleInstanceList>
      <RoleInstance>
        <InstanceId>%s</InstanceId>
        <State>Started</State>
        <Configuration>
          <HostingEnvironmentConfig>http://168.63.129.16:80/machine/a0c1/hostingEnvironmentConfig?incarnation=1</HostingEnvironmentConfig>
          <SharedConfig>http://168.63.129.16:80/machine/a0c1/sharedConfig?incarnation=1</SharedConfig>
          <ExtensionsConfig>http://168.63.129.16:80/machine/a0c1/extensionsConfig?incarnation=1</ExtensionsConfig>
          <FullConfig>http://168.63.129.16:80/machine/a0c1/fullConfig?incarnation=1</FullConfig>
          <Certificates>http://168.63.129.16:80/machine/a0c1/certificates?incarnation=1</Certificates>
          <ConfigName>a0c1.0.a0c1.0._slate-node-1.1.xml</ConfigName>
        </Configuration>
      </RoleInstance>
    </RoleInstanceList>
  </Container>
</GoalState>
`

const (
	containerID = "4d8e0f5c-2b1a-4c3e-9f6d-7a8b9c0d1e2f"
	instanceID  = "a0c1e2f3-4b5c-4d6e-8f90-1a2b3c4d5e6f._slate-node-1"
)

// healthDoc is the health report as the test reads it back.
type healthDoc struct {
	XMLName     xml.Name `xml:"Health"`
	Incarnation string   `xml:"GoalStateIncarnation"`
	Container   struct {
		ContainerID string `xml:"ContainerId"`
		Roles       []struct {
			InstanceID string `xml:"InstanceId"`
			State      string `xml:"Health>State"`
		} `xml:"RoleInstanceList>Role"`
	} `xml:"Container"`
}

// wireServer is a fake Azure wire server. It checks every request as the
// real one would need it, answers the goal state (incarnation from
// incarnation()), takes health reports, and fails the requests fail says
// to fail.
type wireServer struct {
	t *testing.T
	// fail returns a status to fail the n-th request (from 1) with, or 0.
	fail func(n int, method string) int
	// incarnation is the goal state's incarnation at the n-th request.
	incarnation func(n int) string

	mu       sync.Mutex
	requests []string
	reports  []healthDoc
}

func (w *wireServer) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	t := w.t
	w.mu.Lock()
	w.requests = append(w.requests, r.Method+" "+r.URL.RequestURI())
	n := len(w.requests)
	w.mu.Unlock()
	if got := r.Header.Get("x-ms-agent-name"); got != "slate" {
		t.Errorf("request %d: x-ms-agent-name %q", n, got)
	}
	if got := r.Header.Get("x-ms-version"); got != "2012-11-30" {
		t.Errorf("request %d: x-ms-version %q", n, got)
	}
	if w.fail != nil {
		if code := w.fail(n, r.Method); code != 0 {
			http.Error(rw, "<Error><Message>not now</Message></Error>", code)
			return
		}
	}
	incarnation := "1"
	if w.incarnation != nil {
		incarnation = w.incarnation(n)
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/machine/" && r.URL.RawQuery == "comp=goalstate":
		rw.Header().Set("Content-Type", "text/xml; charset=utf-8")
		fmt.Fprintf(rw, goalStateXML, incarnation, containerID, instanceID)
	case r.Method == http.MethodPost && r.URL.Path == "/machine/" && r.URL.RawQuery == "comp=health":
		if got := r.Header.Get("Content-Type"); got != "text/xml; charset=utf-8" {
			t.Errorf("health report: Content-Type %q", got)
		}
		body, _ := io.ReadAll(r.Body)
		s := string(body)
		for _, want := range []string{`<?xml version="1.0" encoding="utf-8"?>` + "\n<Health ",
			`xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"`, `xmlns:xsd="http://www.w3.org/2001/XMLSchema"`} {
			if !strings.Contains(s, want) {
				t.Errorf("health report lacks %q:\n%s", want, s)
			}
		}
		var h healthDoc
		if err := xml.Unmarshal(body, &h); err != nil {
			t.Errorf("health report: %v\n%s", err, s)
			http.Error(rw, "bad report", http.StatusBadRequest)
			return
		}
		if h.Incarnation != incarnation {
			// The real wire server refuses a report for a stale goal state.
			http.Error(rw, "stale incarnation", http.StatusGone)
			return
		}
		w.mu.Lock()
		w.reports = append(w.reports, h)
		w.mu.Unlock()
	default:
		t.Errorf("unexpected request %s %s", r.Method, r.URL)
		http.NotFound(rw, r)
	}
}

// fast shortens the retries' bounds for a test.
func fast(t *testing.T, total time.Duration) {
	t.Helper()
	saved := []time.Duration{totalTimeout, requestTimeout, firstDelay, maxDelay}
	totalTimeout, requestTimeout, firstDelay, maxDelay = total, time.Second, 10*time.Millisecond, 40*time.Millisecond
	t.Cleanup(func() { totalTimeout, requestTimeout, firstDelay, maxDelay = saved[0], saved[1], saved[2], saved[3] })
}

func logTo(t *testing.T, lines *[]string) func(string, ...any) {
	var mu sync.Mutex
	return func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		s := fmt.Sprintf(f, a...)
		t.Log(s)
		*lines = append(*lines, s)
	}
}

// The wire server is not ready at first (503): ReportReady tries again,
// then posts a Ready report for the goal state.
func TestReportReady(t *testing.T) {
	fast(t, 10*time.Second)
	w := &wireServer{t: t, fail: func(n int, _ string) int {
		if n == 1 {
			return http.StatusServiceUnavailable
		}
		return 0
	}, incarnation: func(int) string { return "3" }}
	srv := httptest.NewServer(w)
	defer srv.Close()
	var logs []string
	gs, err := ReportReady(context.Background(), Options{Base: srv.URL + "/", Client: srv.Client(), Log: logTo(t, &logs)})
	if err != nil {
		t.Fatal(err)
	}
	if want := (GoalState{Incarnation: "3", ContainerID: containerID, InstanceID: instanceID}); *gs != want {
		t.Errorf("reported for %+v, want %+v", *gs, want)
	}
	wantReqs := []string{"GET /machine/?comp=goalstate", "GET /machine/?comp=goalstate", "POST /machine/?comp=health"}
	if strings.Join(w.requests, "\n") != strings.Join(wantReqs, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(w.requests, "\n"), strings.Join(wantReqs, "\n"))
	}
	if len(w.reports) != 1 {
		t.Fatalf("%d health reports", len(w.reports))
	}
	h := w.reports[0]
	if h.Incarnation != "3" || h.Container.ContainerID != containerID || len(h.Container.Roles) != 1 ||
		h.Container.Roles[0].InstanceID != instanceID || h.Container.Roles[0].State != "Ready" {
		t.Errorf("health report %+v", h)
	}
	if len(logs) != 1 || !strings.Contains(logs[0], "GET "+srv.URL+"/machine/?comp=goalstate: 503 Service Unavailable") {
		t.Errorf("log of the retry: %q", logs)
	}
}

// A goal state that changed between the two requests (410 on the report):
// the next attempt fetches it again and reports for the new incarnation.
func TestReportReadyGoalStateChanged(t *testing.T) {
	fast(t, 10*time.Second)
	w := &wireServer{t: t, incarnation: func(n int) string {
		if n == 1 {
			return "1"
		}
		return "2"
	}}
	srv := httptest.NewServer(w)
	defer srv.Close()
	gs, err := ReportReady(context.Background(), Options{Base: srv.URL, Client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if gs.Incarnation != "2" || len(w.reports) != 1 || w.reports[0].Incarnation != "2" || len(w.requests) != 4 {
		t.Errorf("reported %+v; requests %q; reports %+v", gs, w.requests, w.reports)
	}
}

// A status the wire server would answer again (a 4xx but 410 and 429), or
// a goal state without the ids: no retry, and the error says where.
func TestReportReadyRefused(t *testing.T) {
	fast(t, 10*time.Second)
	w := &wireServer{t: t, fail: func(int, string) int { return http.StatusBadRequest }}
	srv := httptest.NewServer(w)
	defer srv.Close()
	_, err := ReportReady(context.Background(), Options{Base: srv.URL, Client: srv.Client()})
	want := "GET " + srv.URL + "/machine/?comp=goalstate: 400 Bad Request (<Error><Message>not now</Message></Error>)"
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "gave up") {
		t.Errorf("error %v, want one with %q", err, want)
	}
	if len(w.requests) != 1 {
		t.Errorf("%d requests, want 1: %q", len(w.requests), w.requests)
	}

	noInstance := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		s := fmt.Sprintf(goalStateXML, "1", containerID, "")
		io.WriteString(rw, s)
	}))
	defer noInstance.Close()
	_, err = ReportReady(context.Background(), Options{Base: noInstance.URL, Client: noInstance.Client()})
	if err == nil || !strings.Contains(err.Error(), "GET "+noInstance.URL+"/machine/?comp=goalstate: the goal state has no Container/RoleInstanceList/RoleInstance/InstanceId") {
		t.Errorf("goal state without an instance id: %v", err)
	}
}

// A wire server that never gets ready: ReportReady gives up within its
// bound, with the last error; a closed port is retried the same way.
func TestReportReadyGivesUp(t *testing.T) {
	fast(t, 300*time.Millisecond)
	w := &wireServer{t: t, fail: func(int, string) int { return http.StatusInternalServerError }}
	srv := httptest.NewServer(w)
	defer srv.Close()
	start := time.Now()
	_, err := ReportReady(context.Background(), Options{Base: srv.URL, Client: srv.Client()})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %s", took)
	}
	if err == nil || !strings.Contains(err.Error(), "gave up after") ||
		!strings.Contains(err.Error(), "GET "+srv.URL+"/machine/?comp=goalstate: 500 Internal Server Error") {
		t.Errorf("error %v", err)
	}
	if len(w.requests) < 3 {
		t.Errorf("%d attempts in 300 ms", len(w.requests))
	}

	closed := httptest.NewServer(http.NotFoundHandler())
	base := closed.URL
	closed.Close()
	_, err = ReportReady(context.Background(), Options{Base: base})
	if err == nil || !strings.Contains(err.Error(), "gave up after") || !strings.Contains(err.Error(), base+"/machine/?comp=goalstate") {
		t.Errorf("closed port: %v", err)
	}
}

// A request that hangs is cut at its own bound and tried again; the
// caller's cancellation stops the retries.
func TestReportReadyTimeouts(t *testing.T) {
	fast(t, 10*time.Second)
	requestTimeout = 50 * time.Millisecond
	var mu sync.Mutex
	n := 0
	hang := make(chan struct{})
	defer close(hang)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		if first {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			return
		}
		if r.Method == http.MethodGet {
			fmt.Fprintf(rw, goalStateXML, "1", containerID, instanceID)
		}
	}))
	defer srv.Close()
	var logs []string
	if _, err := ReportReady(context.Background(), Options{Base: srv.URL, Client: srv.Client(), Log: logTo(t, &logs)}); err != nil {
		t.Fatal(err)
	}
	if len(logs) != 1 || !strings.Contains(logs[0], srv.URL+"/machine/?comp=goalstate") {
		t.Errorf("logs %q", logs)
	}

	ctx, cancel := context.WithCancel(context.Background())
	failing := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		cancel()
		http.Error(rw, "", http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	start := time.Now()
	if _, err := ReportReady(ctx, Options{Base: failing.URL, Client: failing.Client()}); err == nil || time.Since(start) > time.Second {
		t.Errorf("cancelled: %v after %s", err, time.Since(start))
	}
}

func TestRead(t *testing.T) {
	if File != run.PlatformFile {
		t.Errorf("File is %s, the init writes %s", File, run.PlatformFile)
	}
	dir := t.TempDir()
	p, err := Read(filepath.Join(dir, "none.json"))
	if p != nil || err != nil {
		t.Errorf("no file: %+v, %v", p, err)
	}
	path := filepath.Join(dir, "platform.json")
	os.WriteFile(path, []byte(`{"name": "azure", "instance_id": "0b1c", "region": "westeurope"}`+"\n"), 0o644)
	p, err = Read(path)
	if err != nil || p == nil || p.Name != Azure || p.InstanceID != "0b1c" || p.Region != "westeurope" {
		t.Errorf("%+v, %v", p, err)
	}
	os.WriteFile(path, []byte(`{"name": `), 0o644)
	if _, err := Read(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("truncated file: %v", err)
	}
}

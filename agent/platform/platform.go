// Package platform is what the agent tells the cloud platform the node runs
// on, once the node is up. The init detects the platform and writes what it
// said about the node to File (record.Platform as JSON); Read reads it.
//
// Azure waits for a new VM to say that it booted. Until the guest posts a
// health report with the state Ready to the wire server (168.63.129.16, the
// same fixed address on every Azure host), the VM stays "creating" in the
// Azure API and portal, and when none arrives Azure fails its provisioning
// as timed out (OSProvisioningTimedOut), even though the node is running
// well. cloud-init (its GoalStateHealthReporter) and Afterburn
// (afterburn-checkin.service) do this for the images they are in; slate's
// images have neither, so the agent does it: ReportReady fetches the goal
// state (GET /machine/?comp=goalstate), whose incarnation, container id
// and role instance id name this VM's current provisioning, and posts a
// Health document with State Ready for them (POST /machine/?comp=health).
// Reporting again on a later boot is harmless: Afterburn reports on every
// boot, and so does slate-platform-ready.service.
//
// The wire server is often unreachable or answers 503 for a few seconds
// after boot, and 410 when the goal state changed between the two
// requests, so ReportReady retries the whole exchange, with backoff, on
// errors of the connection, 5xx, 410 and 429, for at most two minutes,
// each request bounded by 10 s. It goes straight to the wire server, never
// through a proxy from the environment.
package platform

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	neturl "net/url"
	"os"
	"strings"
	"time"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/record"
)

// File is where the init writes what the platform said about the node
// (initramfs/init/run.PlatformFile).
const File = boot.RunDir + "/platform.json"

// Azure is the platform name the init records for Azure.
const Azure = "azure"

// Read reads the platform file at path (File on a node); it returns nil
// and no error when there is none: the init detected no cloud.
func Read(path string) (*record.Platform, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var p record.Platform
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &p, nil
}

// WireServer is the Azure wire server's fixed address. (DHCP option 245
// names it too; on Azure it is always this one.)
const WireServer = "http://168.63.129.16"

// The wire server's protocol as every guest agent speaks it.
const (
	agentName       = "slate"
	protocolVersion = "2012-11-30"
	goalStatePath   = "/machine/?comp=goalstate"
	healthPath      = "/machine/?comp=health"
)

// Bounds of ReportReady; tests shorten them.
var (
	// totalTimeout bounds all the attempts together.
	totalTimeout = 2 * time.Minute
	// requestTimeout bounds each request, its body read included.
	requestTimeout = 10 * time.Second
	// firstDelay is the wait after the first failure; it doubles up to
	// maxDelay.
	firstDelay = time.Second
	maxDelay   = 10 * time.Second
)

// maxBody bounds what is read of an answer: a goal state is a few KiB.
const maxBody = 1 << 20

// Options are ReportReady's.
type Options struct {
	// Base is the wire server's URL; WireServer when empty.
	Base string
	// Client makes the requests; when nil, a client that uses no proxy.
	Client *http.Client
	// Log, when set, is told of each failed attempt that is retried.
	Log func(format string, args ...any)
}

// GoalState is what ReportReady took from the goal state and reported
// ready for.
type GoalState struct {
	Incarnation string
	ContainerID string
	InstanceID  string
}

// ReportReady tells the Azure wire server that this VM is ready: it fetches
// the goal state and posts a health report with the state Ready for it,
// retrying as the package comment says. It returns the goal state it
// reported for, or the last error, which names the URL and the status.
func ReportReady(ctx context.Context, o Options) (*GoalState, error) {
	base := strings.TrimRight(o.Base, "/")
	if base == "" {
		base = WireServer
	}
	client := o.Client
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		client = &http.Client{Transport: tr}
	}
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, totalTimeout)
	defer cancel()
	delay := firstDelay
	for attempt := 1; ; attempt++ {
		gs, err := reportOnce(ctx, client, base)
		if err == nil {
			return gs, nil
		}
		var re *retryable
		if !errors.As(err, &re) {
			return nil, fmt.Errorf("reporting ready to the Azure wire server: %w", err)
		}
		if ctx.Err() == nil && time.Until(deadline(ctx)) > delay {
			logf("Azure wire server: %v; again in %s", err, delay)
			select {
			case <-time.After(delay):
				delay = min(2*delay, maxDelay)
				continue
			case <-ctx.Done():
			}
		}
		return nil, fmt.Errorf("reporting ready to the Azure wire server: gave up after %d attempts in %s: %w",
			attempt, time.Since(start).Round(time.Second), err)
	}
}

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// retryable is an error the next attempt may not meet: the connection's,
// or a status the wire server gives while it is not ready.
type retryable struct{ err error }

func (r *retryable) Error() string { return r.err.Error() }
func (r *retryable) Unwrap() error { return r.err }

// reportOnce is one attempt: the goal state, then the health report for it.
func reportOnce(ctx context.Context, client *http.Client, base string) (*GoalState, error) {
	body, err := exchange(ctx, client, http.MethodGet, base+goalStatePath, nil)
	if err != nil {
		return nil, err
	}
	gs, err := parseGoalState(body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", base+goalStatePath, err)
	}
	doc, err := healthReport(gs)
	if err != nil {
		return nil, err
	}
	if _, err := exchange(ctx, client, http.MethodPost, base+healthPath, doc); err != nil {
		return nil, err
	}
	return gs, nil
}

// exchange makes one request with the wire server's headers and returns
// the answer's body; an error names the method, the URL and the status.
func exchange(ctx context.Context, client *http.Client, method, url string, body []byte) ([]byte, error) {
	reqCtx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(reqCtx, method, url, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	req.Header.Set("x-ms-agent-name", agentName)
	req.Header.Set("x-ms-version", protocolVersion)
	if body != nil {
		req.Header.Set("Content-Type", "text/xml; charset=utf-8")
	}
	resp, err := client.Do(req)
	if err != nil {
		// The network not up yet, the wire server not answering, a
		// request timed out: all worth another try.
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("no answer in %s", requestTimeout)
		}
		return nil, &retryable{fmt.Errorf("%s %s: %w", method, url, err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, &retryable{fmt.Errorf("%s %s: %s: reading the answer: %w", method, url, resp.Status, err)}
	}
	if resp.StatusCode/100 != 2 {
		err := fmt.Errorf("%s %s: %s%s", method, url, resp.Status, excerpt(b))
		switch {
		case resp.StatusCode >= 500, resp.StatusCode == http.StatusGone, resp.StatusCode == http.StatusTooManyRequests:
			return nil, &retryable{err}
		}
		return nil, err
	}
	if len(b) > maxBody {
		return nil, fmt.Errorf("%s %s: %s: the answer is over %d bytes", method, url, resp.Status, maxBody)
	}
	return b, nil
}

// excerpt is the start of an error answer's body, on one line, for the
// error message.
func excerpt(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if s == "" {
		return ""
	}
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return " (" + s + ")"
}

// goalState is the part of the goal state document ReportReady uses:
//
//	<GoalState>
//	  <Incarnation>1</Incarnation>
//	  <Container>
//	    <ContainerId>...</ContainerId>
//	    <RoleInstanceList>
//	      <RoleInstance><InstanceId>...</InstanceId>...</RoleInstance>
//	    </RoleInstanceList>
//	  </Container>
//	</GoalState>
type goalState struct {
	XMLName     xml.Name `xml:"GoalState"`
	Incarnation string   `xml:"Incarnation"`
	Container   struct {
		ContainerID   string `xml:"ContainerId"`
		RoleInstances []struct {
			InstanceID string `xml:"InstanceId"`
		} `xml:"RoleInstanceList>RoleInstance"`
	} `xml:"Container"`
}

func parseGoalState(b []byte) (*GoalState, error) {
	var g goalState
	if err := xml.Unmarshal(b, &g); err != nil {
		return nil, fmt.Errorf("the goal state is not a GoalState document: %w", err)
	}
	gs := &GoalState{
		Incarnation: strings.TrimSpace(g.Incarnation),
		ContainerID: strings.TrimSpace(g.Container.ContainerID),
	}
	if len(g.Container.RoleInstances) > 0 {
		gs.InstanceID = strings.TrimSpace(g.Container.RoleInstances[0].InstanceID)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"Incarnation", gs.Incarnation},
		{"Container/ContainerId", gs.ContainerID},
		{"Container/RoleInstanceList/RoleInstance/InstanceId", gs.InstanceID},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("the goal state has no %s", strings.Join(missing, ", "))
	}
	return gs, nil
}

// health is the health report, in the shape cloud-init and Afterburn post.
type health struct {
	XMLName     xml.Name `xml:"Health"`
	XSI         string   `xml:"xmlns:xsi,attr"`
	XSD         string   `xml:"xmlns:xsd,attr"`
	Incarnation string   `xml:"GoalStateIncarnation"`
	ContainerID string   `xml:"Container>ContainerId"`
	InstanceID  string   `xml:"Container>RoleInstanceList>Role>InstanceId"`
	State       string   `xml:"Container>RoleInstanceList>Role>Health>State"`
}

// healthReport is the Health document saying that gs's role instance is
// Ready.
func healthReport(gs *GoalState) ([]byte, error) {
	b, err := xml.MarshalIndent(health{
		XSI:         "http://www.w3.org/2001/XMLSchema-instance",
		XSD:         "http://www.w3.org/2001/XMLSchema",
		Incarnation: gs.Incarnation,
		ContainerID: gs.ContainerID,
		InstanceID:  gs.InstanceID,
		State:       "Ready",
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("health report: %w", err)
	}
	return append([]byte(`<?xml version="1.0" encoding="utf-8"?>`+"\n"), append(b, '\n')...), nil
}

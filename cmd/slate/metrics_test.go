package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/agent/history"
	"github.com/slate-os/slate/agent/metrics"
	"github.com/slate-os/slate/agent/upgrade"
	"github.com/slate-os/slate/boot/nodeconfig"
)

func stubGather(t *testing.T, s func() *metrics.Snapshot) {
	saved := gatherMetrics
	gatherMetrics = s
	t.Cleanup(func() { gatherMetrics = saved })
}

// slate metrics and slate metrics print print once; a part that cannot be
// read is printed as slate_scrape_error 1 and fails the command.
func TestMetricsPrint(t *testing.T) {
	store := history.Open(t.TempDir())
	if err := upgrade.WriteLastCheck(filepath.Join(store.Dir, upgrade.LastCheckFileName), upgrade.LastCheck{Time: time.Unix(1772359200, 0), Result: upgrade.CheckUpgraded, Version: "1.5"}); err != nil {
		t.Fatal(err)
	}
	gatherErr := errors.New("mounting the ESP: no such device")
	stubGather(t, func() *metrics.Snapshot { return metrics.Gather(nil, gatherErr, store) })
	for _, args := range [][]string{nil, {"print"}} {
		c := metricsCmd()
		var out bytes.Buffer
		c.SetOut(&out)
		c.SetErr(&bytes.Buffer{})
		c.SetArgs(args)
		err := c.Execute()
		if err == nil || !strings.Contains(err.Error(), "mounting the ESP") {
			t.Errorf("%q: error %v", args, err)
		}
		for _, want := range []string{"slate_scrape_error 1\n", "slate_tainted 0\n", "slate_update_last_check_timestamp_seconds 1772359200\n",
			`slate_update_last_check_info{result="upgraded",version="1.5"} 1`} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%q lacks %q:\n%s", args, want, out.String())
			}
		}
	}
	gatherErr = nil
	c := metricsCmd()
	c.SetOut(&bytes.Buffer{})
	c.SetArgs(nil)
	if err := c.Execute(); err != nil {
		t.Errorf("all read: %v", err)
	}
}

// slate metrics serve with nothing configured says so and exits 0; with a
// textfile it writes it until stopped.
func TestServeMetrics(t *testing.T) {
	var out bytes.Buffer
	if err := serveMetrics(context.Background(), nodeconfig.Metrics{}, &out); err != nil || !strings.Contains(out.String(), "neither metrics.listen nor metrics.textfile") {
		t.Errorf("nothing configured: %v, %q", err, out.String())
	}

	stubGather(t, func() *metrics.Snapshot { return metrics.Gather(nil, nil, history.Open(t.TempDir())) })
	path := filepath.Join(t.TempDir(), "run", "prometheus", "slate.prom")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	out.Reset()
	go func() { done <- serveMetrics(ctx, nodeconfig.Metrics{Textfile: path}, &out) }()
	for i := 0; ; i++ {
		if b, err := os.ReadFile(path); err == nil {
			if !strings.Contains(string(b), "slate_scrape_error 0\n") {
				t.Errorf("textfile:\n%s", b)
			}
			break
		}
		if i > 500 {
			t.Fatal("no textfile written")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
	if !strings.Contains(out.String(), "metrics: writing "+path+" every 30s") {
		t.Errorf("output %q", out.String())
	}
}

// Every slate upgrade run is recorded with its outcome, once.
func TestRecordUpdateCheck(t *testing.T) {
	saved := updateCheckPath
	t.Cleanup(func() { updateCheckPath = saved })
	dir := t.TempDir()
	updateCheckPath = filepath.Join(dir, upgrade.LastCheckFileName)

	c := &upgrade.LastCheck{Ref: "r/x", Version: "1.5"}
	recordUpdateCheck(c, errors.Join(errors.New("not signed"), upgrade.ErrRefused))
	recordUpdateCheck(c, nil) // the deferred call after the explicit one
	got, err := upgrade.ReadLastCheck(updateCheckPath)
	if err != nil || got == nil || got.Result != upgrade.CheckRefused || got.Time.IsZero() || !strings.Contains(got.Error, "not signed") || got.Version != "1.5" {
		t.Errorf("refused: %+v, %v", got, err)
	}
	recordUpdateCheck(&upgrade.LastCheck{}, upgrade.ErrUpToDate)
	if got, _ := upgrade.ReadLastCheck(updateCheckPath); got.Result != upgrade.CheckUpToDate || got.Error != "" || !got.Success() {
		t.Errorf("up to date: %+v", got)
	}
	// Off a node (no state directory) nothing is written.
	updateCheckPath = filepath.Join(dir, "none", upgrade.LastCheckFileName)
	recordUpdateCheck(&upgrade.LastCheck{}, nil)
	if _, err := os.Stat(filepath.Dir(updateCheckPath)); err == nil {
		t.Error("the state directory was made")
	}
}

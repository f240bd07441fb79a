package health

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/agent/extensions"
)

// health.requiredExtensions: a boot is good only when each is merged, by
// slate-sysext's report; the reason is the report's.
func TestRequiredExtensions(t *testing.T) {
	report := &extensions.Report{Entries: []extensions.Entry{
		{Entry: "tools", Name: "tools", Version: "1.0", State: extensions.Merged},
		{Entry: "registry.example/ext/gpu:550", Name: "gpu", State: extensions.Refused,
			Reason: "gpu 550 (sha256:cdcdcdcdcdcd): not for this image: it is for debian VERSION_ID=13, this image is VERSION_ID=12"},
		{Entry: "debug", State: extensions.Missing, Reason: "no extension named debug in the image's store (/usr/lib/slate/extensions) or the node's store (/var/lib/slate/extensions)"},
	}}
	fromReport := func() (*extensions.Report, error) { return report, nil }
	noReport := func() (*extensions.Report, error) {
		return nil, fmt.Errorf("%w: no /run/slate/extensions.json (slate-sysext.service did not run, or is not in this image)", extensions.ErrNoReport)
	}
	for _, tc := range []struct {
		name     string
		required []string
		read     func() (*extensions.Report, error)
		good     bool
		reason   string
	}{
		{"merged", []string{"tools"}, fromReport, true, "multi-user.target active, 0 required units active, no failed units, 1 required extensions merged"},
		{"none required: no report needed", nil, noReport, true, "multi-user.target active, 0 required units active, no failed units"},
		{"refused", []string{"tools", "gpu"}, fromReport, false,
			"required extensions not merged: gpu (refused: gpu 550 (sha256:cdcdcdcdcdcd): not for this image: it is for debian VERSION_ID=13, this image is VERSION_ID=12)"},
		{"missing", []string{"debug"}, fromReport, false, "required extensions not merged: debug (missing: no extension named debug in the image's store"},
		{"not in the config", []string{"other"}, fromReport, false, "required extensions not merged: other (not in the node config's extensions)"},
		{"no report", []string{"tools", "gpu"}, noReport, false,
			"required extensions tools, gpu: not activated: extensions were not activated this boot: no /run/slate/extensions.json (slate-sysext.service did not run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd := newFake(map[string][]string{"multi-user.target": {"active/active"}})
			start := time.Now()
			v := Check{RequiredExtensions: tc.required, Extensions: tc.read, Timeout: 10 * time.Second, Poll: poll}.Run(context.Background(), sd)
			if v.Good != tc.good || !strings.HasPrefix(v.Reason, tc.reason) {
				t.Errorf("verdict %+v\nwant good=%v, reason %q", v, tc.good, tc.reason)
			}
			if time.Since(start) > time.Second {
				t.Errorf("took %s: an extension that is not merged will not be, waiting does not mend it", time.Since(start))
			}
		})
	}
}

// While the target is not reached, slate-sysext-fetch may still bring an
// extension: the check waits, and a timeout names the extension too.
func TestRequiredExtensionsWait(t *testing.T) {
	reads := 0
	report := &extensions.Report{Entries: []extensions.Entry{{Entry: "registry.example/ext/gpu:550", State: extensions.Missing, Reason: "not fetched yet"}}}
	read := func() (*extensions.Report, error) {
		reads++
		if reads == 3 { // fetched and activated meanwhile
			report = &extensions.Report{Entries: []extensions.Entry{{Entry: "registry.example/ext/gpu:550", Name: "gpu", State: extensions.Merged}}}
		}
		return report, nil
	}
	sd := newFake(map[string][]string{"multi-user.target": {"activating/start", "activating/start", "active/active"}})
	v := Check{RequiredExtensions: []string{"gpu"}, Extensions: read, Timeout: 10 * time.Second, Poll: poll}.Run(context.Background(), sd)
	if !v.Good {
		t.Errorf("verdict %+v", v)
	}

	sd = newFake(map[string][]string{"multi-user.target": {"activating/start"}})
	report = &extensions.Report{Entries: []extensions.Entry{{Entry: "gpu", State: extensions.Missing, Reason: "not fetched yet"}}}
	v = Check{RequiredExtensions: []string{"gpu"}, Extensions: func() (*extensions.Report, error) { return report, nil }, Timeout: 30 * time.Millisecond, Poll: poll}.Run(context.Background(), sd)
	want := "timed out after 30ms waiting for multi-user.target (activating/start); required extensions not merged: gpu (missing: not fetched yet)"
	if v.Good || v.Reason != want {
		t.Errorf("reason %q, want %q", v.Reason, want)
	}
}

package builder

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Durations are strings in JSON (internal/jsonduration), not nanoseconds.
func TestResultJSON(t *testing.T) {
	r := Result{Version: "1.0", Total: 1500 * time.Millisecond, Steps: []StepTiming{{"rootfs", 250 * time.Millisecond}}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"total":"1.5s"`, `"steps":[{"name":"rootfs","elapsed":"250ms"}]`, `"version":"1.0"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
	if strings.Count(string(b), `"total"`) != 1 {
		t.Errorf("%s: total twice", b)
	}
}

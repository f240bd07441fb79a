package jsonduration

import (
	"encoding/json"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	for d, want := range map[time.Duration]string{
		1523456789 * time.Nanosecond:          `"1.523s"`,
		45 * time.Millisecond:                 `"45ms"`,
		2*time.Minute + 3400*time.Millisecond: `"2m3.4s"`,
		0:                                     `"0s"`,
	} {
		b, err := json.Marshal(Duration(d))
		if err != nil || string(b) != want {
			t.Errorf("%d ns: %s, %v; want %s", d, b, err, want)
		}
		var back Duration
		if err := json.Unmarshal(b, &back); err != nil || time.Duration(back) != time.Duration(d).Round(time.Millisecond) {
			t.Errorf("%s read back as %v, %v", b, back, err)
		}
	}
	var d Duration
	if err := json.Unmarshal([]byte("1500000000"), &d); err == nil {
		t.Error("a number was read as a duration")
	}
}

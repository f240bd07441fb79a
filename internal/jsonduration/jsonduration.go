// Package jsonduration is how slate writes a duration in JSON (slate build
// --json and the rest): a string in Go's duration syntax, rounded to the
// millisecond ("1.523s", "2m3.4s", "45ms"), as the node config takes its
// durations (health.timeout: 5m), rather than time.Duration's integer
// nanoseconds. time.ParseDuration reads it back.
package jsonduration

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration that is a string in JSON.
type Duration time.Duration

// String is d rounded to the millisecond, in Go's duration syntax.
func (d Duration) String() string { return time.Duration(d).Round(time.Millisecond).String() }

// MarshalJSON writes d as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a string in Go's duration syntax.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"1.5s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

package nodeconfig

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/slate-os/slate/internal/clip"
	"github.com/slate-os/slate/internal/strictyaml"
)

// Mode is a file's permission bits, at most 07777.
//
// In a document it is an octal string ("0644", "644", "0o644") or a number.
// A YAML number with a leading 0 or 0o is octal (0644, 0o644); any other
// number is decimal, as in JSON and Ignition (420 is 0644), and must be at
// most 511 (0777): a decimal 644 would be 0o1204, never what was meant.
type Mode uint32

// String is the mode in octal with a leading 0, e.g. 0644 or 02750.
func (m Mode) String() string { return fmt.Sprintf("0%03o", uint32(m)) }

// FileMode converts the Unix bits to an fs.FileMode.
func (m Mode) FileMode() fs.FileMode {
	fm := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		fm |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= fs.ModeSticky
	}
	return fm
}

func modeFromFileMode(fm fs.FileMode) Mode {
	m := Mode(fm.Perm())
	if fm&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if fm&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if fm&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}

func parseOctalMode(s string) (Mode, error) {
	digits := strings.TrimPrefix(s, "0o")
	if digits == "" || len(digits) > 5 {
		return 0, fmt.Errorf("%s is not an octal mode like \"0644\"", q(s))
	}
	v, err := strconv.ParseUint(digits, 8, 32)
	if err != nil || strings.ContainsAny(digits, "+-_") {
		return 0, fmt.Errorf("%s is not an octal mode like \"0644\"", q(s))
	}
	if v > 0o7777 {
		return 0, fmt.Errorf("%s is more than 07777", q(s))
	}
	return Mode(v), nil
}

func parseNumberMode(s string) (Mode, error) {
	if strings.HasPrefix(s, "0o") || (len(s) > 1 && s[0] == '0' && isDigits(s[1:])) {
		return parseOctalMode(s)
	}
	if !isDigits(s) {
		return 0, fmt.Errorf("%s is not a mode: write an octal string like \"0644\"", clip.String(s, clip.QuoteMax))
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v > 0o777 {
		return 0, fmt.Errorf("%s is a decimal number above 511 (0777), so not a mode: for octal write \"0%s\" or 0o%s", s, s, s)
	}
	return Mode(v), nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// UnmarshalYAML reads an octal string or a number (see Mode).
func (m *Mode) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a mode like \"0644\", got %s", strictyaml.Describe(n))
	}
	var (
		v   Mode
		err error
	)
	switch n.Tag {
	case "!!str":
		v, err = parseOctalMode(n.Value)
	case "!!int":
		v, err = parseNumberMode(n.Value)
	default:
		return fmt.Errorf("want a mode like \"0644\", got %s", strictyaml.Describe(n))
	}
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalYAML writes the mode as an octal string.
func (m Mode) MarshalYAML() (any, error) { return m.String(), nil }

// MarshalJSON writes the mode as an octal string.
func (m Mode) MarshalJSON() ([]byte, error) { return json.Marshal(m.String()) }

// UnmarshalJSON reads an octal string or a decimal number.
func (m *Mode) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		v, err := parseOctalMode(s)
		if err != nil {
			return err
		}
		*m = v
		return nil
	}
	v, err := parseNumberMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// SysctlValue is a sysctl setting's value. A document may give a string or
// a number; a boolean is refused (write 1 or 0).
type SysctlValue string

// UnmarshalYAML takes a string or a number as written.
func (v *SysctlValue) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		switch n.Tag {
		case "!!str", "!!int", "!!float":
			*v = SysctlValue(n.Value)
			return nil
		case "!!bool":
			return fmt.Errorf("want a string or number, got %s: write 1 or 0", strictyaml.Describe(n))
		}
	}
	return fmt.Errorf("want a string or number, got %s", strictyaml.Describe(n))
}

// UnmarshalJSON takes a string or a number.
func (v *SysctlValue) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*v = SysctlValue(s)
		return nil
	}
	var num json.Number
	if err := json.Unmarshal(b, &num); err != nil {
		return fmt.Errorf("want a string or number, got %s", clip.String(string(b), clip.QuoteMax))
	}
	*v = SysctlValue(num.String())
	return nil
}

// Duration is a Go duration, written as a string such as "90s" or "5m".
type Duration time.Duration

// String is time.Duration's form, e.g. 1m30s.
func (d Duration) String() string { return time.Duration(d).String() }

func parseDuration(s string) (Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("want a duration like \"90s\" or \"5m\", got %s", q(s))
	}
	return Duration(v), nil
}

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return fmt.Errorf("want a duration like \"90s\" or \"5m\", got %s", strictyaml.Describe(n))
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration like \"90s\", got %s", clip.String(string(b), clip.QuoteMax))
	}
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// Time is an RFC 3339 time ("2026-12-07T18:00:00Z"); in JSON as
// time.Time writes it.
type Time struct{ time.Time }

func (t *Time) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "!!timestamp") {
		return fmt.Errorf("want an RFC 3339 time like \"2026-12-07T18:00:00Z\", got %s", strictyaml.Describe(n))
	}
	v, err := time.Parse(time.RFC3339, n.Value)
	if err != nil {
		return fmt.Errorf("want an RFC 3339 time like \"2026-12-07T18:00:00Z\", got %s", q(n.Value))
	}
	t.Time = v
	return nil
}

func (t Time) MarshalYAML() (any, error) { return t.UTC().Format(time.RFC3339), nil }

package logship

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Entry is one journal entry, the fields of it that are shipped.
type Entry struct {
	// Cursor is __CURSOR: where the next read starts (--after-cursor).
	Cursor string
	// Time is __REALTIME_TIMESTAMP.
	Time time.Time
	// BootID is _BOOT_ID, Hostname _HOSTNAME, Unit _SYSTEMD_UNIT.
	BootID, Hostname, Unit string
	// Identifier is SYSLOG_IDENTIFIER, Comm _COMM, PID _PID.
	Identifier, Comm, PID string
	// Priority is PRIORITY (0-7) and Facility SYSLOG_FACILITY (0-23);
	// -1 when the entry has none.
	Priority, Facility int
	// Message is MESSAGE: any bytes (journald keeps binary messages), nil
	// when the entry has none.
	Message []byte
}

// ParseEntry decodes one line of `journalctl -o json`. A field's value is
// a JSON string; an array of byte values when it is not valid UTF-8 (or
// not printable); null when journalctl left it out; and, when the entry
// holds the field more than once, an array of such values, of which the
// first is taken. A field it cannot decode is left out, and the entry is
// returned with an error naming the field; a line that is not a JSON
// object gives a nil entry.
func ParseEntry(line []byte) (*Entry, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil {
		return nil, fmt.Errorf("journal entry: %w", err)
	}
	e := &Entry{Priority: -1, Facility: -1}
	var errs []error
	str := func(name string) string {
		v, err := fieldValue(raw[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		return string(v)
	}
	e.Cursor = str("__CURSOR")
	if us, err := strconv.ParseInt(str("__REALTIME_TIMESTAMP"), 10, 64); err == nil && us > 0 {
		e.Time = time.UnixMicro(us).UTC()
	}
	e.BootID = str("_BOOT_ID")
	e.Hostname = str("_HOSTNAME")
	e.Unit = str("_SYSTEMD_UNIT")
	e.Identifier = str("SYSLOG_IDENTIFIER")
	e.Comm = str("_COMM")
	e.PID = str("_PID")
	e.Priority = small(str("PRIORITY"), 7)
	e.Facility = small(str("SYSLOG_FACILITY"), 23)
	msg, err := fieldValue(raw["MESSAGE"])
	if err != nil {
		errs = append(errs, fmt.Errorf("MESSAGE: %w", err))
	}
	e.Message = msg
	if err := errors.Join(errs...); err != nil {
		return e, fmt.Errorf("journal entry %s: %w", e.Cursor, err)
	}
	return e, nil
}

// small parses a number in [0, max]; -1 when s is not one.
func small(s string, max int) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > max {
		return -1
	}
	return n
}

// fieldValue decodes one field of journalctl's JSON (see ParseEntry); nil
// for an absent field or null.
func fieldValue(raw json.RawMessage) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return []byte(s), nil
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, err
		}
		if len(items) == 0 {
			return []byte{}, nil
		}
		if first := bytes.TrimSpace(items[0]); len(first) > 0 && (first[0] == '"' || first[0] == '[' || first[0] == 'n') {
			// Several values of the field: the first.
			return fieldValue(first)
		}
		b := make([]byte, len(items))
		for i, it := range items {
			n, err := strconv.Atoi(string(bytes.TrimSpace(it)))
			if err != nil || n < 0 || n > 255 {
				return nil, fmt.Errorf("%.20s is not a byte value", it)
			}
			b[i] = byte(n)
		}
		return b, nil
	}
	return nil, fmt.Errorf("%.20s is not a string, an array of bytes or null", raw)
}

// ToMessage is the syslog message for e: PRI from SYSLOG_FACILITY and
// PRIORITY (user and info when absent), HOSTNAME from _HOSTNAME (else
// hostname), APP-NAME from SYSLOG_IDENTIFIER (else _COMM), PROCID from
// _PID, and [slate@32473 boot="_BOOT_ID" unit="_SYSTEMD_UNIT"].
func (e *Entry) ToMessage(hostname string) Message {
	m := Message{
		Facility: e.Facility,
		Severity: e.Priority,
		Time:     e.Time,
		Hostname: e.Hostname,
		AppName:  e.Identifier,
		ProcID:   e.PID,
		Params:   []Param{{"boot", e.BootID}, {"unit", e.Unit}},
		Text:     e.Message,
	}
	if m.Facility < 0 {
		m.Facility = FacilityUser
	}
	if m.Severity < 0 {
		m.Severity = SeverityInfo
	}
	if m.Hostname == "" {
		m.Hostname = hostname
	}
	if m.AppName == "" {
		m.AppName = e.Comm
	}
	return m
}

package logship

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// PEN is the private enterprise number in slate's structured-data ID.
// 32473 is the example PEN that RFC 5612 reserves for documentation: slate
// has no IANA number of its own, and the example one is the one no real
// organisation's parameters can collide with. Operators match on SDID
// (slate@32473) in their collector's rules.
const PEN = 32473

// SDID is the SD-ID of the structured-data element every message carries:
// [slate@32473 boot="…" unit="…"] for the journal, [slate@32473
// rollback="…" file="…" …] for the logs of a boot that rolled back.
const SDID = "slate@32473"

// Syslog facilities and severities slate uses itself (RFC 5424 6.2.1).
const (
	FacilityUser    = 1
	SeverityWarning = 4
	SeverityInfo    = 6
)

// Field limits of RFC 5424 (6.2) and slate's cap on MSG.
const (
	maxHostname = 255
	maxAppName  = 48
	maxProcID   = 128
	// MaxText caps a message's text (MSG): 64 KiB, syslog-ng's default
	// message size; rsyslog cuts at 8 KiB unless told otherwise. The cut is
	// marked in the text.
	MaxText = 64 << 10
)

// Param is one SD-PARAM of slate's element.
type Param struct {
	Name, Value string
}

// Message is one RFC 5424 syslog message.
type Message struct {
	// Facility (0-23) and Severity (0-7) make PRI; out of range, user and
	// info.
	Facility, Severity int
	// Time is sent in UTC with microseconds; zero sends the NILVALUE.
	Time time.Time
	// Hostname, AppName and ProcID are cut to RFC 5424's lengths, bytes
	// outside printable US-ASCII become '_', and empty is the NILVALUE.
	Hostname, AppName, ProcID string
	// Params are the parameters of the SDID element; empty values are
	// left out, and with none the element is (structured data "-").
	Params []Param
	// Text is MSG: sent as UTF-8 without a BOM. Bytes that are not UTF-8
	// (a binary journal MESSAGE) are written \xNN; at most MaxText bytes.
	Text []byte
}

// Append appends the message, RFC 5424 SYSLOG-MSG, to b:
//
//	<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID - [slate@32473 k="v" …] MSG
func (m *Message) Append(b []byte) []byte {
	fac, sev := m.Facility, m.Severity
	if fac < 0 || fac > 23 {
		fac = FacilityUser
	}
	if sev < 0 || sev > 7 {
		sev = SeverityInfo
	}
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(fac*8+sev), 10)
	b = append(b, ">1 "...)
	if m.Time.IsZero() {
		b = append(b, '-')
	} else {
		b = m.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
	}
	b = append(b, ' ')
	b = appendHeaderField(b, m.Hostname, maxHostname)
	b = append(b, ' ')
	b = appendHeaderField(b, m.AppName, maxAppName)
	b = append(b, ' ')
	b = appendHeaderField(b, m.ProcID, maxProcID)
	b = append(b, " - "...) // MSGID
	b = appendSD(b, m.Params)
	if len(m.Text) > 0 {
		b = append(b, ' ')
		b = appendText(b, m.Text)
	}
	return b
}

// AppendFrame appends m framed by octet counting (RFC 6587 3.4.1, as RFC
// 5425 frames TLS): "LEN SP SYSLOG-MSG", LEN the message's length in bytes.
func AppendFrame(b []byte, m *Message) []byte {
	// The length comes first: format into the tail of b and shift it.
	start := len(b)
	b = m.Append(b)
	n := len(b) - start
	prefix := strconv.AppendInt(nil, int64(n), 10)
	prefix = append(prefix, ' ')
	b = append(b, prefix...) // grow by len(prefix)
	copy(b[start+len(prefix):], b[start:start+n])
	copy(b[start:], prefix)
	return b
}

// appendHeaderField appends s as a header field: 1*max PRINTUSASCII, or
// "-" when empty.
func appendHeaderField(b []byte, s string, max int) []byte {
	if s == "" {
		return append(b, '-')
	}
	if len(s) > max {
		s = s[:max]
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 33 || c > 126 {
			c = '_'
		}
		b = append(b, c)
	}
	return b
}

// appendSD appends slate's SD-ELEMENT with the non-empty params, or the
// NILVALUE when there are none. PARAM-VALUE escapes '"', '\' and ']' with
// a backslash (RFC 5424 6.3.3) and must be UTF-8.
func appendSD(b []byte, params []Param) []byte {
	open := false
	for _, p := range params {
		if p.Value == "" {
			continue
		}
		if !open {
			b = append(b, '[')
			b = append(b, SDID...)
			open = true
		}
		b = append(b, ' ')
		b = append(b, p.Name...)
		b = append(b, `="`...)
		v := toValidUTF8(p.Value)
		for i := 0; i < len(v); i++ {
			switch v[i] {
			case '"', '\\', ']':
				b = append(b, '\\')
			}
			b = append(b, v[i])
		}
		b = append(b, '"')
	}
	if !open {
		return append(b, '-')
	}
	return append(b, ']')
}

func toValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return string(appendText(nil, []byte(s)))
}

// appendText appends MSG: t as it is when it is UTF-8, else with each
// byte that is not part of a valid UTF-8 sequence written \xNN; cut to
// MaxText bytes (at a character boundary) with a note of the cut.
func appendText(b []byte, t []byte) []byte {
	cut := 0
	if len(t) > MaxText {
		cut = len(t) - MaxText
		t = t[:MaxText]
		// Do not split a character: drop an incomplete one at the end.
		if i := lastRuneStart(t); !utf8.FullRune(t[i:]) {
			cut += len(t) - i
			t = t[:i]
		}
	}
	if utf8.Valid(t) {
		b = append(b, t...)
	} else {
		for len(t) > 0 {
			r, n := utf8.DecodeRune(t)
			if r == utf8.RuneError && n == 1 {
				b = append(b, '\\', 'x', hexDigit[t[0]>>4], hexDigit[t[0]&15])
			} else {
				b = append(b, t[:n]...)
			}
			t = t[n:]
		}
	}
	if cut > 0 {
		b = append(b, "…[slate: "...)
		b = strconv.AppendInt(b, int64(cut), 10)
		b = append(b, " bytes cut]"...)
	}
	return b
}

// lastRuneStart is the index of the start byte of t's last character.
func lastRuneStart(t []byte) int {
	for i := len(t) - 1; i >= 0 && i >= len(t)-utf8.UTFMax; i-- {
		if utf8.RuneStart(t[i]) {
			return i
		}
	}
	return len(t) - 1
}

const hexDigit = "0123456789abcdef"

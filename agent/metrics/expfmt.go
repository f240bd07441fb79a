package metrics

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The Prometheus text exposition format, version 0.0.4, written by hand:
// the node exports a few gauges, and the agent binary is in every image,
// so client_golang (its registry, its collectors, their dependencies) would
// add size to every node for what a hundred lines do. See
// https://prometheus.io/docs/instrumenting/exposition_formats/.

// ContentType is the exposition format's media type, as Prometheus and
// node_exporter expect it.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Metric types.
const (
	gauge   = "gauge"
	counter = "counter"
)

// def is a metric family's help and type: every name the exporter writes
// has one (defs), so each family gets its # HELP and # TYPE lines.
type def struct{ typ, help string }

type sample struct {
	labels string // rendered: {a="x",b="y"}, or ""
	value  float64
}

// families collects samples by metric name.
type families map[string][]sample

// add records a sample of the family name with labels given as name,
// value pairs (rendered sorted by name, values escaped).
func (f families) add(name string, value float64, labels ...string) {
	if _, ok := defs[name]; !ok {
		panic("metrics: no definition for " + name) // a programming error; the tests write every family
	}
	f[name] = append(f[name], sample{labels: renderLabels(labels), value: value})
}

// addTime records t as Unix seconds (milliseconds kept); a zero t is unknown
// and left out.
func (f families) addTime(name string, t time.Time, labels ...string) {
	if !t.IsZero() {
		f.add(name, float64(t.UnixMilli())/1e3, labels...)
	}
}

// write renders the families sorted by name, their samples by labels: the
// same state gives the same bytes.
func (f families) write() []byte {
	var b bytes.Buffer
	names := make([]string, 0, len(f))
	for n := range f {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		d := defs[n]
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", n, escapeHelp(d.help), n, d.typ)
		samples := slices.Clone(f[n])
		slices.SortStableFunc(samples, func(a, b sample) int { return strings.Compare(a.labels, b.labels) })
		for _, s := range samples {
			fmt.Fprintf(&b, "%s%s %s\n", n, s.labels, formatValue(s.value))
		}
	}
	return b.Bytes()
}

func renderLabels(kv []string) string {
	if len(kv) == 0 {
		return ""
	}
	if len(kv)%2 != 0 {
		panic("metrics: labels are name, value pairs")
	}
	type pair struct{ name, value string }
	pairs := make([]pair, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		pairs = append(pairs, pair{kv[i], kv[i+1]})
	}
	slices.SortFunc(pairs, func(a, b pair) int { return strings.Compare(a.name, b.name) })
	var b strings.Builder
	b.WriteByte('{')
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.name)
		b.WriteString(`="`)
		b.WriteString(EscapeLabelValue(p.value))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// EscapeLabelValue escapes a label value as the format asks: backslash,
// double quote and line feed; bytes that are not UTF-8 (a version or a
// cause comes from files on the node) become U+FFFD, which the format
// requires.
func EscapeLabelValue(v string) string {
	return labelEscaper.Replace(strings.ToValidUTF8(v, "\uFFFD"))
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

func escapeHelp(s string) string { return helpEscaper.Replace(s) }

// formatValue writes a sample value as Go's ParseFloat (which Prometheus
// uses) reads it: integers without exponent, timestamps with their
// milliseconds.
func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Package clip cuts text that may come from outside (a node config, an
// error that quotes one) to a size that a console line, a log or a record
// can hold, and says how much it cut: "…(4194240 bytes more)". A cut is
// never silent and never splits a UTF-8 character.
//
// It imports only the standard library: the init, the agent and the records
// they share (boot/record) all link it.
package clip

import (
	"strconv"
	"unicode/utf8"
)

// QuoteMax is how many bytes of a value Quote shows: enough to recognize a
// value, short enough that an error quoting it stays one readable line.
const QuoteMax = 64

// Marker is what a cut ends in, before the count of bytes cut.
const Marker = "…"

// More is the mark for n bytes cut: "…(N bytes more)".
func More(n int) string { return Marker + "(" + strconv.Itoa(n) + " bytes more)" }

// prefix is s cut to at most n bytes on a character boundary.
func prefix(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// String returns s when it is at most max bytes long; else its start,
// followed by More(the bytes left out), all of it at most max bytes (or
// just the mark, for a max smaller than the mark).
func String(s string, max int) string {
	if len(s) <= max {
		return s
	}
	// The mark's length depends on the count, which depends on the cut.
	keep := max - len(More(len(s)))
	for {
		p := prefix(s, keep)
		m := More(len(s) - len(p))
		if len(p)+len(m) <= max || keep <= 0 {
			return p + m
		}
		keep--
	}
}

// Quote quotes s as %q does, from at most QuoteMax bytes of it; a longer
// s is cut, and the quote is followed by More(the bytes left out):
// "aaaaaaaa…"…(4194240 bytes more).
func Quote(s string) string { return QuoteN(s, QuoteMax) }

// QuoteN is Quote showing at most n bytes.
func QuoteN(s string, n int) string {
	if len(s) <= n {
		return strconv.Quote(s)
	}
	p := prefix(s, n)
	return strconv.Quote(p) + More(len(s)-len(p))
}

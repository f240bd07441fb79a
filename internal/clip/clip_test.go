package clip

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{strings.Repeat("a", 100), 30, strings.Repeat("a", 11) + "…(89 bytes more)"},
		// A character is never split: é is two bytes.
		{strings.Repeat("é", 50), 30, strings.Repeat("é", 5) + "…(90 bytes more)"},
	} {
		got := String(tc.in, tc.max)
		if got != tc.want {
			t.Errorf("String(%.20q…, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
		if len(got) > tc.max || !utf8.ValidString(got) {
			t.Errorf("String(%.20q…, %d) = %q: %d bytes or invalid UTF-8", tc.in, tc.max, got, len(got))
		}
	}
	big := strings.Repeat("x", 4<<20)
	got := String(big, 1024)
	if len(got) != 1024 || !strings.HasSuffix(got, "x…(4193303 bytes more)") || !strings.HasPrefix(got, "xxxx") {
		t.Errorf("4 MiB cut to 1 KiB: %d bytes, ends %q", len(got), got[len(got)-30:])
	}
	if n := len(got) - len("…(4193303 bytes more)") + 4193303; n != len(big) {
		t.Errorf("kept + cut = %d, want %d", n, len(big))
	}
}

func TestQuote(t *testing.T) {
	if got := Quote("a\tb"); got != `"a\tb"` {
		t.Errorf("Quote short: %s", got)
	}
	long := strings.Repeat("y", 1000)
	got := Quote(long)
	if want := `"` + strings.Repeat("y", QuoteMax) + `"…(936 bytes more)`; got != want {
		t.Errorf("Quote long: %s", got)
	}
	if got := QuoteN(strings.Repeat("é", 10), 5); got != `"éé"…(16 bytes more)` {
		t.Errorf("QuoteN on a character boundary: %s", got)
	}
}

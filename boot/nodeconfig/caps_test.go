package nodeconfig

import (
	"errors"
	"strings"
	"testing"

	"github.com/slate-os/slate/internal/clip"
	"github.com/slate-os/slate/internal/strictyaml"
)

// maxErr bounds a config error: its field path and message are capped
// (strictyaml.MaxPath, MaxMsg), and the values it quotes are cut to
// clip.QuoteMax bytes.
const maxErr = strictyaml.MaxPath + strictyaml.MaxMsg + len(" (line 1234567): ")

// A 4 MiB config that is invalid gives a short error that still names the
// field and the problem, whatever part of it is huge.
func TestHugeInvalidConfigShortError(t *testing.T) {
	huge := strings.Repeat("a", 4<<20)
	for _, tc := range []struct {
		name, doc, field, msg string
	}{
		{"hostname", head + "hostname: " + huge + "\n", "hostname", "is longer than 64 characters"},
		{"kind", "apiVersion: slate.dev/v1alpha1\nkind: " + huge + "\n", "kind", "want \"NodeConfig\""},
		// An explicit key (?): YAML's plain keys stop at 1024 characters.
		{"unknown field", head + "? " + huge + "\n: 1\n", "aaaa", "unknown field"},
		{"one YAML line", head + "hostname: [" + huge + "\n", "document", "line"},
		{"sysctl key", head + "sysctl:\n  ? " + huge + "\n  : 1\n", "sysctl.aaaa", "is not a sysctl key"},
		{"relative path", head + "files:\n  - path: " + huge + "\n", "files[0].path", "is longer than 4095 bytes"},
		{"mode", head + "files:\n  - path: /etc/x\n    mode: " + strings.Repeat("9", 4<<20) + "\n", "files[0].mode", "is not an octal mode"},
		{"unit line", head + "systemd:\n  units:\n    - name: x.service\n      contents: \"" + huge + "\"\n", "systemd.units[0].contents", "is not Key=Value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			s := err.Error()
			if len(s) > maxErr || !strings.HasPrefix(s, tc.field) || !strings.Contains(s, tc.msg) {
				t.Errorf("%d bytes (at most %d), want %s...%s...: %.300s", len(s), maxErr, tc.field, tc.msg, s)
			}
			var fe *strictyaml.FieldError
			if errors.As(err, &fe) && len(fe.Msg) > 1000 && !strings.Contains(s, clip.Marker+"(") {
				t.Errorf("cut without a mark: %.300s", s)
			}
			t.Logf("%d bytes: %s", len(s), s)
		})
	}
}

// A value quoted in an error is quoted short.
func TestQuotedValuesShort(t *testing.T) {
	long := strings.Repeat("b", 300)
	for _, doc := range []string{
		head + "hostname: " + long + "\n",
		head + "timezone: " + long + "/x\n",
		head + "kernelModules: [" + long + "-]\n",
		head + "files:\n  - path: /etc/x\n    owner: " + long + "!\n",
		head + "health: {timeout: " + long + "}\n",
	} {
		_, err := Parse([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), `"`+strings.Repeat("b", clip.QuoteMax)+`"…(`) || strings.Contains(err.Error(), strings.Repeat("b", clip.QuoteMax+1)) {
			t.Errorf("%.60q: %v", doc[len(head):], err)
		}
	}
}

package boot

import (
	"strings"
	"testing"
	"time"
)

func TestImageInfoRoundTrip(t *testing.T) {
	i := ImageInfo{Version: "1.4.1", Source: "sha256:abc", Created: time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600)), AllowUnsigned: true}
	b := i.Marshal()
	want := "{\n  \"version\": \"1.4.1\",\n  \"source\": \"sha256:abc\",\n  \"created\": \"2026-01-02T02:04:05.000000006Z\",\n  \"allowUnsigned\": true\n}\n"
	if string(b) != want {
		t.Errorf("Marshal:\n%s\nwant\n%s", b, want)
	}
	got, err := ParseImageInfo(b)
	if err != nil || got.Version != i.Version || !got.Created.Equal(i.Created) || !got.AllowUnsigned {
		t.Errorf("ParseImageInfo: %+v, %v", got, err)
	}
	for data, msg := range map[string]string{
		`{"created": "2026-01-02T03:04:05Z"}`: "no version",
		`{"version": "1"}`:                    "no created time",
		`{`:                                   "image.json:",
	} {
		if _, err := ParseImageInfo([]byte(data)); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseImageInfo(%s): %v, want %q", data, err, msg)
		}
	}
}

func TestReservedCmdlineArg(t *testing.T) {
	for cmdline, want := range map[string]string{
		"":                                 "",
		"console=ttyS0 panic=10 ro":        "",
		"slate.reboot_delay=30s quiet":     "",
		"quiet slate.config=data:,x ro":    "slate.config=data:,x",
		"slate.slot=b":                     "slate.slot=b",
		"slate.anything":                   "slate.anything",
		`"slate.config=data:,x y"`:         `"slate.config=data:,x`,
		`slate."config"=x`:                 `slate."config"=x`,
		"slatex.config=1 myslate.config=1": "",
		"slate.reboot_delay2=1":            "slate.reboot_delay2=1",
	} {
		if got := ReservedCmdlineArg(cmdline); got != want {
			t.Errorf("ReservedCmdlineArg(%q) = %q, want %q", cmdline, got, want)
		}
	}
}

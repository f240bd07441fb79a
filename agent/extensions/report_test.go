package extensions

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/internal/jsonduration"
	"github.com/slate-os/slate/sysext"
)

func sampleReport() *Report {
	return &Report{
		Time: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC), Took: jsonduration.Duration(1250 * time.Millisecond),
		Host: sysext.Release{ID: "debian", VersionID: "12"}, Architecture: sysext.SystemdArch, SystemdSysext: "/usr/bin/systemd-sysext",
		Notes: []string{"/var/lib/extensions holds x.raw: hidden under an empty read-only directory, so that only verified extensions the node config names are merged"},
		Entries: []Entry{
			{Entry: "tools", Name: "tools", Version: "1.0", Digest: "sha256:" + strings.Repeat("ab", 32), Release: "ID=debian VERSION_ID=12",
				From: FromImage, State: Merged, Path: "/run/extensions/tools", Device: "/dev/mapper/slate-ext-tools", RootHash: strings.Repeat("cd", 32)},
			{Entry: "registry.example/ext/gpu:550", Name: "gpu", Version: "550", Digest: "sha256:" + strings.Repeat("ef", 32), Release: "ID=debian VERSION_ID=13",
				From: FromNode, State: Refused, Reason: "gpu 550 (sha256:efefefefefef): not for this image: it is for debian VERSION_ID=13, this image is VERSION_ID=12"},
			{Entry: "debug", State: Missing, Reason: "no extension named debug in the image's store (/usr/lib/slate/extensions) or the node's store (/var/lib/slate/extensions)"},
		},
	}
}

func TestReportRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run/slate/extensions.json")
	if _, err := ReadReport(path); !errors.Is(err, ErrNoReport) || !strings.Contains(err.Error(), "slate-sysext.service did not run") {
		t.Errorf("no report: %v", err)
	}
	r := sampleReport()
	if err := r.Write(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadReport(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, r) {
		t.Errorf("read back\n%+v\nwant\n%+v", back, r)
	}
	b, _ := os.ReadFile(path)
	for _, want := range []string{`"took": "1.25s"`, `"time": "2026-05-01T10:00:00Z"`, `"host": {` + "\n" + `    "id": "debian",`, `"state": "merged"`, `"state": "missing"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("report lacks %s:\n%s", want, b)
		}
	}
	if err := os.WriteFile(path, []byte(`{"took": 5}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadReport(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("bad report: %v", err)
	}
	// An empty activation is an empty list, not null.
	b, _ = json.Marshal(&Report{Entries: []Entry{}})
	if !strings.Contains(string(b), `"entries":[]`) {
		t.Errorf("%s", b)
	}
}

func TestUnmerged(t *testing.T) {
	r := sampleReport()
	got := r.Unmerged([]string{"tools", "gpu", "debug", "other"})
	want := []string{
		"gpu (refused: gpu 550 (sha256:efefefefefef): not for this image: it is for debian VERSION_ID=13, this image is VERSION_ID=12)",
		"debug (missing: no extension named debug in the image's store (/usr/lib/slate/extensions) or the node's store (/var/lib/slate/extensions))",
		"other (not in the node config's extensions)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	if got := r.Unmerged([]string{"tools"}); len(got) != 0 {
		t.Errorf("tools is merged: %q", got)
	}
	r.Error = "no os-release to match extensions against"
	if got := r.Unmerged([]string{"other"}); !slices.Equal(got, []string{"other (activation failed: no os-release to match extensions against)"}) {
		t.Errorf("%q", got)
	}
}

func TestReportText(t *testing.T) {
	var b strings.Builder
	sampleReport().WriteText(&b)
	want := `extensions (for ID=debian VERSION_ID=12, activated 2026-05-01 10:00:00Z in 1.25s):
  ENTRY                         NAME   VERSION  DIGEST                STATE
  tools                         tools  1.0      sha256:abababababab…  merged from the image
  registry.example/ext/gpu:550  gpu    550      sha256:efefefefefef…  refused
  debug                         -      -        -                     missing
  ! registry.example/ext/gpu:550 refused: gpu 550 (sha256:efefefefefef): not for this image: it is for debian VERSION_ID=13, this image is VERSION_ID=12
  ! debug missing: no extension named debug in the image's store (/usr/lib/slate/extensions) or the node's store (/var/lib/slate/extensions)
  note: /var/lib/extensions holds x.raw: hidden under an empty read-only directory, so that only verified extensions the node config names are merged
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	for _, tc := range []struct {
		e    Entry
		want string
	}{
		{sampleReport().Entries[0], "tools 1.0 (sha256:abababababab…) merged"},
		{Entry{Entry: "registry.example/ext/tools:1", Name: "tools", Version: "1.1", Digest: "sha256:" + strings.Repeat("12", 32), From: FromNode, SignedBy: "sha256:0123456789abcdef", State: Merged},
			"registry.example/ext/tools:1 (tools) 1.1 (sha256:121212121212…) merged from the node's store, signed by sha256:0123456789abcdef"},
		{Entry{Entry: "gpu", Name: "gpu", State: Refused, Reason: "it is for debian VERSION_ID=13, this image is VERSION_ID=12"},
			"gpu refused: it is for debian VERSION_ID=13, this image is VERSION_ID=12"},
	} {
		if got := tc.e.Line(); got != tc.want {
			t.Errorf("line %q, want %q", got, tc.want)
		}
	}
}

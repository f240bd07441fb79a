package boot

import (
	"strings"
	"testing"
	"time"
)

func TestReleasePath(t *testing.T) {
	if got := SlotA.ReleasePath(); got != "/slate/a/release.json" {
		t.Errorf("SlotA.ReleasePath() = %q", got)
	}
	if got := SlotB.ReleasePath(); got != "/slate/b/release.json" {
		t.Errorf("SlotB.ReleasePath() = %q", got)
	}
}

func TestReleaseRoundTrip(t *testing.T) {
	r := Release{Slot: SlotB, Version: "1.4.1", Source: "sha256:abc", RootHash: "00ff", RootSize: 1 << 20,
		KernelRelease: "6.1.0-50-cloud-amd64", Architecture: "amd64", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	data := r.Marshal()
	// The builder's release must not change with the clock: no written time.
	for _, absent := range []string{"written", "artifact"} {
		if strings.Contains(string(data), absent) {
			t.Errorf("a release without %s still has the key:\n%s", absent, data)
		}
	}
	if !strings.HasSuffix(string(data), "}\n") {
		t.Errorf("no final newline:\n%s", data)
	}
	back, err := ParseRelease(data)
	if err != nil {
		t.Fatal(err)
	}
	if *back != r {
		t.Errorf("round trip:\n got %+v\nwant %+v", *back, r)
	}

	r.Artifact, r.Written = "sha256:def", time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	back, err = ParseRelease(r.Marshal())
	if err != nil || *back != r {
		t.Errorf("round trip with artifact and written: %v %+v", err, back)
	}

	// The loader version is kept when known, and absent otherwise (older
	// release files parse as they are).
	if strings.Contains(string(r.Marshal()), "systemdBoot") {
		t.Errorf("a release without a systemd-boot version has the key:\n%s", r.Marshal())
	}
	r.SystemdBootVersion = "257.9-1~deb13u1"
	data = r.Marshal()
	if !strings.Contains(string(data), `"systemdBootVersion": "257.9-1~deb13u1"`) {
		t.Errorf("systemd-boot version not written:\n%s", data)
	}
	if back, err = ParseRelease(data); err != nil || *back != r {
		t.Errorf("round trip with the systemd-boot version: %v %+v", err, back)
	}
}

func TestParseReleaseRefuses(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{`{"slot":"c","version":"1","rootHash":"00"}`, `slot: unknown slot "c"`},
		{`{"slot":"a","rootHash":"00"}`, "no version"},
		{`{"slot":"a","version":"1"}`, "no rootHash"},
		{`{"slot":"a",`, "release.json: unexpected end"},
	} {
		_, err := ParseRelease([]byte(tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRelease(%s) = %v, want %q", tc.data, err, tc.want)
		}
	}
}

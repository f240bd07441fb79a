package upgrade_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/qemu-tests/testnode"
	"github.com/slate-os/slate/sysext"
	sysextbuild "github.com/slate-os/slate/sysext/build"
)

var (
	bookwormRelease = sysext.Release{ID: "debian", VersionID: "12"}
	trixieRelease   = sysext.Release{ID: "debian", VersionID: "13"}
)

var extMu sync.Mutex

// extLayout builds (once per process) a test extension named name for
// release rel, as an extension artifact layout: one tool, /usr/bin/NAME-hello,
// that prints label. It goes through `slate sysext build`'s code with a
// directory source, as a user's CI would.
func extLayout(t testing.TB, name, label string, rel sysext.Release) string {
	t.Helper()
	extMu.Lock()
	defer extMu.Unlock()
	dir := filepath.Join(testDir(), "ext", label+".oci")
	if _, err := os.Stat(dir); err == nil {
		return dir
	}
	src := filepath.Join(testDir(), "ext", label+".src")
	if err := os.MkdirAll(filepath.Join(src, "usr", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	tool := "#!/bin/sh\necho " + label + "\n"
	if err := os.WriteFile(filepath.Join(src, "usr", "bin", name+"-hello"), []byte(tool), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := sysextbuild.Build(context.Background(), sysextbuild.Options{
		Source: src, Name: name, Version: "1", Release: rel, Artifact: dir,
	}); err != nil {
		t.Fatalf("building extension %s: %v", label, err)
	}
	return dir
}

// extStatus is the extensions part of slate status --json.
type extStatus struct {
	Extensions *struct {
		Entries []struct {
			Entry, Name, Version, Digest, From, State, Reason string
		} `json:"entries"`
	} `json:"extensions"`
}

func getExtStatus(t *testing.T, r *testnode.Result, key string) map[string]string {
	t.Helper()
	var st extStatus
	decodeJSONKey(t, r, key, &st)
	out := map[string]string{}
	if st.Extensions != nil {
		for _, e := range st.Extensions.Entries {
			out[e.Entry] = e.State + ": " + e.Reason
		}
	}
	return out
}

// TestExtensions boots a node whose config names four extensions: one its
// image carries (slate build --extension), one signed for its release in the
// registry, one signed for another release and one unsigned. The first two
// are merged (their tools run from /usr/bin), the others refused with the
// reason in slate status. A byte of the fetched extension is then changed on
// the state partition: the next boot refuses it (dm-verity, checked when it
// is used) and the agent fetches it again. A last boot with a config that
// names no extension has none, and its health check, which requires one,
// fails.
func TestExtensions(t *testing.T) {
	begin(t)
	reg := testRegistry(t)
	reg.push(t, extLayout(t, "tools", "tools-12", bookwormRelease), "ext/tools")
	reg.push(t, extLayout(t, "other", "other-99", sysext.Release{ID: "debian", VersionID: "99"}), "ext/other")
	reg.pushSigned(t, extLayout(t, "unsigned", "unsigned-12", bookwormRelease), "ext/unsigned", nil)
	carried := extLayout(t, "carried", "carried-12", bookwormRelease)
	if _, err := artifact.Sign(artifact.LayoutPrefix+carried, testKey(), ""); err != nil {
		t.Fatal(err)
	}
	v := variants["v1"]
	v.Name, v.Version = "ext", "ext"
	v.Tweak = func(s *spec.Spec) {
		sizes(s)
		s.Update.PublicKeys = append(s.Update.PublicKeys, testPublicKey())
		s.Extensions = []string{artifact.LayoutPrefix + carried}
	}
	img := testnode.BuildVariant(t, v)

	tools := reg.GuestRef("ext/tools:1")
	withExt := nodeConfigFor(reg.Source(), fmt.Sprintf("extensions:\n  - carried\n  - %s\n  - %s\n  - %s\n",
		tools, reg.GuestRef("ext/other:1"), reg.GuestRef("ext/unsigned:1")))
	const hello = `
echo "TOOLS=$(tools-hello 2>&1)"
echo "CARRIED=$(carried-hello 2>&1)"
echo "MERGED=$(ls /run/extensions 2>/dev/null | tr '\n' ' ')"
`
	// fetch waits for the agent's fetch of this boot (slate-sysext-fetch is
	// a oneshot: start joins the running job, or runs it again).
	const fetch = "waitnet\nsystemctl start slate-sysext-fetch.service; echo \"FETCH=$?\"\n"
	first := probe + fetch + hello + `
status
for b in /var/lib/slate/extensions/blobs/sha256/*; do
	if [ "$(head -c4 "$b")" = hsqs ]; then echo "CHANGED=$b"; printf 'X' | dd of="$b" bs=1 seek=1000 conv=notrunc 2>/dev/null; fi
done
sync
` + testnode.ThenReboot
	start := time.Now()
	m := startNodeConfig(t, "extensions", img.Disk, "raw", "", first, withExt)
	b1 := waitBoot(t, m, exitTimeout)
	if b1.Script == nil || !b1.Ended {
		t.Fatalf("the first boot's script did not run to its end (%s); console:\n%s", b1, tail(b1.Lines, 80))
	}
	logStatus(t, "with four extensions", b1.Script)
	if got := b1.Script.Get("TOOLS"); got != "tools-12" {
		t.Errorf("tools-hello printed %q, want tools-12 (fetched from %s); merged: %s", got, tools, b1.Script.Get("MERGED"))
	}
	if got := b1.Script.Get("CARRIED"); got != "carried-12" {
		t.Errorf("carried-hello printed %q, want carried-12 (carried by the image)", got)
	}
	ext := getExtStatus(t, b1.Script, "STATUS")
	for entry, want := range map[string]string{
		"carried": "merged", tools: "merged",
		reg.GuestRef("ext/other:1"):    "VERSION_ID=99",
		reg.GuestRef("ext/unsigned:1"): "sign",
	} {
		if got := ext[entry]; !strings.Contains(got, want) {
			t.Errorf("slate status: extension %s is %q, want it to say %q", entry, got, want)
		}
	}
	if strings.Contains(ext[reg.GuestRef("ext/other:1")], "merged:") || strings.Contains(ext[reg.GuestRef("ext/unsigned:1")], "merged:") {
		t.Errorf("an extension for another release or an unsigned one was merged: %v", ext)
	}
	if b1.Script.Get("CHANGED") == "" {
		t.Fatalf("no fetched extension image in the node's store to change; script output:\n%s", strings.Join(b1.Script.Lines, "\n"))
	}

	// The changed extension is refused at boot, fetched again, merged again.
	nextBoot(t, m, probe+fetch+hello+"status\n"+testnode.ThenReboot)
	b2 := waitBoot(t, m, exitTimeout)
	if b2.Script == nil || !b2.Ended {
		t.Fatalf("the second boot's script did not run to its end (%s); console:\n%s", b2, tail(b2.Lines, 80))
	}
	logStatus(t, "after the change", b2.Script)
	refused := false
	for _, l := range b2.Lines {
		if strings.Contains(l, "tools") && strings.Contains(l, "refused") && strings.Contains(l, "verity") {
			refused = true
			t.Logf("console: %s", strings.TrimSpace(l))
		}
	}
	if !refused {
		t.Errorf("no console line says the changed extension tools was refused by dm-verity; console:\n%s", tail(b2.Lines, 80))
	}
	if got := b2.Script.Get("TOOLS"); got != "tools-12" {
		t.Errorf("after the agent fetched it again, tools-hello printed %q, want tools-12", got)
	}
	if got := b2.Script.Get("CARRIED"); got != "carried-12" {
		t.Errorf("carried-hello printed %q, want carried-12", got)
	}

	// A config without extensions: none. It still requires tools for a
	// good boot, which this boot cannot be (on a slot already good, a bad
	// check reports and never reboots; on trial it would roll back).
	noExt := strings.Replace(nodeConfig(reg), "health:\n", "health:\n  requiredExtensions: [tools]\n", 1)
	if err := m.SetFwCfgString(FwCfgConfig, noExt, false); err != nil {
		t.Fatal(err)
	}
	nextBoot(t, m, probe+hello+"status\n"+testnode.ThenPoweroff)
	b3 := waitBoot(t, m, exitTimeout)
	if b3.Script == nil || !b3.Ended {
		t.Fatalf("the third boot's script did not run to its end (%s); console:\n%s", b3, tail(b3.Lines, 80))
	}
	logStatus(t, "with no extension", b3.Script)
	if got := b3.Script.Get("TOOLS") + b3.Script.Get("CARRIED"); strings.Contains(got, "-12") {
		t.Errorf("with a config that names no extension, the tools still ran: %q", got)
	}
	if got := strings.TrimSpace(b3.Script.Get("MERGED")); got != "" {
		t.Errorf("with a config that names no extension, /run/extensions holds %q", got)
	}
	if st := getStatus(t, b3.Script); st.Health == nil || st.Health.Result != "bad" || !strings.Contains(st.Health.Reason, "tools") {
		t.Errorf("with health.requiredExtensions [tools] and no extension: health %+v, want bad, naming tools", st.Health)
	} else {
		t.Logf("health without the required extension: %s: %s", st.Health.Result, st.Health.Reason)
	}
	t.Logf("three boots with extensions in %s", time.Since(start).Round(time.Second))
}

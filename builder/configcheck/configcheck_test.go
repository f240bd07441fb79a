package configcheck

import (
	"archive/tar"
	"context"
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/internal/testimage"
)

func image(t *testing.T) v1.Image {
	t.Helper()
	es := append(testimage.Base(testimage.Options{NoKernel: true}),
		testimage.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
		testimage.File("etc/group", "root:x:0:\napp:x:1000:\nadm:x:4:\n"),
		testimage.File("etc/motd", "the image's\n"),
		testimage.Dir("etc/systemd"), testimage.Dir("etc/systemd/system"),
		testimage.Dir("usr/lib/systemd/system"),
		testimage.File("usr/lib/systemd/system/web.service", "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"),
		testimage.Dir("usr/share"), testimage.Dir("usr/share/zoneinfo"), testimage.Dir("usr/share/zoneinfo/Europe"),
		testimage.File("usr/share/zoneinfo/Europe/Paris", "TZif2 fake"),
		testimage.File("usr/share/big", strings.Repeat("not extracted ", 1000)),
		// A link out of /etc, which a config must not write through.
		testimage.Entry{Name: "etc/elsewhere", Type: tar.TypeSymlink, Link: "/var/lib"},
	)
	img, err := testimage.Image(es)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

const head = "apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\n"

func TestImage(t *testing.T) {
	img := image(t)
	ok := head + `hostname: node-1
timezone: Europe/Paris
files:
  - path: /etc/app.conf
    owner: app:adm
    contents: {text: "x=1\n"}
systemd:
  units:
    - name: web.service
      enabled: true
    - name: slate-upgrade.timer
      enabled: true
`
	r, err := Image(context.Background(), []byte(ok), img)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Summary(); !strings.HasPrefix(got, "hostname node-1, timezone Europe/Paris, ") || !strings.HasSuffix(got, "1 file, 2 units") {
		t.Errorf("summary %q", got)
	}

	for _, c := range []struct{ name, config, want string }{
		{"unknown user", "files: [{path: /etc/a, owner: nobody2, contents: {text: x}}]", `user "nobody2" is not in the image's /etc/passwd`},
		{"unknown group", "files: [{path: /etc/a, owner: app:wheel, contents: {text: x}}]", `group "wheel" is not in the image's /etc/group`},
		{"no such zone", "timezone: Mars/Olympus", "Mars/Olympus is not a time zone of this image"},
		{"existing file", "files: [{path: /etc/motd, contents: {text: x}}]", "/etc/motd already exists in the image"},
		{"through a link", "files: [{path: /etc/elsewhere/x, contents: {text: x}}]", "outside /etc and /run"},
		{"no such unit", "systemd: {units: [{name: nope.service, enabled: true}]}", "nope.service"},
	} {
		_, err := Image(context.Background(), []byte(head+c.config+"\n"), img)
		var ie *InvalidError
		if !errors.As(err, &ie) || !ie.ForImage || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error for this image with %q", c.name, err, c.want)
		}
	}
}

func TestConfigAlone(t *testing.T) {
	r, err := Config([]byte(head + "hostname: node-1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Summary(); got != "hostname node-1, 0 files" {
		t.Errorf("summary %q", got)
	}
	_, err = Config([]byte(head + "hostname: node-1\nhostnme: typo\n"))
	var ie *InvalidError
	if !errors.As(err, &ie) || ie.ForImage || !strings.Contains(err.Error(), "hostnme") {
		t.Errorf("got %v, want the unknown field named", err)
	}
	// The image is not even read when the config is invalid alone.
	if _, err := Image(context.Background(), []byte("kind: Nope\n"), nil); !errors.As(err, &ie) || ie.ForImage {
		t.Errorf("got %v", err)
	}
}

// Only what a config can reach is written: the check stays cheap on a big image.
func TestSelection(t *testing.T) {
	want := selection(mustConfig(t, head).Config)
	for name, in := range map[string]bool{
		"etc": true, "etc/passwd": true, "lib": true, "usr": true, "usr/lib": true, "usr/lib/systemd/system/x.service": true,
		"usr/share/big": false, "usr/bin/slate": false, "usr/share/zoneinfo/Europe/Paris": false, "var/lib/x": false,
	} {
		if want(name) != in {
			t.Errorf("%s: selected %v, want %v", name, !in, in)
		}
	}
	if !selection(mustConfig(t, head+"timezone: Europe/Paris\n").Config)("usr/share/zoneinfo/Europe/Paris") {
		t.Error("a config with a time zone needs the zoneinfo")
	}
}

func mustConfig(t *testing.T, s string) *Result {
	t.Helper()
	r, err := Config([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

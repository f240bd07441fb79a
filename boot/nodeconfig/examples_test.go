package nodeconfig

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const examplesDir = "../../configs/node"

// Every example parses, round-trips and applies to a test tree that has
// what it names.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(examplesDir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		ext := filepath.Ext(f)
		if ext != ".yaml" && ext != ".json" {
			continue
		}
		seen[filepath.Base(f)] = true
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, c, true)
			root := newTree(t)
			exampleUnits(t, root)
			a, err := c.Apply(root)
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			if a.Tainted != c.Access.BreakGlass {
				t.Errorf("tainted %v", a.Tainted)
			}
		})
	}
	for _, want := range []string{"plain.yaml", "units.yaml", "network.yaml", "node.json", "breakglass.yaml", "updates.yaml"} {
		if !seen[want] {
			t.Errorf("missing example %s", want)
		}
	}
}

// exampleUnits adds to a test tree the Debian units the examples name.
func exampleUnits(t *testing.T, root string) {
	units := map[string]string{
		"systemd-networkd.service":             "[Service]\nExecStart=/lib/systemd/systemd-networkd\n[Install]\nWantedBy=multi-user.target\nAlso=systemd-networkd.socket systemd-networkd-wait-online.service\nAlias=dbus-org.freedesktop.network1.service\n",
		"systemd-networkd.socket":              "[Socket]\nListenNetlink=route 1361\n[Install]\nWantedBy=sockets.target\n",
		"systemd-networkd-wait-online.service": "[Service]\nExecStart=/lib/systemd/systemd-networkd-wait-online\n[Install]\nWantedBy=network-online.target\n",
		"e2scrub_reap.service":                 "[Service]\nExecStart=/sbin/e2scrub_all -A -r\n[Install]\nWantedBy=default.target\n",
		"systemd-journald.service":             "[Service]\nExecStart=/lib/systemd/systemd-journald\n",
		"slate-upgrade.timer":                  "[Timer]\nOnBootSec=5min\n[Install]\nWantedBy=timers.target\n",
	}
	for name, text := range units {
		if err := os.WriteFile(filepath.Join(root, "usr/lib/systemd/system", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/lib/systemd/system/e2scrub_reap.service", filepath.Join(root, "etc/systemd/system/multi-user.target.wants/e2scrub_reap.service")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/motd"), []byte("Debian\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The README documents every field, by its path (files[].contents.text).
func TestReadmeDocumentsEveryField(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(examplesDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	var walk func(typ reflect.Type, prefix string)
	walk = func(typ reflect.Type, prefix string) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			p := prefix + name
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch {
			case ft.Kind() == reflect.Struct:
				walk(ft, p+".")
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				paths = append(paths, p)
				walk(ft.Elem(), p+"[].")
			default:
				paths = append(paths, p)
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	if len(paths) < 30 {
		t.Fatalf("found only %d fields", len(paths))
	}
	for _, p := range paths {
		if !strings.Contains(string(readme), "| `"+p+"` |") {
			t.Errorf("configs/node/README.md has no table row for %s", p)
		}
	}
}

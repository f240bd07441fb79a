package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The init is PID 1 in a small initramfs: it must not drag in the builder's
// or the agent's dependencies. This fails when any of them is linked.
func TestNoHeavyDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/google/go-containerregistry",
		"github.com/diskfs/go-diskfs",
		"github.com/spf13/cobra",
		"github.com/spf13/pflag",
		"github.com/coreos/go-systemd",
		"github.com/sirupsen/logrus",
		// The node config is YAML: the init parses it with gopkg.in/yaml.v3
		// (through boot/nodeconfig and internal/strictyaml), and with no
		// other YAML library.
		"gopkg.in/yaml.v2",
		"sigs.k8s.io/yaml",
		"go.yaml.in/yaml",
		// Modules are decompressed at pack time: no decompressor in the init.
		"github.com/klauspost/compress",
		"github.com/ulikunitz/xz",
		"github.com/slate-os/slate/builder",
		// The update artifact and its signatures are the agent's to read.
		"github.com/slate-os/slate/artifact",
		"github.com/slate-os/slate/signature",
		"github.com/slate-os/slate/initramfs/initbin",
		"net/http",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps printed too little:\n%s", out)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("slate-init links %s", d)
			}
		}
		// The packer is for the builder; the init shares only initramfs/layout and initramfs/init/...
		if d == "github.com/slate-os/slate/initramfs" {
			t.Errorf("slate-init links the initramfs packer")
		}
	}
}

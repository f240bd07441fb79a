package main

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/slate-os/slate/vm"
)

// The argument is a disk by its contents, a spec by its name, a tarball or
// a directory an image to build, anything else an image reference; a
// compressed disk or a missing file is refused, naming it.
func TestClassifyRunArg(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	vhd := make([]byte, 4096)
	copy(vhd[len(vhd)-512:], "conectix")
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	if err := tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o644, Size: 2}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte("[]"))
	tw.Close()

	for arg, want := range map[string]runTarget{
		file("node.raw", make([]byte, 1<<20)):             {runDisk, "raw"},
		file("node.img", append([]byte("QFI\xfb"), 0, 0)): {runDisk, "qcow2"},
		file("node.vhd", vhd):                             {runDisk, "vpc"},
		file("node.vmdk", []byte("KDMV\x01\x00\x00\x00")): {runDisk, "vmdk"},
		file("image.tar", tb.Bytes()):                     {kind: runImage},
		file("image.yaml", []byte("apiVersion: x\n")):     {kind: runSpec},
		dir:                                    {kind: runImage},
		"oci:" + dir:                           {kind: runImage},
		"docker-archive:" + dir + "/image.tar": {kind: runImage},
		"registry.example/org/node:1.4":        {kind: runImage},
	} {
		got, err := classifyRunArg(arg)
		if err != nil || got != want {
			t.Errorf("classifyRunArg(%q) = %+v, %v; want %+v", arg, got, err, want)
		}
	}
	for arg, want := range map[string]string{
		file("node.raw.zst", []byte{0x28, 0xb5, 0x2f, 0xfd, 0}): "compressed, which QEMU cannot boot: decompress it first (zstd -d " + dir + "/node.raw.zst)",
		file("node.tar.gz", []byte{0x1f, 0x8b, 0}):              "(it holds disk.raw)",
		"node.raw":                       "no such file or directory: node.raw",
		"oci:" + dir + "/none":           "no such file or directory: " + dir + "/none",
		filepath.Join(dir, "gone.yaml"):  "gone.yaml: no such file or directory",
		filepath.Join(dir, "gone/x.raw"): "no such file or directory: " + dir + "/gone/x.raw",
	} {
		if _, err := classifyRunArg(arg); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("classifyRunArg(%q): %v, want an error containing %q", arg, err, want)
		}
	}
}

// A broken node config is refused before anything boots, naming the file,
// the line and the field; so is --persist on a disk that would be deleted
// or that QEMU cannot write. None of it needs QEMU.
func TestRunRefusesEarly(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(cfg, []byte("apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\nhostname: node-1\nhostnme: typo\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "node.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// Sparse extent headers as qemu-img writes them: streamOptimized has
	// compressed grains (flag bit 16), monolithicSparse not.
	stream, sparse := filepath.Join(dir, "stream.vmdk"), filepath.Join(dir, "sparse.vmdk")
	for p, h := range map[string]string{stream: "KDMV\x03\x00\x00\x00\x03\x00\x03\x00", sparse: "KDMV\x01\x00\x00\x00\x03\x00\x00\x00"} {
		if err := os.WriteFile(p, []byte(h), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := checkPersist(sparse, runTarget{runDisk, "vmdk"}); err != nil {
		t.Errorf("--persist on a monolithicSparse VMDK: %v", err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", cfg, disk}, "--config: " + cfg + ": hostnme (line 4): unknown field"},
		{[]string{"--persist", stream}, "--persist: " + stream + " is a streamOptimized VMDK"},
		{[]string{"--persist", "oci:" + dir}, "--persist keeps the node's writes in its disk, but the disk built from oci:" + dir + " would be deleted at exit"},
		{[]string{"--cpus", "0", disk}, "--cpus 0"},
		{[]string{"--forward", "22", "--forward", "22:2222", disk}, "guest port 22 is forwarded twice"},
	} {
		c := runCmd()
		c.SetArgs(tc.args)
		c.SilenceUsage, c.SilenceErrors = true, true
		if err := c.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestParseMemory(t *testing.T) {
	for in, want := range map[string]int{"2GiB": 2048, "2G": 2048, "512MiB": 512, "1024": 1024, " 768 ": 768} {
		if got, err := parseMemory(in); err != nil || got != want {
			t.Errorf("parseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"1.5GiB", "100K", "0", "-1", "lots", ""} {
		if got, err := parseMemory(in); err == nil || !strings.Contains(err.Error(), "--memory") {
			t.Errorf("parseMemory(%q) = %d, %v; want an error naming --memory", in, got, err)
		}
	}
}

func TestParseForwards(t *testing.T) {
	got, err := parseForwards([]string{"22", "80:8080"})
	if want := []vm.Forward{{GuestPort: 22}, {GuestPort: 80, HostPort: 8080}}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("parseForwards = %+v, %v; want %+v", got, err, want)
	}
	for _, in := range []string{"0", "22:", ":22", "70000", "ssh", "22:2222:1"} {
		if _, err := parseForwards([]string{in}); err == nil || !strings.Contains(err.Error(), "--forward") {
			t.Errorf("parseForwards(%q): %v, want an error naming --forward", in, err)
		}
	}
}

// The line before boot says how the machine runs. vm.New needs no QEMU
// for a diskless machine with its own vars template.
func TestRunBanner(t *testing.T) {
	vars := filepath.Join(t.TempDir(), "vars.fd")
	if err := os.WriteFile(vars, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := vm.Config{VarsTemplate: vars, Accel: vm.AccelTCG, MemoryMiB: 2048, CPUs: 2, Forwards: []vm.Forward{{GuestPort: 22, HostPort: 2222}}}
	m, err := vm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got := runBanner(m, cfg, "node.raw")
	for _, want := range []string{
		"slate run: node.raw on an overlay, dropped at exit;",
		"TCG (no usable /dev/kvm: slow, about a minute to boot);",
		"2048 MiB, 2 CPUs;",
		"guest port 22 on 127.0.0.1:2222;",
		"console log " + m.ConsoleLog() + ";",
		"Ctrl-a x quits",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("banner lacks %q: %s", want, got)
		}
	}
	if strings.Contains(got, "\n") {
		t.Errorf("banner is more than one line: %q", got)
	}
}

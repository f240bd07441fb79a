package run_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/internal/testtool"
)

// smokeConfig is a node config that leaves marks the guest init reports.
func smokeConfig(hostname, motd string) string {
	return fmt.Sprintf("apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\nhostname: %s\nfiles:\n  - path: /etc/motd\n    contents:\n      text: %q\n", hostname, motd)
}

func sha256hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// testConfigSources boots the smoke disk with a node config from each
// source (part of TestQEMUSmoke, which set the disk up).
func testConfigSources(t *testing.T, work, kernel, initrd, disk, cmdline string) {
	write := func(name, content string) string {
		p := filepath.Join(work, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fwCfg := func(file string) []string { return []string{"-fw_cfg", "name=opt/slate/config,file=" + file} }
	drive := func(file string) []string {
		return []string{"-drive", "file=" + file + ",if=virtio,format=raw,readonly=on"}
	}
	getRecord := func(name, out string) *record.Record {
		t.Helper()
		for _, l := range strings.Split(out, "\n") {
			if i := strings.Index(l, "SMOKE-RECORD "); i >= 0 {
				r, err := record.Parse([]byte(l[i+len("SMOKE-RECORD "):]))
				if err != nil {
					t.Fatalf("%s: record: %v", name, err)
				}
				if r.Config == nil {
					t.Fatalf("%s: no config in the record", name)
				}
				return r
			}
		}
		t.Fatalf("%s: no record; console:\n%s", name, tail(out, 60))
		return nil
	}
	applied := func(name, out, source, location, cfg, hostname, motd string) {
		t.Helper()
		rec := getRecord(name, out)
		c := rec.Config
		line := "slate-init: config from " + source + " (sha256 " + sha256hex(cfg) + ") applied: hostname " + hostname + ", "
		if c.Source != source || c.Location != location || c.SHA256 != sha256hex(cfg) || c.Size != len(cfg) || !c.Applied ||
			c.Error != "" || c.Hostname != hostname || len(c.Files) == 0 || rec.Error != "" {
			t.Errorf("%s: config record %+v", name, c)
		}
		for _, want := range []string{line, "SMOKE hostname-file=" + hostname, fmt.Sprintf("SMOKE motd=%q <nil>", motd),
			"SMOKE config-json: ok", "SMOKE run-mounts=1 drive-mounts=0", "SMOKE end"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: console lacks %q", name, want)
			}
		}
		if t.Failed() {
			t.Logf("%s: console:\n%s", name, tail(out, 60))
		}
	}

	// The command line wins over fw_cfg.
	cmdCfg := smokeConfig("from-cmdline", "cmdline")
	fwCfgFile := write("fwcfg.yaml", smokeConfig("from-fwcfg", "fw_cfg"))
	out := qemu(t, work, kernel, initrd, disk, cmdline+" slate.config=data:;base64,"+base64.StdEncoding.EncodeToString([]byte(cmdCfg)),
		"config-cmdline", fwCfg(fwCfgFile)...)
	applied("cmdline", out, "cmdline", "slate.config", cmdCfg, "from-cmdline", "cmdline")

	// fw_cfg.
	out = qemu(t, work, kernel, initrd, disk, cmdline, "config-fwcfg", fwCfg(fwCfgFile)...)
	applied("fw_cfg", out, "fw_cfg", "opt/slate/config", smokeConfig("from-fwcfg", "fw_cfg"), "from-fwcfg", "fw_cfg")

	// A vfat config drive.
	if testtool.Have(t, "mcopy") {
		cfg := smokeConfig("from-vfat", "vfat")
		img := filepath.Join(work, "config-vfat.img")
		os.WriteFile(img, nil, 0o644)
		os.Truncate(img, 4<<20)
		sh(t, work, "mkfs.vfat", "-n", "SLATE-CONFI", img)
		sh(t, work, "mcopy", "-i", img, write("slate.yaml", cfg), "::slate.yaml")
		out = qemu(t, work, kernel, initrd, disk, cmdline, "config-vfat", drive(img)...)
		applied("vfat drive", out, "config-drive", "/dev/vdb", cfg, "from-vfat", "vfat")
	} else {
		t.Log("mtools not installed: no vfat config drive")
	}

	// An ISO 9660 config drive.
	if testtool.Have(t, "genisoimage") {
		cfg := smokeConfig("from-iso", "iso9660")
		tree := filepath.Join(work, "iso-tree")
		os.MkdirAll(tree, 0o755)
		os.WriteFile(filepath.Join(tree, "slate.yaml"), []byte(cfg), 0o644)
		img := filepath.Join(work, "config.iso")
		sh(t, work, "genisoimage", "-quiet", "-V", "SLATE-CONFIG", "-R", "-J", "-o", img, tree)
		out = qemu(t, work, kernel, initrd, disk, cmdline, "config-iso", drive(img)...)
		applied("iso drive", out, "config-drive", "/dev/vdb", cfg, "from-iso", "iso9660")
	} else {
		t.Log("genisoimage not installed: no ISO config drive")
	}

	// An invalid config applies nothing; the boot goes on with the image's defaults.
	bad := "apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\nhostname: bad\nfiles:\n  - path: /usr/x\n    contents:\n      text: x\n"
	out = qemu(t, work, kernel, initrd, disk, cmdline, "config-invalid", fwCfg(write("bad.yaml", bad))...)
	rec := getRecord("invalid", out)
	if c := rec.Config; c.Source != "fw_cfg" || c.Applied || c.Failed != record.ConfigFailedParse ||
		c.SHA256 != sha256hex(bad) || !strings.HasPrefix(c.Error, "files[0].path") || len(c.Files) != 0 {
		t.Errorf("invalid: config record %+v", c)
	}
	line := "slate-init: config from fw_cfg (sha256 " + sha256hex(bad) + ") is invalid, nothing applied: files[0].path (line 5): /usr/x is outside /etc and /run"
	for _, want := range []string{line, "SMOKE hostname-file=smoke", "SMOKE config-json: stat /run/slate/config.json: no such file or directory", "SMOKE end"} {
		if !strings.Contains(out, want) {
			t.Errorf("invalid: console lacks %q", want)
		}
	}

	// A malformed data: URL is reported the same way, and fw_cfg is not used instead.
	out = qemu(t, work, kernel, initrd, disk, cmdline+" slate.config=data:;base64,@@@", "config-badurl", fwCfg(fwCfgFile)...)
	rec = getRecord("bad URL", out)
	if c := rec.Config; c.Source != "cmdline" || c.Applied || c.Failed != record.ConfigFailedRead || c.SHA256 != "" {
		t.Errorf("bad URL: config record %+v", c)
	}
	if !strings.Contains(out, "slate-init: config from cmdline could not be read, nothing applied: slate.config=: data: URL data is not valid base64") ||
		!strings.Contains(out, "SMOKE hostname-file=smoke") {
		t.Errorf("bad URL: console:\n%s", tail(out, 40))
	}
}

// Command demo boots a slate disk under QEMU (UEFI firmware, systemd-boot,
// slate's init) and shows the node coming up: with --interactive it leaves
// you at the console (make run); otherwise it waits for the node to be ready,
// prints what slate did and, given --artifact, serves that update artifact
// from a registry on the host and lets the node upgrade itself to it and
// assess the new boot, then powers the node off (make demo).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"time"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/builder/inspect"
	"github.com/slate-os/slate/vm"
)

func main() {
	diskPath := flag.String("disk", "build/demo.raw", "slate disk image to boot (never modified: the VM runs on an overlay)")
	interactive := flag.Bool("interactive", false, "attach the console to this terminal and keep the VM running (quit: Ctrl-a x)")
	quiet := flag.Bool("quiet", false, "do not copy the console to stdout")
	art := flag.String("artifact", "", "update artifact (OCI layout) the node upgrades to; empty: no upgrade")
	pubKey := flag.String("public-key", "", "PEM public key for the node's update.publicKey, added to the keys the image trusts (slate build --update-key)")
	ext := flag.String("extension", "", "system extension (OCI layout) served beside the artifact, which the node config names; empty: none")
	flag.Parse()
	if err := run(*diskPath, *art, *ext, *pubKey, *interactive, *quiet); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func say(format string, a ...any) {
	fmt.Printf("\n\033[1m==> "+format+"\033[0m\n", a...)
}

func run(diskPath, art, ext, pubKeyFile string, interactive, quiet bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := vm.Available(); err != nil {
		return err
	}
	rep, err := inspect.Disk(diskPath)
	if err != nil {
		return err
	}
	say("the disk slate built")
	rep.Text(os.Stdout)

	cfg := vm.Config{Disk: diskPath, DiskFormat: "raw", Network: true, AllowReboot: interactive || art != "", Interactive: interactive}
	if art != "" && !interactive {
		ref, extRef, version, stopRegistry, err := serve(art, ext)
		if err != nil {
			return err
		}
		defer stopRegistry()
		say("update artifact %s (version %s) served at %s; the node reaches it as %s", art, version, ref, guestRef(ref))
		if extRef != "" {
			say("system extension %s served at %s; the node config names it", ext, extRef)
			extRef = guestRef(extRef)
		}
		var pubKey string
		if pubKeyFile != "" {
			b, err := os.ReadFile(pubKeyFile)
			if err != nil {
				return err
			}
			pubKey = string(b)
			say("the node's config adds the key in %s to those its image trusts", pubKeyFile)
		}
		cfg.FwCfgStrings = map[string]string{"opt/slate/config": nodeConfig(guestRef(ref), extRef, version, pubKey)}
		a, err := artifact.Open("oci:" + art)
		if err != nil {
			return err
		}
		_, unsigned := a.Signatures()
		return upgradeDemo(ctx, cfg, quiet, version, unsigned == nil, extRef != "")
	}
	if !interactive && !quiet {
		cfg.Console = os.Stdout
	}
	say("booting it under QEMU: OVMF firmware, systemd-boot, slate's init (software emulation, about a minute)")
	start := time.Now()
	m, err := vm.StartContext(ctx, cfg)
	if err != nil {
		return err
	}
	defer m.Close()
	if interactive {
		_, err := m.WaitExit(0)
		return err
	}

	slotRe := regexp.MustCompile(`slate-init: slot (\w+), image version "([^"]*)"`)
	mt, err := m.Expect(slotRe, vm.Scale(3*time.Minute))
	if err != nil {
		return err
	}
	slot, version := mt.Groups[1], mt.Groups[2]
	sw, err := m.Expect(regexp.MustCompile(`slate-init: switching root to (\S+) after (\d+) ms`), vm.Scale(2*time.Minute))
	if err != nil {
		return err
	}
	if _, err := m.Expect(regexp.MustCompile(`login:`), vm.Scale(3*time.Minute)); err != nil {
		return err
	}
	ready := time.Since(start)
	say("node ready: slot %s, version %s; slate's init handed over to %s after %s ms; %.0fs from power-on",
		strings.ToUpper(slot), version, sw.Groups[1], sw.Groups[2], ready.Seconds())
	fmt.Println("    the root is a read-only squashfs, /etc an overlay that resets at every boot,")
	fmt.Println("    /var lives on the state partition; no login is configured: nothing on the node is changed by hand.")

	say("powering the node off (ACPI power button)")
	if err := m.SystemPowerdown(); err != nil {
		return err
	}
	exit, err := m.WaitExit(vm.ShutdownTimeout)
	if err != nil {
		m.Quit()
		return fmt.Errorf("the node did not power off: %w", err)
	}
	say("done: the VM ended (%s)", exit.Reason)
	return nil
}

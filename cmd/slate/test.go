package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/nodetest"
	"github.com/slate-os/slate/vm"
)

func testCmd() *cobra.Command {
	var (
		from, to, configFile, junit, logs, memory string
		scenarios, checks                         []string
		parallel, cpus                            int
		asJSON, insecure                          bool
	)
	c := &cobra.Command{
		Use:   "test --from V1 [--to V2] [--config node.yaml] [--scenario NAME]... [--check SCRIPT]... [--junit FILE] [--json]",
		Short: "Prove an image's boot, config, upgrade, rollback, power cuts and tamper refusal under QEMU",
		Long: `Test boots your own images under QEMU, as a fleet would run them, and reports
each scenario as passed or failed, keeping the console log of every boot:

` + scenarioList() + `
V1 is a disk slate built (raw, qcow2, vhd, vmdk), an image reference
(registry, oci:DIR, docker-archive:FILE) or an image spec (.yaml), which
slate test builds first. V2 is what nodes upgrade to: the update artifact
slate build --artifact wrote (an OCI layout directory), or an image or
spec to build. Without --to the scenarios that upgrade are skipped.

Nothing is added to the images. The test's node config is yours (--config)
plus a runner unit that runs each boot's checks and prints them on the
serial console; V2 is served by a registry on this machine's loopback
(10.0.2.2 from the guest, QEMU's user network), signed with a key made for
the run, which the test config adds to the keys the node trusts. Unless your
config has a network section, the test config gives the node DHCP through
systemd-networkd. Each --check is a shell script run on the node after every
boot; it must exit 0.

Scenarios run in parallel, one per core by default (QEMU without KVM keeps a
core busy); each boot under TCG takes about a minute. The exit status is 1
when a scenario failed; --junit writes JUnit XML for CI, --json prints the
report as JSON.`,
		Example: `  slate test --from node-1.4.raw --to node-1.5.oci --config node.yaml --junit report.xml
  slate test --from registry.example/org/node:1.4 --to registry.example/org/node:1.5
  slate test --from node.raw --scenario boot --scenario config --check checks/app-answers.sh`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" {
				return fmt.Errorf("--from is required: the disk or image nodes run today")
			}
			o := nodetest.Options{Dir: logs, Parallel: parallel, CPUs: cpus, Progress: os.Stderr}
			for _, s := range scenarios {
				for _, name := range strings.Split(s, ",") {
					if nodetest.Describe(name) == "" {
						return fmt.Errorf("--scenario %q: there are %s", name, strings.Join(nodetest.Scenarios(), ", "))
					}
					o.Scenarios = append(o.Scenarios, name)
				}
			}
			if memory != "" {
				mib, err := parseMemory(memory)
				if err != nil {
					return err
				}
				o.MemoryMiB = mib
			}
			if configFile != "" {
				b, err := os.ReadFile(configFile)
				if err != nil {
					return fmt.Errorf("--config: %w", err)
				}
				o.Config, o.ConfigName = b, configFile
			}
			for _, f := range checks {
				b, err := os.ReadFile(f)
				if err != nil {
					return fmt.Errorf("--check: %w", err)
				}
				o.Checks = append(o.Checks, nodetest.Check{Name: filepath.Base(f), Script: string(b)})
			}
			// Before a build that would be wasted.
			if err := vm.Available(); err != nil {
				return err
			}
			ctx := cmd.Context()
			builds := filepath.Join(logs, "images")
			v1, err := testInput(ctx, "V1", from, filepath.Join(builds, "v1"), insecure, false)
			if err != nil {
				return err
			}
			o.From = *v1
			if to != "" {
				v2, err := testInput(ctx, "V2", to, filepath.Join(builds, "v2"), insecure, true)
				if err != nil {
					return err
				}
				o.To = v2
			}
			rep, err := nodetest.Run(ctx, o)
			if err != nil {
				return err
			}
			if junit != "" {
				if err := writeJUnit(junit, rep); err != nil {
					return err
				}
			}
			if asJSON {
				if err := printJSON(rep); err != nil {
					return err
				}
			} else {
				rep.WriteText(os.Stdout)
			}
			if !rep.Passed {
				failed := 0
				for _, r := range rep.Results {
					if r.Status == nodetest.Fail {
						failed++
					}
				}
				return fmt.Errorf("%d of %d scenarios failed (console logs under %s)", failed, len(rep.Results), logs)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&from, "from", "", "V1: a disk, an image reference or an image spec (.yaml)")
	f.StringVar(&to, "to", "", "V2: an update artifact directory (slate build --artifact), an image reference or an image spec")
	f.StringVar(&configFile, "config", "", "your node config (YAML or JSON), applied on every boot")
	f.StringArrayVar(&scenarios, "scenario", nil, "run only this scenario (repeatable, or comma-separated): "+strings.Join(nodetest.Scenarios(), ", "))
	f.StringArrayVar(&checks, "check", nil, "a shell script that must exit 0 on the node after every boot (repeatable)")
	f.StringVar(&junit, "junit", "", "write the report as JUnit XML to this file")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringVar(&logs, "logs", "slate-test", "keep console logs (and images slate test builds) under this directory")
	f.IntVar(&parallel, "parallel", 0, "scenarios run at once (default: one per core)")
	f.StringVar(&memory, "memory", "", "memory of each machine, e.g. 1GiB or 1024 (MiB; default 1GiB)")
	f.IntVar(&cpus, "cpus", 0, "CPUs of each machine (default 2)")
	f.BoolVar(&insecure, "insecure", false, "allow plain HTTP to the registries images are read from")
	return c
}

func scenarioList() string {
	var b strings.Builder
	for _, s := range nodetest.Scenarios() {
		fmt.Fprintf(&b, "  %-9s %s\n", s, nodetest.Describe(s))
	}
	return b.String()
}

// testInput resolves --from or --to: a disk (V1) or an artifact (V2) as
// given, or an image built into dir (disk and artifact). What is a disk
// and what an image is decided as for slate run.
func testInput(ctx context.Context, what, arg, dir string, insecure, wantArtifact bool) (*nodetest.Image, error) {
	if path := strings.TrimPrefix(arg, "oci:"); isUpdateArtifact(path) {
		if !wantArtifact {
			return nil, fmt.Errorf("%s: %s is an update artifact; V1 boots from a disk or an image", what, arg)
		}
		return &nodetest.Image{Artifact: path}, nil
	}
	target, err := classifyRunArg(arg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if target.kind == runDisk {
		if wantArtifact {
			return nil, fmt.Errorf("%s: %s is a disk; nodes upgrade to an update artifact: give the directory slate build --artifact wrote, or the image to build", what, arg)
		}
		return &nodetest.Image{Disk: arg, Format: target.format}, nil
	}
	fmt.Fprintf(os.Stderr, "slate test: building %s from %s\n", what, arg)
	res, err := buildForVM(ctx, arg, dir, insecure, os.Stderr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &nodetest.Image{Disk: res.Disk, Format: "raw", Artifact: res.Artifact}, nil
}

// isUpdateArtifact says whether dir is an OCI layout holding an update
// artifact (rather than an image to build).
func isUpdateArtifact(dir string) bool {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return false
	}
	_, err := artifact.Open("oci:" + dir)
	return err == nil
}

func writeJUnit(path string, rep *nodetest.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--junit: %w", err)
	}
	if err := rep.WriteJUnit(f); err != nil {
		f.Close()
		return fmt.Errorf("--junit: %w", err)
	}
	return f.Close()
}

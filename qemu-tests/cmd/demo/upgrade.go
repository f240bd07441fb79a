package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/vm"
)

// serve pushes the artifact, and the extension in ext if not "", to a
// registry on 127.0.0.1 and returns their references there.
func serve(dir, ext string) (ref, extRef, version string, stop func(), err error) {
	a, err := artifact.Open("oci:" + dir)
	if err != nil {
		return "", "", "", nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", "", nil, err
	}
	srv := httptest.NewUnstartedServer(registry.New(registry.Logger(discardLogger())))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	ref = l.Addr().String() + "/slate/demo:" + a.Config.Version
	if _, err := artifact.Push(dir, ref, artifact.Insecure()); err != nil {
		srv.Close()
		return "", "", "", nil, err
	}
	if ext != "" {
		p, err := artifact.Push(ext, l.Addr().String()+"/slate/extensions", artifact.Insecure())
		if err != nil {
			srv.Close()
			return "", "", "", nil, err
		}
		extRef = p.Ref.String()
	}
	return ref, extRef, a.Config.Version, srv.Close, nil
}

// guestRef is ref as the guest reaches the host through QEMU user networking.
func guestRef(ref string) string { return strings.Replace(ref, "127.0.0.1:", "10.0.2.2:", 1) }

// demoScript runs on the node at every boot (a unit from the node config):
// on the first version it shows the status (the upgrade is the node's own:
// slate-upgrade.timer, enabled by the config, runs after this script); on
// the new one it waits for the boot to be blessed, shows the status and
// powers off.
const demoScript = `#!/bin/sh
v=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' /run/slate/boot.json)
echo "slate-demo: running $v"
command -v demo-hello >/dev/null && echo "slate-demo: $(demo-hello)"
i=0
while [ $i -lt 600 ]; do
	systemctl is-active -q slate-health.service && break
	systemctl is-failed -q slate-health.service && break
	sleep 1; i=$((i+1))
done
if [ "$v" != "%[1]s" ]; then
	slate status
	echo "slate-demo: slate-upgrade.timer will upgrade from update.source in the node config"
else
	i=0
	while [ $i -lt 120 ] && ! systemctl is-active -q systemd-bless-boot.service; do sleep 1; i=$((i+1)); done
	slate status
	echo "slate-demo: done"
	systemctl poweroff
fi
`

// nodeConfig is the demo node's config: update from ref, merge the
// extension extRef if not "", and, if pubKey is not empty, trust it too,
// beside the keys the image trusts.
func nodeConfig(ref, extRef, version, pubKey string) string {
	indentBy := func(n int, s string) string {
		p := strings.Repeat(" ", n)
		return p + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+p) + "\n"
	}
	indent := func(s string) string { return indentBy(8, s) }
	key := ""
	if pubKey != "" {
		key = "  publicKey: |\n" + indentBy(4, pubKey)
	}
	ext := ""
	if extRef != "" {
		ext = "extensions:\n  - " + extRef + "\n"
	}
	return `apiVersion: slate.dev/v1alpha1
kind: NodeConfig
hostname: slate-demo
network:
  - name: 10-dhcp.network
    contents: |
      [Match]
      Name=en*
      [Network]
      DHCP=yes
update:
  source: ` + ref + `
  insecure: true
` + key + ext + `health:
  requiredUnits: [systemd-networkd.service]
  timeout: 3m
files:
  - path: /etc/slate-demo.sh
    mode: "0755"
    contents:
      text: |
` + indent(fmt.Sprintf(demoScript, version)) + `systemd:
  units:
    - name: systemd-networkd.service
      enabled: true
    # Unattended updates, as in configs/node/updates.yaml; for the demo the
    # timer fires at boot rather than 5 minutes in, after the demo script.
    - name: slate-upgrade.timer
      enabled: true
      dropins:
        - name: 10-demo.conf
          contents: |
            [Timer]
            OnBootSec=
            OnBootSec=1s
            RandomizedDelaySec=0
    - name: slate-upgrade.service
      dropins:
        - name: 10-demo.conf
          contents: |
            [Unit]
            After=slate-demo.service
    - name: slate-demo.service
      enabled: true
      contents: |
        [Unit]
        Description=slate demo: show the status
        After=multi-user.target slate-health.service
        [Service]
        Type=oneshot
        ExecStart=/etc/slate-demo.sh
        StandardOutput=journal+console
        StandardError=journal+console
        [Install]
        WantedBy=multi-user.target
`
}

func upgradeDemo(ctx context.Context, cfg vm.Config, quiet bool, version string, signed, ext bool) error {
	if !quiet {
		cfg.Console = os.Stdout
	}
	say("booting the node (software emulation: each boot takes about a minute)")
	start := time.Now()
	m, err := vm.StartContext(ctx, cfg)
	if err != nil {
		return err
	}
	defer m.Close()
	steps := []struct {
		pattern, says string
		timeout       time.Duration
	}{
		{`slate-init: slot a, image version`, "", 3 * time.Minute},
		{`slate-sysext: \S+ \(demo-tools\) .* merged from the node's store`, "the node fetched the extension its config names, checked its signature, verified every block with dm-verity and merged it into /usr", 4 * time.Minute},
		{`slate health: slot a .* is healthy`, "slot A is healthy; slate-upgrade.timer (enabled by the node config) upgrades it from the registry in its config", 4 * time.Minute},
		{`upgrade: .* is signed by key`, "its signature matches a key the node trusts: the one its image was built with (slate build --update-key)", 3 * time.Minute},
		{`upgrade: writing root of slot b`, "", 3 * time.Minute},
		{`upgrade: slot b holds`, "slot B written and verified; rebooting into it with 3 tries", 5 * time.Minute},
		{`slate-init: slot b, image version "` + regexp.QuoteMeta(version) + `"`, "", 4 * time.Minute},
		{`slate-sysext: \S+ \(demo-tools\) .* merged from the node's store`, "slot B booted with the extension merged: the upgrade fetched the build for the new image before it wrote the slot", 3 * time.Minute},
		{`slate health: slot b .* is healthy`, "the new version passed its health check; systemd-bless-boot marks it good", 4 * time.Minute},
		{`slate-demo: done`, "", 4 * time.Minute},
	}
	for _, s := range steps {
		if !signed && strings.Contains(s.pattern, "signed by") || !ext && strings.Contains(s.pattern, "slate-sysext") {
			continue
		}
		if _, err := m.Expect(regexp.MustCompile(s.pattern), vm.Scale(s.timeout)); err != nil {
			return err
		}
		if s.says != "" {
			say("%s (%.0fs)", s.says, time.Since(start).Seconds())
		}
	}
	exit, err := m.WaitExit(vm.ShutdownTimeout)
	if err != nil {
		m.Quit()
		return fmt.Errorf("the node did not power off: %w", err)
	}
	say("done in %.0fs: the node upgraded itself from %s to %s; the VM ended (%s)", time.Since(start).Seconds(), "slot A", "slot B", exit.Reason)
	fmt.Println("    run `make run` for a console; `slate status`, `slate rollback` and `slate upgrade` are on every node.")
	return nil
}

func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }

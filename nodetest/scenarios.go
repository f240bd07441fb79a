package nodetest

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/slate-os/slate/agent/status"
	"github.com/slate-os/slate/boot/nodeconfig"
)

var scenarios = []scenario{
	{name: "boot", description: "V1 reaches multi-user with no failed unit, its health check good, the root read-only, /etc ephemeral and /var kept across a reboot", run: bootScenario},
	{name: "config", description: "the node config applies (hostname, files, directories, links, units), and an invalid one applies nothing", run: configScenario},
	{name: "upgrade", description: "V1 upgrades to V2 from a registry, V2 passes its health check and is blessed, /var is kept; slate rollback then goes back to V1 and forth to V2", needsTo: true, run: upgradeScenario},
	{name: "rollback", description: "V2 made to fail its health check (a unit the config breaks on slot b) is rolled back to V1 by boot counting, its cause recorded", needsTo: true, run: rollbackScenario},
	{name: "powercut", description: "the power is cut during the root write, during the ESP writes and after the boot entry: every boot comes up on a good slot, and the node ends on V2", needsTo: true, run: powercutScenario},
	{name: "tamper", description: "a byte of the slot V2 was written to is changed: dm-verity refuses it at every try, and the node goes back to V1, never serving from it", needsTo: true, run: tamperScenario},
}

// config is the test config for the scenario's needs.
func (s *session) config(o configOpts) ([]byte, error) {
	if o.source == "" && s.reg != nil {
		o.source, o.key = s.v2Source, s.reg.publicKey
	}
	return testConfig(s.user, o)
}

// script is one boot's script: the probe, the user's checks, then what the
// scenario does on that boot.
func (s *session) script(then string) string {
	return probe + checksScript(s.o.Checks) + then
}

// A file on /var, written once and checked after.
const (
	writeKept = "mkdir -p /var/lib/slate-test && head -c 1048576 /dev/urandom > /var/lib/slate-test/kept && sync\nvarsum\n"
	etcMark   = "/etc/slate-test-ephemeral"
)

func bootScenario(ctx context.Context, s *session) error {
	cfg, err := s.config(configOpts{})
	if err != nil {
		return err
	}
	n, err := s.start(ctx, "", cfg, s.script(writeKept+"touch "+etcMark+thenReboot))
	if err != nil {
		return err
	}
	first, err := n.wait(exitTimeout)
	if err != nil {
		return err
	}
	if err := s.healthy(first); err != nil {
		return err
	}
	if first.Exit.Reason != "guest-reset" {
		return fmt.Errorf("%s ended with %s, want the reboot its script asked for", first, first.Exit)
	}
	if err := n.next(s.script("echo \"ETCMARK=$(test -e "+etcMark+" && echo kept || echo gone)\"\nvarsum\n"+thenPoweroff), nil); err != nil {
		return err
	}
	second, err := n.wait(exitTimeout)
	if err != nil {
		return err
	}
	if err := s.healthy(second); err != nil {
		return err
	}
	if first.Slot != second.Slot {
		return fmt.Errorf("the reboot changed slots: %s, then %s", first, second)
	}
	if got := second.Script.Get("ETCMARK"); got != "gone" {
		return fmt.Errorf("%s: a file written to /etc on the boot before is %s: /etc is not ephemeral (mounted as %q)", second, got, second.Script.Get("ETC"))
	}
	sum := first.Script.Get("VARSUM")
	if len(sum) != 64 || second.Script.Get("VARSUM") != sum {
		return fmt.Errorf("/var/lib/slate-test/kept: sha256 %q before the reboot, %q after: /var is not kept", sum, second.Script.Get("VARSUM"))
	}
	s.note("slot %s (%s): health good, root read-only, /etc %s and emptied at reboot, /var kept", second.Slot, second.Version, second.Script.Get("ETC"))
	return nil
}

// configScript checks on the node what the user's config asked for, as
// KEY=value lines configProblems reads.
func configScript(c *nodeconfig.Config) string {
	if c == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString("echo \"HOSTNAME=$(cat /etc/hostname)\"\n")
	for i, f := range c.Files {
		fmt.Fprintf(&b, "echo \"FILE-%d=$(sha256sum < %s 2>&1 | cut -d' ' -f1)\"\n", i, shQuote(f.Path))
	}
	for i, d := range c.Directories {
		fmt.Fprintf(&b, "echo \"DIR-%d=$(test -d %s && echo yes)\"\n", i, shQuote(d.Path))
	}
	for i, l := range c.Links {
		fmt.Fprintf(&b, "echo \"LINK-%d=$(readlink %s)\"\n", i, shQuote(l.Path))
	}
	for i, u := range c.Systemd.Units {
		fmt.Fprintf(&b, "echo \"UNIT-%d=$(systemctl is-enabled %s 2>&1)\"\n", i, shQuote(u.Name))
	}
	return b.String()
}

func configProblems(c *nodeconfig.Config, r *scriptResult) []string {
	var p []string
	if c.Hostname != "" && r.Get("HOSTNAME") != c.Hostname {
		p = append(p, fmt.Sprintf("hostname %q, want %q", r.Get("HOSTNAME"), c.Hostname))
	}
	for i, f := range c.Files {
		want := sha256Hex(contents(f.Contents))
		if got := r.Get(fmt.Sprintf("FILE-%d", i)); got != want {
			p = append(p, fmt.Sprintf("%s: sha256 %q, want %s", f.Path, got, want))
		}
	}
	for i, d := range c.Directories {
		if r.Get(fmt.Sprintf("DIR-%d", i)) != "yes" {
			p = append(p, d.Path+": no directory")
		}
	}
	for i, l := range c.Links {
		if got := r.Get(fmt.Sprintf("LINK-%d", i)); got != l.Target {
			p = append(p, fmt.Sprintf("%s: links to %q, want %q", l.Path, got, l.Target))
		}
	}
	for i, u := range c.Systemd.Units {
		got := r.Get(fmt.Sprintf("UNIT-%d", i))
		switch {
		case u.Masked && !strings.HasPrefix(got, "masked"):
			p = append(p, fmt.Sprintf("%s is %s, want masked", u.Name, got))
		case !u.Masked && u.Enabled != nil && *u.Enabled && got != "enabled" && got != "static":
			p = append(p, fmt.Sprintf("%s is %s, want enabled", u.Name, got))
		case !u.Masked && u.Enabled != nil && !*u.Enabled && got == "enabled":
			p = append(p, fmt.Sprintf("%s is enabled, want disabled", u.Name))
		}
	}
	return p
}

var loginRe = regexp.MustCompile(`(\S+) login:`)

func configScenario(ctx context.Context, s *session) error {
	cfg, err := s.config(configOpts{})
	if err != nil {
		return err
	}
	// The config as the node got it: the user's with the runner.
	full, err := nodeconfig.Parse(cfg)
	if err != nil {
		return err
	}
	n, err := s.start(ctx, "valid", cfg, s.script(configScript(full)+thenPoweroff))
	if err != nil {
		return err
	}
	b, err := n.wait(exitTimeout)
	if err != nil {
		return err
	}
	if err := s.healthy(b); err != nil {
		return err
	}
	rec, err := b.record()
	if err != nil {
		return err
	}
	if rec.Config == nil || !rec.Config.Applied {
		return fmt.Errorf("%s: the boot record says the config was not applied: %+v", b, rec.Config)
	}
	if p := configProblems(full, b.Script); len(p) > 0 {
		return fmt.Errorf("%s: the config did not apply as written: %s", b, strings.Join(p, "; "))
	}
	s.note("config from %s applied (sha256 %.12s): %d files, %d units as asked", rec.Config.Source, rec.Config.SHA256, len(full.Files), len(full.Systemd.Units))

	// An invalid config: the node must boot on the image's defaults. The
	// runner comes with the config, so this boot is judged from the
	// console: the init's verdict, then the login prompt of a node that
	// did not take the config's hostname.
	bad, err := s.config(configOpts{invalid: true})
	if err != nil {
		return err
	}
	n2, err := s.start(ctx, "invalid", bad, "")
	if err != nil {
		return err
	}
	mt, err := n2.expect(regexp.MustCompile(`nothing applied`), bootTimeout)
	if err != nil {
		return fmt.Errorf("an invalid config: the init did not say it applied nothing: %w", err)
	}
	refused := strings.TrimSpace(mt.Line)
	mt, err = n2.expect(loginRe, bootTimeout)
	if err != nil {
		return fmt.Errorf("an invalid config: no login prompt on the serial console after the init refused it (%s): %w", refused, err)
	}
	host := mt.Groups[1]
	b2, err := n2.cut()
	if err != nil {
		return err
	}
	if host == invalidHostname {
		return fmt.Errorf("%s: the node took the hostname of a config it refused", b2)
	}
	if b2.Slot != b.Slot {
		return fmt.Errorf("%s, want the slot the valid config booted (%s)", b2, b.Slot)
	}
	s.note("invalid config: %q, then a login prompt as %s", refused, host)
	return nil
}

// upgradeBoot boots V1 on a new machine and upgrades it to V2 from the
// registry; it returns V1's boot (which the agent ended with a reboot).
func (s *session) upgradeBoot(ctx context.Context, n *node) (*bootRun, error) {
	first, err := n.wait(exitTimeout)
	if err != nil {
		return nil, err
	}
	if err := s.healthy(first); err != nil {
		return nil, err
	}
	if first.Script.Get("NET") != "up" {
		return nil, fmt.Errorf("%s: the network did not come up (no default route)", first)
	}
	// The agent asked for a reboot when it exits 0; the script goes on
	// until systemd stops it.
	if code := first.Script.Get("UPGRADE-EXIT"); code != "" && code != "0" {
		return nil, fmt.Errorf("%s: slate upgrade exited %s:\n%s", first, code, tail(first.Script.Lines, 25))
	}
	if first.Exit.Reason != "guest-reset" {
		return nil, fmt.Errorf("%s ended with %s, want the agent's reboot after the upgrade", first, first.Exit)
	}
	return first, nil
}

const upgradeScript = "waitnet\nagent UPGRADE slate upgrade\n"

func upgradeScenario(ctx context.Context, s *session) error {
	cfg, err := s.config(configOpts{})
	if err != nil {
		return err
	}
	t0 := time.Now()
	n, err := s.start(ctx, "", cfg, s.script(writeKept+upgradeScript))
	if err != nil {
		return err
	}
	first, err := s.upgradeBoot(ctx, n)
	if err != nil {
		return err
	}
	sum := first.Script.Get("VARSUM")
	// Each later boot checks /var and, but for the last, switches slots.
	rollback := "varsum\nagent ROLLBACK slate rollback\n"
	steps := []struct {
		slot, version, then string
	}{
		{"b", s.v2, rollback},
		{"a", first.Version, rollback},
		{"b", s.v2, "varsum\n" + thenPoweroff},
	}
	for i, st := range steps {
		if err := n.next(s.script(st.then), nil); err != nil {
			return err
		}
		b, err := n.wait(exitTimeout)
		if err != nil {
			return err
		}
		if err := b.on(st.slot, st.version); err != nil {
			return err
		}
		if err := s.healthy(b); err != nil {
			return err
		}
		if got := b.Script.Get("VARSUM"); got != sum {
			return fmt.Errorf("%s: /var/lib/slate-test/kept has sha256 %q, want %q as written on V1", b, got, sum)
		}
		stat, err := b.status()
		if err != nil {
			return err
		}
		for _, sl := range []string{"a", "b"} {
			if i := slotInfo(stat, sl); i == nil || i.State != "good" {
				return fmt.Errorf("%s: slot %s is %s, want good", b, sl, describeSlot(i))
			}
		}
		if code := b.Script.Get("ROLLBACK-EXIT"); code != "" && code != "0" {
			return fmt.Errorf("%s: slate rollback exited %s:\n%s", b, code, tail(b.Script.Lines, 25))
		}
		if i == 0 {
			s.note("V1 → V2: upgraded and blessed in %s (two boots)", time.Since(t0).Round(time.Second))
			if r := slotInfo(stat, "b").Release; r != nil && r.SignedBy != "" {
				s.note("V2 in slot b: artifact %s, signed by %s", short(r.Artifact), r.SignedBy)
			}
		}
	}
	s.note("slate rollback: V2 → V1 → V2, /var kept throughout")
	return nil
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func rollbackScenario(ctx context.Context, s *session) error {
	cfg, err := s.config(configOpts{breakV2: true})
	if err != nil {
		return err
	}
	n, err := s.start(ctx, "", cfg, s.script(upgradeScript))
	if err != nil {
		return err
	}
	first, err := s.upgradeBoot(ctx, n)
	if err != nil {
		return err
	}
	// The trial boots of V2 fail their health check and reboot; after the
	// image's tries, systemd-boot boots V1 again, which powers off.
	b, trials, err := n.backToV1(first, func(b *bootRun) error {
		if b.Exit.Reason != "guest-reset" {
			return fmt.Errorf("%s (unhealthy on purpose) ended with %s, want a reboot", b, b.Exit)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if trials == 0 {
		return fmt.Errorf("%s came right after the upgrade: slot b never booted", b)
	}
	if err := s.healthy(b); err != nil {
		return err
	}
	st, err := b.status()
	if err != nil {
		return err
	}
	if i := slotInfo(st, "b"); i == nil || i.State != "bad" {
		return fmt.Errorf("%s: slot b is %s, want bad", b, describeSlot(i))
	}
	rb := st.LastRollback
	if rb == nil || rb.FromSlot != "b" || rb.ToSlot != "a" {
		return fmt.Errorf("%s: status shows no rollback from slot b to slot a: %+v", b, rb)
	}
	if !strings.Contains(rb.Cause, brokenUnit) {
		return fmt.Errorf("%s: the rollback's cause %q does not name %s", b, rb.Cause, brokenUnit)
	}
	s.note("V2 failed its health check %d times, then V1 ran again; cause: %s", trials, rb.Cause)
	return nil
}

// powercutScenario runs the upgrades unattended, as a fleet does: the
// config enables slate-upgrade.timer, firing 1 s after boot (after the
// runner has printed the node's state), so every boot after a cut retries
// by itself.
func powercutScenario(ctx context.Context, s *session) error {
	cfg, err := s.config(configOpts{unattended: true})
	if err != nil {
		return err
	}
	cuts := []struct {
		name, line string
		// after: the root write cut waits a little, so that it lands
		// among written blocks rather than before the first one.
		after time.Duration
	}{
		{"during the root write", "upgrade: writing root of slot b", time.Second},
		{"during the ESP writes", "upgrade: writing kernel and initramfs of slot b", 0},
		{"after the boot entry", "upgrade: slot b holds", 0},
	}
	script := s.script("")
	var n *node
	for i, c := range cuts {
		if i == 0 {
			n, err = s.start(ctx, "", cfg, script)
		} else {
			err = n.next("", nil)
		}
		if err != nil {
			return err
		}
		re := regexp.MustCompile(regexp.QuoteMeta(c.line) + `|\bUPGRADE-EXIT=(\d+)`)
		mt, err := n.expect(re, upgradeTimeout)
		if err != nil {
			return fmt.Errorf("waiting to cut the power %s: %w", c.name, err)
		}
		if mt.Groups[1] != "" {
			b, _ := n.cut()
			return fmt.Errorf("%s: the unattended upgrade ended (%s) before the console showed %q:\n%s", b, mt.Line, c.line, tail(b.Lines, 25))
		}
		time.Sleep(c.after)
		b, err := n.cut()
		if err != nil {
			return err
		}
		if err := b.on("a", ""); err != nil {
			return fmt.Errorf("the boot cut %s: %w", c.name, err)
		}
		if i > 0 {
			// The boot after a cut before the entry: V1 again, healthy,
			// slot b without an entry.
			if err := s.healthy(b); err != nil {
				return fmt.Errorf("after the cut %s: %w", cuts[i-1].name, err)
			}
			if err := slotState(b, "b", "empty"); err != nil {
				return fmt.Errorf("after the cut %s: %w", cuts[i-1].name, err)
			}
		}
	}
	// The entry was written and synced before the last cut: slot B boots
	// on trial, passes its health check and is blessed. Then the timer's
	// upgrade finds V2 running: a no-op, not a reboot loop.
	if err := n.next("", nil); err != nil {
		return err
	}
	if _, err := n.expect(regexp.MustCompile(`upgrade: already up to date`), bootTimeout); err != nil {
		b, _ := n.cut()
		return fmt.Errorf("after the last cut, %v: the unattended upgrade on V2: %w", b, err)
	}
	mt, err := n.expect(regexp.MustCompile(`UPGRADE-EXIT=(\d+)`), bootTimeout)
	b, cerr := n.cut()
	if cerr != nil {
		return cerr
	}
	if err != nil || mt.Groups[1] != "0" {
		return fmt.Errorf("%s: the unattended upgrade on V2 ended: %q %v, want exit 0", b, mt.Line, err)
	}
	if err := b.on("b", s.v2); err != nil {
		return fmt.Errorf("after the cut after the boot entry: %w", err)
	}
	if err := s.healthy(b); err != nil {
		return err
	}
	if err := slotState(b, "b", "good"); err != nil {
		return err
	}
	s.note("3 power cuts, each followed by a good boot that retried the upgrade by itself; V2 blessed after the last, its own upgrade a no-op")
	return nil
}

// slotState checks the state status gives slot sl on boot b.
func slotState(b *bootRun, sl, state string) error {
	st, err := b.status()
	if err != nil {
		return err
	}
	if i := slotInfo(st, sl); i == nil || string(i.State) != state {
		return fmt.Errorf("%s: slot %s is %s, want %s", b, sl, describeSlot(i), state)
	}
	return nil
}

func describeSlot(i *status.Slot) string {
	if i == nil {
		return "missing from status"
	}
	v := "no release"
	if i.Release != nil {
		v = i.Release.Version
	}
	return fmt.Sprintf("%s (%s, generation %d, %d tries left)", i.State, v, i.Generation, i.TriesLeft)
}

// shQuote quotes s for sh.
func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// contents is a file's contents as the config gives them.
func contents(c *nodeconfig.Contents) []byte {
	switch {
	case c == nil:
		return nil
	case c.Text != nil:
		return []byte(*c.Text)
	case c.Base64 != nil:
		b, _ := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(*c.Base64), ""))
		return b
	}
	return nil
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// backToV1 boots slot b, on trial after an upgrade from V1, until V1 runs
// again: each boot of slot b goes to onB, at most 5. It returns V1's boot
// (which powers off once its script ran) and how many of slot b came
// before.
func (n *node) backToV1(first *bootRun, onB func(*bootRun) error) (*bootRun, int, error) {
	final := `if grep -qw slate.slot=a /proc/cmdline; then echo poweroff > /run/slate-test.after; fi`
	if err := n.next(n.s.script(final), nil); err != nil {
		return nil, 0, err
	}
	for trials := 0; ; trials++ {
		b, err := n.wait(exitTimeout)
		if err != nil {
			return nil, trials, err
		}
		if b.Slot != "b" {
			return b, trials, b.on("a", first.Version)
		}
		if err := onB(b); err != nil {
			return nil, trials, err
		}
		if trials >= 5 {
			return nil, trials, fmt.Errorf("%d boots of slot b and V1 never ran again", trials+1)
		}
		if err := n.next("", nil); err != nil {
			return nil, trials, err
		}
	}
}

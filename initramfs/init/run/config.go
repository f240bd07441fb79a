package run

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/boot/nodeconfig"
	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/initramfs/init/configsrc"
	"github.com/slate-os/slate/initramfs/init/klog"
	"github.com/slate-os/slate/internal/clip"
)

// ConfigTimeout bounds the whole search for a config; each source bounds
// its own waits well within it.
const ConfigTimeout = 30 * time.Second

// MaxConfigError caps a config's error in the record and on the console,
// so that the line "config from ... is invalid, nothing applied: ERROR"
// fits klog.MaxLine: a config may be megabytes long, and so may an error
// that quotes it.
const MaxConfigError = 768

// applyConfig is the config step: it takes the node config from the first
// source that has one (configsrc.Sources), parses it and applies it to
// /sysroot's /etc (the tmpfs overlay) and /run, so that systemd starts
// with it in place. Nothing about the config is fatal: an unreadable,
// invalid or unappliable config applies nothing (Apply is all or nothing),
// is reported in one console line and in the record, and the node boots
// on the image's defaults.
//
// A config that uses access.breakGlass taints the node: before its first
// write, configure records it on the state partition (mounted on
// /sysroot/var by the state step), where it stays until the node is
// re-imaged; every boot of a tainted node says so and puts the taint in
// the boot record.
//
// A cloud's metadata source may bring the network up (network.go); it is
// taken down before the step ends. What the platform said about the node
// goes in the record and PlatformFile, and its hostname is the node's when
// the config sets none (platformHostname).
func (in *initProc) applyConfig() error {
	detected := in.detectPlatform()
	env := &configsrc.Env{Cmdline: in.cmdline, DevicesSince: in.devicesSince, Logf: in.log.Infof,
		Platform: string(detected), Network: in.network}
	ctx, cancel := context.WithTimeout(configsrc.WithEnv(context.Background(), env), ConfigTimeout)
	defer cancel()
	rc, lines := configure(ctx, configsrc.Sources, sysroot, in.bindRun)
	in.networkDown()
	in.rec.Config = &rc
	taint, more := nodeTaint(sysroot, rc)
	in.rec.Taint = taint
	lines = append(lines, more...)
	if p := platformRecord(detected, env.Facts); p != nil {
		in.rec.Platform = p
		if env.Facts != nil {
			lines = append(lines, consoleLine{klog.LevelInfo, "platform " + p.String()})
		}
		if err := writePlatform(PlatformFile, p); err != nil {
			in.warn("platform: %v", err)
		}
		lines = append(lines, platformHostname(sysroot, rc, p)...)
	}
	for _, l := range lines {
		in.log.Log(l.level, "%s", l.msg)
	}
	return nil
}

// platformHostname writes the platform's hostname (p.Hostname) to root's
// /etc/hostname when the node's config did not set one (no config, a
// config refused, or one without a hostname), as nodeconfig.Apply writes a
// config's: one line, root-owned, mode 0644, replacing the image's. A name
// that is not a valid hostname is cut to its first label (GCE's fully
// qualified names may pass 64 characters), else skipped with a warning.
func platformHostname(root string, rc record.Config, p *record.Platform) []consoleLine {
	if p == nil || p.Hostname == "" || (rc.Applied && rc.Hostname != "") {
		return nil
	}
	valid := func(h string) bool {
		c := nodeconfig.Config{APIVersion: nodeconfig.APIVersion, Kind: nodeconfig.Kind, Hostname: h}
		return c.Validate() == nil
	}
	from := p.Name
	if from == "" {
		from = "the platform"
	}
	name := p.Hostname
	if !valid(name) {
		first, _, _ := strings.Cut(name, ".")
		if !valid(first) {
			return []consoleLine{{klog.LevelWarning, fmt.Sprintf("warning: the hostname %s from %s is not a valid hostname: not used", clip.Quote(name), from)}}
		}
		name = first
	}
	if err := writeHostname(root, name); err != nil {
		return []consoleLine{{klog.LevelWarning, fmt.Sprintf("warning: setting the hostname %s from %s: %v", name, from, err)}}
	}
	why := "the config sets none"
	if rc.Source == record.ConfigNone {
		why = "no node config"
	} else if !rc.Applied {
		why = "the config was not applied"
	}
	return []consoleLine{{klog.LevelInfo, fmt.Sprintf("hostname %s from %s (%s)", name, from, why)}}
}

// hostnameFile is the node path of the hostname file.
const hostnameFile = "/etc/hostname"

// writeHostname writes name to root's /etc/hostname, following a symlink
// there as Apply does, inside root and only to /etc or /run.
func writeHostname(root, name string) error {
	p := hostnameFile
	for hops := 0; ; hops++ {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			if err == nil && fi.IsDir() {
				return fmt.Errorf("%s is a directory", p)
			}
			break
		}
		if hops == 40 {
			return fmt.Errorf("%s: too many symlinks", hostnameFile)
		}
		target, err := os.Readlink(filepath.Join(root, p))
		if err != nil {
			return err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		p = filepath.Clean("/" + target)
	}
	dir := filepath.Dir(p)
	if dir != "/etc" && dir != "/run" && !strings.HasPrefix(dir, "/etc/") && !strings.HasPrefix(dir, "/run/") {
		return fmt.Errorf("%s leads to %s, outside /etc and /run", hostnameFile, p)
	}
	if fi, err := os.Lstat(filepath.Join(root, dir)); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s leads to %s, whose directory is not one", hostnameFile, p)
	}
	full := filepath.Join(root, p)
	tmp := full + ".slate-new"
	if err := os.WriteFile(tmp, []byte(name+"\n"), 0o644); err != nil {
		return err
	}
	err := os.Chmod(tmp, 0o644) // whatever the umask
	if err == nil {
		if err = os.Lchown(tmp, 0, 0); err != nil && os.Geteuid() != 0 {
			err = nil // tests, not as root
		}
	}
	if err == nil {
		err = os.Rename(tmp, full)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// nodeTaint reads the node's taint from root's state partition and says,
// on a boot whose own config did not taint it, that the node is tainted.
func nodeTaint(root string, rc record.Config) (*record.Taint, []consoleLine) {
	t, err := record.ReadTaint(filepath.Join(root, record.TaintFile))
	if err != nil {
		return nil, []consoleLine{{klog.LevelWarning, fmt.Sprintf("warning: this node is tainted: its taint record is unreadable: %s", singleLine(err.Error()))}}
	}
	if t == nil || rc.Tainted {
		return t, nil
	}
	return t, []consoleLine{{klog.LevelWarning, fmt.Sprintf(
		"warning: this node is tainted %s (access.breakGlass): it stays so until it is re-imaged", t)}}
}

// bindRun makes the /run tmpfs visible at /sysroot/run while the config is
// applied (until switchRoot moves it there, the image's /run is an empty
// directory on the read-only root). The returned function undoes it.
func (in *initProc) bindRun() (func(), error) {
	dst := filepath.Join(sysroot, "run")
	if _, err := mount.Mount("/run", dst, "", "", unix.MS_BIND); err != nil {
		return nil, fmt.Errorf("binding /run to %s: %w", dst, err)
	}
	return func() {
		if err := unix.Unmount(dst, 0); err != nil {
			if err2 := unix.Unmount(dst, unix.MNT_DETACH); err2 != nil {
				in.warn("unmounting the bind of /run on %s: %v", dst, err)
			}
		}
	}, nil
}

// consoleLine is a line for the console and the kernel log.
type consoleLine struct {
	level int
	msg   string
}

// configure fetches, parses and applies the node config to root and says
// what happened: the record's config section and the lines to log. With
// prepare (nil in tests), root is made ready for Apply just before it and
// restored after. A breakGlass config is applied only once root's
// record.TaintFile (on the state partition) says the node is tainted.
func configure(ctx context.Context, srcs []configsrc.Source, root string, prepare func() (func(), error)) (record.Config, []consoleLine) {
	env := configsrc.EnvFrom(ctx)
	ctx = configsrc.WithEnv(ctx, env) // so that Location comes back
	name, data, err := configsrc.First(ctx, srcs)
	if errors.Is(err, configsrc.ErrNotFound) {
		return record.Config{Source: record.ConfigNone}, []consoleLine{{klog.LevelInfo, fmt.Sprintf(
			"no node config found (looked in %s): booting with the image's defaults",
			strings.Join(configsrc.Names(srcs), ", "))}}
	}
	rc := record.Config{Source: name, Location: env.Location}
	if name == "" { // the search itself was cut short
		rc.Source = record.ConfigNone
	}
	fail := func(stage, what string, err error) (record.Config, []consoleLine) {
		rc.Failed = stage
		rc.Error = clip.String(singleLine(err.Error()), MaxConfigError)
		return rc, []consoleLine{{klog.LevelErr, fmt.Sprintf("%s, nothing applied: %s", what, rc.Error)}}
	}
	if err != nil {
		return fail(record.ConfigFailedRead, fmt.Sprintf("config from %s could not be read", rc.Source), err)
	}
	sum := sha256.Sum256(data)
	rc.SHA256 = hex.EncodeToString(sum[:])
	rc.Size = len(data)
	from := fmt.Sprintf("config from %s (sha256 %s)", name, rc.SHA256)

	c, err := nodeconfig.Parse(data)
	if err != nil {
		return fail(record.ConfigFailedParse, from+" is invalid", err)
	}
	// Break-glass that has expired grants nothing: the rest of the config
	// applies, so the node comes back as its config says without access.
	var expired []consoleLine
	if now := time.Now(); c.Access.Expired(now) {
		at := c.Access.Expires.UTC()
		rc.AccessExpired = &at
		c = c.WithoutAccess()
		expired = append(expired, consoleLine{klog.LevelWarning, fmt.Sprintf(
			"break-glass expired at %s (access.expires): the config is applied without its access", at.Format("2006-01-02 15:04:05Z"))})
	}
	if prepare != nil {
		undo, err := prepare()
		if err != nil {
			return fail(record.ConfigFailedApply, from+" could not be applied", err)
		}
		defer undo()
	}
	// breakGlass: the taint is on the state partition before the config
	// can take effect, or the config is not applied. A node tainted
	// before stays so even if the record cannot be updated.
	var notes []consoleLine
	taintErr := false
	markTaint := func(a *nodeconfig.Applied) error {
		if !a.Tainted {
			return nil
		}
		p := filepath.Join(root, record.TaintFile)
		if _, err := record.MarkTainted(p, time.Now().UTC(), rc.SHA256, name); err != nil {
			if t, _ := record.ReadTaint(p); t != nil {
				notes = append(notes, consoleLine{klog.LevelWarning, fmt.Sprintf("warning: updating the taint record %s: %v (the node was tainted already)", record.TaintFile, err)})
				return nil
			}
			taintErr = true
			return fmt.Errorf("access.breakGlass: recording the taint in %s: %w: a breakGlass config is applied only on a node marked tainted", record.TaintFile, err)
		}
		return nil
	}
	a, err := c.ApplyWith(root, markTaint)
	if err != nil && taintErr {
		return fail(record.ConfigFailedApply, from+" could not be applied", err)
	}
	if err != nil {
		// Refused against the image's tree: a path through a symlink out
		// of /etc, an existing file without overwrite, an unknown owner.
		return fail(record.ConfigFailedApply, from+" is invalid for this image", err)
	}
	rc.Applied = true
	rc.Tainted = a.Tainted
	rc.Hostname = a.Hostname
	rc.Files = a.Files
	lines := []consoleLine{{klog.LevelInfo, from + " applied: " + summary(c, a)}}
	if a.Tainted {
		lines = append(lines, consoleLine{klog.LevelWarning, "warning: this node is tainted: its config sets access.breakGlass (kept in " +
			record.TaintFile + ": the node stays tainted until it is re-imaged)"})
	}
	return rc, append(append(lines, expired...), notes...)
}

// summary says in a few words what a config did:
// "hostname node-1, 3 files, 1 unit".
func summary(c *nodeconfig.Config, a *nodeconfig.Applied) string {
	var parts []string
	if a.Hostname != "" {
		parts = append(parts, "hostname "+a.Hostname)
	}
	if a.Timezone != "" {
		parts = append(parts, "timezone "+a.Timezone)
	}
	parts = append(parts, plural(len(a.Files), "file"))
	if n := len(c.Systemd.Units); n > 0 {
		parts = append(parts, plural(n, "unit"))
	}
	return strings.Join(parts, ", ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// singleLine keeps a (possibly joined) error on one console line.
func singleLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}

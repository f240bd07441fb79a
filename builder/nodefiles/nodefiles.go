// Package nodefiles is the layer the builder puts on top of every source
// image: what a node needs from slate besides the init, so the user's OS
// image needs nothing slate-specific beyond systemd and systemd-boot.
//
//   - /usr/bin/slate: the agent (the same binary as the slate CLI, built
//     static). It upgrades the node, rolls it back, reports its status and
//     judges each boot.
//   - /usr/lib/systemd/system/slate-health.service: runs `slate health` on
//     every boot, before boot-complete.target. systemd-bless-boot.service
//     runs after boot-complete.target, so a counted boot (slate-b+3.conf) is
//     marked good only once the health check passed; a bad boot makes the
//     agent reboot, spending a try, so systemd-boot's counting rolls back.
//     FailureAction=reboot is the backstop if the agent itself crashes or
//     hangs (TimeoutStartSec).
//   - .../boot-complete.target.requires/slate-health.service and
//     .../multi-user.target.wants/slate-health.service: the unit enabled at
//     build time (the root is read-only; there is no `systemctl enable` on
//     a node, and the unit has no [Install] so it cannot be disabled). The first ties the check to
//     boot-complete.target, which systemd-bless-boot-generator pulls in on
//     a counted boot; the second runs it on every boot, counted or not, and
//     on images without systemd-bless-boot, where the agent blesses the
//     entry itself.
//   - /usr/lib/systemd/system/slate-upgrade.service and .timer: unattended
//     updates, off unless the node config enables the timer. The service
//     runs `slate upgrade` (from update.source) only after this boot was
//     judged and, if on trial, blessed: a slot on trial is no fallback, and
//     an update that fails (registry down) must not fail the boot's check.
//     An image already running is a no-op, so the hourly timer reboots a
//     node only into a new image.
//   - /usr/lib/systemd/system/systemd-bless-boot.service.d/50-slate.conf:
//     systemd-bless-boot renames the boot entry on the ESP, which it looks
//     for at /efi, /boot or /boot/efi; slate mounts the ESP at
//     /run/slate/esp (`slate esp mount`) and points bless-boot there.
//   - /usr/lib/systemd/system/slate-sysext.service, enabled by
//     .../sysinit.target.wants/slate-sysext.service: runs `slate sysext
//     activate` early in sysinit (DefaultDependencies=no, after
//     local-fs.target, before systemd-sysext.service, sysinit.target and
//     systemd-tmpfiles-setup.service, as systemd-sysext.service itself is
//     ordered), so /usr is extended before the services that use it start.
//     It verifies the extensions the node config names, mounts them under
//     /run/extensions and runs systemd-sysext refresh (see
//     agent/extensions). It orders itself after nothing in sysinit but the
//     local file systems (the init mounted /var already), so it cannot
//     close an ordering cycle through sysinit.target; it never fails, so it
//     cannot fail a boot either: slate-health judges
//     health.requiredExtensions from its report.
//   - /usr/lib/systemd/system/slate-sysext-fetch.service: runs `slate
//     sysext fetch` once the network is online, which fetches the node
//     config's extension references that are not on the node yet and
//     activates them. Not enabled in the image: the init's node config
//     Apply enables it (in /etc, per boot) when the config names a
//     reference, so a node without one never waits for
//     network-online.target on its account.
//     multi-user.target waits for it, and slate-health after it, so a
//     fetched extension counts in this boot's health check. A registry
//     that cannot be reached does not fail the unit (ExecStart=-): the
//     extension is then missing, which only health.requiredExtensions
//     makes a bad boot.
//   - /usr/lib/systemd/system/slate-platform-ready.service, enabled by
//     .../multi-user.target.wants/slate-platform-ready.service: runs `slate
//     platform ready`, which on Azure reports the VM ready to the wire
//     server (without that report Azure fails the VM's provisioning as
//     timed out) and elsewhere does nothing (see agent/platform). It runs
//     only when the init detected a platform (ConditionPathExists on
//     /run/slate/platform.json), after network-online.target but without
//     wanting it, so it never pulls the network in on its own: the node
//     config's network (systemd-networkd and its wait-online) does, and
//     the agent's retries cover a network that comes up late. Its exit
//     status is ignored (ExecStart=-), so it cannot fail a boot;
//     multi-user.target, which wants it, waits for it (at most the agent's
//     two minutes when the wire server does not answer).
//   - /usr/lib/slate/image.json (boot.ImageInfo): the image's version, source
//     and creation time, and whether its spec allows unsigned updates
//     (update.allowUnsigned); /usr/lib/slate/update-keys/NN.pub: the public
//     keys its spec trusts for updates (update.publicKeys, --update-key),
//     PKIX PEM, 01.pub first. In the root, under dm-verity, they are as
//     trustworthy as the running image: the agent takes its update policy
//     and the running image's age (no downgrades) from them, not from the
//     ESP (see agent/upgrade). /usr/lib/slate/sbat-level.auth, in a Secure
//     Boot image: the signed payload that raises a node's revocation
//     level to its SBAT generation (see package secureboot).
//
// The layer is reproducible: sorted entries, owner 0:0, one modification
// time, the same bytes for the same agent binary, image and time.
package nodefiles

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slate-os/slate/boot"
)

// Paths in the root image, without a leading slash.
const (
	AgentPath       = "usr/bin/slate"
	UnitDir         = "usr/lib/systemd/system"
	HealthUnit      = UnitDir + "/slate-health.service"
	HealthRequires  = UnitDir + "/boot-complete.target.requires/slate-health.service"
	HealthWants     = UnitDir + "/multi-user.target.wants/slate-health.service"
	BlessBootDropIn = UnitDir + "/systemd-bless-boot.service.d/50-slate.conf"
	UpgradeUnit     = UnitDir + "/slate-upgrade.service"
	UpgradeTimer    = UnitDir + "/slate-upgrade.timer"
	SysextUnit      = UnitDir + "/slate-sysext.service"
	SysextWants     = UnitDir + "/sysinit.target.wants/slate-sysext.service"
	SysextFetchUnit = UnitDir + "/slate-sysext-fetch.service"
	PlatformUnit    = UnitDir + "/slate-platform-ready.service"
	LogshipUnit     = UnitDir + "/slate-logship.service"
	MetricsUnit     = UnitDir + "/slate-metrics.service"
	AccessUnit      = UnitDir + "/slate-access.service"
	AccessWants     = UnitDir + "/multi-user.target.wants/slate-access.service"
	// AccessLink is the target of slate-access.service's link.
	AccessLink    = "../slate-access.service"
	PlatformWants = UnitDir + "/multi-user.target.wants/slate-platform-ready.service"
	ImageInfo     = boot.ImageInfoFile
	UpdateKeysDir = boot.UpdateKeysDir
	// HealthLink is the target of both enabling symlinks.
	HealthLink = "../slate-health.service"
	// SysextLink is the target of slate-sysext.service's link.
	SysextLink = "../slate-sysext.service"
	// PlatformLink is the target of slate-platform-ready.service's link.
	PlatformLink = "../slate-platform-ready.service"
)

// HealthService is slate-health.service.
const HealthService = `[Unit]
Description=slate boot assessment
Documentation=https://github.com/slate-os/slate
# After multi-user.target, as systemd's own boot-check-no-failures: a target
# is ordered after what it wants, so without this multi-user.target would
# wait for the check and the check for it.
After=multi-user.target basic.target systemd-pstore.service systemd-journal-flush.service
Before=boot-complete.target
# No [Install]: the image enables it by the links beside it in /usr/lib, so
# it cannot be disabled, only masked.
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/slate health
StandardOutput=journal+console
StandardError=journal+console
# The agent reboots by itself when a counted boot is bad; this is the backstop if it crashes or hangs.
TimeoutStartSec=20min
FailureAction=reboot
`

// UpgradeService is slate-upgrade.service.
const UpgradeService = `[Unit]
Description=slate unattended update from update.source
Documentation=https://github.com/slate-os/slate
# Requires pulls in boot-complete.target, and so the health check, on every
# boot; it runs only once they passed, and after a counted boot was blessed.
Requires=boot-complete.target
After=boot-complete.target systemd-bless-boot.service network-online.target
Wants=network-online.target
[Service]
Type=oneshot
ExecStart=/usr/bin/slate upgrade
StandardOutput=journal+console
StandardError=journal+console
`

// UpgradeTimerUnit is slate-upgrade.timer: enabled by the node config
// (systemd.units: [{name: slate-upgrade.timer, enabled: true}]).
const UpgradeTimerUnit = `[Unit]
Description=slate unattended updates: look at update.source hourly
Documentation=https://github.com/slate-os/slate
[Timer]
OnBootSec=5min
OnUnitInactiveSec=1h
# Nodes of one fleet should not all reboot at once.
RandomizedDelaySec=15min
[Install]
WantedBy=timers.target
`

// SysextService is slate-sysext.service: ordered as systemd-sysext.service
// is, and before it, so that the extensions are in /run/extensions when it
// (or this unit's own refresh) merges.
const SysextService = `[Unit]
Description=slate system extensions: verify and merge the node config's extensions
Documentation=https://github.com/slate-os/slate
DefaultDependencies=no
After=local-fs.target
Before=systemd-sysext.service sysinit.target systemd-tmpfiles-setup.service
Conflicts=shutdown.target
Before=shutdown.target
# No [Install]: the image enables it by the link in sysinit.target.wants.
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/slate sysext activate
StandardOutput=journal+console
StandardError=journal+console
# Every extension is read once from end to end: a large one on a slow disk
# takes a while. The agent never fails the unit; this bounds a hang.
TimeoutStartSec=15min
`

// SysextFetchService is slate-sysext-fetch.service.
const SysextFetchService = `[Unit]
Description=slate system extensions: fetch the node config's extension references
Documentation=https://github.com/slate-os/slate
After=network-online.target slate-sysext.service
Wants=network-online.target
# multi-user.target waits for it too: slate-health judges
# health.requiredExtensions with what it fetched.
Before=slate-health.service
[Service]
Type=oneshot
# A registry out of reach leaves the extension missing, not the unit
# failed: only health.requiredExtensions makes that a bad boot.
ExecStart=-/usr/bin/slate sysext fetch
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=30min
# Enabled per boot by the node config's Apply when it names a reference
# (boot/nodeconfig): the image never pulls in network-online.target for it.
[Install]
WantedBy=multi-user.target
`

// LogshipService is slate-logship.service: it ships the journal, and the
// logs kept from boots that rolled back, to the node config's collector.
// Enabled per boot by the node config's Apply when the config names a
// collector. A collector that is down delays nothing: nothing waits for
// the unit. It starts once the boot's health check is done, so that the
// logs of the boots that rolled back go out from a boot that passed it
// (a boot on trial that fails reboots before). slate-health runs after
// multi-user.target, which wants this unit: without
// DefaultDependencies=no the target would also order itself after it,
// a cycle; the defaults it keeps are spelled out.
const LogshipService = `[Unit]
Description=slate: ship the journal to the node config's log collector
Documentation=https://github.com/slate-os/slate
DefaultDependencies=no
Requires=sysinit.target
After=sysinit.target basic.target network-online.target slate-health.service
Wants=network-online.target
Conflicts=shutdown.target
Before=shutdown.target
[Service]
ExecStart=/usr/bin/slate logs ship
Restart=always
RestartSec=5
[Install]
WantedBy=multi-user.target
`

// MetricsService is slate-metrics.service: the node's state as Prometheus
// metrics, served and/or written as a node_exporter textfile. Enabled per
// boot by Apply when the config sets metrics.listen or metrics.textfile.
const MetricsService = `[Unit]
Description=slate: the node's state as Prometheus metrics
Documentation=https://github.com/slate-os/slate
After=network.target
[Service]
ExecStart=/usr/bin/slate metrics serve
Restart=always
RestartSec=5
[Install]
WantedBy=multi-user.target
`

// AccessService is slate-access.service, enabled in the image: it records
// every interactive login (they taint the node) and ends break-glass at
// the config's access.expires.
const AccessService = `[Unit]
Description=slate: record logins, which taint the node, and end break-glass at its expiry
Documentation=https://github.com/slate-os/slate
[Service]
ExecStart=/usr/bin/slate access watch
Restart=always
RestartSec=5
StandardOutput=journal+console
StandardError=journal+console
# No [Install]: the image enables it by the link in multi-user.target.wants.
`

// PlatformReadyService is slate-platform-ready.service.
const PlatformReadyService = `[Unit]
Description=slate: tell the cloud platform the node booted (Azure: report ready)
Documentation=https://github.com/slate-os/slate
# The init writes the file only when it detected a platform.
ConditionPathExists=/run/slate/platform.json
# After the network when something else brings it up; no Wants=, so that
# this unit never pulls network-online.target in on its own.
After=network-online.target
# No [Install]: the image enables it by the link in multi-user.target.wants.
[Service]
Type=oneshot
# A wire server out of reach must not fail the boot.
ExecStart=-/usr/bin/slate platform ready
StandardOutput=journal+console
StandardError=journal+console
# The agent gives up after two minutes; this bounds a hang.
TimeoutStartSec=5min
`

// BlessBootConf is the systemd-bless-boot.service drop-in.
const BlessBootConf = `[Service]
Environment=SYSTEMD_ESP_PATH=/run/slate/esp
ExecStartPre=/usr/bin/slate esp mount
`

// Image is what the layer says about the image it goes into.
type Image struct {
	// Info is written as image.json.
	Info boot.ImageInfo
	// UpdateKeys are PEM public keys, written as update-keys/01.pub, 02.pub...
	// in this order.
	UpdateKeys [][]byte
	// SBATLevel, if set, is written as boot.SBATLevelFile.
	SBATLevel []byte
}

// UpdateKeyPath is the path of the i-th (from 0) update key in the image.
func UpdateKeyPath(i int) string { return fmt.Sprintf("%s/%02d.pub", UpdateKeysDir, i+1) }

// Layer returns the layer that adds the agent at agentBinary, its units and
// im's files, every entry dated modTime (the source image's creation time,
// so the same inputs give the same root). The agent must be a static x86-64
// ELF executable (see CheckAgent).
func Layer(agentBinary string, modTime time.Time, im Image) (v1.Layer, error) {
	if err := CheckAgent(agentBinary); err != nil {
		return nil, err
	}
	agent, err := os.ReadFile(agentBinary)
	if err != nil {
		return nil, fmt.Errorf("agent binary: %w", err)
	}
	data, err := tarball(agent, im, modTime.UTC().Truncate(time.Second))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	return &layer{data: data, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}, nil
}

// UnitsLayer is Layer without the agent binary, dated the Unix epoch: the
// units and the directories a node config can refer to, for checking a
// config against an image offline (slate config check --image).
func UnitsLayer() v1.Layer {
	data, err := tarball(nil, Image{}, time.Unix(0, 0).UTC())
	if err != nil {
		panic(err) // constant input
	}
	sum := sha256.Sum256(data)
	return &layer{data: data, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
}

type entry struct {
	typ  byte
	mode int64
	body []byte
	link string
}

func tarball(agent []byte, im Image, mtime time.Time) ([]byte, error) {
	files := map[string]entry{
		ImageInfo:       {typ: tar.TypeReg, mode: 0o644, body: im.Info.Marshal()},
		HealthUnit:      {typ: tar.TypeReg, mode: 0o644, body: []byte(HealthService)},
		HealthRequires:  {typ: tar.TypeSymlink, mode: 0o777, link: HealthLink},
		HealthWants:     {typ: tar.TypeSymlink, mode: 0o777, link: HealthLink},
		BlessBootDropIn: {typ: tar.TypeReg, mode: 0o644, body: []byte(BlessBootConf)},
		UpgradeUnit:     {typ: tar.TypeReg, mode: 0o644, body: []byte(UpgradeService)},
		UpgradeTimer:    {typ: tar.TypeReg, mode: 0o644, body: []byte(UpgradeTimerUnit)},
		SysextUnit:      {typ: tar.TypeReg, mode: 0o644, body: []byte(SysextService)},
		SysextWants:     {typ: tar.TypeSymlink, mode: 0o777, link: SysextLink},
		SysextFetchUnit: {typ: tar.TypeReg, mode: 0o644, body: []byte(SysextFetchService)},
		PlatformUnit:    {typ: tar.TypeReg, mode: 0o644, body: []byte(PlatformReadyService)},
		PlatformWants:   {typ: tar.TypeSymlink, mode: 0o777, link: PlatformLink},
		LogshipUnit:     {typ: tar.TypeReg, mode: 0o644, body: []byte(LogshipService)},
		MetricsUnit:     {typ: tar.TypeReg, mode: 0o644, body: []byte(MetricsService)},
		AccessUnit:      {typ: tar.TypeReg, mode: 0o644, body: []byte(AccessService)},
		AccessWants:     {typ: tar.TypeSymlink, mode: 0o777, link: AccessLink},
	}
	if agent != nil {
		files[AgentPath] = entry{typ: tar.TypeReg, mode: 0o755, body: agent}
	}
	for i, k := range im.UpdateKeys {
		files[UpdateKeyPath(i)] = entry{typ: tar.TypeReg, mode: 0o644, body: k}
	}
	if im.SBATLevel != nil {
		files[boot.SBATLevelFile] = entry{typ: tar.TypeReg, mode: 0o644, body: im.SBATLevel}
	}
	// Every parent directory, so the layer stands on its own whatever the
	// image has; an image's own directory of the same name keeps its contents.
	for name := range files {
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			files[d] = entry{typ: tar.TypeDir, mode: 0o755}
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names) // a parent sorts before its children
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := files[n]
		h := &tar.Header{Typeflag: e.typ, Name: n, Mode: e.mode, Linkname: e.link, ModTime: mtime, Format: tar.FormatPAX}
		if e.typ == tar.TypeDir {
			h.Name += "/"
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("node files: %s: %w", n, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("node files: %s: %w", n, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("node files: %w", err)
	}
	return buf.Bytes(), nil
}

// layer is an uncompressed tar layer in memory (media type
// application/vnd.oci.image.layer.v1.tar): its digest is its diff ID, and
// nothing is compressed only for the builder to decompress it again.
type layer struct {
	data   []byte
	digest v1.Hash
}

func (l *layer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *layer) DiffID() (v1.Hash, error)            { return l.digest, nil }
func (l *layer) Size() (int64, error)                { return int64(len(l.data)), nil }
func (l *layer) MediaType() (types.MediaType, error) { return types.OCIUncompressedLayer, nil }
func (l *layer) Compressed() (io.ReadCloser, error)  { return l.Uncompressed() }
func (l *layer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.data)), nil
}

// CheckAgent refuses an agent binary the node cannot run: not an ELF file,
// not x86-64, not an executable, or dynamically linked (a PT_INTERP program
// header: the user's image may lack that loader or the libraries).
func CheckAgent(p string) error {
	const hint = "build slate with CGO_ENABLED=0 (make slate does), or give --agent PATH"
	f, err := elf.Open(p)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("agent binary: %w", err)
		}
		return fmt.Errorf("agent binary %s is not an ELF executable (%v); %s", p, err, hint)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("agent binary %s is for %s (%s), not %s: nodes are %s; build slate with GOARCH=%s CGO_ENABLED=0", p, f.Machine, f.Class, boot.ArchName, boot.Arch, boot.Arch)
	}
	switch f.Type {
	case elf.ET_EXEC:
	case elf.ET_DYN:
		// A static PIE is ET_DYN too; a shared library lacks DF_1_PIE.
		if flags, _ := f.DynValue(elf.DT_FLAGS_1); len(flags) == 0 || flags[0]&uint64(elf.DF_1_PIE) == 0 {
			return fmt.Errorf("agent binary %s is a shared library, not an executable; %s", p, hint)
		}
	default:
		return fmt.Errorf("agent binary %s is an ELF %s file, not an executable; %s", p, f.Type, hint)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			interp, _ := io.ReadAll(io.LimitReader(prog.Open(), 256))
			return fmt.Errorf("agent binary %s is dynamically linked (interpreter %s): the node's image may lack its libraries; %s",
				p, string(bytes.TrimRight(interp, "\x00")), hint)
		}
	}
	return nil
}

// Package record defines the boot record: what the init did on this boot,
// written as JSON to boot.BootRecord (/run/slate/boot.json) just before it
// switches root. The agent (slate status, slate health) and the QEMU tests
// read it. It imports only the standard library, internal/clip and
// internal/fsync (which import nothing else), so anything can link it.
//
// The node's taint (a config used access.breakGlass) is kept on the state
// partition, not in the record: see Taint.
package record

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/slate-os/slate/internal/clip"
	"github.com/slate-os/slate/internal/fsync"
)

// FormatVersion is the record's schema version; readers should refuse a
// newer major version.
const FormatVersion = 1

// Record is the init's account of one boot.
type Record struct {
	FormatVersion int `json:"format_version"`

	// Slot is the slot booted ("a" or "b"), from slate.slot.
	Slot string `json:"slot"`
	// Version is the image's version label, from slate.version.
	Version string `json:"version,omitempty"`
	// SBAT is the image's SBAT generation, from slate.sbat (0: none given;
	// the init checks it as 1 against the node's revocation level).
	SBAT int `json:"sbat,omitempty"`
	// RootHash is the dm-verity root hash from slate.roothash.
	RootHash string `json:"root_hash,omitempty"`
	// Verity is true when the root is mounted through dm-verity; false
	// means the root hash was only recorded, not enforced.
	Verity bool `json:"verity"`

	// RootPartUUID and StatePartUUID are the PARTUUIDs from the command
	// line; RootDevice and StateDevice the partitions found for them.
	RootPartUUID  string `json:"root_partuuid"`
	RootDevice    string `json:"root_device,omitempty"`
	StatePartUUID string `json:"state_partuuid"`
	StateDevice   string `json:"state_device,omitempty"`

	// Cmdline is the kernel command line as the init read it.
	Cmdline string `json:"cmdline"`
	// KernelRelease is uname -r.
	KernelRelease string `json:"kernel_release,omitempty"`
	// Modules are the modules the init loaded, in order (paths in the initramfs).
	Modules []string `json:"modules,omitempty"`

	// FirstBoot is true when this boot formatted the state partition.
	FirstBoot bool `json:"first_boot"`
	// StateGrown is true when this boot grew the state partition to the
	// end of the disk: on the first boot, or on any boot after the disk
	// grew (a resized cloud volume).
	StateGrown bool `json:"state_grown"`
	// StateFSGrown is true when this boot grew the state filesystem to
	// fill its partition, which had grown since the filesystem was made.
	StateFSGrown bool `json:"state_fs_grown,omitempty"`
	// StateSize is the state partition's size in bytes; StateFSSize the
	// size of its filesystem as df shows it, after any growing.
	StateSize   int64 `json:"state_size,omitempty"`
	StateFSSize int64 `json:"state_fs_size,omitempty"`
	// StatePopulated is true when this boot copied the image's /var onto state.
	StatePopulated bool `json:"state_populated,omitempty"`
	// StateFsck is e2fsck's exit status on this boot (-1: not run).
	StateFsck int `json:"state_fsck"`

	// Steps are the init's steps in the order they ran.
	Steps []Step `json:"steps"`
	// TotalMS is the time from the init's start to the record being written.
	TotalMS int64 `json:"total_ms"`

	// Config is what the init did with the node config on this boot; nil
	// when it did not get that far.
	Config *Config `json:"config,omitempty"`
	// Platform is the cloud the node runs on and what its metadata
	// service said; nil off the clouds.
	Platform *Platform `json:"platform,omitempty"`

	// Taint is the node's taint as the init left it on the state
	// partition (TaintFile) on this boot: nil when the node never booted
	// with a breakGlass config since it was imaged.
	Taint *Taint `json:"taint,omitempty"`

	// PreviousFailure is the init failure the boot(s) before this one
	// ended in (its Count says how many in a row), moved by this boot from
	// the EFI variable to the state partition (InitFailureDir); nil when
	// the previous boot did not fail in the init.
	PreviousFailure *InitFailure `json:"previous_failure,omitempty"`

	// Warnings are problems that did not stop the boot.
	Warnings []string `json:"warnings,omitempty"`
	// Error is the fatal error, if any (the init then reboots or stops:
	// see package initramfs/init/failpolicy).
	Error string `json:"error,omitempty"`
}

// ConfigNone is Config.Source when no source had a config: the node runs
// on the image's defaults.
const ConfigNone = "none"

// Stages at which a config failed (Config.Failed).
const (
	// ConfigFailedRead: the source had a config but it could not be read
	// (an I/O error, a malformed data: URL, a drive without the file).
	ConfigFailedRead = "read"
	// ConfigFailedParse: the config is invalid (Error names the field).
	ConfigFailedParse = "parse"
	// ConfigFailedApply: the config is valid but applying it failed
	// (a path through a symlink out of /etc, an I/O error).
	ConfigFailedApply = "apply"
)

// Config is the node config's outcome. A config is applied whole or not
// at all: Applied false with a Source other than ConfigNone means nothing
// of it was applied and Error says why.
// Platform is what a cloud's metadata service says about the node,
// recorded at every boot (and never its user data, which may hold
// secrets). Empty fields are unknown.
type Platform struct {
	// Name is the platform: ec2, gce, azure, openstack, nocloud.
	Name string `json:"name"`
	// InstanceID is the platform's id of this machine (i-0123..., the
	// GCE numeric id, the Azure vmId, the OpenStack uuid).
	InstanceID string `json:"instance_id,omitempty"`
	// Region and Zone: us-east-1 and us-east-1a; GCE's zone and the
	// region it is in; Azure's location and zone.
	Region string `json:"region,omitempty"`
	Zone   string `json:"zone,omitempty"`
	// InstanceType is the machine type or size (m6i.large, e2-medium,
	// Standard_D2s_v5, the flavor).
	InstanceType string `json:"instance_type,omitempty"`
	// Hostname is the platform's name for the node; the node's hostname
	// when its config sets none.
	Hostname string `json:"hostname,omitempty"`
	// UserData says whether the platform had user data for the node, and
	// whether it was a slate node config.
	UserData string `json:"user_data,omitempty"`
}

// String is the platform's facts on one line, for the console:
// "ec2: instance i-0123, zone eu-west-3a (eu-west-3), type m6i.large,
// hostname ip-10-0-0-5, user data: slate node config".
func (p Platform) String() string {
	var parts []string
	add := func(label, v string) {
		if v != "" {
			parts = append(parts, label+" "+v)
		}
	}
	add("instance", p.InstanceID)
	switch {
	case p.Zone != "" && p.Region != "":
		add("zone", p.Zone+" ("+p.Region+")")
	case p.Zone != "":
		add("zone", p.Zone)
	default:
		add("region", p.Region)
	}
	add("type", p.InstanceType)
	add("hostname", p.Hostname)
	if p.UserData != "" {
		parts = append(parts, "user data: "+p.UserData)
	}
	if len(parts) == 0 {
		return p.Name
	}
	return p.Name + ": " + strings.Join(parts, ", ")
}

type Config struct {
	// Source is the name of the source the config came from (cmdline,
	// fw_cfg, config-drive, ...) or ConfigNone.
	Source string `json:"source"`
	// Location is where in the source: the kernel argument, the fw_cfg
	// entry, the config drive's device.
	Location string `json:"location,omitempty"`
	// SHA256 is the hex SHA-256 of the config's bytes as read; "" when
	// none were read. Size is their length.
	SHA256 string `json:"sha256,omitempty"`
	Size   int    `json:"size,omitempty"`
	// Applied is true when the whole config was applied.
	Applied bool `json:"applied"`
	// Failed is the stage that failed (ConfigFailedRead, ...Parse,
	// ...Apply); Error the reason, naming the field's path when the
	// config is at fault.
	Failed string `json:"failed,omitempty"`
	Error  string `json:"error,omitempty"`
	// Tainted is true when this boot's config was applied and set
	// breakGlass: access credentials were accepted and the node is no
	// longer pristine. The node stays tainted on later boots, whatever
	// their config: see Record.Taint.
	Tainted bool `json:"tainted"`
	// AccessExpired is set when the config's break-glass had expired
	// (access.expires) at boot: it was applied without its access.
	AccessExpired *time.Time `json:"accessExpired,omitempty"`
	// Hostname is the hostname the config set, "" if none.
	Hostname string `json:"hostname,omitempty"`
	// Files are the files the config wrote, absolute paths on the node.
	Files []string `json:"files,omitempty"`
}

// Step is one timed step of the init.
type Step struct {
	Name       string `json:"name"`
	DurationMS int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
}

// AddStep appends a step that took d.
func (r *Record) AddStep(name string, d time.Duration, err error) {
	s := Step{Name: name, DurationMS: d.Milliseconds()}
	if err != nil {
		s.Error = clip.String(err.Error(), MaxError)
	}
	r.Steps = append(r.Steps, s)
}

// MaxError caps each error and warning the record holds (Error, the
// steps', Warnings, the config's, the previous failure's): an error may
// quote a node config, which may be megabytes long. A cut one ends in
// "…(N bytes more)".
const MaxError = 1024

// capped is the record with its errors cut to MaxError.
func (r *Record) capped() *Record {
	c := *r
	c.Error = clip.String(r.Error, MaxError)
	c.Steps = append([]Step(nil), r.Steps...)
	for i := range c.Steps {
		c.Steps[i].Error = clip.String(c.Steps[i].Error, MaxError)
	}
	if r.Warnings != nil {
		c.Warnings = make([]string, len(r.Warnings))
		for i, w := range r.Warnings {
			c.Warnings[i] = clip.String(w, MaxError)
		}
	}
	if r.Config != nil {
		cc := *r.Config
		cc.Error = clip.String(cc.Error, MaxError)
		c.Config = &cc
	}
	if r.PreviousFailure != nil {
		f := *r.PreviousFailure
		f.Error = clip.String(f.Error, MaxError)
		c.PreviousFailure = &f
	}
	return &c
}

// Marshal renders the record as indented JSON with a final newline, its
// errors cut to MaxError.
func (r *Record) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(r.capped(), "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Write writes the record to path atomically and durably (internal/fsync).
func (r *Record) Write(path string) error {
	b, err := r.Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return fsync.WriteFile(path, b, 0o644)
}

// Parse decodes a record. Fields it does not know are ignored (a newer init
// may add some); a newer format version is refused.
func Parse(b []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("boot record: %w", err)
	}
	if r.FormatVersion > FormatVersion {
		return nil, fmt.Errorf("boot record: format version %d is newer than this program knows (%d)", r.FormatVersion, FormatVersion)
	}
	return &r, nil
}

// Read reads and parses the record at path (normally boot.BootRecord).
func Read(path string) (*Record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(b)
}

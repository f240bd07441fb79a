// Package configsrc finds the node config the init applies at boot. Each
// place a config can come from is a Source in its own file, which registers
// itself with an order key; the init asks the sources in that order and the
// first one that has a config wins.
//
//	100 cmdline       slate.config=data:... on the kernel command line
//	200 fw_cfg        QEMU's fw_cfg entry opt/slate/config
//	300 config-drive  a vfat or iso9660 filesystem labelled SLATE-CONFIG, file slate.yaml
//	400 nocloud       cloud-init's NoCloud drive (label cidata): user-data, meta-data
//	410 openstack     OpenStack's config drive (label config-2), else, on
//	                  OpenStack only, its metadata service: user_data, meta_data.json
//	420 ec2           on EC2 only: IMDSv2, /latest/user-data
//	430 gce           on GCE only: instance attribute slate-config, else user-data
//	440 azure         on Azure only: customData (the provisioning CD's
//	                  ovf-env.xml) and IMDS's userData
//
// Adding a source is adding a file with a type that implements Source and
// an init function that calls Register; nothing else changes.
//
// The cloud sources (400 and up) hand over user data only when it is a
// slate node config (IsNodeConfig: apiVersion slate.dev/...): user data
// for other tools (#cloud-config) or none is ErrNotFound, and the node
// boots on the image's defaults. Each sets Env.Facts, what the platform
// says about the node, for the boot record. A metadata service source
// does nothing unless Env.Platform is its platform; it brings the network
// up through Env.Network, and a service that does not answer costs it at
// most MetadataTimeout (8 s) once the network is up (see metadata.go). A
// service that never answered is ErrNotFound with a console note; one that
// answered and then failed is an error. User data is never logged.
//
// A source that has no config returns ErrNotFound and the next one is
// asked. A source that has one but cannot read it (an I/O error, a
// malformed data: URL, a config drive without slate.yaml) wins all the
// same and returns its error: falling through to a source of lower rank
// would apply a config nobody meant for this boot.
//
// The package links only the standard library (not even net or net/http:
// metadata.go speaks HTTP on a plain socket), golang.org/x/sys and u-root's
// mount package, as the rest of the init.
package configsrc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/slate-os/slate/boot/record"
)

// Source is one place a node config can come from.
type Source interface {
	// Name is the source's short name, as in the boot record
	// ("cmdline", "fw_cfg", "config-drive").
	Name() string
	// Fetch returns the config's bytes, ErrNotFound when this source has
	// none, or another error when it has one that cannot be read. It
	// bounds its own waits; ctx may cut them short.
	Fetch(ctx context.Context) ([]byte, error)
}

// ErrNotFound is returned by a source that has no config on this boot.
var ErrNotFound = errors.New("no config")

// MaxSize bounds a config's size, as nodeconfig.MaxSize does: the init
// holds it in memory. (The kernel command line takes 2 KiB at most.)
const MaxSize = 8 << 20

// Order keys of the built-in sources; Sources is sorted by them.
const (
	OrderCmdline     = 100
	OrderFwCfg       = 200
	OrderConfigDrive = 300
	// The clouds: their local drives first (they need no network, and a
	// drive attached on purpose says more than a platform's defaults),
	// then the metadata services, of which only Env.Platform's asks.
	OrderNoCloud   = 400
	OrderOpenStack = 410
	OrderEC2       = 420
	OrderGCE       = 430
	OrderAzure     = 440
)

type registered struct {
	order int
	src   Source
}

var registry []registered

// Sources are the registered sources, in the order they are asked.
var Sources []Source

// Register adds a source at an order key (see the Order constants). Each
// source's file calls it from an init function. Two sources with the same
// name, or at the same order key, are a programming error.
func Register(order int, s Source) {
	for _, r := range registry {
		if r.src.Name() == s.Name() || r.order == order {
			panic(fmt.Sprintf("configsrc: %s (order %d) registered twice or beside %s (order %d)", s.Name(), order, r.src.Name(), r.order))
		}
	}
	registry = append(registry, registered{order, s})
	sort.Slice(registry, func(i, j int) bool { return registry[i].order < registry[j].order })
	Sources = make([]Source, len(registry))
	for i, r := range registry {
		Sources[i] = r.src
	}
}

// Names returns the sources' names, in order.
func Names(srcs []Source) []string {
	names := make([]string, len(srcs))
	for i, s := range srcs {
		names[i] = s.Name()
	}
	return names
}

// First asks the sources in order and returns the first config found, with
// the name of its source. When a source has a config it cannot read, First
// returns that source's name and its error. When no source has one, it
// returns "" and ErrNotFound.
func First(ctx context.Context, srcs []Source) (name string, data []byte, err error) {
	for _, s := range srcs {
		if err := ctx.Err(); err != nil {
			return "", nil, err
		}
		data, err := s.Fetch(ctx)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		switch {
		case err != nil:
		case len(data) == 0:
			err = errors.New("the config is empty")
		case len(data) > MaxSize:
			err = fmt.Errorf("the config is %d bytes, more than the %d allowed", len(data), MaxSize)
		}
		if err != nil {
			return s.Name(), nil, err
		}
		return s.Name(), data, nil
	}
	return "", nil, ErrNotFound
}

// Env is what the init tells the sources about this boot. It travels in
// the context (WithEnv); a source reads what it needs and falls back to
// the live system for the rest.
type Env struct {
	// Cmdline is the kernel command line; "" means read /proc/cmdline.
	Cmdline string
	// DevicesSince is when the block device drivers were loaded: waits
	// for devices to show up count from there. Zero means from the call.
	DevicesSince time.Time
	// Logf receives the few notes worth a console line: the config drive
	// found, a fw_cfg device without its driver. Nil discards them.
	Logf func(format string, args ...any)

	// Platform is the cloud the node runs on, as the platform package
	// detected it (DMI/SMBIOS, or slate.platform= on the command line):
	// "ec2", "gce", "azure", "openstack", or "" for none (QEMU, bare
	// metal). A metadata service source asks the network for nothing
	// unless Platform is its own: a node on QEMU never waits on a
	// metadata service that cannot exist.
	Platform string
	// Network brings the network up for a metadata service, once per boot
	// (DHCP on the first interface that gets a lease, a route to
	// 169.254.169.254); the init tears it down before systemd starts.
	// Nil: the init has no network to offer, and a metadata service
	// source returns ErrNotFound.
	Network func(ctx context.Context) error
	// HTTPBase replaces http://169.254.169.254 for the metadata service
	// sources (tests); "" is the real address.
	HTTPBase string

	// Location is set by the source that returns a config: where exactly
	// it was (a device, a fw_cfg entry, a kernel argument), for the record
	// and the console.
	Location string
	// Facts is set by a metadata source (it may be set even when the
	// platform has no user data for the node, which then boots on the
	// image's defaults): what the platform says about the node.
	Facts *record.Platform
}

type envKey struct{}

// WithEnv returns a context that carries env to the sources.
func WithEnv(ctx context.Context, env *Env) context.Context {
	return context.WithValue(ctx, envKey{}, env)
}

// EnvFrom returns the Env in ctx, or an empty one.
func EnvFrom(ctx context.Context) *Env {
	if e, ok := ctx.Value(envKey{}).(*Env); ok && e != nil {
		return e
	}
	return &Env{}
}

func logf(ctx context.Context, format string, args ...any) {
	if f := EnvFrom(ctx).Logf; f != nil {
		f(format, args...)
	}
}

// readLimited reads at most MaxSize bytes from r and fails beyond.
func readLimited(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("the config is larger than %d bytes", MaxSize)
	}
	return b, nil
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

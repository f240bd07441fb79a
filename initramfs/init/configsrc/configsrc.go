// Package configsrc finds the node config the init applies at boot. Each
// place a config can come from is a Source in its own file, which registers
// itself with an order key; the init asks the sources in that order and the
// first one that has a config wins.
//
//	100 cmdline       slate.config=data:... on the kernel command line
//	200 fw_cfg        QEMU's fw_cfg entry opt/slate/config
//	300 config-drive  a vfat or iso9660 filesystem labelled SLATE-CONFIG, file slate.yaml
//
// Cloud metadata services (EC2, GCE, Azure, OpenStack) come after these:
// adding one is adding a file with a type that implements Source and an
// init function that calls Register; nothing else changes.
//
// A source that has no config returns ErrNotFound and the next one is
// asked. A source that has one but cannot read it (an I/O error, a
// malformed data: URL, a config drive without slate.yaml) wins all the
// same and returns its error: falling through to a source of lower rank
// would apply a config nobody meant for this boot.
//
// The package links only the standard library, golang.org/x/sys and
// u-root's mount package, as the rest of the init.
package configsrc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"
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
	// Cloud metadata services: 400 and up.
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

	// Location is set by the source that returns a config: where exactly
	// it was (a device, a fw_cfg entry, a kernel argument), for the record
	// and the console.
	Location string
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

package run

// The cloud platform and the network for its metadata service: the config
// step detects the platform (package platform) and hands the sources a
// Network function that brings the network up once (package netup); the
// network goes down again before the image's init starts, or before a
// failed boot reboots. Nothing here fails the boot: without a lease the
// metadata source gets the error and the node boots on its image's
// defaults.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/initramfs/init/netup"
	"github.com/slate-os/slate/initramfs/init/platform"
)

// PlatformFile is where the init writes what the platform said about the
// node (record.Platform, as in the boot record), for the image's services.
const PlatformFile = boot.RunDir + "/platform.json"

// network is what the init needs of package netup.
type network interface {
	Up(ctx context.Context) (*netup.Lease, error)
	Down() error
	Changed() bool
}

// newNetwork makes the init's network; tests replace it.
var newNetwork = func(logf func(string, ...any)) network { return netup.New(logf) }

// netState is the boot's network: brought up at most once.
type netState struct {
	once  sync.Once
	net   network
	lease *netup.Lease
	err   error
}

// detectPlatform says on the console which platform the node runs on.
func (in *initProc) detectPlatform() platform.Platform {
	p, why := platform.Identify("/", in.cmdline)
	in.log.Infof("platform: %s (%s)", p, why)
	return p
}

// network is configsrc.Env.Network: the first call brings the network up
// (bounded by netup's limits and ctx) and says how on the console; every
// call returns that first outcome.
func (in *initProc) network(ctx context.Context) error {
	in.net.once.Do(func() {
		n := newNetwork(in.log.Debugf)
		in.net.net = n
		l, err := n.Up(ctx)
		if err != nil {
			in.net.err = err
			in.warn("network: %v", err)
			return
		}
		in.net.lease = l
		in.log.Infof("network: %s up: %s, DHCP lease from %s in %d ms", l.Interface, l, l.Server, l.Took.Milliseconds())
	})
	return in.net.err
}

// networkDown undoes what network did, so that the image's own network
// stack starts with the links as the kernel left them. Best effort: a
// failure is a warning.
func (in *initProc) networkDown() {
	n := in.net.net
	if n == nil || !n.Changed() {
		return
	}
	err := n.Down()
	switch {
	case err != nil:
		in.warn("network: taking it down: %v", err)
	case in.net.lease != nil:
		in.log.Infof("network: %s down, its address and routes removed", in.net.lease.Interface)
	}
}

// platformRecord is the record's platform section: the facts a metadata
// source found, else only the detected platform's name; nil off the clouds.
func platformRecord(detected platform.Platform, facts *record.Platform) *record.Platform {
	if facts == nil && detected == platform.None {
		return nil
	}
	var p record.Platform
	if facts != nil {
		p = *facts
	}
	if p.Name == "" {
		p.Name = string(detected)
	}
	return &p
}

// writePlatform writes the platform section to path as JSON.
func writePlatform(path string, p *record.Platform) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

package configsrc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

func init() { Register(OrderFwCfg, FwCfg{}) }

// FwCfgName is the fw_cfg entry that carries the config:
// qemu-system-x86_64 -fw_cfg name=opt/slate/config,file=node.yaml
const FwCfgName = "opt/slate/config"

// FwCfgWait bounds the wait for the qemu_fw_cfg driver to bind to QEMU's
// fw_cfg device, once the device is known to exist.
const FwCfgWait = 2 * time.Second

// FwCfg reads QEMU's fw_cfg entry opt/slate/config through the qemu_fw_cfg
// driver's sysfs files (the init loads the module, which the packer puts in
// every initramfs). A machine without the fw_cfg device (anything but QEMU)
// has no config here and costs no wait.
type FwCfg struct {
	// Sys is /sys (tests point it at a fake tree).
	Sys string
	// Wait overrides FwCfgWait.
	Wait time.Duration
}

// Name implements Source.
func (FwCfg) Name() string { return "fw_cfg" }

// Fetch implements Source.
func (f FwCfg) Fetch(ctx context.Context) ([]byte, error) {
	sys := f.Sys
	if sys == "" {
		sys = "/sys"
	}
	wait := f.Wait
	if wait == 0 {
		wait = FwCfgWait
	}
	raw := filepath.Join(sys, "firmware", "qemu_fw_cfg", "by_name", filepath.FromSlash(FwCfgName), "raw")

	// The driver lists the entries in by_name while it binds to the device
	// (ACPI QEMU0002 on x86, a device tree node elsewhere), normally while
	// its module loads; the device's driver link appears once it is done.
	// The wait covers a late bind.
	deadline := time.Now().Add(wait)
	for {
		devs := fwCfgDevices(sys)
		if len(devs) == 0 {
			return nil, ErrNotFound // not QEMU, or QEMU without fw_cfg
		}
		if bound(devs) {
			break
		}
		if !time.Now().Before(deadline) {
			logf(ctx, "fw_cfg: no driver bound to %s after %s: is the qemu_fw_cfg module missing? Not looking for a config there", filepath.Base(devs[0]), wait)
			return nil, ErrNotFound
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
	fd, err := os.Open(raw)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	EnvFrom(ctx).Location = FwCfgName
	if err != nil {
		return nil, fmt.Errorf("fw_cfg %s: %w", FwCfgName, err)
	}
	defer fd.Close()
	b, err := readLimited(fd)
	if err != nil {
		return nil, fmt.Errorf("fw_cfg %s: %w", FwCfgName, err)
	}
	return b, nil
}

// fwCfgDevices returns the sysfs directories of QEMU's fw_cfg devices on
// the platform bus.
func fwCfgDevices(sys string) []string {
	dir := filepath.Join(sys, "bus", "platform", "devices")
	var devs []string
	for _, pat := range []string{"QEMU0002:*", "*.fw-cfg", "fw-cfg*"} {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		devs = append(devs, m...)
	}
	return devs
}

// bound is true when a driver is bound to one of the devices.
func bound(devs []string) bool {
	for _, d := range devs {
		if _, err := os.Stat(filepath.Join(d, "driver")); err == nil {
			return true
		}
	}
	return false
}

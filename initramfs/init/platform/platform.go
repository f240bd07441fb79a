// Package platform tells which cloud the node runs on, before any network
// exists: from slate.platform= on the kernel command line, else from the
// DMI/SMBIOS strings the hypervisor sets (/sys/class/dmi/id), as
// cloud-init's ds-identify and Afterburn do. The init asks a platform's
// metadata service only when the node runs on that platform, so a node on
// QEMU or bare metal never waits on a metadata service that cannot exist.
//
// It links only the standard library.
package platform

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/slate-os/slate/boot"
)

// Platform is a platform's short name; None ("") is no cloud (QEMU, bare
// metal, anything not recognised).
type Platform string

// The platforms.
const (
	None      Platform = ""
	EC2       Platform = "ec2"
	GCE       Platform = "gce"
	Azure     Platform = "azure"
	OpenStack Platform = "openstack"
	NoCloud   Platform = "nocloud"
)

// Known are the platforms slate.platform= accepts, besides "none".
var Known = []Platform{EC2, GCE, Azure, OpenStack, NoCloud}

// Arg is the kernel argument that names the platform and skips detection:
// slate.platform=ec2|gce|azure|openstack|nocloud|none.
const Arg = boot.ArgPlatform

// String is the name, or "none".
func (p Platform) String() string {
	if p == None {
		return "none"
	}
	return string(p)
}

// DMIDir is where the kernel shows the DMI strings, relative to the root
// Detect is given.
const DMIDir = "sys/class/dmi/id"

// hypervisorUUID is Xen's domain UUID (EC2's Xen instances: it starts with ec2).
const hypervisorUUID = "sys/hypervisor/uuid"

// azureAssetTag is the chassis asset tag every Azure VM carries.
const azureAssetTag = "7783-7084-3265-9085-8269-3286-77"

// Detect returns the platform the node runs on; root is "/" on a node (a
// fake sysfs tree in tests), cmdline the kernel command line.
func Detect(root, cmdline string) Platform {
	p, _ := Identify(root, cmdline)
	return p
}

// Identify is Detect, with why: the kernel argument or the DMI string that
// decided ("DMI sys_vendor \"Amazon EC2\""), or what was seen when nothing
// matched, for the console. An unknown slate.platform= value is ignored
// (detection runs as without it) and why says so.
func Identify(root, cmdline string) (Platform, string) {
	var note string
	if v, ok := argValue(cmdline); ok {
		v = strings.ToLower(v)
		if v == "none" {
			return None, Arg + "=none"
		}
		for _, k := range Known {
			if v == string(k) {
				return k, Arg + "=" + v
			}
		}
		note = fmt.Sprintf("%s=%q is not one of ec2, gce, azure, openstack, nocloud, none (ignored); ", Arg, v)
	}
	d := readDMI(root)
	for _, r := range rules {
		if v := d[r.field]; v != "" && r.match(v) {
			return r.p, fmt.Sprintf("%sDMI %s %q", note, r.field, v)
		}
	}
	if v := readFile(filepath.Join(root, hypervisorUUID)); (rule{how: '^', value: "ec2"}).match(v) {
		return EC2, fmt.Sprintf("%sXen domain UUID %s", note, v)
	}
	switch {
	case d["sys_vendor"] == "" && d["product_name"] == "":
		return None, note + "no DMI strings"
	default:
		return None, fmt.Sprintf("%sDMI %q %q", note, d["sys_vendor"], d["product_name"])
	}
}

// rule is one DMI string that names a platform: the field's value equals
// value, starts with it (prefix), or contains it (contains), case aside.
type rule struct {
	field string
	p     Platform
	how   byte // '=', '^' (prefix), '~' (contains)
	value string
}

func (r rule) match(v string) bool {
	v, want := strings.ToLower(v), strings.ToLower(r.value)
	switch r.how {
	case '^':
		return strings.HasPrefix(v, want)
	case '~':
		return strings.Contains(v, want)
	}
	return v == want
}

// rules, first match wins. The sources: ds-identify (dscheck_* and
// ec2_identify), Afterburn's providers, systemd's virt.c.
var rules = []rule{
	// Nitro instances: sys_vendor and bios_vendor "Amazon EC2"; Xen
	// instances: bios_version/product_version "4.11.amazon", and the
	// product UUID (readable by root only) starting with ec2.
	{"sys_vendor", EC2, '=', "Amazon EC2"},
	{"bios_vendor", EC2, '=', "Amazon EC2"},
	{"product_version", EC2, '~', "amazon"},
	{"bios_version", EC2, '~', "amazon"},
	{"product_uuid", EC2, '^', "ec2"},

	{"product_name", GCE, '=', "Google Compute Engine"},
	{"sys_vendor", GCE, '=', "Google"},
	{"bios_vendor", GCE, '=', "Google"},
	{"board_vendor", GCE, '=', "Google"},

	{"chassis_asset_tag", Azure, '=', azureAssetTag},

	{"product_name", OpenStack, '=', "OpenStack Nova"},
	{"product_name", OpenStack, '=', "OpenStack Compute"},
	{"sys_vendor", OpenStack, '=', "OpenStack Foundation"},
	{"chassis_asset_tag", OpenStack, '=', "OpenStack Nova"},
	{"chassis_asset_tag", OpenStack, '=', "OpenStack Compute"},

	// cloud-init's own convention for NoCloud on a VM: -smbios
	// type=1,serial=ds=nocloud.
	{"product_serial", NoCloud, '^', "ds=nocloud"},
}

// dmiFields are the DMI files read.
var dmiFields = []string{"sys_vendor", "product_name", "product_version", "product_uuid", "product_serial",
	"bios_vendor", "bios_version", "board_vendor", "chassis_asset_tag"}

func readDMI(root string) map[string]string {
	d := make(map[string]string, len(dmiFields))
	for _, f := range dmiFields {
		d[f] = readFile(filepath.Join(root, DMIDir, f))
	}
	return d
}

// readFile returns a sysfs string, trimmed; "" when it cannot be read.
func readFile(p string) string {
	b, err := os.ReadFile(p)
	if err != nil || len(b) > 4096 {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// argValue returns slate.platform='s value on cmdline, the last one
// winning as in the kernel. Quotes are dropped: the kernel removes them.
func argValue(cmdline string) (string, bool) {
	var v string
	var ok bool
	for _, f := range strings.Fields(cmdline) {
		k, val, _ := strings.Cut(strings.ReplaceAll(f, `"`, ""), "=")
		if k == Arg {
			v, ok = val, true
		}
	}
	return v, ok
}

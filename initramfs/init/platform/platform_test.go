package platform

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sysfs writes a fake /sys/class/dmi/id (and /sys/hypervisor/uuid) under a
// temporary root.
func sysfs(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, v := range files {
		p := filepath.Join(root, DMIDir, name)
		if name == "hypervisor/uuid" {
			p = filepath.Join(root, hypervisorUUID)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestDetect(t *testing.T) {
	qemu := map[string]string{"sys_vendor": "QEMU", "product_name": "Standard PC (Q35 + ICH9, 2009)", "bios_vendor": "EFI Development Kit II / OVMF"}
	for _, tc := range []struct {
		name    string
		dmi     map[string]string
		cmdline string
		want    Platform
		why     string
	}{
		{"ec2 nitro", map[string]string{"sys_vendor": "Amazon EC2", "product_name": "m6i.large", "bios_vendor": "Amazon EC2"}, "", EC2, `sys_vendor "Amazon EC2"`},
		{"ec2 nitro bios only", map[string]string{"bios_vendor": "Amazon EC2"}, "", EC2, "bios_vendor"},
		{"ec2 xen", map[string]string{"sys_vendor": "Xen", "product_name": "HVM domU", "product_version": "4.11.amazon", "bios_vendor": "Xen"}, "", EC2, "product_version"},
		{"ec2 xen uuid", map[string]string{"sys_vendor": "Xen", "product_uuid": "EC2E1916-9099-7CAF-FD21-012345ABCDEF"}, "", EC2, "product_uuid"},
		{"ec2 xen hypervisor uuid", map[string]string{"sys_vendor": "Xen", "hypervisor/uuid": "ec2e1916-9099-7caf-fd21-012345abcdef"}, "", EC2, "Xen domain UUID"},
		{"gce", map[string]string{"sys_vendor": "Google", "product_name": "Google Compute Engine", "bios_vendor": "Google"}, "", GCE, "Google"},
		{"gce product only", map[string]string{"product_name": "Google Compute Engine"}, "", GCE, "product_name"},
		{"azure", map[string]string{"sys_vendor": "Microsoft Corporation", "product_name": "Virtual Machine", "chassis_asset_tag": azureAssetTag}, "", Azure, "chassis_asset_tag"},
		{"hyper-v is not azure", map[string]string{"sys_vendor": "Microsoft Corporation", "product_name": "Virtual Machine", "chassis_asset_tag": "1234-5678"}, "", None, "Microsoft"},
		{"openstack nova", map[string]string{"sys_vendor": "OpenStack Foundation", "product_name": "OpenStack Nova"}, "", OpenStack, "OpenStack"},
		{"openstack compute", map[string]string{"sys_vendor": "RDO", "product_name": "OpenStack Compute"}, "", OpenStack, "product_name"},
		{"openstack asset tag", map[string]string{"sys_vendor": "QEMU", "chassis_asset_tag": "OpenStack Nova"}, "", OpenStack, "chassis_asset_tag"},
		{"nocloud serial", map[string]string{"sys_vendor": "QEMU", "product_serial": "ds=nocloud;h=node-1"}, "", NoCloud, "product_serial"},
		{"qemu", qemu, "", None, `"QEMU"`},
		{"bare metal", map[string]string{"sys_vendor": "Dell Inc.", "product_name": "PowerEdge R650"}, "", None, "Dell"},
		{"no dmi", nil, "", None, "no DMI strings"},
		{"cmdline wins", qemu, "quiet slate.platform=gce ro", GCE, "slate.platform=gce"},
		{"cmdline upper case", qemu, "slate.platform=EC2", EC2, "slate.platform=ec2"},
		{"cmdline quoted", qemu, `"slate.platform=azure"`, Azure, "slate.platform=azure"},
		{"cmdline last wins", qemu, "slate.platform=gce slate.platform=openstack", OpenStack, ""},
		{"cmdline none beats dmi", map[string]string{"sys_vendor": "Amazon EC2"}, "slate.platform=none", None, "slate.platform=none"},
		{"cmdline nocloud", nil, "slate.platform=nocloud", NoCloud, ""},
		{"cmdline unknown falls back", map[string]string{"sys_vendor": "Amazon EC2"}, "slate.platform=aws", EC2, `slate.platform="aws" is not one of`},
		{"other slate args", map[string]string{"sys_vendor": "Google"}, "slate.platforms=ec2 xslate.platform=ec2", GCE, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := sysfs(t, tc.dmi)
			got, why := Identify(root, tc.cmdline)
			if got != tc.want || !strings.Contains(why, tc.why) {
				t.Errorf("Identify = %q, %q; want %q, containing %q", got, why, tc.want, tc.why)
			}
			if d := Detect(root, tc.cmdline); d != got {
				t.Errorf("Detect = %q, Identify %q", d, got)
			}
		})
	}
}

func TestString(t *testing.T) {
	if None.String() != "none" || EC2.String() != "ec2" {
		t.Errorf("String: %q %q", None.String(), EC2.String())
	}
}

package layout

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseLoadList(t *testing.T) {
	const md = "/lib/modules/6.1.0-28-amd64/kernel/"
	mods, kver, err := ParseLoadList(strings.NewReader(KernelLine + "6.1.0-28-amd64\n" +
		md + "drivers/hv/hv_vmbus.ko\n\n# comment\n" +
		md + "drivers/scsi/hv_storvsc.ko scsi_transport_fc scsi_mod hv_vmbus\n"))
	want := []LoadEntry{
		{Path: md + "drivers/hv/hv_vmbus.ko", Needs: []string{}},
		{Path: md + "drivers/scsi/hv_storvsc.ko", Needs: []string{"scsi_transport_fc", "scsi_mod", "hv_vmbus"}},
	}
	if err != nil || kver != "6.1.0-28-amd64" || !reflect.DeepEqual(mods, want) {
		t.Errorf("ParseLoadList = %q %q %v", mods, kver, err)
	}
	if mods[1].Name() != "hv_storvsc" || (LoadEntry{Path: md + "drivers/md/dm-verity.ko"}).Name() != "dm_verity" {
		t.Errorf("names %q", mods[1].Name())
	}
	if s := mods[1].String(); s != md+"drivers/scsi/hv_storvsc.ko scsi_transport_fc scsi_mod hv_vmbus" {
		t.Errorf("String = %q", s)
	}
	if _, _, err := ParseLoadList(strings.NewReader("kernel/fs/x.ko\n")); err == nil {
		t.Error("relative path accepted")
	}
}

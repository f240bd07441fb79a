package vmtest_test

import (
	"regexp"
	"testing"
	"time"

	"github.com/slate-os/slate/vm"
	"github.com/slate-os/slate/vm/vmtest"
)

// A test boots an image, waits for a line, checks it and powers off.
func ExampleStart() {
	var t testing.TB // the test's *testing.T
	m := vmtest.Start(t, vm.Config{
		Disk:         "build/reference/disk.qcow2",
		FwCfgStrings: map[string]string{"opt/slate/config": "version: 1\nhostname: n1\n"},
	})
	mt, err := m.Expect(regexp.MustCompile(`slate-init: booted slot (\w)`), 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("slot %s", mt.Groups[1])
	// A power cut, then power on again on the same disk and EFI variables.
	if err := m.Quit(); err != nil {
		t.Fatal(err)
	}
	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
}

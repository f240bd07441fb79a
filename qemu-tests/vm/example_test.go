package vm_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"regexp"
	"testing"
	"time"

	"github.com/slate-os/slate/qemu-tests/vm"
)

// A test boots an image, waits for a line, checks it and powers off.
func ExampleStart() {
	var t testing.TB // the test's *testing.T
	m := vm.Start(t, vm.Config{
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

// `make run`: the console on the terminal until the guest powers off.
func ExampleStartContext() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	m, err := vm.StartContext(ctx, vm.Config{
		Disk:        "build/reference/disk.qcow2",
		Interactive: true,
		Forwards:    []vm.Forward{{GuestPort: 22}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	log.Printf("ssh on %s; console log in %s", m.HostAddr(22), m.ConsoleLog())
	if _, err := m.WaitExit(0); err != nil {
		log.Print(err)
	}
}

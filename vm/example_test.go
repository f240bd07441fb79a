package vm_test

import (
	"context"
	"log"
	"os"
	"os/signal"

	"github.com/slate-os/slate/vm"
)

// slate run: the console on the terminal until the guest powers off.
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

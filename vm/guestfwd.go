package vm

import (
	"io"
	"net"
	"os"
	"strings"
)

// guestForwardArg marks the command line QEMU runs for a guest forward's
// connection: the test binary itself, told where to connect.
const guestForwardArg = "-slate.vm.guestfwd"

// ServeGuestForward makes the test binary QEMU's per-connection proxy for
// Config.GuestForwards: when the command line says so, it copies its stdin
// and stdout (the guest's connection) to and from the host address, then
// exits. Otherwise it returns at once. Call it first in TestMain.
func ServeGuestForward() {
	var to string
	for _, a := range os.Args[1:] {
		if v, ok := strings.CutPrefix(a, guestForwardArg+"="); ok {
			to = v
		}
	}
	if to == "" {
		return
	}
	c, err := net.Dial("tcp", to)
	if err != nil {
		os.Exit(1)
	}
	done := make(chan struct{})
	go func() {
		io.Copy(c, os.Stdin)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		close(done)
	}()
	io.Copy(os.Stdout, c)
	os.Stdout.Close()
	<-done
	os.Exit(0)
}

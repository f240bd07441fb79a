// Package vm boots real disk images under QEMU for slate's integration tests,
// and for `slate run` and `make demo`.
//
// A [Machine] is one virtual computer whose state outlives a QEMU process: a
// copy-on-write overlay over the base disk, a private copy of the OVMF
// variable store, and one console log. [Start] powers it on; after the QEMU
// process ends (a guest reboot with -no-reboot, a guest power-off, [Machine.Quit]
// as a power cut) [Machine.Boot] powers the same machine on again. That is
// what upgrade and rollback tests need: systemd-boot's boot counting lives
// in the ESP (on the overlay) and in EFI variables (in the vars file), so a
// reboot must keep both and nothing else.
//
// Why the pieces are the way they are:
//
//   - The base image is never written: every disk is attached through a
//     qcow2 overlay (`qemu-img create -f qcow2 -b BASE -F FMT`), so one
//     cached reference image serves every test, concurrently.
//   - The serial console goes to a socket chardev, which the harness drains
//     (so a slow reader never stalls the guest) into console.log, the file
//     CI keeps, and [Config.Console]; the socket also carries [Machine.Send]
//     input. The harness writes the log itself, not QEMU's logfile=: QEMU 7.2
//     writes a chunk to the logfile again each time it retries a partial
//     write to the socket, which doubled characters in the log (see args).
//     In interactive mode the console is on stdio and there QEMU's
//     logfile= writes console.log. [Machine.Expect] follows console.log, so
//     it works the same in both.
//   - QMP and the console are connected over socketpairs passed to QEMU as
//     inherited file descriptors (`-chardev socket,fd=N`): no socket paths
//     (t.TempDir paths can exceed the 108-byte sun_path limit), no
//     connect-retry loop, no race with QEMU's start-up.
//   - QMP is a small client of its own (qmp.go), not
//     github.com/digitalocean/go-qemu/qmp: that package ties every command to
//     a context-less blocking read (a wedged QEMU hangs the test until the go
//     test timeout), drops replies longer than 64 KiB (bufio.Scanner, open
//     issue #159), can deadlock when events are subscribed but not read, and
//     its package imports go-libvirt (27k lines) for an RPC monitor slate
//     never uses.
//   - Every timeout given to this package is multiplied by
//     SLATE_TIMEOUT_SCALE (see [Scale]): TCG speed varies a lot between
//     machines, and a slow CI runner should need an environment variable,
//     not code changes.
//   - On a failed test the console log is copied to $SLATE_TEST_LOGS
//     (default build/test-logs at the module root, which .gitignore covers)
//     and its tail printed, because t.TempDir is deleted when the test ends
//     and a boot failure without its console is undebuggable.
//
// QEMU runs with `-accel kvm -cpu host` where KVM can run the guest, and
// with `-accel tcg,thread=single -cpu max` otherwise ([Config.Accel],
// [Machine.Accel]; see args for why one thread; removing svm from -cpu max
// breaks the guest). KVM is usable when /dev/kvm opens read-write, answers
// API version 12 and the CPU has VT-x or AMD-V: the machines slate is
// developed on have a /dev/kvm without them (a sandbox's software KVM,
// which cannot run OVMF), so they, and this package's timeouts, use TCG.
// OVMF alone needs about 4 s to reach its boot manager under TCG.
package vm

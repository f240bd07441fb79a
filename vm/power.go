package vm

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// Exit says how a QEMU run ended.
type Exit struct {
	// Code is QEMU's exit status; -1 if a signal killed it.
	Code int
	// Reason is the reason of QEMU's last SHUTDOWN event: "guest-shutdown"
	// (the guest powered off), "guest-reset" (the guest rebooted under
	// -no-reboot), "host-qmp-quit" (Quit), "host-qmp-system-reset"
	// (SystemReset under -no-reboot), "guest-panic", "host-signal"... or
	// "" when QEMU ended without one (killed, or failed to start).
	Reason string
}

func (e Exit) String() string {
	reason := e.Reason
	if reason == "" {
		reason = "no shutdown event"
	}
	return fmt.Sprintf("status %d, %s", e.Code, reason)
}

// ShutdownTimeout is how long a guest may take to go down once its work is
// done: generous, since a busy host slows a TCG guest's shutdown many times,
// and it is not what any test measures.
const ShutdownTimeout = 5 * time.Minute

// WaitExit waits for QEMU to exit and says how it ended. It is an error if
// QEMU is still running after timeout (scaled by SLATE_TIMEOUT_SCALE) or
// exited with a non-zero status; the error carries the console's tail.
// After a guest power-off or reboot, Exit.Reason tells which it was. A
// timeout of 0 waits as long as QEMU runs (`make run`).
func (m *Machine) WaitExit(timeout time.Duration) (Exit, error) {
	r := m.current()
	if r == nil {
		return Exit{}, fmt.Errorf("%s: WaitExit: the machine was never booted", m.label)
	}
	if timeout <= 0 {
		<-r.done
	} else {
		scaled := Scale(timeout)
		select {
		case <-r.done:
		case <-time.After(scaled):
			return Exit{}, fmt.Errorf("%s: qemu still running after %s; %s", m.label, scaled, m.consoleTail(errorLines))
		}
	}
	if r.exit.Code != 0 {
		return r.exit, fmt.Errorf("%s: qemu exited: %s (%v); %s; %s", m.label, r.exit, r.werr, m.qemuTail(), m.consoleTail(errorLines))
	}
	return r.exit, nil
}

// Quit cuts the power: QMP `quit` ends QEMU at once, with no warning to the
// guest (QEMU itself still flushes the overlay and vars files, so the host
// side is consistent). It waits for QEMU to exit, killing it if needed.
// That is the power-failure step of upgrade tests; Boot powers on again.
func (m *Machine) Quit() error {
	r := m.current()
	if r == nil || r.hasExited() {
		return nil
	}
	_, err := m.Execute("quit", nil)
	if err != nil && !errors.Is(err, errQMPClosed) && !r.hasExited() {
		_ = r.kill()
		return err
	}
	select {
	case <-r.done:
		return nil
	case <-time.After(Scale(30 * time.Second)):
		_ = r.kill()
		return fmt.Errorf("%s: qemu ignored quit; killed it", m.label)
	}
}

// SystemPowerdown presses the ACPI power button; the guest decides what
// to do (systemd powers off; OVMF ignores it). It does not wait.
func (m *Machine) SystemPowerdown() error {
	_, err := m.Execute("system_powerdown", nil)
	return err
}

// SystemReset presses the reset button: an instant reboot with no
// shutdown in the guest. Without AllowReboot, QEMU then exits
// (Exit.Reason "host-qmp-system-reset") as for a guest reboot.
func (m *Machine) SystemReset() error {
	_, err := m.Execute("system_reset", nil)
	return err
}

// Kill ends QEMU with SIGKILL and waits for it. Test cleanup does this.
func (m *Machine) Kill() error {
	r := m.current()
	if r == nil {
		return nil
	}
	return r.kill()
}

func (r *run) kill() error {
	if r.hasExited() {
		return nil
	}
	_ = r.cmd.Process.Kill()
	<-r.done
	return nil
}

// terminate asks QEMU to stop with SIGTERM (it restores the terminal and
// flushes its files), then kills it if it does not.
func (r *run) terminate() {
	if r.hasExited() {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		_ = r.kill()
	}
}

// Close stops QEMU (Quit, then SIGTERM, then SIGKILL) and removes the work
// dir if StartContext made it.
func (m *Machine) Close() error {
	if r := m.current(); r != nil && !r.hasExited() {
		if r.qmp != nil {
			_, _ = r.qmp.execute("quit", nil, 5*time.Second)
			select {
			case <-r.done:
			case <-time.After(5 * time.Second):
			}
		}
		r.terminate()
	}
	if m.ownDir {
		return os.RemoveAll(m.dir)
	}
	return nil
}

package main

// slate platform ready: tells the cloud platform the node booted
// (slate-platform-ready.service, once per boot).

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/slate-os/slate/agent/platform"
)

// platformFile is where the init wrote the platform's facts, and
// readyOptions how to reach the wire server; tests change them.
var (
	platformFile = platform.File
	readyOptions platform.Options
)

func platformCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "platform",
		Short: "Talk to the cloud platform the node runs on",
	}
	c.AddCommand(platformReadyCmd())
	return c
}

func platformReadyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ready",
		Short: "Tell the cloud platform that the node booted (run by slate-platform-ready.service)",
		Long: `ready reads the platform the init detected (` + platform.File + `).
On Azure it reports the VM ready to the wire server (168.63.129.16): it
fetches the goal state and posts a health report with the state Ready, as
cloud-init and Afterburn do, without which Azure fails the VM's provisioning
as timed out. It retries while the wire server is not answering, for at most
two minutes, and prints one line.

On any other platform, or with no platform detected, there is nothing to
report: it says so and succeeds. slate-platform-ready.service ignores its
exit status, so that a wire server out of reach never fails a boot.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := platform.Read(platformFile)
			if err != nil {
				return fmt.Errorf("platform: %w", err)
			}
			out := cmd.OutOrStdout()
			switch {
			case p == nil:
				fmt.Fprintf(out, "platform: none detected (no %s): nothing to report\n", platformFile)
				return nil
			case p.Name != platform.Azure:
				fmt.Fprintf(out, "platform: %s: nothing to report\n", p.Name)
				return nil
			}
			return reportReady(cmd, out, readyOptions)
		},
	}
}

// reportReady reports ready to Azure with o, its retries logged on the
// command's stderr, and prints the outcome's line on out.
func reportReady(cmd *cobra.Command, out io.Writer, o platform.Options) error {
	errw := cmd.ErrOrStderr()
	o.Log = func(format string, args ...any) { fmt.Fprintf(errw, "platform: "+format+"\n", args...) }
	gs, err := platform.ReportReady(cmd.Context(), o)
	if err != nil {
		return fmt.Errorf("platform: azure: %w", err)
	}
	fmt.Fprintf(out, "platform: azure: reported ready to the wire server (incarnation %s, instance %s)\n", gs.Incarnation, gs.InstanceID)
	return nil
}

package main

import (
	"fmt"
	"os"
	"os/exec"

	"github.com/spf13/cobra"

	"github.com/slate-os/slate/agent/access"
	"github.com/slate-os/slate/agent/node"
	"github.com/slate-os/slate/boot/record"
)

func accessCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "access",
		Short: "On a node: break-glass's consequences (slate-access.service)",
	}
	c.AddCommand(&cobra.Command{
		Use:   "watch",
		Short: "Record every interactive login (it taints the node) and end break-glass at access.expires",
		Long: `Watch runs as slate-access.service on every node. It reads wtmp every
two seconds and records each interactive login (who, on which terminal, from
where, when) in the taint record on the state partition,
/var/lib/slate/tainted: the node is then tainted until it is re-imaged,
whatever its config, and slate status and the metrics say so. Each login is
also a line in the journal, which slate-logship ships.

When the node config gives break-glass an expiry (access.expires), watch
does access.afterExpiry at that time: reboot (the default; the init applies
a config whose break-glass expired without its access) or poweroff (the
platform replaces the node).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := nodeConfig()
			if err != nil {
				return err
			}
			id, _ := node.BootID()
			w := &access.Watcher{Wtmp: access.WtmpPath, Offset: access.OffsetPath, TaintFile: record.TaintFile, BootID: id, Log: os.Stdout,
				Act: func(what string) error {
					out, err := exec.Command("systemctl", "--no-block", what).CombinedOutput()
					if err != nil {
						return fmt.Errorf("systemctl %s: %v: %s", what, err, out)
					}
					return nil
				}}
			return w.Run(cmd.Context(), c)
		},
	})
	return c
}

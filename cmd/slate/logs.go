package main

// slate logs ship: the journal, and the logs kept from boots that rolled
// back, to the node config's collector (slate-logship.service).

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/slate-os/slate/agent/logship"
	"github.com/slate-os/slate/boot/nodeconfig"
)

// logsConfig reads the node config, and logsOptions adjusts the shipper's
// options; tests change them.
var (
	logsConfig  = nodeConfig
	logsOptions = func(*logship.Options) {}
)

func logsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "logs",
		Short: "The node's logs",
	}
	c.AddCommand(logsShipCmd())
	return c
}

func logsShipCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ship",
		Short: "Ship the journal to the node config's log collector (run by slate-logship.service)",
		Long: `ship forwards the journal, as it is written, to logging.collector of the node
config (` + nodeconfig.RecordPath + `): RFC 5424 syslog messages framed by octet
counting, over TCP (tcp://HOST:PORT) or TLS (tls://HOST:PORT, verified against
logging.ca or the system roots, with logging.clientCertificate and
logging.clientKey when given). Each message carries the structured data
[` + logship.SDID + ` boot="…" unit="…"].

Delivery is at least once, across collector outages and reboots: the cursor of
the last entry the collector's TCP stack acknowledged is kept in
` + logship.DefaultStateDir + `/` + logship.CursorFile + `, and the journal is read again from it after a
failure. The journal and console kept from boots that rolled back
(/var/lib/slate/rollbacks) are shipped too when it starts, with APP-NAME
` + logship.RollbackApp + `, once each.

It runs until stopped and never exits because the collector is down: it says so
once, retries with backoff, and says when it is connected again. With no
logging.collector in the node config it says so and exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := logsConfig()
			if err != nil {
				return fmt.Errorf("node config: %w", err)
			}
			if cfg.Logging.Collector == "" {
				fmt.Fprintln(cmd.OutOrStdout(), "logs: the node config has no logging.collector: nothing to ship")
				return nil
			}
			useTLS, _, err := logship.ParseCollector(cfg.Logging.Collector)
			if err != nil {
				return fmt.Errorf("logging.collector: %w", err)
			}
			o := logship.Options{Collector: cfg.Logging.Collector}
			if useTLS {
				if o.TLS, err = logship.TLSConfig(cfg.Logging); err != nil {
					return fmt.Errorf("node config: %w", err)
				}
			}
			errw := cmd.ErrOrStderr()
			o.Log = func(format string, args ...any) { fmt.Fprintf(errw, "logs: "+format+"\n", args...) }
			logsOptions(&o)
			return logship.Run(cmd.Context(), o)
		},
	}
}

package main

// slate metrics: the node's state as Prometheus metrics (agent/metrics),
// from what slate status gathers.

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/spf13/cobra"

	"github.com/slate-os/slate/agent/history"
	"github.com/slate-os/slate/agent/metrics"
	"github.com/slate-os/slate/boot/nodeconfig"
)

// gatherMetrics is one scrape: slate status's gather (gatherStatus, the
// same code path), and the agent's records on the state partition. Tests
// replace it.
var gatherMetrics = func() *metrics.Snapshot {
	st, err := gatherStatus()
	return metrics.Gather(st, err, history.Open(StateDir))
}

func metricsCmd() *cobra.Command {
	printMetrics := func(cmd *cobra.Command, args []string) error {
		s := gatherMetrics()
		if _, err := cmd.OutOrStdout().Write(metrics.Format(s)); err != nil {
			return err
		}
		if err := s.Err(); err != nil {
			return fmt.Errorf("metrics: printed what is known: %w", err)
		}
		return nil
	}
	c := &cobra.Command{
		Use:   "metrics",
		Short: "Print the node's state as Prometheus metrics (serve: serve them, write a node_exporter textfile)",
		Long: `metrics prints the node's state in the Prometheus text format: what slate
status shows (the running slot, its version and generation, both slots, tries
left, this boot's health, the last rollback and the count of them, the taint
and the logins, the last update check, the node config's digest, the
extensions merged). Every name starts with slate_. What cannot be read is left
out and slate_scrape_error is 1 (the command then also fails).`,
		Args: cobra.NoArgs,
		RunE: printMetrics,
	}
	c.AddCommand(&cobra.Command{
		Use:   "print",
		Short: "Print the metrics once (what slate metrics does)",
		Args:  cobra.NoArgs,
		RunE:  printMetrics,
	}, &cobra.Command{
		Use:   "serve",
		Short: "Serve the metrics on metrics.listen and write them to metrics.textfile (run by slate-metrics.service)",
		Long: `serve does what the node config's metrics section asks, until it is stopped:
with metrics.listen (HOST:PORT), it serves GET /metrics there, gathering the
node's state afresh at each scrape (within the scrape's timeout); with
metrics.textfile, it writes the file every 30 s for node_exporter's textfile
collector (--collector.textfile.directory), whole (a temporary file renamed).
A part of the state that cannot be read never fails a scrape: what is known is
served with slate_scrape_error 1. With neither set it says so and exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := nodeConfig()
			if err != nil {
				return err
			}
			return serveMetrics(cmd.Context(), cfg.Metrics, cmd.OutOrStdout())
		},
	})
	return c
}

// serveMetrics runs metrics.Server for the config's metrics section until
// ctx ends; with nothing configured it says so and returns nil (the unit is
// enabled only when something is).
func serveMetrics(ctx context.Context, m nodeconfig.Metrics, out io.Writer) error {
	if m.Listen == "" && m.Textfile == "" {
		fmt.Fprintln(out, "metrics: the node config sets neither metrics.listen nor metrics.textfile: nothing to serve")
		return nil
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "slate metrics: "+format+"\n", args...) }
	s := &metrics.Server{
		Collector: &metrics.Collector{Gather: gatherMetrics, Log: logf},
		Listen:    m.Listen,
		Textfile:  m.Textfile,
		Log:       logf,
		Listening: func(a net.Addr) { fmt.Fprintf(out, "metrics: serving /metrics on %s\n", a) },
	}
	if m.Textfile != "" {
		fmt.Fprintf(out, "metrics: writing %s every %s\n", m.Textfile, metrics.TextfileInterval)
	}
	return s.Run(ctx)
}

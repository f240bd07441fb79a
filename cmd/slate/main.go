// Command slate builds immutable node images (build, sign, push, inspect,
// config check) and, on a node, manages its slots (upgrade, rollback,
// status, health) and tells its cloud platform it booted (platform ready).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{
		Use:   "slate",
		Short: "Build immutable A/B node images from OCI images; on a node, upgrade, assess and roll back",
		Long: `slate turns an ordinary OCI image (userland + kernel + systemd) into a bootable
GPT disk with two read-only root slots, an EFI system partition with
systemd-boot and a state partition, plus an update artifact any OCI registry
can carry. On a node built by it, the same binary is the agent: upgrade,
rollback, status and the boot health check.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(buildCmd(), runCmd(), testCmd(), keygenCmd(), signCmd(), pushCmd(), inspectCmd(), configCmd(), versionCmd(), upgradeCmd(), rollbackCmd(), statusCmd(), healthCmd(), espCmd(), sysextCmd(), platformCmd(), accessCmd(), metricsCmd(), logsCmd())
	setVersionFlag(root)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "slate:", err)
		os.Exit(1)
	}
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

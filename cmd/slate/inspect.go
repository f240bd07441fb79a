package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/slate-os/slate/builder/artifact"
	"github.com/slate-os/slate/builder/inspect"
	"github.com/slate-os/slate/builder/signature"
)

func inspectCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "inspect DISK|ARTIFACT",
		Short: "Show a disk image's partitions, slots and boot entries, or an artifact's config",
		Example: `  slate inspect node.raw
  slate inspect --json node-1.4.1.oci`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			r, err := inspect.Path(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(r)
			}
			r.Text(os.Stdout)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func pushCmd() *cobra.Command {
	var insecure bool
	c := &cobra.Command{
		Use:   "push LAYOUT REF",
		Short: "Push an update artifact (an OCI layout written by build) to a registry",
		Long: `Push sends the artifact in LAYOUT to REF, e.g. registry.example/org/node:1.4.1.
Credentials come from the Docker config (docker login), as with other OCI tools.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var opts []artifact.Option
			if insecure {
				opts = append(opts, artifact.Insecure())
			}
			p, err := artifact.Push(args[0], args[1], opts...)
			if err != nil {
				return err
			}
			fmt.Printf("pushed %s@%s\n", p.Ref, p.Digest)
			if p.Signed {
				fmt.Printf("pushed its signatures as %s\n", p.Ref.Context().Tag(signature.Tag(p.Digest)))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&insecure, "insecure", false, "allow plain HTTP to the registry")
	return c
}

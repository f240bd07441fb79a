package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/slate-os/slate/builder/configcheck"
	"github.com/slate-os/slate/builder/source"
)

func configCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "config",
		Short: "Work with node configs",
	}
	c.AddCommand(configCheckCmd())
	return c
}

func configCheckCmd() *cobra.Command {
	var (
		imageRef string
		insecure bool
	)
	c := &cobra.Command{
		Use:   "check FILE [--image REF]",
		Short: "Check a node config offline, as the init checks it at boot",
		Long: `check validates a node config (YAML or JSON; - reads standard input) as the
init does before it applies anything, with the same messages: the schema,
unknown fields, every value.

With --image REF (the source image a node is built from: a registry
reference, oci:DIR[:TAG|@sha256:DIGEST] or docker-archive:FILE) it also
checks the config against that image's files, with slate's units on top, as
the init does on a node: paths and the symbolic links on them, files that
exist without overwrite, owners in /etc/passwd and /etc/group, units and
their [Install] sections, the time zone. Only /etc, the unit directories and
the time zone database are read out of the image's flattened root; nothing
else is unpacked.

An invalid config exits non-zero with the reason; a valid one prints
"ok: " and what it sets.`,
		Example: `  slate config check node.yaml
  slate config check --image oci:build/reference node.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			var data []byte
			var err error
			if name == "-" {
				name = "standard input"
				data, err = io.ReadAll(os.Stdin)
			} else {
				data, err = os.ReadFile(name)
			}
			if err != nil {
				return err
			}
			if imageRef == "" {
				r, err := configcheck.Config(data)
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				fmt.Printf("ok: %s (not checked against an image: give --image REF)\n", r.Summary())
				return nil
			}
			// A config invalid alone is refused before the image is read.
			if _, err := configcheck.Config(data); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			img, err := source.Open(imageRef, source.Options{Insecure: insecure})
			if err != nil {
				return err
			}
			r, err := configcheck.Image(cmd.Context(), data, img)
			var invalid *configcheck.InvalidError
			if errors.As(err, &invalid) {
				return fmt.Errorf("%s: %w", name, err)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", imageRef, err)
			}
			d, _ := img.Digest()
			fmt.Printf("ok: %s (checked against %s, %s)\n", r.Summary(), imageRef, d)
			return nil
		},
	}
	c.Flags().StringVar(&imageRef, "image", "", "also check the config against this image's files")
	c.Flags().BoolVar(&insecure, "insecure", false, "allow plain HTTP to the image's registry")
	return c
}

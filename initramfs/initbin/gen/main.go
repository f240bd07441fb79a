// Command gen rebuilds initramfs/initbin/slate-init.zst from cmd/slate-init:
// go generate ./initramfs/initbin (make init-binary).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"

	"github.com/slate-os/slate/initramfs/internal/initbuild"
)

func main() {
	out := flag.String("o", "slate-init.zst", "output file")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("initbin/gen: ")
	root, err := initbuild.ModuleRoot()
	if err != nil {
		log.Fatal(err)
	}
	bin, err := initbuild.Build(root)
	if err != nil {
		log.Fatal(err)
	}
	z, err := initbuild.Compress(bin)
	if err != nil {
		log.Fatal(err)
	}
	if old, err := os.ReadFile(*out); err == nil && bytes.Equal(old, z) {
		fmt.Printf("%s is up to date (init %d bytes, %d compressed)\n", *out, len(bin), len(z))
		return
	}
	if err := os.WriteFile(*out, z, 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("wrote %s (init %d bytes, %d compressed)\n", *out, len(bin), len(z))
}

// Command slate-init is slate's init: /init in the initramfs, PID 1 until it
// switches root to the image's /sbin/init. See package
// github.com/slate-os/slate/initramfs/init/run for what it does.
//
// It is a small static binary (CGO off) that links u-root's mount package,
// golang.org/x/sys and, for the node config, gopkg.in/yaml.v3, and nothing
// of the builder or the agent (see deps_test.go). The builder embeds a prebuilt copy: package
// github.com/slate-os/slate/initramfs/initbin.
package main

import "github.com/slate-os/slate/initramfs/init/run"

func main() { run.Main() }

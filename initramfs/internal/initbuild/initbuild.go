// Package initbuild builds cmd/slate-init reproducibly and compresses it,
// for the generator of package initbin and for its staleness test, which
// must build it the same way.
package initbuild

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/slate-os/slate/boot"
)

// Package is the init's import path relative to the module root.
const Package = "./cmd/slate-init"

// Flags are the go build flags: no paths, no VCS stamp, no build ID, no
// symbols: the same source and Go version give the same bytes anywhere.
var Flags = []string{"-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid="}

// Env is set on top of the caller's environment: a static x86-64 Linux
// binary (the disk's root slots are x86-64), no user GOFLAGS, no toolchain
// switch.
var Env = []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + boot.Arch, "GOAMD64=v1", "GOFLAGS=", "GOTOOLCHAIN=local"}

// ModuleRoot returns the directory of the go.mod of the current directory's module.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// GoVersion is the version of the go command that Build uses.
func GoVersion() (string, error) {
	cmd := exec.Command("go", "env", "GOVERSION")
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go env GOVERSION: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Build compiles the init from the module at root and returns the binary.
func Build(root string) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "slate-init-build")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "slate-init")
	args := append([]string{"build"}, Flags...)
	args = append(args, "-o", out, Package)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), Env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build %s: %v\n%s", Package, err, stderr.String())
	}
	return os.ReadFile(out)
}

// Compress compresses the binary deterministically (zstd, one goroutine,
// fixed level and window).
func Compress(bin []byte) ([]byte, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(8<<20),
		zstd.WithEncoderCRC(true))
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	return enc.EncodeAll(bin, nil), nil
}

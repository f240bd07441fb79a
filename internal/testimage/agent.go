package testimage

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/slate-os/slate/boot"
)

// AgentPackage is the agent the builder puts in every root image.
const AgentPackage = "github.com/slate-os/slate/cmd/slate"

type built struct {
	once sync.Once
	path string
	err  error
}

var agent, tiny built

// AgentBinary builds the slate agent static (CGO_ENABLED=0), once per test
// process, and returns its path, for builder.Options.AgentBinary.
func AgentBinary(tb testing.TB) string {
	tb.Helper()
	agent.once.Do(func() {
		agent.path, agent.err = goBuild("slate", "", AgentPackage)
	})
	if agent.err != nil {
		tb.Fatalf("agent binary: %v", agent.err)
	}
	return agent.path
}

// tinyMain is a static program small enough to keep unit builds fast.
const tinyMain = `package main

import "os"

func main() { os.Stdout.WriteString("slate test agent\n") }
`

// StaticBinary builds a tiny static x86-64 Go program, once per test
// process, for unit tests that need an agent binary the builder accepts but
// never run it (QEMU tests use AgentBinary).
func StaticBinary(tb testing.TB) string {
	tb.Helper()
	tiny.once.Do(func() {
		src, err := os.MkdirTemp("", "slate-test-static-")
		if err != nil {
			tiny.err = err
			return
		}
		defer os.RemoveAll(src)
		main := filepath.Join(src, "main.go")
		if tiny.err = os.WriteFile(main, []byte(tinyMain), 0o644); tiny.err != nil {
			return
		}
		tiny.path, tiny.err = goBuild("static", src, main)
	})
	if tiny.err != nil {
		tb.Fatalf("static binary: %v", tiny.err)
	}
	return tiny.path
}

// goBuild builds target static for linux/amd64 into
// os.TempDir()/slate-test-agent/name, from dir ("" for the current one).
// It writes a temporary name and renames it, so test processes running side
// by side never read a half-written binary; the Go build cache makes every
// build after the first a link.
func goBuild(name, dir, target string) (string, error) {
	out := filepath.Join(os.TempDir(), "slate-test-agent")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	final := filepath.Join(out, name)
	tmp := fmt.Sprintf("%s.tmp-%d", final, os.Getpid())
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp, target)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+boot.OS, "GOARCH="+boot.Arch)
	if o, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("go build %s: %v\n%s", target, err, o)
	}
	return final, os.Rename(tmp, final)
}

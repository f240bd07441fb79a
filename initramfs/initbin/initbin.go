// Package initbin holds slate's init, prebuilt: cmd/slate-init compiled as a
// static x86-64 binary and compressed, embedded from slate-init.zst.
//
// Why a committed binary: the builder must find the init after a plain
// `go install ./cmd/slate` — one binary to install, no Go toolchain needed at
// build time, no second file to ship beside it. The init itself must stay a
// separate, small, static program (it is PID 1 in a few-megabyte initramfs
// and must not link the builder's dependencies), so it cannot simply be a
// mode of the slate binary. Embedding a prebuilt copy gives both.
//
// Regenerate it after changing anything the init links:
//
//	go generate ./initramfs/initbin    (make init-binary)
//
// The build is reproducible (see initramfs/internal/initbuild), and TestEmbeddedInitIsFresh
// rebuilds the init and fails when the embedded copy differs, so it cannot
// drift from its source unnoticed.
package initbin

import (
	_ "embed"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

//go:generate go run ./gen -o slate-init.zst

//go:embed slate-init.zst
var compressed []byte

var (
	once sync.Once
	bin  []byte
	err  error
)

// Binary returns the init binary (decompressed once; do not modify it).
func Binary() ([]byte, error) {
	once.Do(func() {
		var dec *zstd.Decoder
		dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return
		}
		defer dec.Close()
		bin, err = dec.DecodeAll(compressed, nil)
		if err != nil {
			err = fmt.Errorf("initbin: embedded init: %w", err)
		}
	})
	return bin, err
}

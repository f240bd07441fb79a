//go:build linux

package esp

import (
	"os"

	"golang.org/x/sys/unix"
)

// punchHole turns [off, off+n) of f into a hole, which reads as zeros and
// takes no space. It reports false where the filesystem cannot do that.
func punchHole(f *os.File, off, n int64) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		ferr = unix.Fallocate(int(fd), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	}); err != nil {
		return false
	}
	return ferr == nil
}

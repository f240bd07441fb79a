package esp

import (
	"fmt"
	"os"
)

// zeroRegion makes [off, off+n) of f read as zeros, so that nothing from an
// earlier build survives in the slack go-diskfs does not write (the tails of
// last clusters, free clusters, unused reserved sectors): that is part of
// what makes two builds byte-identical. A regular file shorter than off+n is
// extended (sparse); the part that already exists is hole-punched where the
// filesystem supports it and overwritten with zeros otherwise.
func zeroRegion(f *os.File, off, n int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	end := off + n
	if fi.Mode().IsRegular() {
		if fi.Size() < end {
			if err := f.Truncate(end); err != nil {
				return err
			}
		}
		// What lies beyond the old end of file is zero already.
		end = min(end, fi.Size())
		if end <= off || punchHole(f, off, end-off) {
			return nil
		}
	}
	zeros := make([]byte, 1<<20)
	for p := off; p < end; p += int64(len(zeros)) {
		w := zeros[:min(int64(len(zeros)), end-p)]
		if _, err := f.WriteAt(w, p); err != nil {
			return fmt.Errorf("writing zeros: %w", err)
		}
	}
	return nil
}

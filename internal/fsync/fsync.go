// Package fsync flushes files and directories to disk: a rename is durable
// only once the directory that holds it is synced.
package fsync

import (
	"fmt"
	"os"
)

// Path fsyncs a file or a directory, naming it in the error.
func Path(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}

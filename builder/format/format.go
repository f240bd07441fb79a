// Package format writes slate's raw disk in the formats clouds and
// hypervisors import (one function per format, each saying what its platform
// expects) and reads every one of them back to a raw disk (Open), for slate
// inspect.
//
// The builder always writes the raw disk first; a conversion reads it and
// writes a new file, which the caller renames into place. Every format here is
// reproducible: the same raw disk and Options give the same bytes. Where the
// tool stamps in something random or the time (qemu-img's VHD footer, its
// VMDK CID), the field is rewritten from Options afterwards.
package format

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The formats, as outputs.format and --format name them.
const (
	Raw     = "raw"
	QCOW2   = "qcow2"
	VHD     = "vhd"
	VMDK    = "vmdk"
	GCE     = "gce"
	RawZstd = "raw.zst"
	RawXz   = "raw.xz"
)

// Names are the formats, in the order help texts list them.
var Names = []string{Raw, QCOW2, VHD, VMDK, GCE, RawZstd, RawXz}

// Options are what a conversion stamps into its output besides the disk.
type Options struct {
	// Seed derives the identifiers a format carries (the VHD's unique ID,
	// the VMDK's CID): the build's seed, so a rebuild gives the same bytes.
	Seed []byte
	// ModTime is the build's creation time: the GCE tar's mtime, the VHD's
	// timestamp.
	ModTime time.Time
	// Name is the output's final file name, which a VMDK names in its own
	// descriptor; empty means the base name of the path written.
	Name string
	// Progress is told how many bytes of the raw disk are done; nil is quiet.
	Progress func(done int64)
}

// tools are the programs the formats are written with, and their Debian
// packages.
var tools = map[string][2]string{
	QCOW2: {"qemu-img", "qemu-utils"}, VHD: {"qemu-img", "qemu-utils"}, VMDK: {"qemu-img", "qemu-utils"},
	RawXz: {"xz", "xz-utils"},
}

// Check says whether format f can be written here: it is known, and the tool
// it is written with is installed. A build checks before its slow steps.
func Check(f string) error {
	if f != "" && !slices.Contains(Names, f) {
		return fmt.Errorf("unknown disk format %q (want one of %s)", f, strings.Join(Names, ", "))
	}
	if t, ok := tools[f]; ok {
		if _, err := exec.LookPath(t[0]); err != nil {
			return fmt.Errorf("%s is not installed (Debian: apt-get install %s)", t[0], t[1])
		}
	}
	return nil
}

// Write converts the raw disk at raw into format f at out, a new file.
// Raw is a plain copy.
func Write(ctx context.Context, f, raw, out string, o Options) error {
	var err error
	switch f {
	case Raw, "":
		err = copyRaw(ctx, raw, out, o)
	case QCOW2:
		err = ToQCOW2(ctx, raw, out, o)
	case VHD:
		err = ToVHD(ctx, raw, out, o)
	case VMDK:
		err = ToVMDK(ctx, raw, out, o)
	case GCE:
		err = ToGCE(ctx, raw, out, o)
	case RawZstd:
		err = ToZstd(ctx, raw, out, o)
	case RawXz:
		err = ToXz(ctx, raw, out, o)
	default:
		return fmt.Errorf("unknown disk format %q (want one of %s)", f, strings.Join(Names, ", "))
	}
	if err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	return nil
}

// copyRaw copies raw to out, keeping the holes (Write's Raw case; the
// builder itself just renames its raw disk).
func copyRaw(ctx context.Context, raw, out string, o Options) error {
	in, err := os.Open(raw)
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := copySparse(f, &reader{ctx: ctx, r: in, progress: o.Progress}); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return f.Close()
}

// ToQCOW2 writes QEMU's own format, OpenStack Glance's usual one, through
// qemu-img, which writes it reproducibly: only the clusters that hold data.
func ToQCOW2(ctx context.Context, raw, out string, o Options) error {
	return qemuImg(ctx, raw, o.Progress, "convert", "-f", "raw", "-O", "qcow2", raw, out)
}

// qemuImg runs qemu-img; with progress, it asks for -p and passes its
// percentages on as bytes of raw done.
func qemuImg(ctx context.Context, raw string, progress func(int64), args ...string) error {
	var total int64
	if progress != nil {
		if fi, err := os.Stat(raw); err == nil {
			total = fi.Size()
			args = append([]string{args[0], "-p"}, args[1:]...)
		}
	}
	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	var stdout io.ReadCloser
	if total > 0 {
		var err error
		if stdout, err = cmd.StdoutPipe(); err != nil {
			return err
		}
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return errors.New("qemu-img is not installed (Debian: apt-get install qemu-utils)")
		}
		return fmt.Errorf("qemu-img: %w", err)
	}
	if stdout != nil {
		readQemuProgress(stdout, total, progress)
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("qemu-img %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// readQemuProgress reads qemu-img -p's "    (12.34/100%)\r" updates.
func readQemuProgress(r io.Reader, total int64, progress func(int64)) {
	s := bufio.NewScanner(r)
	s.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
			return i + 1, data[:i], nil
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	for s.Scan() {
		t := strings.TrimSpace(s.Text())
		t, ok := strings.CutPrefix(t, "(")
		if !ok {
			continue
		}
		pct, _, ok := strings.Cut(t, "/")
		if v, err := strconv.ParseFloat(pct, 64); ok && err == nil {
			progress(int64(v / 100 * float64(total)))
		}
	}
	io.Copy(io.Discard, r)
}

// reader reads the raw disk for the conversions done in Go: it reports
// progress and stops when ctx is done.
type reader struct {
	ctx      context.Context
	r        io.Reader
	n        int64
	progress func(int64)
}

func (r *reader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	r.n += int64(n)
	if r.progress != nil && n > 0 {
		r.progress(r.n)
	}
	return n, err
}

// chunk is the unit copySparse checks for zeros: whatever a filesystem's
// block size, a 64 KiB run of zeros left as a hole keeps the copy sparse.
const chunk = 64 << 10

var zeros = make([]byte, chunk)

// copySparse copies r to the start of f, leaving runs of zeros as holes, so
// that a disk image stays as sparse as the one it came from.
func copySparse(f *os.File, r io.Reader) error {
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, err := io.ReadFull(r, buf)
		for i := 0; i < n; i += chunk {
			c := buf[i:min(i+chunk, n)]
			if !bytes.Equal(c, zeros[:len(c)]) {
				if _, err := f.WriteAt(c, off); err != nil {
					return err
				}
			}
			off += int64(len(c))
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return f.Truncate(off)
		}
		if err != nil {
			return err
		}
	}
}

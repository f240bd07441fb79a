package upgrade

// Under Secure Boot a slot boots a signed Unified Kernel Image
// (artifact.UKIMediaType) and nothing else: the firmware refuses whatever
// its db does not trust, and the entry's options count for nothing (the
// image's signed command line does). An upgrade checks what the firmware
// will check before it changes anything: a node with Secure Boot on takes
// only an artifact whose UKI, and whose systemd-boot when it would replace
// the ESP's, verify against a certificate in the node's enrolled db. An
// artifact that fails would leave a slot that never boots, and a loader
// that fails would leave a node that boots nothing at all.
//
// The signing key never reaches a node: the agent installs the UKI as it
// was built and signed.

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/uki"
	"github.com/slate-os/slate/initramfs/init/cmdline"
	"github.com/slate-os/slate/secureboot"
)

// maxUKISize bounds the UKI read into memory: a kernel and an initramfs.
const maxUKISize = 512 << 20

// ukiPlan is the artifact's UKI, read and checked in check; nil when the
// artifact has none (the slot then boots its kernel and initramfs).
type ukiPlan struct {
	blob []byte
	// signedBy names the db certificate that verified it; "" when Secure
	// Boot is off on this node (nothing was checked against a db).
	signedBy string
}

// planUKI reads and checks the artifact's UKI against the artifact's
// config and, under Secure Boot, against the node's db, together with the
// systemd-boot the loader plan would install.
func planUKI(o *Options, a *artifact.Artifact, lp *loaderPlan) (*ukiPlan, error) {
	on, err := secureboot.Enabled(o.EFIVars)
	if err != nil {
		return nil, refused(fmt.Errorf("cannot tell whether Secure Boot is on: %w", err))
	}
	if a.UKI == nil {
		if on {
			return nil, refused(fmt.Errorf("artifact %s has no unified kernel image, and this node boots with Secure Boot on: it would not boot (build the image with secureBoot)", o.Ref))
		}
		return nil, nil
	}
	blob, err := readUKILayer(a)
	if err != nil {
		return nil, fmt.Errorf("artifact %s: its unified kernel image layer: %w", o.Ref, err)
	}
	if err := checkUKI(blob, a.Config); err != nil {
		return nil, refused(fmt.Errorf("artifact %s: its unified kernel image %w", o.Ref, err))
	}
	p := &ukiPlan{blob: blob}
	if !on {
		return p, nil
	}
	db, err := secureboot.EnrolledDB(o.EFIVars)
	if err != nil {
		return nil, refused(fmt.Errorf("Secure Boot is on, but the enrolled db cannot be read: %w", err))
	}
	cert, err := secureboot.Verify(blob, db)
	if err != nil {
		return nil, refused(fmt.Errorf("artifact %s: its unified kernel image would not boot here: %w", o.Ref, err))
	}
	p.signedBy = cert.Subject.String()
	if len(lp.installs) > 0 {
		if _, err := secureboot.Verify(lp.blob, db); err != nil {
			return nil, refused(fmt.Errorf("artifact %s: its systemd-boot would replace the ESP's but would not boot here: %w", o.Ref, err))
		}
	}
	return p, nil
}

// checkUKI refuses a UKI that does not boot the artifact's root: its
// signed command line must carry the config's root hash and version, and
// nothing that names a node's slot or partitions.
func checkUKI(blob []byte, c artifact.Config) error {
	img, err := uki.Read(blob)
	if err != nil {
		return err
	}
	if len(img.Linux) == 0 {
		return fmt.Errorf("has no .linux section")
	}
	// Read as the init reads it (quotes removed, spaces inside them kept),
	// not word by word: `"slate.config=..."` sets slate.config there.
	args := cmdline.Split(string(img.Cmdline))
	if h, _ := cmdline.Value(args, boot.ArgRootHash); h != c.Root.RootHash {
		return fmt.Errorf("carries root hash %q, but config.root.rootHash is %q", h, c.Root.RootHash)
	}
	if v, _ := cmdline.Value(args, boot.ArgVersion); v != c.Version {
		return fmt.Errorf("carries version %q, but config.version is %q", v, c.Version)
	}
	for _, f := range args {
		k, _, _ := strings.Cut(f, "=")
		if slices.Contains([]string{boot.ArgSlot, boot.ArgRoot, boot.ArgState, boot.ArgConfig}, k) {
			return fmt.Errorf("carries %s: a unified kernel image must fit either slot of any node", f)
		}
	}
	return nil
}

// readUKILayer reads the UKI layer whole; the stream's digest check at its
// end fails a blob that is not what the manifest says.
func readUKILayer(a *artifact.Artifact) ([]byte, error) {
	size, err := a.UKI.Size()
	if err != nil {
		return nil, err
	}
	if size > maxUKISize {
		return nil, fmt.Errorf("%d bytes, more than a unified kernel image may be here (%d)", size, maxUKISize)
	}
	rc, err := a.UKI.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxUKISize+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != size {
		return nil, fmt.Errorf("%d bytes, the manifest says %d", len(b), size)
	}
	return b, nil
}

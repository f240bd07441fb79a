package boot

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// What the builder bakes into every root it makes (package
// builder/nodefiles) for the agent of that image: inside the squashfs, so
// under dm-verity, with the root hash on the kernel command line. Unlike a
// slot's release.json on the ESP, which anything that can write the ESP can
// change, these are as trustworthy as the running image itself.
const (
	// ImageDir holds them, without a leading slash (a path in the image).
	ImageDir = "usr/lib/slate"
	// ImageInfoFile is the image's ImageInfo, JSON.
	ImageInfoFile = ImageDir + "/image.json"
	// UpdateKeysDir holds the public keys an upgrade's artifact must be
	// signed by (one of them): NN.pub, PKIX PEM, from the image spec's
	// update.publicKeys and `slate build --update-key`.
	UpdateKeysDir = ImageDir + "/update-keys"
	// SBATLevelFile is, in a Secure Boot image, the signed payload that
	// raises a node's revocation level to the image's SBAT generation
	// (secureboot.SBATLevelPayload); the agent writes it once the image
	// has booted well.
	SBATLevelFile = ImageDir + "/sbat-level.auth"
)

// ImageInfo is /usr/lib/slate/image.json: what the image is, and its update
// policy besides the keys.
type ImageInfo struct {
	// Version is the image's version label.
	Version string `json:"version"`
	// Source is the digest of the OCI image it was built from.
	Source string `json:"source"`
	// Created is the source image's creation time, as the update artifact's
	// config has it: the agent refuses an artifact created before it (a
	// downgrade) unless asked (slate upgrade --allow-downgrade).
	Created time.Time `json:"created"`
	// AllowUnsigned is the image spec's update.allowUnsigned: the agent
	// installs artifacts that no trusted key signed (development).
	AllowUnsigned bool `json:"allowUnsigned,omitempty"`
}

// Marshal renders image.json: indented JSON and a final newline, the same
// bytes for the same info.
func (i ImageInfo) Marshal() []byte {
	i.Created = i.Created.UTC()
	b, err := json.MarshalIndent(i, "", "  ")
	if err != nil {
		panic(err) // only plain fields: cannot fail
	}
	return append(b, '\n')
}

// ParseImageInfo decodes image.json; it needs a version and a creation time.
func ParseImageInfo(data []byte) (*ImageInfo, error) {
	var i ImageInfo
	if err := json.Unmarshal(data, &i); err != nil {
		return nil, fmt.Errorf("image.json: %w", err)
	}
	if i.Version == "" {
		return nil, fmt.Errorf("image.json: no version")
	}
	if i.Created.IsZero() {
		return nil, fmt.Errorf("image.json: no created time")
	}
	return &i, nil
}

// ImageCmdlineArgs are the slate.* kernel arguments an image's own command
// line (the spec's kernel.cmdline and kernel.extraCmdline, an update
// artifact's cmdline) may carry. Every other slate.* argument is the boot
// entry writer's (slot, partitions, root hash, version) or the node's own
// (slate.config: the node config, which an image must not replace).
// slate.platform is the image's to pin: an image for one cloud (or
// slate.platform=none for none) need not rely on the DMI strings.
var ImageCmdlineArgs = []string{ArgRebootDelay, ArgPlatform}

// ReservedCmdlineArg returns the first argument of an image's command line
// that sets a slate.* parameter other than ImageCmdlineArgs, as written, or
// "" when there is none. It reads the line more widely than any parser
// does: every white-space separated word, double quotes removed, so that no
// quoting hides an argument from it that the kernel or the init would see.
func ReservedCmdlineArg(cmdline string) string {
	for _, f := range strings.Fields(cmdline) {
		key, _, _ := strings.Cut(strings.ReplaceAll(f, `"`, ""), "=")
		if strings.HasPrefix(key, "slate.") && !slices.Contains(ImageCmdlineArgs, key) {
			return f
		}
	}
	return ""
}

package boot

import (
	"encoding/json"
	"fmt"
	"time"
)

// Release describes the image held by one slot; kept on the ESP as
// slate/<slot>/release.json. The boot entry says what boots; the release says
// what the slot's partition holds, for status, rollback and inspection.
// The builder writes slot A's on a new disk, the agent a slot's after an
// upgrade wrote it.
type Release struct {
	Slot          Slot   `json:"slot"`
	Version       string `json:"version"`
	Artifact      string `json:"artifact,omitempty"` // update artifact manifest digest; empty when the builder wrote the slot
	SignedBy      string `json:"signedBy,omitempty"` // the key that verified the artifact's signature (sha256:<16 hex> of its PKIX form); empty when none was asked for
	Source        string `json:"source"`             // source OCI image digest
	RootHash      string `json:"rootHash"`
	RootSize      int64  `json:"rootSize"`
	KernelRelease string `json:"kernelRelease"`
	// SystemdBootVersion is the version of the systemd-boot the image
	// carries (its LoaderInfo), whether or not it went onto the ESP: an
	// upgrade installs it only over an older one. Empty when unknown.
	SystemdBootVersion string    `json:"systemdBootVersion,omitempty"`
	Architecture       string    `json:"architecture"`
	Created            time.Time `json:"created"`
	Written            time.Time `json:"written,omitzero"` // set by the agent; zero from the builder (reproducible)
}

// ReleaseName is the release file's name in a slot's ESP directory.
const ReleaseName = "release.json"

// ReleasePath is the slot's release file on the ESP, with a leading slash
// like KernelPath.
func (s Slot) ReleasePath() string { return "/" + s.ESPDir() + "/" + ReleaseName }

// Marshal renders the release file: indented JSON and a final newline, the
// same bytes for the same release.
func (r Release) Marshal() []byte {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		panic(err) // only plain fields: cannot fail
	}
	return append(b, '\n')
}

// ParseRelease decodes a release file and checks that it names a slot, a
// version and a root hash.
func ParseRelease(data []byte) (*Release, error) {
	var r Release
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", ReleaseName, err)
	}
	if _, err := ParseSlot(string(r.Slot)); err != nil {
		return nil, fmt.Errorf("%s: slot: %w", ReleaseName, err)
	}
	if r.Version == "" {
		return nil, fmt.Errorf("%s: no version", ReleaseName)
	}
	if r.RootHash == "" {
		return nil, fmt.Errorf("%s: no rootHash", ReleaseName)
	}
	return &r, nil
}

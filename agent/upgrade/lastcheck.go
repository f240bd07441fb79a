package upgrade

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/slate-os/slate/internal/clip"
	"github.com/slate-os/slate/internal/fsync"
)

// ErrRefused is wrapped into the error of an upgrade that a check turned
// down before anything was changed: a policy that trusts nothing, an
// artifact no trusted key signed, a downgrade, a running slot that is no
// fallback, an artifact that does not fit, an extension the new image
// cannot have. Any other error is a failure (the registry unreachable, an
// I/O error, a step that failed midway). The error's text is unchanged.
var ErrRefused = errors.New("upgrade refused")

// refused marks err as a refusal (ErrRefused) without changing its text;
// errors.Is still finds what err wraps.
func refused(err error) error {
	if err == nil || errors.Is(err, ErrRefused) {
		return err
	}
	return refusal{err}
}

type refusal struct{ err error }

func (r refusal) Error() string   { return r.err.Error() }
func (r refusal) Unwrap() []error { return []error{r.err, ErrRefused} }

// LastCheck is the outcome of the last `slate upgrade` run, kept on the
// state partition at LastCheckFile: whether the node could check for an
// update, what it was offered and what it did. `slate status` shows it and
// `slate metrics` exports it.
type LastCheck struct {
	Time time.Time `json:"time"`
	// Result is CheckUpgraded, CheckUpToDate, CheckRefused or CheckError.
	Result string `json:"result"`
	// Ref is the artifact asked for (the argument or update.source).
	Ref string `json:"ref,omitempty"`
	// Version and Digest are what the artifact offered, as its config
	// claims (a refused artifact's claim may be unverified); empty when
	// it could not be opened.
	Version string `json:"version,omitempty"`
	Digest  string `json:"digest,omitempty"`
	// Error is why the check was refused or failed, cut to MaxCheckError.
	Error string `json:"error,omitempty"`
}

// Results of an update check.
const (
	CheckUpgraded = "upgraded"
	CheckUpToDate = "up-to-date"
	CheckRefused  = "refused"
	CheckError    = "error"
)

// Where the last check is kept.
const (
	// LastCheckFileName is its name under the agent's /var/lib/slate.
	LastCheckFileName = "update-check.json"
	// LastCheckFile is its path on a node; the state partition is /var.
	LastCheckFile = "/var/lib/slate/" + LastCheckFileName
)

// MaxCheckError bounds LastCheck.Error: a registry's answer can be long.
const MaxCheckError = 1024

// CheckResult classifies the error a `slate upgrade` run ended with: nil
// is CheckUpgraded, ErrUpToDate CheckUpToDate, ErrRefused CheckRefused,
// anything else CheckError.
func CheckResult(err error) string {
	switch {
	case err == nil:
		return CheckUpgraded
	case errors.Is(err, ErrUpToDate):
		return CheckUpToDate
	case errors.Is(err, ErrRefused):
		return CheckRefused
	}
	return CheckError
}

// Success says whether the check reached the artifact and found nothing
// wrong: an upgrade, or nothing to do.
func (c *LastCheck) Success() bool {
	return c.Result == CheckUpgraded || c.Result == CheckUpToDate
}

// WriteLastCheck keeps c at path (atomically and durably: written,
// fsynced, renamed), creating its directory; mode 0644, as the rest of the
// agent's records (it holds no secret: a registry's credentials are never
// in a reference).
func WriteLastCheck(path string, c LastCheck) error {
	c.Error = clip.String(c.Error, MaxCheckError)
	return fsync.WriteJSON(path, c)
}

// ReadLastCheck reads the check kept at path; nil, nil when there is none
// (no `slate upgrade` ran since the node was imaged).
func ReadLastCheck(path string) (*LastCheck, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c LastCheck
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

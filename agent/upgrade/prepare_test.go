package upgrade

import (
	"context"
	"errors"
	"maps"
	"testing"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/signature"
)

// Options.Prepare runs once the artifact is trusted and before anything is
// written; its error refuses the upgrade with nothing changed.
func TestPrepare(t *testing.T) {
	good := makeArtifact(t, art{version: "2.0"})
	unsigned := makeArtifact(t, art{version: "2.1", unsigned: true})
	refusal := errors.New("extensions[0] gpu: no match")

	t.Run("refuses", func(t *testing.T) {
		n := newNode(t, "slate-a.conf")
		before := n.snapshot(t)
		o := n.options(good.ref)
		var got *artifact.Artifact
		o.Prepare = func(ctx context.Context, a *artifact.Artifact) error {
			got = a
			return refusal
		}
		_, err := Run(context.Background(), o)
		if !errors.Is(err, refusal) || CheckResult(err) != CheckRefused || err.Error() != refusal.Error() {
			t.Fatalf("Run: %v (%s), want the refusal", err, CheckResult(err))
		}
		if got == nil || got.Config.Version != "2.0" {
			t.Errorf("Prepare got %+v", got)
		}
		if after := n.snapshot(t); !maps.Equal(before, after) {
			t.Error("a refused upgrade changed the ESP or the slot")
		}
	})
	t.Run("not called for an untrusted artifact", func(t *testing.T) {
		n := newNode(t, "slate-a.conf")
		o := n.options(unsigned.ref)
		o.Prepare = func(context.Context, *artifact.Artifact) error {
			t.Error("Prepare called for an unsigned artifact")
			return nil
		}
		if _, err := Run(context.Background(), o); err == nil {
			t.Fatal("an unsigned artifact was installed")
		}
	})
	t.Run("lets it through", func(t *testing.T) {
		n := newNode(t, "slate-a.conf")
		o := n.options(good.ref)
		called := false
		o.Prepare = func(context.Context, *artifact.Artifact) error { called = true; return nil }
		if _, err := Run(context.Background(), o); err != nil || !called {
			t.Fatalf("Run: %v (Prepare called: %v)", err, called)
		}
	})
}

func TestPolicyVerify(t *testing.T) {
	signed := makeArtifact(t, art{version: "2.0"})
	unsigned := makeArtifact(t, art{version: "2.1", unsigned: true})
	open := func(ref string) *artifact.Artifact {
		a, err := artifact.Open(ref)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	p := imagePolicy(imageKey.Public())
	if k, err := p.Verify(open(signed.ref)); err != nil || k == nil || k.ID != signature.KeyID(imageKey.Public()) {
		t.Errorf("signed: %v, %v", k, err)
	}
	if k, err := p.Verify(open(unsigned.ref)); err == nil || k != nil {
		t.Errorf("unsigned: %v, %v", k, err)
	}
	p.AllowUnsigned = []string{FromConfig}
	k, why, err := p.VerifyUnsigned(open(unsigned.ref))
	if err != nil || k != nil || why == nil {
		t.Errorf("unsigned, allowed: %v, %v, %v", k, why, err)
	}
	if _, err := (&Policy{}).Verify(open(signed.ref)); !errors.Is(err, ErrNoTrust) {
		t.Errorf("no trust: %v", err)
	}
}

package nodetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/signature"
)

// GuestHost is the host's loopback as QEMU's user network shows it to the
// guest.
const GuestHost = "10.0.2.2"

// registry is an OCI registry on the host's loopback holding V2, for the
// run's nodes. Its blobs are in memory: V2 is one root, a kernel and an
// initramfs.
type registry struct {
	srv       *http.Server
	host      string // 127.0.0.1:PORT
	port      int
	publicKey string // PEM of the key that signed V2
}

func startRegistry() (*registry, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("the test registry: %w", err)
	}
	r := &registry{host: l.Addr().String(), port: l.Addr().(*net.TCPAddr).Port}
	r.srv = &http.Server{Handler: ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))}
	go r.srv.Serve(l)
	return r, nil
}

func (r *registry) close() { r.srv.Close() }

// publish starts the registry, pushes V2's artifact to it and signs it
// there with a key made for this run, which the test configs add to the
// keys the node trusts (a node config adds keys, never replaces the
// image's).
func (e *env) publish(ctx context.Context, to Image) error {
	r, err := startRegistry()
	if err != nil {
		return err
	}
	e.reg = r
	opts := []artifact.Option{artifact.Insecure(), artifact.WithKeychain(authn.NewMultiKeychain()), artifact.WithContext(ctx)}
	p, err := artifact.Push(to.Artifact, r.host+"/slate-test/node", opts...)
	if err != nil {
		return fmt.Errorf("V2: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	if _, err := artifact.Sign(p.Ref.Context().Digest(p.Digest.String()).String(), key, p.Ref.Context().Name(), opts...); err != nil {
		return fmt.Errorf("signing V2 in the test registry: %w", err)
	}
	pem, err := signature.MarshalPublicKey(key.Public())
	if err != nil {
		return err
	}
	r.publicKey = strings.TrimSpace(string(pem))
	e.v2Source = fmt.Sprintf("%s:%d/slate-test/node:%s", GuestHost, r.port, e.v2)
	return nil
}

package logship

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/slate-os/slate/boot/nodeconfig"
)

// TLSConfig is the TLS configuration the node config's logging section
// gives: the collector's certificate must chain to logging.ca (the system
// roots when empty) and carry logging.serverName (the collector's host
// when empty); logging.clientCertificate and logging.clientKey, when
// given, authenticate the node. TLS 1.2 at least. Errors name the field.
func TLSConfig(l nodeconfig.Logging) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: l.ServerName}
	if l.CA != "" {
		certs, err := parseCertificates([]byte(l.CA))
		if err != nil {
			return nil, fmt.Errorf("logging.ca: %w", err)
		}
		pool := x509.NewCertPool()
		for _, c := range certs {
			pool.AddCert(c)
		}
		cfg.RootCAs = pool
	}
	switch {
	case l.ClientCertificate == "" && l.ClientKey == "":
	case l.ClientCertificate == "":
		return nil, errors.New("logging.clientCertificate: missing: logging.clientKey needs it")
	case l.ClientKey == "":
		return nil, errors.New("logging.clientKey: missing: logging.clientCertificate needs it")
	default:
		if _, err := parseCertificates([]byte(l.ClientCertificate)); err != nil {
			return nil, fmt.Errorf("logging.clientCertificate: %w", err)
		}
		if err := checkKey([]byte(l.ClientKey)); err != nil {
			return nil, fmt.Errorf("logging.clientKey: %w", err)
		}
		pair, err := tls.X509KeyPair([]byte(l.ClientCertificate), []byte(l.ClientKey))
		if err != nil {
			return nil, fmt.Errorf("logging.clientKey: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// parseCertificates parses PEM CERTIFICATE blocks; anything else is an
// error.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for i := 1; ; i++ {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %s, want CERTIFICATE", i, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate (-----BEGIN CERTIFICATE-----)")
	}
	return certs, nil
}

// checkKey checks that data is one PEM private key Go's TLS can use:
// PKCS #8, PKCS #1 (RSA) or SEC 1 (EC).
func checkKey(data []byte) error {
	b, _ := pem.Decode(data)
	if b == nil {
		return errors.New("no PEM private key (-----BEGIN PRIVATE KEY-----)")
	}
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		var k any
		if k, err = x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
			switch k.(type) {
			case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
			default:
				err = fmt.Errorf("a %T, which TLS cannot use", k)
			}
		}
	case "RSA PRIVATE KEY":
		_, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		_, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return fmt.Errorf("a PEM block of type %s, want PRIVATE KEY", b.Type)
	}
	return err
}

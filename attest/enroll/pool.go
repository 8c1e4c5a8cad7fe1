package enroll

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// CAPool is a set of CA certificates an operator trusts: TPM vendors' EK
// CAs, or a cloud's AK root. Every certificate in it is a trust anchor,
// root or intermediate alike, as in Keylime's tpm_cert_store: an
// intermediate given alone vouches for what it signed.
type CAPool struct {
	pool  *x509.CertPool
	certs []*x509.Certificate
	// Sources names each certificate's file, for messages.
	sources map[*x509.Certificate]string
}

// NewCAPool makes a pool of the given certificates.
func NewCAPool(certs ...*x509.Certificate) *CAPool {
	p := &CAPool{pool: x509.NewCertPool(), sources: map[*x509.Certificate]string{}}
	for _, c := range certs {
		p.add(c, "")
	}
	return p
}

func (p *CAPool) add(c *x509.Certificate, src string) {
	p.pool.AddCert(c)
	p.certs = append(p.certs, c)
	p.sources[c] = src
}

// Len is the number of certificates in the pool.
func (p *CAPool) Len() int { return len(p.certs) }

// PEM encodes the pool's certificates as one PEM bundle (what a fleet
// verifier stores for an agent).
func (p *CAPool) PEM() []byte {
	var b bytes.Buffer
	for _, c := range p.certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// caExts are the file name endings read from a directory.
var caExts = []string{".pem", ".crt", ".cer", ".der"}

// LoadCAPool reads CA certificates from files and directories: each file
// holds one DER certificate or any number of PEM ones; a directory
// (Keylime's tpm_cert_store, say) contributes its files ending in .pem,
// .crt, .cer or .der, not its subdirectories. A file that holds no
// certificate, one that does not parse, or a certificate whose basic
// constraints say it is not a CA, is an error naming the file.
func LoadCAPool(paths ...string) (*CAPool, error) {
	p := NewCAPool()
	for _, path := range paths {
		st, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		files := []string{path}
		if st.IsDir() {
			entries, err := os.ReadDir(path)
			if err != nil {
				return nil, err
			}
			files = nil
			for _, e := range entries {
				if !e.IsDir() && slices.Contains(caExts, strings.ToLower(filepath.Ext(e.Name()))) {
					files = append(files, filepath.Join(path, e.Name()))
				}
			}
			if len(files) == 0 {
				return nil, fmt.Errorf("%s: no certificate files (*.pem, *.crt, *.cer, *.der)", path)
			}
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			certs, err := ParseCertificates(b)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			for _, c := range certs {
				if c.BasicConstraintsValid && !c.IsCA {
					return nil, fmt.Errorf("%s: %q is not a CA certificate (basic constraints say CA:FALSE): a CA bundle holds CAs, not EK or AK certificates", f, name(c))
				}
				p.add(c, f)
			}
		}
	}
	if p.Len() == 0 {
		return nil, errors.New("no CA certificates given")
	}
	return p, nil
}

// ParseCertificates reads PEM certificates (one or more), or one DER
// certificate, with the leniency of [ParseEKCert] (trailing bytes,
// serial numbers).
func ParseCertificates(b []byte) ([]*x509.Certificate, error) {
	if !bytes.Contains(b, []byte("-----BEGIN")) {
		c, _, err := parseLenient(b)
		if err != nil {
			return nil, err
		}
		return []*x509.Certificate{c}, nil
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, _, err := parseLenient(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return out, nil
}

// Verify checks that c chains to a certificate of the pool at now, with
// intermediates (which are not trusted by themselves: the AK certificate
// of a cloud vTPM sometimes comes with its intermediate). Extended key
// usages are not checked (EK certificates carry the TCG one, or none);
// the caller checks what the certificate is for. It returns the chain,
// leaf first.
func (p *CAPool) Verify(c *x509.Certificate, now time.Time, intermediates ...*x509.Certificate) ([]*x509.Certificate, error) {
	inter := x509.NewCertPool()
	for _, i := range append(slices.Clone(p.certs), intermediates...) {
		inter.AddCert(i)
	}
	chains, err := c.Verify(x509.VerifyOptions{
		Roots: p.pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return nil, fmt.Errorf("issuer %q is not in the CA bundle (%d certificates), nor signed by one of them: the bundle needs the issuing CA and any intermediates up to a root", c.Issuer.String(), p.Len())
		}
		return nil, err
	}
	if len(chains[0]) == 1 {
		return nil, fmt.Errorf("%q is itself in the CA bundle: a bundle vouches for certificates it signed, not for its own members", name(c))
	}
	// Every pool certificate is an anchor: show the longest chain, up to
	// the root when the pool has it.
	best := chains[0]
	for _, ch := range chains[1:] {
		if len(ch) > len(best) {
			best = ch
		}
	}
	return best, nil
}

// Source names the file a pool certificate came from ("" when unknown).
func (p *CAPool) Source(c *x509.Certificate) string {
	for k, v := range p.sources {
		if k.Equal(c) {
			return v
		}
	}
	return ""
}

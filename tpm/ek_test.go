package tpm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/rimon-dev/rimon/attest/enroll"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/tpm"
)

// swtpm_setup --create-ek-cert makes an RSA 2048 EK (low range) and an ECC
// P-384 EK (high range, template H-3): rimon finds both certificates, and
// the keys persisted by swtpm_setup are the ones rimon's templates make.
func TestReadEKsSwtpm(t *testing.T) {
	ctx := context.Background()
	p := testtpm.StartSwtpmEK(t)
	tp, err := tpm.Open(ctx, p.Spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	eks, err := tp.ReadEKs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(eks) != 2 || eks[0].Slot.CertIndex != 0x01C00002 || eks[1].Slot.CertIndex != 0x01C00016 {
		t.Fatalf("ReadEKs = %d EKs %v, want RSA at 0x01C00002 and P-384 at 0x01C00016", len(eks), eks)
	}
	for _, ek := range eks {
		if ek.Handle != ek.Slot.Handle {
			t.Errorf("%s: EK read from handle 0x%x, want the persisted 0x%x (its public area is not the template's?)", ek.Slot.Label, uint32(ek.Handle), uint32(ek.Slot.Handle))
		}
		cert, err := enroll.ParseEKCert(ek.Cert)
		if err != nil {
			t.Fatalf("%s: %v", ek.Slot.Label, err)
		}
		if !enroll.SameKey(cert.Cert.PublicKey, ek.Key) {
			t.Errorf("%s: the certificate's key is not the EK", ek.Slot.Label)
		}
		// The template makes the same key again.
		again, err := tp.CreateEK(ctx, ek.Slot)
		if err != nil {
			t.Fatal(err)
		}
		if !enroll.SameKey(again.Key, ek.Key) || !bytes.Equal(again.Name.Buffer, ek.Name.Buffer) {
			t.Errorf("%s: CreatePrimary with the template makes another key than the persisted EK", ek.Slot.Label)
		}
	}
}

// Credential activation with both EKs: the low-range RSA EK needs a
// policy session (PolicySecret with the endorsement hierarchy), the
// high-range P-384 one the empty password. The secret comes back only for
// the AK whose name the credential was made for.
func TestActivateCredentialSwtpm(t *testing.T) {
	ctx := context.Background()
	p := testtpm.StartSwtpmEK(t)
	tp, err := tpm.Open(ctx, p.Spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ak, _, err := tp.ProvisionAK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eks, err := tp.ReadEKs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ek := range eks {
		for _, handle := range []tpm2.TPMHandle{ek.Handle, 0} {
			pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ek.Public)
			if err != nil {
				t.Fatal(err)
			}
			secret := []byte("a secret for " + ek.Slot.Label)
			id, enc, err := enroll.MakeCredential(rand.Reader, pub, ak.Name.Buffer, secret)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tp.ActivateCredential(ctx, ek.Slot, handle, id, enc)
			if err != nil {
				t.Fatalf("%s (handle 0x%x): %v", ek.Slot.Label, uint32(handle), err)
			}
			if !bytes.Equal(got, secret) {
				t.Errorf("%s: ActivateCredential = %q, want %q", ek.Slot.Label, got, secret)
			}
			// A credential for another name does not activate.
			other := append([]byte(nil), ak.Name.Buffer...)
			other[len(other)-1] ^= 1
			id, enc, _ = enroll.MakeCredential(rand.Reader, pub, other, secret)
			if _, err := tp.ActivateCredential(ctx, ek.Slot, handle, id, enc); err == nil {
				t.Errorf("%s: a credential for another AK name activates", ek.Slot.Label)
			}
		}
	}
}

// The simulator has no EK certificate; its EK is made from the template.
func TestEKSimulator(t *testing.T) {
	ctx := context.Background()
	tp := testtpm.OpenKind(t, "sim")
	if _, err := tp.ReadEKCerts(ctx); !errors.Is(err, tpm.ErrNoEK) {
		t.Errorf("ReadEKCerts on the simulator = %v, want ErrNoEK", err)
	}
	if _, _, err := tp.ProvisionAK(ctx); err != nil {
		t.Fatal(err)
	}
	ak, err := tp.ReadAK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range tpm.EKSlots() {
		ek, err := tp.CreateEK(ctx, s)
		if err != nil && s.Template.Type == tpm2.TPMAlgRSA && errors.Is(err, tpm2.TPMRCValue) {
			t.Logf("%s: the simulator does not make such keys: %v", s.Label, err)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", s.Label, err)
		}
		pub, _ := tpm2.Unmarshal[tpm2.TPMTPublic](ek.Public)
		if !tpm.SameTemplate(pub, &s.Template) {
			t.Errorf("%s: the key made is not of the template", s.Label)
		}
		// DefaultEKPublic, which make-credential uses for a bare key,
		// gives the template's parameters back.
		def, err := enroll.DefaultEKPublic(ek.Key)
		if err != nil {
			t.Fatalf("%s: %v", s.Label, err)
		}
		if s.CertIndex >= 0x01C00012 && s.CertIndex != 0x01C00016 {
			continue // RSA 2048 and P-256 map to the low range by default
		}
		id, enc, err := enroll.MakeCredential(rand.Reader, def, ak.Name.Buffer, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tp.ActivateCredential(ctx, s, 0, id, enc); err != nil || string(got) != "x" {
			t.Errorf("%s: activation of a credential made from the bare key = %q, %v", s.Label, got, err)
		}
	}
}

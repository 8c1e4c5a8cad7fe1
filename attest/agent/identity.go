package agent

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/rimon-dev/rimon/attest/enroll"
	"github.com/rimon-dev/rimon/tpm"
)

// Identity collects what GET /v1/identity serves (see [enroll.Identity]):
// the EK certificates and the EK each certifies, the AK, and the cloud AK
// certificates. An EK persisted at its slot's handle whose key is not its
// certificate's is replaced by the key the template makes, when that one
// is the certificate's. A TPM without EK certificates gives an identity
// without EKs (AK certificates may still vouch).
func Identity(ctx context.Context, t *tpm.TPM) (*enroll.Identity, error) {
	eks, err := t.ReadEKs(ctx)
	if err != nil && !errors.Is(err, tpm.ErrNoEK) {
		return nil, err
	}
	id := &enroll.Identity{Version: enroll.IdentityVersion}
	for _, ek := range eks {
		if ek.Handle != 0 {
			if c, err := enroll.ParseEKCert(ek.Cert); err == nil && !enroll.SameKey(c.Cert.PublicKey, ek.Key) {
				if again, err := t.CreateEK(ctx, ek.Slot); err == nil && enroll.SameKey(c.Cert.PublicKey, again.Key) {
					again.Cert = ek.Cert
					ek = *again
				}
			}
		}
		id.EKs = append(id.EKs, enroll.EKInfo{NVIndex: ek.Slot.CertIndex, Template: ek.Slot.Label,
			Certificate: ek.Cert, Public: ek.Public, Handle: uint32(ek.Handle)})
	}
	if err := addAK(ctx, t, id); err != nil {
		return nil, err
	}
	certs, err := t.ReadAKCerts(ctx)
	if err != nil {
		return nil, err
	}
	for _, idx := range []uint32{tpm.GCEAKCertRSA, tpm.GCEAKCertECC, tpm.AzureAKCert} {
		if c, ok := certs[idx]; ok {
			id.AKCerts = append(id.AKCerts, enroll.NVCert{NVIndex: idx, Certificate: c})
		}
	}
	return id, nil
}

func addAK(ctx context.Context, t *tpm.TPM, id *enroll.Identity) error {
	ak, err := t.ReadAK(ctx)
	if err != nil {
		return err
	}
	id.AK = enroll.AKInfo{Handle: uint32(tpm.AKHandle), Public: ak.Public, Name: hex.EncodeToString(ak.Name.Buffer)}
	return nil
}

// identityServer serves GET /v1/identity and POST /v1/activate. The EK
// part of the identity is read once (reading it may make an EK with
// TPM2_CreatePrimary); the AK is read for every request.
type identityServer struct {
	o     HandlerOptions
	turns *gate
	one   chan struct{}

	mu  sync.Mutex
	eks *enroll.Identity // EKs and AK certificates, once read
}

// registerIdentity adds the enrollment endpoints to mux. They take the
// same turns as the evidence endpoint (rate, per-client bound, rotation)
// and use the TPM one request at a time with it.
func registerIdentity(mux *http.ServeMux, o HandlerOptions, turns *gate, one chan struct{}) {
	s := &identityServer{o: o, turns: turns, one: one}
	mux.HandleFunc("GET /v1/identity", s.identity)
	mux.HandleFunc("POST /v1/activate", s.activate)
}

// enter waits for the client's turn and the TPM; done releases both. A
// non-zero status means the request is refused (the response is written).
func (s *identityServer) enter(w http.ResponseWriter, r *http.Request) (ctx context.Context, done func(), ok bool) {
	wait, cancel := context.WithTimeout(r.Context(), s.o.MaxWait)
	release, status := s.turns.enter(wait, ClientKey(r.RemoteAddr))
	switch status {
	case http.StatusTooManyRequests:
		cancel()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many requests from this client at once", status)
		return nil, nil, false
	case http.StatusServiceUnavailable:
		cancel()
		w.Header().Set("Retry-After", "2")
		http.Error(w, "busy: try again later", status)
		return nil, nil, false
	}
	select {
	case s.one <- struct{}{}:
	case <-wait.Done():
		release()
		cancel()
		w.Header().Set("Retry-After", "2")
		http.Error(w, "busy: try again later", http.StatusServiceUnavailable)
		return nil, nil, false
	}
	cancel()
	ctx, cancel = context.WithTimeout(r.Context(), 30*time.Second)
	return ctx, func() { <-s.one; release(); cancel() }, true
}

// current returns the identity: the EKs read once, the AK now.
func (s *identityServer) current(ctx context.Context) (*enroll.Identity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.eks == nil {
		id, err := Identity(ctx, s.o.TPM)
		if err != nil {
			return nil, err
		}
		s.eks = id
		return id, nil
	}
	id := *s.eks
	if err := addAK(ctx, s.o.TPM, &id); err != nil {
		return nil, err
	}
	return &id, nil
}

func (s *identityServer) identity(w http.ResponseWriter, r *http.Request) {
	if r.URL.RawQuery != "" {
		http.Error(w, "GET /v1/identity takes no parameters", http.StatusBadRequest)
		return
	}
	ctx, done, ok := s.enter(w, r)
	if !ok {
		return
	}
	id, err := s.current(ctx)
	done()
	if err != nil {
		http.Error(w, "identity unavailable: "+publicError(err), http.StatusInternalServerError)
		return
	}
	b, err := id.Marshal()
	if err != nil {
		http.Error(w, "encode failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

func (s *identityServer) activate(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, enroll.MaxActivation))
	if err != nil {
		http.Error(w, "activation request larger than the limit", http.StatusRequestEntityTooLarge)
		return
	}
	req, err := enroll.ParseActivationRequest(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, done, ok := s.enter(w, r)
	if !ok {
		return
	}
	secret, status, msg := s.activateLocked(ctx, req)
	done()
	if status != http.StatusOK {
		http.Error(w, msg, status)
		return
	}
	b, _ := json.Marshal(enroll.ActivationResponse{Secret: secret})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

func (s *identityServer) activateLocked(ctx context.Context, req *enroll.ActivationRequest) ([]byte, int, string) {
	id, err := s.current(ctx)
	if err != nil {
		return nil, http.StatusInternalServerError, "identity unavailable: " + publicError(err)
	}
	for _, ek := range id.EKs {
		if ek.NVIndex != req.NVIndex {
			continue
		}
		slot, ok := tpm.EKSlotFor(ek.NVIndex)
		if !ok {
			break
		}
		secret, err := s.o.TPM.ActivateCredential(ctx, slot, tpm2.TPMHandle(ek.Handle), req.Credential, req.Secret)
		if err != nil {
			return nil, http.StatusUnprocessableEntity, "activation failed: " + publicError(err)
		}
		return secret, http.StatusOK, ""
	}
	return nil, http.StatusNotFound, "no EK with a certificate at that NV index"
}

// publicError is the part of a TPM error a client may see: the TPM's
// response code says why activation failed, nothing about the machine.
func publicError(err error) string {
	var rc tpm2.TPMRC
	if errors.As(err, &rc) {
		return rc.Error()
	}
	var fmtErr tpm2.TPMFmt1Error
	if errors.As(err, &fmtErr) {
		return fmtErr.Error()
	}
	return err.Error()
}

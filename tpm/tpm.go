package tpm

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/rimon-dev/rimon/tpm/tpmalg"
)

// DefaultDevice is the TPM used when none is named.
const DefaultDevice = "/dev/tpmrm0"

// EnvVar names the environment variable that selects the TPM when --tpm is not given.
const EnvVar = "RIMON_TPM"

// Errors callers branch on; each is wrapped with the TPM's name and a hint.
var (
	ErrNoTPM            = errors.New("no TPM")
	ErrPermission       = errors.New("permission denied")
	ErrUnreachable      = errors.New("swtpm not reachable")
	ErrSimulatorNeedCgo = errors.New("the in-process simulator (sim) needs a binary built with cgo (CGO_ENABLED=1)")
	ErrUnsupportedBank  = errors.New("PCR bank not supported")
	// ErrPCRLocality: the PCR cannot be extended from locality 0, where every
	// process talking to /dev/tpmrm0, swtpm or the simulator runs.
	ErrPCRLocality = errors.New("PCR not extendable at locality 0")
)

// CheckExtendable returns an error wrapping [ErrPCRLocality] for a PCR that
// software at locality 0 cannot extend, and an error for an index outside
// 0-23. The TCG PC Client Platform TPM Profile (PTP) for TPM 2.0 gives PCRs
// 0-15 (static RTM), 16 (debug) and 23 (application) to every locality,
// while PCRs 17-22 belong to the dynamic RTM and may be extended only from
// localities 2-4 (DRTM code, not the operating system): a TPM answers an
// extend of them from locality 0 with TPM_RC_LOCALITY.
func CheckExtendable(pcr int) error {
	switch {
	case pcr < 0 || pcr > 23:
		return fmt.Errorf("PCR %d is out of range 0-23", pcr)
	case pcr >= 17 && pcr <= 22:
		return fmt.Errorf("%w: PCR %d is reserved for the dynamic root of trust (PCRs 17-22 are extended from localities 2-4 only); use PCR 23 (the default) or 16", ErrPCRLocality, pcr)
	}
	return nil
}

// TPM is an open TPM. Its methods may be called from several goroutines;
// commands are sent one at a time.
type TPM struct {
	mu        sync.Mutex
	t         transport.TPMCloser
	name      string
	ephemeral bool
}

// Open opens the TPM that spec names (see the package documentation). An
// empty spec means the device [DefaultDevice].
func Open(ctx context.Context, spec string) (*TPM, error) {
	if spec == "" {
		spec = DefaultDevice
	}
	var (
		t         transport.TPMCloser
		err       error
		ephemeral bool
	)
	switch {
	case spec == "sim":
		t, err = openSimulator()
		ephemeral = true
	case strings.HasPrefix(spec, "tcp:"), strings.HasPrefix(spec, "unix:"):
		t, err = dialReconnecting(ctx, spec)
	default:
		t, err = openDevice(spec)
	}
	if err != nil {
		return nil, err
	}
	tp := &TPM{t: retrying{t}, name: spec, ephemeral: ephemeral}
	if err := tp.startup(ctx); err != nil {
		t.Close()
		return nil, err
	}
	return tp, nil
}

func openDevice(path string) (transport.TPMCloser, error) {
	t, err := linuxtpm.Open(path)
	switch {
	case err == nil:
		return t, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w at %s: use --tpm sim for the in-process simulator, or tcp:HOST:PORT or unix:PATH for swtpm", ErrNoTPM, path)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("%w opening %s: run as root or as a member of the group that owns it (often tss)", ErrPermission, path)
	case errors.Is(err, linuxtpm.ErrFileIsNotDevice):
		return nil, fmt.Errorf("%w at %s: it is not a device node", ErrNoTPM, path)
	default:
		return nil, fmt.Errorf("open TPM %s: %w", path, err)
	}
}

// startup sends TPM2_Startup(CLEAR) to a TPM that has not been started, as
// a freshly launched swtpm without startup-clear needs.
func (t *TPM) startup(ctx context.Context) error {
	_, err := t.activeSelection(ctx)
	if err == nil {
		return nil
	}
	if !errors.Is(err, tpm2.TPMRCInitialize) {
		return fmt.Errorf("TPM %s: %w", t.name, err)
	}
	t.mu.Lock()
	_, err = tpm2.Startup{StartupType: tpm2.TPMSUClear}.Execute(t.t)
	t.mu.Unlock()
	if err != nil {
		return fmt.Errorf("TPM %s: TPM2_Startup: %w", t.name, err)
	}
	return nil
}

// Close closes the connection; the simulator's state is lost.
func (t *TPM) Close() error { return t.t.Close() }

// Name is the specification the TPM was opened with.
func (t *TPM) Name() string { return t.name }

// Ephemeral reports whether the TPM was created empty by this process (the simulator).
func (t *TPM) Ephemeral() bool { return t.ephemeral }

// AlgID returns the TPM algorithm ID of a hash.
func AlgID(h crypto.Hash) (tpm2.TPMAlgID, error) {
	if a, ok := tpmalg.ID(h); ok {
		return a, nil
	}
	return 0, fmt.Errorf("%w: %v", ErrUnsupportedBank, h)
}

// HashOf returns the hash of a TPM algorithm ID.
func HashOf(a tpm2.TPMAlgID) (crypto.Hash, bool) { return tpmalg.Hash(a) }

func (t *TPM) activeSelection(ctx context.Context) (*tpm2.TPMLPCRSelection, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapPCRs, Property: 0, PropertyCount: 1}.Execute(t.t)
	if err != nil {
		return nil, err
	}
	return rsp.CapabilityData.Data.AssignedPCR()
}

// Banks describes the TPM's PCR banks for one PCR.
type Banks struct {
	// Active lists the allocated banks that rimon extends, in a fixed order.
	Active []crypto.Hash
	// Unsupported lists allocated banks rimon cannot extend (SM3, SHA3 ...).
	Unsupported []tpm2.TPMAlgID
}

// ActiveBanks returns the banks in which pcr is allocated (TPM2_GetCapability).
func (t *TPM) ActiveBanks(ctx context.Context, pcr int) (Banks, error) {
	sel, err := t.activeSelection(ctx)
	if err != nil {
		return Banks{}, fmt.Errorf("TPM %s: read PCR banks: %w", t.name, err)
	}
	var b Banks
	for _, s := range sel.PCRSelections {
		if pcr/8 >= len(s.PCRSelect) || s.PCRSelect[pcr/8]&(1<<(pcr%8)) == 0 {
			continue
		}
		if h, ok := HashOf(s.Hash); ok {
			b.Active = append(b.Active, h)
		} else {
			b.Unsupported = append(b.Unsupported, s.Hash)
		}
	}
	sort.Slice(b.Active, func(i, j int) bool { return b.Active[i] < b.Active[j] })
	if len(b.Active) == 0 {
		return b, fmt.Errorf("TPM %s: PCR %d is allocated in no bank that rimon supports (sha1, sha256, sha384, sha512)", t.name, pcr)
	}
	return b, nil
}

// ReadPCRs reads pcr in each bank (TPM2_PCR_Read, repeated until the TPM
// has returned every bank).
func (t *TPM) ReadPCRs(ctx context.Context, pcr int, banks []crypto.Hash) (map[crypto.Hash][]byte, error) {
	if pcr < 0 || pcr > 23 {
		return nil, fmt.Errorf("PCR %d is out of range 0-23", pcr)
	}
	out := map[crypto.Hash][]byte{}
	for _, h := range banks {
		if _, err := AlgID(h); err != nil {
			return nil, err
		}
	}
	for attempt := 0; len(out) < len(banks) && attempt <= len(banks); attempt++ {
		var sel tpm2.TPMLPCRSelection
		for _, h := range banks {
			if _, done := out[h]; !done {
				a, _ := tpmalg.ID(h) // checked above
				sel.PCRSelections = append(sel.PCRSelections, tpm2.TPMSPCRSelection{Hash: a, PCRSelect: tpm2.PCClientCompatible.PCRs(uint(pcr))})
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t.mu.Lock()
		rsp, err := tpm2.PCRRead{PCRSelectionIn: sel}.Execute(t.t)
		t.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("TPM %s: read PCR %d: %w", t.name, pcr, err)
		}
		i := 0
		for _, s := range rsp.PCRSelectionOut.PCRSelections {
			h, ok := HashOf(s.Hash)
			if !ok || pcr/8 >= len(s.PCRSelect) || s.PCRSelect[pcr/8]&(1<<(pcr%8)) == 0 {
				continue
			}
			if i >= len(rsp.PCRValues.Digests) {
				return nil, fmt.Errorf("TPM %s: read PCR %d: response has fewer values than selections", t.name, pcr)
			}
			out[h] = append([]byte(nil), rsp.PCRValues.Digests[i].Buffer...)
			i++
		}
	}
	for _, h := range banks {
		if _, ok := out[h]; !ok {
			return nil, fmt.Errorf("TPM %s: PCR %d has no %v bank", t.name, pcr, h)
		}
	}
	return out, nil
}

// ExtendPCR extends pcr in each given bank with one TPM2_PCR_Extend.
func (t *TPM) ExtendPCR(ctx context.Context, pcr int, digests map[crypto.Hash][]byte) error {
	if err := CheckExtendable(pcr); err != nil {
		return fmt.Errorf("TPM %s: extend: %w", t.name, err)
	}
	var vals tpm2.TPMLDigestValues
	hs := make([]crypto.Hash, 0, len(digests))
	for h := range digests {
		hs = append(hs, h)
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i] < hs[j] })
	for _, h := range hs {
		a, err := AlgID(h)
		if err != nil {
			return err
		}
		if len(digests[h]) != h.Size() {
			return fmt.Errorf("extend PCR %d: %v digest has %d bytes, want %d", pcr, h, len(digests[h]), h.Size())
		}
		vals.Digests = append(vals.Digests, tpm2.TPMTHA{HashAlg: a, Digest: digests[h]})
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   vals,
	}.Execute(t.t)
	if err != nil {
		return fmt.Errorf("TPM %s: extend PCR %d: %w", t.name, pcr, err)
	}
	return nil
}

package verifier

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/go-sev-guest/verify/trust"
	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/azure"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/policy"
)

// Names of the checks this package runs besides the quote and log checks
// of package attest ([attest.CheckSignature] to [attest.CheckLog]). The
// Azure chain's steps are named [CheckAzure] followed by the
// [azure.StepError] step, such as "azure: runtime claims".
const (
	// CheckEvidence: the evidence header's PCR values do not parse.
	CheckEvidence = "evidence"
	// CheckAzure prefixes the Azure chain's steps.
	CheckAzure = "azure: "
	// CheckAzureReport: the HCL report does not parse.
	CheckAzureReport = CheckAzure + "HCL report"
	// CheckAzureAK: the runtime claims' HCLAkPub is not a usable key.
	CheckAzureAK = CheckAzure + "HCLAkPub"
	// CheckKeyBinding: the pinned AK is not the HCLAkPub the SNP report
	// vouches for.
	CheckKeyBinding = CheckAzure + "key binding"
	// CheckLogPrefix: the verifier's copy of the log holds fewer records
	// than the evidence leaves out.
	CheckLogPrefix = "log prefix"
	// CheckReference names the reference check in the result.
	CheckReference = "reference values"
)

// CheckError is a failed check: the evidence proves nothing. Its message
// is the cause's; it unwraps to [attest.ErrInvalid] and to the cause (an
// [*attest.CheckError] for the quote and log checks, an
// [*azure.StepError] for the Azure chain).
type CheckError struct {
	// Check names the check that failed.
	Check string
	Err   error
}

// Error describes the failure.
func (e *CheckError) Error() string { return e.Err.Error() }

// Unwrap lets errors.Is find attest.ErrInvalid and errors.As the cause.
func (e *CheckError) Unwrap() []error { return []error{attest.ErrInvalid, e.Err} }

// ErrNoKey: there is no AK to check the quote with, neither pinned nor
// vouched for by Azure evidence. It is the caller's mistake, not the
// evidence's.
var ErrNoKey = errors.New("no attestation key: pin one, unless the evidence carries an Azure SEV-SNP report that vouches for the AK")

// ErrNoPrefix: the evidence leaves out its first records (log_start) and
// the caller gave no [Options.LogPrefix]. It is the caller's mistake.
var ErrNoPrefix = errors.New("the evidence starts at a later record: the earlier records are needed")

// Evidence is parsed evidence.
type Evidence struct {
	// Header is the evidence header: quote, PCR values, Azure blob,
	// log_start and unrecorded changes. Its Log field is not read.
	Header *attest.Evidence
	// Log reads the log, from record Header.LogStart on.
	Log io.Reader
	// NoValues says no PCR values were reported (a tpm2-tools quote
	// without a PCR file): the log must then replay to the quoted digest.
	NoValues bool
}

// Options say what the verifier asked for and what it trusts.
type Options struct {
	// AK is the pinned attestation key. With Azure evidence it may be nil
	// (the SNP report vouches for the AK); when set, it must be the
	// HCLAkPub.
	AK crypto.PublicKey
	// Nonce is the verifier's fresh nonce.
	Nonce []byte
	// PCRs, Banks and AllowSHA1 are as in [attest.QuoteOptions].
	PCRs      []int
	Banks     []crypto.Hash
	AllowSHA1 bool
	// Reference, when set, is checked against every trusted record; its
	// azure section is the SNP report's policy.
	Reference *policy.Reference
	// AzureRoots maps a product line to the ARK/ASK pairs to trust; nil
	// means AMD's published roots. See [TestRoots].
	AzureRoots map[string][]*trust.AMDRootCerts
	// LogPrefix is the verifier's own earlier copy of the log, for
	// evidence that leaves out its first records. Its records are
	// replayed with the rest: nothing in it is trusted on its own.
	LogPrefix []byte
	// State is the state saved after an earlier verdict on the same
	// machine ([Result.State]). Evidence whose log_start is the state's
	// record count is verified from it, replaying only the new records,
	// with the verdict a replay of the whole log gives; evidence with the
	// whole log (log_start 0, or the rest from LogPrefix) is replayed
	// whole and must begin with the records the state accepted. Either way
	// a log that does not extend the accepted prefix fails
	// [attest.CheckContinuity]. A state saved with other banks or another
	// reference cannot be continued: [attest.ErrPriorUnusable].
	State *State
	// SaveState asks for [Result.State] on evidence verified without a
	// State (with one, it is always given). It costs one SHA-256 pass over
	// the log's bytes, for the prefix digest.
	SaveState bool
	// Now is the time to check certificates at; zero means time.Now.
	Now time.Time
	// AllowTrailing is as in [attest.Options]: zero means one.
	AllowTrailing int
	// Observe asks for the distinct measurements of the newly covered
	// records ([attest.Result.Observations], [attest.Observation]).
	Observe bool
	// ReferenceFingerprint, when set, is attest.ReferenceFingerprint of
	// Reference, computed once by a caller that verifies many machines
	// against it (it costs a pass over the reference).
	ReferenceFingerprint string
}

// Check is one check and its outcome.
type Check struct {
	Name   string `json:"name"`
	Passed bool   `json:"passed"`
	Detail string `json:"detail"`
}

// Result is what [Verify] found.
type Result struct {
	// Checks lists every check run, in order; when the evidence is
	// invalid, the last one failed.
	Checks []Check
	// Chain is the verified Azure chain, when the evidence carried one.
	Chain *azure.Chain
	// Verdict is the verdict on valid evidence (nil when invalid): its
	// Covered leading records are the trusted prefix, which replays to
	// its PCRs; Failures and Warnings are the findings; Trusted says
	// whether nothing failed. Its Checks are the passed checks, for
	// reports.
	Verdict *attest.Result
	// State is the state to save for the next round: the trusted prefix
	// and the reference checks after it (nil when invalid).
	State *State
	// Clock is the quote's clock information, once the quote's own checks
	// (signature, nonce, selection, digest) passed: with a verdict, and
	// when the log then failed the replay or continuity check, or the
	// state could not be continued (a caller tells a reboot from a broken
	// history by it). nil otherwise.
	Clock *Clock
}

// quoteChecks are package attest's checks, in the order they run.
var quoteChecks = []string{attest.CheckSignature, attest.CheckMagic, attest.CheckNonce, attest.CheckSelection, attest.CheckDigest, attest.CheckContinuity, attest.CheckLog}

// Verify checks evidence (see the package documentation for the order).
// It returns the result with an error that is a [*CheckError] when the
// evidence proves nothing, [ErrNoKey] or [ErrNoPrefix] when the options
// do not allow a check, or the context's error when ctx ends before the
// log is read (no verdict is made on part of a log).
func Verify(ctx context.Context, ev Evidence, o Options) (*Result, error) {
	res := &Result{}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	failed := func(check string, err error) (*Result, error) {
		ce, ok := err.(*CheckError)
		if !ok {
			ce = &CheckError{Check: check, Err: err}
		}
		res.Checks = append(res.Checks, Check{Name: ce.Check, Detail: ce.Err.Error()})
		return res, ce
	}
	h := ev.Header
	var values map[eventlog.PCRKey][]byte
	if !ev.NoValues {
		var err error
		if values, err = h.Values(); err != nil {
			return failed(CheckEvidence, err)
		}
	}
	ak := o.AK
	if h.Azure != nil {
		// The AK is vouched for by the SNP report, not by a pinned key.
		ao := azure.Options{TrustedRoots: o.AzureRoots, Now: o.Now}
		if o.Reference != nil {
			ao.Policy = SNPPolicy(o.Reference.SNP)
		}
		chain, err := VerifyAzure(h.Azure, ao)
		if err != nil {
			return failed("", err)
		}
		res.Chain = chain
		for _, s := range chain.Steps {
			res.Checks = append(res.Checks, Check{Name: "azure", Passed: true, Detail: s})
		}
		if ak != nil && !azure.SameKey(chain.AK, ak) {
			return failed(CheckKeyBinding, errors.New("the pinned --ak is not the HCLAkPub of the SNP report"))
		}
		detail := "no AK pinned: the quote must be signed by the HCLAkPub"
		if ak != nil {
			detail = "the pinned AK is the HCLAkPub"
		}
		res.Checks = append(res.Checks, Check{Name: CheckKeyBinding, Passed: true, Detail: detail})
		ak = chain.AK
	}
	if ak == nil {
		return res, ErrNoKey
	}
	log := ev.Log
	var prior *attest.Prior
	var extends *eventlog.Checkpoint
	if st := o.State; st != nil {
		switch {
		case h.LogStart == 0 || o.LogPrefix != nil:
			extends = st.Log
		case h.LogStart == st.Records():
			prior = &st.Prior
			res.Checks = append(res.Checks, Check{Name: attest.CheckContinuity, Passed: true,
				Detail: fmt.Sprintf("records 0 to %d accepted before (saved state, prefix digest %x); only the records after them are replayed", st.Records()-1, st.Log.Prefix)})
		default:
			return failed(attest.CheckContinuity, fmt.Errorf("%w: the evidence starts at record %d, the saved state holds %d records", attest.ErrInvalid, h.LogStart, st.Records()))
		}
	}
	if h.LogStart > 0 && prior == nil {
		// The evidence holds the log from record LogStart on; the earlier
		// records come from the verifier's own copy. Nothing is trusted:
		// the whole log is replayed.
		if o.LogPrefix == nil {
			return res, ErrNoPrefix
		}
		head, err := attest.FirstRecords(o.LogPrefix, h.LogStart)
		if err != nil {
			return failed(CheckLogPrefix, fmt.Errorf("%w: log prefix: %v", attest.ErrInvalid, err))
		}
		res.Checks = append(res.Checks, Check{Name: CheckLogPrefix, Passed: true,
			Detail: fmt.Sprintf("records 0 to %d from the verifier's own copy, replayed with the rest", h.LogStart-1)})
		log = io.MultiReader(bytes.NewReader(head), log)
	}
	log = ctxReader{ctx, log}
	opts := attest.Options{
		QuoteOptions:  attest.QuoteOptions{AK: ak, Nonce: attest.QualifyingData(o.Nonce, h.Unrecorded), PCRs: o.PCRs, Banks: o.Banks, AllowSHA1: o.AllowSHA1},
		Reference:     o.Reference,
		Unrecorded:    h.Unrecorded,
		AllowTrailing: o.AllowTrailing,
		From:          attest.From{Prior: prior, Extends: extends, Keep: o.SaveState, Observe: o.Observe, Fingerprint: o.ReferenceFingerprint},
	}
	v, err := attest.Verify(h.Quote.Attest, h.Quote.Signature, values, log, opts)
	if cerr := ctx.Err(); cerr != nil {
		// Reading stopped early: what was read proves nothing about the rest.
		return res, cerr
	}
	if errors.Is(err, attest.ErrPriorUnusable) {
		res.Clock = clockOf(h.Quote.Attest)
		return res, err
	}
	if err != nil {
		var ce *attest.CheckError
		if !errors.As(err, &ce) {
			return failed(CheckEvidence, err)
		}
		if ce.Check == attest.CheckContinuity || ce.Check == attest.CheckLog {
			res.Clock = clockOf(h.Quote.Attest)
		}
		// The quote and log checks run in order: those before the failed one passed.
		for _, name := range quoteChecks {
			if name == ce.Check {
				break
			}
			if name == attest.CheckContinuity {
				continue // listed already when a state was given
			}
			res.Checks = append(res.Checks, Check{Name: name, Passed: true})
		}
		return failed(ce.Check, err)
	}
	for _, c := range v.Checks {
		res.Checks = append(res.Checks, Check{Name: c.Name, Passed: true, Detail: c.Detail})
	}
	if res.Chain != nil {
		var steps []attest.CheckResult
		for _, s := range res.Chain.Steps {
			steps = append(steps, attest.CheckResult{Name: "azure", Detail: s})
		}
		v.Checks = append(steps, v.Checks...)
	}
	if extends != nil {
		res.Checks = append(res.Checks, Check{Name: attest.CheckContinuity, Passed: true,
			Detail: fmt.Sprintf("the log begins with the %d records accepted before (saved state)", extends.Records)})
	}
	// The report shows the continuity check with the quote's.
	for _, c := range res.Checks {
		if c.Name == attest.CheckContinuity {
			v.Checks = append(v.Checks, attest.CheckResult{Name: c.Name, Detail: c.Detail})
		}
	}
	res.Verdict = v
	res.Clock = clockOf(h.Quote.Attest)
	if v.Next != nil && v.Next.Log != nil {
		res.State = &State{*v.Next}
	}
	return res, nil
}

// ctxReader stops reading the log once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

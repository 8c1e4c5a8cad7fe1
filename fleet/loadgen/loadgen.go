// Package loadgen is a TEST-ONLY load generator for the fleet verifier:
// many simulated agents in one process. It is used by tests and
// benchmarks, never by the product; nothing it makes proves anything about
// a real machine.
//
// Each simulated [Agent] has its own software signing key (ECDSA P-256, or
// RSA-2048 when asked) standing in for a TPM attestation key, and its own
// growing log of real rimon records (the canonical encoding and the record
// format of package eventlog, the same records the agent writes), with
// PCR 23 extended in software in the sha256 bank (and sha1 when asked).
// Its quotes are real TPMS_ATTEST structures (TPM 2.0 Part 2, 10.12.12),
// marshalled with go-tpm: TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE, the
// verifier's nonce as extraData, clock info whose clock advances and whose
// resetCount changes with a simulated reboot, the PCR selection and its
// digest, signed with the agent's key as a TPMT_SIGNATURE. So a verifier
// does for a simulated agent exactly the work it does for a real one.
//
// A [Fleet] serves its agents over the agent's evidence protocol
// (GET /v1/evidence?nonce=&since=&bank=, the evidence built with
// [attest.Evidence] and its Marshal), all on one handler under path
// prefixes: agent N's base URL is BASE/agents/N. It records every request
// ([Poll]) with the replica that made it (the Rimon-Verifier request
// header), and notes when one agent was asked by two requests at once
// ([Fleet.Overlaps]). Agents can misbehave for fault tests ([Fault],
// [Agent.Reboot], [Agent.Forge], [Agent.ChangeFile]) and can push their
// evidence instead of being polled ([Fleet.Push]).
package loadgen

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/eventlog"
)

// PCR is the PCR the simulated agents extend.
const PCR = 23

// Options configures a [Fleet].
type Options struct {
	// Agents is the number of simulated agents.
	Agents int
	// PerRound is how many records an agent adds per round (default 10).
	PerRound int
	// Initial is how many records each agent starts with (default PerRound).
	Initial int
	// Files is how many distinct paths an agent measures, in turn (default 64).
	Files int
	// SHA1 extends the sha1 bank as well as sha256.
	SHA1 bool
	// RSA gives the agents RSA-2048 keys instead of ECDSA P-256.
	RSA bool
	// GrowOnPoll adds PerRound records to an agent before each evidence
	// request it serves or push it makes, so that every incremental poll
	// verifies PerRound new records; otherwise records are added by
	// [Fleet.Round].
	GrowOnPoll bool
	// SlowDelay is how long a [Slow] agent waits before it answers
	// (default one minute, or until the request ends).
	SlowDelay time.Duration
	// HugeSize is the size of a [Huge] agent's body (default 100 MiB).
	HugeSize int64
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (o *Options) defaults() {
	if o.PerRound <= 0 {
		o.PerRound = 10
	}
	if o.Initial < 0 {
		o.Initial = 0
	} else if o.Initial == 0 {
		o.Initial = o.PerRound
	}
	if o.Files <= 0 {
		o.Files = 64
	}
	if o.SlowDelay <= 0 {
		o.SlowDelay = time.Minute
	}
	if o.HugeSize <= 0 {
		o.HugeSize = 100 << 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Fault is how an agent answers evidence requests.
type Fault int

// The faults.
const (
	// OK answers as a real agent does.
	OK Fault = iota
	// Down closes the connection without an answer.
	Down
	// Slow answers after Options.SlowDelay (or never, if the request ends first).
	Slow
	// Garbage answers 200 with bytes that are not evidence.
	Garbage
	// Huge answers 200 with a valid header followed by Options.HugeSize
	// bytes that are no record, streamed (never held in memory).
	Huge
)

// String names the fault.
func (f Fault) String() string {
	switch f {
	case OK:
		return "ok"
	case Down:
		return "down"
	case Slow:
		return "slow"
	case Garbage:
		return "garbage"
	case Huge:
		return "huge"
	}
	return fmt.Sprintf("fault(%d)", int(f))
}

// Fleet is a set of simulated agents.
type Fleet struct {
	opts   Options
	agents []*Agent

	pollMu   sync.Mutex
	polls    []Poll
	overlaps []Overlap
	inflight map[int]map[string]int // agent -> verifier -> requests in progress
}

// New makes a fleet of o.Agents agents, each with its own key and a log of
// o.Initial records.
func New(o Options) (*Fleet, error) {
	o.defaults()
	if o.Agents < 0 {
		return nil, errors.New("loadgen: negative number of agents")
	}
	f := &Fleet{opts: o, inflight: map[int]map[string]int{}}
	for i := 0; i < o.Agents; i++ {
		a, err := newAgent(i, o)
		if err != nil {
			return nil, err
		}
		f.agents = append(f.agents, a)
	}
	return f, nil
}

// Len is the number of agents.
func (f *Fleet) Len() int { return len(f.agents) }

// Agent returns agent i.
func (f *Fleet) Agent(i int) *Agent { return f.agents[i] }

// Agents returns every agent.
func (f *Fleet) Agents() []*Agent { return slices.Clone(f.agents) }

// Round adds Options.PerRound records to every agent.
func (f *Fleet) Round() error {
	for _, a := range f.agents {
		if err := a.AddRecords(f.opts.PerRound); err != nil {
			return err
		}
	}
	return nil
}

// SetGrowOnPoll turns Options.GrowOnPoll on or off for every agent (off:
// the logs stop growing, so that a verifier can catch up with them).
func (f *Fleet) SetGrowOnPoll(on bool) {
	for _, a := range f.agents {
		a.mu.Lock()
		a.opts.GrowOnPoll = on
		a.mu.Unlock()
	}
}

// Reference returns a reference values file (YAML) that allows every
// digest the agents record for their files, and no other: a record made
// by [Agent.ChangeFile] fails it.
func (f *Fleet) Reference() []byte {
	return Reference(f.opts.Files)
}

// Reference returns the reference values (YAML) that allow the digests of
// the first files paths the agents measure.
func Reference(files int) []byte {
	var b strings.Builder
	b.WriteString("version: 1\nunlisted: fail\nfiles:\n")
	for i := 0; i < files; i++ {
		p := filePath(i)
		fmt.Fprintf(&b, "  %s: [%s, %s]\n", p, fileDigest(p, 0), fileDigest(p, 1))
	}
	return []byte(b.String())
}

// filePath is the i-th path an agent measures.
func filePath(i int) string { return fmt.Sprintf("/opt/fleet/lib/libfleet%03d.so", i) }

// fileDigest is version v of a file's content digest (v 0 and 1 are
// allowed by [Reference]).
func fileDigest(path string, v int) string {
	s := sha256.Sum256(fmt.Appendf(nil, "loadgen %s v%d", path, v))
	return hex.EncodeToString(s[:])
}

// Poll is one evidence request an agent received, or one push it made.
type Poll struct {
	// Agent is the agent's index.
	Agent int
	// Verifier is the Rimon-Verifier request header (the replica's name);
	// for a push, the verifier's base URL.
	Verifier string
	// Start and End bound the request.
	Start, End time.Time
	// Since is the record the evidence started at; Records the log's length.
	Since, Records uint64
	// Status is the HTTP status answered (0: connection closed); for a
	// push, the verifier's answer to the evidence.
	Status int
	// Fault is how the agent answered.
	Fault Fault
	Push  bool
}

// Overlap is a request an agent received while another was in progress.
type Overlap struct {
	Agent int
	// Verifiers are the replica already in progress and the newcomer.
	Verifiers [2]string
	At        time.Time
}

// VerifierHeader is the request header a fleet verifier names itself in.
const VerifierHeader = "Rimon-Verifier"

// Polls returns the requests recorded so far, in the order they ended.
func (f *Fleet) Polls() []Poll {
	f.pollMu.Lock()
	defer f.pollMu.Unlock()
	return slices.Clone(f.polls)
}

// ResetPolls forgets the recorded polls and overlaps.
func (f *Fleet) ResetPolls() {
	f.pollMu.Lock()
	defer f.pollMu.Unlock()
	f.polls, f.overlaps = nil, nil
}

// Overlaps returns the requests that reached an agent while another
// request to the same agent was in progress, from the same replica or
// another: with leases working, there are none.
func (f *Fleet) Overlaps() []Overlap {
	f.pollMu.Lock()
	defer f.pollMu.Unlock()
	return slices.Clone(f.overlaps)
}

// begin notes a request to agent i from verifier; end must be called.
func (f *Fleet) begin(i int, verifier string) (end func(Poll)) {
	f.pollMu.Lock()
	m := f.inflight[i]
	if m == nil {
		m = map[string]int{}
		f.inflight[i] = m
	}
	names := make([]string, 0, len(m))
	for v, n := range m {
		if n > 0 {
			names = append(names, v)
		}
	}
	sort.Strings(names)
	for _, v := range names {
		f.overlaps = append(f.overlaps, Overlap{Agent: i, Verifiers: [2]string{v, verifier}, At: f.opts.Now()})
	}
	m[verifier]++
	f.pollMu.Unlock()
	return func(p Poll) {
		f.pollMu.Lock()
		defer f.pollMu.Unlock()
		if m[verifier]--; m[verifier] == 0 {
			delete(m, verifier)
		}
		if len(m) == 0 {
			delete(f.inflight, i)
		}
		f.polls = append(f.polls, p)
	}
}

// Agent is one simulated agent.
type Agent struct {
	// Index is the agent's number; Name is "agent-NNNNN".
	Index int
	Name  string
	// Token is the agent's push token (64 hex characters).
	Token string

	opts  Options
	key   crypto.Signer
	akPEM string
	name  []byte // the key's TPM name, as a quote's qualifiedSigner
	banks []crypto.Hash

	mu           sync.Mutex
	log          []byte
	offsets      []int // offsets[i]: where record i starts in log
	state        *eventlog.State
	next         int // files measured so far (the next file is next % Files)
	changed      int // records made by ChangeFile
	resetCount   uint32
	restartCount uint32
	bootAt       time.Time
	bootID       string
	fault        Fault
	recorded     map[string]string // path -> digest of its latest record
}

func newAgent(i int, o Options) (*Agent, error) {
	a := &Agent{Index: i, Name: fmt.Sprintf("agent-%05d", i), opts: o, banks: []crypto.Hash{crypto.SHA256}}
	if o.SHA1 {
		a.banks = []crypto.Hash{crypto.SHA1, crypto.SHA256}
	}
	var tok [32]byte
	rand.Read(tok[:])
	a.Token = hex.EncodeToString(tok[:])
	var pub tpm2.TPMTPublic
	if o.RSA {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		a.key = k
		pub = tpm2.TPMTPublic{Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{KeyBits: 2048}),
			Unique:     tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})}
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		a.key = k
		pub = tpm2.TPMTPublic{Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{CurveID: tpm2.TPMECCNistP256}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
				X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, 32))},
				Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, 32))}})}
	}
	if n, err := tpm2.ObjectName(&pub); err == nil {
		a.name = n.Buffer
	}
	pemb, err := attest.PublicKeyPEM(a.key.Public())
	if err != nil {
		return nil, err
	}
	a.akPEM = string(pemb)
	// As for an AK outside the endorsement and platform hierarchies, the
	// counters carry a per-key constant: start them somewhere random.
	var rc [8]byte
	rand.Read(rc[:])
	a.resetCount = binary.BigEndian.Uint32(rc[:4]) >> 8
	a.restartCount = binary.BigEndian.Uint32(rc[4:]) >> 8
	a.newBoot()
	if err := a.AddRecords(o.Initial); err != nil {
		return nil, err
	}
	return a, nil
}

// newBoot starts a new boot's log; a.mu is held or a is not shared yet.
func (a *Agent) newBoot() {
	a.log, a.offsets, a.next, a.changed = nil, nil, 0, 0
	a.state = eventlog.NewState(a.banks)
	a.bootAt = a.opts.Now()
	var b [16]byte
	rand.Read(b[:])
	a.bootID = hex.EncodeToString(b[:])
	a.recorded = map[string]string{}
}

// AKPEM is the agent's public key (PEM), for the verifier to pin.
func (a *Agent) AKPEM() string { return a.akPEM }

// Public is the agent's public key.
func (a *Agent) Public() crypto.PublicKey { return a.key.Public() }

// Banks are the banks the agent extends.
func (a *Agent) Banks() []crypto.Hash { return slices.Clone(a.banks) }

// Records is the number of records in the agent's current log.
func (a *Agent) Records() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return uint64(len(a.offsets))
}

// ResetCount is the TPM resetCount of the agent's current boot.
func (a *Agent) ResetCount() uint32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.resetCount
}

// Latest returns the digest of the latest record of each path in the
// current log.
func (a *Agent) Latest() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]string, len(a.recorded))
	for k, v := range a.recorded {
		out[k] = v
	}
	return out
}

// Changed reports how many records of the current log hold a digest the
// reference does not allow ([Agent.ChangeFile]).
func (a *Agent) Changed() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.changed
}

// SetFault sets how the agent answers evidence requests.
func (a *Agent) SetFault(f Fault) {
	a.mu.Lock()
	a.fault = f
	a.mu.Unlock()
}

// Fault is how the agent answers now.
func (a *Agent) Fault() Fault {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fault
}

// AddRecords appends n records: the next files in turn, each with one of
// the two digests the reference allows.
func (a *Agent) AddRecords(n int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.addLocked(n)
}

func (a *Agent) addLocked(n int) error {
	for i := 0; i < n; i++ {
		f := a.next % a.opts.Files
		reason := eventlog.ReasonInitial
		if a.next >= a.opts.Files {
			reason = eventlog.ReasonChanged
		}
		p := filePath(f)
		if err := a.append(p, fileDigest(p, (a.next/a.opts.Files)%2), reason); err != nil {
			return err
		}
		a.next++
	}
	return nil
}

// append adds one file record; a.mu is held.
func (a *Agent) append(path, digest, reason string) error {
	ev := eventlog.Event{Kind: eventlog.KindFile, Path: path, SHA256: digest, Size: uint64(len(path)) * 1000,
		Reason: reason, Time: eventlog.FormatTime(a.opts.Now()), BootID: a.bootID}
	c, err := ev.Content()
	if err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	r := eventlog.Record{RecNum: uint64(len(a.offsets)), HasRecNum: true, PCR: PCR,
		ContentType: eventlog.ContentTypeRimon, Content: c, Digests: c.Digests(a.banks)}
	b, err := r.Marshal()
	if err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	if err := a.state.Apply(&r); err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	a.offsets = append(a.offsets, len(a.log))
	a.log = append(a.log, b...)
	a.recorded[path] = digest
	return nil
}

// ChangeFile appends a record of path (one of the agent's files when
// empty) with a digest the reference does not allow, as if the file had
// been altered.
func (a *Agent) ChangeFile(path string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if path == "" {
		path = filePath(0)
	}
	if err := a.append(path, fileDigest(path, 1000+a.changed), eventlog.ReasonChanged); err != nil {
		return err
	}
	a.changed++
	return nil
}

// Reboot simulates a reboot: the TPM's resetCount changes, its clock and
// PCRs start again, and a new log starts from record 0 with the initial
// records.
func (a *Agent) Reboot() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.resetCount++
	a.restartCount = 0
	a.newBoot()
	return a.addLocked(a.opts.Initial)
}

// Forge plays an attacker within one boot: PCR 23 reset and a different
// history of n records replayed into it (its first record differs from
// the first of the old log), the resetCount and clock untouched. The
// records it adds are allowed by the reference: only continuity can tell.
func (a *Agent) Forge(n int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.log, a.offsets, a.next, a.changed = nil, nil, 0, 0
	a.state = eventlog.NewState(a.banks)
	a.recorded = map[string]string{}
	// Start from the other digest of each file, so the history differs.
	a.next = a.opts.Files
	for i := 0; i < n; i++ {
		p := filePath(a.next % a.opts.Files)
		if err := a.append(p, fileDigest(p, (a.next/a.opts.Files)%2), eventlog.ReasonInitial); err != nil {
			return err
		}
		a.next++
	}
	return nil
}

// Evidence builds fresh evidence bound to nonce, quoting banks (all the
// agent's when empty), with the log from record since on: exactly what
// the agent's GET /v1/evidence?nonce=&since=&bank= returns. With
// Options.GrowOnPoll the agent first adds its round of records.
func (a *Agent) Evidence(nonce []byte, since uint64, banks []crypto.Hash) (*attest.Evidence, error) {
	if len(nonce) < 8 || len(nonce) > 64 {
		return nil, errors.New("nonce: want 8 to 64 bytes")
	}
	if len(banks) == 0 {
		banks = a.banks
	}
	for _, b := range banks {
		if !slices.Contains(a.banks, b) {
			return nil, fmt.Errorf("bank %s: not one this agent extends", eventlog.BankName(b))
		}
	}
	banks = slices.Clone(banks)
	slices.Sort(banks)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.opts.GrowOnPoll {
		if err := a.addLocked(a.opts.PerRound); err != nil {
			return nil, err
		}
	}
	if since > uint64(len(a.offsets)) {
		return nil, fmt.Errorf("since: the log holds only %d complete records, not %d", len(a.offsets), since)
	}
	vals := map[eventlog.PCRKey][]byte{}
	var sel []tpm2.TPMSPCRSelection
	pd := sha256.New()
	for _, b := range banks {
		alg := tpm2.TPMAlgSHA256
		if b == crypto.SHA1 {
			alg = tpm2.TPMAlgSHA1
		}
		sel = append(sel, tpm2.TPMSPCRSelection{Hash: alg, PCRSelect: tpm2.PCClientCompatible.PCRs(PCR)})
		v := a.state.Value(PCR, b)
		vals[eventlog.PCRKey{PCR: PCR, Bank: b}] = v
		pd.Write(v)
	}
	att := tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: a.name},
		ExtraData:       tpm2.TPM2BData{Buffer: nonce},
		ClockInfo: tpm2.TPMSClockInfo{Clock: uint64(a.opts.Now().Sub(a.bootAt).Milliseconds()) + 1,
			ResetCount: a.resetCount, RestartCount: a.restartCount, Safe: true},
		FirmwareVersion: 0x2000_0000_0001_0000,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: sel},
			PCRDigest: tpm2.TPM2BDigest{Buffer: pd.Sum(nil)},
		}),
	}
	ab := tpm2.Marshal(&att)
	sig, err := a.sign(ab)
	if err != nil {
		return nil, err
	}
	ev := &attest.Evidence{Version: attest.EvidenceVersion, Nonce: hex.EncodeToString(nonce), AKPublic: a.akPEM,
		Quote: attest.QuoteBlob{Attest: ab, Signature: sig}}
	ev.SetValues(vals)
	if since < uint64(len(a.offsets)) {
		ev.Log = a.log[a.offsets[since]:len(a.log):len(a.log)]
	}
	ev.LogStart = since
	return ev, nil
}

// EvidenceBytes is [Agent.Evidence], marshalled.
func (a *Agent) EvidenceBytes(nonce []byte, since uint64, banks []crypto.Hash) ([]byte, error) {
	ev, err := a.Evidence(nonce, since, banks)
	if err != nil {
		return nil, err
	}
	return ev.Marshal()
}

// sign signs a marshalled TPMS_ATTEST as a TPM does: SHA-256, then
// RSASSA or ECDSA, as a TPMT_SIGNATURE.
func (a *Agent) sign(ab []byte) ([]byte, error) {
	d := sha256.Sum256(ab)
	switch k := a.key.(type) {
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
		if err != nil {
			return nil, err
		}
		return tpm2.Marshal(&tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA,
			&tpm2.TPMSSignatureECC{Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: pad(r, 32)},
				SignatureS: tpm2.TPM2BECCParameter{Buffer: pad(s, 32)}})}), nil
	case *rsa.PrivateKey:
		s, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d[:])
		if err != nil {
			return nil, err
		}
		return tpm2.Marshal(&tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA,
			&tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: s}})}), nil
	}
	return nil, fmt.Errorf("loadgen: key type %T", a.key)
}

func pad(n *big.Int, size int) []byte { return n.FillBytes(make([]byte, size)) }

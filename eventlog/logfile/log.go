package logfile

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/rimon-dev/rimon/eventlog"
)

// ErrOtherBoot means the log was written during another boot than this one.
var ErrOtherBoot = errors.New("log belongs to another boot")

// ErrLogLost means the log file a [Writer] has open is no longer the file
// at its path: it was deleted, or replaced by another file. Records
// appended to it would reach neither verifiers nor other writers, so the
// writer refuses to append; a new writer must be opened (and, since the
// PCR still holds the lost records, reconciled).
var ErrLogLost = errors.New("log file lost")

// withShared opens the log at path, takes its shared lock, and calls fn
// with it, so that no writer is half-way through an append meanwhile. fn
// gets nil when the log does not exist.
func withShared(ctx context.Context, path string, fn func(f *os.File) error) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return fn(nil)
	}
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer f.Close()
	if err := flock(ctx, f, lockShared); err != nil {
		return fmt.Errorf("lock log %s: %w", path, err)
	}
	defer funlock(f)
	return fn(f)
}

// Snapshot reads every complete record of the log at path under a shared
// lock, so that no writer is half-way through an append. A missing log reads
// as empty. torn is the size of an incomplete last record (0 when there is none).
func Snapshot(ctx context.Context, path string) (records []eventlog.Record, torn int64, err error) {
	err = withShared(ctx, path, func(f *os.File) error {
		if f != nil {
			records, torn, err = readFrom(f, path, 0)
		}
		return err
	})
	return records, torn, err
}

// ReplayFile replays the log at path under a shared lock without keeping
// its records in memory. A torn last record is left out and its size
// returned; a missing log is an error.
func ReplayFile(ctx context.Context, path string, banks []crypto.Hash) (st *eventlog.State, records int, torn int64, err error) {
	err = withShared(ctx, path, func(f *os.File) error {
		if f == nil {
			return fmt.Errorf("open log: %w", &os.PathError{Op: "open", Path: path, Err: syscall.ENOENT})
		}
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		st, records, err = eventlog.ReplayReader(f, banks)
		var re *eventlog.RecordError
		if errors.Is(err, eventlog.ErrTorn) && errors.As(err, &re) {
			torn = fi.Size() - re.Offset
			return nil
		}
		if err != nil {
			return fmt.Errorf("log %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return nil, 0, 0, err
	}
	return st, records, torn, nil
}

// readFrom reads the records of f that start at byte off. A torn tail is
// reported by its size, not as an error.
func readFrom(f *os.File, path string, off int64) ([]eventlog.Record, int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	var recs []eventlog.Record
	rd := eventlog.NewReader(io.NewSectionReader(f, off, fi.Size()-off), off)
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			return recs, 0, nil
		}
		if errors.Is(err, eventlog.ErrTorn) {
			return recs, fi.Size() - rd.Offset(), nil
		}
		if err != nil {
			return nil, 0, fmt.Errorf("log %s: %w", path, err)
		}
		recs = append(recs, rec)
	}
}

// WriterOptions configures a [Writer].
type WriterOptions struct {
	// Banks are the active TPM banks to extend (tpm.TPM.ActiveBanks).
	Banks []crypto.Hash
	// BootID is this boot's ID, stamped on every record and checked against
	// the records already in the log. Empty skips the check.
	BootID string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxRepair and Rebuild are as in [ReconcileOptions]; MaxRepair 0 means 1.
	MaxRepair int
	Rebuild   bool
	// PCR is compared with the log when the writer opens, even before any record names it.
	PCR int
	// OnOpen, when set, sees every record the writer reads as it opens,
	// so a caller needs not read the log a second time.
	OnOpen func(rec *eventlog.Record)
}

// Recovery says what opening a [Writer] repaired.
type Recovery struct {
	ReconcileResult
	// TornBytes is the size of an incomplete last record that was moved aside to TornPath.
	TornBytes int64
	TornPath  string
}

// Writer appends records to a log and extends them into the TPM. Several
// writers, in this process or others, may share one log: each append takes
// the log's exclusive lock, catches up with records other writers added, and
// holds the lock from write to extend.
type Writer struct {
	path  string
	f     *os.File
	pcrs  PCRs
	opts  WriterOptions
	off   int64            // bytes of the log already read
	count int              // records already read
	last  *eventlog.Record // the last record read
	state *eventlog.State  // replay of the records read, equal to the TPM
}

// OpenWriter opens (creating it if needed) the log at path and reconciles it
// with the TPM under the exclusive lock.
func OpenWriter(ctx context.Context, path string, pcrs PCRs, opts WriterOptions) (*Writer, *Recovery, error) {
	if len(opts.Banks) == 0 {
		return nil, nil, errors.New("open log writer: no PCR banks to extend")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxRepair <= 0 {
		opts.MaxRepair = 1
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, nil, fmt.Errorf("create log directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("open log: %w", err)
	}
	w := &Writer{path: path, f: f, pcrs: pcrs, opts: opts, state: eventlog.NewState(opts.Banks)}
	if err := flock(ctx, f, lockExclusive); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("lock log %s: %w", path, err)
	}
	defer funlock(f)
	rec, err := w.catchUp(ctx, opts.Rebuild)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	w.opts.OnOpen = nil // only the records present at open
	return w, rec, nil
}

// Close releases the log.
func (w *Writer) Close() error { return w.f.Close() }

// Records is the number of records in the log as last seen.
func (w *Writer) Records() int { return w.count }

// State returns a copy of the replayed PCR state as last seen.
func (w *Writer) State() *eventlog.State { return w.state.Clone() }

// catchUp reads records appended since the last look and reconciles them
// with the TPM; it moves a torn tail aside. The caller holds the exclusive lock.
func (w *Writer) catchUp(ctx context.Context, rebuild bool) (*Recovery, error) {
	fi, err := w.f.Stat()
	if err != nil {
		return nil, err
	}
	if err := w.checkSameFile(fi); err != nil {
		return nil, err
	}
	if fi.Size() < w.off {
		return nil, fmt.Errorf("%w: %s shrank from %d to %d bytes while in use: it was truncated outside rimon", ErrLogLost, w.path, w.off, fi.Size())
	}
	rec := &Recovery{}
	if fi.Size() == w.off && w.count > 0 {
		rec.Records = w.count
		rec.State = w.state
		return rec, nil
	}
	newRecs, torn, err := readFrom(w.f, w.path, w.off)
	if err != nil {
		return nil, fixIndex(err, w.count)
	}
	if err := checkBoot(w.path, w.opts.BootID, w.count, newRecs); err != nil {
		return nil, err
	}
	res, err := reconcileFrom(ctx, w.state, w.count, w.last, newRecs, w.pcrs, ReconcileOptions{
		Banks:     w.opts.Banks,
		PCRs:      []int{w.opts.PCR},
		MaxRepair: w.opts.MaxRepair,
		Rebuild:   rebuild,
	})
	if err != nil {
		return nil, fmt.Errorf("log %s: %w", w.path, err)
	}
	rec.ReconcileResult = *res
	end := fi.Size() - torn
	if torn > 0 {
		// The torn record was never extended (records are written before the extend
		// and the TPM matched the complete records), so it can go; keep its bytes.
		if rec.TornPath, err = w.moveTornTail(end, torn); err != nil {
			return nil, err
		}
		rec.TornBytes = torn
	}
	w.off = end
	if w.opts.OnOpen != nil {
		for i := range newRecs {
			w.opts.OnOpen(&newRecs[i])
		}
	}
	w.count += len(newRecs)
	if len(newRecs) > 0 {
		w.last = &newRecs[len(newRecs)-1]
	}
	w.state = res.State
	return rec, nil
}

// checkSameFile returns an [ErrLogLost] error when the open log, whose
// metadata is fi, is no longer the file at w.path.
func (w *Writer) checkSameFile(fi os.FileInfo) error {
	pi, err := os.Stat(w.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s was deleted while rimon had it open, with %d records that the PCR vouches for and nobody can read now; a new log cannot match PCR %d: reboot, or reset the PCR (tpm2_pcrreset %d), before starting rimon again",
			ErrLogLost, w.path, w.count, w.opts.PCR, w.opts.PCR)
	case err != nil:
		return fmt.Errorf("%w: cannot check that %s is still the open log: %v", ErrLogLost, w.path, err)
	case !os.SameFile(fi, pi):
		return fmt.Errorf("%w: %s was replaced by another file while rimon had it open, with %d records that the PCR vouches for; put the original back, or reboot (or reset PCR %d), before starting rimon again",
			ErrLogLost, w.path, w.count, w.opts.PCR)
	}
	return nil
}

func fixIndex(err error, base int) error {
	var re *eventlog.RecordError
	if errors.As(err, &re) {
		re.Index += base
	}
	return err
}

// checkBoot refuses rimon records of another boot than bootID (unless it
// is empty); base is the index of recs[0] in the log.
func checkBoot(path, bootID string, base int, recs []eventlog.Record) error {
	if bootID == "" {
		return nil
	}
	for i := range recs {
		if recs[i].ContentType != eventlog.ContentTypeRimon {
			continue
		}
		if b := recs[i].Content.Str("boot_id"); b != bootID {
			return fmt.Errorf("%w: log %s record %d was written during boot %q, this is boot %q; PCRs reset at boot, so move the old log away",
				ErrOtherBoot, path, base+i, b, bootID)
		}
	}
	return nil
}

// moveTornTail copies the incomplete last record to a side file and cuts it off the log.
func (w *Writer) moveTornTail(end, n int64) (string, error) {
	b := make([]byte, n)
	if _, err := w.f.ReadAt(b, end); err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read torn record: %w", err)
	}
	side := w.path + ".torn-" + strconv.FormatInt(w.opts.Now().UnixNano(), 10)
	if err := writeNew(side, b); err != nil {
		return "", fmt.Errorf("save torn record of log %s: %w", w.path, err)
	}
	if err := w.f.Truncate(end); err != nil {
		return "", fmt.Errorf("cut torn record off log %s: %w", w.path, err)
	}
	if err := w.f.Sync(); err != nil {
		return "", fmt.Errorf("sync log %s: %w", w.path, err)
	}
	return side, nil
}

// writeNew writes b to a new file at name and syncs it; on failure (a
// full disk) it removes what it created, so no empty or partial file is
// left behind.
func writeNew(name string, b []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return err
	}
	return nil
}

// ExtendError means a record was written to the log but the PCR extend
// failed. The log and the TPM disagree until the next writer repairs it.
type ExtendError struct {
	Index int
	Err   error
}

// Error describes the failure.
func (e *ExtendError) Error() string {
	return fmt.Sprintf("record %d is in the log but the PCR extend failed: %v; the next rimon run extends it", e.Index, e.Err)
}

// Unwrap returns the underlying error.
func (e *ExtendError) Unwrap() error { return e.Err }

// Append records ev (its time and boot ID filled in when empty) as the next
// record of the log, extends pcr in every bank, and returns the record.
func (w *Writer) Append(ctx context.Context, pcr int, ev eventlog.Event) (eventlog.Record, error) {
	if ev.Time == "" {
		ev.Time = eventlog.FormatTime(w.opts.Now())
	}
	if ev.BootID == "" {
		ev.BootID = w.opts.BootID
	}
	content, err := ev.Content()
	if err != nil {
		return eventlog.Record{}, err
	}
	rec := eventlog.Record{PCR: pcr, ContentType: eventlog.ContentTypeRimon, Content: content, Digests: content.Digests(w.opts.Banks), HasRecNum: true}

	if err := flock(ctx, w.f, lockExclusive); err != nil {
		return eventlog.Record{}, fmt.Errorf("lock log %s: %w", w.path, err)
	}
	defer funlock(w.f)
	if _, err := w.catchUp(ctx, false); err != nil {
		return eventlog.Record{}, err
	}
	rec.RecNum = uint64(w.count) // its position: recnum counts every record of the log
	b, err := rec.Marshal()
	if err != nil {
		return eventlog.Record{}, err
	}
	if len(b) > eventlog.MaxRecordSize {
		return eventlog.Record{}, fmt.Errorf("record for %s is %d bytes, more than %d", ev.Path, len(b), eventlog.MaxRecordSize)
	}
	if n, err := w.f.Write(b); err != nil {
		return eventlog.Record{}, w.unwrite(n, fmt.Errorf("append to log %s: %w%s", w.path, err, writeHint(err)))
	}
	if err := w.f.Sync(); err != nil {
		// The record may be in the page cache but not on disk: take it back.
		return eventlog.Record{}, w.unwrite(len(b), fmt.Errorf("sync log %s: %w%s", w.path, err, writeHint(err)))
	}
	w.off += int64(len(b))
	idx := w.count
	w.count++
	w.last = &rec
	if err := extendRecord(ctx, w.pcrs, &rec, w.opts.Banks); err != nil {
		// Force a full reconcile on the next append.
		w.off, w.count, w.last, w.state = 0, 0, nil, eventlog.NewState(w.opts.Banks)
		return rec, &ExtendError{Index: idx, Err: err}
	}
	if err := w.state.Apply(&rec); err != nil {
		return rec, err
	}
	return rec, nil
}

// unwrite cuts off the n bytes of a record whose write or sync failed
// (nothing was extended), so that no half-written record stays in the
// log. When that fails too, the next catch-up moves the torn bytes aside.
func (w *Writer) unwrite(n int, err error) error {
	if n <= 0 {
		return err
	}
	if terr := w.f.Truncate(w.off); terr != nil {
		return fmt.Errorf("%w (and the %d bytes written could not be cut off: %v; the next append moves them aside)", err, n, terr)
	}
	return err
}

// writeHint says what to do about a failed write to the log.
func writeHint(err error) string {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return ": the file system is full; nothing was recorded, free space for the log"
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EROFS):
		return ": the log cannot be written (immutable, see lsattr, or a read-only file system); nothing was recorded"
	}
	return ""
}

// CheckResult says how a log compares with the TPM.
type CheckResult struct {
	ReconcileResult
	// TornBytes is the size of an incomplete last record, never extended,
	// which the next writer moves aside.
	TornBytes int64
}

// Check compares the log at path with the TPM under the log's shared lock,
// so that no writer appends or extends meanwhile. It changes nothing:
// records written but not extended are reported in Pending. A missing log
// compares as empty. bootID, when set, must match every rimon record.
func Check(ctx context.Context, path string, pcrs PCRs, banks []crypto.Hash, pcr int, bootID string) (*CheckResult, error) {
	var out *CheckResult
	err := withShared(ctx, path, func(f *os.File) error {
		var recs []eventlog.Record
		var torn int64
		if f != nil {
			var err error
			if recs, torn, err = readFrom(f, path, 0); err != nil {
				return err
			}
		}
		if err := checkBoot(path, bootID, 0, recs); err != nil {
			return err
		}
		res, err := Reconcile(ctx, recs, pcrs, ReconcileOptions{Banks: banks, PCRs: []int{pcr}})
		if err != nil {
			return fmt.Errorf("log %s: %w", path, err)
		}
		out = &CheckResult{ReconcileResult: *res, TornBytes: torn}
		return nil
	})
	return out, err
}

// Verify catches up with other writers and compares the replay of the log
// with the TPM. It returns a *DivergenceError when they disagree, for
// example after an extend of the PCR outside rimon.
func (w *Writer) Verify(ctx context.Context) error {
	if err := flock(ctx, w.f, lockExclusive); err != nil {
		return fmt.Errorf("lock log %s: %w", w.path, err)
	}
	defer funlock(w.f)
	if _, err := w.catchUp(ctx, false); err != nil {
		return err
	}
	_, err := reconcileFrom(ctx, w.state, w.count, w.last, nil, w.pcrs, ReconcileOptions{Banks: w.opts.Banks, PCRs: []int{w.opts.PCR}})
	if err != nil {
		return fmt.Errorf("log %s: %w", w.path, err)
	}
	return nil
}

// WhileLocked reads the log at path under its shared lock and calls fn
// with its bytes while still holding the lock, so that no writer appends
// or extends until fn returns: a quote taken in fn belongs with the bytes.
// A missing log reads as empty.
func WhileLocked(ctx context.Context, path string, fn func(log []byte) error) error {
	return withShared(ctx, path, func(f *os.File) error {
		if f == nil {
			return fn(nil)
		}
		b, err := io.ReadAll(f)
		if err != nil {
			return fmt.Errorf("read log %s: %w", path, err)
		}
		return fn(b)
	})
}

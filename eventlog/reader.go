package eventlog

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// ErrTorn is returned by [Reader.Next] when the log ends in an incomplete
// record: a write that was cut short, by a crash for example.
var ErrTorn = errors.New("log ends in an incomplete record")

// RecordError says which record of a log could not be read.
type RecordError struct {
	// Index counts records from 0; Offset is the record's first byte.
	Index  int
	Offset int64
	Err    error
}

// Error describes the failure.
func (e *RecordError) Error() string {
	return fmt.Sprintf("record %d (byte %d): %v", e.Index, e.Offset, e.Err)
}

// Unwrap returns the underlying error.
func (e *RecordError) Unwrap() error { return e.Err }

// Reader reads records from a log.
type Reader struct {
	br      *bufio.Reader
	off     int64 // end of the last complete record
	index   int
	lineLen int
	failed  error
}

// NewReader returns a Reader that reads records from r, starting at byte offset base.
func NewReader(r io.Reader, base int64) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 64<<10), off: base}
}

// Offset is the byte offset just after the last record Next returned.
func (r *Reader) Offset() int64 { return r.off }

// Next returns the next record. At the end of the log it returns io.EOF; when
// the log ends in an incomplete record, a *RecordError wrapping [ErrTorn],
// and Offset says where the complete records end.
func (r *Reader) Next() (Record, error) {
	body, err := r.nextBody()
	if err != nil {
		return Record{}, err
	}
	rec, err := parseRecord(body)
	if err != nil {
		return Record{}, r.fail(err)
	}
	r.advance()
	return rec, nil
}

// nextBody returns the JSON of the next record, which stays valid until
// the next read; advance then moves past it.
func (r *Reader) nextBody() ([]byte, error) {
	if r.failed != nil {
		return nil, r.failed
	}
	line, err := r.readLine()
	r.lineLen = len(line)
	if err == io.EOF && len(line) == 0 {
		return nil, io.EOF
	}
	if err == io.EOF {
		if line[0] != 0x1e {
			// A write cut short leaves a prefix of a record, which starts with 0x1E.
			return nil, r.fail(fmt.Errorf("%d bytes at the end of the log are not a record: they do not start with the record separator 0x1E", len(line)))
		}
		return nil, r.fail(fmt.Errorf("%w (%d bytes without a final line feed)", ErrTorn, len(line)))
	}
	if err != nil {
		return nil, r.fail(err)
	}
	body := line[:len(line)-1]
	if len(body) == 0 || body[0] != 0x1e {
		return nil, r.fail(errors.New("does not start with the record separator 0x1E"))
	}
	// JSON whitespace around the object is the parsers' business; other
	// Unicode spaces are not JSON and are refused with it.
	return body[1:], nil
}

func (r *Reader) advance() {
	r.off += int64(r.lineLen)
	r.index++
}

func (r *Reader) fail(err error) error {
	r.failed = &RecordError{Index: r.index, Offset: r.off, Err: err}
	return r.failed
}

// readLine reads through the next line feed, refusing lines over MaxRecordSize.
func (r *Reader) readLine() ([]byte, error) {
	var buf []byte
	for {
		frag, err := r.br.ReadSlice('\n')
		if len(buf)+len(frag) > MaxRecordSize {
			return nil, fmt.Errorf("longer than %d bytes", MaxRecordSize)
		}
		if err == bufio.ErrBufferFull {
			buf = append(buf, frag...)
			continue
		}
		if buf == nil {
			buf = frag
		} else {
			buf = append(buf, frag...)
		}
		return buf, err
	}
}

// ReadAll reads every record. When the log ends in a torn record it returns
// the complete records and an error wrapping [ErrTorn]; callers may repair it
// with logfile.Reconcile. Any other error means the log is corrupt.
func ReadAll(r io.Reader) ([]Record, error) {
	rd := NewReader(r, 0)
	var recs []Record
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			return recs, nil
		}
		if err != nil {
			return recs, err
		}
		recs = append(recs, rec)
	}
}

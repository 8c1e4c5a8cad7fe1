package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
)

// txn is a write transaction: its statements expand the dialect's words,
// and use the statements prepared once on the SQLite writer connection
// (parsing them again for every result cost a third of a save).
type txn struct {
	s  *Store
	tx *sql.Tx
}

func (t *txn) stmt(ctx context.Context, q string) (*sql.Stmt, string) {
	if st := t.s.stmts[q]; st != nil {
		return t.tx.StmtContext(ctx, st), ""
	}
	if strings.Contains(q, "{{") {
		q = t.s.d.expand(q)
	}
	return nil, q
}

// ExecContext is sql.Tx.ExecContext.
func (t *txn) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st, q := t.stmt(ctx, q); st != nil {
		return st.ExecContext(ctx, args...)
	} else {
		return t.tx.ExecContext(ctx, q, args...)
	}
}

// QueryContext is sql.Tx.QueryContext.
func (t *txn) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st, q := t.stmt(ctx, q); st != nil {
		return st.QueryContext(ctx, args...)
	} else {
		return t.tx.QueryContext(ctx, q, args...)
	}
}

// QueryRowContext is sql.Tx.QueryRowContext.
func (t *txn) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st, q := t.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	} else {
		return t.tx.QueryRowContext(ctx, q, args...)
	}
}

// hotStatements are prepared once on the SQLite writer connection: the
// statements of Claim and SaveResult.
var hotStatements = []string{
	sqlSavepoint, sqlRelease, sqlRollbackTo,
	sqlLockAgentByID, sqlSaveAgent, sqlAddTransition, sqlEnabledEndpoints, sqlAddDelivery,
	sqlDeleteObservations, sqlCountObservations, sqlClaim,
}

func init() {
	hotStatements = append(hotStatements, sqlUpsertObservations[1:]...)
	hotStatements = append(hotStatements, sqlMarkLatest[1:]...)
}

const (
	sqlSavepoint  = `SAVEPOINT op`
	sqlRelease    = `RELEASE op`
	sqlRollbackTo = `ROLLBACK TO op`
)

// prepare prepares the hot statements on the writer (while no
// transaction holds its one connection).
func (s *Store) prepare(ctx context.Context) error {
	s.stmts = make(map[string]*sql.Stmt, len(hotStatements))
	for _, q := range hotStatements {
		st, err := s.w.PrepareContext(ctx, s.d.expand(q))
		if err != nil {
			return s.fail("prepare", err)
		}
		s.stmts[q] = st
	}
	return nil
}

// write runs f in a write transaction and commits it: on PostgreSQL one
// transaction per call; on SQLite, calls made at the same time share one
// transaction (group commit, see committer), each under its own savepoint.
// f may run more than once (when another write of its group failed); it
// must only touch the database.
func (s *Store) write(ctx context.Context, op string, f func(ctx context.Context, tx *txn) error) error {
	if s.group != nil {
		return s.group.do(ctx, op, f)
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.fail(op, err)
	}
	if err := f(ctx, &txn{s, tx}); err != nil {
		tx.Rollback() //nolint:errcheck // the first error is the one to report
		return s.wrap(op, err)
	}
	return s.fail(op+": commit", tx.Commit())
}

// wrap returns an error of f: as it is when already worded, else wrapped.
func (s *Store) wrap(op string, err error) error {
	var se storeError
	if errors.As(err, &se) {
		return err
	}
	return s.fail(op, err)
}

// maxGroup bounds the writes committed together.
const maxGroup = 64

// committer batches concurrent writes to SQLite into one transaction. With
// synchronous=FULL every commit waits for the disk (an fsync); sharing a
// commit among the writes waiting at that moment keeps each one durable
// when its call returns, at a fraction of the syncs. Each write runs under
// a savepoint: a write refused (conflict, not found, limit) is rolled back
// alone. A database error ends the transaction: the failed write reports
// it, the others of the group run again in a new transaction. A failed
// commit fails the whole group: nothing of it was stored.
//
// There is no goroutine: the first caller to find no leader leads (runs a
// group), then hands the lead to the first caller still waiting.
type committer struct {
	s       *Store
	mu      sync.Mutex
	queue   []*job
	leading bool
}

type job struct {
	ctx  context.Context
	op   string
	f    func(ctx context.Context, tx *txn) error
	err  error
	done chan struct{}
	// lead is closed when the job's caller must lead (isLeader set under mu).
	lead     chan struct{}
	isLeader bool
}

func (c *committer) do(ctx context.Context, op string, f func(ctx context.Context, tx *txn) error) error {
	j := &job{ctx: ctx, op: op, f: f, done: make(chan struct{}), lead: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, j)
	if !c.leading {
		c.leading = true
		c.mu.Unlock()
		c.run()
		<-j.done
		return j.err
	}
	c.mu.Unlock()
	select {
	case <-j.done:
		return j.err
	case <-j.lead:
		c.run()
		<-j.done
		return j.err
	case <-ctx.Done():
		c.mu.Lock()
		for i, q := range c.queue {
			if q == j {
				c.queue = append(c.queue[:i:i], c.queue[i+1:]...)
				lead := j.isLeader
				c.mu.Unlock()
				if lead {
					c.run()
				}
				return c.s.fail(op, ctx.Err())
			}
		}
		c.mu.Unlock()
		// Taken into a group already: its outcome decides.
		<-j.done
		return j.err
	}
}

// run commits one group, then hands the lead on.
func (c *committer) run() {
	c.mu.Lock()
	n := min(len(c.queue), maxGroup)
	group := append([]*job(nil), c.queue[:n]...)
	c.queue = c.queue[n:]
	c.mu.Unlock()

	if len(group) > 0 {
		c.commit(group)
	}

	c.mu.Lock()
	if len(c.queue) > 0 {
		next := c.queue[0]
		next.isLeader = true
		close(next.lead)
	} else {
		c.leading = false
	}
	c.mu.Unlock()
}

// commit runs the group's writes in one transaction, and reports each.
func (c *committer) commit(group []*job) {
	s := c.s
	finish := func(j *job, err error) {
		j.err = err
		close(j.done)
	}
	pending := group
	for len(pending) > 0 {
		var live []*job
		for _, j := range pending {
			if err := j.ctx.Err(); err != nil {
				finish(j, s.fail(j.op, err))
			} else {
				live = append(live, j)
			}
		}
		if len(live) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.o.Timeout)
		tx, err := s.w.BeginTx(ctx, nil)
		if err != nil {
			cancel()
			for _, j := range live {
				finish(j, s.fail(j.op, err))
			}
			return
		}
		t := &txn{s, tx}
		var ok []*job
		pending = nil
		for i, j := range live {
			err := runSavepoint(ctx, t, j.f)
			if err == nil {
				ok = append(ok, j)
				continue
			}
			var se storeError
			if errors.As(err, &se) {
				finish(j, err)
				continue
			}
			// A database error: the transaction may be gone. Report it to
			// this write, run the others again.
			tx.Rollback() //nolint:errcheck // reporting err
			finish(j, s.fail(j.op, err))
			pending = append(ok, live[i+1:]...)
			ok = nil
			break
		}
		if pending == nil {
			err := tx.Commit()
			for _, j := range ok {
				finish(j, s.fail(j.op+": commit", err))
			}
		}
		cancel()
	}
}

// runSavepoint runs f under a savepoint, rolled back when f fails with a
// storeError (a refusal). Any other error is returned as it is: the
// caller ends the transaction.
func runSavepoint(ctx context.Context, t *txn, f func(ctx context.Context, tx *txn) error) error {
	if _, err := t.ExecContext(ctx, sqlSavepoint); err != nil {
		return err
	}
	err := f(ctx, t)
	var se storeError
	if err != nil && !errors.As(err, &se) {
		return err
	}
	if err != nil {
		if _, err := t.ExecContext(ctx, sqlRollbackTo); err != nil {
			return err
		}
	}
	if _, rerr := t.ExecContext(ctx, sqlRelease); rerr != nil {
		return rerr
	}
	return err
}

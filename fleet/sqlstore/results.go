package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// Event names of transitions written by the store itself.
const (
	eventState = "state"
	eventClear = "clear"
)

// The write path's statements.
const (
	sqlLockAgentByID   = `SELECT id, name, status, version, lease_owner FROM agents WHERE id = $1{{lockrow}}`
	sqlLockAgentByName = `SELECT id, name, status, version, lease_owner FROM agents WHERE name = $1{{lockrow}}`
	sqlAddTransition   = `INSERT INTO transitions (agent_id, agent, at, event, from_state, to_state, reason, findings)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`
	sqlEnabledEndpoints = `SELECT url FROM endpoints WHERE declared = 1 AND enabled = 1 ORDER BY url`
	sqlAddDelivery      = `INSERT INTO deliveries (id, endpoint, transition, payload, created, next_attempt, state)
VALUES ($1, $2, $3, $4, $5, $5, 'pending')`
	sqlDeleteObservations = `DELETE FROM observations WHERE agent_id = $1`
	sqlCountObservations  = `SELECT COUNT(*) FROM observations WHERE agent_id = $1`
)

// rowsPerStatement bounds the rows of one statement writing observations.
const rowsPerStatement = 16

// sqlUpsertObservations[n] upserts n observations ($1 the agent, then 12
// values per row); sqlMarkLatest[n] gives n paths their latest ($1 the
// agent, then n observation keys, then their n path keys).
var sqlUpsertObservations, sqlMarkLatest = observationStatements()

func observationStatements() (upsert, mark []string) {
	upsert = make([]string, rowsPerStatement+1)
	mark = make([]string, rowsPerStatement+1)
	for n := 1; n <= rowsPerStatement; n++ {
		var b strings.Builder
		b.WriteString(`INSERT INTO observations (agent_id, okey, path_key, path, kind, deleted, sha256,
	manifest_digest, config_digest, cause, error, record, latest) VALUES `)
		p := 2
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("($1")
			for j := 0; j < 12; j++ {
				fmt.Fprintf(&b, ", $%d", p)
				p++
			}
			b.WriteString(")")
		}
		b.WriteString(`
ON CONFLICT (agent_id, okey) DO UPDATE SET cause = excluded.cause, error = excluded.error,
	record = excluded.record, latest = excluded.latest`)
		upsert[n] = b.String()

		list := func(from int) string {
			var l []string
			for i := 0; i < n; i++ {
				l = append(l, "$"+strconv.Itoa(from+i))
			}
			return strings.Join(l, ", ")
		}
		okeys, pks := list(2), list(2+n)
		mark[n] = `UPDATE observations SET latest = CASE WHEN okey IN (` + okeys + `) THEN 1 ELSE 0 END
WHERE agent_id = $1 AND path_key IN (` + pks + `) AND (latest = 1 OR okey IN (` + okeys + `))`
	}
	return upsert, mark
}

// rowState is what a write reads of an agent before changing it.
type rowState struct {
	id      int64
	name    string
	status  fleet.Status
	version int64
	owner   string
}

// lockAgent reads the agent's row for an update in the same transaction.
func (s *Store) lockAgent(ctx context.Context, tx *txn, q string, arg any) (rowState, error) {
	var r rowState
	var st string
	err := tx.QueryRowContext(ctx, q, arg).
		Scan(&r.id, &r.name, &st, &r.version, &r.owner)
	r.status = fleet.Status(st)
	return r, err
}

// SaveResult stores one attestation's result in one transaction: the
// agent's new state (refused with fleet.ErrConflict unless the row is
// still at r.Version and, when r.Owner is set, leased to r.Owner), its
// lease given back, a "state" transition and one webhook delivery per
// enabled endpoint when the state changed, the events, and the
// observations. A result that would keep more than the per-agent bound of
// observations is refused with fleet.ErrLimit; nothing is stored then.
func (s *Store) SaveResult(ctx context.Context, r fleet.Result) error {
	if !r.Status.Valid() {
		return invalid("result for agent #%d: state %q: want one of %v", r.AgentID, r.Status, fleet.Statuses)
	}
	if r.At.IsZero() {
		return invalid("result for agent #%d: no time", r.AgentID)
	}
	if err := validJSON("result findings", r.Findings); err != nil {
		return err
	}
	if err := validJSON("result checks", r.Checks); err != nil {
		return err
	}
	if r.Boot != nil {
		if err := validJSON("result boot state", r.Boot.State); err != nil {
			return err
		}
	}
	if r.Enrollment != nil && !json.Valid(r.Enrollment) {
		return invalid("result for agent #%d: enrollment: not valid JSON", r.AgentID)
	}
	for i, e := range r.Events {
		if e.Event == "" {
			return invalid("result for agent #%d: event %d: no event name", r.AgentID, i)
		}
		if e.From != "" && !e.From.Valid() || e.To != "" && !e.To.Valid() {
			return invalid("result for agent #%d: event %d: unknown state", r.AgentID, i)
		}
		if err := validJSON("event findings", e.Findings); err != nil {
			return err
		}
	}
	for i, o := range r.Observations {
		if o.Path == "" || o.Kind == "" {
			return invalid("result for agent #%d: observation %d: no path or kind", r.AgentID, i)
		}
	}
	return s.write(ctx, fmt.Sprintf("save result for agent #%d", r.AgentID), func(ctx context.Context, tx *txn) error {
		old, err := s.lockAgent(ctx, tx, sqlLockAgentByID, r.AgentID)
		if errors.Is(err, sql.ErrNoRows) {
			return errorf("save result for agent #%d: %w", r.AgentID, fleet.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if old.version != r.Version {
			return errorf("save result for agent %s: version %d, the result is for %d: %w", old.name, old.version, r.Version, fleet.ErrConflict)
		}
		if r.Owner != "" && old.owner != r.Owner {
			return errorf("save result for agent %s: leased to %q, not %q: %w", old.name, old.owner, r.Owner, fleet.ErrConflict)
		}
		changed := old.status != r.Status
		if r.Enrollment != nil {
			// Before the row's version moves (sqlSaveAgent checks it).
			if err := execOne(ctx, tx, `UPDATE agents SET enrollment = $2, enrolled = $3 WHERE id = $1 AND version = $4`,
				old.id, r.Enrollment, ts(r.At), r.Version); err != nil {
				return err
			}
		}
		boot := r.Boot
		if boot == nil {
			boot = &fleet.Boot{}
		}
		if err := execOne(ctx, tx, sqlSaveAgent, old.id, string(r.Status), r.Reason, r.Findings, r.Checks, ts(r.At), ts(r.NextDue),
			r.Failures, b2i(changed), b2i(r.Boot != nil), b2i(boot.Known), int64(boot.ResetCount), int64(boot.RestartCount),
			int64(boot.Clock), boot.State, b2i(boot.Refresh), r.Version); err != nil {
			return err
		}
		for _, e := range r.Events {
			at := e.At
			if at.IsZero() {
				at = r.At
			}
			from, to := e.From, e.To
			if from == "" {
				from = old.status
			}
			if to == "" {
				to = r.Status
			}
			if _, err := s.addTransition(ctx, tx, old.id, old.name, at, e.Event, from, to, e.Reason, e.Findings); err != nil {
				return err
			}
		}
		if changed {
			if err := s.stateChanged(ctx, tx, old.id, old.name, r.At, eventState, old.status, r.Status, r.Reason, r.Findings); err != nil {
				return err
			}
		}
		return s.saveObservations(ctx, tx, old, r)
	})
}

// sqlSaveAgent stores a result in the agent's row: since moves when $9 is
// 1, the boot is replaced when $10 is 1.
const sqlSaveAgent = `UPDATE agents SET status = $2, reason = $3, findings = $4, checks = $5, last_poll = $6, next_due = $7,
	failures = $8, version = version + 1, lease_owner = '', lease_until = 0,
	since = CASE WHEN $9 = 1 THEN $6 ELSE since END,
	boot_known = CASE WHEN $10 = 1 THEN $11 ELSE boot_known END,
	boot_reset = CASE WHEN $10 = 1 THEN $12 ELSE boot_reset END,
	boot_restart = CASE WHEN $10 = 1 THEN $13 ELSE boot_restart END,
	boot_clock = CASE WHEN $10 = 1 THEN $14 ELSE boot_clock END,
	boot_state = CASE WHEN $10 = 1 THEN $15 ELSE boot_state END,
	boot_refresh = CASE WHEN $10 = 1 THEN $16 ELSE boot_refresh END
WHERE id = $1 AND version = $17`

// execOne runs a statement that must change exactly one row.
func execOne(ctx context.Context, tx *txn, q string, args ...any) error {
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("%d rows changed, want 1", n)
	}
	return nil
}

func (s *Store) addTransition(ctx context.Context, tx *txn, agentID int64, agent string, at time.Time, event string, from, to fleet.Status, reason string, findings []byte) (int64, error) {
	var id int64
	err := tx.QueryRowContext(ctx, sqlAddTransition,
		agentID, agent, ts(at), event, string(from), string(to), reason, findings).Scan(&id)
	return id, err
}

// stateChanged records a change of state: its transition, and one
// delivery per enabled endpoint.
func (s *Store) stateChanged(ctx context.Context, tx *txn, agentID int64, agent string, at time.Time, event string, from, to fleet.Status, reason string, findings []byte) error {
	tid, err := s.addTransition(ctx, tx, agentID, agent, at, event, from, to, reason, findings)
	if err != nil {
		return err
	}
	p := fleet.Payload{
		Type:      fleet.EventStateChanged,
		Timestamp: at.UTC(),
		Data: fleet.PayloadData{
			Agent: agent, OldState: from, NewState: to, Reason: reason,
			Findings: json.RawMessage(findings), Time: at.UTC(),
		},
	}
	if len(findings) == 0 {
		p.Data.Findings = nil
	}
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("webhook payload: %w", err)
	}
	rows, err := tx.QueryContext(ctx, sqlEnabledEndpoints)
	if err != nil {
		return err
	}
	var urls []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			rows.Close()
			return err
		}
		urls = append(urls, u)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, u := range urls {
		id, err := newMessageID()
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, sqlAddDelivery, id, u, tid, body, ts(at)); err != nil {
			return err
		}
	}
	return nil
}

// saveObservations applies a result's observations: cleared first for a
// new boot, upserted, the Latest mark moved, and the bound checked.
func (s *Store) saveObservations(ctx context.Context, tx *txn, a rowState, r fleet.Result) error {
	if r.NewBoot {
		if _, err := tx.ExecContext(ctx, sqlDeleteObservations, a.id); err != nil {
			return err
		}
	}
	if len(r.Observations) == 0 {
		return nil
	}
	if len(r.Observations) > s.o.MaxObservations {
		return errorf("save result for agent %s: %d observations, the bound is %d per agent: %w", a.name, len(r.Observations), s.o.MaxObservations, fleet.ErrLimit)
	}
	// One row per key (the last wins), one Latest per path (the last
	// wins), in statements of up to rowsPerStatement rows.
	type row struct {
		o             fleet.Observation
		okey, pathKey string
	}
	rows := make([]row, 0, len(r.Observations))
	at := map[string]int{}
	latest := map[string]string{} // path key → okey
	var paths []string            // path keys with a Latest, in order
	for _, o := range r.Observations {
		x := row{o, hashKey(o.Path, o.Kind, strconv.FormatBool(o.Deleted), o.SHA256, o.ManifestDigest, o.ConfigDigest), hashKey(o.Path)}
		if i, ok := at[x.okey]; ok {
			rows[i] = x
		} else {
			at[x.okey] = len(rows)
			rows = append(rows, x)
		}
		if o.Latest {
			if _, ok := latest[x.pathKey]; !ok {
				paths = append(paths, x.pathKey)
			}
			latest[x.pathKey] = x.okey
		}
	}
	for len(rows) > 0 {
		n := min(len(rows), rowsPerStatement)
		args := make([]any, 0, 1+12*n)
		args = append(args, a.id)
		for _, x := range rows[:n] {
			o := x.o
			args = append(args, x.okey, x.pathKey, o.Path, o.Kind, b2i(o.Deleted), o.SHA256, o.ManifestDigest, o.ConfigDigest,
				o.Cause, o.Error, int64(o.Record), b2i(o.Latest))
		}
		if _, err := tx.ExecContext(ctx, sqlUpsertObservations[n], args...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	for len(paths) > 0 {
		n := min(len(paths), rowsPerStatement)
		args := make([]any, 0, 1+2*n)
		args = append(args, a.id)
		for _, pk := range paths[:n] {
			args = append(args, latest[pk])
		}
		for _, pk := range paths[:n] {
			args = append(args, pk)
		}
		if _, err := tx.ExecContext(ctx, sqlMarkLatest[n], args...); err != nil {
			return err
		}
		paths = paths[n:]
	}
	var n int
	if err := tx.QueryRowContext(ctx, sqlCountObservations, a.id).Scan(&n); err != nil {
		return err
	}
	if n > s.o.MaxObservations {
		return errorf("save result for agent %s: %d observations, the bound is %d per agent: %w", a.name, n, s.o.MaxObservations, fleet.ErrLimit)
	}
	return nil
}

// Observations lists the agent's observations by path and record.
func (s *Store) Observations(ctx context.Context, agentID int64) ([]fleet.Observation, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	op := fmt.Sprintf("observations of agent #%d", agentID)
	rows, err := s.r.QueryContext(ctx, `SELECT path, kind, deleted, sha256, manifest_digest, config_digest, cause, error,
	record, latest FROM observations WHERE agent_id = $1 ORDER BY path, record, okey`, agentID)
	if err != nil {
		return nil, s.fail(op, err)
	}
	defer rows.Close()
	var out []fleet.Observation
	for rows.Next() {
		var o fleet.Observation
		var deleted, latest int
		var rec int64
		if err := rows.Scan(&o.Path, &o.Kind, &deleted, &o.SHA256, &o.ManifestDigest, &o.ConfigDigest, &o.Cause, &o.Error, &rec, &latest); err != nil {
			return nil, s.fail(op, err)
		}
		o.Deleted, o.Latest, o.Record = deleted != 0, latest != 0, uint64(rec)
		out = append(out, o)
	}
	return out, s.fail(op, rows.Err())
}

// Clear is an operator's acknowledgement: the agent goes to pending (a
// "clear" transition, and deliveries when its state changes), its boot and
// observations are forgotten (the next attestation replays the whole log),
// its lease is dropped (a result in flight is refused), due at now.
func (s *Store) Clear(ctx context.Context, name, reason string, now time.Time) error {
	return s.write(ctx, "clear agent "+name, func(ctx context.Context, tx *txn) error {
		old, err := s.lockAgent(ctx, tx, sqlLockAgentByName, name)
		if errors.Is(err, sql.ErrNoRows) {
			return errorf("clear agent %s: %w", name, fleet.ErrNotFound)
		}
		if err != nil {
			return err
		}
		q := `UPDATE agents SET status = $2, reason = $3, findings = NULL, checks = NULL, next_due = $4, failures = 0,
	boot_known = 0, boot_reset = 0, boot_restart = 0, boot_clock = 0, boot_state = NULL, boot_refresh = 0,
	version = version + 1, lease_owner = '', lease_until = 0`
		if old.status != fleet.Pending {
			q += `, since = $4`
		}
		if err := execOne(ctx, tx, q+` WHERE id = $1`, old.id, string(fleet.Pending), reason, ts(now)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, sqlDeleteObservations, old.id); err != nil {
			return err
		}
		if old.status == fleet.Pending {
			_, err := s.addTransition(ctx, tx, old.id, old.name, now, eventClear, old.status, fleet.Pending, reason, nil)
			return err
		}
		return s.stateChanged(ctx, tx, old.id, old.name, now, eventClear, old.status, fleet.Pending, reason, nil)
	})
}

// Unenroll is an operator's decision to enroll the agent again: its
// enrollment, boot and observations are forgotten, it goes to pending (an
// "enroll" transition, and deliveries when its state changes), its lease
// is dropped (a result in flight is refused), due at now.
func (s *Store) Unenroll(ctx context.Context, name, reason string, now time.Time) error {
	return s.write(ctx, "enroll agent "+name+" again", func(ctx context.Context, tx *txn) error {
		old, err := s.lockAgent(ctx, tx, sqlLockAgentByName, name)
		if errors.Is(err, sql.ErrNoRows) {
			return errorf("enroll agent %s again: %w", name, fleet.ErrNotFound)
		}
		if err != nil {
			return err
		}
		q := `UPDATE agents SET status = $2, reason = $3, findings = NULL, checks = NULL, next_due = $4, failures = 0,
	boot_known = 0, boot_reset = 0, boot_restart = 0, boot_clock = 0, boot_state = NULL, boot_refresh = 0,
	enrollment = NULL, enrolled = 0, version = version + 1, lease_owner = '', lease_until = 0`
		if old.status != fleet.Pending {
			q += `, since = $4`
		}
		if err := execOne(ctx, tx, q+` WHERE id = $1`, old.id, string(fleet.Pending), reason, ts(now)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, sqlDeleteObservations, old.id); err != nil {
			return err
		}
		if old.status == fleet.Pending {
			_, err := s.addTransition(ctx, tx, old.id, old.name, now, fleet.EventEnroll, old.status, fleet.Pending, reason, nil)
			return err
		}
		return s.stateChanged(ctx, tx, old.id, old.name, now, fleet.EventEnroll, old.status, fleet.Pending, reason, nil)
	})
}

// History lists the agent's transitions, newest first; limit <= 0 lists
// all.
func (s *Store) History(ctx context.Context, name string, limit int) ([]fleet.Transition, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	op := "history of agent " + name
	var id int64
	err := s.r.QueryRowContext(ctx, `SELECT id FROM agents WHERE name = $1`, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf("%s: %w", op, fleet.ErrNotFound)
	}
	if err != nil {
		return nil, s.fail(op, err)
	}
	if limit <= 0 {
		limit = 1<<31 - 1
	}
	rows, err := s.r.QueryContext(ctx, `SELECT id, agent, at, event, from_state, to_state, reason, findings
FROM transitions WHERE agent_id = $1 ORDER BY id DESC LIMIT $2`, id, limit)
	if err != nil {
		return nil, s.fail(op, err)
	}
	defer rows.Close()
	var out []fleet.Transition
	for rows.Next() {
		var t fleet.Transition
		var at int64
		var from, to string
		if err := rows.Scan(&t.ID, &t.Agent, &at, &t.Event, &from, &to, &t.Reason, &t.Findings); err != nil {
			return nil, s.fail(op, err)
		}
		t.At, t.From, t.To = tm(at), fleet.Status(from), fleet.Status(to)
		out = append(out, t)
	}
	return out, s.fail(op, rows.Err())
}

package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// agentCols are the columns scanAgent reads, in its order.
const agentCols = `id, name, url, agent_ca, ak, azure, vm_id, COALESCE(reference, ''), pcrs, banks, interval_ns,
	push, push_token_hash, status, reason, since, findings, checks, last_poll, next_due, failures,
	boot_known, boot_reset, boot_restart, boot_clock, boot_state, boot_refresh, version, lease_owner, lease_until,
	ek_ca, ak_ca, enrollment, enrolled`

type scanner interface{ Scan(...any) error }

func scanAgent(row scanner) (*fleet.Agent, error) {
	var (
		a                                 fleet.Agent
		azure, push, known, refresh       int
		pcrs, banks, status               string
		interval, since, lastPoll, due    int64
		reset, restart, clock, leaseUntil int64
		enrolled                          int64
	)
	err := row.Scan(&a.ID, &a.Name, &a.URL, &a.AgentCA, &a.AK, &azure, &a.VMID, &a.Reference, &pcrs, &banks, &interval,
		&push, &a.PushTokenHash, &status, &a.Reason, &since, &a.Findings, &a.Checks, &lastPoll, &due, &a.Failures,
		&known, &reset, &restart, &clock, &a.Boot.State, &refresh, &a.Version, &a.LeaseOwner, &leaseUntil,
		&a.EKCA, &a.AKCA, &a.Enrollment, &enrolled)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(pcrs), &a.PCRs); err != nil {
		return nil, fmt.Errorf("agent %s: stored pcrs: %w", a.Name, err)
	}
	if err := json.Unmarshal([]byte(banks), &a.Banks); err != nil {
		return nil, fmt.Errorf("agent %s: stored banks: %w", a.Name, err)
	}
	a.Azure, a.Push = azure != 0, push != 0
	a.Interval = time.Duration(interval)
	a.Status = fleet.Status(status)
	a.Since, a.LastPoll, a.NextDue, a.LeaseUntil = tm(since), tm(lastPoll), tm(due), tm(leaseUntil)
	a.EnrolledAt = tm(enrolled)
	a.Boot.Known, a.Boot.Refresh = known != 0, refresh != 0
	a.Boot.ResetCount, a.Boot.RestartCount, a.Boot.Clock = uint32(reset), uint32(restart), uint64(clock)
	return &a, nil
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// AddAgent registers an agent in state pending, due at now.
func (s *Store) AddAgent(ctx context.Context, spec fleet.Spec, now time.Time) (*fleet.Agent, error) {
	spec, err := normalizeSpec(spec, false)
	if err != nil {
		return nil, err
	}
	pcrs, _ := json.Marshal(spec.PCRs)
	banks, _ := json.Marshal(spec.Banks)
	var a *fleet.Agent
	err = s.write(ctx, "add agent "+spec.Name, func(ctx context.Context, tx *txn) error {
		if err := s.referenceExists(ctx, tx, spec.Name, spec.Reference); err != nil {
			return err
		}
		row := tx.QueryRowContext(ctx, `INSERT INTO agents (name, url, agent_ca, ak, azure, vm_id, reference, pcrs, banks,
	interval_ns, push, push_token_hash, status, reason, since, next_due, created, ek_ca, ak_ca)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, '', $14, $14, $14, $15, $16)
RETURNING `+agentCols,
			spec.Name, spec.URL, spec.AgentCA, spec.AK, b2i(spec.Azure), spec.VMID, nullString(spec.Reference),
			string(pcrs), string(banks), int64(spec.Interval), b2i(spec.Push), spec.PushTokenHash,
			string(fleet.Pending), ts(now), spec.EKCA, spec.AKCA)
		var err error
		a, err = scanAgent(row)
		if err != nil && s.d.unique(err) {
			return errorf("agent %s: %w", spec.Name, fleet.ErrExists)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// referenceExists refuses a spec naming a reference that is not stored.
func (s *Store) referenceExists(ctx context.Context, tx *txn, agent, ref string) error {
	if ref == "" {
		return nil
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM reference_files WHERE name = $1`, ref).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return errorf("agent %s: reference %s: %w (add the reference first)", agent, ref, fleet.ErrNotFound)
	}
	return nil
}

// UpdateSpec changes an agent's registration, not its state (an
// enrollment is forgotten when the CAs it was made with change). The name
// cannot change (s.Name is name or empty). A spec that pushes without a
// token hash keeps the stored one. The version moves and the lease is
// dropped: a result computed under the old spec (an AK no longer pinned)
// is refused, and the agent can be claimed again at once.
func (s *Store) UpdateSpec(ctx context.Context, name string, spec fleet.Spec) error {
	if spec.Name == "" {
		spec.Name = name
	}
	if spec.Name != name {
		return invalid("agent %s: name: an agent cannot be renamed (to %q)", name, spec.Name)
	}
	spec, err := normalizeSpec(spec, true)
	if err != nil {
		return err
	}
	pcrs, _ := json.Marshal(spec.PCRs)
	banks, _ := json.Marshal(spec.Banks)
	return s.write(ctx, "update agent "+name, func(ctx context.Context, tx *txn) error {
		if err := s.referenceExists(ctx, tx, name, spec.Reference); err != nil {
			return err
		}
		var old string
		err := tx.QueryRowContext(ctx, `SELECT push_token_hash FROM agents WHERE name = $1{{lockrow}}`, name).Scan(&old)
		if errors.Is(err, sql.ErrNoRows) {
			return errorf("agent %s: %w", name, fleet.ErrNotFound)
		}
		if err != nil {
			return err
		}
		hash := spec.PushTokenHash
		if spec.Push && hash == "" {
			hash = old
		}
		if spec.Push && hash == "" {
			return invalid("agent %s: push: no push token hash", name)
		}
		_, err = tx.ExecContext(ctx, `UPDATE agents SET url = $2, agent_ca = $3, ak = $4, azure = $5, vm_id = $6,
	reference = $7, pcrs = $8, banks = $9, interval_ns = $10, push = $11, push_token_hash = $12, version = version + 1,
	lease_owner = '', lease_until = 0, ek_ca = $13, ak_ca = $14,
	enrollment = CASE WHEN ek_ca = $13 AND ak_ca = $14 THEN enrollment ELSE NULL END,
	enrolled = CASE WHEN ek_ca = $13 AND ak_ca = $14 THEN enrolled ELSE 0 END
WHERE name = $1`,
			name, spec.URL, spec.AgentCA, spec.AK, b2i(spec.Azure), spec.VMID, nullString(spec.Reference),
			string(pcrs), string(banks), int64(spec.Interval), b2i(spec.Push), hash, spec.EKCA, spec.AKCA)
		return err
	})
}

// RemoveAgent removes an agent with its history and observations (its
// queued webhook deliveries stay).
func (s *Store) RemoveAgent(ctx context.Context, name string) error {
	return s.write(ctx, "remove agent "+name, func(ctx context.Context, tx *txn) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM agents WHERE name = $1`, name)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return errorf("agent %s: %w", name, fleet.ErrNotFound)
		}
		return nil
	})
}

// Agent returns one agent.
func (s *Store) Agent(ctx context.Context, name string) (*fleet.Agent, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	a, err := scanAgent(s.r.QueryRowContext(ctx, `SELECT `+agentCols+` FROM agents WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf("agent %s: %w", name, fleet.ErrNotFound)
	}
	if err != nil {
		return nil, s.fail("agent "+name, err)
	}
	return a, nil
}

// likeEscape escapes a substring for LIKE ... ESCAPE '\'.
var likeEscape = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// listCols are agentCols without the boot's saved state, which lists do
// not need and which is the largest column.
var listCols = strings.Replace(agentCols, "boot_state", "NULL", 1)

// ListAgents lists agents by name; Filter.Name matches a substring,
// ignoring ASCII case. The agents' Boot.State is left empty (Agent,
// AgentsUsing and Claim return it).
func (s *Store) ListAgents(ctx context.Context, f fleet.Filter) ([]*fleet.Agent, error) {
	if f.Status != "" && !f.Status.Valid() {
		return nil, invalid("state %q: want one of %v", f.Status, fleet.Statuses)
	}
	q := `SELECT ` + listCols + ` FROM agents WHERE 1 = 1`
	var args []any
	if f.Status != "" {
		args = append(args, string(f.Status))
		q += fmt.Sprintf(` AND status = $%d`, len(args))
	}
	if f.Name != "" {
		args = append(args, "%"+likeEscape.Replace(strings.ToLower(f.Name))+"%")
		q += fmt.Sprintf(` AND LOWER(name) LIKE $%d ESCAPE '\'`, len(args))
	}
	return s.queryAgents(ctx, "list agents", q+` ORDER BY name`, args...)
}

func (s *Store) queryAgents(ctx context.Context, op, q string, args ...any) ([]*fleet.Agent, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, s.fail(op, err)
	}
	defer rows.Close()
	var out []*fleet.Agent
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, s.fail(op, err)
		}
		out = append(out, a)
	}
	return out, s.fail(op, rows.Err())
}

// CountByStatus counts agents per state (every state present, zero when
// none).
func (s *Store) CountByStatus(ctx context.Context) (map[fleet.Status]int, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	rows, err := s.r.QueryContext(ctx, `SELECT status, COUNT(*) FROM agents GROUP BY status`)
	if err != nil {
		return nil, s.fail("count agents", err)
	}
	defer rows.Close()
	out := make(map[fleet.Status]int, len(fleet.Statuses))
	for _, st := range fleet.Statuses {
		out[st] = 0
	}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, s.fail("count agents", err)
		}
		out[fleet.Status(st)] = n
	}
	return out, s.fail("count agents", rows.Err())
}

// AgentsUsing lists the agents whose spec names the reference, by name.
func (s *Store) AgentsUsing(ctx context.Context, reference string) ([]*fleet.Agent, error) {
	return s.queryAgents(ctx, "agents using "+reference,
		`SELECT `+agentCols+` FROM agents WHERE reference = $1 ORDER BY name`, reference)
}

// sqlClaim leases the agents due.
const sqlClaim = `UPDATE agents SET lease_owner = $1, lease_until = $2, version = version + 1
WHERE id IN (SELECT id FROM agents
	WHERE next_due <= $3 AND lease_until <= $3 AND status <> $4
	ORDER BY next_due, id LIMIT $5{{skiplocked}})
RETURNING ` + agentCols

// Claim leases up to limit agents due at now (not leased, not
// compromised: a compromised agent is not attested until cleared) to owner
// until now+lease, earliest due first; each claim moves the version.
func (s *Store) Claim(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]*fleet.Agent, error) {
	if owner == "" {
		return nil, invalid("claim: no owner")
	}
	if lease <= 0 {
		return nil, invalid("claim: lease %v: want a positive duration", lease)
	}
	if limit <= 0 {
		return nil, nil
	}
	var out []*fleet.Agent
	err := s.write(ctx, "claim agents", func(ctx context.Context, tx *txn) error {
		out = out[:0]
		rows, err := tx.QueryContext(ctx, sqlClaim,
			owner, ts(now.Add(lease)), ts(now), string(fleet.Compromised), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			a, err := scanAgent(rows)
			if err != nil {
				return err
			}
			out = append(out, a)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].NextDue.Equal(out[j].NextDue) {
			return out[i].NextDue.Before(out[j].NextDue)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Release gives owner's lease of the agent back without a result:
// fleet.ErrConflict if owner does not hold it, fleet.ErrNotFound if the
// agent is gone.
func (s *Store) Release(ctx context.Context, agentID int64, owner string) error {
	return s.write(ctx, fmt.Sprintf("release agent #%d", agentID), func(ctx context.Context, tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE agents SET lease_owner = '', lease_until = 0
WHERE id = $1 AND lease_owner = $2`, agentID, owner)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 1 {
			return nil
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM agents WHERE id = $1`, agentID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errorf("release agent #%d: %w", agentID, fleet.ErrNotFound)
		}
		return errorf("release agent #%d: the lease is not %s's: %w", agentID, owner, fleet.ErrConflict)
	})
}

package sqlstore

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// MaxNoncesPerAgent bounds the push challenges one agent may hold
// outstanding at once: a new one past it drops the oldest.
const MaxNoncesPerAgent = 8

// PutNonce records a push challenge's nonce for an agent, usable once
// until expires, with the record number it asked from. Expired nonces of
// the agent, and its oldest past [MaxNoncesPerAgent], are dropped; every
// call also drops a bounded number of the fleet's expired nonces. The
// nonces live in the database so that replicas behind one address share
// them.
func (s *Store) PutNonce(ctx context.Context, agentID int64, nonce []byte, since uint64, now, expires time.Time) error {
	if len(nonce) == 0 {
		return invalid("put nonce for agent #%d: empty nonce", agentID)
	}
	return s.write(ctx, fmt.Sprintf("put push nonce for agent #%d", agentID), func(ctx context.Context, tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM push_nonces WHERE nonce IN (
	SELECT nonce FROM push_nonces WHERE expires <= $1 ORDER BY expires LIMIT 64)`, ts(now)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM push_nonces WHERE agent_id = $1 AND nonce NOT IN (
	SELECT nonce FROM push_nonces WHERE agent_id = $1 AND expires > $2 ORDER BY expires DESC LIMIT $3)`,
			agentID, ts(now), MaxNoncesPerAgent-1); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO push_nonces (nonce, agent_id, since, expires) VALUES ($1, $2, $3, $4)`,
			hex.EncodeToString(nonce), agentID, int64(since), ts(expires))
		return err
	})
}

// TakeNonce uses a push nonce up: it is deleted whatever the outcome, and
// ok is true only if it was the agent's and had not expired at now. since
// is the record number its challenge asked from. Of two replicas taking
// the same nonce at once, one gets it.
func (s *Store) TakeNonce(ctx context.Context, agentID int64, nonce []byte, now time.Time) (since uint64, ok bool, err error) {
	err = s.write(ctx, fmt.Sprintf("take push nonce for agent #%d", agentID), func(ctx context.Context, tx *txn) error {
		ok = false
		var agent, sn, exp int64
		err := tx.QueryRowContext(ctx, `DELETE FROM push_nonces WHERE nonce = $1 RETURNING agent_id, since, expires`,
			hex.EncodeToString(nonce)).Scan(&agent, &sn, &exp)
		if err != nil {
			if isNoRows(err) {
				return nil
			}
			return err
		}
		if agent != agentID {
			// Another agent's nonce: refused, and put back for its owner.
			_, err := tx.ExecContext(ctx, `INSERT INTO push_nonces (nonce, agent_id, since, expires) VALUES ($1, $2, $3, $4)`,
				hex.EncodeToString(nonce), agent, sn, exp)
			return err
		}
		since, ok = uint64(sn), now.Before(tm(exp))
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	return since, ok, nil
}

// ClaimAgent leases one agent to owner until now+lease, due or not,
// unless another owner's lease still lives or it is compromised: a round
// asked for out of turn (an agent added, changed or cleared) holds a lease
// like any other, so that no two replicas ever poll an agent at once. The
// claim moves the version. It returns nil, nil when the agent is leased
// (by anyone, this owner included: its round is in progress) or is
// compromised, and fleet.ErrNotFound when there is no such agent.
func (s *Store) ClaimAgent(ctx context.Context, name, owner string, now time.Time, lease time.Duration) (*fleet.Agent, error) {
	if owner == "" {
		return nil, invalid("claim agent %s: no owner", name)
	}
	if lease <= 0 {
		return nil, invalid("claim agent %s: lease %v: want a positive duration", name, lease)
	}
	var out *fleet.Agent
	err := s.write(ctx, "claim agent "+name, func(ctx context.Context, tx *txn) error {
		out = nil
		a, err := scanAgent(tx.QueryRowContext(ctx, `UPDATE agents SET lease_owner = $1, lease_until = $2, version = version + 1
WHERE name = $3 AND lease_until <= $4 AND status <> $5
RETURNING `+agentCols, owner, ts(now.Add(lease)), name, ts(now), string(fleet.Compromised)))
		if isNoRows(err) {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM agents WHERE name = $1`, name).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return errorf("claim agent %s: %w", name, fleet.ErrNotFound)
			}
			return nil
		}
		if err != nil {
			return err
		}
		out = a
		return nil
	})
	return out, err
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"sort"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// Delivery states.
const (
	deliveryPending   = "pending"
	deliveryDelivered = "delivered"
	deliveryFailed    = "failed"
	deliveryDisabled  = "disabled"
)

// SetEndpoints declares the webhook endpoints: the ones listed receive
// deliveries for later changes of state (an endpoint disabled by a 410
// Gone is enabled again: declaring it is the operator's word, and one 410
// from anything on the path must not end alerting for good); the others
// keep what they have
// but receive nothing new, and their pending deliveries wait (they are not
// listed by DueDeliveries) until they are declared again.
func (s *Store) SetEndpoints(ctx context.Context, urls []string) error {
	for _, u := range urls {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return invalid("webhook endpoint %q: want an http or https URL", u)
		}
	}
	return s.write(ctx, "set webhook endpoints", func(ctx context.Context, tx *txn) error {
		if _, err := tx.ExecContext(ctx, `UPDATE endpoints SET declared = 0`); err != nil {
			return err
		}
		for _, u := range urls {
			if _, err := tx.ExecContext(ctx, `INSERT INTO endpoints (url, declared, enabled) VALUES ($1, 1, 1)
ON CONFLICT (url) DO UPDATE SET declared = 1, enabled = 1`, u); err != nil {
				return err
			}
		}
		return nil
	})
}

// DisableEndpoint stops deliveries to an endpoint (it answered 410 Gone):
// its pending deliveries become disabled, and no new ones are queued.
func (s *Store) DisableEndpoint(ctx context.Context, u string) error {
	return s.write(ctx, "disable webhook endpoint "+u, func(ctx context.Context, tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE endpoints SET enabled = 0, disabled = $2 WHERE url = $1`, u, time.Now().UnixNano())
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return errorf("webhook endpoint %s: %w", u, fleet.ErrNotFound)
		}
		_, err = tx.ExecContext(ctx, `UPDATE deliveries SET state = $2 WHERE endpoint = $1 AND state = $3`, u, deliveryDisabled, deliveryPending)
		return err
	})
}

const deliveryCols = `d.id, d.endpoint, d.payload, d.created, d.attempts, d.next_attempt, d.state, d.last_status, d.last_error`

func scanDeliveries(rows *sql.Rows) ([]*fleet.Delivery, error) {
	defer rows.Close()
	var out []*fleet.Delivery
	for rows.Next() {
		var d fleet.Delivery
		var created, next int64
		if err := rows.Scan(&d.ID, &d.Endpoint, &d.Payload, &created, &d.Attempts, &next, &d.State, &d.LastStatus, &d.LastError); err != nil {
			return nil, err
		}
		d.Created, d.Next = tm(created), tm(next)
		out = append(out, &d)
	}
	return out, rows.Err()
}

// DueDeliveries lists pending deliveries due at now to declared, enabled
// endpoints, oldest first.
func (s *Store) DueDeliveries(ctx context.Context, now time.Time, limit int) ([]*fleet.Delivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	rows, err := s.r.QueryContext(ctx, `SELECT `+deliveryCols+` FROM deliveries d JOIN endpoints e ON e.url = d.endpoint
WHERE d.state = $1 AND d.next_attempt <= $2 AND e.declared = 1 AND e.enabled = 1
ORDER BY d.created, d.seq LIMIT $3`, deliveryPending, ts(now), limit)
	if err != nil {
		return nil, s.fail("due deliveries", err)
	}
	out, err := scanDeliveries(rows)
	return out, s.fail("due deliveries", err)
}

// ClaimDeliveries is DueDeliveries for several senders at once (replicas
// on one PostgreSQL): the deliveries it returns have their next attempt
// moved to now+hold in the same transaction, so that no other sender gets
// them meanwhile (claims skip the rows another is claiming). The sender
// then stores each attempt's outcome with UpdateDelivery; a delivery whose
// sender died is due again after hold (at least once, not lost). hold
// should exceed a delivery attempt's timeout.
func (s *Store) ClaimDeliveries(ctx context.Context, now time.Time, hold time.Duration, limit int) ([]*fleet.Delivery, error) {
	if hold <= 0 {
		return nil, invalid("claim deliveries: hold %v: want a positive duration", hold)
	}
	if limit <= 0 {
		return nil, nil
	}
	var out []*fleet.Delivery
	err := s.write(ctx, "claim deliveries", func(ctx context.Context, tx *txn) error {
		rows, err := tx.QueryContext(ctx, sqlClaimDeliveries, ts(now.Add(hold)), deliveryPending, ts(now), limit)
		if err != nil {
			return err
		}
		out, err = scanDeliveries(rows)
		return err
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

const sqlClaimDeliveries = `UPDATE deliveries SET next_attempt = $1
WHERE seq IN (SELECT d.seq FROM deliveries d
	WHERE d.state = $2 AND d.next_attempt <= $3
		AND EXISTS (SELECT 1 FROM endpoints e WHERE e.url = d.endpoint AND e.declared = 1 AND e.enabled = 1)
	ORDER BY d.created, d.seq LIMIT $4{{skiplocked}})
RETURNING id, endpoint, payload, created, attempts, next_attempt, state, last_status, last_error`

// UpdateDelivery stores an attempt's outcome: attempts, next attempt,
// state, last status and error.
func (s *Store) UpdateDelivery(ctx context.Context, d *fleet.Delivery) error {
	switch d.State {
	case deliveryPending, deliveryDelivered, deliveryFailed, deliveryDisabled:
	default:
		return invalid("delivery %s: state %q: want pending, delivered, failed or disabled", d.ID, d.State)
	}
	return s.write(ctx, "update delivery "+d.ID, func(ctx context.Context, tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE deliveries SET attempts = $2, next_attempt = $3, state = $4,
	last_status = $5, last_error = $6 WHERE id = $1`, d.ID, d.Attempts, ts(d.Next), d.State, d.LastStatus, d.LastError)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return errorf("delivery %s: %w", d.ID, fleet.ErrNotFound)
		}
		return nil
	})
}

// Deliveries lists an endpoint's deliveries ("" for all), newest first;
// limit <= 0 lists all.
func (s *Store) Deliveries(ctx context.Context, endpoint string, limit int) ([]*fleet.Delivery, error) {
	if limit <= 0 {
		limit = 1<<31 - 1
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	q := `SELECT ` + deliveryCols + ` FROM deliveries d`
	args := []any{limit}
	if endpoint != "" {
		q += ` WHERE d.endpoint = $2`
		args = append(args, endpoint)
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY d.seq DESC LIMIT $1`, args...)
	if err != nil {
		return nil, s.fail("deliveries", err)
	}
	out, err := scanDeliveries(rows)
	return out, s.fail(fmt.Sprintf("deliveries of %q", endpoint), err)
}

package sqlstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// maxReference bounds a stored reference's body.
const maxReference = 64 << 20

// PutReference adds (replace false: fleet.ErrExists if present) or
// replaces (replace true: fleet.ErrNotFound if absent) a reference. An
// empty Fingerprint is the hex SHA-256 of the body; a zero Updated is now.
func (s *Store) PutReference(ctx context.Context, r fleet.Reference, replace bool) error {
	if !validName(r.Name) {
		return invalid("reference name %q: want 1 to %d characters of A-Z a-z 0-9 . _ -", r.Name, maxName)
	}
	if len(r.Body) == 0 {
		return invalid("reference %s: empty body", r.Name)
	}
	if len(r.Body) > maxReference {
		return invalid("reference %s: body larger than %d bytes", r.Name, maxReference)
	}
	if r.Fingerprint == "" {
		sum := sha256.Sum256(r.Body)
		r.Fingerprint = hex.EncodeToString(sum[:])
	}
	if r.Updated.IsZero() {
		r.Updated = time.Now()
	}
	return s.write(ctx, "put reference "+r.Name, func(ctx context.Context, tx *txn) error {
		if replace {
			res, err := tx.ExecContext(ctx, `UPDATE reference_files SET body = $2, fingerprint = $3, updated = $4 WHERE name = $1`,
				r.Name, r.Body, r.Fingerprint, ts(r.Updated))
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				return errorf("reference %s: %w", r.Name, fleet.ErrNotFound)
			}
			return nil
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO reference_files (name, body, fingerprint, updated) VALUES ($1, $2, $3, $4)`,
			r.Name, r.Body, r.Fingerprint, ts(r.Updated))
		if err != nil && s.d.unique(err) {
			return errorf("reference %s: %w", r.Name, fleet.ErrExists)
		}
		return err
	})
}

const referenceQuery = `SELECT r.name, r.body, r.fingerprint, r.updated,
	(SELECT COUNT(*) FROM agents a WHERE a.reference = r.name)
FROM reference_files r`

func scanReference(row scanner) (*fleet.Reference, error) {
	var r fleet.Reference
	var updated int64
	if err := row.Scan(&r.Name, &r.Body, &r.Fingerprint, &updated, &r.Agents); err != nil {
		return nil, err
	}
	r.Updated = tm(updated)
	return &r, nil
}

// Reference returns one reference with the count of agents using it.
func (s *Store) Reference(ctx context.Context, name string) (*fleet.Reference, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	r, err := scanReference(s.r.QueryRowContext(ctx, referenceQuery+` WHERE r.name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf("reference %s: %w", name, fleet.ErrNotFound)
	}
	if err != nil {
		return nil, s.fail("reference "+name, err)
	}
	return r, nil
}

// ListReferences lists the references by name.
func (s *Store) ListReferences(ctx context.Context) ([]*fleet.Reference, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	rows, err := s.r.QueryContext(ctx, referenceQuery+` ORDER BY r.name`)
	if err != nil {
		return nil, s.fail("list references", err)
	}
	defer rows.Close()
	var out []*fleet.Reference
	for rows.Next() {
		r, err := scanReference(rows)
		if err != nil {
			return nil, s.fail("list references", err)
		}
		out = append(out, r)
	}
	return out, s.fail("list references", rows.Err())
}

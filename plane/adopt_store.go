package plane

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/escape-mtd/escape/migrate"
	bolt "go.etcd.io/bbolt"
)

// ReleasedRecord is an adopted container an operator released (Remove):
// it is not adopted again while it keeps its label, only once its label
// went (or the container did) and came back.
type ReleasedRecord struct {
	ID        string    `json:"id"`
	Host      string    `json:"host"`
	Namespace string    `json:"namespace"`
	At        time.Time `json:"at"`
}

// PutReleased records an operator's release of an adopted container.
func (s *Store) PutReleased(r ReleasedRecord) error {
	if err := migrate.ValidID(r.ID); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return put(tx, bucketReleased, []byte(r.ID), r) })
}

// Released lists the released adopted containers.
func (s *Store) Released() ([]ReleasedRecord, error) {
	var out []ReleasedRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketReleased).ForEach(func(k, v []byte) error {
			var r ReleasedRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("corrupt record released/%q: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// DeleteReleased forgets a release: the container may be adopted again.
func (s *Store) DeleteReleased(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketReleased).Delete([]byte(id)) })
}

package plane

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/escape-mtd/escape/migrate"
	bolt "go.etcd.io/bbolt"
)

// storeVersion is the schema of the state database. Version 2 names
// checkpoints and images instead of paths and records lease generations:
// a version 1 database (a plane that drove every host's containerd
// itself) is refused, not converted.
const storeVersion = 2

var (
	bucketMeta        = []byte("meta")
	bucketContainers  = []byte("containers")
	bucketCheckpoints = []byte("checkpoints") // key: id \x00 seq (big endian)
	bucketRollbacks   = []byte("rollbacks")
	bucketHosts       = []byte("hosts")
	bucketEpochs      = []byte("epochs")
	bucketJournal     = []byte("journal")
	bucketReleased    = []byte("released") // key: id; adopted containers an operator released
	allBuckets        = [][]byte{bucketMeta, bucketContainers, bucketCheckpoints, bucketRollbacks, bucketHosts, bucketEpochs, bucketJournal, bucketReleased}
)

// ErrNotFound is returned for a container, host or checkpoint the store
// does not hold.
var ErrNotFound = errors.New("not found")

// ContainerRecord is a protected container and where it runs.
type ContainerRecord struct {
	Spec   migrate.Spec `json:"spec"`
	Host   string       `json:"host"`
	Policy Policy       `json:"policy"`
	// Generation is the lease generation the container's address holds on
	// Host: it grows with every placement (migrate.Lease).
	Generation uint64    `json:"generation"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
	// Rollback is set while a rollback runs (see PendingRollback).
	Rollback *PendingRollback `json:"rollback,omitempty"`
	// Dumping names a safe checkpoint being written: journalled before the
	// dump so that a plane that dies mid-dump has the partial image
	// dropped at its next start.
	Dumping migrate.ImageName `json:"dumping,omitempty"`
	// Adopted marks a container the plane took under protection rather
	// than deployed (adopt.go): its user's, in the containerd namespace,
	// with the OCI spec, movability and refusals of Spec.Adopted. The
	// plane never deletes it.
	Adopted bool `json:"adopted,omitempty"`
}

// PendingRollback is journalled in the container's record before a rollback
// kills the running copy, and cleared once the rollback has ended either
// way. A plane that dies in between (the copy killed and not yet restored,
// or the CRIU configuration still set to restore connections closed) finds
// it on restart and rolls the container back again (Start): without it the
// container would stay with no live copy until an operator noticed.
type PendingRollback struct {
	Checkpoint uint64    `json:"checkpoint"` // the checkpoint's sequence number
	Started    time.Time `json:"started"`
}

// CheckpointRecord is one safe checkpoint: an image on Host's agent (and
// on every host sharing its storage).
type CheckpointRecord struct {
	Container string            `json:"container"`
	Seq       uint64            `json:"seq"`
	Image     migrate.ImageName `json:"image"`
	Host      string            `json:"host"`
	// Storage is the host's shared storage id when it has one: any host
	// reporting the same id reads the image without a transfer.
	Storage   string    `json:"storage,omitempty"`
	SafeEpoch uint64    `json:"safe_epoch"`
	Created   time.Time `json:"created"`
	Bytes     int64     `json:"bytes"`
	Took      Duration  `json:"took"`
	Forced    bool      `json:"forced,omitempty"`
}

// HostRecord holds a host's flags and recent anomalies.
type HostRecord struct {
	Name        string      `json:"name"`
	Compromised bool        `json:"compromised"`
	Draining    bool        `json:"draining"`
	Reason      string      `json:"reason,omitempty"`
	Updated     time.Time   `json:"updated"`
	Anomalies   []time.Time `json:"anomalies,omitempty"`
}

// EpochRecord is what the sensors said about a container's recent epochs.
type EpochRecord struct {
	Container   string    `json:"container"`
	LastEpoch   uint64    `json:"last_epoch"`
	CleanStreak int       `json:"clean_streak"`
	LastClean   uint64    `json:"last_clean"`
	LastAnomaly uint64    `json:"last_anomaly"`
	Updated     time.Time `json:"updated"`
	// Since is when the container's current copy started (deploy,
	// rollback, migration, restart): sensor events emitted before it
	// describe a copy that no longer runs.
	Since time.Time `json:"since,omitzero"`
}

// Store is the plane's embedded state, in bbolt.
type Store struct {
	db *bolt.DB
}

// OpenStore opens (creating if needed) the state database at path. A
// second process opening it waits up to timeout, then fails.
func OpenStore(path string, timeout time.Duration) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{db: db}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		v := meta.Get([]byte("version"))
		if v == nil {
			return meta.Put([]byte("version"), []byte(fmt.Sprint(storeVersion)))
		}
		if string(v) != fmt.Sprint(storeVersion) {
			return fmt.Errorf("schema version %q, want %d", v, storeVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func put(tx *bolt.Tx, bucket, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s/%q: %w", bucket, key, err)
	}
	return tx.Bucket(bucket).Put(key, b)
}

func get(tx *bolt.Tx, bucket, key []byte, v any) error {
	b := tx.Bucket(bucket).Get(key)
	if b == nil {
		return fmt.Errorf("%s/%s: %w", bucket, key, ErrNotFound)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("corrupt record %s/%q: %w", bucket, key, err)
	}
	return nil
}

// PutContainer stores a container record.
func (s *Store) PutContainer(c ContainerRecord) error {
	if err := migrate.ValidID(c.Spec.ID); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return put(tx, bucketContainers, []byte(c.Spec.ID), c) })
}

// Container returns one container record.
func (s *Store) Container(id string) (ContainerRecord, error) {
	var c ContainerRecord
	err := s.db.View(func(tx *bolt.Tx) error { return get(tx, bucketContainers, []byte(id), &c) })
	return c, err
}

// Containers returns every container record, by id.
func (s *Store) Containers() ([]ContainerRecord, error) {
	var out []ContainerRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketContainers).ForEach(func(k, v []byte) error {
			var c ContainerRecord
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("corrupt record containers/%q: %w", k, err)
			}
			out = append(out, c)
			return nil
		})
	})
	return out, err
}

// DeleteContainer forgets a container and everything recorded about it
// (its checkpoint directories are the caller's to remove).
func (s *Store) DeleteContainer(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketContainers, bucketRollbacks, bucketEpochs, bucketJournal} {
			if err := tx.Bucket(b).Delete([]byte(id)); err != nil {
				return err
			}
		}
		c := tx.Bucket(bucketCheckpoints).Cursor()
		prefix := append([]byte(id), 0)
		var keys [][]byte
		for k, _ := c.Seek(prefix); k != nil && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == string(prefix); k, _ = c.Next() {
			keys = append(keys, append([]byte(nil), k...))
		}
		for _, k := range keys {
			if err := tx.Bucket(bucketCheckpoints).Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

func ckKey(id string, seq uint64) []byte {
	k := append([]byte(id), 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

// NextCheckpointSeq returns the sequence number for a new checkpoint.
func (s *Store) NextCheckpointSeq(id string) (uint64, error) {
	var seq uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		key := []byte("ckseq/" + id)
		if v := tx.Bucket(bucketMeta).Get(key); len(v) == 8 {
			seq = binary.BigEndian.Uint64(v)
		}
		seq++
		return tx.Bucket(bucketMeta).Put(key, binary.BigEndian.AppendUint64(nil, seq))
	})
	return seq, err
}

// AddCheckpoint records a complete, verified checkpoint.
func (s *Store) AddCheckpoint(c CheckpointRecord) error {
	return s.db.Update(func(tx *bolt.Tx) error { return put(tx, bucketCheckpoints, ckKey(c.Container, c.Seq), c) })
}

// Checkpoints returns a container's checkpoints, oldest first.
func (s *Store) Checkpoints(id string) ([]CheckpointRecord, error) {
	var out []CheckpointRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketCheckpoints).Cursor()
		prefix := append([]byte(id), 0)
		for k, v := c.Seek(prefix); k != nil && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
			var r CheckpointRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("corrupt record checkpoints/%s#%d: %w", id, binary.BigEndian.Uint64(k[len(prefix):]), err)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// DeleteCheckpoint forgets one checkpoint record.
func (s *Store) DeleteCheckpoint(id string, seq uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketCheckpoints).Delete(ckKey(id, seq)) })
}

// AddRollback records a rollback at t and returns how many happened
// within window before t (including this one). Older entries are dropped.
func (s *Store) AddRollback(id string, t time.Time, window time.Duration) (int, error) {
	var n int
	err := s.db.Update(func(tx *bolt.Tx) error {
		var ts []time.Time
		if err := get(tx, bucketRollbacks, []byte(id), &ts); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		ts = append(pruneTimes(ts, t.Add(-window)), t)
		n = len(ts)
		return put(tx, bucketRollbacks, []byte(id), ts)
	})
	return n, err
}

// Rollbacks returns how many rollbacks of id happened since `since`.
func (s *Store) Rollbacks(id string, since time.Time) (int, error) {
	var ts []time.Time
	err := s.db.View(func(tx *bolt.Tx) error { return get(tx, bucketRollbacks, []byte(id), &ts) })
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	return len(pruneTimes(ts, since)), err
}

// ResetRollbacks clears the counter (after a migration: a new host).
func (s *Store) ResetRollbacks(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketRollbacks).Delete([]byte(id)) })
}

func pruneTimes(ts []time.Time, since time.Time) []time.Time {
	out := ts[:0:0]
	for _, t := range ts {
		if !t.Before(since) {
			out = append(out, t)
		}
	}
	return out
}

// Host returns a host's record (a zero record if never stored).
func (s *Store) Host(name string) (HostRecord, error) {
	h := HostRecord{Name: name}
	err := s.db.View(func(tx *bolt.Tx) error { return get(tx, bucketHosts, []byte(name), &h) })
	if errors.Is(err, ErrNotFound) {
		return HostRecord{Name: name}, nil
	}
	return h, err
}

// UpdateHost changes a host's record atomically.
func (s *Store) UpdateHost(name string, fn func(*HostRecord)) (HostRecord, error) {
	var h HostRecord
	err := s.db.Update(func(tx *bolt.Tx) error {
		h = HostRecord{Name: name}
		if err := get(tx, bucketHosts, []byte(name), &h); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		fn(&h)
		h.Name = name
		return put(tx, bucketHosts, []byte(name), h)
	})
	return h, err
}

// Hosts returns every stored host record, by name.
func (s *Store) Hosts() ([]HostRecord, error) {
	var out []HostRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHosts).ForEach(func(k, v []byte) error {
			var h HostRecord
			if err := json.Unmarshal(v, &h); err != nil {
				return fmt.Errorf("corrupt record hosts/%q: %w", k, err)
			}
			out = append(out, h)
			return nil
		})
	})
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, err
}

// Epoch returns a container's epoch record.
func (s *Store) Epoch(id string) (EpochRecord, error) {
	e := EpochRecord{Container: id}
	err := s.db.View(func(tx *bolt.Tx) error { return get(tx, bucketEpochs, []byte(id), &e) })
	if errors.Is(err, ErrNotFound) {
		return EpochRecord{Container: id}, nil
	}
	return e, err
}

// UpdateEpoch changes a container's epoch record atomically.
func (s *Store) UpdateEpoch(id string, fn func(*EpochRecord) error) (EpochRecord, error) {
	var e EpochRecord
	err := s.db.Update(func(tx *bolt.Tx) error {
		e = EpochRecord{Container: id}
		if err := get(tx, bucketEpochs, []byte(id), &e); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if err := fn(&e); err != nil {
			return err
		}
		return put(tx, bucketEpochs, []byte(id), e)
	})
	return e, err
}

// PutMigration implements migrate.Journal.
func (s *Store) PutMigration(_ context.Context, r migrate.Record) error {
	return s.db.Update(func(tx *bolt.Tx) error { return put(tx, bucketJournal, []byte(r.Spec.ID), r) })
}

// Migrations implements migrate.Journal.
func (s *Store) Migrations(_ context.Context) ([]migrate.Record, error) {
	var out []migrate.Record
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJournal).ForEach(func(k, v []byte) error {
			var r migrate.Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("corrupt record journal/%q: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// DeleteMigration implements migrate.Journal.
func (s *Store) DeleteMigration(_ context.Context, id string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketJournal).Delete([]byte(id)) })
}

var _ migrate.Journal = (*Store)(nil)

package repository

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository/pack"
)

// Store is the write side of a repository: it appends new blocks to the
// current pack and indexes them in the catalog once they are durable. One
// process at a time may hold a Store on a repository (the server, which
// locks the directory). Store is safe for concurrent use.
type Store struct {
	repo *Repo

	mu      sync.Mutex // guards the fields below
	cur     *pack.Writer
	curID   int64
	pending map[pack.Hash]catalog.NewChunk // appended, not yet indexed
	indexed uint64                         // how many Commits indexed chunks
	// left holds the chunks the last leftCommits of those Commits took out
	// of pending, by the value of indexed each made (leftBy lists them by
	// Commit): PutAbsent finds there a block stored since its Absence
	// without asking the catalog.
	left      map[pack.Hash]uint64
	leftBy    [leftCommits][]pack.Hash
	unindexed []catalog.NewChunk
	states    []catalog.PackState // pack states to record
	sealing   int                 // full packs being sealed outside mu
	sealed    *sync.Cond          // on mu: signalled when a seal ends
	err       error               // a failed sync or seal: the store acknowledges nothing more

	commitMu sync.Mutex // serialises Commit: sync, index, apply
}

// NewStore recovers packs left open by a crash (see Recover) and returns a
// store ready to append.
func (r *Repo) NewStore(ctx context.Context) (*Store, error) {
	if err := r.recoverOpenPacks(ctx); err != nil {
		return nil, err
	}
	if err := r.syncSealedPacks(ctx); err != nil {
		return nil, err
	}
	s := &Store{repo: r, pending: map[pack.Hash]catalog.NewChunk{}, left: map[pack.Hash]uint64{}}
	s.sealed = sync.NewCond(&s.mu)
	return s, nil
}

// Has reports whether a block with this hash is stored (durable or about
// to be).
func (s *Store) Has(ctx context.Context, h pack.Hash) (bool, error) {
	s.mu.Lock()
	_, ok := s.pending[h]
	s.mu.Unlock()
	if ok {
		return true, nil
	}
	_, err := s.repo.Catalog.Chunk(ctx, h)
	if errors.Is(err, catalog.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Absence proves a block was not stored at some moment: PutAbsent needs
// not ask the catalog again unless a Commit indexed chunks since.
type Absence struct{ indexed uint64 }

// HasMany reports Has for each hash, asking the catalog once per 128. The
// Absence it returns holds for every hash it reports absent.
func (s *Store) HasMany(ctx context.Context, hashes []pack.Hash) ([]bool, Absence, error) {
	out := make([]bool, len(hashes))
	var ask [][32]byte
	var at []int
	s.mu.Lock()
	// Read with the pending set: a chunk leaves it only after a Commit
	// indexed it and counted that in s.indexed.
	abs := Absence{s.indexed}
	for i, h := range hashes {
		if _, ok := s.pending[h]; ok {
			out[i] = true
		} else {
			ask = append(ask, h)
			at = append(at, i)
		}
	}
	s.mu.Unlock()
	if len(ask) == 0 {
		return out, abs, nil
	}
	got, err := s.repo.Catalog.Indexed(ctx, ask)
	if err != nil {
		return nil, abs, err
	}
	for j, ok := range got {
		out[at[j]] = ok
	}
	return out, abs, nil
}

// Put stores one block given in its stored form: stored holds e.ULen
// bytes compressed with e.Compression, hashing to e.Hash. The caller has
// verified the data (see pack.Codec.Decode). A block already stored is not
// stored again. The block is durable after the next Commit.
func (s *Store) Put(ctx context.Context, e pack.Entry, stored []byte) error {
	if ok, err := s.Has(ctx, e.Hash); err != nil || ok {
		return err
	}
	s.mu.Lock()
	full, err := s.putLocked(ctx, e, stored)
	s.mu.Unlock()
	return s.seal(ctx, full, err)
}

// leftCommits is how many Commits' chunks the store remembers after they
// leave pending (see Store.left).
const leftCommits = 16

// PutAbsent is Put of a block HasMany reported absent with abs: the
// catalog is asked again only if more Commits indexed chunks since than
// the store remembers.
func (s *Store) PutAbsent(ctx context.Context, e pack.Entry, stored []byte, abs Absence) error {
	s.mu.Lock()
	if s.indexed != abs.indexed {
		if s.indexed-abs.indexed >= leftCommits {
			s.mu.Unlock()
			return s.Put(ctx, e, stored)
		}
		if at, ok := s.left[e.Hash]; ok && at > abs.indexed {
			s.mu.Unlock()
			return nil // stored and indexed since
		}
	}
	full, err := s.putLocked(ctx, e, stored)
	s.mu.Unlock()
	return s.seal(ctx, full, err)
}

// fullPack is a pack that reached its size, to be sealed.
type fullPack struct {
	w  *pack.Writer
	id int64
}

// seal seals a full pack put left behind, outside mu: other blocks go on
// into the next pack while it is synced, read back and (with a pack store
// other than the directory) uploaded. A Commit waits for every seal under
// way before it indexes anything (see Commit), so nothing in a sealed pack
// is acknowledged before the store holds it.
func (s *Store) seal(ctx context.Context, full *fullPack, err error) error {
	if full == nil {
		return err
	}
	serr := full.w.Seal()
	if serr == nil {
		// The upload finishes even if this Put's caller gives up: other
		// sessions' blocks are in the pack too.
		serr = s.repo.uploadPack(context.WithoutCancel(ctx), full.id)
	}
	s.mu.Lock()
	if serr != nil {
		if s.err == nil {
			s.err = serr // its chunks can never be acknowledged
		}
	} else {
		s.states = append(s.states, catalog.PackState{ID: full.id, State: catalog.PackSealed, Size: full.w.Size()})
	}
	s.sealing--
	s.sealed.Broadcast()
	s.mu.Unlock()
	return errors.Join(err, serr)
}

// putLocked appends a block unless it is pending. Called with mu held; a
// pack it filled is returned for sealing once mu is released.
func (s *Store) putLocked(ctx context.Context, e pack.Entry, stored []byte) (*fullPack, error) {
	if s.err != nil {
		return nil, s.err
	}
	if _, ok := s.pending[e.Hash]; ok {
		return nil, nil
	}
	if s.cur == nil {
		id, err := s.repo.Catalog.CreatePack(ctx)
		if err != nil {
			return nil, err
		}
		path := s.repo.PackPath(id)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("create pack directory: %w", err)
		}
		w, err := pack.Create(path, uint64(id))
		if err != nil {
			return nil, err
		}
		s.cur, s.curID = w, id
	}
	e, err := s.cur.Append(e, stored)
	if err != nil {
		return nil, err
	}
	c := catalog.NewChunk{Hash: e.Hash, PackID: s.curID, Offset: e.Offset, CLen: e.CLen, ULen: e.ULen}
	s.pending[e.Hash] = c
	s.unindexed = append(s.unindexed, c)
	if s.cur.Size() >= s.repo.Config.PackSize {
		full := &fullPack{s.cur, s.curID}
		s.cur = nil
		s.sealing++
		return full, nil
	}
	return nil, nil
}

// Commit makes every block put so far durable, indexes it, and applies b
// (block rows, progress, a point's commit) in the same catalog
// transaction. When Commit returns nil, everything in b survives a crash.
// Puts go on while Commit waits for the disk.
func (s *Store) Commit(ctx context.Context, b catalog.Batch) error {
	return s.CommitAll(ctx, []catalog.Batch{b})
}

// CommitAll is Commit of several batches in order (see
// catalog.DB.ApplyAll) with one pack sync and one catalog transaction:
// either all of them are durable when it returns nil, or none is applied.
func (s *Store) CommitAll(ctx context.Context, bs []catalog.Batch) error {
	if len(bs) == 0 {
		bs = []catalog.Batch{{}}
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	// Chunks of a pack being sealed are durable only once its seal ends.
	for s.sealing > 0 {
		s.sealed.Wait()
	}
	if s.err != nil {
		s.mu.Unlock()
		return s.err
	}
	w, id := s.cur, s.curID
	chunks, states := s.unindexed, s.states
	s.unindexed, s.states = nil, nil
	s.mu.Unlock()

	// Entries in a pack sealed meanwhile were synced by Seal; a pack still
	// open is synced here, without holding up Put.
	if w != nil && w.DurableSize() < w.Size() {
		if err := w.Sync(); err != nil && !w.Sealed() {
			s.mu.Lock()
			s.err = err // the disk lost writes: nothing more may be acknowledged
			s.mu.Unlock()
			return err
		}
	}
	if w != nil && !w.Sealed() {
		states = append(states, catalog.PackState{ID: id, State: catalog.PackOpen, Size: w.DurableSize()})
	}
	bs = slices.Clone(bs)
	bs[0].Chunks = append(chunks, bs[0].Chunks...)
	bs[0].Packs = append(states, bs[0].Packs...)
	var err error
	if len(bs) == 1 {
		err = s.repo.Catalog.Apply(ctx, bs[0])
	} else {
		err = s.repo.Catalog.ApplyAll(ctx, bs)
	}
	if err != nil {
		s.mu.Lock()
		s.unindexed = append(chunks, s.unindexed...)
		s.states = append(states, s.states...)
		s.mu.Unlock()
		return err
	}
	for _, st := range states {
		if st.State == catalog.PackSealed {
			s.repo.dropLocal(st.ID) // uploaded by seal, recorded sealed just now
		}
	}
	s.mu.Lock()
	if len(chunks) > 0 {
		s.indexed++ // before they leave pending: see HasMany
		by := &s.leftBy[s.indexed%leftCommits]
		for _, h := range *by {
			if s.left[h] == s.indexed-leftCommits {
				delete(s.left, h)
			}
		}
		*by = (*by)[:0]
		for _, c := range chunks {
			delete(s.pending, c.Hash)
			s.left[c.Hash] = s.indexed
			*by = append(*by, c.Hash)
		}
	}
	s.mu.Unlock()
	return nil
}

// Close seals the current pack and indexes what is pending.
func (s *Store) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.cur != nil {
		if err := s.cur.Seal(); err != nil {
			s.mu.Unlock()
			return err
		}
		if err := s.repo.uploadPack(ctx, s.curID); err != nil {
			s.mu.Unlock()
			return err
		}
		s.states = append(s.states, catalog.PackState{ID: s.curID, State: catalog.PackSealed, Size: s.cur.Size()})
		s.cur = nil
	}
	s.mu.Unlock()
	return s.Commit(ctx, catalog.Batch{})
}

// recoverOpenPacks repairs the packs a crash left open: each is cut after
// the last chunk the catalog indexes (later entries were never
// acknowledged) and sealed; an open pack indexing nothing is removed.
func (r *Repo) recoverOpenPacks(ctx context.Context) error {
	packs, err := r.Catalog.Packs(ctx)
	if err != nil {
		return err
	}
	for _, p := range packs {
		if p.State != catalog.PackOpen {
			continue
		}
		chunks, err := r.Catalog.PackChunks(ctx, p.ID)
		if err != nil {
			return err
		}
		path := r.PackPath(p.ID)
		if len(chunks) == 0 {
			if err := r.deletePack(ctx, p.ID); err != nil {
				return fmt.Errorf("remove empty pack %s: %w", r.PackName(p.ID), err)
			}
			if err := r.Catalog.DeletePack(ctx, p.ID); err != nil {
				return err
			}
			continue
		}
		last := chunks[len(chunks)-1]
		keep := last.Offset + pack.EntryHeaderSize + int64(last.CLen) + 4
		size, err := pack.Recover(path, keep)
		if err != nil {
			return fmt.Errorf("recover pack %s: %w", r.PackName(p.ID), err)
		}
		slog.Info("recovered pack left open by an unclean stop", "pack", r.PackName(p.ID), "chunks", len(chunks), "size", size)
		r.files.forget(path)
		if err := r.uploadPack(ctx, p.ID); err != nil {
			return err
		}
		if err := r.Catalog.Apply(ctx, catalog.Batch{Packs: []catalog.PackState{{ID: p.ID, State: catalog.PackSealed, Size: size}}}); err != nil {
			return err
		}
		r.dropLocal(p.ID)
	}
	return nil
}

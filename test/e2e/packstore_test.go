package e2e

import (
	"path/filepath"
	"testing"

	"github.com/rewind-cdp/rewind/repository/packstore"
	"github.com/rewind-cdp/rewind/repository/packstore/s3test"
	h "github.com/rewind-cdp/rewind/test/harness"
)

// packStore is a place the server keeps sealed packs in: the repository
// directory, or S3 on a versitygw started for the test.
type packStore struct {
	name string
	args []string // server flags that choose it
	s3   *s3test.Server
}

const (
	e2eBucket = "rewind"
	e2ePrefix = "e2e"
)

// forEachPackStore runs fn as a subtest per pack store. The S3 subtest
// skips (fails in CI) without versitygw; it gives every rewind command the
// server's credentials through the environment, as an operator would.
func forEachPackStore(t *testing.T, fn func(t *testing.T, ps *packStore)) {
	t.Run("dir", func(t *testing.T) { fn(t, &packStore{name: "dir"}) })
	t.Run("s3", func(t *testing.T) {
		srv := s3test.Start(t)
		t.Setenv(packstore.EnvAccessKey, s3test.AccessKey)
		t.Setenv(packstore.EnvSecretKey, s3test.SecretKey)
		fn(t, &packStore{name: "s3", s3: srv,
			args: []string{"--packs", "s3://" + e2eBucket + "/" + e2ePrefix, "--s3-endpoint", srv.Endpoint}})
	})
}

// root is the directory under which packs/XX/ID.pack files live: the
// repository, or the posix backend's directory of the bucket prefix.
func (ps *packStore) root(repo string) string {
	if ps.s3 == nil {
		return repo
	}
	return ps.s3.ObjectPath(e2eBucket, e2ePrefix)
}

// packBytes is the size of every pack, open (in the repository) or sealed
// (in the store).
func (ps *packStore) packBytes(t *testing.T, repo string) int64 {
	n := h.DirSize(t, filepath.Join(repo, "packs"))
	if ps.s3 != nil {
		n += h.DirSize(t, filepath.Join(ps.root(repo), "packs"))
	}
	return n
}

// mustBeInStore fails the test unless, with packs on S3, every pack (the
// server having stopped, so all are sealed) is an object and none is left
// in the repository directory.
func (ps *packStore) mustBeInStore(t *testing.T, repo string) {
	t.Helper()
	if ps.s3 == nil {
		return
	}
	local, _ := filepath.Glob(filepath.Join(repo, "packs", "*", "*.pack"))
	objects, _ := filepath.Glob(filepath.Join(ps.root(repo), "packs", "*", "*.pack"))
	if len(local) > 0 || len(objects) == 0 {
		t.Fatalf("after the server stopped: %d packs left in the repository, %d objects in the store", len(local), len(objects))
	}
}

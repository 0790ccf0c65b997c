package vfs

import (
	"context"
	"io"

	"github.com/rewind-cdp/rewind/parsers/exchange"
)

// SetMaxOpenAppDBs lowers how many application databases stay open, so
// tests reopen them.
func SetMaxOpenAppDBs(f *FS, n int) {
	f.apps.mu.Lock()
	f.apps.max = n
	f.apps.mu.Unlock()
}

// NewExchangeDB is the exchange/ view's database over a given store (the
// in-memory one in tests), as ExchangeApp.Open builds it over an .edb.
func NewExchangeDB(ctx context.Context, p string, src exchange.Source) (AppDatabase, error) {
	db, err := exchange.OpenSource(ctx, src)
	if err != nil {
		return nil, err
	}
	return newExchangeDB(p, db), nil
}

// ExchangeAppOver is ExchangeApp reading its databases from Src instead of
// the claimed file (any .edb): the in-memory store through the whole tree.
type ExchangeAppOver struct {
	ExchangeApp
	Src exchange.Source
}

// Probe accepts every matching file.
func (ExchangeAppOver) Probe(context.Context, io.ReaderAt, int64) bool { return true }

// Open reads Src.
func (a ExchangeAppOver) Open(ctx context.Context, src AppSource) (AppDatabase, error) {
	return NewExchangeDB(ctx, src.Path, a.Src)
}

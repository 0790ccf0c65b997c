package vfs

import (
	"context"

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

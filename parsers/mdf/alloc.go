package mdf

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
)

// gamInterval is the number of pages one GAM, SGAM or IAM page covers.
const gamInterval = 511232

// maxChain bounds page-chain walks so that a loop in a damaged file ends.
const maxChain = 1 << 22

// allocRecordData returns the fixed data of record slot i of an allocation
// page (IAM, GAM, SGAM): the bytes after the 4-byte record header up to the
// end of the record area.
func allocRecordData(p *Page, i int) ([]byte, error) {
	off, err := p.slotOffset(i)
	if err != nil {
		return nil, err
	}
	if off == 0 {
		return nil, p.errorf(PageSize-2*(i+1), "allocation page slot %d is empty", i)
	}
	end := p.slotEnd()
	if off+4 > end {
		return nil, p.errorf(off, "allocation record %d truncated", i)
	}
	fe := int(binary.LittleEndian.Uint16(p.Data[off+2:]))
	if fe >= 4 && off+fe <= end {
		end = off + fe
	}
	return p.Data[off+4 : end], nil
}

// iamChain walks the IAM chain starting at first and returns every page it
// maps (single-page slots and whole extents), sorted, plus the errors met.
func (db *Database) iamChain(ctx context.Context, first PageID) ([]PageID, []error) {
	return db.iamChainLimit(ctx, first, maxChain)
}

// iamChainLimit walks at most limit IAM pages of a chain.
func (db *Database) iamChainLimit(ctx context.Context, first PageID, limit int) ([]PageID, []error) {
	var errs []error
	var pages []PageID // may hold duplicates until sorted
	seen := map[PageID]bool{}
	for id := first; !id.IsZero(); {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if len(seen) >= limit {
			break
		}
		if seen[id] {
			errs = append(errs, &PageError{Page: id, Offset: int64(id.Page) * PageSize, Err: fmt.Errorf("%w: IAM chain loops", ErrFormat)})
			break
		}
		seen[id] = true
		p, err := db.ReadPage(id)
		if err != nil {
			errs = append(errs, fmt.Errorf("IAM page: %w", err))
			break
		}
		if p.Header.Type != PageTypeIAM {
			errs = append(errs, fmt.Errorf("IAM chain: %w", p.errorf(1, "page type %d is not an IAM page", p.Header.Type)))
			break
		}
		hdr, err := allocRecordData(p, 0)
		if err != nil || len(hdr) < 90 {
			errs = append(errs, fmt.Errorf("IAM header: %w", p.errorf(pageHeaderSize, "IAM header record missing or short")))
			id = p.Header.Next
			continue
		}
		start := parsePageID(hdr[36:42])
		for i := 0; i < 8; i++ {
			sp := parsePageID(hdr[42+6*i:])
			if !sp.IsZero() {
				if sp.File == 0 {
					sp.File = db.fileID
				}
				pages = append(pages, sp)
			}
		}
		bm, err := allocRecordData(p, 1)
		if err != nil {
			errs = append(errs, fmt.Errorf("IAM bitmap: %w", err))
		} else {
			base := start.Page - start.Page%gamInterval
			for i, c := range bm {
				if c == 0 {
					continue
				}
				for b := 0; b < 8; b++ {
					if c&(1<<b) == 0 {
						continue
					}
					ext := uint64(base) + uint64(i*8+b)*8
					for k := uint64(0); k < 8; k++ {
						pg := ext + k
						if pg < uint64(db.npage) {
							pages = append(pages, PageID{File: db.fileID, Page: uint32(pg)})
						}
					}
				}
			}
		}
		id = p.Header.Next
	}
	slices.SortFunc(pages, func(a, b PageID) int {
		if c := cmp.Compare(a.File, b.File); c != 0 {
			return c
		}
		return cmp.Compare(a.Page, b.Page)
	})
	return slices.Compact(pages), errs
}

// headerScan reads every page header of the file and returns the pages
// of the given type that belong to allocation unit au. It is the fallback
// for allocation metadata that never reached the disk: SQL Server writes
// sysallocunits and IAM pages lazily, so a file copied from a running
// server can lack both for recently filled tables.
func (db *Database) headerScan(ctx context.Context, au int64, typ uint8) []PageID {
	var out []PageID
	var hdr [pageHeaderSize]byte
	for pg := uint32(0); pg < db.npage; pg++ {
		if pg%4096 == 0 && ctx.Err() != nil {
			return out
		}
		if _, err := db.r.ReadAt(hdr[:], int64(pg)*PageSize); err != nil {
			continue
		}
		h := parsePageHeader(hdr[:])
		if h.Type != typ || h.HeaderVersion != 1 || h.This.Page != pg || !h.BelongsTo(au) {
			continue
		}
		out = append(out, PageID{File: db.fileID, Page: pg})
	}
	return out
}

// allocUnitPages returns the pages an allocation unit's IAM pages map,
// following the IAM chain from sysallocunits, or when that pointer is
// missing, every IAM page of the unit found by a header scan.
func (db *Database) allocUnitPages(ctx context.Context, au *AllocUnit) ([]PageID, []error) {
	if !au.FirstIAM.IsZero() {
		return db.iamChain(ctx, au.FirstIAM)
	}
	var all []PageID
	var errs []error
	seen := map[PageID]bool{}
	for _, iam := range db.headerScan(ctx, au.ID, PageTypeIAM) {
		pages, e := db.iamChainLimit(ctx, iam, 1)
		errs = append(errs, e...)
		for _, p := range pages {
			if !seen[p] {
				seen[p] = true
				all = append(all, p)
			}
		}
	}
	if len(all) == 0 {
		// IAM pages empty or missing on disk: take the data pages that
		// name this allocation unit in their header.
		all = db.headerScan(ctx, au.ID, PageTypeData)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Page < all[j].Page })
	return all, errs
}

// ExtentAllocated reports whether the GAM marks the extent holding page
// as allocated (GAM bit clear). Pages whose GAM cannot be read count as
// allocated.
func (db *Database) ExtentAllocated(page uint32) bool {
	gam := page - page%gamInterval + 2
	p, err := db.ReadPage(PageID{File: db.fileID, Page: gam})
	if err != nil || p.Header.Type != PageTypeGAM {
		return true
	}
	bm, err := allocRecordData(p, 1)
	if err != nil {
		return true
	}
	ext := (page % gamInterval) / 8
	if int(ext/8) >= len(bm) {
		return true
	}
	return bm[ext/8]&(1<<(ext%8)) == 0
}

// AllocationSummary counts extents per allocation state from the GAM and
// SGAM pages of the file.
type AllocationSummary struct {
	Extents      int // extents in the file
	Allocated    int // allocated (GAM bit clear)
	MixedPartial int // mixed extents with free pages (SGAM bit set)
}

// Allocation reads every GAM and SGAM page of the file.
func (db *Database) Allocation() (AllocationSummary, error) {
	var s AllocationSummary
	s.Extents = int(db.npage / 8)
	for base := uint32(0); base < db.npage; base += gamInterval {
		for _, which := range []uint32{2, 3} {
			id := PageID{File: db.fileID, Page: base + which}
			p, err := db.ReadPage(id)
			if err != nil {
				return s, err
			}
			bm, err := allocRecordData(p, 1)
			if err != nil {
				return s, err
			}
			n := int((db.npage-base)/8) + 0
			if n > gamInterval/8 {
				n = gamInterval / 8
			}
			for e := 0; e < n && e/8 < len(bm); e++ {
				set := bm[e/8]&(1<<(e%8)) != 0
				if which == 2 && !set {
					s.Allocated++
				}
				if which == 3 && set {
					s.MixedPartial++
				}
			}
		}
	}
	return s, nil
}

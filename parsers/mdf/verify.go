package mdf

import (
	"context"
	"fmt"
)

// VerifyReport counts the outcome of checking every page of the file.
type VerifyReport struct {
	Pages       int          // pages in the file
	ChecksumOK  int          // checksum present and correct
	TornOK      int          // torn-page bits present and consistent
	Unprotected int          // written without checksum or torn bits
	Unused      int          // never written, or not a page of this file
	Bad         []*PageError // checksum mismatch or torn page
}

// VerifyPages checks the checksum or torn-page bits of every page.
func (db *Database) VerifyPages(ctx context.Context) (*VerifyReport, error) {
	rep := &VerifyReport{Pages: int(db.npage)}
	buf := make([]byte, PageSize)
	for pg := uint32(0); pg < db.npage; pg++ {
		if pg%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
		}
		id := PageID{File: db.fileID, Page: pg}
		off := int64(pg) * PageSize
		if _, err := db.r.ReadAt(buf, off); err != nil {
			rep.Bad = append(rep.Bad, &PageError{Page: id, Offset: off, Err: err})
			continue
		}
		switch v := verifyPage(buf, id); v {
		case VerifyChecksum:
			rep.ChecksumOK++
		case VerifyTornBits:
			rep.TornOK++
		case VerifyNone:
			rep.Unprotected++
		case VerifyEmpty, VerifyWrongPage:
			rep.Unused++
		default:
			rep.Bad = append(rep.Bad, &PageError{Page: id, Offset: off, Err: fmt.Errorf("%w: %s", ErrFormat, v)})
		}
	}
	return rep, nil
}

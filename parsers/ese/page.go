package ese

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Page flags.
const (
	pageRoot      = 0x0001
	pageLeaf      = 0x0002
	pageParent    = 0x0004
	pageEmpty     = 0x0008
	pageSpaceTree = 0x0020
	pageIndex     = 0x0040
	pageLongValue = 0x0080
	pageNewRecord = 0x0800
)

// Node (tag) flags.
const (
	nodeVersion    = 0x1
	nodeDeleted    = 0x2
	nodeCompressed = 0x4 // the key shares a prefix with the page's common key
)

type tag struct {
	off, size int
	flags     uint16
}

type page struct {
	no        uint32
	buf       []byte
	flags     uint32
	prev      uint32
	next      uint32
	objid     uint32
	dataStart int
	tags      []tag
	reserved  int // tags before the first node
}

// node is one entry of a page: its full key and its data.
type node struct {
	key   []byte
	data  []byte
	flags uint16
}

const maxCachedPages = 512

// page reads, verifies and parses database page pg.
func (db *DB) page(pg uint32) (*page, error) {
	if pg < 1 || pg > db.lastPage {
		return nil, corruptf("page number %d outside 1..%d", pg, db.lastPage)
	}
	db.mu.Lock()
	if p := db.cache[pg]; p != nil {
		db.mu.Unlock()
		return p, nil
	}
	db.mu.Unlock()
	off := int64(pg+1) * int64(db.pageSize)
	buf := make([]byte, db.pageSize)
	if n, err := db.r.ReadAt(buf, off); err != nil && !(errors.Is(err, io.EOF) && n == len(buf)) {
		return nil, fmt.Errorf("ese: reading page %d at offset %d: %w", pg, off, err)
	}
	if _, errs := db.checkPage(buf, pg); len(errs) > 0 {
		db.mu.Lock()
		db.badPages[pg] = errs[0]
		db.mu.Unlock()
	}
	p, err := parsePage(buf, pg, db.large)
	if err != nil {
		return nil, fmt.Errorf("%w (page %d at offset %d)", err, pg, off)
	}
	db.mu.Lock()
	if len(db.cache) >= maxCachedPages {
		clear(db.cache)
	}
	db.cache[pg] = p
	db.mu.Unlock()
	return p, nil
}

func parsePage(buf []byte, pg uint32, large bool) (*page, error) {
	le := binary.LittleEndian
	hdr := 40
	if large {
		hdr = 80
	}
	if len(buf) < hdr+4 {
		return nil, corruptf("page of %d bytes too short", len(buf))
	}
	p := &page{
		no:        pg,
		buf:       buf,
		prev:      le.Uint32(buf[16:]),
		next:      le.Uint32(buf[20:]),
		objid:     le.Uint32(buf[24:]),
		flags:     le.Uint32(buf[36:]),
		dataStart: hdr,
	}
	state := le.Uint16(buf[34:])
	ntags := int(state & 0x0fff)
	p.reserved = max(1, int(state>>12&7))
	if ntags*4 > len(buf)-hdr {
		return nil, corruptf("%d tags do not fit the page", ntags)
	}
	mask := uint16(0x1fff)
	if large {
		mask = 0x7fff
	}
	dataLen := len(buf) - hdr - ntags*4
	p.tags = make([]tag, ntags)
	for i := range ntags {
		at := len(buf) - 4*(i+1)
		cb := le.Uint16(buf[at:])
		ib := le.Uint16(buf[at+2:])
		t := tag{off: int(ib & mask), size: int(cb & mask)}
		if !large {
			t.flags = ib >> 13
		}
		if t.off+t.size > dataLen {
			return nil, corruptf("tag %d (offset %d, size %d) runs past the page data (%d bytes)", i, t.off, t.size, dataLen)
		}
		if large && t.size >= 2 {
			t.flags = uint16(buf[hdr+t.off+1] >> 5)
		}
		p.tags[i] = t
	}
	return p, nil
}

func (p *page) tagData(i int) []byte {
	t := p.tags[i]
	return p.buf[p.dataStart+t.off : p.dataStart+t.off+t.size]
}

// nodeCount is the number of B-tree entries (tags after the reserved ones).
func (p *page) nodeCount() int { return max(0, len(p.tags)-p.reserved) }

// node decodes entry i (0-based, after the reserved tags).
func (p *page) node(i int) (node, error) {
	ti := i + p.reserved
	if i < 0 || ti >= len(p.tags) {
		return node{}, corruptf("page %d: node %d out of range", p.no, i)
	}
	d := p.tagData(ti)
	n := node{flags: p.tags[ti].flags}
	pos := 0
	var prefix []byte
	if n.flags&nodeCompressed != 0 {
		if len(d) < 2 {
			return n, corruptf("page %d node %d: prefix size missing", p.no, i)
		}
		cp := int(binary.LittleEndian.Uint16(d) & 0x1fff)
		common := p.tagData(0)
		if p.flags&pageRoot != 0 && cp > 0 && cp > len(common) {
			return n, corruptf("page %d node %d: common key of %d bytes on a root page", p.no, i, cp)
		}
		if cp > len(common) {
			return n, corruptf("page %d node %d: common key size %d exceeds the page's %d", p.no, i, cp, len(common))
		}
		prefix = common[:cp]
		pos = 2
	}
	if len(d) < pos+2 {
		return n, corruptf("page %d node %d: key size missing", p.no, i)
	}
	ks := int(binary.LittleEndian.Uint16(d[pos:]) & 0x1fff)
	pos += 2
	if pos+ks > len(d) {
		return n, corruptf("page %d node %d: key of %d bytes runs past the %d-byte entry", p.no, i, ks, len(d))
	}
	n.key = make([]byte, 0, len(prefix)+ks)
	n.key = append(append(n.key, prefix...), d[pos:pos+ks]...)
	n.data = d[pos+ks:]
	return n, nil
}

const maxTreeDepth = 32

// walk calls fn for every live leaf entry of the B-tree rooted at root, in
// key order.
func (db *DB) walk(ctx context.Context, root uint32, fn func(n node) error) error {
	seen := map[uint32]bool{}
	var visit func(pg uint32, depth int) error
	visit = func(pg uint32, depth int) error {
		if depth > maxTreeDepth {
			return corruptf("B-tree rooted at page %d deeper than %d levels", root, maxTreeDepth)
		}
		if seen[pg] {
			return corruptf("B-tree rooted at page %d visits page %d twice", root, pg)
		}
		seen[pg] = true
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := db.page(pg)
		if err != nil {
			return err
		}
		if p.flags&pageEmpty != 0 {
			return nil
		}
		leaf := p.flags&pageLeaf != 0
		for i := range p.nodeCount() {
			n, err := p.node(i)
			if err != nil {
				return err
			}
			if leaf {
				if n.flags&nodeDeleted != 0 {
					continue
				}
				if err := fn(n); err != nil {
					return err
				}
				continue
			}
			if len(n.data) < 4 {
				return corruptf("page %d node %d: branch entry without a child page", pg, i)
			}
			if err := visit(binary.LittleEndian.Uint32(n.data), depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return visit(root, 0)
}

// seek calls fn for leaf entries of the tree rooted at root, starting at
// the leaf that may hold the first key >= key and continuing along the
// leaf chain until fn returns false.
func (db *DB) seek(ctx context.Context, root uint32, key []byte, fn func(n node) (bool, error)) error {
	pg := root
	for depth := 0; ; depth++ {
		if depth > maxTreeDepth {
			return corruptf("B-tree rooted at page %d deeper than %d levels", root, maxTreeDepth)
		}
		p, err := db.page(pg)
		if err != nil {
			return err
		}
		if p.flags&pageLeaf != 0 || p.flags&pageEmpty != 0 {
			break
		}
		next := uint32(0)
		cnt := p.nodeCount()
		for i := range cnt {
			n, err := p.node(i)
			if err != nil {
				return err
			}
			if len(n.data) < 4 {
				return corruptf("page %d node %d: branch entry without a child page", pg, i)
			}
			if i == cnt-1 || len(n.key) == 0 || bytes.Compare(n.key, key) >= 0 {
				next = binary.LittleEndian.Uint32(n.data)
				break
			}
		}
		if next == 0 {
			return nil
		}
		pg = next
	}
	for steps := 0; pg != 0; steps++ {
		if steps > int(db.lastPage) {
			return corruptf("leaf chain from page %d loops", root)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := db.page(pg)
		if err != nil {
			return err
		}
		for i := range p.nodeCount() {
			n, err := p.node(i)
			if err != nil {
				return err
			}
			if n.flags&nodeDeleted != 0 {
				continue
			}
			more, err := fn(n)
			if err != nil || !more {
				return err
			}
		}
		pg = p.next
	}
	return nil
}

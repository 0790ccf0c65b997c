// Package exchange reads Exchange 2010-2019 mailbox databases (.edb): the
// store's Mailbox, Folder, Message_<N> and Attachment_<N> tables over
// parsers/ese, their property blobs (parsers/mapi), compressed RTF bodies
// (parsers/rtfcp, parsers/rtfex), and writes messages as .eml files
// (parsers/eml).
//
// The API, from a file to a message:
//
//	db, err := exchange.Open(ctx, r, size)         // r is an io.ReaderAt
//	boxes, err := db.Mailboxes(ctx)                // []*Mailbox
//	root, err := boxes[0].FolderTree(ctx)          // *Folder, Children, Path()
//	msgs, err := folder.Messages(ctx)              // []*Message: Date(), Subject, Size
//	folders, byFolder, err := boxes[0].MessagesByFolder(ctx) // all of them, one pass
//	err = msgs[0].WriteEML(ctx, w)                 // RFC 5322 / MIME
//	name := msgs[0].FileName()                     // "2026-11-20 1015 Subject.eml"
//
// Mailbox.Items streams fully loaded messages (bodies, recipients,
// attachments) in one pass over the tables, which is what bulk export
// wants; Message.Load and WriteEML fetch one message on their own (a scan
// of its table: the store's tables are read without secondary indexes).
//
// The mapping from tables to mailboxes, folders and messages is a table
// (schema.go) over the Source interface, so the same code reads a real
// .edb through FromESE and in-memory tables in tests. What comes from
// published documentation and what is inferred is said where it is used;
// no real Exchange database could be read while writing this.
package exchange

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/rewind-cdp/rewind/parsers/ese"
	"github.com/rewind-cdp/rewind/parsers/mapi"
)

// ErrNotExchange is returned by Open for an ESE database that lacks the
// Exchange mailbox tables.
var ErrNotExchange = errors.New("an ESE database without the Exchange mailbox tables (Mailbox, Folder, Message_N)")

// DB is an open Exchange mailbox database.
type DB struct {
	src    Source
	tables map[string][]*tableMap
	ESE    *ese.DB // nil when opened from another Source
}

// Open opens an .edb file: the ESE database, then the store schema.
func Open(ctx context.Context, r io.ReaderAt, size int64) (*DB, error) {
	edb, err := ese.Open(ctx, r, size)
	if err != nil {
		return nil, err
	}
	db, err := OpenSource(ctx, FromESE(edb))
	if err != nil {
		return nil, err
	}
	db.ESE = edb
	return db, nil
}

// OpenSource binds the store schema to src.
func OpenSource(_ context.Context, src Source) (*DB, error) {
	t := bind(src)
	if len(t["Mailbox"]) == 0 || len(t["Folder"]) == 0 || len(t["Message"]) == 0 {
		return nil, ErrNotExchange
	}
	return &DB{src: src, tables: t}, nil
}

// Mailbox is one mailbox of the database.
type Mailbox struct {
	Number       int64  // MailboxNumber: the <N> of its Message_<N> table
	Partition    int64  // MailboxPartitionNumber (equal to Number unless the mailbox was moved in)
	GUID         string // MailboxGuid
	DisplayName  string
	Owner        string // MailboxOwnerDisplayName
	LegacyDN     string // OwnerLegacyDN
	MessageCount int64
	Size         int64
	Deleted      time.Time // DeletedOn: soft-deleted mailboxes keep their data
	db           *DB
}

// Name is the display name, else the owner, else "mailbox-<N>".
func (m *Mailbox) Name() string {
	for _, s := range []string{m.DisplayName, m.Owner} {
		if s = strings.TrimSpace(s); s != "" {
			return s
		}
	}
	return fmt.Sprintf("mailbox-%d", m.Number)
}

// Mailboxes lists the mailboxes, by mailbox number.
func (db *DB) Mailboxes(ctx context.Context) ([]*Mailbox, error) {
	var out []*Mailbox
	for _, tm := range db.tables["Mailbox"] {
		err := db.src.Rows(ctx, tm.table, func(r Row) error {
			rw := &row{ctx: ctx, r: r, m: tm}
			n, ok := rw.int("number")
			if !ok {
				return rw.err
			}
			mb := &Mailbox{Number: n, Partition: n, DisplayName: rw.str("name"), Owner: rw.str("owner"),
				LegacyDN: rw.str("legacyDN"), Deleted: rw.time("deleted"), db: db}
			if p, ok := rw.int("partition"); ok {
				mb.Partition = p
			}
			mb.MessageCount, _ = rw.int("messages")
			mb.Size, _ = rw.int("size")
			switch g := rw.raw("guid").(type) {
			case string:
				mb.GUID = g
			case []byte:
				if len(g) == 16 {
					mb.GUID = mapi.GUID(g).String()
				}
			}
			out = append(out, mb)
			return rw.err
		})
		if err != nil {
			return nil, fmt.Errorf("exchange: table %s: %w", tm.table, err)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out, nil
}

// Mailbox returns the mailbox with the given number or name (display name
// or owner, case-insensitive).
func (db *DB) Mailbox(ctx context.Context, key string) (*Mailbox, error) {
	boxes, err := db.Mailboxes(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range boxes {
		if fmt.Sprint(m.Number) == key || strings.EqualFold(m.Name(), key) || strings.EqualFold(m.Owner, key) || strings.EqualFold(m.GUID, key) {
			return m, nil
		}
	}
	return nil, fmt.Errorf("no mailbox %q", key)
}

// scan calls fn for the rows of kind that belong to the mailbox: its own
// <Kind>_<N> table, or the rows of the shared table whose partition
// number is the mailbox's.
func (m *Mailbox) scan(ctx context.Context, kind string, fn func(*row) error) error {
	// Per-mailbox tables are partitioned by MailboxPartitionNumber (the
	// first column of every store table's primary key); for ordinary
	// mailboxes it equals MailboxNumber, which is tried second.
	own, shared := tablesFor(m.db.tables, kind, m.Partition)
	if own == nil {
		own, _ = tablesFor(m.db.tables, kind, m.Number)
	}
	tm := own
	if tm == nil {
		tm = shared
	}
	if tm == nil {
		return nil
	}
	err := m.db.src.Rows(ctx, tm.table, func(r Row) error {
		rw := &row{ctx: ctx, r: r, m: tm}
		if tm.mailbox < 0 {
			if p, ok := rw.int("partition"); ok && p != m.Partition && p != m.Number {
				return rw.err
			}
		}
		if err := fn(rw); err != nil {
			return err
		}
		return rw.err
	})
	if err != nil && !errors.Is(err, ErrStop) {
		return fmt.Errorf("exchange: table %s: %w", tm.table, err)
	}
	return nil
}

// Folder is one folder of a mailbox.
type Folder struct {
	ID           string // hex of FolderId
	ParentID     string // hex of ParentFolderId; "" for the root
	Name         string
	Class        string // ContainerClass, e.g. IPF.Note
	MessageCount int64
	Parent       *Folder
	Children     []*Folder
	Mailbox      *Mailbox
}

// Path returns the folder's names from below the (nameless) root down,
// e.g. ["Top of Information Store", "Inbox", "Projects"].
func (f *Folder) Path() []string {
	var p []string
	for x := f; x != nil && x.Parent != nil; x = x.Parent {
		p = append(p, x.Name)
	}
	for i, j := 0, len(p)-1; i < j; i, j = i+1, j-1 {
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// Folders lists the mailbox's folders, linked into a tree (Parent,
// Children), roots first.
func (m *Mailbox) Folders(ctx context.Context) ([]*Folder, error) {
	var list []*Folder
	byID := map[string]*Folder{}
	err := m.scan(ctx, "Folder", func(rw *row) error {
		f := &Folder{ID: hex.EncodeToString(rw.bytes("id")), ParentID: hex.EncodeToString(rw.bytes("parent")),
			Name: rw.str("name"), Class: rw.str("class"), Mailbox: m}
		f.MessageCount, _ = rw.int("messages")
		if f.Name == "" {
			if props, err := mapi.ParseStoreBlob(rw.bytes("blob")); err == nil {
				f.Name, _ = propValue(props, mapi.PidTagDisplayName).(string)
			}
		}
		list = append(list, f)
		byID[f.ID] = f
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, f := range list {
		if p := byID[f.ParentID]; p != nil && p != f {
			f.Parent = p
		}
	}
	// Break cycles a damaged table could hold, then link children.
	for _, f := range list {
		seen := map[*Folder]bool{}
		for x := f; x.Parent != nil; x = x.Parent {
			if seen[x] {
				x.Parent = nil
				break
			}
			seen[x] = true
		}
	}
	for _, f := range list {
		if f.Parent != nil {
			f.Parent.Children = append(f.Parent.Children, f)
		}
	}
	for _, f := range list {
		sort.Slice(f.Children, func(i, j int) bool { return f.Children[i].Name < f.Children[j].Name })
	}
	sort.SliceStable(list, func(i, j int) bool { return depth(list[i]) < depth(list[j]) })
	return list, nil
}

func depth(f *Folder) int {
	n := 0
	for x := f; x.Parent != nil && n < 1024; x = x.Parent {
		n++
	}
	return n
}

// FolderTree returns the root folder (the one without a parent holding the
// most descendants) with the others below it.
func (m *Mailbox) FolderTree(ctx context.Context) (*Folder, error) {
	list, err := m.Folders(ctx)
	if err != nil {
		return nil, err
	}
	var best *Folder
	bestN := -1
	for _, f := range list {
		if f.Parent != nil {
			continue
		}
		if n := count(f); n > bestN {
			best, bestN = f, n
		}
	}
	if best == nil {
		return nil, fmt.Errorf("mailbox %d has no folders", m.Number)
	}
	return best, nil
}

func count(f *Folder) int {
	n := 1
	for _, c := range f.Children {
		n += count(c)
	}
	return n
}

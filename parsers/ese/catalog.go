package ese

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
)

// ColumnType is a JET_coltyp.
type ColumnType uint32

// Column types.
const (
	TypeNil           ColumnType = 0
	TypeBit           ColumnType = 1
	TypeUnsignedByte  ColumnType = 2
	TypeShort         ColumnType = 3
	TypeLong          ColumnType = 4
	TypeCurrency      ColumnType = 5
	TypeIEEESingle    ColumnType = 6
	TypeIEEEDouble    ColumnType = 7
	TypeDateTime      ColumnType = 8
	TypeBinary        ColumnType = 9
	TypeText          ColumnType = 10
	TypeLongBinary    ColumnType = 11
	TypeLongText      ColumnType = 12
	TypeSLV           ColumnType = 13
	TypeUnsignedLong  ColumnType = 14
	TypeLongLong      ColumnType = 15
	TypeGUID          ColumnType = 16
	TypeUnsignedShort ColumnType = 17
)

var typeNames = map[ColumnType]string{
	TypeNil: "Nil", TypeBit: "Bit", TypeUnsignedByte: "UnsignedByte", TypeShort: "Short",
	TypeLong: "Long", TypeCurrency: "Currency", TypeIEEESingle: "IEEESingle",
	TypeIEEEDouble: "IEEEDouble", TypeDateTime: "DateTime", TypeBinary: "Binary",
	TypeText: "Text", TypeLongBinary: "LongBinary", TypeLongText: "LongText", TypeSLV: "SLV",
	TypeUnsignedLong: "UnsignedLong", TypeLongLong: "LongLong", TypeGUID: "GUID",
	TypeUnsignedShort: "UnsignedShort",
}

func (t ColumnType) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("Type%d", uint32(t))
}

// FixedSize is the stored size of fixed-size types, 0 for the others.
func (t ColumnType) FixedSize() int {
	switch t {
	case TypeBit, TypeUnsignedByte:
		return 1
	case TypeShort, TypeUnsignedShort:
		return 2
	case TypeLong, TypeIEEESingle, TypeUnsignedLong:
		return 4
	case TypeCurrency, TypeIEEEDouble, TypeDateTime, TypeLongLong:
		return 8
	case TypeGUID:
		return 16
	}
	return 0
}

// IsText reports whether values are character strings.
func (t ColumnType) IsText() bool { return t == TypeText || t == TypeLongText }

// Column flags (JET_bitColumn*).
const (
	ColumnFixed       = 0x00000001
	ColumnTagged      = 0x00000002
	ColumnNotNULL     = 0x00000004
	ColumnVersion     = 0x00000008
	ColumnAutoinc     = 0x00000010
	ColumnMultiValued = 0x00000400
	ColumnCompressed  = 0x00080000
)

// Column describes one column of a table.
type Column struct {
	ID           uint32
	Name         string
	Type         ColumnType
	Flags        uint32
	Codepage     uint32
	MaxSize      uint32 // SpaceUsage: the size of fixed Text/Binary columns
	RecordOffset int    // byte offset of a fixed column in the record
	Default      []byte // raw default value, nil when none
	Template     bool   // inherited from a template table
}

// Kind is "fixed", "variable" or "tagged", from the column id.
func (c *Column) Kind() string {
	switch {
	case c.ID <= 127:
		return "fixed"
	case c.ID <= 255:
		return "variable"
	}
	return "tagged"
}

// Index is a secondary (or primary) index of a table.
type Index struct {
	Name    string
	ID      uint32
	FDP     uint32
	Flags   uint32
	KeyCols []byte // raw KeyFldIDs
}

// Table is one table of the catalog.
type Table struct {
	Name     string
	ObjID    uint32
	FDP      uint32 // root page of the record B-tree
	LVFDP    uint32 // root page of the long-value B-tree, 0 when none
	Flags    uint32
	Template string // name of the template table it derives from
	Columns  []*Column
	Indexes  []*Index
	byID     map[uint32]*Column
	byName   map[string]*Column
	lvChunk  uint32
	db       *DB
}

// Column returns the named column, or nil.
func (t *Table) Column(name string) *Column { return t.byName[name] }

// The catalog's own layout: fixed columns and their offsets are the same in
// every ESE version (newer versions only append columns), so the catalog
// is read with this bootstrap schema.
func catalogSchema() *Table {
	t := &Table{Name: "MSysObjects", ObjID: 2, FDP: catalogFDP}
	add := func(id uint32, name string, typ ColumnType, off int) {
		t.Columns = append(t.Columns, &Column{ID: id, Name: name, Type: typ, RecordOffset: off, Codepage: 1252})
	}
	add(1, "ObjidTable", TypeLong, 4)
	add(2, "Type", TypeShort, 8)
	add(3, "Id", TypeLong, 10)
	add(4, "ColtypOrPgnoFDP", TypeLong, 14)
	add(5, "SpaceUsage", TypeLong, 18)
	add(6, "Flags", TypeLong, 22)
	add(7, "PagesOrLocale", TypeLong, 26)
	add(8, "RootFlag", TypeBit, 30)
	add(9, "RecordOffset", TypeShort, 31)
	add(10, "LCMapFlags", TypeLong, 33)
	add(11, "KeyMost", TypeUnsignedShort, 37)
	add(12, "LVChunkMax", TypeLong, 39)
	add(128, "Name", TypeText, 0)
	add(130, "TemplateTable", TypeText, 0)
	add(131, "DefaultValue", TypeBinary, 0)
	add(132, "KeyFldIDs", TypeBinary, 0)
	t.index()
	return t
}

func (t *Table) index() {
	sort.SliceStable(t.Columns, func(i, j int) bool { return t.Columns[i].ID < t.Columns[j].ID })
	t.byID = make(map[uint32]*Column, len(t.Columns))
	t.byName = make(map[string]*Column, len(t.Columns))
	for _, c := range t.Columns {
		t.byID[c.ID] = c
		if _, dup := t.byName[c.Name]; !dup {
			t.byName[c.Name] = c
		}
	}
}

const (
	sysTable     = 1
	sysColumn    = 2
	sysIndex     = 3
	sysLongValue = 4
	sysCallback  = 5
)

func (db *DB) loadCatalog(ctx context.Context) error {
	cat := catalogSchema()
	cat.db = db
	db.catalog = cat
	byObj := map[uint32]*Table{}
	var order []*Table
	err := db.walk(ctx, catalogFDP, func(n node) error {
		rec, err := parseRecord(n.data, db.large)
		if err != nil {
			return fmt.Errorf("catalog record: %w", err)
		}
		u32 := func(id uint32) uint32 {
			b := rec.fixed(cat.byID[id])
			if len(b) < 4 {
				return 0
			}
			return binary.LittleEndian.Uint32(b)
		}
		typB := rec.fixed(cat.byID[2])
		if len(typB) < 2 {
			return corruptf("catalog record without a type")
		}
		typ := binary.LittleEndian.Uint16(typB)
		objid := u32(1)
		id := u32(3)
		nameRaw, _ := rec.variable(128)
		name := decodeText(nameRaw, 1252)
		switch typ {
		case sysTable:
			t := &Table{Name: name, ObjID: id, FDP: u32(4), Flags: u32(6), db: db}
			if tt, ok := rec.variable(130); ok {
				t.Template = decodeText(tt, 1252)
			}
			if b := rec.fixed(cat.byID[12]); len(b) == 4 {
				t.lvChunk = binary.LittleEndian.Uint32(b)
			}
			if byObj[id] == nil {
				byObj[id] = t
				order = append(order, t)
			}
		case sysColumn:
			t := byObj[objid]
			if t == nil {
				return nil // column of an unknown table: ignore
			}
			c := &Column{ID: id, Name: name, Type: ColumnType(u32(4)), MaxSize: u32(5), Flags: u32(6), Codepage: u32(7)}
			if b := rec.fixed(cat.byID[9]); len(b) == 2 {
				c.RecordOffset = int(binary.LittleEndian.Uint16(b))
			}
			if d, ok := rec.variable(131); ok {
				c.Default = append([]byte(nil), d...)
			}
			t.Columns = append(t.Columns, c)
		case sysIndex:
			t := byObj[objid]
			if t == nil {
				return nil
			}
			ix := &Index{Name: name, ID: id, FDP: u32(4), Flags: u32(6)}
			if k, ok := rec.variable(132); ok {
				ix.KeyCols = append([]byte(nil), k...)
			}
			t.Indexes = append(t.Indexes, ix)
		case sysLongValue:
			if t := byObj[objid]; t != nil {
				t.LVFDP = u32(4)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ese: reading the catalog (MSysObjects, page %d): %w", catalogFDP, err)
	}
	db.byName = map[string]*Table{}
	for _, t := range order {
		db.byName[t.Name] = t
	}
	for _, t := range order {
		if t.Template != "" {
			if tt := db.byName[t.Template]; tt != nil && tt != t {
				own := t.Columns
				t.Columns = nil
				for _, c := range tt.Columns {
					cc := *c
					cc.Template = true
					t.Columns = append(t.Columns, &cc)
				}
				t.Columns = append(t.Columns, own...)
			}
		}
		t.index()
		fixOffsets(t)
	}
	db.tables = order
	if len(order) == 0 {
		return corruptf("catalog (page %d) lists no table", catalogFDP)
	}
	return nil
}

// fixOffsets checks the record offsets the catalog gives fixed columns and
// computes them (fixed columns follow each other from byte 4 in id order)
// when they are missing or inconsistent, as they are in the catalog's
// description of its own tables.
func fixOffsets(t *Table) {
	valid := true
	end := 4
	for _, c := range t.Columns {
		if c.ID > 127 {
			break
		}
		if c.RecordOffset < end {
			valid = false
			break
		}
		end = c.RecordOffset + c.fixedSize()
	}
	if valid {
		return
	}
	off := 4
	for _, c := range t.Columns {
		if c.ID > 127 {
			break
		}
		c.RecordOffset = off
		off += c.fixedSize()
	}
}

// fixedSize is the stored size of a fixed column.
func (c *Column) fixedSize() int {
	if s := c.Type.FixedSize(); s > 0 {
		return s
	}
	return int(c.MaxSize)
}

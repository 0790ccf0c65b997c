package mdf

import (
	"fmt"
	"sort"
	"strings"
)

// SQL Server system type ids (syscolpars.xtype).
const (
	TypeImage            = 34
	TypeText             = 35
	TypeUniqueIdentifier = 36
	TypeDate             = 40
	TypeTime             = 41
	TypeDateTime2        = 42
	TypeDateTimeOffset   = 43
	TypeTinyInt          = 48
	TypeSmallInt         = 52
	TypeInt              = 56
	TypeSmallDateTime    = 58
	TypeReal             = 59
	TypeMoney            = 60
	TypeDateTime         = 61
	TypeFloat            = 62
	TypeSQLVariant       = 98
	TypeNText            = 99
	TypeBit              = 104
	TypeDecimal          = 106
	TypeNumeric          = 108
	TypeSmallMoney       = 122
	TypeBigInt           = 127
	TypeVarBinary        = 165
	TypeVarChar          = 167
	TypeBinary           = 173
	TypeChar             = 175
	TypeTimestamp        = 189
	TypeNVarChar         = 231
	TypeNChar            = 239
	TypeCLR              = 240
	TypeXML              = 241
)

var typeNames = map[uint8]string{
	TypeImage: "image", TypeText: "text", TypeUniqueIdentifier: "uniqueidentifier", TypeDate: "date",
	TypeTime: "time", TypeDateTime2: "datetime2", TypeDateTimeOffset: "datetimeoffset", TypeTinyInt: "tinyint",
	TypeSmallInt: "smallint", TypeInt: "int", TypeSmallDateTime: "smalldatetime", TypeReal: "real",
	TypeMoney: "money", TypeDateTime: "datetime", TypeFloat: "float", TypeSQLVariant: "sql_variant",
	TypeNText: "ntext", TypeBit: "bit", TypeDecimal: "decimal", TypeNumeric: "numeric",
	TypeSmallMoney: "smallmoney", TypeBigInt: "bigint", TypeVarBinary: "varbinary", TypeVarChar: "varchar",
	TypeBinary: "binary", TypeChar: "char", TypeTimestamp: "timestamp", TypeNVarChar: "nvarchar",
	TypeNChar: "nchar", TypeCLR: "clr", TypeXML: "xml",
}

// TypeName returns the SQL name of a system type id.
func TypeName(xtype uint8) string {
	if n, ok := typeNames[xtype]; ok {
		return n
	}
	return fmt.Sprintf("type%d", xtype)
}

// fixedSize returns the in-row size of a fixed-length type, or 0 for
// variable-length types.
func fixedSize(xtype uint8, length, prec, scale int) int {
	switch xtype {
	case TypeUniqueIdentifier:
		return 16
	case TypeDate:
		return 3
	case TypeTime:
		return timeBytes(scale)
	case TypeDateTime2:
		return timeBytes(scale) + 3
	case TypeDateTimeOffset:
		return timeBytes(scale) + 5
	case TypeTinyInt:
		return 1
	case TypeSmallInt:
		return 2
	case TypeInt, TypeSmallDateTime, TypeReal, TypeSmallMoney:
		return 4
	case TypeMoney, TypeDateTime, TypeBigInt, TypeTimestamp:
		return 8
	case TypeFloat:
		if length == 4 {
			return 4
		}
		return 8
	case TypeBit:
		return 1
	case TypeDecimal, TypeNumeric:
		switch {
		case prec <= 9:
			return 5
		case prec <= 19:
			return 9
		case prec <= 28:
			return 13
		}
		return 17
	case TypeBinary, TypeChar, TypeNChar:
		if length > 0 {
			return length
		}
	}
	return 0
}

func timeBytes(scale int) int {
	switch {
	case scale <= 2:
		return 3
	case scale <= 4:
		return 4
	}
	return 5
}

// Column is one column of a user table.
type Column struct {
	ID        int
	Name      string
	TypeID    uint8  // system type id
	TypeName  string // type as declared (user-defined type names kept)
	MaxLength int    // bytes; -1 for (max) and LOB types
	Precision int
	Scale     int
	Collation int32 // collation id; 0 for non-character types
	CodePage  int   // code page for char/varchar/text (0 = unknown, 1252 assumed)
	Nullable  bool
	Identity  bool
	Computed  bool // non-persisted computed column: no stored value
	Sparse    bool

	stored     bool
	leafOffset int // > 0: offset in fixed part; < 0: -(variable column index + 1)
	nullBit    int // 1-based position in the null bitmap, 0 when none
	bitPos     int // bit number within the byte for bit columns
}

// SQLType renders the column type the way CREATE TABLE writes it.
func (c *Column) SQLType() string {
	base := TypeName(c.TypeID)
	switch c.TypeID {
	case TypeVarChar, TypeVarBinary, TypeChar, TypeBinary:
		if c.MaxLength < 0 {
			return base + "(max)"
		}
		return fmt.Sprintf("%s(%d)", base, c.MaxLength)
	case TypeNVarChar, TypeNChar:
		if c.MaxLength < 0 {
			return base + "(max)"
		}
		return fmt.Sprintf("%s(%d)", base, c.MaxLength/2)
	case TypeDecimal, TypeNumeric:
		return fmt.Sprintf("%s(%d,%d)", base, c.Precision, c.Scale)
	case TypeTime, TypeDateTime2, TypeDateTimeOffset:
		return fmt.Sprintf("%s(%d)", base, c.Scale)
	case TypeTimestamp:
		return "rowversion"
	case TypeCLR:
		if c.TypeName != "" {
			return c.TypeName
		}
		return "varbinary(max)"
	}
	return base
}

// Partition is one rowset (heap or clustered index) of a table with its
// allocation units.
type Partition struct {
	RowsetID    int64
	Number      int
	RowsHint    int64 // sysrowsets.rcrows (may be stale)
	Compression int   // 0 none, 1 ROW, 2 PAGE
	InRow       *AllocUnit
	LOB         *AllocUnit
	Overflow    *AllocUnit
}

// Table is one user table.
type Table struct {
	ObjectID int32
	// Tool is set for the tables SQL Server's own tools create in user
	// space (dbo.sysdiagrams, dbo.dtproperties): Tables leaves them out.
	Tool       bool
	Schema     string
	Name       string
	Columns    []*Column
	Clustered  bool
	Partitions []*Partition

	db *Database
	// sparse is set when some columns are sparse; claimedVar then marks
	// the variable column slots regular columns use (the sparse vector is
	// the complex one left over).
	sparse     bool
	claimedVar map[int]bool
}

// FullName returns schema.name.
func (t *Table) FullName() string { return t.Schema + "." + t.Name }

// Tables returns the user tables, sorted by schema and name, without the
// tools' support tables (see AllTables).
func (db *Database) Tables() []*Table {
	var out []*Table
	for _, t := range db.tables {
		if !t.Tool {
			out = append(out, t)
		}
	}
	return out
}

// AllTables returns every user table, tools' support tables included.
func (db *Database) AllTables() []*Table { return db.tables }

// Table finds a table by "name" or "schema.name" (case-insensitive; a
// bare name must be unique).
func (db *Database) Table(name string) (*Table, error) {
	var matches []*Table
	for _, t := range db.tables {
		if strings.EqualFold(t.FullName(), name) {
			return t, nil
		}
	}
	for _, t := range db.tables {
		if strings.EqualFold(t.Name, name) {
			matches = append(matches, t)
		}
	}
	switch len(matches) {
	case 1:
		return matches[0], nil
	case 0:
		return nil, fmt.Errorf("no user table named %q", name)
	}
	var names []string
	for _, t := range matches {
		names = append(names, t.FullName())
	}
	return nil, fmt.Errorf("table name %q is ambiguous: %s", name, strings.Join(names, ", "))
}

func (db *Database) buildTables() {
	byOwner := map[int64][]*AllocUnit{}
	for _, au := range db.allocUnits {
		byOwner[au.OwnerID] = append(byOwner[au.OwnerID], au)
	}
	rsByObj := map[int32][]*rowset{}
	for _, rs := range db.rowsets {
		if rs.idMinor <= 1 {
			rsByObj[rs.idMajor] = append(rsByObj[rs.idMajor], rs)
		}
	}
	for _, o := range db.objects {
		if o.typ != "U" || o.shipped {
			continue
		}
		t := &Table{ObjectID: o.id, Name: o.name, Schema: db.schemas[o.nsid], db: db}
		t.Tool = t.Schema == "dbo" && (o.name == "sysdiagrams" || o.name == "dtproperties")
		if t.Schema == "" {
			t.Schema = fmt.Sprintf("schema%d", o.nsid)
		}
		rss := rsByObj[o.id]
		sort.Slice(rss, func(i, j int) bool { return rss[i].numPart < rss[j].numPart })
		for _, rs := range rss {
			if rs.idMinor == 1 {
				t.Clustered = true
			}
			pt := &Partition{RowsetID: rs.id, Number: int(rs.numPart), RowsHint: rs.rcrows, Compression: rs.cmprLevel}
			for _, au := range byOwner[rs.id] {
				switch au.Type {
				case AUInRowData:
					pt.InRow = au
				case AULOBData:
					pt.LOB = au
				case AURowOverflowData:
					pt.Overflow = au
				}
			}
			t.Partitions = append(t.Partitions, pt)
		}
		db.buildColumns(t)
		t.markSparse()
		db.tables = append(db.tables, t)
	}
	sort.Slice(db.tables, func(i, j int) bool {
		a, b := db.tables[i], db.tables[j]
		if a.Schema != b.Schema {
			return a.Schema < b.Schema
		}
		return a.Name < b.Name
	})
}

// Column status bits (syscolpars.status).
const (
	colNotNull  = 0x1
	colIdentity = 0x4
	colComputed = 0x10
	colSparse   = 0x1000000
)

func (db *Database) buildColumns(t *Table) {
	for _, cp := range db.colpars[t.ObjectID] {
		c := &Column{
			ID: int(cp.colid), Name: cp.name, TypeID: cp.xtype, MaxLength: int(cp.length),
			Precision: int(cp.prec), Scale: int(cp.scale), Collation: cp.collation,
			Nullable: cp.status&colNotNull == 0, Identity: cp.status&colIdentity != 0,
			Computed: cp.status&colComputed != 0, Sparse: cp.status&colSparse != 0,
		}
		c.TypeName = TypeName(c.TypeID)
		if n, ok := db.types[cp.utype]; ok && cp.utype > 256 {
			c.TypeName = n
		}
		switch c.TypeID {
		case TypeImage, TypeText, TypeNText, TypeXML:
			c.MaxLength = -1
		}
		if isCharType(c.TypeID) {
			c.CodePage = CodePage(c.Collation)
			if db.opts.CodePage != 0 {
				c.CodePage = db.opts.CodePage
			}
		}
		t.Columns = append(t.Columns, c)
	}
	// Physical layout from sysrscols when present (SQL Server 2008 and
	// later keep it there; it is the truth after ALTER TABLE).
	var rs []rscol
	if len(t.Partitions) > 0 {
		rs = db.rscols[t.Partitions[0].RowsetID]
	}
	if len(rs) > 0 {
		byID := map[int]*Column{}
		for _, c := range t.Columns {
			byID[c.ID] = c
		}
		for _, r := range rs {
			if r.status&2 != 0 { // dropped
				continue
			}
			c := byID[int(r.rscolid)]
			if c == nil {
				continue
			}
			c.stored = true
			c.leafOffset = int(r.offset)
			c.nullBit = int(r.nullbit)
			c.bitPos = int(r.bitpos & 0xff)
			if r.status&0x100 != 0 {
				c.Sparse = true
			}
		}
		return
	}
	db.deriveLayout(t)
}

// deriveLayout computes the physical column layout when sysrscols does not
// hold it (SQL Server 2005 files). Rowsets created by SQL Server 2005 and
// later order the columns as the clustered index does: the uniquifier
// (non-unique clustered index), then the key columns in key order, then
// the rest by column id. Rowsets carried over from SQL Server 2000 keep
// column-id order, with the uniquifier as the first variable column.
// Fixed-length columns fill the fixed part in that order, variable-length
// ones take variable slots in that order, and bit columns share bytes.
func (db *Database) deriveLayout(t *Table) {
	var stored []*Column
	for _, c := range t.Columns {
		if !c.Computed && !c.Sparse {
			stored = append(stored, c)
		}
	}
	uniquifier := false
	legacy := false
	if t.Clustered {
		if st, ok := db.idxstats[[2]int32{t.ObjectID, 1}]; ok && st.status&0x8 == 0 {
			uniquifier = true
		}
		if len(t.Partitions) > 0 && t.Partitions[0].RowsetID < 1<<56 {
			legacy = true
		}
		if !legacy {
			var keys []idxcol
			for _, ic := range db.idxcols[t.ObjectID] {
				if ic.idx == 1 && ic.keyOrd > 0 {
					keys = append(keys, ic)
				}
			}
			sort.Slice(keys, func(i, j int) bool { return keys[i].keyOrd < keys[j].keyOrd })
			byID := map[int]*Column{}
			for _, c := range stored {
				byID[c.ID] = c
			}
			var ordered []*Column
			inKey := map[*Column]bool{}
			for _, k := range keys {
				if c := byID[int(k.colid)]; c != nil && !inKey[c] {
					ordered = append(ordered, c)
					inKey[c] = true
				}
			}
			for _, c := range stored {
				if !inKey[c] {
					ordered = append(ordered, c)
				}
			}
			stored = ordered
		}
	}
	off := 4
	varIdx := 0
	nb := 0
	if uniquifier {
		varIdx++ // the uniquifier takes the first variable slot
		if !legacy {
			nb++ // and, in 2005+ rowsets, the first null bit
		}
	}
	bitCount := 0
	bitByte := 0
	for _, c := range stored {
		c.stored = true
		nb++
		c.nullBit = nb
		if c.TypeID == TypeBit {
			if bitCount%8 == 0 {
				bitByte = off
				off++
			}
			c.leafOffset = bitByte
			c.bitPos = bitCount % 8
			bitCount++
			continue
		}
		if n := fixedSize(c.TypeID, c.MaxLength, c.Precision, c.Scale); n > 0 {
			c.leafOffset = off
			off += n
			continue
		}
		varIdx++
		c.leafOffset = -varIdx
	}
}

func isCharType(x uint8) bool {
	switch x {
	case TypeChar, TypeVarChar, TypeText, TypeNChar, TypeNVarChar, TypeNText:
		return true
	}
	return false
}

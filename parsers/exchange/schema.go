package exchange

import (
	"regexp"
	"sort"
	"strconv"
)

// The Exchange 2010-2019 store schema, as a table: each logical field names
// the physical column(s) that may hold it, first match wins.
//
// Where this comes from: the table and column names are those the store
// declares for its Mailbox, Folder, Message and Attachment tables (the
// Microsoft.Exchange.Server.Storage LogicalDataModel / StoreCommonServices
// classes MailboxTable, FolderTable, MessageTable and AttachmentTable, as
// public decompilations show them), and match the column names forensic
// tools (libesedb's Exchange notes, dissect) list for Message_<N> tables.
// That per-mailbox tables are named <Table>_<MailboxNumber> in Exchange
// 2013+ (and that one shared table keyed by MailboxPartitionNumber is
// accepted too) is inferred from the same sources. None of it could be
// checked against a real Exchange database here.
var schema = map[string]map[string][]string{
	"Mailbox": {
		"number":    {"MailboxNumber"},
		"partition": {"MailboxPartitionNumber"},
		"guid":      {"MailboxGuid"},
		"name":      {"DisplayName", "MailboxOwnerDisplayName", "SimpleDisplayName"},
		"owner":     {"MailboxOwnerDisplayName", "DisplayName"},
		"legacyDN":  {"OwnerLegacyDN"},
		"messages":  {"MessageCount"},
		"size":      {"MessageSize"},
		"deleted":   {"DeletedOn"},
	},
	"Folder": {
		"partition": {"MailboxPartitionNumber", "MailboxNumber"},
		"id":        {"FolderId"},
		"parent":    {"ParentFolderId"},
		"name":      {"DisplayName"},
		"messages":  {"MessageCount"},
		"class":     {"ContainerClass"},
		"special":   {"SpecialFolderNumber"},
		"blob":      {"PropertyBlob"},
	},
	"Message": {
		"partition":     {"MailboxPartitionNumber", "MailboxNumber"},
		"doc":           {"MessageDocumentId"},
		"folder":        {"FolderId"},
		"received":      {"DateReceived"},
		"sent":          {"DateSent"},
		"created":       {"DateCreated", "LastModificationTime"},
		"subjectPrefix": {"SubjectPrefix"},
		"displayTo":     {"DisplayTo"},
		"size":          {"Size"},
		"blob":          {"PropertyBlob"},
		"offpage":       {"OffPagePropertyBlob"},
		"large":         {"LargePropertyValueBlob"},
		"body":          {"NativeBody"},
		"bodyType":      {"BodyType"},
		"codepage":      {"CodePage"},
		"recipients":    {"RecipientList"},
		"subobjects":    {"SubobjectsBlob"},
		"hasAttach":     {"HasAttachments"},
		"class":         {"MessageClass"},
		"hidden":        {"IsHidden"},
	},
	"Attachment": {
		"partition":   {"MailboxPartitionNumber", "MailboxNumber"},
		"inid":        {"Inid"},
		"name":        {"Name"},
		"contentType": {"ContentType"},
		"contentId":   {"ContentId"},
		"content":     {"Content"},
		"method":      {"AttachmentMethod"},
		"size":        {"Size"},
		"blob":        {"PropertyBlob"},
		"large":       {"LargePropertyValueBlob"},
	},
}

// required lists the fields without which a table is not the store's.
var required = map[string][]string{
	"Mailbox":    {"number"},
	"Folder":     {"id"},
	"Message":    {"doc", "folder"},
	"Attachment": {"inid"},
}

// tableMap is one physical table bound to its logical kind.
type tableMap struct {
	table   string
	kind    string
	mailbox int64 // the <N> of <Kind>_<N>; -1 for a shared table
	cols    map[string]string
}

var tableName = regexp.MustCompile(`^(Mailbox|Folder|Message|Attachment)(?:_(\d+))?$`)

// columnLister is implemented by sources that can list a table's columns;
// mapping then checks the required columns up front.
type columnLister interface {
	Columns(table string) []string
}

// bind maps every store table of src to its kind.
func bind(src Source) map[string][]*tableMap {
	out := map[string][]*tableMap{}
	for _, name := range src.TableNames() {
		m := tableName.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		tm := &tableMap{table: name, kind: m[1], mailbox: -1, cols: map[string]string{}}
		if m[2] != "" {
			n, err := strconv.ParseInt(m[2], 10, 64)
			if err != nil {
				continue
			}
			tm.mailbox = n
		}
		var have map[string]bool
		if cl, ok := src.(columnLister); ok {
			have = map[string]bool{}
			for _, c := range cl.Columns(name) {
				have[c] = true
			}
		}
		for field, cands := range schema[tm.kind] {
			for _, c := range cands {
				if have == nil || have[c] {
					tm.cols[field] = c
					break
				}
			}
		}
		ok := true
		for _, f := range required[tm.kind] {
			if tm.cols[f] == "" {
				ok = false
			}
		}
		if ok {
			out[tm.kind] = append(out[tm.kind], tm)
		}
	}
	for _, l := range out {
		sort.Slice(l, func(i, j int) bool { return l[i].mailbox < l[j].mailbox })
	}
	return out
}

// tablesFor returns the tables of a kind that may hold rows of mailbox n:
// its own <Kind>_<n> table, else the shared <Kind> table.
func tablesFor(tables map[string][]*tableMap, kind string, n int64) (own *tableMap, shared *tableMap) {
	for _, t := range tables[kind] {
		switch t.mailbox {
		case n:
			own = t
		case -1:
			shared = t
		}
	}
	return own, shared
}

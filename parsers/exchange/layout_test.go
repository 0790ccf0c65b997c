package exchange

import (
	"context"
	"encoding/hex"
	"reflect"
	"sort"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/mapi"
)

// NewLayout gives every folder and message a path unique (ignoring case)
// in its directory, whatever collides: sibling folders, messages with the
// same date and subject, a message named like a subfolder, and messages
// whose folder is missing, which are kept under UnknownFolder.
func TestLayoutNamesEverythingOnce(t *testing.T) {
	name := SampleT1.UTC().Format("2006-01-02 1504")
	s := &MemSource{}
	s.Add("Mailbox", map[string]any{"MailboxNumber": int64(1), "DisplayName": "Ann"})
	s.Add("Mailbox", map[string]any{"MailboxNumber": int64(2), "DisplayName": "ann"})
	for _, f := range []struct {
		id, parent byte
		name       string
	}{{1, 0, ""}, {2, 1, "Inbox"}, {3, 1, "INBOX"}, {4, 2, name + " Hello.eml"}, {5, 1, UnknownFolder}} {
		row := map[string]any{"FolderId": fid(f.id), "DisplayName": f.name}
		if f.parent != 0 {
			row["ParentFolderId"] = fid(f.parent)
		}
		s.Add("Folder_1", row)
	}
	msg := func(doc int64, folder byte, subject string) {
		s.Add("Message_1", map[string]any{"MessageDocumentId": doc, "FolderId": fid(folder), "DateReceived": SampleT1,
			"PropertyBlob": blob(str(mapi.PidTagSubject, subject))})
	}
	msg(10, 2, "Hello") // the name of a subfolder of Inbox
	msg(11, 3, "Twice")
	msg(12, 3, "twice")
	msg(13, 9, "Lost") // folder 9 does not exist
	msg(14, 2, "Once")
	ctx := context.Background()
	db, err := OpenSource(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	boxes, err := db.Mailboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := MailboxDirs(boxes), []string{"Ann", "ann [2]"}; !reflect.DeepEqual(got, want) {
		t.Errorf("mailbox dirs %q, want %q", got, want)
	}
	folders, byFolder, err := boxes[0].MessagesByFolder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := NewLayout(folders, byFolder)
	wantDirs := []string{"Inbox", "INBOX [" + fid3() + "]", "Inbox/" + name + " Hello.eml", UnknownFolder, UnknownFolder + " [messages]"}
	sort.Strings(wantDirs)
	gotDirs := append([]string(nil), l.Dirs...)
	sort.Strings(gotDirs)
	if !reflect.DeepEqual(gotDirs, wantDirs) {
		t.Errorf("dirs %q, want %q", gotDirs, wantDirs)
	}
	wantPaths := map[int64]string{
		10: "Inbox/" + name + " Hello [10].eml",
		11: "INBOX [" + fid3() + "]/" + name + " Twice [11].eml",
		12: "INBOX [" + fid3() + "]/" + name + " twice [12].eml",
		13: UnknownFolder + " [messages]/" + name + " Lost.eml",
		14: "Inbox/" + name + " Once.eml",
	}
	if !reflect.DeepEqual(l.Paths, wantPaths) {
		t.Errorf("paths %v, want %v", l.Paths, wantPaths)
	}
	for p, m := range l.Files {
		if l.Paths[m.DocID] != p {
			t.Errorf("Files[%q] is message %d, whose path is %q", p, m.DocID, l.Paths[m.DocID])
		}
	}
}

// fid3 is the hex folder id of folder 3, as Folder.ID spells it.
func fid3() string { return hex.EncodeToString(fid(3)) }

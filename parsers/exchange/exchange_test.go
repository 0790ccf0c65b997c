package exchange

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"reflect"
	"strings"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/mapi"
	"github.com/rewind-cdp/rewind/test/testenv"
)

func TestMailboxesAndFolders(t *testing.T) {
	ctx := context.Background()
	db, err := OpenSource(ctx, SampleStore())
	if err != nil {
		t.Fatal(err)
	}
	boxes, err := db.Mailboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(boxes) != 2 || boxes[0].Name() != "Alice Smith" || boxes[1].Name() != "Bob Jones" || boxes[0].MessageCount != 3 {
		t.Fatalf("mailboxes %+v %+v", boxes[0], boxes[1])
	}
	if boxes[0].GUID != "04030201-0605-0807-090a-0b0c0d0e0f10" {
		t.Errorf("guid %s", boxes[0].GUID)
	}
	root, err := boxes[0].FolderTree(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	var walk func(f *Folder)
	walk = func(f *Folder) {
		paths = append(paths, strings.Join(f.Path(), "/"))
		for _, c := range f.Children {
			walk(c)
		}
	}
	walk(root)
	want := []string{"", "Top of Information Store", "Top of Information Store/Inbox",
		"Top of Information Store/Inbox/Projects/2026", "Top of Information Store/Sent Items"}
	if !reflect.DeepEqual(paths, want) {
		t.Fatalf("folder paths %q", paths)
	}
	inbox := root.Children[0].Children[0]
	msgs, err := inbox.Messages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].Subject != "Budget 2027 – draft" || !msgs[0].Date().Equal(SampleT1) || msgs[0].From.Email != "zoe@example.com" {
		t.Fatalf("inbox messages %+v", msgs)
	}
	if n := msgs[0].FileName(); n != "2026-10-05 0830 Budget 2027 – draft.eml" {
		t.Errorf("file name %q", n)
	}
	if got := len(msgs[0].To) + len(msgs[0].Cc); got != 3 || msgs[0].Cc[0].Email != "dave@example.net" {
		t.Errorf("recipients %+v %+v", msgs[0].To, msgs[0].Cc)
	}
	// Mailbox 102's tables are its own.
	bob, err := db.Mailbox(ctx, "bob jones")
	if err != nil {
		t.Fatal(err)
	}
	var subjects []string
	if err := bob.Messages(ctx, func(m *Message) error { subjects = append(subjects, m.Subject); return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(subjects, []string{"Bob's only message"}) {
		t.Errorf("bob's messages %q", subjects)
	}
}

// parsedMail is what a MIME reader gets back from an .eml file.
type parsedMail struct {
	hdr         mail.Header
	text, html  string
	attachments map[string][]byte
}

func readEML(t *testing.T, raw []byte) parsedMail {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("net/mail: %v", err)
	}
	p := parsedMail{hdr: msg.Header, attachments: map[string][]byte{}}
	var walk func(h func(string) string, body io.Reader)
	walk = func(h func(string) string, body io.Reader) {
		mt, params, err := mime.ParseMediaType(h("Content-Type"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(mt, "multipart/") {
			mr := multipart.NewReader(body, params["boundary"])
			for {
				part, err := mr.NextRawPart()
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				walk(part.Header.Get, part)
			}
		}
		switch strings.ToLower(h("Content-Transfer-Encoding")) {
		case "base64":
			body = base64.NewDecoder(base64.StdEncoding, body)
		case "quoted-printable":
			body = quotedprintable.NewReader(body)
		}
		data, err := io.ReadAll(body)
		if err != nil {
			t.Fatal(err)
		}
		if d := h("Content-Disposition"); d != "" {
			_, dp, _ := mime.ParseMediaType(d)
			p.attachments[dp["filename"]] = data
			return
		}
		if mt == "text/html" {
			p.html = string(data)
		} else {
			p.text = string(data)
		}
	}
	walk(msg.Header.Get, msg.Body)
	return p
}

func TestItemsToEML(t *testing.T) {
	ctx := context.Background()
	db, err := OpenSource(ctx, SampleStore())
	if err != nil {
		t.Fatal(err)
	}
	alice, err := db.Mailbox(ctx, "101")
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64][]byte{}
	err = alice.Items(ctx, func(m *Message) bool { return !m.Hidden }, func(it *Item) error {
		if len(it.Warnings) > 0 {
			t.Errorf("message %d: warnings %q", it.DocID, it.Warnings)
		}
		var buf bytes.Buffer
		if err := it.WriteEML(&buf); err != nil {
			return err
		}
		got[it.DocID] = buf.Bytes()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d messages exported, want 3 (the hidden one skipped)", len(got))
	}

	p := readEML(t, got[1])
	from, _ := mail.ParseAddress(p.hdr.Get("From"))
	to, _ := p.hdr.AddressList("To")
	cc, _ := p.hdr.AddressList("Cc")
	subj, _ := new(mime.WordDecoder).DecodeHeader(p.hdr.Get("Subject"))
	date, _ := p.hdr.Date()
	if from == nil || from.Name != "Zoë Müller" || from.Address != "zoe@example.com" || len(to) != 2 || to[1].Address != "carol@example.org" ||
		len(cc) != 1 || cc[0].Name != "Dave" || subj != "Budget 2027 – draft" || !date.Equal(SampleT1) || p.hdr.Get("Message-Id") != "<budget.1@example.com>" {
		t.Errorf("message 1 headers: %v", p.hdr)
	}
	if p.html != "<html><body><p>Numbers attached.</p></body></html>" {
		t.Errorf("message 1 html %q", p.html)
	}
	if !bytes.Equal(p.attachments["budget.pdf"], SamplePDF) || string(p.attachments["notes été.txt"]) != "line 1\nline 2\n" || len(p.attachments) != 2 {
		t.Errorf("message 1 attachments: %d", len(p.attachments))
	}
	if f := p.hdr.Get("X-Rewind-Folder"); f != "Top of Information Store/Inbox" {
		t.Errorf("folder header %q", f)
	}

	p = readEML(t, got[2])
	subj, _ = new(mime.WordDecoder).DecodeHeader(p.hdr.Get("Subject"))
	if subj != "RE: Project plan" || p.text != "hello world" || p.hdr.Get("Message-Id") != "<plan.2@example.com>" {
		t.Errorf("message 2: subject %q text %q id %q", subj, p.text, p.hdr.Get("Message-Id"))
	}

	p = readEML(t, got[4])
	subj, _ = new(mime.WordDecoder).DecodeHeader(p.hdr.Get("Subject"))
	date, _ = p.hdr.Date()
	if subj != "Réunion: ordre du jour" || p.text != "Bonjour,\r\nà demain.\r\n" || !date.Equal(SampleT3) || !strings.Contains(p.hdr.Get("To"), "Frank") {
		t.Errorf("message 4: subject %q text %q date %v to %q", subj, p.text, date, p.hdr.Get("To"))
	}

	// Message.WriteEML (the mount's path) gives the same bytes as Items.
	root, _ := alice.FolderTree(ctx)
	msgs, _ := root.Children[0].Children[0].Messages(ctx)
	var one bytes.Buffer
	if err := msgs[0].WriteEML(ctx, &one); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(one.Bytes(), got[1]) {
		t.Error("Message.WriteEML and Items disagree")
	}
}

func TestSharedTables(t *testing.T) {
	// Exchange 2010 style: one Folder and one Message table for all
	// mailboxes, split by MailboxPartitionNumber.
	s := &MemSource{}
	s.Add("Mailbox", map[string]any{"MailboxNumber": int64(1), "DisplayName": "A"})
	s.Add("Mailbox", map[string]any{"MailboxNumber": int64(2), "DisplayName": "B"})
	for _, mb := range []int64{1, 2} {
		s.Add("Folder", map[string]any{"MailboxPartitionNumber": mb, "FolderId": fid(1), "DisplayName": ""})
		s.Add("Folder", map[string]any{"MailboxPartitionNumber": mb, "FolderId": fid(2), "ParentFolderId": fid(1), "DisplayName": "Inbox"})
		s.Add("Message", map[string]any{"MailboxPartitionNumber": mb, "MessageDocumentId": int64(1), "FolderId": fid(2),
			"PropertyBlob": blob(str(mapi.PidTagSubject, "for "+string(rune('A'+mb-1))))})
	}
	ctx := context.Background()
	db, err := OpenSource(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	b, err := db.Mailbox(ctx, "B")
	if err != nil {
		t.Fatal(err)
	}
	var subj []string
	_ = b.Messages(ctx, func(m *Message) error {
		subj = append(subj, m.Subject+"@"+strings.Join(m.Folder.Path(), "/"))
		return nil
	})
	if !reflect.DeepEqual(subj, []string{"for B@Inbox"}) {
		t.Fatalf("%q", subj)
	}
}

func TestNotExchange(t *testing.T) {
	s := &MemSource{}
	s.Add("SruDbIdMapTable", map[string]any{"IdType": int64(1)})
	if _, err := OpenSource(context.Background(), s); !errors.Is(err, ErrNotExchange) {
		t.Fatalf("err = %v", err)
	}
	// A real ESE database written by Windows is not an Exchange one.
	b := testenv.FixtureBytes(t, "ese/win10_SRUDB.dat")
	if _, err := Open(context.Background(), bytes.NewReader(b), int64(len(b))); !errors.Is(err, ErrNotExchange) {
		t.Fatalf("SRUDB.dat: err = %v", err)
	}
}

func TestColumnErrorsSurface(t *testing.T) {
	s := SampleStore()
	s.Tables["Message_101"].Rows[0]["PropertyBlob"] = errors.New("page 77: checksum mismatch")
	ctx := context.Background()
	db, _ := OpenSource(ctx, s)
	mb, _ := db.Mailbox(ctx, "101")
	err := mb.Messages(ctx, func(*Message) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") || !strings.Contains(err.Error(), "Message_101.PropertyBlob") {
		t.Fatalf("err = %v", err)
	}
}

func TestFileNames(t *testing.T) {
	a := &Message{DocID: 1, Subject: `a/b: "c"?`, Received: SampleT1}
	b := &Message{DocID: 2, Subject: `a/b: "c"?`, Received: SampleT1}
	c := &Message{DocID: 3, Subject: " \x01..", Received: SampleT1}
	names := FileNames([]*Message{a, b, c})
	if names[a] != "2026-10-05 0830 a_b_ _c__ [1].eml" || names[b] != "2026-10-05 0830 a_b_ _c__ [2].eml" || names[c] != "2026-10-05 0830 (no subject).eml" {
		t.Fatalf("%q %q %q", names[a], names[b], names[c])
	}
	if SafeName("..", 10) != "" || SafeName("con.txt. ", 10) != "con.txt" {
		t.Fatal("SafeName")
	}
}

func TestBodySniffing(t *testing.T) {
	cases := []struct {
		native     []byte
		bodyType   int64
		text, html string
	}{
		{[]byte("<html><body>x</body></html>"), bodyPlain, "", "<html><body>x</body></html>"},
		{rtfHello, bodyPlain, "hello world", ""},
		{[]byte("just text"), bodyRTF, "just text", ""},
		{utf16le("héllo"), 0, "héllo", ""},
		{[]byte("caf\xe9"), bodyPlain, "café", ""}, // Windows-1252
	}
	for _, c := range cases {
		b := decodeBody(nil, c.native, c.bodyType, 0)
		if b.text != c.text || b.html != c.html {
			t.Errorf("%q (type %d): text %q html %q", c.native, c.bodyType, b.text, b.html)
		}
	}
	// Bodies kept in the property blob (Exchange 2010) win over NativeBody.
	props := []mapi.Property{
		str(mapi.PidTagBody, "blob text"),
		{Tag: mapi.Tag(mapi.PidTagHtml, mapi.PtypBinary), Value: []byte("<p>blob</p>")},
	}
	if b := decodeBody(props, []byte("native"), bodyPlain, 65001); b.text != "blob text" || b.html != "<p>blob</p>" {
		t.Errorf("blob bodies: %q %q", b.text, b.html)
	}
}

func FuzzBody(f *testing.F) {
	f.Add(rtfHello, int64(2))
	f.Add([]byte("<html>x</html>"), int64(3))
	f.Add([]byte{0x18, 0x10, 0, 'a', 'b'}, int64(1))
	f.Fuzz(func(t *testing.T, b []byte, typ int64) {
		_ = decodeBody(nil, b, typ, 0)
		_, _, _ = recipients([][]byte{b})
		_, _ = mapi.ParseSubobjects(b)
	})
}

func TestMergeProps(t *testing.T) {
	on := blob(str(mapi.PidTagSubject, "on page"), mapi.Property{Tag: mapi.Tag(mapi.PidTagBody, mapi.PtypString), Ref: true},
		mapi.Property{Tag: mapi.Tag(mapi.PidTagHtml, mapi.PtypBinary), Ref: true})
	off := blob(str(mapi.PidTagSubject, "off page"), str(mapi.PidTagBody, "body from off-page"))
	large := blob(mapi.Property{Tag: mapi.Tag(mapi.PidTagHtml, mapi.PtypBinary), Value: []byte("<p>large</p>")})
	props := mergeProps(on, off, large)
	if s := propString(props, mapi.PidTagSubject); s != "on page" {
		t.Errorf("subject %q", s)
	}
	if s := propString(props, mapi.PidTagBody); s != "body from off-page" {
		t.Errorf("body %q", s)
	}
	if s := propString(props, mapi.PidTagHtml); s != "<p>large</p>" {
		t.Errorf("html %q", s)
	}
	if props := mergeProps(on, nil, []byte("not a blob")); propValue(props, mapi.PidTagBody) != nil {
		t.Error("an unresolved reference has a value")
	}
}

func TestMessagesByFolder(t *testing.T) {
	ctx := context.Background()
	db, _ := OpenSource(ctx, SampleStore())
	mb, _ := db.Mailbox(ctx, "101")
	folders, by, err := mb.MessagesByFolder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, f := range folders {
		for _, m := range by[f] {
			if m.Folder != f {
				t.Errorf("message %d: folder not linked", m.DocID)
			}
			got[strings.Join(f.Path(), "/")] = append(got[strings.Join(f.Path(), "/")], m.Subject)
		}
	}
	want := map[string][]string{
		"Top of Information Store/Inbox":               {"Budget 2027 – draft"},
		"Top of Information Store/Inbox/Projects/2026": {"RE: Project plan"},
		"Top of Information Store/Sent Items":          {"Réunion: ordre du jour"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q", got)
	}
}

func TestFolderCycle(t *testing.T) {
	s := &MemSource{}
	s.Add("Mailbox", map[string]any{"MailboxNumber": int64(1)})
	s.Add("Folder_1", map[string]any{"FolderId": fid(1), "ParentFolderId": fid(2), "DisplayName": "A"})
	s.Add("Folder_1", map[string]any{"FolderId": fid(2), "ParentFolderId": fid(1), "DisplayName": "B"})
	s.Add("Folder_1", map[string]any{"FolderId": fid(3), "ParentFolderId": fid(3), "DisplayName": "self"})
	s.Add("Message_1", map[string]any{"MessageDocumentId": int64(1), "FolderId": fid(1)})
	ctx := context.Background()
	db, err := OpenSource(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := db.Mailbox(ctx, "1")
	root, err := mb.FolderTree(ctx)
	if err != nil || count(root) != 2 {
		t.Fatalf("%v %v", root, err)
	}
	if mb.Name() != "mailbox-1" {
		t.Errorf("name %q", mb.Name())
	}
}

func TestPartitionTables(t *testing.T) {
	// A mailbox whose partition number differs from its number reads the
	// tables named after the partition.
	s := &MemSource{}
	s.Add("Mailbox", map[string]any{"MailboxNumber": int64(7), "MailboxPartitionNumber": int64(3), "DisplayName": "Moved"})
	s.Add("Folder_3", map[string]any{"MailboxPartitionNumber": int64(3), "FolderId": fid(1), "DisplayName": ""})
	s.Add("Message_3", map[string]any{"MailboxPartitionNumber": int64(3), "MessageDocumentId": int64(1), "FolderId": fid(1),
		"PropertyBlob": blob(str(mapi.PidTagSubject, "in partition 3"))})
	s.Add("Message_7", map[string]any{"MessageDocumentId": int64(1), "FolderId": fid(1),
		"PropertyBlob": blob(str(mapi.PidTagSubject, "wrong table"))})
	ctx := context.Background()
	db, _ := OpenSource(ctx, s)
	mb, _ := db.Mailbox(ctx, "Moved")
	var subj []string
	if err := mb.Messages(ctx, func(m *Message) error { subj = append(subj, m.Subject); return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(subj, []string{"in partition 3"}) {
		t.Fatalf("%q", subj)
	}
}

func TestSubjectOffPage(t *testing.T) {
	s := &MemSource{}
	s.Add("Mailbox", map[string]any{"MailboxNumber": int64(1)})
	s.Add("Folder_1", map[string]any{"FolderId": fid(1)})
	s.Add("Message_1", map[string]any{"MessageDocumentId": int64(1), "FolderId": fid(1),
		"PropertyBlob":        blob(str(mapi.PidTagSenderName, "Ann"), mapi.Property{Tag: mapi.Tag(mapi.PidTagSubject, mapi.PtypString), Ref: true}),
		"OffPagePropertyBlob": blob(str(mapi.PidTagSubject, strings.Repeat("long subject ", 40)))})
	ctx := context.Background()
	db, _ := OpenSource(ctx, s)
	mb, _ := db.Mailbox(ctx, "1")
	var subj string
	_ = mb.Messages(ctx, func(m *Message) error { subj = m.Subject; return nil })
	if subj != strings.Repeat("long subject ", 40) {
		t.Fatalf("subject %q", subj)
	}
}

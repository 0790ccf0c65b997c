package exchange

import (
	"bytes"
	"encoding/hex"
	"strings"
	"time"

	"github.com/rewind-cdp/rewind/parsers/mapi"
)

// SampleFolderID is the FolderId of folder n of the sample store (folder 9
// is mailbox 102's Inbox), for tests that add messages to it.
func SampleFolderID(n byte) []byte { return fid(n) }

func fid(n byte) []byte {
	b := make([]byte, 26)
	b[0], b[1] = 1, 0
	b[25] = n
	return b
}

func blob(props ...mapi.Property) []byte {
	b, err := mapi.EncodeStoreBlob(props)
	if err != nil {
		panic(err) // only fixed, encodable values are used here
	}
	return b
}

func str(id uint16, s string) mapi.Property {
	return mapi.Property{Tag: mapi.Tag(id, mapi.PtypString), Value: s}
}

func recip(typ int32, name, smtp string) []byte {
	return blob(mapi.Property{Tag: mapi.Tag(mapi.PidTagRecipientType, mapi.PtypInteger32), Value: typ},
		str(mapi.PidTagDisplayName, name), str(mapi.PidTagSmtpAddress, smtp),
		str(mapi.PidTagAddressType, "SMTP"))
}

func utf16le(s string) []byte {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r), byte(r>>8))
	}
	return b
}

// rtfHello is the compressed RTF example of [MS-OXRTFCP] 4.1.
var rtfHello, _ = hex.DecodeString(strings.Join(strings.Fields(`2d 00 00 00 2b 00 00 00 4c 5a 46 75 f1 c5 c7 a7
	03 00 0a 00 72 63 70 67 31 32 35 42 32 0a f3 20 68 65 6c 09 00 20 62 77 05 b0 6c 64 7d 0a 80 0f a0`), ""))

// Dates of the sample messages.
var (
	SampleT1 = time.Date(2026, 10, 5, 8, 30, 0, 0, time.UTC)
	SampleT2 = time.Date(2026, 10, 6, 17, 45, 0, 0, time.UTC)
	SampleT3 = time.Date(2026, 10, 7, 9, 0, 0, 0, time.UTC)
)

// SamplePDF is the content of the sample message's PDF attachment.
var SamplePDF = append([]byte("%PDF-1.4\n"), bytes.Repeat([]byte{0, 0xff, 0x80, '\r'}, 200)...)

// SampleStore builds the tables of a small Exchange 2013+ database, as the
// store's schema lays them out: two mailboxes with per-mailbox Folder_N,
// Message_N and Attachment_N tables, property blobs, recipients, HTML, RTF
// and UTF-16 bodies, attachments and a hidden item. Tests use it in place
// of a real .edb, which only Exchange can write.
func SampleStore() *MemSource {
	s := &MemSource{}
	s.Add("MSysObjects", map[string]any{"Name": "x"})
	s.Add("Mailbox", map[string]any{"MailboxNumber": int64(101), "MailboxPartitionNumber": int64(101),
		"DisplayName": "Alice Smith", "MailboxOwnerDisplayName": "Alice Smith", "MessageCount": int64(3),
		"MailboxGuid": []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}})
	s.Add("Mailbox", map[string]any{"MailboxNumber": int64(102), "MailboxPartitionNumber": int64(102),
		"DisplayName": nil, "MailboxOwnerDisplayName": "Bob Jones", "MessageCount": int64(1)})

	// Folders of mailbox 101: root > Top of Information Store > Inbox > Projects, Sent Items.
	for _, f := range []struct {
		id, parent byte
		name       string
	}{{1, 0, ""}, {2, 1, "Top of Information Store"}, {3, 2, "Inbox"}, {4, 3, "Projects/2026"}, {5, 2, "Sent Items"}} {
		row := map[string]any{"MailboxPartitionNumber": int64(101), "FolderId": fid(f.id), "DisplayName": f.name}
		if f.parent != 0 {
			row["ParentFolderId"] = fid(f.parent)
		}
		s.Add("Folder_101", row)
	}
	s.Add("Folder_102", map[string]any{"MailboxPartitionNumber": int64(102), "FolderId": fid(1), "DisplayName": ""})
	s.Add("Folder_102", map[string]any{"MailboxPartitionNumber": int64(102), "FolderId": fid(9), "ParentFolderId": fid(1), "DisplayName": "Inbox"})

	// 1: HTML body in NativeBody, recipients, two attachments.
	s.Add("Message_101", map[string]any{
		"MailboxPartitionNumber": int64(101), "MessageDocumentId": int64(1), "FolderId": fid(3),
		"DateReceived": SampleT1, "DateSent": SampleT1.Add(-time.Minute), "IsHidden": false, "HasAttachments": true,
		"MessageClass": "IPM.Note", "DisplayTo": "Bob Jones; Carol", "Size": int64(4096),
		"PropertyBlob": blob(
			str(mapi.PidTagSubject, "Budget 2027 – draft"),
			str(mapi.PidTagSenderName, "Zoë Müller"), str(mapi.PidTagSenderSmtpAddress, "zoe@example.com"),
			str(mapi.PidTagInternetMessageId, "<budget.1@example.com>")),
		"RecipientList": [][]byte{recip(1, "Bob Jones", "bob@example.com"), recip(1, "Carol", "carol@example.org"), recip(2, "Dave", "dave@example.net")},
		"NativeBody":    []byte("<html><body><p>Numbers attached.</p></body></html>"), "BodyType": int64(3), "CodePage": int64(65001),
		"SubobjectsBlob": mapi.EncodeSubobjects([]mapi.Subobject{{Child: 0, Inid: 7}, {Child: 1, Inid: 8}}),
	})
	// 2: compressed RTF body, subject from SubjectPrefix + NormalizedSubject, off-page blob.
	s.Add("Message_101", map[string]any{
		"MailboxPartitionNumber": int64(101), "MessageDocumentId": int64(2), "FolderId": fid(4),
		"DateReceived": SampleT2, "IsHidden": false, "SubjectPrefix": "RE: ",
		"PropertyBlob": blob(str(mapi.PidTagNormalizedSubject, "Project plan"),
			str(mapi.PidTagSenderName, "Bob Jones"), str(mapi.PidTagSenderSmtpAddress, "bob@example.com"),
			mapi.Property{Tag: mapi.Tag(mapi.PidTagInternetMessageId, mapi.PtypString), Ref: true}),
		"OffPagePropertyBlob": blob(str(mapi.PidTagInternetMessageId, "<plan.2@example.com>")),
		"RecipientList":       [][]byte{recip(1, "Alice Smith", "alice@example.com")},
		"NativeBody":          rtfHello, "BodyType": int64(2),
	})
	// 3: hidden (folder-associated) item: never listed.
	s.Add("Message_101", map[string]any{
		"MailboxPartitionNumber": int64(101), "MessageDocumentId": int64(3), "FolderId": fid(3),
		"IsHidden": true, "MessageClass": "IPM.Configuration.OWA.UserOptions",
		"PropertyBlob": blob(str(mapi.PidTagSubject, "config")),
	})
	// 4: UTF-16 plain text body, non-ASCII subject, no recipient table.
	s.Add("Message_101", map[string]any{
		"MailboxPartitionNumber": int64(101), "MessageDocumentId": int64(4), "FolderId": fid(5),
		"DateSent": SampleT3, "DisplayTo": "Frank",
		"PropertyBlob": blob(str(mapi.PidTagSubject, "Réunion: ordre du jour"),
			str(mapi.PidTagSenderName, "Alice Smith"), str(mapi.PidTagSenderSmtpAddress, "alice@example.com")),
		"NativeBody": utf16le("Bonjour,\r\nà demain.\r\n"), "BodyType": int64(1),
	})
	s.Add("Attachment_101", map[string]any{"MailboxPartitionNumber": int64(101), "Inid": int64(8),
		"Name": "notes été.txt", "Content": []byte("line 1\nline 2\n")})
	s.Add("Attachment_101", map[string]any{"MailboxPartitionNumber": int64(101), "Inid": int64(7),
		"Name": "budget.pdf", "ContentType": "application/pdf", "Content": SamplePDF})
	s.Add("Attachment_101", map[string]any{"MailboxPartitionNumber": int64(101), "Inid": int64(99),
		"Name": "orphan.bin", "Content": []byte{1}})

	s.Add("Message_102", map[string]any{
		"MailboxPartitionNumber": int64(102), "MessageDocumentId": int64(1), "FolderId": fid(9),
		"DateReceived": SampleT1, "PropertyBlob": blob(str(mapi.PidTagSubject, "Bob's only message")),
		"NativeBody": []byte("hi"), "BodyType": int64(1),
	})
	return s
}

package exchange

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rewind-cdp/rewind/parsers/eml"
	"github.com/rewind-cdp/rewind/parsers/mapi"
)

// Message is the summary of one message: what listings and searches need.
type Message struct {
	DocID          int64  // MessageDocumentId, unique in the mailbox
	FolderID       string // hex of FolderId
	Folder         *Folder
	Received       time.Time // DateReceived
	Sent           time.Time // DateSent
	Created        time.Time
	Subject        string
	From           eml.Address
	To, Cc, Bcc    []eml.Address
	DisplayTo      string // the names the store keeps for listings
	Size           int64
	HasAttachments bool
	Class          string // MessageClass, e.g. IPM.Note
	Hidden         bool   // associated (FAI) contents: rules, views, settings
	Mailbox        *Mailbox
}

// Date is when the message arrived, else when it was sent or created.
func (m *Message) Date() time.Time {
	for _, t := range []time.Time{m.Received, m.Sent, m.Created} {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}

// Item is a fully loaded message.
type Item struct {
	*Message
	MessageID   string
	InReplyTo   string
	Text, HTML  string
	RTF         []byte // the decompressed RTF body when the message has one
	Attachments []eml.Attachment
	Props       []mapi.Property // every property of the message's blobs
	// Warnings lists what could not be decoded (the message is still
	// written with what could).
	Warnings []string

	subobjects []mapi.Subobject
}

// Messages lists the normal (not hidden) messages of the folder.
func (f *Folder) Messages(ctx context.Context) ([]*Message, error) {
	var out []*Message
	err := f.Mailbox.scanMessages(ctx, func(m *Message, _ *row) error {
		if m.FolderID == f.ID && !m.Hidden {
			m.Folder = f
			out = append(out, m)
		}
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Date().Before(out[j].Date()) })
	return out, err
}

// MessagesByFolder returns the mailbox's folders (linked into a tree, as
// Folders does) and the normal (not hidden) messages of each, oldest
// first, from one pass over the message table: what a file system view of
// the whole mailbox needs. Messages whose folder is not in the folder
// table are listed under the nil folder.
func (m *Mailbox) MessagesByFolder(ctx context.Context) ([]*Folder, map[*Folder][]*Message, error) {
	folders, err := m.Folders(ctx)
	if err != nil {
		return nil, nil, err
	}
	byID := map[string]*Folder{}
	for _, f := range folders {
		byID[f.ID] = f
	}
	out := map[*Folder][]*Message{}
	err = m.scanMessages(ctx, func(msg *Message, _ *row) error {
		if !msg.Hidden {
			f := byID[msg.FolderID]
			msg.Folder = f
			out[f] = append(out[f], msg)
		}
		return nil
	})
	for _, l := range out {
		sort.SliceStable(l, func(i, j int) bool { return l[i].Date().Before(l[j].Date()) })
	}
	return folders, out, err
}

// Messages calls fn for every message of the mailbox with its Folder set
// (hidden messages included; check Hidden).
func (m *Mailbox) Messages(ctx context.Context, fn func(*Message) error) error {
	folders, err := m.Folders(ctx)
	if err != nil {
		return err
	}
	byID := map[string]*Folder{}
	for _, f := range folders {
		byID[f.ID] = f
	}
	return m.scanMessages(ctx, func(msg *Message, _ *row) error {
		msg.Folder = byID[msg.FolderID]
		return fn(msg)
	})
}

func (m *Mailbox) scanMessages(ctx context.Context, fn func(*Message, *row) error) error {
	return m.scan(ctx, "Message", func(rw *row) error {
		msg, _ := summary(rw, m)
		return fn(msg, rw)
	})
}

// summary reads the listing fields of a message row, and returns the
// merged properties of its blobs.
func summary(rw *row, mb *Mailbox) (*Message, []mapi.Property) {
	return summaryWith(rw, mb, false)
}

// summaryWith reads the listing fields; with full set (or when the
// on-page blob lacks what a listing shows) it also reads the off-page and
// large-value blobs, which may be long values stored apart from the row.
func summaryWith(rw *row, mb *Mailbox, full bool) (*Message, []mapi.Property) {
	msg := &Message{Mailbox: mb, FolderID: hex.EncodeToString(rw.bytes("folder")),
		Received: rw.time("received"), Sent: rw.time("sent"), Created: rw.time("created"),
		DisplayTo: rw.str("displayTo"), HasAttachments: rw.bool("hasAttach"),
		Class: rw.str("class"), Hidden: rw.bool("hidden")}
	msg.DocID, _ = rw.int("doc")
	msg.Size, _ = rw.int("size")
	onPage := rw.bytes("blob")
	props := mergeProps(onPage, nil, nil)
	if full || !listable(props) {
		props = mergeProps(onPage, rw.bytes("offpage"), rw.bytes("large"))
	}
	if s, ok := propValue(props, mapi.PidTagSubject).(string); ok {
		msg.Subject = s
	} else {
		norm, _ := propValue(props, mapi.PidTagNormalizedSubject).(string)
		msg.Subject = rw.str("subjectPrefix") + norm
	}
	msg.From = sender(props)
	if msg.Received.IsZero() {
		msg.Received, _ = propValue(props, mapi.PidTagMessageDeliveryTime).(time.Time)
	}
	if msg.Sent.IsZero() {
		msg.Sent, _ = propValue(props, mapi.PidTagClientSubmitTime).(time.Time)
	}
	if msg.DisplayTo == "" {
		msg.DisplayTo, _ = propValue(props, mapi.PidTagDisplayTo).(string)
	}
	msg.To, msg.Cc, msg.Bcc = recipients(rw.multiBytes("recipients"))
	if len(msg.To)+len(msg.Cc)+len(msg.Bcc) == 0 {
		// Without a recipient table, keep the display names the store has.
		msg.To = namesOnly(msg.DisplayTo)
		cc, _ := propValue(props, mapi.PidTagDisplayCc).(string)
		msg.Cc = namesOnly(cc)
	}
	return msg, props
}

// listable reports whether the on-page properties hold the subject and
// the sender a listing shows.
func listable(props []mapi.Property) bool {
	subj := propValue(props, mapi.PidTagSubject) != nil || propValue(props, mapi.PidTagNormalizedSubject) != nil
	from := propValue(props, mapi.PidTagSenderName) != nil || propValue(props, mapi.PidTagSentRepresentingName) != nil
	return subj && from
}

// mergeProps joins the on-page and off-page property blobs; on-page
// values win, references resolve to the off-page value. LargePropertyValueBlob
// is read the same way when it holds a property blob (inferred: the store
// keeps there values too large for the row, and references them from the
// on-page blob).
func mergeProps(onPage, offPage, large []byte) []mapi.Property {
	off, _ := mapi.ParseStoreBlob(offPage)
	if mapi.IsStoreBlob(large) {
		if lp, err := mapi.ParseStoreBlob(large); err == nil {
			off = append(lp, off...)
		}
	}
	on, _ := mapi.ParseStoreBlob(onPage)
	byID := map[uint16]int{}
	out := append([]mapi.Property(nil), off...)
	for i, p := range out {
		byID[p.Tag.ID()] = i
	}
	for _, p := range on {
		if i, ok := byID[p.Tag.ID()]; ok {
			if !p.Ref {
				out[i] = p
			}
			continue
		}
		byID[p.Tag.ID()] = len(out)
		out = append(out, p)
	}
	return out
}

// propValue returns the value of property id, or nil.
func propValue(props []mapi.Property, id uint16) any {
	for _, p := range props {
		if p.Tag.ID() == id && !p.Ref {
			return p.Value
		}
	}
	return nil
}

func propString(props []mapi.Property, ids ...uint16) string {
	for _, id := range ids {
		switch v := propValue(props, id).(type) {
		case string:
			if v != "" {
				return v
			}
		case []byte:
			if len(v) > 0 {
				return string(v)
			}
		}
	}
	return ""
}

func sender(props []mapi.Property) eml.Address {
	a := eml.Address{
		Name:  propString(props, mapi.PidTagSentRepresentingName, mapi.PidTagSenderName),
		Email: propString(props, mapi.PidTagSentRepresentingSmtpAddress, mapi.PidTagSenderSmtpAddress),
	}
	if a.Email == "" {
		a.Email = propString(props, mapi.PidTagSentRepresentingEmail, mapi.PidTagSenderEmailAddress)
	}
	return a
}

// recipients decodes the RecipientList column: one property blob per
// recipient (inferred: the column is a multi-valued binary the store
// fills with the same blob format as PropertyBlob), each with
// PidTagRecipientType (1 To, 2 Cc, 3 Bcc per [MS-OXOMSG]) and the
// recipient's names and addresses.
func recipients(list [][]byte) (to, cc, bcc []eml.Address) {
	for _, b := range list {
		if i := indexMagic(b); i > 0 {
			b = b[i:]
		}
		props, err := mapi.ParseStoreBlob(b)
		if err != nil || len(props) == 0 {
			continue
		}
		a := eml.Address{Name: propString(props, mapi.PidTagDisplayName),
			Email: propString(props, mapi.PidTagSmtpAddress, mapi.PidTagEmailAddress)}
		var typ int64
		switch v := propValue(props, mapi.PidTagRecipientType).(type) {
		case int32:
			typ = int64(v)
		case int16:
			typ = int64(v)
		case int64:
			typ = v
		}
		switch typ & 0xF {
		case 2:
			cc = append(cc, a)
		case 3:
			bcc = append(bcc, a)
		default:
			to = append(to, a)
		}
	}
	return to, cc, bcc
}

// indexMagic finds a property blob's magic near the start of b (a
// recipient entry may carry a short header of its own).
func indexMagic(b []byte) int {
	for i := 0; i+8 <= len(b) && i < 64; i++ {
		if mapi.IsStoreBlob(b[i:]) {
			return i
		}
	}
	return -1
}

func namesOnly(list string) []eml.Address {
	var out []eml.Address
	for _, n := range strings.Split(list, ";") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, eml.Address{Name: n})
		}
	}
	return out
}

// Load reads the whole message: properties, body and attachments.
func (m *Message) Load(ctx context.Context) (*Item, error) {
	var it *Item
	err := m.Mailbox.scan(ctx, "Message", func(rw *row) error {
		if d, _ := rw.int("doc"); d != m.DocID {
			return nil
		}
		it = m.Mailbox.item(rw)
		it.Folder = m.Folder
		return ErrStop
	})
	if err != nil {
		return nil, err
	}
	if it == nil {
		return nil, fmt.Errorf("mailbox %d has no message %d", m.Mailbox.Number, m.DocID)
	}
	if err := m.Mailbox.attach(ctx, []*Item{it}); err != nil {
		return nil, err
	}
	return it, nil
}

func (mb *Mailbox) item(rw *row) *Item {
	msg, props := summaryWith(rw, mb, true)
	it := &Item{Message: msg, Props: props}
	it.MessageID = propString(props, mapi.PidTagInternetMessageId)
	it.InReplyTo = propString(props, mapi.PidTagInReplyToId)
	bt, _ := rw.int("bodyType")
	cp, _ := rw.int("codepage")
	if cp == 0 {
		if v, ok := propValue(props, mapi.PidTagInternetCodepage).(int32); ok {
			cp = int64(v)
		}
	}
	b := decodeBody(props, rw.bytes("body"), bt, cp)
	it.Text, it.HTML, it.RTF, it.Warnings = b.text, b.html, b.rtf, b.warnings
	subs, err := mapi.ParseSubobjects(rw.bytes("subobjects"))
	if err != nil {
		it.Warnings = append(it.Warnings, "attachment list: "+err.Error())
	}
	it.subobjects = subs
	return it
}

// Items calls fn with every message of the mailbox that match accepts
// (nil accepts all), fully loaded, in batches that bound memory: one pass
// over the message table, and one over the attachment table per batch
// that has attachments.
func (m *Mailbox) Items(ctx context.Context, match func(*Message) bool, fn func(*Item) error) error {
	folders, err := m.Folders(ctx)
	if err != nil {
		return err
	}
	byID := map[string]*Folder{}
	for _, f := range folders {
		byID[f.ID] = f
	}
	const batchSize = 32
	var batch []*Item
	flush := func() error {
		if err := m.attach(ctx, batch); err != nil {
			return err
		}
		for _, it := range batch {
			if err := fn(it); err != nil {
				return err
			}
		}
		batch = batch[:0]
		return nil
	}
	err = m.scan(ctx, "Message", func(rw *row) error {
		msg, _ := summary(rw, m)
		msg.Folder = byID[msg.FolderID]
		if match != nil && !match(msg) {
			return nil
		}
		it := m.item(rw)
		it.Folder = msg.Folder
		batch = append(batch, it)
		if len(batch) >= batchSize {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

// attach fills in the attachments of items from the Attachment table, by
// the Inids their SubobjectsBlob lists (children only: indirect entries
// are attachments of embedded messages).
func (m *Mailbox) attach(ctx context.Context, items []*Item) error {
	want := map[int64][]*Item{}
	order := map[int64]int32{}
	for _, it := range items {
		for _, s := range it.subobjects {
			if s.Child >= 0 {
				want[s.Inid] = append(want[s.Inid], it)
				order[s.Inid] = s.Child
			}
		}
	}
	if len(want) == 0 {
		return nil
	}
	type found struct {
		child int32
		a     eml.Attachment
	}
	got := map[*Item][]found{}
	err := m.scan(ctx, "Attachment", func(rw *row) error {
		inid, ok := rw.int("inid")
		if !ok || want[inid] == nil {
			return nil
		}
		a := attachment(rw)
		for _, it := range want[inid] {
			got[it] = append(got[it], found{order[inid], a})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, it := range items {
		fs := got[it]
		sort.Slice(fs, func(i, j int) bool { return fs[i].child < fs[j].child })
		for _, f := range fs {
			it.Attachments = append(it.Attachments, f.a)
		}
		if n := countChildren(it.subobjects); len(fs) < n {
			it.Warnings = append(it.Warnings, fmt.Sprintf("%d of %d attachments not found in the attachment table", n-len(fs), n))
		}
	}
	return nil
}

func countChildren(subs []mapi.Subobject) int {
	n := 0
	for _, s := range subs {
		if s.Child >= 0 {
			n++
		}
	}
	return n
}

func attachment(rw *row) eml.Attachment {
	props := mergeProps(rw.bytes("blob"), nil, rw.bytes("large"))
	a := eml.Attachment{
		Name:        rw.str("name"),
		ContentType: rw.str("contentType"),
		ContentID:   rw.str("contentId"),
		Data:        rw.bytes("content"),
	}
	if a.Name == "" {
		a.Name = propString(props, mapi.PidTagAttachLongFilename, mapi.PidTagAttachFilename, mapi.PidTagDisplayName)
	}
	if a.ContentType == "" {
		a.ContentType = propString(props, mapi.PidTagAttachMimeTag)
	}
	if a.ContentID == "" {
		a.ContentID = propString(props, mapi.PidTagAttachContentId)
	}
	if a.Data == nil {
		if b, ok := propValue(props, mapi.PidTagAttachDataBinary).([]byte); ok {
			a.Data = b
		}
	}
	return a
}

// EML converts the item to the .eml writer's message.
func (it *Item) EML() *eml.Message {
	m := &eml.Message{
		From: it.From, To: it.To, Cc: it.Cc, Bcc: it.Bcc,
		Subject: it.Subject, Date: it.Date(), MessageID: it.MessageID, InReplyTo: it.InReplyTo,
		Text: it.Text, HTML: it.HTML, Attachments: it.Attachments,
	}
	if it.Folder != nil {
		m.Extra = append(m.Extra, [2]string{"X-Rewind-Folder", strings.Join(it.Folder.Path(), "/")})
	}
	if it.Mailbox != nil {
		m.Extra = append(m.Extra, [2]string{"X-Rewind-Mailbox", it.Mailbox.Name()})
	}
	return m
}

// WriteEML writes the item as an RFC 5322 / MIME message.
func (it *Item) WriteEML(w io.Writer) error { return eml.Write(w, it.EML()) }

// WriteEML loads the message and writes it as an .eml file.
func (m *Message) WriteEML(ctx context.Context, w io.Writer) error {
	it, err := m.Load(ctx)
	if err != nil {
		return err
	}
	return it.WriteEML(w)
}

// FileName is "<yyyy-mm-dd HHMM> <subject>.eml" (UTC), safe as a file name
// on Linux and Windows. Names can repeat within a folder: see FileNames.
func (m *Message) FileName() string {
	d := m.Date()
	prefix := "0000-00-00 0000"
	if !d.IsZero() {
		prefix = d.UTC().Format("2006-01-02 1504")
	}
	subj := SafeName(m.Subject, 120)
	if subj == "" {
		subj = "(no subject)"
	}
	return prefix + " " + subj + ".eml"
}

// FileNames gives each message a unique file name: FileName, with
// " [<DocID>]" before the extension where several messages share one.
func FileNames(msgs []*Message) map[*Message]string {
	n := map[string]int{}
	for _, m := range msgs {
		n[strings.ToLower(m.FileName())]++
	}
	out := make(map[*Message]string, len(msgs))
	for _, m := range msgs {
		name := m.FileName()
		if n[strings.ToLower(name)] > 1 {
			name = strings.TrimSuffix(name, ".eml") + fmt.Sprintf(" [%d].eml", m.DocID)
		}
		out[m] = name
	}
	return out
}

// SafeName makes s usable as one path component: characters that Windows
// or Linux forbid become "_", control characters are dropped, and it is
// cut to at most max runes without trailing dots or spaces; "" when
// nothing usable is left.
func SafeName(s string, max int) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n >= max {
			break
		}
		switch {
		case r == utf8.RuneError || unicode.IsControl(r):
			continue
		case strings.ContainsRune(`/\:*?"<>|`, r):
			r = '_'
		}
		b.WriteRune(r)
		n++
	}
	// Trailing dots and spaces are invalid on Windows; this also rules
	// out "." and "..". The result may be empty.
	return strings.TrimRight(strings.TrimSpace(b.String()), ". ")
}

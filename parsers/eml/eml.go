// Package eml writes email messages as RFC 5322 / MIME (.eml) files: a
// text/plain and text/html alternative, attachments in base64 with their
// file names, and From/To/Cc/Subject/Date/Message-ID headers with RFC 2047
// encoded words where a value is not ASCII. Bodies and attachments come
// back byte-exact from any MIME reader.
package eml

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
	"time"
)

// Address is a mailbox: a display name and an address.
type Address struct {
	Name  string
	Email string
}

// Attachment is one attached file.
type Attachment struct {
	Name        string // file name
	ContentType string // e.g. application/pdf; empty for application/octet-stream
	ContentID   string // set for inline parts referenced from the HTML body
	Data        []byte
}

// Message is what Write turns into an .eml file.
type Message struct {
	From        Address
	Sender      *Address // when someone sent on From's behalf
	To, Cc, Bcc []Address
	Subject     string
	Date        time.Time
	MessageID   string
	InReplyTo   string
	Text        string // text/plain body, UTF-8
	HTML        string // text/html body, UTF-8
	Attachments []Attachment
	// Extra headers, written in order after the standard ones.
	Extra [][2]string
}

// Write writes m to w as an RFC 5322 message with CRLF line ends.
func Write(w io.Writer, m *Message) error {
	bw := bufio.NewWriter(w)
	h := &headerWriter{w: bw}
	if !m.Date.IsZero() {
		h.add("Date", m.Date.Format(time.RFC1123Z))
	}
	h.add("From", formatAddress(m.From))
	if m.Sender != nil {
		h.add("Sender", formatAddress(*m.Sender))
	}
	h.addList("To", m.To)
	h.addList("Cc", m.Cc)
	h.addList("Bcc", m.Bcc)
	h.add("Subject", encodeWord(m.Subject))
	if id := msgID(m.MessageID); id != "" {
		h.add("Message-ID", id)
	}
	if id := msgID(m.InReplyTo); id != "" {
		h.add("In-Reply-To", id)
	}
	for _, x := range m.Extra {
		h.add(x[0], encodeWord(x[1]))
	}
	h.add("MIME-Version", "1.0")
	if h.err != nil {
		return h.err
	}
	seed := boundarySeed(m)
	hdr, body := bodyPart(m, seed+"-alt")
	if len(m.Attachments) == 0 {
		for _, k := range []string{"Content-Type", "Content-Transfer-Encoding"} {
			if v := hdr.Get(k); v != "" {
				h.add(k, v)
			}
		}
		if h.err != nil {
			return h.err
		}
		if _, err := bw.WriteString("\r\n"); err != nil {
			return err
		}
		if err := body(bw); err != nil {
			return err
		}
		return bw.Flush()
	}
	mw := multipart.NewWriter(bw)
	if err := mw.SetBoundary(seed + "-mix"); err != nil {
		return err
	}
	h.add("Content-Type", mime.FormatMediaType("multipart/mixed", map[string]string{"boundary": mw.Boundary()}))
	if h.err != nil {
		return h.err
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return err
	}
	pw, err := mw.CreatePart(hdr)
	if err != nil {
		return err
	}
	if err := body(pw); err != nil {
		return err
	}
	for _, a := range m.Attachments {
		if err := writeAttachment(mw, a); err != nil {
			return err
		}
	}
	if err := mw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

type headerWriter struct {
	w   io.Writer
	err error
}

func (h *headerWriter) add(k, v string) {
	if h.err != nil {
		return
	}
	if !strings.Contains(v, ",\r\n ") { // address lists come folded already
		v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
	}
	_, h.err = fmt.Fprintf(h.w, "%s: %s\r\n", k, fold(len(k)+2, v))
}

// fold breaks a header value at spaces so that no line exceeds the
// 998-character limit of RFC 5322 (shorter lines are left alone: unfolding
// is not lossless where a value holds runs of spaces).
func fold(used int, v string) string {
	const limit = 900
	var b strings.Builder
	line := used
	for i, w := range strings.Split(v, " ") {
		if i > 0 {
			if line+1+len(w) > limit {
				b.WriteString("\r\n ")
				line = 1
			} else {
				b.WriteByte(' ')
				line++
			}
		}
		b.WriteString(w)
		line += len(w)
		if j := strings.LastIndex(w, "\n"); j >= 0 {
			line = len(w) - j - 1
		}
	}
	return b.String()
}

func (h *headerWriter) addList(k string, as []Address) {
	if len(as) == 0 {
		return
	}
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = formatAddress(a)
	}
	h.add(k, strings.Join(parts, ",\r\n "))
}

// formatAddress writes a mailbox. An address without "@" (an Exchange
// legacy DN, say) cannot be a mailbox; the name is written as an empty
// group instead, which mail readers show and parsers accept.
func formatAddress(a Address) string {
	if strings.Contains(a.Email, "@") {
		return (&mail.Address{Name: a.Name, Address: a.Email}).String()
	}
	name := a.Name
	if name == "" {
		name = a.Email
	}
	if name == "" {
		name = "unknown"
	}
	return phrase(name) + ":;"
}

// phrase quotes or encodes a display name.
func phrase(s string) string {
	enc := mime.QEncoding.Encode("utf-8", s)
	if enc != s {
		return enc
	}
	return fmt.Sprintf("%q", s)
}

func encodeWord(s string) string { return mime.QEncoding.Encode("utf-8", s) }

func msgID(id string) string {
	id = strings.TrimSpace(id)
	if id == "" {
		return ""
	}
	if !strings.HasPrefix(id, "<") {
		id = "<" + id + ">"
	}
	return id
}

// boundarySeed derives the multipart boundaries from the message itself,
// so that the same message always gives the same bytes (a mount must
// report a stable size) while no body can contain the boundary by chance.
func boundarySeed(m *Message) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q|%q|%q|%d|%q|%q|%d\n", m.From, m.Subject, m.MessageID, m.Date.UnixNano(), m.Text, m.HTML, len(m.Attachments))
	for _, a := range m.Attachments {
		fmt.Fprintf(h, "%q|%q|%d|", a.Name, a.ContentType, len(a.Data))
		h.Write(a.Data)
	}
	return "=_rewind_" + hex.EncodeToString(h.Sum(nil)[:16])
}

// bodyPart returns the header and a writer of the body: one text part, or
// a multipart/alternative of the text and the HTML.
func bodyPart(m *Message, boundary string) (textproto.MIMEHeader, func(io.Writer) error) {
	single := func(typ, text string) (textproto.MIMEHeader, func(io.Writer) error) {
		enc := transferEncoding(text)
		return textproto.MIMEHeader{
				"Content-Type":              {typ + "; charset=utf-8"},
				"Content-Transfer-Encoding": {enc},
			}, func(w io.Writer) error {
				return encodeBody(w, enc, []byte(text))
			}
	}
	switch {
	case m.Text != "" && m.HTML != "":
		hdr := textproto.MIMEHeader{"Content-Type": {mime.FormatMediaType("multipart/alternative", map[string]string{"boundary": boundary})}}
		return hdr, func(w io.Writer) error {
			aw := multipart.NewWriter(w)
			if err := aw.SetBoundary(boundary); err != nil {
				return err
			}
			for _, p := range []struct{ typ, body string }{{"text/plain", m.Text}, {"text/html", m.HTML}} {
				ph, write := single(p.typ, p.body)
				pw, err := aw.CreatePart(ph)
				if err != nil {
					return err
				}
				if err := write(pw); err != nil {
					return err
				}
			}
			return aw.Close()
		}
	case m.HTML != "":
		return single("text/html", m.HTML)
	}
	return single("text/plain", m.Text)
}

// transferEncoding picks quoted-printable, which stays readable, when it
// round-trips exactly (every line break a CRLF), base64 otherwise.
func transferEncoding(s string) string {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\n':
			if i == 0 || s[i-1] != '\r' {
				return "base64"
			}
		case '\r':
			if i+1 >= len(s) || s[i+1] != '\n' {
				return "base64"
			}
		}
	}
	return "quoted-printable"
}

func encodeBody(w io.Writer, enc string, b []byte) error {
	if enc == "base64" {
		return writeBase64(w, b)
	}
	qw := quotedprintable.NewWriter(w)
	if _, err := qw.Write(b); err != nil {
		return err
	}
	return qw.Close()
}

func writeAttachment(mw *multipart.Writer, a Attachment) error {
	ct := a.ContentType
	if ct == "" {
		ct = mime.TypeByExtension(extension(a.Name))
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		mt, params = "application/octet-stream", map[string]string{}
	}
	name := a.Name
	if name == "" {
		name = "attachment"
	}
	params["name"] = name
	disp := "attachment"
	hdr := textproto.MIMEHeader{
		"Content-Type":              {mime.FormatMediaType(mt, params)},
		"Content-Transfer-Encoding": {"base64"},
	}
	if a.ContentID != "" {
		disp = "inline"
		hdr.Set("Content-ID", msgID(a.ContentID))
	}
	hdr.Set("Content-Disposition", mime.FormatMediaType(disp, map[string]string{"filename": name}))
	if hdr.Get("Content-Type") == "" || hdr.Get("Content-Disposition") == "" {
		return errors.New("eml: cannot format the headers of attachment " + name)
	}
	pw, err := mw.CreatePart(hdr)
	if err != nil {
		return err
	}
	return writeBase64(pw, a.Data)
}

func extension(name string) string {
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		return strings.ToLower(name[i:])
	}
	return ""
}

// writeBase64 writes b in base64, 76 characters a line.
func writeBase64(w io.Writer, b []byte) error {
	enc := base64.StdEncoding.EncodeToString(b)
	var buf bytes.Buffer
	for len(enc) > 76 {
		buf.WriteString(enc[:76])
		buf.WriteString("\r\n")
		enc = enc[76:]
	}
	buf.WriteString(enc)
	buf.WriteString("\r\n")
	_, err := w.Write(buf.Bytes())
	return err
}

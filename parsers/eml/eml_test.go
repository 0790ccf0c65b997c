package eml

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"testing"
	"time"
)

// parsed is what a MIME reader recovers from an .eml file.
type parsed struct {
	hdr         mail.Header
	text, html  string
	attachments map[string][]byte
	types       map[string]string
}

func decodePart(t *testing.T, enc string, r io.Reader) []byte {
	t.Helper()
	switch strings.ToLower(enc) {
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r)
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parse(t *testing.T, raw []byte) parsed {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("net/mail: %v\n%s", err, raw)
	}
	p := parsed{hdr: msg.Header, attachments: map[string][]byte{}, types: map[string]string{}}
	var walk func(ct, enc, disp string, body io.Reader)
	walk = func(ct, enc, disp string, body io.Reader) {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil {
			t.Fatalf("content type %q: %v", ct, err)
		}
		if strings.HasPrefix(mt, "multipart/") {
			mr := multipart.NewReader(body, params["boundary"])
			for {
				part, err := mr.NextRawPart()
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Fatalf("mime/multipart: %v", err)
				}
				walk(part.Header.Get("Content-Type"), part.Header.Get("Content-Transfer-Encoding"), part.Header.Get("Content-Disposition"), part)
			}
		}
		data := decodePart(t, enc, body)
		if disp != "" {
			_, dp, err := mime.ParseMediaType(disp)
			if err != nil {
				t.Fatalf("disposition %q: %v", disp, err)
			}
			p.attachments[dp["filename"]] = data
			p.types[dp["filename"]] = mt
			return
		}
		switch mt {
		case "text/plain":
			p.text = string(data)
		case "text/html":
			p.html = string(data)
		}
	}
	walk(msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), "", msg.Body)
	return p
}

func TestRoundTrip(t *testing.T) {
	pdf := bytes.Repeat([]byte{0x25, 0x50, 0x44, 0x46, 0x00, 0xff, '\r', '\n', '\n'}, 100)
	m := &Message{
		From:      Address{Name: "Zoë Müller", Email: "zoe@example.com"},
		To:        []Address{{Name: "Bob, Jr.", Email: "bob@example.com"}, {Email: "carol@example.org"}},
		Cc:        []Address{{Name: "Дмитрий", Email: "dima@example.ru"}},
		Subject:   "Réunion: budget 2026 — final ✓ and a rather long subject line that needs more than one encoded word",
		Date:      time.Date(2026, 11, 20, 10, 15, 3, 0, time.FixedZone("CET", 3600)),
		MessageID: "abc.123@example.com",
		Text:      "Hello Bob,\r\n\r\nthe numbers: 1 = 2 \r\nLine with trailing space \r\nBye.\r\n",
		HTML:      "<html><body><p>Hello</p>\n<p>été</p></body></html>",
		Attachments: []Attachment{
			{Name: "report.pdf", ContentType: "application/pdf", Data: pdf},
			{Name: "données été.txt", Data: []byte("a\nb\r\n")},
			{Name: "empty.bin", Data: nil},
		},
	}
	var buf bytes.Buffer
	if err := Write(&buf, m); err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(buf.String(), "\r\n") {
		if strings.Contains(line, "\n") || len(line) > 998 {
			t.Fatalf("line %d is not a proper RFC 5322 line: %q", i, line)
		}
	}
	p := parse(t, buf.Bytes())
	from, err := mail.ParseAddress(p.hdr.Get("From"))
	if err != nil || from.Name != m.From.Name || from.Address != m.From.Email {
		t.Errorf("From %v %v", from, err)
	}
	to, err := p.hdr.AddressList("To")
	if err != nil || len(to) != 2 || to[0].Name != "Bob, Jr." || to[0].Address != "bob@example.com" || to[1].Address != "carol@example.org" {
		t.Errorf("To %v %v", to, err)
	}
	cc, err := p.hdr.AddressList("Cc")
	if err != nil || len(cc) != 1 || cc[0].Name != "Дмитрий" {
		t.Errorf("Cc %v %v", cc, err)
	}
	subj, err := new(mime.WordDecoder).DecodeHeader(p.hdr.Get("Subject"))
	if err != nil || subj != m.Subject {
		t.Errorf("Subject %q %v", subj, err)
	}
	date, err := p.hdr.Date()
	if err != nil || !date.Equal(m.Date) {
		t.Errorf("Date %v %v", date, err)
	}
	if id := p.hdr.Get("Message-Id"); id != "<abc.123@example.com>" {
		t.Errorf("Message-ID %q", id)
	}
	if p.text != m.Text {
		t.Errorf("text body %q", p.text)
	}
	if p.html != m.HTML {
		t.Errorf("html body %q", p.html)
	}
	for _, a := range m.Attachments {
		got, ok := p.attachments[a.Name]
		if !ok || !bytes.Equal(got, a.Data) {
			t.Errorf("attachment %q: present %v, %d bytes, want %d", a.Name, ok, len(got), len(a.Data))
		}
	}
	if p.types["report.pdf"] != "application/pdf" || p.types["données été.txt"] != "text/plain" {
		t.Errorf("types %v", p.types)
	}
}

func TestSinglePartAndOddAddresses(t *testing.T) {
	m := &Message{
		From:    Address{Name: "Exchange User", Email: "/O=CONTOSO/OU=EXCHANGE ADMINISTRATIVE GROUP/CN=RECIPIENTS/CN=USER"},
		To:      []Address{{Name: "Ann", Email: "ann@example.com"}},
		Subject: "plain",
		Text:    "unix\nline ends\n",
	}
	var buf bytes.Buffer
	if err := Write(&buf, m); err != nil {
		t.Fatal(err)
	}
	p := parse(t, buf.Bytes())
	if p.text != m.Text {
		t.Errorf("text %q", p.text)
	}
	if !strings.Contains(p.hdr.Get("From"), "Exchange User") {
		t.Errorf("From %q", p.hdr.Get("From"))
	}
	if _, err := mail.ParseAddressList(p.hdr.Get("From")); err != nil {
		t.Errorf("From does not parse: %v", err)
	}
	if p.hdr.Get("Date") != "" {
		t.Errorf("Date written for a zero time")
	}
}

func TestDeterministic(t *testing.T) {
	m := &Message{From: Address{"A", "a@x.com"}, Subject: "s", Text: "t\r\n", HTML: "<p>t</p>", Attachments: []Attachment{{Name: "a.bin", Data: []byte{1}}}}
	var a, b bytes.Buffer
	if err := Write(&a, m); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, m); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two writes of one message differ")
	}
	m.Attachments[0].Data = []byte{2}
	var c bytes.Buffer
	if err := Write(&c, m); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Fatal("different messages gave the same bytes")
	}
}

func TestLongHeaders(t *testing.T) {
	long := strings.Repeat("word ", 400) + strings.Repeat("é", 300)
	m := &Message{From: Address{"A", "a@x.com"}, Subject: long, Text: "x"}
	for i := 0; i < 60; i++ {
		m.To = append(m.To, Address{Name: "Recipient Number " + strings.Repeat("x", i), Email: "r@example.com"})
	}
	var buf bytes.Buffer
	if err := Write(&buf, m); err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(buf.String(), "\r\n") {
		if len(line) > 998 {
			t.Fatalf("line %d has %d characters", i, len(line))
		}
	}
	p := parse(t, buf.Bytes())
	subj, err := new(mime.WordDecoder).DecodeHeader(p.hdr.Get("Subject"))
	if err != nil || subj != long {
		t.Errorf("subject (%d chars) does not come back: %v", len(subj), err)
	}
	if to, err := p.hdr.AddressList("To"); err != nil || len(to) != 60 {
		t.Errorf("To: %d addresses, %v", len(to), err)
	}
}

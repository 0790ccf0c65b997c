package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/mail"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/exchange"
)

// withSampleExchange makes the exchange commands read the sample store
// (no Exchange database can be made here) and returns a file to name.
func withSampleExchange(t *testing.T) string {
	t.Helper()
	old := openExchangeSource
	openExchangeSource = func(ctx context.Context, _ *source) (*exchange.DB, error) {
		return exchange.OpenSource(ctx, exchange.SampleStore())
	}
	t.Cleanup(func() { openExchangeSource = old })
	p := filepath.Join(t.TempDir(), "DB01.edb")
	if err := os.WriteFile(p, []byte("stand-in"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExchangeMailboxesAndFolders(t *testing.T) {
	db := withSampleExchange(t)
	code, out, errs := runESE(t, "exchange", "mailboxes", db, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var boxes []struct {
		Number   int64  `json:"number"`
		Name     string `json:"name"`
		Messages int64  `json:"messages"`
	}
	if err := json.Unmarshal([]byte(out), &boxes); err != nil || len(boxes) != 2 || boxes[0].Name != "Alice Smith" || boxes[1].Number != 102 {
		t.Fatalf("%v %s", err, out)
	}
	code, out, _ = runESE(t, "exchange", "folders", db, "--mailbox", "alice smith")
	if code != 0 || !strings.Contains(out, "Top of Information Store/Inbox/Projects/2026") || strings.Contains(out, "Bob") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	code, _, errs = runESE(t, "exchange", "folders", db, "--mailbox", "nobody")
	if code != 2 || !strings.Contains(errs, "Alice Smith") {
		t.Fatalf("unknown mailbox: exit %d: %s", code, errs)
	}
}

func TestExchangeFind(t *testing.T) {
	db := withSampleExchange(t)
	find := func(a ...string) []string {
		t.Helper()
		code, out, errs := runESE(t, append([]string{"exchange", "find", db, "--json"}, a...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", a, code, errs)
		}
		var hits []struct {
			Subject string `json:"subject"`
		}
		if err := json.Unmarshal([]byte(out), &hits); err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, h := range hits {
			s = append(s, h.Subject)
		}
		sort.Strings(s)
		return s
	}
	cases := []struct {
		args []string
		want string
	}{
		{nil, "Bob's only message|Budget 2027 – draft|RE: Project plan|Réunion: ordre du jour"},
		{[]string{"--from", "ZOE@example"}, "Budget 2027 – draft"},
		{[]string{"--to", "dave@example.net"}, "Budget 2027 – draft"},
		{[]string{"--to", "frank"}, "Réunion: ordre du jour"},
		{[]string{"--subject", "plan re:"}, "RE: Project plan"},
		{[]string{"--since", "2026-10-06T00:00:00Z", "--mailbox", "101"}, "RE: Project plan|Réunion: ordre du jour"},
		{[]string{"--until", "2026-10-06T00:00:00Z"}, "Bob's only message|Budget 2027 – draft"},
		{[]string{"--folder", "Inbox", "--mailbox", "alice smith"}, "Budget 2027 – draft|RE: Project plan"},
		{[]string{"--subject", "nothing like this"}, ""},
	}
	for _, c := range cases {
		if got := strings.Join(find(c.args...), "|"); got != c.want {
			t.Errorf("%v: got %q, want %q", c.args, got, c.want)
		}
	}
	if code, _, errs := runESE(t, "exchange", "find", db, "--since", "yesterday-ish"); code != 2 {
		t.Errorf("bad --since: exit %d %s", code, errs)
	}
}

func TestExchangeExport(t *testing.T) {
	db := withSampleExchange(t)
	dir := t.TempDir()
	code, out, errs := runESE(t, "exchange", "export", db, "--dir", dir, "--mailbox", "101")
	if code != 0 || !strings.Contains(out, "3 message(s)") {
		t.Fatalf("exit %d: %s %s", code, out, errs)
	}
	var files []string
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(files)
	want := []string{
		"Alice Smith/Top of Information Store/Inbox/2026-10-05 0830 Budget 2027 – draft.eml",
		"Alice Smith/Top of Information Store/Inbox/Projects_2026/2026-10-06 1745 RE_ Project plan.eml",
		"Alice Smith/Top of Information Store/Sent Items/2026-10-07 0900 Réunion_ ordre du jour.eml",
	}
	if strings.Join(files, "\n") != strings.Join(want, "\n") {
		t.Fatalf("files:\n%s", strings.Join(files, "\n"))
	}
	raw, err := os.ReadFile(filepath.Join(dir, want[0]))
	if err != nil {
		t.Fatal(err)
	}
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if from, err := mail.ParseAddress(m.Header.Get("From")); err != nil || from.Address != "zoe@example.com" {
		t.Errorf("From %v %v", from, err)
	}
	if !bytes.Contains(raw, []byte(`filename=budget.pdf`)) {
		t.Error("attachment missing")
	}

	// --id picks one message; --dir is required.
	dir2 := t.TempDir()
	if code, out, errs := runESE(t, "exchange", "export", db, "--dir", dir2, "--mailbox", "alice smith", "--id", "4"); code != 0 || !strings.Contains(out, "1 message(s)") {
		t.Fatalf("--id: exit %d %s %s", code, out, errs)
	}
	// A message has the same name whichever messages are exported.
	if _, err := os.Stat(filepath.Join(dir2, want[2])); err != nil {
		t.Errorf("--id 4: %v", err)
	}
	if code, _, _ := runESE(t, "exchange", "export", db); code != 2 {
		t.Errorf("no --dir: exit %d", code)
	}
}

func TestExchangeOnOtherESE(t *testing.T) {
	db := eseFile(t, "ese/win10_SRUDB.dat")
	code, _, errs := runESE(t, "exchange", "mailboxes", db)
	if code != 1 || !strings.Contains(errs, "without the Exchange mailbox tables") || !strings.Contains(errs, "rewind ese tables") {
		t.Fatalf("exit %d: %s", code, errs)
	}
	notESE := filepath.Join(t.TempDir(), "x.edb")
	_ = os.WriteFile(notESE, bytes.Repeat([]byte{0x55}, 64<<10), 0o600)
	code, _, errs = runESE(t, "exchange", "mailboxes", notESE)
	if code != 1 || !strings.Contains(errs, "not a readable ESE") {
		t.Fatalf("not ESE: exit %d: %s", code, errs)
	}
}

package vfs_test

import (
	"bytes"
	"context"
	"net/mail"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/exchange"
	"github.com/rewind-cdp/rewind/test/testenv"
	"github.com/rewind-cdp/rewind/vfs"
)

// walkApp lists every file of an application database by path.
func walkApp(t *testing.T, db vfs.AppDatabase, dir string, out map[string]bool, dirs map[string]bool) {
	t.Helper()
	ents, err := db.ReadDir(context.Background(), dir)
	if err != nil {
		t.Fatalf("ReadDir(%q): %v", dir, err)
	}
	for _, e := range ents {
		p := path.Join(dir, e.Name)
		if e.Dir {
			dirs[p] = true
			walkApp(t, db, p, out, dirs)
		} else {
			out[p] = true
		}
	}
}

// The exchange/ view lays out the sample store's mailboxes and folders
// with the exchange package's file names, and every file is WriteEML's
// bytes, the same on each read, and a parseable message.
func TestExchangeView(t *testing.T) {
	ctx := context.Background()
	db, err := vfs.NewExchangeDB(ctx, "/Exchange/Mailbox DB1.edb", exchange.SampleStore())
	if err != nil {
		t.Fatal(err)
	}
	if db.Name() != "Mailbox DB1" {
		t.Errorf("Name = %q", db.Name())
	}
	files, dirs := map[string]bool{}, map[string]bool{}
	walkApp(t, db, "", files, dirs)
	for _, d := range []string{"Alice Smith", "Bob Jones", "Alice Smith/Top of Information Store/Inbox",
		"Alice Smith/Top of Information Store/Inbox/Projects_2026", "Alice Smith/Top of Information Store/Sent Items", "Bob Jones/Inbox"} {
		if !dirs[d] {
			t.Errorf("no directory %s in %v", d, dirs)
		}
	}

	// expected: every normal message under its folder path, named by FileNames
	src, _ := exchange.OpenSource(ctx, exchange.SampleStore())
	boxes, err := src.Mailboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*exchange.Message{}
	for _, b := range boxes {
		_, byFolder, err := b.MessagesByFolder(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for f, msgs := range byFolder {
			for m, name := range exchange.FileNames(msgs) {
				parts := []string{exchange.SafeName(b.Name(), 120)}
				for _, c := range f.Path() {
					parts = append(parts, exchange.SafeName(c, 120))
				}
				want[path.Join(append(parts, name)...)] = m
			}
		}
	}
	if len(want) == 0 {
		t.Fatal("the sample store has no messages")
	}
	got := slices.Sorted(func(yield func(string) bool) {
		for p := range files {
			if !yield(p) {
				return
			}
		}
	})
	if len(got) != len(want) {
		t.Errorf("files %v, want %d", got, len(want))
	}
	for p, m := range want {
		if !files[p] {
			t.Errorf("no file %s in %v", p, got)
			continue
		}
		if !strings.HasSuffix(p, ".eml") || !strings.HasPrefix(path.Base(p), m.Date().UTC().Format("2006-01-02 1504")) {
			t.Errorf("file name %s", p)
		}
		var ref, a, b bytes.Buffer
		if err := m.WriteEML(ctx, &ref); err != nil {
			t.Fatal(err)
		}
		if err := db.WriteFile(ctx, p, &a); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if err := db.WriteFile(ctx, p, &b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Bytes(), ref.Bytes()) || !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Errorf("%s: bytes differ from WriteEML or between reads", p)
		}
		if _, err := mail.ReadMessage(bytes.NewReader(a.Bytes())); err != nil {
			t.Errorf("%s: net/mail: %v", p, err)
		}
	}
	if err := db.WriteFile(ctx, "Alice Smith/nope.eml", &bytes.Buffer{}); err == nil {
		t.Error("WriteFile of a missing file succeeded")
	}
	if _, err := db.ReadDir(ctx, "Nobody"); err == nil {
		t.Error("ReadDir of a missing mailbox succeeded")
	}
}

// An ESE database without the mailbox tables is not claimed by exchange/
// and stays with ese/, which comes after it in the default order.
func TestExchangeProbeLeavesESE(t *testing.T) {
	ctx := context.Background()
	srudb := testenv.FixtureBytes(t, "ese/win10_SRUDB.dat")
	r, n := bytes.NewReader(srudb), int64(len(srudb))
	ex := vfs.ExchangeApp{}
	if !ex.Match("/x/Mailbox.edb", n) || ex.Match("/x/SRUDB.dat", n) {
		t.Error("Match: want .edb only")
	}
	if ex.Probe(ctx, r, n) {
		t.Error("exchange/ claims SRUDB.dat")
	}
	if ex.Probe(ctx, bytes.NewReader(make([]byte, 64<<10)), 64<<10) {
		t.Error("exchange/ claims zeros")
	}
	apps := vfs.DefaultApps()
	ix, ie := -1, -1
	for i, a := range apps {
		switch a.Dir() {
		case vfs.ExchangeDir:
			ix = i
		case vfs.ESEDir:
			ie = i
		}
	}
	if ix < 0 || ie < 0 || ix > ie {
		t.Errorf("DefaultApps order: exchange at %d, ese at %d", ix, ie)
	}
	if _, ok := apps[ix].(vfs.AppMerger); !ok {
		t.Error("exchange/ does not merge its databases")
	}
	for _, p := range []string{"/Windows/System32/sru/SRUDB.dat", "/x/SRUDB.edb"} {
		var claim string
		for _, a := range apps {
			if a.Match(p, n) && a.Probe(ctx, r, n) {
				claim = a.Dir()
				break
			}
		}
		if claim != vfs.ESEDir {
			t.Errorf("%s claimed by %q, want ese", p, claim)
		}
	}
}

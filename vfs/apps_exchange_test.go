package vfs_test

import (
	"bytes"
	"context"
	"net/mail"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/parsers/exchange"
	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/test/testenv"
	"github.com/rewind-cdp/rewind/vfs"
	"github.com/rewind-cdp/rewind/vfs/vfstest"
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

// Through the tree: mailboxes of an .edb go straight into exchange/, its
// messages read as WriteEML's bytes, and an ESE file stays in ese/.
func TestExchangeViewInTree(t *testing.T) {
	testenv.NeedTool(t, "mkfs.ext4")
	ctx := context.Background()
	work := t.TempDir()
	src := filepath.Join(work, "src")
	if err := os.MkdirAll(filepath.Join(src, "Exchange"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "Exchange", "DB1.edb"), make([]byte, 16<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "SRUDB.dat"), testenv.FixtureBytes(t, "ese/win10_SRUDB.dat"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(work, "fs.img")
	run(t, "mkfs.ext4", "-q", "-F", "-d", src, img, "64M")
	repo, err := repository.Init(ctx, filepath.Join(work, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	vfstest.StoreImage(t, repo, "mx1", "e", img)
	store := exchange.SampleStore()
	tree, err := vfs.New(ctx, repo, vfs.Options{Location: time.UTC, CacheSize: 8 << 20,
		AppCacheDir: filepath.Join(work, "appcache"),
		Apps:        []vfs.AppProvider{vfs.ExchangeAppOver{Src: store}, vfs.ESEApp{}}})
	if err != nil {
		t.Fatal(err)
	}
	defer tree.Close()
	ps, err := repo.Catalog.Points(ctx, "mx1", "e")
	if err != nil {
		t.Fatal(err)
	}
	pt := "/mx1/e/" + vfs.PointNames(ps)[0]
	if got, err := listNames(t, tree, pt); err != nil || !slices.Contains(got, "exchange") || !slices.Contains(got, "ese") {
		t.Fatalf("ls %s = %v %v", pt, got, err)
	}
	if got, err := listNames(t, tree, pt+"/exchange"); err != nil || !slices.Equal(got, []string{"Alice Smith", "Bob Jones"}) {
		t.Errorf("ls exchange = %v %v", got, err)
	}
	if got, err := listNames(t, tree, pt+"/ese"); err != nil || !slices.Equal(got, []string{"SRUDB"}) {
		t.Errorf("ls ese = %v %v", got, err)
	}
	dir := pt + "/exchange/Alice Smith/Top of Information Store/Inbox"
	names, err := listNames(t, tree, dir)
	if err != nil {
		t.Fatal(err)
	}
	db, _ := exchange.OpenSource(ctx, store)
	boxes, _ := db.Mailboxes(ctx)
	_, byFolder, err := boxes[0].MessagesByFolder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for f, msgs := range byFolder {
		if strings.Join(f.Path(), "/") != "Top of Information Store/Inbox" {
			continue
		}
		for m, name := range exchange.FileNames(msgs) {
			if !slices.Contains(names, name) {
				t.Errorf("%s not in %v", name, names)
				continue
			}
			got, err := readAll(t, tree, dir+"/"+name)
			var want bytes.Buffer
			if err2 := m.WriteEML(ctx, &want); err != nil || err2 != nil || !bytes.Equal(got, want.Bytes()) {
				t.Errorf("read %s: %v %v, equal to WriteEML: %v", name, err, err2, bytes.Equal(got, want.Bytes()))
			}
			checked++
		}
	}
	if checked == 0 {
		t.Error("no Inbox message checked")
	}
}

// countingSource counts the scans of each table.
type countingSource struct {
	exchange.Source
	scans map[string]int
}

func (c *countingSource) Rows(ctx context.Context, table string, fn func(exchange.Row) error) error {
	c.scans[table]++
	return c.Source.Rows(ctx, table, fn)
}

// Reading a folder's messages in listing order costs one pass over the
// message table per batch, not one per message, and gives the same bytes
// as reading each message alone.
func TestExchangeViewReadsInBatches(t *testing.T) {
	ctx := context.Background()
	store := exchange.SampleStore()
	const n = 150 // more than two batches
	for i := range n {
		store.Add("Message_102", map[string]any{"MailboxPartitionNumber": int64(102), "MessageDocumentId": int64(1000 + i),
			"FolderId": exchange.SampleFolderID(9), "DateReceived": exchange.SampleT1.Add(time.Duration(i) * time.Minute),
			"MessageClass": "IPM.Note", "Size": int64(2048), "NativeBody": []byte("message body"), "BodyType": int64(1)})
	}
	src := &countingSource{Source: store, scans: map[string]int{}}
	db, err := vfs.NewExchangeDB(ctx, "/DB1.edb", src)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := db.ReadDir(ctx, "Bob Jones/Inbox")
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) < n {
		t.Fatalf("%d entries in Bob Jones/Inbox, want at least %d", len(ents), n)
	}
	before := src.scans["Message_102"]
	got := map[string][]byte{}
	for _, e := range ents {
		var b bytes.Buffer
		if err := db.WriteFile(ctx, "Bob Jones/Inbox/"+e.Name, &b); err != nil {
			t.Fatalf("%s: %v", e.Name, err)
		}
		got[e.Name] = b.Bytes()
	}
	if scans := src.scans["Message_102"] - before; scans > (len(ents)+63)/64 {
		t.Errorf("reading %d messages scanned the message table %d times", len(ents), scans)
	}
	// Each message alone, out of order, reads the same.
	for _, i := range []int{len(ents) - 1, 0, len(ents) / 2} {
		var b bytes.Buffer
		if err := db.WriteFile(ctx, "Bob Jones/Inbox/"+ents[i].Name, &b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b.Bytes(), got[ents[i].Name]) {
			t.Errorf("%s: read alone differs from read in a batch", ents[i].Name)
		}
	}
}

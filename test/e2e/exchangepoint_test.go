package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	h "github.com/rewind-cdp/rewind/test/harness"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// An ESE database written by Windows, on an NTFS volume that is backed up:
// `rewind exchange mailboxes --machine --volume --at --path` reads it
// straight from the point and says it is an ESE database without the
// Exchange mailbox tables (no Exchange .edb can be had here), while
// `rewind ese tables` at the same point lists its tables.
func TestExchangeAtPointInTime(t *testing.T) {
	testenv.NeedTool(t, "mkntfs")
	testenv.NeedTool(t, "ntfscp")
	srudb := testenv.Fixture(t, "ese/win10_SRUDB.dat")
	dir := t.TempDir()
	img := filepath.Join(dir, "ntfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 48<<20)
	mustCmd(t, "mkntfs", "-F", "-Q", "-q", img)
	mustCmd(t, "ntfscp", "-f", img, srudb, "DB01.edb")
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	tok := h.AddMachine(t, repo, "mail1")
	p := mustBackup(t, s, tok, "mail1", "d", img)
	at := fmt.Sprint(p.Point.ID)

	r := h.Run(t, nil, "exchange", "mailboxes", "--repo", repo, "--machine", "mail1", "--volume", "d", "--at", at, "--path", "/DB01.edb")
	if r.Code != 1 || !containsAll(r.Stderr, "mail1/d@", "/DB01.edb", "without the Exchange mailbox tables", "rewind ese tables") {
		t.Errorf("exchange mailboxes on SRUDB at a point: exit %d, %q", r.Code, r.Stderr)
	}
	r = h.MustRun(t, nil, "ese", "tables", "--repo", repo, "--machine", "mail1", "--volume", "d", "--at", at, "--path", "/DB01.edb")
	if !containsAll(r.Stdout, "SruDbIdMapTable") {
		t.Errorf("ese tables at the point: %.300s", r.Stdout)
	}
	r = h.Run(t, nil, "exchange", "find", "--repo", repo, "--machine", "mail1", "--volume", "d", "--path", "/nope.edb")
	if r.Code != 1 || !containsAll(r.Stderr, "/nope.edb") {
		t.Errorf("missing path: exit %d, %q", r.Code, r.Stderr)
	}
}

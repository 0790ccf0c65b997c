package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/rewind-cdp/rewind/parsers/eml"
	"github.com/rewind-cdp/rewind/parsers/ese"
	"github.com/rewind-cdp/rewind/parsers/exchange"
)

func newExchangeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exchange",
		Short: "Find and recover mail from Exchange mailbox databases (.edb), no server needed",
		Long: `Read Exchange 2010-2019 mailbox databases (.edb) without Exchange: list the
mailboxes and their folders, find messages by sender, recipient, subject
words and date, and export them as .eml files any mail client opens.

  rewind exchange mailboxes "Mailbox Database.edb"
  rewind exchange folders DB.edb --mailbox "Alice Smith"
  rewind exchange find DB.edb --from bob --subject "budget 2027" --since 2026-10-01
  rewind exchange export DB.edb --mailbox alice --folder Inbox --dir restored/

Each command also reads the database straight from a backup at any point
in time (--machine, --volume, --at, --path):
  rewind exchange find --machine mail1 --volume d --at -7d \
      --path "/ExchangeDatabases/DB01/DB01.edb" --to carol@example.org

The file is only read. A database copied while Exchange ran ("dirty
shutdown") is read as it is on disk; transactions still in the logs are not
replayed. Folder-associated (hidden) items are not listed. Exchange 2007
and older use another schema and are not read.`,
	}
	cmd.AddCommand(newExchangeMailboxesCmd(), newExchangeFoldersCmd(), newExchangeFindCmd(), newExchangeExportCmd())
	return cmd
}

// openExchangeSource opens the database behind a source; tests replace it.
var openExchangeSource = func(ctx context.Context, src *source) (*exchange.DB, error) {
	return exchange.Open(ctx, src, src.Size)
}

// openMailboxes opens the Exchange database named by the argument or the
// point flags and selects the mailboxes key names (all when it is empty).
func openMailboxes(ctx context.Context, a []string, pf *pointFileFlags, key string) (*exchange.DB, string, []*exchange.Mailbox, func(), error) {
	db, name, closeFn, err := openExchange(ctx, a, pf)
	if err != nil {
		return nil, "", nil, nil, err
	}
	boxes, err := selectMailboxes(ctx, db, key)
	if err != nil {
		closeFn()
		return nil, "", nil, nil, err
	}
	return db, name, boxes, closeFn, nil
}

// openExchange opens the Exchange database named by the argument or the
// point flags.
func openExchange(ctx context.Context, a []string, pf *pointFileFlags) (*exchange.DB, string, func(), error) {
	src, err := openItemFile(ctx, a, pf, "Exchange database")
	if err != nil {
		return nil, "", nil, err
	}
	db, err := openExchangeSource(ctx, src)
	if err != nil {
		src.Close()
		switch {
		case errors.Is(err, exchange.ErrNotExchange):
			return nil, "", nil, fmt.Errorf("%s is %v; list its tables with: rewind ese tables %s", src.Name, err, shellQuote(src.Name))
		case errors.Is(err, ese.ErrCorrupt):
			return nil, "", nil, fmt.Errorf("%s is not a readable ESE (Exchange) database: %w", src.Name, err)
		}
		return nil, "", nil, fmt.Errorf("%s: %w", src.Name, err)
	}
	return db, src.Name, src.Close, nil
}

func shellQuote(s string) string {
	if strings.ContainsAny(s, " '\"$`\\") {
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	return s
}

func warnExchange(w io.Writer, name string, db *exchange.DB) {
	if db.ESE != nil {
		warnESE(w, name, db.ESE)
	}
}

// selectMailboxes returns every mailbox, or the one --mailbox names.
func selectMailboxes(ctx context.Context, db *exchange.DB, key string) ([]*exchange.Mailbox, error) {
	if key == "" {
		return db.Mailboxes(ctx)
	}
	m, err := db.Mailbox(ctx, key)
	if err != nil {
		boxes, _ := db.Mailboxes(ctx)
		names := make([]string, len(boxes))
		for i, b := range boxes {
			names[i] = fmt.Sprintf("%d %s", b.Number, b.Name())
		}
		return nil, usagef("--mailbox %q: no such mailbox (mailboxes: %s)", key, strings.Join(names, ", "))
	}
	return []*exchange.Mailbox{m}, nil
}

func newExchangeMailboxesCmd() *cobra.Command {
	var asJSON bool
	var pf pointFileFlags
	cmd := &cobra.Command{
		Use:   "mailboxes [FILE | --machine M --volume V --path P]",
		Short: "List the mailboxes of a database",
		Long: `List the mailboxes of an Exchange database: number (the N of its Message_N
table), name, owner, message count and size. With --json the output is an
array of {"number","name","owner","guid","legacy_dn","messages","size","deleted"}.`,
		Example: `  rewind exchange mailboxes DB01.edb
  rewind exchange mailboxes DB01.edb --json | jq '.[] | select(.messages > 0) | .name'`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			db, name, closeFn, err := openExchange(ctx, a, &pf)
			if err != nil {
				return err
			}
			defer closeFn()
			boxes, err := db.Mailboxes(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			warnExchange(cmd.ErrOrStderr(), name, db)
			type box struct {
				Number   int64   `json:"number"`
				Name     string  `json:"name"`
				Owner    string  `json:"owner"`
				GUID     string  `json:"guid"`
				LegacyDN string  `json:"legacy_dn"`
				Messages int64   `json:"messages"`
				Size     int64   `json:"size"`
				Deleted  *string `json:"deleted"`
			}
			out := []box{}
			for _, b := range boxes {
				x := box{Number: b.Number, Name: b.Name(), Owner: b.Owner, GUID: b.GUID, LegacyDN: b.LegacyDN, Messages: b.MessageCount, Size: b.Size}
				if !b.Deleted.IsZero() {
					s := b.Deleted.UTC().Format(time.RFC3339)
					x.Deleted = &s
				}
				out = append(out, x)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NUMBER\tNAME\tOWNER\tMESSAGES\tSIZE")
			for _, b := range out {
				name := b.Name
				if b.Deleted != nil {
					name += " (deleted " + *b.Deleted + ")"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\n", b.Number, name, b.Owner, b.Messages, humanBytes(b.Size))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	pf.add(cmd)
	return cmd
}

func newExchangeFoldersCmd() *cobra.Command {
	var asJSON bool
	var mailbox string
	var pf pointFileFlags
	cmd := &cobra.Command{
		Use:   "folders [FILE | --machine M --volume V --path P]",
		Short: "List the folder tree of each mailbox",
		Long: `List the folders of every mailbox (or of --mailbox) as paths from the top of
the mailbox, with their message counts. With --json the output is an array
of {"mailbox","mailbox_number","path","class","messages"}.`,
		Example: `  rewind exchange folders DB01.edb --mailbox "Alice Smith"
  rewind exchange folders DB01.edb --json | jq -r '.[].path'`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			db, name, boxes, closeFn, err := openMailboxes(ctx, a, &pf, mailbox)
			if err != nil {
				return err
			}
			defer closeFn()
			type folder struct {
				Mailbox  string `json:"mailbox"`
				Number   int64  `json:"mailbox_number"`
				Path     string `json:"path"`
				Class    string `json:"class"`
				Messages int64  `json:"messages"`
			}
			out := []folder{}
			for _, b := range boxes {
				list, err := b.Folders(ctx)
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				for _, f := range list {
					p := strings.Join(f.Path(), "/")
					if p == "" {
						p = "/"
					}
					out = append(out, folder{b.Name(), b.Number, p, f.Class, f.MessageCount})
				}
			}
			warnExchange(cmd.ErrOrStderr(), name, db)
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MAILBOX\tFOLDER\tMESSAGES")
			for _, f := range out {
				fmt.Fprintf(tw, "%s\t%s\t%d\n", f.Mailbox, f.Path, f.Messages)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.Flags().StringVar(&mailbox, "mailbox", "", "only this mailbox (number, name or owner)")
	pf.add(cmd)
	return cmd
}

// messageFilter holds the search flags find and export share.
type messageFilter struct {
	mailbox, folder, from, to, subject, since, until string
	id                                               int64
	sinceT, untilT                                   time.Time
	words                                            []string
}

func (f *messageFilter) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.mailbox, "mailbox", "", "only this mailbox (number, name or owner)")
	cmd.Flags().StringVar(&f.folder, "folder", "", `only this folder and its subfolders: a path like "Inbox/Projects" (leading "Top of Information Store/" optional)`)
	cmd.Flags().StringVar(&f.from, "from", "", "sender name or address contains this (case-insensitive)")
	cmd.Flags().StringVar(&f.to, "to", "", "a To, Cc or Bcc name or address contains this (case-insensitive)")
	cmd.Flags().StringVar(&f.subject, "subject", "", "the subject contains all these words (case-insensitive)")
	cmd.Flags().StringVar(&f.since, "since", "", `messages at or after this time (RFC 3339, "YYYY-MM-DD[ HH:MM]" local time, or relative like -30d)`)
	cmd.Flags().StringVar(&f.until, "until", "", "messages before this time (same forms as --since)")
	cmd.Flags().Int64Var(&f.id, "id", 0, "only the message with this document id (the ID column of find)")
}

func (f *messageFilter) parse(now time.Time) error {
	var err error
	if f.since != "" {
		if f.sinceT, err = parseTime(f.since, now); err != nil {
			return usagef("--since %q: not a time", f.since)
		}
	}
	if f.until != "" {
		if f.untilT, err = parseTime(f.until, now); err != nil {
			return usagef("--until %q: not a time", f.until)
		}
	}
	f.words = strings.Fields(strings.ToLower(f.subject))
	f.folder = strings.Trim(f.folder, "/")
	return nil
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

func (f *messageFilter) match(m *exchange.Message) bool {
	if m.Hidden {
		return false
	}
	if f.id != 0 && m.DocID != f.id {
		return false
	}
	if f.from != "" && !containsFold(m.From.Name, f.from) && !containsFold(m.From.Email, f.from) {
		return false
	}
	if f.to != "" {
		ok := containsFold(m.DisplayTo, f.to)
		for _, l := range [][]exchangeAddr{addrs(m.To), addrs(m.Cc), addrs(m.Bcc)} {
			for _, a := range l {
				ok = ok || containsFold(a.name, f.to) || containsFold(a.email, f.to)
			}
		}
		if !ok {
			return false
		}
	}
	subj := strings.ToLower(m.Subject)
	for _, w := range f.words {
		if !strings.Contains(subj, w) {
			return false
		}
	}
	d := m.Date()
	if !f.sinceT.IsZero() && d.Before(f.sinceT) {
		return false
	}
	if !f.untilT.IsZero() && !d.Before(f.untilT) {
		return false
	}
	if f.folder != "" {
		if m.Folder == nil {
			return false
		}
		p := strings.Join(m.Folder.Path(), "/")
		ok := false
		for _, cand := range []string{p, strings.TrimPrefix(p, "Top of Information Store/")} {
			if strings.EqualFold(cand, f.folder) || strings.HasPrefix(strings.ToLower(cand), strings.ToLower(f.folder)+"/") {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

type exchangeAddr struct{ name, email string }

func addrs(l []eml.Address) []exchangeAddr {
	out := make([]exchangeAddr, len(l))
	for i, a := range l {
		out[i] = exchangeAddr{a.Name, a.Email}
	}
	return out
}

// newCountProgress draws a bar counting items (not bytes) on a terminal.
func newCountProgress(stderr io.Writer, name string, total int64) *progress {
	f, ok := stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) || total <= 0 {
		return &progress{}
	}
	p := mpb.New(mpb.WithOutput(stderr), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
	bar := p.AddBar(total,
		mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR), decor.CountersNoUnit("%d / %d")),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.Name(" ETA "), decor.AverageETA(decor.ET_STYLE_GO)),
	)
	return &progress{p: p, bar: bar}
}

func newExchangeFindCmd() *cobra.Command {
	var asJSON bool
	var f messageFilter
	var pf pointFileFlags
	cmd := &cobra.Command{
		Use:   "find [FILE | --machine M --volume V --path P] [--from S] [--to S] [--subject WORDS] [--since T] [--until T]",
		Short: "Find messages by sender, recipient, subject words and date",
		Long: `Find messages in every mailbox (or --mailbox, --folder) matching all the given
conditions, oldest first. Without conditions every message is listed.
With --json the output is an array of {"mailbox","mailbox_number","id",
"folder","date","from","to","subject","size","attachments"}; the id and
mailbox pick one message for 'rewind exchange export --id'.`,
		Example: `  rewind exchange find DB01.edb --from bob@example.com --since -30d
  rewind exchange find DB01.edb --subject "budget 2027" --to carol
  rewind exchange find DB01.edb --mailbox alice --folder Inbox --json`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := f.parse(time.Now()); err != nil {
				return err
			}
			ctx := cmd.Context()
			db, name, boxes, closeFn, err := openMailboxes(ctx, a, &pf, f.mailbox)
			if err != nil {
				return err
			}
			defer closeFn()
			type hit struct {
				Mailbox     string `json:"mailbox"`
				Number      int64  `json:"mailbox_number"`
				ID          int64  `json:"id"`
				Folder      string `json:"folder"`
				Date        string `json:"date"`
				From        string `json:"from"`
				To          string `json:"to"`
				Subject     string `json:"subject"`
				Size        int64  `json:"size"`
				Attachments bool   `json:"attachments"`
			}
			out := []hit{}
			for _, b := range boxes {
				err := b.Messages(ctx, func(m *exchange.Message) error {
					if !f.match(m) {
						return nil
					}
					h := hit{Mailbox: b.Name(), Number: b.Number, ID: m.DocID, Subject: m.Subject, Size: m.Size,
						Attachments: m.HasAttachments, From: formatAddr(m.From.Name, m.From.Email)}
					if m.Folder != nil {
						h.Folder = strings.Join(m.Folder.Path(), "/")
					}
					if d := m.Date(); !d.IsZero() {
						h.Date = d.UTC().Format(time.RFC3339)
					}
					var to []string
					for _, x := range addrs(m.To) {
						to = append(to, formatAddr(x.name, x.email))
					}
					h.To = strings.Join(to, "; ")
					out = append(out, h)
					return nil
				})
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			warnExchange(cmd.ErrOrStderr(), name, db)
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DATE\tMAILBOX\tID\tFOLDER\tFROM\tSUBJECT")
			for _, h := range out {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", h.Date, h.Mailbox, h.ID, h.Folder, h.From, h.Subject)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%d message(s)\n", len(out))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	f.add(cmd)
	pf.add(cmd)
	return cmd
}

func formatAddr(name, email string) string {
	switch {
	case name == "":
		return email
	case email == "" || strings.EqualFold(name, email):
		return name
	}
	return name + " <" + email + ">"
}

func newExchangeExportCmd() *cobra.Command {
	var dir string
	var f messageFilter
	var pf pointFileFlags
	cmd := &cobra.Command{
		Use:   "export [FILE | --machine M --volume V --path P] --dir DIR [filters]",
		Short: "Export messages as .eml files into a folder tree",
		Long: `Export the messages that match the filters (all of them without filters) as
RFC 5322 .eml files, one per message, laid out like the mailbox:

  DIR/<mailbox>/<folder path>/<yyyy-mm-dd HHMM> <subject>.eml

The time in the name is UTC (received, else sent). Messages that share a
name all get " [<id>]" added (as do folders: " [<folder id>]"), so each
file's name depends only on the mailbox, not on the filters, and is the one
the mount's exchange/ view shows. Each .eml keeps sender, recipients,
subject, date, Message-ID, the text and HTML bodies, and the attachments,
and carries X-Rewind-Mailbox and X-Rewind-Folder headers. Existing files
are overwritten. Messages that cannot be fully decoded are still written
with what could be read, and named in a warning.`,
		Example: `  rewind exchange export DB01.edb --dir restored --mailbox alice --folder Inbox
  rewind exchange export DB01.edb --dir out --from bob --since 2026-10-01 --until 2026-11-01
  rewind exchange export DB01.edb --dir out --mailbox 101 --id 4711`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if dir == "" {
				return usagef("--dir is required: the folder to write the .eml files into")
			}
			if err := f.parse(time.Now()); err != nil {
				return err
			}
			ctx := cmd.Context()
			db, name, boxes, closeFn, err := openMailboxes(ctx, a, &pf, f.mailbox)
			if err != nil {
				return err
			}
			defer closeFn()
			var total int64
			for _, b := range boxes {
				total += b.MessageCount
			}
			// The mailbox directories are named among all mailboxes, so a
			// name never depends on which were asked for.
			all, err := db.Mailboxes(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			boxDirs := map[int64]string{}
			for i, d := range exchange.MailboxDirs(all) {
				boxDirs[all[i].Number] = d
			}
			pg := newCountProgress(cmd.ErrOrStderr(), "export", total)
			n, warned := 0, 0
			for _, b := range boxes {
				folders, byFolder, err := b.MessagesByFolder(ctx)
				if err != nil {
					pg.Done()
					return fmt.Errorf("%s: %w", name, err)
				}
				layout := exchange.NewLayout(folders, byFolder)
				err = b.Items(ctx, f.match, func(it *exchange.Item) error {
					rel, ok := layout.Paths[it.DocID]
					if !ok {
						return fmt.Errorf("message %d: not in the mailbox's layout", it.DocID)
					}
					p := filepath.Join(dir, boxDirs[b.Number], filepath.FromSlash(rel))
					if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
						return err
					}
					if err := writeEMLFile(p, it); err != nil {
						return err
					}
					if len(it.Warnings) > 0 {
						warned++
						fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s: %s\n", p, strings.Join(it.Warnings, "; "))
					}
					n++
					pg.Add(1)
					return nil
				})
				if err != nil {
					pg.Done()
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			pg.Done()
			warnExchange(cmd.ErrOrStderr(), name, db)
			fmt.Fprintf(cmd.OutOrStdout(), "%d message(s) written to %s", n, dir)
			if warned > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), " (%d with warnings)", warned)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "folder to write into (created if missing)")
	f.add(cmd)
	pf.add(cmd)
	return cmd
}

func writeEMLFile(p string, it *exchange.Item) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	if err := it.WriteEML(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	return f.Close()
}

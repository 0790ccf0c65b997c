package exchange

import (
	"fmt"
	"path"
	"strings"
)

// UnknownFolder is the directory of messages whose folder the mailbox's
// folder table does not hold.
const UnknownFolder = "(unknown folder)"

// Layout is where a mailbox's folders and messages go in a directory
// tree, <folder path>/<yyyy-mm-dd HHMM> <subject>.eml: the tree
// `rewind exchange export` writes and the mount's exchange/ view shows.
// Paths are slash-separated and relative to the mailbox's directory.
// Every name is unique, ignoring case, within its directory: a folder
// named like an earlier sibling gets " [<folder id>]"; messages that share
// a name all get " [<DocID>]" (so no name depends on which came first),
// and so does a message named like a subfolder. Names depend only on the
// mailbox's contents, never on which messages are asked for.
type Layout struct {
	Dirs  []string            // every folder's directory, parents first; "" (the mailbox) is not listed
	Files map[string]*Message // .eml path → message
	Paths map[int64]string    // message DocID → .eml path
}

// NewLayout lays out the folders and messages MessagesByFolder returns
// (messages under the nil folder go to UnknownFolder).
func NewLayout(folders []*Folder, byFolder map[*Folder][]*Message) *Layout {
	l := &Layout{Files: map[string]*Message{}, Paths: map[int64]string{}}
	used := map[string]bool{}
	// unique returns p, or p with suffix before ext when p is taken.
	unique := func(p, ext, suffix string) string {
		if used[strings.ToLower(p)] {
			p = strings.TrimSuffix(p, ext) + " [" + suffix + "]" + ext
		}
		used[strings.ToLower(p)] = true
		return p
	}
	dirOf := map[*Folder]string{}
	var place func(f *Folder) string
	place = func(f *Folder) string {
		if d, ok := dirOf[f]; ok {
			return d
		}
		if f.Parent == nil {
			dirOf[f] = ""
			return ""
		}
		d := unique(path.Join(place(f.Parent), safeComponent(f.Name)), "", f.ID)
		dirOf[f] = d
		l.Dirs = append(l.Dirs, d)
		return d
	}
	for _, f := range folders {
		place(f)
	}
	if len(byFolder[nil]) > 0 {
		dirOf[nil] = unique(UnknownFolder, "", "messages")
		l.Dirs = append(l.Dirs, dirOf[nil])
	}
	for _, f := range append(folders, nil) {
		msgs := byFolder[f]
		names := FileNames(msgs)
		for _, m := range msgs {
			p := unique(path.Join(dirOf[f], names[m]), ".eml", fmt.Sprint(m.DocID))
			l.Files[p] = m
			l.Paths[m.DocID] = p
		}
	}
	return l
}

// safeComponent is SafeName for a directory or file name, "_" when
// nothing usable is left.
func safeComponent(s string) string {
	if s = SafeName(s, 120); s == "" {
		return "_"
	}
	return s
}

// MailboxDirs names mailboxes as directories, uniquely ignoring case: a
// name an earlier mailbox has gets " [<mailbox number>]".
func MailboxDirs(boxes []*Mailbox) []string {
	used := map[string]bool{}
	out := make([]string, len(boxes))
	for i, b := range boxes {
		name := safeComponent(b.Name())
		if used[strings.ToLower(name)] {
			name = fmt.Sprintf("%s [%d]", name, b.Number)
		}
		used[strings.ToLower(name)] = true
		out[i] = name
	}
	return out
}

package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/vfs"
)

// mountOptions are the flags the platform's serveMount needs.
type mountOptions struct {
	allowOther bool
	writable   bool
	debug      bool
}

func newMountCmd() *cobra.Command {
	var dir, machine, volume, at, cacheSize, appCache, appCacheDir, auditLog, scratch string
	var mo mountOptions
	c := &cobra.Command{
		Use:   "mount MOUNTPOINT",
		Short: "Browse every machine at every moment as a read-only file system",
		Long: `Mount the repository as a read-only file system and browse any machine at
any stored moment. Runs in the foreground until interrupted (Ctrl-C, SIGTERM or
rewind umount MOUNTPOINT), then unmounts.

  MOUNTPOINT/<machine>/<volume>/<point>/
      disk.img     the volume, raw
      disk.vhd     the same as a fixed VHD (qemu-img: -f vpc; Hyper-V)
      disk.vmdk    a VMDK descriptor whose flat extent is disk.img
      files/       the file system inside: NTFS, ext2/3/4, FAT12/16/32, exFAT,
                   XFS; through MBR and GPT partition tables, one folder per
                   partition (p1-ntfs, p2-ext4, ...) when there are several
      sql/<database>/<schema>.<table>.csv and .jsonl
                   every table of every SQL Server data file (.mdf) on the
                   volume at that point, as rewind sql export writes it
      ese/<database>/<table>.jsonl
                   every table of every ESE database (.edb, .dit, .dat, .mdb:
                   ntds.dit, SRUDB.dat, ...), as rewind ese export writes it
      exchange/<mailbox>/<folder path>/<yyyy-mm-dd HHMM> <subject>.eml
                   every message of every Exchange 2010-2019 mailbox database
                   (.edb), named and written as rewind exchange export does;
                   those databases are not repeated under ese/

sql/, ese/ and exchange/ appear only when the point holds such files: listing
a point directory (or looking up one of them) walks its file systems once, skipping
Windows\WinSxS and similar folders and stopping after 500,000 entries.
Database directories are named by the database (SQL: from the boot page; ESE:
the file name); the same name twice gets ~2, ~3. A table file is exported
once, when its size is first asked for (ls -l; a plain ls only names it) or it
is opened, into a cache of temporary files (--app-cache bytes in
--app-cache-dir, oldest dropped first; exported again when opened later). A
table with damaged pages or undecodable values fails with an I/O error (rewind
sql|ese export --at ... --path ... gives its readable rows); a database that
cannot be opened shows as a directory that fails with an I/O error. These
views are in the repository mount only, not in the one-point mount (--at),
whose root is the volume's own file tree.

Point directories are named by their time, RFC 3339 in UTC with milliseconds
(2026-11-20T10:15:03.250Z). A listing shows every point of the last hour, then
the newest of each minute for a day and of each hour before; latest is a
symbolic link to the newest point. Any time typed as a name resolves to the
newest point at or before it, as a symbolic link:

  cd MOUNTPOINT/web1/root/2026-11-20T10:15:00Z/files
  cd "MOUNTPOINT/web1/root/2026-11-20 10:15"      (local time)
  ls MOUNTPOINT/web1/root/-2h/files               (two hours ago)

New points appear while mounted; mounting works while rewind server writes.

With --machine, --volume and --at, the mount point holds that point's file
system itself: the "drive letter" use.

A damaged file system inside a point gives I/O errors on the damaged files
only; the rest stays browsable. Reads go through a shared cache of
decompressed blocks (--cache-size) and read ahead when sequential; points never
change, so the kernel caches their pages and attributes.

--writable keeps writes to disk.img, disk.vhd and disk.vmdk in a copy-on-write
overlay in --scratch (deleted at unmount; all three show the same writes), so
a database server can attach a file or a hypervisor can boot the disk; the
repository is never written and files/ stays read-only.

On Windows (with WinFsp installed, https://winfsp.dev) MOUNTPOINT is a free
drive letter or a directory that does not exist yet:
rewind mount X: --machine web1 --volume C --at "2026-11-17 10:15" gives
Tuesday's C: drive as X:. Stop it with Ctrl-C or rewind umount X:.

--audit-log appends one JSON line per open and per listing: time, op, uid,
gid, pid, machine, volume, point, path. --allow-other lets other users read
the mount (every file of every backup: mind who may use this machine); it needs
user_allow_other in /etc/fuse.conf when not mounting as root.`,
		Example: `  rewind mount /mnt/rewind &
  ls /mnt/rewind/web1/root/
  cp "/mnt/rewind/web1/root/2026-11-20 10:15/files/etc/nginx/nginx.conf" .
  qemu-img info -f vpc /mnt/rewind/web1/root/latest/disk.vhd
  ls -l /mnt/rewind/sql1/d/latest/sql/Sales/
  cp "/mnt/rewind/sql1/d/2026-11-20 10:15/sql/Sales/dbo.Orders.csv" .
  rewind umount /mnt/rewind

  rewind mount /mnt/tuesday --machine web1 --volume root --at "2026-11-17 10:15"
  rewind mount /mnt/rewind --writable --scratch /var/tmp/rewind-overlay`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			mnt := a[0]
			cache, err := parseByteSize(cacheSize)
			if err != nil {
				return usagef("--cache-size %q: %v", cacheSize, err)
			}
			apps, err := parseByteSize(appCache)
			if err != nil {
				return usagef("--app-cache %q: %v", appCache, err)
			}
			if (machine != "" || volume != "") && (machine == "" || volume == "") {
				return usagef("--machine and --volume go together")
			}
			if at != "" && machine == "" {
				return usagef("--at needs --machine and --volume")
			}
			if scratch != "" && !mo.writable {
				return usagef("--scratch is for --writable")
			}
			if _, err := parseAtSyntax(at); err != nil {
				return err
			}
			if err := checkMountPoint(mnt); err != nil {
				return err
			}
			repo, err := openRepo(ctx, dir)
			if err != nil {
				return err
			}
			defer repo.Close()
			opt := vfs.Options{CacheSize: cache, Writable: mo.writable, Scratch: scratch, Logger: slog.Default(), AppCacheSize: apps, AppCacheDir: appCacheDir}
			if machine != "" {
				vol, err := lookupVolume(ctx, repo, machine, volume)
				if err != nil {
					return err
				}
				p, err := resolveAt(ctx, repo.Catalog, vol, at, time.Now())
				if err != nil {
					return err
				}
				opt.Point = &p
			}
			if auditLog != "" {
				f, err := os.OpenFile(auditLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
				if err != nil {
					return fmt.Errorf("audit log: %w", err)
				}
				defer f.Close()
				opt.Audit = f
			}
			t, err := vfs.New(ctx, repo, opt)
			if err != nil {
				return err
			}
			defer t.Close()
			what := "repository " + repo.Dir
			if p := opt.Point; p != nil {
				what = fmt.Sprintf("%s/%s point %d (%s)", p.Machine, p.Volume, p.ID, pointTime(p.Time))
			}
			return serveMount(ctx, t, mnt, mo, func() {
				fmt.Fprintf(cmd.ErrOrStderr(), "mounted %s at %s; Ctrl-C or rewind umount %s to unmount\n", what, mnt, mnt)
			})
		},
	}
	addRepoFlag(c, &dir)
	f := c.Flags()
	f.StringVar(&machine, "machine", "", "mount one volume of this machine (with --volume and --at)")
	f.StringVar(&volume, "volume", "", "the volume to mount")
	f.StringVar(&at, "at", "", "the moment: RFC 3339, \"YYYY-MM-DD HH:MM[:SS]\" (local), -15m, latest (default) or a point id")
	f.StringVar(&cacheSize, "cache-size", "256M", "memory for decompressed blocks (K, M, G suffixes)")
	f.StringVar(&appCache, "app-cache", "1G", "temporary disk space for generated sql/, ese/ and exchange/ files (K, M, G suffixes)")
	f.StringVar(&appCacheDir, "app-cache-dir", "", "directory for the --app-cache files (default $TMPDIR or /tmp; mind a /tmp in memory)")
	f.StringVar(&auditLog, "audit-log", "", "append a JSON line per open and per listing to this file")
	f.BoolVar(&mo.allowOther, "allow-other", false, "let other users read the mount")
	f.BoolVar(&mo.writable, "writable", false, "copy-on-write overlay for the disk images (the repository never changes)")
	f.StringVar(&scratch, "scratch", "", "directory for the --writable overlay (default: a temporary directory)")
	f.BoolVar(&mo.debug, "debug", false, "log every kernel request")
	return c
}

// parseByteSize parses "256M", "1G", "65536", "512K".
func parseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	s = strings.TrimSuffix(strings.TrimSuffix(s, "B"), "I")
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'K':
			mult, s = 1<<10, s[:n-1]
		case 'M':
			mult, s = 1<<20, s[:n-1]
		case 'G':
			mult, s = 1<<30, s[:n-1]
		case 'T':
			mult, s = 1<<40, s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("not a size (use e.g. 256M or 2G)")
	}
	return v * mult, nil
}

func newUmountCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "umount MOUNTPOINT",
		Short: "Unmount a rewind mount",
		Long: `Unmount a file system mounted by rewind mount; the rewind mount process then
exits. Fails while files in it are open.`,
		Example: "  rewind umount /mnt/rewind",
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return unmount(a[0])
		},
	}
}

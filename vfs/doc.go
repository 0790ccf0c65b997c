// Package vfs is the time-travel file system: a read-only tree of every
// machine, volume and point of a repository, pure Go and OS-neutral, that
// thin adapters serve to a kernel (vfs/fusefs on Linux with go-fuse; a
// cgofuse adapter on Windows).
//
// # The tree
//
//	/<machine>/<volume>/<point>/
//	    disk.img        the volume at the point, raw
//	    disk.vhd        the same as a fixed VHD (raw data + a 512-byte footer)
//	    disk.vmdk       a monolithicFlat VMDK descriptor whose extent is disk.img
//	    disk-flat.vmdk  the extent instead, only when the volume is not a whole number of sectors
//	    files/          the file system inside (detect: NTFS, ext2/3/4, FAT, exFAT, XFS);
//	                    with several partitions (MBR, GPT) one folder each: p1-ntfs, p2-ext4, ...
//	    sql/<database>/<schema>.<table>.csv|.jsonl   application views (apps.go), only when
//	    ese/<database>/<table>.jsonl                 the point's file systems hold such databases
//	/<machine>/<volume>/latest    symbolic link to the newest point
//
// Point directories are named by PointNames: RFC 3339 UTC with milliseconds
// (2026-11-20T10:15:03.250Z). A listing shows every point of the last hour,
// then the newest point of each minute for a day and of each hour before;
// every point can be looked up by its name whether listed or not. Looking
// up any other name that parses as a time (RFC 3339, "2026-11-20 10:15",
// "2026-11-20T10:15:05", a date, a relative "-15m", "-2h", "-3d") yields a
// symbolic link to the newest point at or before that time (times without
// a zone are in Options.Location). Points committed while the tree is in
// use appear within Options.Refresh.
//
// With Options.Point the tree is instead that one point's files/ directory
// at the root (the "drive letter" use).
//
// # API for adapters
//
// Nodes are named by inode numbers, stable for the life of the tree;
// RootIno is the root. Every method takes a context first (cancelled when
// the kernel interrupts the request; set the caller with WithCaller for the
// audit log) and is safe for concurrent use:
//
//	Lookup(ctx, parentIno, name) (Attr, error)   // Attr.Ino names the child from then on
//	Getattr(ctx, ino) (Attr, error)
//	Readdir(ctx, ino) ([]DirEntry, error)        // one listing, with every entry's Attr, no "." or ".."
//	Readlink(ctx, ino) (string, error)
//	Open(ctx, ino, write bool) (*Handle, error)  // then Handle.Read / Write / Sync / Close
//	Walk(ctx, path) (Attr, error)                // for path-based adapters (cgofuse)
//
// Errors wrap ErrNotExist, ErrNotDir, ErrIsDir, ErrReadOnly, ErrInvalid,
// ErrNoSpace or anything else (damage); ErrnoOf maps them to Linux error
// numbers (ENOENT, ENOTDIR, EISDIR, EROFS, EINVAL, ENOSPC, EINTR, and EIO
// for damage), which adapters translate for their kernel interface.
//
// Attr.Immutable marks everything inside a point: adapters may give those
// nodes long entry and attribute timeouts and keep their pages cached
// (points never change). Machine, volume and point listings and the
// symbolic links that name points change as points arrive; give them short
// timeouts.
//
// Hard links inside a file system share one inode number. Handle.Read
// behaves like pread (short at the end of a file, no io.EOF).
//
// # Damage, caching, writes
//
// File system readers are wrapped by parsers/filesystem's panic-proof
// helper: a damaged structure or a damaged block in the repository gives
// EIO on the files it touches, logged with the path, and the rest stays
// browsable. A file system that cannot be opened makes its files/ (or
// partition folder) fail with EIO while the disk files still work.
//
// Decompressed, verified blocks are kept in one cache shared by every
// point (Options.CacheSize bytes, least recently used out, keyed by stored
// chunk so de-duplicated blocks are cached once); sequential reads of a
// point's volume read ahead in the background.
//
// With Options.Writable, disk.img, disk.vhd and the VMDK extent of each
// point share a copy-on-write overlay: a sparse scratch file in
// Options.Scratch holding written 4 KiB granules, deleted by Close; the
// VMDK descriptor gets a writable copy in memory (hypervisors rewrite its
// content ID). The repository is never written; files/ stays read-only.
//
// The tree remembers every node it has handed out (about 200 bytes each)
// for the life of the tree, so that inode numbers stay stable.
//
// Options.Audit receives one JSON line (AuditRecord) per Open and per
// Readdir: time, op, caller uid/gid/pid, machine, volume, point and path.
//
// The conformance suite in vfs/vfstest runs against this API directly and
// through a real mount.
package vfs

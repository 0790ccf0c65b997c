package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/parsers/vdisk"
	"github.com/rewind-cdp/rewind/repository"
)

// exportFormat is one output format of rewind export.
type exportFormat struct {
	name   string
	what   string
	stream bool // can be written to a pipe (stdout)
	write  func(ctx context.Context, out *os.File, src io.ReaderAt, size int64, opt *vdisk.WriteOptions) (int64, error)
}

var exportFormats = []exportFormat{
	{"raw", "the volume's bytes, all-zero blocks left as holes in a file", true, nil},
	{"vhd", "dynamic VHD (Hyper-V, Azure, VirtualBox; qemu format vpc)", false,
		func(ctx context.Context, out *os.File, src io.ReaderAt, size int64, opt *vdisk.WriteOptions) (int64, error) {
			return vdisk.WriteVHDDynamic(ctx, out, src, size, opt)
		}},
	{"vhd-fixed", "fixed VHD: the raw bytes and a footer (Azure uploads)", true,
		func(ctx context.Context, out *os.File, src io.ReaderAt, size int64, opt *vdisk.WriteOptions) (int64, error) {
			return writeBuffered(out, func(w io.Writer) (int64, error) { return vdisk.WriteVHDFixed(ctx, w, src, size, opt) })
		}},
	{"vhdx", "dynamic VHDX (Hyper-V)", false,
		func(ctx context.Context, out *os.File, src io.ReaderAt, size int64, opt *vdisk.WriteOptions) (int64, error) {
			return vdisk.WriteVHDX(ctx, out, src, size, opt)
		}},
	{"vmdk", "VMDK monolithicSparse (VMware Workstation, qemu)", false,
		func(ctx context.Context, out *os.File, src io.ReaderAt, size int64, opt *vdisk.WriteOptions) (int64, error) {
			return vdisk.WriteVMDKSparse(ctx, out, src, size, opt)
		}},
	{"vmdk-stream", "VMDK streamOptimized, compressed (vSphere and OVF import)", true,
		func(ctx context.Context, out *os.File, src io.ReaderAt, size int64, opt *vdisk.WriteOptions) (int64, error) {
			return writeBuffered(out, func(w io.Writer) (int64, error) { return vdisk.WriteVMDKStream(ctx, w, src, size, opt) })
		}},
	{"qcow2", "qcow2 version 3 (qemu/KVM, Proxmox); --compress for deflate clusters", false,
		func(ctx context.Context, out *os.File, src io.ReaderAt, size int64, opt *vdisk.WriteOptions) (int64, error) {
			return vdisk.WriteQcow2(ctx, out, src, size, opt)
		}},
}

// writeBuffered runs a streaming writer through a 1 MiB buffer.
func writeBuffered(out *os.File, write func(io.Writer) (int64, error)) (int64, error) {
	bw := bufio.NewWriterSize(out, 1<<20)
	n, err := write(bw)
	if err == nil {
		err = bw.Flush()
	}
	return n, err
}

func findExportFormat(name string) (exportFormat, bool) {
	for _, f := range exportFormats {
		if f.name == name {
			return f, true
		}
	}
	return exportFormat{}, false
}

func exportFormatHelp() string {
	var b strings.Builder
	for _, f := range exportFormats {
		pipe := ""
		if f.stream {
			pipe = " [stdout ok]"
		}
		fmt.Fprintf(&b, "  %-12s %s%s\n", f.name, f.what, pipe)
	}
	return b.String()
}

func newExportCmd() *cobra.Command {
	var dir, machine, volume, at, format, out string
	var force, compress, asJSON bool
	c := &cobra.Command{
		Use:   "export",
		Short: "Write a volume at any point as a raw, VHD, VHDX, VMDK or qcow2 disk image",
		Long: `Write a volume exactly as it was at a point in time as a virtual disk image a
hypervisor can attach or import. Every block is checked against its content
hash as it is read: damage stops the export with an error naming the pack,
never with wrong data. All-zero blocks take no space in the sparse formats.
A file is written beside itself and renamed into place only when complete
(run sync before power-cycling if it must be on stable storage);
--out - writes to stdout (formats marked [stdout ok] only).

Formats:
` + exportFormatHelp() + `
--at takes RFC 3339 (2026-11-20T10:15:00Z), "YYYY-MM-DD HH:MM[:SS]" in local
time, a relative time (-15m, -2h, -3d), latest (the default), or a point id.`,
		Example: `  rewind export --machine web1 --volume root --at -1h --format vhdx --out web1.vhdx
  rewind export --machine web1 --volume root --format qcow2 --compress --out web1.qcow2
  rewind export --machine web1 --volume root --format vmdk-stream --out - | ssh esx 'cat > web1.vmdk'`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			f, ok := findExportFormat(format)
			if !ok {
				return usagef("--format %q: want one of raw, vhd, vhd-fixed, vhdx, vmdk, vmdk-stream, qcow2", format)
			}
			if out == "" {
				return usagef("--out is required: a file name, or - for stdout")
			}
			if out == "-" && !f.stream {
				return usagef("--format %s needs a seekable file; only raw, vhd-fixed and vmdk-stream go to stdout", f.name)
			}
			if compress && f.name != "qcow2" {
				return usagef("--compress applies to --format qcow2 only (vmdk-stream is always compressed)")
			}
			repo, _, p, err := openPointAt(ctx, dir, machine, volume, at)
			if err != nil {
				return err
			}
			defer repo.Close()
			if err := needDisk(p, "export"); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "exporting %s/%s point %d (%s, %s) as %s\n", p.Machine, p.Volume, p.ID, pointTime(p.Time), p.Kind, f.name)
			start := time.Now()
			written, err := exportPoint(ctx, repo, p, f, out, force, compress, cmd)
			if err != nil {
				return fmt.Errorf("export to %s: %w", out, err)
			}
			el := time.Since(start)
			rate := float64(p.Size) / 1e6 / max(el.Seconds(), 1e-9)
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]any{
					"point":  pointJSON{p.ID, p.Machine, p.Volume, pointTime(p.Time), p.Kind, p.Label, p.Size},
					"format": f.name, "out": out, "volume_bytes": p.Size, "file_bytes": written,
					"seconds": el.Seconds(), "mb_per_s": rate,
				})
			}
			msg := fmt.Sprintf("exported %s/%s point %d (%s) as %s to %s: %s volume, %s file, in %s (%.1f MB/s)\n",
				p.Machine, p.Volume, p.ID, pointTime(p.Time), f.name, out, humanBytes(p.Size), humanBytes(written), el.Round(time.Millisecond), rate)
			if out == "-" {
				fmt.Fprint(cmd.ErrOrStderr(), msg)
			} else {
				fmt.Fprint(cmd.OutOrStdout(), msg)
			}
			return nil
		},
	}
	addRepoFlag(c, &dir)
	c.Flags().StringVar(&machine, "machine", "", "machine name")
	c.Flags().StringVar(&volume, "volume", "", "volume name")
	c.Flags().StringVar(&at, "at", "latest", "point to export: a time, a relative time, latest, or a point id")
	c.Flags().StringVar(&format, "format", "raw", "output format (see above)")
	c.Flags().StringVar(&out, "out", "", "output file, or - for stdout")
	c.Flags().BoolVar(&force, "force", false, "overwrite an existing output file")
	c.Flags().BoolVar(&compress, "compress", false, "compress qcow2 clusters (deflate)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return c
}

// exportPoint writes point p in format f to out and returns the bytes of
// the output file.
func exportPoint(ctx context.Context, repo *repository.Repo, p catalog.Point, f exportFormat, out string, force, compress bool, cmd *cobra.Command) (int64, error) {
	pg := newProgress(cmd.ErrOrStderr(), "export", p.Size)
	defer pg.Done()
	if f.name == "raw" && out != "-" {
		tgt, err := openTarget(out, p.Size, force)
		if err != nil {
			return 0, err
		}
		err = repo.Restore(ctx, p, tgt.w, repository.RestoreOptions{SkipZeros: tgt.fresh, Progress: pg.Add})
		return p.Size, tgt.finish(err)
	}
	src := repo.OpenPoint(p).ReadAhead(ctx, 128)
	var done int64
	opt := &vdisk.WriteOptions{Compress: compress, Time: p.Time, Progress: func(n int64) { pg.Add(n - done); done = n }}
	if out == "-" {
		if f.name == "raw" {
			return writeBuffered(os.Stdout, func(w io.Writer) (int64, error) {
				return io.Copy(w, progressReader{io.NewSectionReader(src, 0, p.Size), pg.Add})
			})
		}
		return f.write(ctx, os.Stdout, src, p.Size, opt)
	}
	switch st, err := os.Stat(out); {
	case err == nil && st.IsDir():
		return 0, fmt.Errorf("%s is a directory; name an image file", out)
	case err == nil && !force:
		return 0, fmt.Errorf("%s exists; pass --force to overwrite it", out)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return 0, err
	}
	tmp := out + ".rewind-partial"
	file, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", tmp, err)
	}
	// Like restore to a file, the export is not synced: run sync before
	// power-cycling if it must be on stable storage.
	n, err := f.write(ctx, file, src, p.Size, opt)
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, out)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, err
	}
	return n, nil
}

// progressReader reports the bytes read through it.
type progressReader struct {
	r   io.Reader
	add func(int64)
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.add(int64(n))
	return n, err
}

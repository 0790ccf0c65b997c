package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/ingest"
	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/tools/imagegen"
)

func newDemoCmd() *cobra.Command {
	var dir string
	var size int64
	var keep bool
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole job on a generated volume: server, backups, restores, check",
		Long: `Run the main job end to end on the embedded default — a local repository and a
backup server on loopback — with a generated volume image: three backups with
changes between them, a restore of every point compared byte for byte with the
image it was taken from, and a full check. Prints what it does and the figures.`,
		Example: `  rewind demo
  rewind demo --size 1073741824 --dir /tmp/rewind-demo --keep`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if size < 1<<20 {
				return usagef("--size must be at least 1 MiB")
			}
			work := dir
			if work == "" {
				var err error
				if work, err = os.MkdirTemp("", "rewind-demo-"); err != nil {
					return err
				}
			} else if err := os.MkdirAll(work, 0o700); err != nil {
				return err
			}
			if !keep {
				defer os.RemoveAll(work)
			}
			return runDemo(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), work, size, keep)
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "work directory (default a new temporary one)")
	c.Flags().Int64Var(&size, "size", 256<<20, "size of the generated volume in bytes")
	c.Flags().BoolVar(&keep, "keep", false, "keep the work directory (repository and images) afterwards")
	return c
}

func runDemo(ctx context.Context, out, stderr io.Writer, work string, size int64, keep bool) error {
	repoPath := filepath.Join(work, "repo")
	img := filepath.Join(work, "volume.img")
	fmt.Fprintf(out, "Rewind demo in %s\n", work)

	ctx, stop := context.WithCancel(ctx)
	serverDone := make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		serverDone <- runServer(ctx, repoPath, "", "127.0.0.1:0", "", "", 0, func(a string) { ready <- a })
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-serverDone:
		stop()
		return fmt.Errorf("start server: %w", err)
	}
	defer func() {
		stop()
		<-serverDone
	}()
	fmt.Fprintf(out, "1. backup server listening on %s, repository %s\n", addr, repoPath)

	repo, err := repository.Open(ctx, repoPath)
	if err != nil {
		return err
	}
	defer repo.Close()
	token := ingest.NewToken()
	if _, err := repo.Catalog.AddMachine(ctx, "demo", ingest.HashToken(token)); err != nil {
		return err
	}
	fmt.Fprintln(out, `2. registered machine "demo" (rewind machine add demo prints its token)`)

	if err := imagegen.Create(img, size, 1); err != nil {
		return err
	}
	fmt.Fprintf(out, "3. generated a %s volume image: text, incompressible data and empty space\n", humanBytes(size))

	tlsCfg, err := ingest.ClientTLS(filepath.Join(repoPath, "server.crt"))
	if err != nil {
		return err
	}
	client, err := ingest.NewClient("https://"+addr, token, tlsCfg)
	if err != nil {
		return err
	}
	type taken struct {
		id  int64
		sum [32]byte
	}
	var points []taken
	for i := range 3 {
		if i > 0 {
			n, err := imagegen.Mutate(img, 64<<10, 0.02, uint64(i))
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "   changed %d blocks (2 %%) of the image\n", n)
		}
		sum, err := fileSHA256(img)
		if err != nil {
			return err
		}
		f, err := os.Open(img)
		if err != nil {
			return err
		}
		res, err := client.Backup(ctx, ingest.BackupOptions{Machine: "demo", Volume: "disk", Label: fmt.Sprintf("demo %d", i+1), Source: f, Size: size})
		f.Close()
		if err != nil {
			return fmt.Errorf("backup %d: %w", i+1, err)
		}
		points = append(points, taken{res.Point.ID, sum})
		fmt.Fprintf(out, "%d. backup: point %d at %s — read %s, stored %s new, sent %s, %.0f MB/s\n", 4+i, res.Point.ID, pointTime(res.Point.Time),
			humanBytes(res.BytesRead), humanBytes(res.BytesNew), humanBytes(res.BytesSent), float64(res.BytesRead)/1e6/max(res.Elapsed.Seconds(), 1e-9))
	}

	for _, p := range points {
		pt, err := repo.Catalog.Point(ctx, p.id)
		if err != nil {
			return err
		}
		to := filepath.Join(work, fmt.Sprintf("restored-%d.img", p.id))
		start := time.Now()
		tgt, err := openTarget(to, pt.Size, true)
		if err != nil {
			return err
		}
		if err := tgt.finish(repo.Restore(ctx, pt, tgt.w, repository.RestoreOptions{SkipZeros: true})); err != nil {
			return fmt.Errorf("restore point %d: %w", p.id, err)
		}
		el := time.Since(start)
		got, err := fileSHA256(to)
		if err != nil {
			return err
		}
		if got != p.sum {
			return fmt.Errorf("point %d restored with sha256 %x, expected %x", p.id, got, p.sum)
		}
		fmt.Fprintf(out, "7. restored point %d in %s (%.0f MB/s): sha256 %x identical to the image when it was taken\n",
			p.id, el.Round(time.Millisecond), float64(pt.Size)/1e6/max(el.Seconds(), 1e-9), got[:8])
		if !keep {
			os.Remove(to)
		}
	}
	res, err := repo.Check(ctx, repository.CheckOptions{ReadData: true})
	if err != nil {
		return err
	}
	if !res.OK() {
		return errors.New("check --read-data found damage")
	}
	st, err := repo.Catalog.Stats(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "8. check --read-data: %d packs, %d chunks, no damage; %s of volume history kept in %s of packs\n",
		res.Packs, res.Chunks, humanBytes(3*size), humanBytes(st.StoredBytes))
	fmt.Fprintf(out, "\nDo it yourself:\n  rewind server &\n  TOKEN=$(rewind machine add web1)\n  rewind backup --token \"$TOKEN\" --machine web1 --volume root IMAGE-OR-DEVICE\n  rewind points\n  rewind restore --machine web1 --volume root --at -5m --to restored.img\n")
	return nil
}

func fileSHA256(path string) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}
